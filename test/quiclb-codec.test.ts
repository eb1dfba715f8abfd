import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import {
  CidDecoder,
  CidEncoder,
  ConfigError,
  DecodeResult,
  decryptCid,
  encodeCid,
  makeConfig,
  mintUnroutableCid,
  NonceExhaustedError,
  type QuicLbConfig,
} from '../lib/index.js';

/** Every legal (server_id_len, nonce_len) pair of §5.3. */
const legalPairs: [number, number][] = [];
for (let s = 1; s <= 15; s++) for (let n = 4; s + n <= 19; n++) legalPairs.push([s, n]);

const arbConfig = fc
  .record({
    pair: fc.constantFrom(...legalPairs),
    configId: fc.integer({ min: 0, max: 6 }),
    keyed: fc.boolean(),
    key: fc.uint8Array({ minLength: 16, maxLength: 16 }),
    lengthSelfEncoded: fc.boolean(),
    extra: fc.nat(),
  })
  .map(({ pair: [s, n], configId, keyed, key, lengthSelfEncoded, extra }) =>
    makeConfig({
      configId,
      serverIdLength: s,
      nonceLength: n,
      key: keyed ? key : null,
      lengthSelfEncoded,
      extraLength: extra % (20 - 1 - s - n + 1),
    }),
  );

const arbCase = arbConfig.chain((config) =>
  fc.record({
    config: fc.constant(config),
    serverId: fc.uint8Array({ minLength: config.serverIdLength, maxLength: config.serverIdLength }),
    nonce: fc.uint8Array({ minLength: config.nonceLength, maxLength: config.nonceLength }),
  }),
);

describe('codec round trip (property)', () => {
  it('covers all 120 legal length pairs', () => {
    expect(legalPairs.length).toBe(120);
  });

  it('decode(encode(x)) recovers the server ID for every legal length pair, keyed or not', () => {
    fc.assert(
      fc.property(arbCase, ({ config, serverId, nonce }) => {
        const cid = encodeCid(config, serverId, nonce);
        const r = new CidDecoder([config]).decode(cid);
        expect(r.reason).toBeNull();
        expect(r.configId).toBe(config.configId);
        expect(Buffer.compare(r.serverId!, Buffer.from(serverId))).toBe(0);
      }),
      { numRuns: 3000 },
    );
  });

  it("a server's full decrypt recovers server ID and nonce", () => {
    fc.assert(
      fc.property(arbCase, ({ config, serverId, nonce }) => {
        const cid = encodeCid(config, serverId, nonce);
        const d = decryptCid(config, cid);
        expect(d.serverId.equals(Buffer.from(serverId))).toBe(true);
        expect(d.nonce.equals(Buffer.from(nonce))).toBe(true);
      }),
      { numRuns: 3000 },
    );
  });

  it('every legal pair round-trips deterministically in each mode', () => {
    const key = Buffer.alloc(16, 7);
    for (const [s, n] of legalPairs) {
      for (const k of [null, key]) {
        const config = makeConfig({ configId: 3, serverIdLength: s, nonceLength: n, key: k });
        const sid = Buffer.alloc(s, 0xa5);
        const nonce = Buffer.alloc(n, 0x3c);
        const cid = encodeCid(config, sid, nonce);
        expect(cid.length).toBe(1 + s + n);
        expect(new CidDecoder([config]).decode(cid).serverId).toEqual(sid);
        expect(decryptCid(config, cid).nonce).toEqual(nonce);
      }
    }
  });

  it('the first octet carries the config ID and, when self-encoded, the CID length minus one', () => {
    fc.assert(
      fc.property(arbCase, ({ config, serverId, nonce }) => {
        const cid = encodeCid(config, serverId, nonce);
        expect(cid[0] >> 5).toBe(config.configId);
        expect(cid.length).toBe(1 + config.serverIdLength + config.nonceLength + config.extraLength);
        if (config.lengthSelfEncoded) expect(cid[0] & 0x1f).toBe(cid.length - 1);
      }),
    );
  });

  it('the first octet is not an input to the cipher: CIDs differing only in config ID share octets 2..n', () => {
    const key = Buffer.alloc(16, 1);
    const a = makeConfig({ configId: 0, serverIdLength: 2, nonceLength: 6, key });
    const b = makeConfig({ configId: 5, serverIdLength: 2, nonceLength: 6, key });
    const sid = Buffer.from('beef', 'hex');
    const nonce = Buffer.from('010203040506', 'hex');
    expect(encodeCid(a, sid, nonce, { firstOctetLow: 0 }).subarray(1)).toEqual(
      encodeCid(b, sid, nonce, { firstOctetLow: 0 }).subarray(1),
    );
  });
});

