/** Small typed readers for YAML/JSON config objects that name the full field path in every error. */
import { ConfigError } from '../quiclb/config.js';
import { quote } from './safe-read.js';

export type Fields = Record<string, unknown>;

export function isObject(v: unknown): v is Fields {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function join(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  return path ? `${path}.${key}` : key;
}

/** A value for an error message, bounded whatever its size (strings are cut, lists and mappings not expanded). */
export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return quote(v);
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v); // NaN, Infinity: not JSON's "null"
  return typeof v;
}

export function requireObject(path: string, v: unknown): Fields {
  if (!isObject(v)) throw new ConfigError(path || '(top level)', `must be a mapping, got ${describe(v)}`);
  return v;
}

/** Rejects keys not in `known`, suggesting the closest known key (typos such as `wieght`). */
export function checkKeys(path: string, obj: Fields, known: readonly string[]): void {
  for (const k of Object.keys(obj)) {
    if (known.includes(k)) continue;
    const hint = closest(k, known);
    throw new ConfigError(join(path, k), `unknown field${hint ? ` (did you mean ${hint}?)` : ''}; known fields: ${known.join(', ')}`);
  }
}

function closest(word: string, options: readonly string[]): string | null {
  let best: string | null = null;
  let bestD = Infinity;
  for (const o of options) {
    const d = editDistance(word.toLowerCase(), o.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = o;
    }
  }
  return bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : null;
}

function editDistance(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0];
    dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j];
      dp[j] = Math.min(dp[j] + 1, dp[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return dp[b.length];
}

export function optInt(path: string, v: unknown, min: number, max: number, dflt: number): number;
export function optInt(path: string, v: unknown, min: number, max: number, dflt?: undefined): number | undefined;
export function optInt(path: string, v: unknown, min: number, max: number, dflt?: number): number | undefined {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new ConfigError(path, `must be an integer, got ${describe(v)}`);
  if (v < min || v > max) throw new ConfigError(path, `must be between ${min} and ${max}, got ${v}`);
  return v;
}

export function reqInt(path: string, v: unknown, min: number, max: number): number {
  if (v === undefined) throw new ConfigError(path, `is required (an integer ${min}..${max})`);
  return optInt(path, v, min, max) as number;
}

export function optBool(path: string, v: unknown, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw new ConfigError(path, `must be true or false, got ${describe(v)}`);
  return v;
}

export function optString(path: string, v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v.length === 0) throw new ConfigError(path, `must be a non-empty string, got ${describe(v)}`);
  return v;
}

export function optEnum<T extends string>(path: string, v: unknown, values: readonly T[], dflt: T): T {
  if (v === undefined) return dflt;
  if (typeof v !== 'string' || !(values as readonly string[]).includes(v)) {
    throw new ConfigError(path, `must be one of ${values.join(', ')}, got ${describe(v)}`);
  }
  return v as T;
}

/** makeConfig's field names (the JSON/`quiclb cid` names) -> the names of the standalone YAML and the state file. */
const CONFIG_FILE_FIELDS: Record<string, string> = {
  server_id_len: 'server_id_length',
  nonce_len: 'nonce_length',
  extra_len: 'extra_length',
  len_self_encoded: 'length_self_encoded',
};

/** Re-throws a ConfigError of makeConfig under `prefix`, in the config file's field names; anything else as is. */
export function rethrowUnder(prefix: string, e: unknown): never {
  if (e instanceof ConfigError && !e.field.startsWith(prefix)) {
    throw new ConfigError(join(prefix, CONFIG_FILE_FIELDS[e.field] ?? e.field), e.message.slice(e.field.length + 2));
  }
  throw e;
}
