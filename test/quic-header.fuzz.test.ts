// Dedicated, bounded fuzz run of the QUIC header parser: at least a million inputs, mixing uniformly
// random datagrams (lengths 0..1500), structured random long headers, and mutations (bit flips, byte
// overwrites, truncation, CID-length and varint corruption, version swaps, fixed-bit clears, byte
// insertion/deletion) of valid packets of every type. Asserts the parser never throws, always returns
// null or a known reason, keeps every offset it reports inside the datagram, and leaves the result
// record untouched on errors. Deterministic (seeded PRNG; override with QUICLB_FUZZ_SEED) and bounded
// by a deadline; buffers are reused so the loop itself allocates nothing.
import { describe, it, expect } from '@jest/globals';
import { QUIC_V1, QUIC_V2, QuicHeader, parseQuicHeader, type HeaderError } from '../lib/quic/header.js';
import { readVarint, varintLength, writeVarint } from '../lib/quic/varint.js';

const INPUTS = 1_200_000;
const DEADLINE_MS = 45_000;
const MAX_DATAGRAM = 1500;
const KNOWN_ERRORS: readonly (HeaderError | null)[] = [null, 'empty', 'truncated', 'dcid-too-long', 'scid-too-long', 'no-fixed-bit', 'short-dcid-unavailable'];
const SENTINEL = -7;

/** xorshift32: fast, seedable, good enough to drive mutations. */
class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 0x9e3779b9;
  }
  u32(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  /** Uniform-ish integer in 0..n-1 (n <= 2^32). */
  below(n: number): number {
    return this.u32() % n;
  }
  bytes(buf: Uint8Array, from: number, to: number): void {
    for (let i = from; i < to; i++) buf[i] = this.u32() & 0xff;
  }
}

interface Seed {
  name: string;
  bytes: Uint8Array;
  shortDcidLength: number;
  /** Positions (relative to the packet start) of length bytes worth corrupting: CID lengths, varint first bytes. */
  lengthBytes: number[];
}

type V1Type = 'initial' | '0rtt' | 'handshake' | 'retry';
const V1_BITS: Record<V1Type, number> = { initial: 0, '0rtt': 1, handshake: 2, retry: 3 };
const V2_BITS: Record<V1Type, number> = { initial: 1, '0rtt': 2, handshake: 3, retry: 0 };

function pickCidLength(rng: Rng, max: number): number {
  const r = rng.below(8);
  return r === 0 ? 0 : r === 1 ? max : rng.below(max + 1);
}

function makeLong(rng: Rng, name: string, first: number, version: number, maxCid: number, initial: boolean): Seed {
  const dl = pickCidLength(rng, maxCid);
  const sl = pickCidLength(rng, maxCid);
  const out = new Uint8Array(MAX_DATAGRAM);
  let p = 0;
  out[p++] = first;
  out[p++] = version >>> 24;
  out[p++] = (version >>> 16) & 0xff;
  out[p++] = (version >>> 8) & 0xff;
  out[p++] = version & 0xff;
  const lengthBytes = [p];
  out[p++] = dl;
  rng.bytes(out, p, p + dl);
  p += dl;
  lengthBytes.push(p);
  out[p++] = sl;
  rng.bytes(out, p, p + sl);
  p += sl;
  if (initial) {
    const tokenLength = rng.below(3) === 0 ? 0 : rng.below(200);
    const sizes = [1, 2, 4, 8];
    lengthBytes.push(p);
    p = writeVarint(out, p, tokenLength, Math.max(sizes[rng.below(4)], varintLength(tokenLength)));
    rng.bytes(out, p, p + tokenLength);
    p += tokenLength;
    const room = MAX_DATAGRAM - p - 8;
    const payloadLength = rng.below(Math.min(room, 1200));
    lengthBytes.push(p);
    p = writeVarint(out, p, payloadLength, Math.max(sizes[rng.below(4)], varintLength(payloadLength)));
    rng.bytes(out, p, p + payloadLength);
    p += payloadLength;
    // Sometimes a coalesced packet follows.
    if (rng.below(3) === 0) {
      const extra = rng.below(Math.min(MAX_DATAGRAM - p, 100) + 1);
      rng.bytes(out, p, p + extra);
      p += extra;
    }
  } else {
    const tail = rng.below(Math.min(MAX_DATAGRAM - p, 1200) + 1);
    rng.bytes(out, p, p + tail);
    p += tail;
  }
  return { name, bytes: out.slice(0, p), shortDcidLength: rng.below(21), lengthBytes };
}