describe('decoder', () => {
  const key = Buffer.alloc(16, 9);
  const cfg = (configId: number, s = 2, n = 6) => makeConfig({ configId, serverIdLength: s, nonceLength: n, key });

  it('reports 0b111 as reserved, a missing config as unknown-config, and short CIDs as too-short', () => {
    const d = new CidDecoder([cfg(1)]);
    expect(d.decode(mintUnroutableCid(8)).reason).toBe('reserved');
    expect(d.decode(Buffer.from('40aabbccddeeff0011', 'hex'))).toEqual({ configId: 2, serverId: null, reason: 'unknown-config' });
    expect(d.decode(Buffer.from('20aabbccddeeff00', 'hex')).reason).toBe('too-short');
    expect(d.decode(Buffer.alloc(0)).reason).toBe('too-short');
  });

  it('accepts CIDs longer than 1 + server_id_len + nonce_len', () => {
    const c = cfg(1);
    const cid = Buffer.concat([encodeCid(c, Buffer.from('0102', 'hex'), Buffer.alloc(6, 4)), Buffer.alloc(11, 0xff)]);
    expect(new CidDecoder([c]).decode(cid).serverId).toEqual(Buffer.from('0102', 'hex'));
  });

  it('holds up to seven configs and routes each config ID by its own config', () => {
    const configs = [0, 1, 2, 3, 4, 5, 6].map((id) => makeConfig({ configId: id, serverIdLength: 1 + id, nonceLength: 4 + id, key: id % 2 ? key : null }));
    const d = new CidDecoder(configs);
    for (const c of configs) {
      const sid = Buffer.alloc(c.serverIdLength, c.configId + 1);
      const r = d.decode(encodeCid(c, sid, Buffer.alloc(c.nonceLength, 2)));
      expect(r.configId).toBe(c.configId);
      expect(r.serverId).toEqual(sid);
    }
    d.removeConfig(3);
    expect(d.configs().map((c) => c.configId)).toEqual([0, 1, 2, 4, 5, 6]);
  });

  it('decodes a view inside a datagram without copying it, reusing one result record', () => {
    const c = cfg(2, 3, 5);
    const cid = encodeCid(c, Buffer.from('abcdef', 'hex'), Buffer.alloc(5, 1));
    const datagram = Buffer.concat([Buffer.from([0x40]), cid, Buffer.alloc(40)]);
    const d = new CidDecoder([c]);
    const out = new DecodeResult();
    expect(d.decodeInto(datagram, 1, datagram.length - 1, out)).toBe(true);
    expect(Buffer.from(out.serverId).toString('hex')).toBe('abcdef');
    expect(datagram.subarray(1, 1 + cid.length)).toEqual(cid);
  });

  it('never throws on arbitrary bytes at arbitrary offsets', () => {
    const d = new CidDecoder([cfg(0, 1, 4), cfg(1, 8, 8), makeConfig({ configId: 2, serverIdLength: 4, nonceLength: 5 }), cfg(3, 15, 4)]);
    const out = new DecodeResult();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.nat(), fc.nat(), (bytes, o, l) => {
        const offset = bytes.length ? o % bytes.length : 0;
        const length = bytes.length - offset ? l % (bytes.length - offset + 1) : 0;
        const ok = d.decodeInto(bytes, offset, length, out);
        expect(ok ? out.reason === null : ['reserved', 'unknown-config', 'too-short'].includes(out.reason!)).toBe(true);
      }),
      { numRuns: 20000 },
    );
  });
});

