/**
 * `--state-dir DIR`: the last good snapshot as the operator sent it (protobuf, keys inside), so a restart while
 * the operator is unreachable forwards at once. The file is only ever written whole (lib/atomic-write.ts: mode
 * 0600, fsync, rename, fsync of the directory) and checked whole on reading (magic, SHA-256 of the body,
 * protobuf decoding; the caller validates the content like any snapshot). The keys it holds are never written
 * anywhere else.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../../lib/atomic-write.js';
import { Snapshot } from '../../proto/gen/quiclb/v1/distribution.js';

export const STATE_FILE = 'snapshot.pb';
const MAGIC = Buffer.from('quiclb-snapshot/1\n');
const HASH_BYTES = 32;

export class StateFileError extends Error {}

export class SnapshotStore {
  readonly path: string;

  constructor(readonly dir: string) {
    this.path = join(dir, STATE_FILE);
  }

  /** Writes the snapshot atomically (mode 0600). */
  save(s: Snapshot): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const body = Buffer.from(Snapshot.encode(s).finish());
    const hash = createHash('sha256').update(body).digest();
    writeFileAtomic(this.path, Buffer.concat([MAGIC, hash, body]), { mode: 0o600 });
  }

  /** The stored snapshot, null when there is none; throws StateFileError when the file is unreadable or corrupt. */
  load(): Snapshot | null {
    let data: Buffer;
    try {
      data = readFileSync(this.path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new StateFileError(`${this.path}: cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (data.length < MAGIC.length + HASH_BYTES || !data.subarray(0, MAGIC.length).equals(MAGIC)) {
      throw new StateFileError(`${this.path}: not a quiclb snapshot file (bad header)`);
    }
    const hash = data.subarray(MAGIC.length, MAGIC.length + HASH_BYTES);
    const body = data.subarray(MAGIC.length + HASH_BYTES);
    if (!createHash('sha256').update(body).digest().equals(hash)) throw new StateFileError(`${this.path}: checksum mismatch (truncated or corrupt)`);
    try {
      return Snapshot.decode(body);
    } catch (e) {
      throw new StateFileError(`${this.path}: undecodable snapshot (${(e as Error).message.slice(0, 100)})`);
    }
  }
}
