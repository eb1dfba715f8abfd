/**
 * The JSON shape of QUIC-LB configs used by the test vectors and `quiclb cid ... --jsonl`:
 * {"config_id", "server_id_len", "nonce_len", "key": hex|null, "len_self_encoded"?, "extra_len"?}.
 */
import { parseHex } from './hex.js';
import { ConfigError, makeConfig, type QuicLbConfig } from './config.js';

export type JsonObject = Record<string, unknown>;

export function asObject(value: unknown, what: string): JsonObject {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError(what, 'must be a JSON object');
  }
  return value as JsonObject;
}

/** Reads a hex field; a missing or null field is an error unless `optional`. */
export function hexField(obj: JsonObject, field: string, optional: true): Buffer | null;
export function hexField(obj: JsonObject, field: string, optional?: false): Buffer;
export function hexField(obj: JsonObject, field: string, optional = false): Buffer | null {
  const v = obj[field];
  if (v === undefined || v === null) {
    if (optional) return null;
    throw new ConfigError(field, 'is required (hex string)');
  }
  if (typeof v !== 'string') throw new ConfigError(field, 'must be a hex string');
  try {
    return parseHex(v, field);
  } catch (e) {
    throw new ConfigError(field, (e as Error).message.replace(`${field}: `, ''));
  }
}

export function configFromJson(value: unknown, where = 'config'): QuicLbConfig {
  const obj = asObject(value, where);
  try {
    const lse = obj.len_self_encoded;
    if (lse !== undefined && typeof lse !== 'boolean') throw new ConfigError('len_self_encoded', 'must be true or false');
    return makeConfig({
      configId: obj.config_id as number,
      serverIdLength: obj.server_id_len as number,
      nonceLength: obj.nonce_len as number,
      key: hexField(obj, 'key', true),
      lengthSelfEncoded: lse ?? false,
      extraLength: (obj.extra_len as number | undefined) ?? 0,
    });
  } catch (e) {
    // Prefix the field with where the config sits (e.g. configs[1].nonce_len).
    if (e instanceof ConfigError) throw new ConfigError(`${where}.${e.field}`, e.message.slice(e.field.length + 2), { cause: e });
    throw e;
  }
}
