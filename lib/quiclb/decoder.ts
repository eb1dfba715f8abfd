/**
 * Load-balancer side of QUIC-LB: extracts the config ID and server ID from a destination connection ID
 * (draft-21 §4.1, §5.5). Holds up to seven configs at once, one per config ID, for rotation.
 */
import { QuicLbCipher } from './cipher.js';
import { MAX_CONFIG_ID, UNROUTABLE_CONFIG_ID, type QuicLbConfig } from './config.js';

/**
 * Why a connection ID carries no usable routing information:
 * - reserved: codepoint 0b111 (a server without config, §3.2);
 * - unknown-config: no config is loaded for its config ID;
 * - too-short: fewer than 1 + server_id_len + nonce_len octets.
 */
export type UnroutableReason = 'reserved' | 'unknown-config' | 'too-short';

/** Reusable result record for the hot path. `serverId` is a view valid until the next decode with that config. */
export class DecodeResult {
  configId = -1;
  serverId: Uint8Array = new Uint8Array(0);
  reason: UnroutableReason | null = null;
}

export type Decoded =
  | { configId: number; serverId: Buffer; reason: null }
  | { configId: number | null; serverId: null; reason: UnroutableReason };

interface Slot {
  readonly config: QuicLbConfig;
  readonly cipher: QuicLbCipher;
  readonly minLength: number;
  readonly serverId: Buffer;
}

export class CidDecoder {
  private readonly slots: (Slot | undefined)[] = new Array(MAX_CONFIG_ID + 1);

  constructor(configs: Iterable<QuicLbConfig> = []) {
    for (const c of configs) this.setConfig(c);
  }

  /** Loads (or replaces) the config for its config ID, creating its AES objects once. */
  setConfig(config: QuicLbConfig): void {
    const cipher = new QuicLbCipher(config);
    this.slots[config.configId] = {
      config,
      cipher,
      minLength: 1 + cipher.plaintextLength,
      serverId: Buffer.alloc(config.serverIdLength),
    };
  }

  removeConfig(configId: number): void {
    this.slots[configId] = undefined;
  }

  getConfig(configId: number): QuicLbConfig | undefined {
    return this.slots[configId]?.config;
  }

  configs(): QuicLbConfig[] {
    return this.slots.filter((s): s is Slot => s !== undefined).map((s) => s.config);
  }

  /**
   * Decodes the connection ID at buf[offset .. offset+length) without copying it. `length` is the DCID length
   * from a long header, or for a short header the octets available after the first byte: only
   * 1 + server_id_len + nonce_len octets are read, so longer CIDs (appended server octets) are accepted.
   * Returns true and fills out.configId/out.serverId when routable; otherwise false with out.reason set.
   */
  decodeInto(buf: Uint8Array, offset: number, length: number, out: DecodeResult): boolean {
    if (length < 1) {
      out.configId = -1;
      out.reason = 'too-short';
      return false;
    }
    const configId = buf[offset] >> 5;
    out.configId = configId;
    if (configId === UNROUTABLE_CONFIG_ID) {
      out.reason = 'reserved';
      return false;
    }
    const slot = this.slots[configId];
    if (slot === undefined) {
      out.reason = 'unknown-config';
      return false;
    }
    if (length < slot.minLength) {
      out.reason = 'too-short';
      return false;
    }
    slot.cipher.decryptServerId(buf, offset + 1, slot.serverId);
    out.serverId = slot.serverId;
    out.reason = null;
    return true;
  }

  /** Convenience form for tools and tests: copies the server ID out. */
  decode(cid: Uint8Array): Decoded {
    const r = new DecodeResult();
    if (this.decodeInto(cid, 0, cid.length, r)) {
      return { configId: r.configId, serverId: Buffer.from(r.serverId), reason: null };
    }
    return { configId: r.configId < 0 ? null : r.configId, serverId: null, reason: r.reason as UnroutableReason };
  }
}

/** A server decoding its own connection ID: server ID and nonce (all four passes). */
export function decryptCid(config: QuicLbConfig, cid: Uint8Array): { serverId: Buffer; nonce: Buffer } {
  const L = config.serverIdLength + config.nonceLength;
  if (cid.length < 1 + L) throw new RangeError(`connection ID too short for config ${config.configId}: ${cid.length} < ${1 + L}`);
  const plain = Buffer.alloc(L);
  new QuicLbCipher(config).decrypt(cid, 1, plain);
  return { serverId: plain.subarray(0, config.serverIdLength), nonce: plain.subarray(config.serverIdLength) };
}