function makeSeeds(rng: Rng, perKind: number): Seed[] {
  const seeds: Seed[] = [];
  for (let i = 0; i < perKind; i++) {
    for (const version of [QUIC_V1, QUIC_V2]) {
      const bits = version === QUIC_V1 ? V1_BITS : V2_BITS;
      for (const type of Object.keys(bits) as V1Type[]) {
        const first = 0xc0 | (bits[type] << 4) | rng.below(16);
        seeds.push(makeLong(rng, `${version === QUIC_V1 ? 'v1' : 'v2'}-${type}`, first, version, 20, type === 'initial'));
      }
    }
    seeds.push(makeLong(rng, 'version-negotiation', 0x80 | rng.below(128), 0, 255, false));
    const reserved = ((rng.u32() & 0xf0f0f0f0) | 0x0a0a0a0a) >>> 0;
    seeds.push(makeLong(rng, 'reserved-version', 0x80 | rng.below(128), reserved, 255, false));
    let other = rng.u32();
    if (other === QUIC_V1 || other === QUIC_V2 || other === 0) other = 0xff00001d;
    seeds.push(makeLong(rng, 'unknown-version', 0x80 | rng.below(128), other, 255, false));
    const dl = pickCidLength(rng, 20);
    const len = 1 + dl + rng.below(MAX_DATAGRAM - dl);
    const s = new Uint8Array(len);
    rng.bytes(s, 1, len);
    s[0] = 0x40 | rng.below(64);
    seeds.push({ name: 'short', bytes: s, shortDcidLength: dl, lengthBytes: [] });
  }
  return seeds;
}

const OTHER_VERSIONS = [QUIC_V1, QUIC_V2, 0, 0x1a2a3a4a, 0xff00001d];

