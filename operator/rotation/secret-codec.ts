/**
 * The configs Secret as the operator's durable record of its rotation: two data keys written together (one update,
 * one resourceVersion precondition, so a new key and the state that names it can never be split):
 *
 * - `configs.json`: what backends mount (keys.ts, the `quiclb-rotation-state/1` format with the keys);
 * - `state.json`: the rotation machine's state without keys:
 *     {"format": "quiclb-rotation-machine/1", "last_rotation_at": "…Z" | null, "last_triggers": {"spec": "…"},
 *      "configs": [{"config_id": 1, "state": "active", "since": "…Z", "server_id_length": 2, "nonce_length": 6,
 *                   "length_self_encoded": false, "encrypted": true, "fingerprint": "sha256:…",
 *                   "key_fingerprint": "sha256:…" | null, "reason": "interval",
 *                   "last_traffic": 12, "quiet_since": "…Z"}]}
 *
 * Decoding checks both, and that they describe the same configs with matching keys (liveConfigs() compares every
 * key with its fingerprint). Errors name fields, never key bytes.
 */
import { ConfigError } from '../../lib/quiclb/config.js';
import { checkKeys, optBool, reqInt, requireObject } from '../../lib/config/fields.js';
import { CONFIG_STATES, type ConfigState } from '../../lib/config/snapshot.js';
import { BACKEND_CONFIGS_KEY, decodeBackendSecret, encodeBackendSecret } from './keys.js';
import { backendConfigsState, checkMachineState, liveConfigs, type LiveConfigRecord, type MachineState, type RotationReason } from './machine.js';

export const MACHINE_STATE_KEY = 'state.json';
export const MACHINE_FORMAT = 'quiclb-rotation-machine/1';
const REASONS: readonly RotationReason[] = ['initial', 'spec-change', 'key-changed', 'on-demand', 'interval'];

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

export function encodeMachineState(s: MachineState): string {
  return JSON.stringify({
    format: MACHINE_FORMAT,
    last_rotation_at: s.lastRotationAt === null ? null : iso(s.lastRotationAt),
    last_triggers: s.lastTriggers,
    configs: s.configs.map((c) => ({
      config_id: c.configId,
      state: c.state,
      since: iso(c.since),
      server_id_length: c.encoding.serverIdLength,
      nonce_length: c.encoding.nonceLength,
      length_self_encoded: c.encoding.lengthSelfEncoded,
      encrypted: c.encoding.encrypted,
      fingerprint: c.fingerprint,
      key_fingerprint: c.keyFingerprint,
      reason: c.reason,
      ...(c.lastTraffic !== undefined ? { last_traffic: c.lastTraffic } : {}),
      ...(c.quietSince !== undefined ? { quiet_since: iso(c.quietSince) } : {}),
    })),
  });
}

function time(path: string, v: unknown): number {
  const t = typeof v === 'string' && v.length <= 40 ? Date.parse(v) : NaN;
  if (!Number.isFinite(t)) throw new ConfigError(path, 'must be an RFC 3339 time');
  return t;
}

const FINGERPRINT = /^sha256:[0-9a-f]{16}$/;