describe('encoder (server side)', () => {
  const key = Buffer.alloc(16, 3);

  it('never repeats a nonce under a key: a counter from a random start, detected exhaustion', () => {
    const config = makeConfig({ configId: 0, serverIdLength: 1, nonceLength: 4, key });
    const n = 0xfffffffe;
    const enc = new CidEncoder(config, Buffer.from([7]), (len) => {
      const b = Buffer.alloc(len);
      if (len === 4) b.writeUInt32BE(n);
      return b;
    });
    const nonces = new Set<string>();
    for (let i = 0; i < 4; i++) nonces.add(decryptCid(config, enc.next()).nonce.toString('hex'));
    expect([...nonces]).toEqual(['fffffffe', 'ffffffff', '00000000', '00000001']);
    expect(enc.remaining).toBe((1n << 32n) - 4n);
  });

  it('throws NonceExhaustedError once the counter returns to its start', () => {
    const config = makeConfig({ configId: 4, serverIdLength: 1, nonceLength: 4, key });
    const enc = new CidEncoder(config, Buffer.from([1]));
    // Fast-forward the private counter instead of minting 2^32 CIDs.
    (enc as unknown as { issued: bigint }).issued = (1n << 32n) - 1n;
    expect(enc.exhausted).toBe(false);
    enc.next();
    expect(enc.exhausted).toBe(true);
    expect(() => enc.next()).toThrow(NonceExhaustedError);
  });

  it('uses unlinkable random nonces without a key (no counter)', () => {
    const config = makeConfig({ configId: 1, serverIdLength: 2, nonceLength: 6 });
    const enc = new CidEncoder(config, Buffer.from('0102', 'hex'));
    const a = decryptCid(config, enc.next()).nonce.readUIntBE(0, 6);
    const b = decryptCid(config, enc.next()).nonce.readUIntBE(0, 6);
    expect(Math.abs(a - b)).not.toBe(1);
  });

  it('mints CIDs every decoder routes to its server ID', () => {
    const config = makeConfig({ configId: 2, serverIdLength: 3, nonceLength: 9, key, lengthSelfEncoded: true, extraLength: 2 });
    const enc = new CidEncoder(config, Buffer.from('c0ffee', 'hex'));
    const d = new CidDecoder([config]);
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const cid = enc.next();
      expect(cid.length).toBe(15);
      expect(cid[0]).toBe((2 << 5) | 14);
      expect(d.decode(cid).serverId!.toString('hex')).toBe('c0ffee');
      seen.add(cid.toString('hex'));
    }
    expect(seen.size).toBe(1000);
  });

  it('mints 0b111 CIDs with self-encoded length for servers without a config', () => {
    const cid = mintUnroutableCid(12);
    expect(cid[0] >> 5).toBe(7);
    expect(cid[0] & 0x1f).toBe(11);
    expect(cid.length).toBe(12);
    expect(() => mintUnroutableCid(21)).toThrow(ConfigError);
  });

  it('rejects a server ID of the wrong length', () => {
    const config = makeConfig({ configId: 0, serverIdLength: 2, nonceLength: 4 });
    expect(() => new CidEncoder(config, Buffer.from([1]))).toThrow('server_id: must be 2 bytes for config 0, got 1');
  });
});

describe('config validation (§3.1, §5.3)', () => {
  const base = { configId: 0, serverIdLength: 2, nonceLength: 6 };
  const cases: [string, Partial<Parameters<typeof makeConfig>[0]>, string][] = [
    ['config id 7 is reserved', { configId: 7 }, 'config_id: 7 (0b111) is reserved'],
    ['config id above 7', { configId: 8 }, 'config_id: must be between 0 and 6, got 8'],
    ['negative config id', { configId: -1 }, 'config_id: must be between 0 and 6'],
    ['non-integer config id', { configId: 1.5 }, 'config_id: must be an integer'],
    ['server ID of 0 octets', { serverIdLength: 0 }, 'server_id_len: must be between 1 and 15, got 0'],
    ['nonce under 4 octets', { nonceLength: 3 }, 'nonce_len: must be between 4 and 18, got 3'],
    ['sum above 19', { serverIdLength: 10, nonceLength: 10 }, 'server_id_len + nonce_len must be at most 19, got 10 + 10 = 20'],
    ['key of 15 bytes', { key: Buffer.alloc(15) }, 'key: must be 16 bytes (AES-128), got 15'],
    ['extra octets past 20', { extraLength: 12 }, 'extra_len: must be between 0 and 11, got 12'],
  ];
  it.each(cases)('rejects %s with a precise message', (_name, patch, message) => {
    expect(() => makeConfig({ ...base, ...patch } as Parameters<typeof makeConfig>[0])).toThrow(message);
  });

  it('accepts the extremes 1+18 and 15+4', () => {
    expect(makeConfig({ configId: 6, serverIdLength: 1, nonceLength: 18 }).nonceLength).toBe(18);
    expect(makeConfig({ configId: 6, serverIdLength: 15, nonceLength: 4 }).serverIdLength).toBe(15);
  });

  it('copies the key so a caller reusing its buffer cannot change the config', () => {
    const key = Buffer.alloc(16, 1);
    const c: QuicLbConfig = makeConfig({ ...base, key });
    key.fill(2);
    expect(c.key![0]).toBe(1);
  });
});