describe('QUIC header parser fuzz (bounded)', () => {
  it(`never throws and keeps offsets inside the datagram on ${INPUTS.toLocaleString('en')} random and mutated inputs`, () => {
    const seed = Number(process.env.QUICLB_FUZZ_SEED ?? 0x51c1b) >>> 0;
    const rng = new Rng(seed);
    const seeds = makeSeeds(rng, 40);
    const seedKinds = new Set(seeds.map((s) => s.name));
    expect(seedKinds.size).toBe(12);

    // Every seed parses cleanly before mutation.
    const h = new QuicHeader();
    for (const s of seeds) expect([s.name, parseQuicHeader(s.bytes, h, s.shortDcidLength)]).toEqual([s.name, null]);

    const work = new Uint8Array(16 + MAX_DATAGRAM + 64);
    const results = new Map<HeaderError | null, number>();
    const types = new Map<string, number>();
    let failure: string | null = null;
    let inputs = 0;
    const started = Date.now();
    const deadline = started + DEADLINE_MS;

    const describeInput = (offset: number, length: number, sl: number) =>
      `seed=${seed} input#${inputs} offset=${offset} length=${length} shortDcidLength=${sl} bytes=${Buffer.from(work.subarray(offset, Math.min(offset + length, offset + 64))).toString('hex')}`;

    for (; inputs < INPUTS && failure === null; inputs++) {
      if ((inputs & 0x3fff) === 0 && Date.now() > deadline) break;
      const offset = rng.below(16);
      let length: number;
      let sl: number;
      const mode = rng.below(100);
      if (mode < 20) {
        // Uniformly random datagram.
        length = rng.below(MAX_DATAGRAM + 1);
        rng.bytes(work, offset, offset + length);
        sl = rng.below(21);
        // The varint decoder is fuzzed on the same bytes.
        const v = readVarint(work, offset + rng.below(length + 2), offset + length);
        if (!(v === -1 || (v >= 0 && Number.isFinite(v)))) failure = `readVarint returned ${v}`;
      } else if (mode < 30) {
        // Structured random long header: a version the parser knows, then random bytes.
        length = 1 + rng.below(MAX_DATAGRAM);
        rng.bytes(work, offset, offset + length);
        work[offset] |= 0x80;
        if (length >= 5) {
          const v = OTHER_VERSIONS[rng.below(OTHER_VERSIONS.length)];
          work[offset + 1] = v >>> 24;
          work[offset + 2] = (v >>> 16) & 0xff;
          work[offset + 3] = (v >>> 8) & 0xff;
          work[offset + 4] = v & 0xff;
          if (length > 5 && rng.below(2) === 0) work[offset + 5] = rng.below(22); // plausible DCID length
        }
        sl = rng.below(21);
      } else {
        // Mutation of a valid packet.
        const s = seeds[rng.below(seeds.length)];
        work.set(s.bytes, offset);
        length = s.bytes.length;
        sl = s.shortDcidLength;
        const mutations = 1 + rng.below(3);
        for (let m = 0; m < mutations && length > 0; m++) {
          const op = rng.below(9);
          const i = offset + rng.below(length);
          if (op === 0) work[i] ^= 1 << rng.below(8); // bit flip anywhere
          else if (op === 1) work[offset + rng.below(Math.min(length, 48))] ^= 1 << rng.below(8); // bit flip in the header
          else if (op === 2) work[i] = rng.u32() & 0xff; // byte overwrite
          else if (op === 3) length = rng.below(length); // truncation
          else if (op === 4 && s.lengthBytes.length > 0) {
            // Length-byte corruption: CID length bytes and varint first bytes.
            const at = offset + s.lengthBytes[rng.below(s.lengthBytes.length)];
            const r = rng.below(4);
            work[at] = r === 0 ? work[at] + 1 : r === 1 ? work[at] - 1 : r === 2 ? 21 : rng.u32() & 0xff;
          } else if (op === 5 && length >= 5) {
            // Version swap (re-maps the type bits and CID limits).
            const v = OTHER_VERSIONS[rng.below(OTHER_VERSIONS.length)];
            work[offset + 1] = v >>> 24;
            work[offset + 2] = (v >>> 16) & 0xff;
            work[offset + 3] = (v >>> 8) & 0xff;
            work[offset + 4] = v & 0xff;
          } else if (op === 6) work[offset] ^= rng.below(2) === 0 ? 0x40 : 0x80; // fixed bit or form bit
          else if (op === 7 && length < MAX_DATAGRAM) {
            // Insert a byte.
            work.copyWithin(i + 1, i, offset + length);
            work[i] = rng.u32() & 0xff;
            length++;
          } else if (op === 8) {
            // Delete a byte.
            work.copyWithin(i, i + 1, offset + length);
            length--;
          }
        }
        const r = rng.below(50);
        if (r === 0) sl = rng.below(21);
        else if (r === 1) sl = [-1, 21, 255, 0.5, NaN][rng.below(5)];
      }

      h.version = SENTINEL;
      h.dcidOffset = SENTINEL;
      let err: HeaderError | null;
      try {
        err = parseQuicHeader(work, h, sl, offset, length);
      } catch (e) {
        failure = `threw ${String(e)}: ${describeInput(offset, length, sl)}`;
        break;
      }
      results.set(err, (results.get(err) ?? 0) + 1);
      if (!KNOWN_ERRORS.includes(err)) {
        failure = `unknown result ${String(err)}`;
      } else if (err !== null && err !== 'no-fixed-bit') {
        if (h.version !== SENTINEL || h.dcidOffset !== SENTINEL) failure = `result record modified on '${err}'`;
      } else {
        types.set(h.type, (types.get(h.type) ?? 0) + 1);
        const end = offset + length;
        const within = (off: number, len: number) => Number.isInteger(off) && Number.isInteger(len) && off >= offset && len >= 0 && off + len <= end;
        const v1v2 = h.form === 'short' || h.version === QUIC_V1 || h.version === QUIC_V2;
        if (!within(h.dcidOffset, h.dcidLength) || h.dcidOffset !== offset + (h.form === 'long' ? 6 : 1)) failure = 'DCID outside the datagram';
        else if (h.form === 'long' ? !within(h.scidOffset, h.scidLength) : h.scidOffset !== -1 || h.scidLength !== 0) failure = 'bad SCID';
        else if (h.tokenOffset !== -1 && !within(h.tokenOffset, h.tokenLength)) failure = 'token outside the datagram';
        else if (h.payloadOffset !== -1 && !within(h.payloadOffset, h.payloadLength)) failure = 'payload outside the datagram';
        else if (v1v2 && (h.dcidLength > 20 || h.scidLength > 20)) failure = 'v1/v2 CID longer than 20';
        else if (h.form === 'short' && (h.version !== 0 || h.type !== 'short' || h.dcidLength !== sl)) failure = 'bad short header fields';
        else if ((h.payloadOffset !== -1) !== (h.type === 'initial')) failure = 'payload set on a non-Initial (or missing on an Initial)';
        if (failure !== null) failure += `: ${describeInput(offset, length, sl)}`;
      }
    }
    const elapsedMs = Date.now() - started;

    expect(failure).toBeNull();
    // The deadline only bounds a pathologically slow run; reaching it means fewer inputs than promised.
    expect(inputs).toBe(INPUTS);
    // The inputs reached every verdict and every packet type.
    expect([...results.keys()].sort((a, b) => String(a).localeCompare(String(b)))).toEqual(
      [...KNOWN_ERRORS].sort((a, b) => String(a).localeCompare(String(b))),
    );
    expect([...types.keys()].sort()).toEqual(['0rtt', 'handshake', 'initial', 'retry', 'short', 'unknown-version', 'version-negotiation']);
    if (process.env.QUICLB_FUZZ_VERBOSE) console.log(`fuzz: ${inputs} inputs in ${elapsedMs} ms`, Object.fromEntries(results), Object.fromEntries(types));
  }, 60_000);
});
