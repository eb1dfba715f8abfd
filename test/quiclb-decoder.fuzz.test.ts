/**
 * Bounded fuzz of the load-balancer decoder: at least a million random and mutated connection IDs through
 * every mode; the decoder must never throw and must always return routable or a known reason.
 */
import { describe, expect, it } from '@jest/globals';
import { randomFillSync } from 'node:crypto';
import { CidDecoder, DecodeResult, encodeCid, makeConfig } from '../lib/index.js';

const INPUTS = 1_000_000;
const DEADLINE_MS = 60_000;

describe('decoder fuzz (bounded)', () => {
  it('never throws on a million random and mutated connection IDs, and classifies every one', () => {
    const key = Buffer.alloc(16, 0x5a);
    const configs = [
      makeConfig({ configId: 0, serverIdLength: 2, nonceLength: 6 }),
      makeConfig({ configId: 1, serverIdLength: 8, nonceLength: 8, key }),
      makeConfig({ configId: 2, serverIdLength: 10, nonceLength: 5, key }),
      makeConfig({ configId: 3, serverIdLength: 3, nonceLength: 4, key }),
      makeConfig({ configId: 4, serverIdLength: 1, nonceLength: 18, key }),
      makeConfig({ configId: 5, serverIdLength: 15, nonceLength: 4, key }),
    ];
    const decoder = new CidDecoder(configs);
    const seeds = configs.flatMap((c) =>
      Array.from({ length: 8 }, (_, i) => encodeCid(c, Buffer.alloc(c.serverIdLength, i), Buffer.alloc(c.nonceLength, i * 3))),
    );
    const random = Buffer.alloc(1 << 16);
    let rp = random.length;
    const nextByte = () => {
      if (rp >= random.length) {
        randomFillSync(random);
        rp = 0;
      }
      return random[rp++];
    };
    const buf = Buffer.alloc(64);
    const out = new DecodeResult();
    const counts = { routable: 0, reserved: 0, 'unknown-config': 0, 'too-short': 0, other: 0 };
    const started = Date.now();
    let n = 0;
    for (; n < INPUTS; n++) {
      let len: number;
      if (n & 1) {
        len = nextByte() % 33;
        for (let i = 0; i < len; i++) buf[i] = nextByte();
      } else {
        const seed = seeds[nextByte() % seeds.length];
        seed.copy(buf);
        len = seed.length;
        const flips = 1 + (nextByte() & 3);
        for (let f = 0; f < flips; f++) buf[nextByte() % len] ^= 1 << (nextByte() & 7);
        if (nextByte() < 32) len = nextByte() % (len + 1); // truncate
      }
      const offset = nextByte() & 7;
      if (offset) buf.copyWithin(offset, 0, len);
      if (decoder.decodeInto(buf, offset, len, out)) counts.routable++;
      else if (out.reason !== null && out.reason in counts) counts[out.reason]++;
      else counts.other++;
      if ((n & 0xffff) === 0 && Date.now() - started > DEADLINE_MS) break;
    }
    expect(n).toBe(INPUTS);
    expect(counts.other).toBe(0);
    expect(counts.routable + counts.reserved + counts['unknown-config'] + counts['too-short']).toBe(INPUTS);
    expect(counts.routable).toBeGreaterThan(0);
    expect(counts.reserved).toBeGreaterThan(0);
    expect(counts['unknown-config']).toBeGreaterThan(0);
    expect(counts['too-short']).toBeGreaterThan(0);
  }, 90_000);
});
