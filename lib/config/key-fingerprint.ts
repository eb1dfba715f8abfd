/** Key fingerprints for logs, audit lines and the admin API: tell keys apart without revealing them. */
import { createHash } from 'node:crypto';

/** "sha256:" and the first 16 hex digits of SHA-256 over the key ("" for no key). */
export function keyFingerprint(key: Uint8Array | null): string {
  if (key === null) return '';
  return `sha256:${createHash('sha256').update(key).digest('hex').slice(0, 16)}`;
}
