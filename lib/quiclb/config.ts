/**
 * QUIC-LB configuration (draft-ietf-quic-load-balancers-21 §3, §5.3) and its validation.
 * A configuration is shared by the load balancer (decode) and the servers (encode).
 */

export const MAX_CONFIG_ID = 6;
/** Codepoint 0b111: "this connection ID carries no routing information" (§3.2). */
export const UNROUTABLE_CONFIG_ID = 7;
export const MIN_SERVER_ID_LEN = 1;
export const MIN_NONCE_LEN = 4;
/** server_id_len + nonce_len: the QUIC v1 20-octet connection-ID limit minus the first octet. */
export const MAX_PLAINTEXT_LEN = 19;
export const KEY_LEN = 16;
/**
 * Longest connection ID QUIC v1/v2 allow (RFC 9000 §17.2): the header parser's MAX_CID_LENGTH_V1 too, not imported
 * so that the codec imports nothing else of the project (test/backend/layering.test.ts checks they agree).
 */
export const MAX_CID_LEN = 20;

export type CipherMode = 'plaintext' | 'single-pass' | 'four-pass';

export interface QuicLbConfig {
  /** Config rotation codepoint, 0..6. */
  readonly configId: number;
  readonly serverIdLength: number;
  readonly nonceLength: number;
  /** 16-octet AES-128 key, or null for plaintext mode. */
  readonly key: Uint8Array | null;
  /** Server side: put (CID length - 1) in the low 5 bits of the first octet (§3.3). LBs ignore it. */
  readonly lengthSelfEncoded: boolean;
  /** Server side: random octets appended after the encoded block; the same for every server of the config (§5.4). */
  readonly extraLength: number;
}

export interface QuicLbConfigInput {
  configId: number;
  serverIdLength: number;
  nonceLength: number;
  key?: Uint8Array | null;
  lengthSelfEncoded?: boolean;
  extraLength?: number;
}

export class ConfigError extends Error {
  constructor(readonly field: string, problem: string, options?: ErrorOptions) {
    super(`${field}: ${problem}`, options);
  }
}

function requireInt(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw new ConfigError(field, `must be an integer, got ${JSON.stringify(value)}`);
  }
  if (value < min || value > max) throw new ConfigError(field, `must be between ${min} and ${max}, got ${value}`);
  return value;
}

/** Validates every rule of §3.1 and §5.3 and returns a frozen config. Throws ConfigError naming the field. */
export function makeConfig(input: QuicLbConfigInput): QuicLbConfig {
  if (input.configId === UNROUTABLE_CONFIG_ID) {
    throw new ConfigError('config_id', '7 (0b111) is reserved for unroutable connection IDs and must not be configured');
  }
  const configId = requireInt('config_id', input.configId, 0, MAX_CONFIG_ID);
  const serverIdLength = requireInt('server_id_len', input.serverIdLength, MIN_SERVER_ID_LEN, MAX_PLAINTEXT_LEN - MIN_NONCE_LEN);
  const nonceLength = requireInt('nonce_len', input.nonceLength, MIN_NONCE_LEN, MAX_PLAINTEXT_LEN - MIN_SERVER_ID_LEN);
  if (serverIdLength + nonceLength > MAX_PLAINTEXT_LEN) {
    throw new ConfigError(
      'nonce_len',
      `server_id_len + nonce_len must be at most ${MAX_PLAINTEXT_LEN}, got ${serverIdLength} + ${nonceLength} = ${serverIdLength + nonceLength}`,
    );
  }
  let key: Uint8Array | null = null;
  if (input.key !== undefined && input.key !== null) {
    if (!(input.key instanceof Uint8Array)) throw new ConfigError('key', 'must be 16 bytes');
    if (input.key.length !== KEY_LEN) throw new ConfigError('key', `must be ${KEY_LEN} bytes (AES-128), got ${input.key.length}`);
    key = Buffer.from(input.key); // private copy: callers may reuse their buffer
  }
  const extraLength = requireInt('extra_len', input.extraLength ?? 0, 0, MAX_CID_LEN - 1 - serverIdLength - nonceLength);
  const lengthSelfEncoded = input.lengthSelfEncoded ?? false;
  if (typeof lengthSelfEncoded !== 'boolean') throw new ConfigError('len_self_encoded', 'must be true or false');
  return Object.freeze({ configId, serverIdLength, nonceLength, key, lengthSelfEncoded, extraLength });
}

/** The algorithm is implied by the config (§5.4): no key = plaintext; 16-octet block = single-pass; otherwise four-pass. */
export function cipherModeOf(config: Pick<QuicLbConfig, 'key' | 'serverIdLength' | 'nonceLength'>): CipherMode {
  if (config.key === null) return 'plaintext';
  return config.serverIdLength + config.nonceLength === 16 ? 'single-pass' : 'four-pass';
}

/** Total length of the CIDs a server mints with this config. */
export function cidLength(config: QuicLbConfig): number {
  return 1 + config.serverIdLength + config.nonceLength + config.extraLength;
}
