/**
 * QUIC-LB keys on the operator side: generation, config fingerprints and the Secret that backends mount. A key's own
 * fingerprint (the only form of a key that may appear in status, events, logs and audit lines) is
 * lib/config/key-fingerprint.ts, the same the data plane's admin API shows.
 *
 * The backends' Secret holds one data key, `configs.json`, in the rotation-state format that standalone mode already
 * writes and ServerCidGenerator already reads (lib/config/state-file.ts, `quiclb-rotation-state/1`):
 *
 *   {"format": "quiclb-rotation-state/1", "server_id_length": 2, "last_rotation_at": "2026-…Z",
 *    "configs": [{"config_id": 1, "nonce_length": 6, "key": "<16 bytes, base64>" | null,
 *                 "length_self_encoded": false, "extra_length": 0,
 *                 "state": "active" | "accepting" | "draining", "since": "2026-…Z"}]}
 *
 * A backend mints with the one `active` config (never with `accepting`: the load balancers may not decode it yet),
 * and keeps `draining` configs only to recognise its own older connection IDs. Its server ID comes from the pod's
 * annotation `quiclb.io/server-id` (hex), mounted through a downward-API volume. The kubelet updates both files in
 * place; the operator writes the Secret before it tells anyone a config is active.
 */
import { createHash, randomBytes } from 'node:crypto';
import { ConfigError, KEY_LEN, type QuicLbConfig } from '../../lib/quiclb/config.js';
import { parseKeyFileContents } from '../../lib/config/keys.js';
import { formatRotationState, parseRotationState, type RotationState } from '../../lib/config/state-file.js';

export const BACKEND_CONFIGS_KEY = 'configs.json';

export function generateKey(): Buffer {
  return randomBytes(KEY_LEN);
}

/**
 * Identifies a whole config (id, lengths, flags and key): what a data plane's ACK is compared with, so an ACK of an
 * older config under the same id never counts for a new one.
 */
export function configFingerprint(config: QuicLbConfig): string {
  const h = createHash('sha256');
  h.update(Uint8Array.of(config.configId, config.serverIdLength, config.nonceLength, config.extraLength, config.lengthSelfEncoded ? 1 : 0));
  h.update(config.key === null ? Uint8Array.of(0) : Buffer.concat([Uint8Array.of(1), config.key]));
  return `sha256:${h.digest('hex').slice(0, 16)}`;
}

/**
 * The key in a user's Secret (spec.encryption.keySecretRef): 16 raw bytes, 24 base64 characters or 32 hex digits.
 * Throws ConfigError saying what the value looks like, never what it is.
 */
export function parseUserKey(secretName: string, dataKey: string, data: Buffer | undefined): Buffer {
  const field = `Secret ${secretName} key ${JSON.stringify(dataKey)}`;
  if (data === undefined) throw new ConfigError(field, 'missing: the Secret must hold the key under this name');
  return parseKeyFileContents(field, data);
}

/** The backends' Secret data (values base64, as the API wants them). */
export function encodeBackendSecret(state: RotationState): Record<string, string> {
  return { [BACKEND_CONFIGS_KEY]: Buffer.from(formatRotationState(state), 'utf8').toString('base64') };
}

/**
 * Reads the backends' Secret back (the operator keeps its keys there and restores them after a restart).
 * Throws ConfigError (field paths under `state_file`) for anything that is not a valid set of live configs.
 */
export function decodeBackendSecret(data: Readonly<Record<string, string>> | undefined): RotationState {
  const b64 = data?.[BACKEND_CONFIGS_KEY];
  if (b64 === undefined) throw new ConfigError(BACKEND_CONFIGS_KEY, 'missing from the Secret');
  return parseRotationState(Buffer.from(b64, 'base64').toString('utf8'));
}
