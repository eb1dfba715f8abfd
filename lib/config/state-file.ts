/**
 * The rotation state file of standalone mode: the live QUIC-LB configs the process rotates, written next to
 * the YAML config (mode 0600, atomic rename) and read by the data plane and by ServerCidGenerator.
 *
 * {"format": "quiclb-rotation-state/1", "server_id_length": 2, "last_rotation_at": "2026-…Z",
 *  "configs": [{"config_id": 1, "nonce_length": 6, "key": "<base64>", "length_self_encoded": false,
 *               "extra_length": 0, "state": "active", "since": "2026-…Z"}]}
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, renameSync, writeFileSync } from 'node:fs';
import { ConfigError, makeConfig, type QuicLbConfig } from '../quiclb/config.js';
import { checkKeys, optBool, optInt, optEnum, reqInt, requireObject, rethrowUnder } from './fields.js';
import { checkLiveConfigKeys, parseBase64Key } from './keys.js';
import { decodeUtf8, MAX_STATE_BYTES, readErrorText, readRegularFile } from './safe-read.js';
import { CONFIG_STATES, type ConfigState } from './snapshot.js';

export const STATE_FORMAT = 'quiclb-rotation-state/1';

export interface RotationConfigEntry {
  readonly config: QuicLbConfig;
  readonly state: ConfigState;
  /** When the config entered its current state (ms since the epoch). */
  readonly since: number;
}

export interface RotationState {
  readonly serverIdLength: number;
  /** When the last rotation started (ms since the epoch). */
  readonly lastRotationAt: number;
  readonly configs: readonly RotationConfigEntry[];
}

function parseTime(field: string, v: unknown): number {
  const t = typeof v === 'string' ? Date.parse(v) : NaN;
  if (!Number.isFinite(t)) throw new ConfigError(field, 'must be an ISO 8601 time');
  return t;
}

/** Parses state file text; throws ConfigError with `state_file.` field paths. */
export function parseRotationState(text: string): RotationState {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    // Not e.message: V8 quotes the text around the error, which may be part of a key.
    const pos = /at position (\d+)/.exec((e as Error).message);
    throw new ConfigError('state_file', `not valid JSON${pos ? ` (at offset ${pos[1]})` : ''}`);
  }
  const o = requireObject('state_file', raw);
  checkKeys('state_file', o, ['format', 'server_id_length', 'last_rotation_at', 'configs']);
  if (o.format !== STATE_FORMAT) throw new ConfigError('state_file.format', `must be ${JSON.stringify(STATE_FORMAT)}`);
  const serverIdLength = reqInt('state_file.server_id_length', o.server_id_length, 1, 15);
  const lastRotationAt = parseTime('state_file.last_rotation_at', o.last_rotation_at);
  if (!Array.isArray(o.configs) || o.configs.length === 0) throw new ConfigError('state_file.configs', 'must be a non-empty list');
  const configs = o.configs.map((c, i): RotationConfigEntry => {
    const p = `state_file.configs[${i}]`;
    const e = requireObject(p, c);
    checkKeys(p, e, ['config_id', 'nonce_length', 'key', 'length_self_encoded', 'extra_length', 'state', 'since']);
    let config: QuicLbConfig;
    try {
      config = makeConfig({
        configId: reqInt(`${p}.config_id`, e.config_id, 0, 6),
        serverIdLength,
        nonceLength: reqInt(`${p}.nonce_length`, e.nonce_length, 4, 18),
        key: e.key === null || e.key === undefined ? null : parseBase64Key(`${p}.key`, e.key),
        lengthSelfEncoded: optBool(`${p}.length_self_encoded`, e.length_self_encoded, false),
        extraLength: optInt(`${p}.extra_length`, e.extra_length, 0, 14, 0),
      });
    } catch (err) {
      return rethrowUnder(p, err);
    }
    return { config, state: optEnum(`${p}.state`, e.state, CONFIG_STATES, 'active'), since: parseTime(`${p}.since`, e.since) };
  });
  const firstWithId = new Map<number, number>();
  configs.forEach((c, i) => {
    const id = c.config.configId;
    const prev = firstWithId.get(id);
    if (prev !== undefined) throw new ConfigError(`state_file.configs[${i}].config_id`, `${id} is also the config_id of state_file.configs[${prev}]`);
    firstWithId.set(id, i);
  });
  checkLiveConfigKeys('state_file.configs', configs);
  return { serverIdLength, lastRotationAt, configs };
}

/** Reads the state file; null when it does not exist. */
export function readRotationState(path: string): RotationState | null {
  let text: string;
  try {
    text = decodeUtf8(readRegularFile(path, MAX_STATE_BYTES));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new ConfigError('state_file', `cannot read ${path}: ${readErrorText(e)}`);
  }
  try {
    return parseRotationState(text);
  } catch (e) {
    // the state file's path is not in the YAML (it defaults to <config>.state.json): say which file it is
    if (e instanceof ConfigError) throw new ConfigError(e.field, `${e.message.slice(e.field.length + 2)} (in ${path})`);
    throw e;
  }
}

export function formatRotationState(s: RotationState): string {
  return (
    JSON.stringify(
      {
        format: STATE_FORMAT,
        server_id_length: s.serverIdLength,
        last_rotation_at: new Date(s.lastRotationAt).toISOString(),
        configs: s.configs.map((e) => ({
          config_id: e.config.configId,
          nonce_length: e.config.nonceLength,
          key: e.config.key ? Buffer.from(e.config.key).toString('base64') : null,
          length_self_encoded: e.config.lengthSelfEncoded,
          extra_length: e.config.extraLength,
          state: e.state,
          since: new Date(e.since).toISOString(),
        })),
      },
      null,
      2,
    ) + '\n'
  );
}

/** Writes atomically (temp file + rename) with mode 0600: the file holds keys. */
export function writeRotationState(path: string, s: RotationState): void {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, formatRotationState(s), { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}