export function decodeMachineState(text: string): MachineState {
  if (text.length > 64 * 1024) throw new ConfigError('state', 'larger than 64 KiB');
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new ConfigError('state', 'not valid JSON');
  }
  const o = requireObject('state', raw);
  checkKeys('state', o, ['format', 'last_rotation_at', 'last_triggers', 'configs']);
  if (o.format !== MACHINE_FORMAT) throw new ConfigError('state.format', `must be ${JSON.stringify(MACHINE_FORMAT)}`);
  const lastRotationAt = o.last_rotation_at === null ? null : time('state.last_rotation_at', o.last_rotation_at);
  const triggers = requireObject('state.last_triggers', o.last_triggers ?? {});
  const lastTriggers: Record<string, string> = {};
  for (const [k, v] of Object.entries(triggers)) {
    if (typeof v !== 'string' || v.length > 256 || k.length > 64) throw new ConfigError(`state.last_triggers.${k}`, 'must be a string of at most 256 characters');
    lastTriggers[k] = v;
  }
  if (!Array.isArray(o.configs) || o.configs.length > 7) throw new ConfigError('state.configs', 'must be a list of at most 7 configs');
  const configs = o.configs.map((c, i): LiveConfigRecord => {
    const p = `state.configs[${i}]`;
    const e = requireObject(p, c);
    checkKeys(p, e, [
      'config_id',
      'state',
      'since',
      'server_id_length',
      'nonce_length',
      'length_self_encoded',
      'encrypted',
      'fingerprint',
      'key_fingerprint',
      'reason',
      'last_traffic',
      'quiet_since',
    ]);
    if (typeof e.state !== 'string' || !(CONFIG_STATES as readonly string[]).includes(e.state)) throw new ConfigError(`${p}.state`, `must be one of ${CONFIG_STATES.join(', ')}`);
    if (typeof e.fingerprint !== 'string' || !FINGERPRINT.test(e.fingerprint)) throw new ConfigError(`${p}.fingerprint`, 'must be sha256: and 16 hex digits');
    if (e.key_fingerprint !== null && (typeof e.key_fingerprint !== 'string' || !FINGERPRINT.test(e.key_fingerprint))) {
      throw new ConfigError(`${p}.key_fingerprint`, 'must be null or sha256: and 16 hex digits');
    }
    if (typeof e.reason !== 'string' || !(REASONS as readonly string[]).includes(e.reason)) throw new ConfigError(`${p}.reason`, `must be one of ${REASONS.join(', ')}`);
    const lastTraffic = e.last_traffic === undefined ? undefined : reqInt(`${p}.last_traffic`, e.last_traffic, 0, Number.MAX_SAFE_INTEGER);
    return {
      configId: reqInt(`${p}.config_id`, e.config_id, 0, 6),
      state: e.state as ConfigState,
      since: time(`${p}.since`, e.since),
      encoding: {
        serverIdLength: reqInt(`${p}.server_id_length`, e.server_id_length, 1, 15),
        nonceLength: reqInt(`${p}.nonce_length`, e.nonce_length, 4, 18),
        lengthSelfEncoded: optBool(`${p}.length_self_encoded`, e.length_self_encoded, false),
        encrypted: optBool(`${p}.encrypted`, e.encrypted, true),
      },
      fingerprint: e.fingerprint,
      keyFingerprint: e.key_fingerprint as string | null,
      reason: e.reason as RotationReason,
      ...(lastTraffic !== undefined ? { lastTraffic } : {}),
      ...(e.quiet_since !== undefined ? { quietSince: time(`${p}.quiet_since`, e.quiet_since) } : {}),
    };
  });
  const state: MachineState = { configs, lastRotationAt, lastTriggers };
  const problem = checkMachineState(state);
  if (problem !== null) throw new ConfigError('state.configs', problem);
  return state;
}

/** Secret data (base64 values) for the state and its keys. Throws when a key is missing or does not match. */
export function encodeConfigsSecret(s: MachineState, keys: ReadonlyMap<number, Uint8Array>): Record<string, string> {
  return {
    ...encodeBackendSecret(backendConfigsState(s, keys)),
    [MACHINE_STATE_KEY]: Buffer.from(encodeMachineState(s), 'utf8').toString('base64'),
  };
}

/** The state and keys from the Secret's data; throws ConfigError naming the problem (never a key). */
export function decodeConfigsSecret(data: Readonly<Record<string, string>> | undefined): { state: MachineState; keys: Map<number, Uint8Array> } {
  const b64 = data?.[MACHINE_STATE_KEY];
  if (b64 === undefined) throw new ConfigError(MACHINE_STATE_KEY, 'missing from the Secret');
  const state = decodeMachineState(Buffer.from(b64, 'base64').toString('utf8'));
  const backend = decodeBackendSecret(data);
  const keys = new Map<number, Uint8Array>();
  for (const c of backend.configs) if (c.config.key !== null) keys.set(c.config.configId, c.config.key);
  const inState = state.configs.map((c) => c.configId).sort().join(',');
  const inBackend = backend.configs.map((c) => c.config.configId).sort().join(',');
  if (inState !== inBackend) throw new ConfigError(BACKEND_CONFIGS_KEY, `holds configs ${inBackend || 'none'} but ${MACHINE_STATE_KEY} names ${inState || 'none'}`);
  try {
    liveConfigs(state, keys);
  } catch (e) {
    throw new ConfigError(BACKEND_CONFIGS_KEY, (e as Error).message);
  }
  return { state, keys };
}
