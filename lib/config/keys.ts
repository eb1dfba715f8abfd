/** QUIC-LB keys in config files. Errors describe the shape of a bad key, never its content. */
import { ConfigError, KEY_LEN } from '../quiclb/config.js';
import { MAX_KEY_FILE_BYTES, readErrorText, readRegularFile } from './safe-read.js';

const BASE64_16 = /^[A-Za-z0-9+/]{22}(?:==)?$/;
const HEX_16 = /^(?:0x)?[0-9a-fA-F]{32}$/;

/** A 16-byte key given as base64 text (the YAML form). */
export function parseBase64Key(field: string, value: unknown): Buffer {
  if (typeof value !== 'string') throw new ConfigError(field, `must be a base64 string of ${KEY_LEN} bytes (24 characters)`);
  const s = value.trim();
  if (!BASE64_16.test(s)) {
    throw new ConfigError(
      field,
      `must be ${KEY_LEN} bytes in base64 (24 characters ending in "=="), got ${s.length} characters` +
        (/^[0-9a-fA-F]{32}$/.test(s) ? ' that look like hex: convert it, or use encryption_key_file' : ''),
    );
  }
  const key = Buffer.from(s, 'base64');
  if (key.length !== KEY_LEN) throw new ConfigError(field, `must decode to ${KEY_LEN} bytes, got ${key.length}`);
  return key;
}

/** Key file contents: exactly 16 raw bytes, or base64 / 32 hex digits with optional surrounding whitespace. */
export function parseKeyFileContents(field: string, data: Buffer): Buffer {
  if (data.length === KEY_LEN) return Buffer.from(data);
  const text = data.toString('latin1').trim();
  if (HEX_16.test(text)) return Buffer.from(text.replace(/^0x/, ''), 'hex');
  if (BASE64_16.test(text)) return Buffer.from(text, 'base64');
  throw new ConfigError(field, `the file must hold a ${KEY_LEN}-byte key: base64, 32 hex digits, or ${KEY_LEN} raw bytes (it has ${data.length} bytes)`);
}

/** A key file that cannot be read or holds no key: `file` is what to watch for the fix. */
export class KeyFileError extends ConfigError {
  constructor(field: string, problem: string, readonly file: string) {
    super(field, problem);
  }
}

/** Whether a file name given for a key file is a key itself (pasted into the wrong field): never echo it. */
export function looksLikeKey(value: string): boolean {
  const s = value.trim();
  return BASE64_16.test(s) || HEX_16.test(s) || /^[A-Za-z0-9+/=]{20,}$/.test(s);
}

/** Reads a key file (regular file, at most 4 KiB, opened non-blocking: see safe-read.ts). */
export function readKeyFile(field: string, path: string): Buffer {
  let data: Buffer;
  try {
    data = readRegularFile(path, MAX_KEY_FILE_BYTES);
  } catch (e) {
    throw new KeyFileError(field, `cannot read ${path}: ${readErrorText(e)}`, path);
  }
  try {
    return parseKeyFileContents(field, data);
  } catch (e) {
    throw new KeyFileError(field, (e as Error).message.slice(field.length + 2), path);
  }
}

/**
 * The key rules for a list of live configs (the YAML's `loadbalancer.configs`, the state file's `configs`), with
 * errors under `listField`: every config has a key of its own (a server must never repeat a nonce under one key,
 * draft-21 §9.6, and every config starts its own nonce sequence), and either all are keyed or none (§9.7:
 * plaintext and encrypted configs need different server-ID allocations, and standalone mode has one).
 */
export function checkLiveConfigKeys(listField: string, configs: readonly { readonly config: { readonly key: Uint8Array | null } }[]): void {
  for (let j = 1; j < configs.length; j++) {
    const kj = configs[j].config.key;
    if (kj === null) continue;
    for (let i = 0; i < j; i++) {
      const ki = configs[i].config.key;
      if (ki !== null && Buffer.from(ki).equals(Buffer.from(kj))) {
        throw new ConfigError(`${listField}[${j}]`, `has the same key as ${listField}[${i}]; live configs need keys of their own (a server must never repeat a nonce under one key, draft-21 §9.6)`);
      }
    }
  }
  const keyed = configs.filter((c) => c.config.key !== null).length;
  if (keyed !== 0 && keyed !== configs.length) {
    throw new ConfigError(listField, 'mixes plaintext and encrypted configs; draft-21 §9.7 requires different server-ID allocations for them, and standalone mode has one');
  }
}
