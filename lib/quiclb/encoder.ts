/**
 * Server side of QUIC-LB: mints connection IDs that encode this server's ID (draft-21 §3, §5.4, §9.6).
 */
import { randomBytes } from 'node:crypto';
import { QuicLbCipher } from './cipher.js';
import { cidLength, ConfigError, MAX_CID_LEN, UNROUTABLE_CONFIG_ID, type QuicLbConfig } from './config.js';

export type RandomSource = (length: number) => Uint8Array;

const defaultRandom: RandomSource = (n) => randomBytes(n);

/** Every nonce value was used under this key: the server must switch config or mint 0b111 CIDs (§9.6). */
export class NonceExhaustedError extends Error {
  constructor(readonly configId: number) {
    super(`config ${configId}: every nonce value has been used under this key; a new config (new key) is needed`);
  }
}

export interface EncodeOptions {
  /** The 5 low bits of the first octet when the length is not self-encoded (random when omitted). */
  firstOctetLow?: number;
  /** Octets appended after the block (config.extraLength of them; random when omitted). */
  extra?: Uint8Array;
  random?: RandomSource;
}

/**
 * Lays out FirstOctet || encrypted block || extra octets (§5.2) for a plaintext (server ID || nonce).
 * The first octet's low bits are the self-encoded length, `low`, or random.
 */
function assembleCid(
  config: QuicLbConfig,
  cipher: QuicLbCipher,
  plaintext: Uint8Array,
  low: number | undefined,
  extra: Uint8Array | undefined,
  random: RandomSource,
): Buffer {
  const total = cidLength(config);
  const cid = Buffer.allocUnsafe(total);
  const lowBits = config.lengthSelfEncoded ? total - 1 : (low ?? random(1)[0]) & 0x1f;
  cid[0] = (config.configId << 5) | lowBits;
  cipher.encrypt(plaintext, cid, 1);
  if (config.extraLength > 0) {
    const tail = extra ?? random(config.extraLength);
    if (tail.length !== config.extraLength) throw new ConfigError('extra', `must be ${config.extraLength} bytes, got ${tail.length}`);
    cid.set(tail, 1 + config.serverIdLength + config.nonceLength);
  }
  return cid;
}

function checkServerId(config: QuicLbConfig, serverId: Uint8Array): void {
  if (serverId.length !== config.serverIdLength) {
    throw new ConfigError('server_id', `must be ${config.serverIdLength} bytes for config ${config.configId}, got ${serverId.length}`);
  }
}

/**
 * Deterministic encoding of one CID from explicit parts (test vectors, the CLI). `cipher` may be passed to
 * reuse AES objects across calls.
 */
export function encodeCid(
  config: QuicLbConfig,
  serverId: Uint8Array,
  nonce: Uint8Array,
  options: EncodeOptions = {},
  cipher: QuicLbCipher = new QuicLbCipher(config),
): Buffer {
  checkServerId(config, serverId);
  if (nonce.length !== config.nonceLength) {
    throw new ConfigError('nonce', `must be ${config.nonceLength} bytes for config ${config.configId}, got ${nonce.length}`);
  }
  const plaintext = Buffer.concat([serverId, nonce]);
  return assembleCid(config, cipher, plaintext, options.firstOctetLow, options.extra, options.random ?? defaultRandom);
}

/**
 * Mints a connection ID with codepoint 0b111 for a server that has no config (§3.2): self-encoded length,
 * random remaining octets, at least 8 octets long by default.
 */
export function mintUnroutableCid(length = 8, random: RandomSource = defaultRandom): Buffer {
  if (!Number.isInteger(length) || length < 1 || length > MAX_CID_LEN) {
    throw new ConfigError('length', `must be between 1 and ${MAX_CID_LEN}, got ${length}`);
  }
  const cid = Buffer.alloc(length);
  if (length > 1) cid.set(random(length - 1), 1);
  cid[0] = (UNROUTABLE_CONFIG_ID << 5) | (length - 1);
  return cid;
}

/**
 * One server's CID generator for one config. With a key the nonce is a counter that starts at a random value
 * and wraps, so no nonce repeats under the key until every value was used; without a key nonces are fresh
 * random bytes, because a counter would link CIDs (§5.4, §9.6).
 */
export class CidEncoder {
  readonly config: QuicLbConfig;
  readonly serverId: Buffer;
  private readonly cipher: QuicLbCipher;
  private readonly random: RandomSource;
  private readonly plaintext: Buffer;
  private readonly counterStart: Buffer | null;
  private issued = 0n;
  private readonly space: bigint;

  constructor(config: QuicLbConfig, serverId: Uint8Array, random: RandomSource = defaultRandom) {
    checkServerId(config, serverId);
    this.config = config;
    this.serverId = Buffer.from(serverId);
    this.cipher = new QuicLbCipher(config);
    this.random = random;
    this.plaintext = Buffer.alloc(config.serverIdLength + config.nonceLength);
    this.plaintext.set(this.serverId, 0);
    this.space = 1n << BigInt(8 * config.nonceLength);
    if (config.key !== null) {
      this.counterStart = Buffer.from(random(config.nonceLength));
      this.plaintext.set(this.counterStart, config.serverIdLength);
    } else {
      this.counterStart = null;
    }
  }

  /** Nonces left under this config's key; for keyless configs the random space, which never runs out. */
  get remaining(): bigint {
    return this.counterStart === null ? this.space : this.space - this.issued;
  }

  /** True once every counter value was used; next() then throws NonceExhaustedError. */
  get exhausted(): boolean {
    return this.counterStart !== null && this.issued >= this.space;
  }

  /** A new connection ID. Throws NonceExhaustedError when a keyed config has no unused nonce left. */
  next(): Buffer {
    const { config } = this;
    if (this.counterStart === null) {
      this.plaintext.set(this.random(config.nonceLength), config.serverIdLength);
    } else {
      if (this.exhausted) throw new NonceExhaustedError(config.configId);
      if (this.issued > 0n) this.incrementNonce();
    }
    this.issued++;
    return assembleCid(config, this.cipher, this.plaintext, undefined, undefined, this.random);
  }

  /** Big-endian increment of the nonce field, wrapping at its width. */
  private incrementNonce(): void {
    for (let i = this.plaintext.length - 1; i >= this.config.serverIdLength; i--) {
      this.plaintext[i] = (this.plaintext[i] + 1) & 0xff;
      if (this.plaintext[i] !== 0) return;
    }
  }
}
