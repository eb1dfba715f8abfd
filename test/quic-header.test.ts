// Tests of the QUIC header parser (lib/quic/header.ts) and the varint codec it uses (lib/quic/varint.ts):
// examples for every packet type and error reason, and fast-check properties (round trip of generated
// headers, agreement with an independent reference parser, never throwing on arbitrary input).
// The dedicated million-input fuzz run is in quic-header.fuzz.test.ts.
import { describe, it, expect } from '@jest/globals';
import fc from 'fast-check';
import {
  QUIC_V1,
  QUIC_V2,
  QuicHeader,
  isReservedVersion,
  parseQuicHeader,
  type HeaderError,
  type LongPacketType,
} from '../lib/quic/header.js';
import { readVarint, varintLength, varintSize, writeVarint } from '../lib/quic/varint.js';

// ---------------------------------------------------------------------------------------------------
// Packet builders (test-only; the parser never builds packets).

type V1Type = 'initial' | '0rtt' | 'handshake' | 'retry';
const V1_TYPES: readonly V1Type[] = ['initial', '0rtt', 'handshake', 'retry'];
const V1_BITS: Record<V1Type, number> = { initial: 0, '0rtt': 1, handshake: 2, retry: 3 };
const V2_BITS: Record<V1Type, number> = { initial: 1, '0rtt': 2, handshake: 3, retry: 0 };
const KNOWN_ERRORS: readonly HeaderError[] = ['empty', 'truncated', 'dcid-too-long', 'scid-too-long', 'no-fixed-bit', 'short-dcid-unavailable'];

function bytes(...parts: ArrayLike<number>[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

function seq(n: number, start = 1): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (start + i) & 0xff);
}

function u32(v: number): number[] {
  return [(v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
}

function varint(value: number, size = varintLength(value)): Uint8Array {
  const out = new Uint8Array(size);
  writeVarint(out, 0, value, size);
  return out;
}

/** First byte of a v1/v2 long header: form bit, fixed bit, type bits, and 4 free low bits. */
function firstByte(version: number, type: V1Type, low = 0): number {
  const bits = version === QUIC_V2 ? V2_BITS[type] : V1_BITS[type];
  return 0x80 | 0x40 | (bits << 4) | (low & 0x0f);
}

function longPacket(first: number, version: number, dcid: ArrayLike<number>, scid: ArrayLike<number>, rest: ArrayLike<number> = []): Uint8Array {
  return bytes([first], u32(version), [dcid.length], dcid, [scid.length], scid, rest);
}

/** Rest of a v1/v2 Initial after the SCID: token length, token, Length, then `payloadLength` bytes. */
function initialRest(token: ArrayLike<number>, payloadLength: number, tokenLenSize?: number, lengthSize?: number): Uint8Array {
  return bytes(varint(token.length, tokenLenSize), token, varint(payloadLength, lengthSize), seq(payloadLength, 0x90));
}

function shortPacket(first: number, dcid: ArrayLike<number>, rest: ArrayLike<number> = seq(24, 0xe0)): Uint8Array {
  return bytes([first], dcid, rest);
}

function parse(buf: Uint8Array, shortDcidLength = 8, offset?: number, length?: number): { err: HeaderError | null; h: QuicHeader } {
  const h = new QuicHeader();
  const err = parseQuicHeader(buf, h, shortDcidLength, offset, length);
  return { err, h };
}

function snapshot(h: QuicHeader): Record<string, unknown> {
  return { ...h };
}

// ---------------------------------------------------------------------------------------------------
// Reference parser: a deliberately different, straightforward implementation (cursor object, DataView,
// exceptions for truncation) used as an oracle by the differential property tests. Offsets are
// relative to the start of the datagram it is given.

interface RefResult {
  error: HeaderError | null;
  fields?: {
    form: 'long' | 'short';
    version: number;
    type: LongPacketType | 'short';
    dcid: [number, number];
    scid: [number, number];
    token: [number, number];
    payload: [number, number];
  };
}

class Truncated extends Error {}

class Cursor {
  pos = 0;
  constructor(private readonly d: Uint8Array) {}
  need(n: number): void {
    if (this.pos + n > this.d.length) throw new Truncated();
  }
  u8(): number {
    this.need(1);
    return this.d[this.pos++];
  }
  u32(): number {
    this.need(4);
    const v = new DataView(this.d.buffer, this.d.byteOffset + this.pos, 4).getUint32(0);
    this.pos += 4;
    return v;
  }
  varint(): number {
    const first = this.u8();
    const size = 2 ** (first >> 6);
    let v = BigInt(first & 0x3f);
    this.need(size - 1);
    for (let i = 1; i < size; i++) v = (v << 8n) | BigInt(this.d[this.pos++]);
    return Number(v);
  }
  skip(n: number): void {
    this.need(n);
    this.pos += n;
  }
}

function referenceParse(d: Uint8Array, shortDcidLength: number): RefResult {
  if (d.length === 0) return { error: 'empty' };
  const c = new Cursor(d);
  const first = c.u8();
  const fixed = (first & 0x40) !== 0;
  if (!(first & 0x80)) {
    if (!Number.isInteger(shortDcidLength) || shortDcidLength < 0 || shortDcidLength > 20) return { error: 'short-dcid-unavailable' };
    if (d.length < 1 + shortDcidLength) return { error: 'short-dcid-unavailable' };
    return {
      error: fixed ? null : 'no-fixed-bit',
      fields: { form: 'short', version: 0, type: 'short', dcid: [1, shortDcidLength], scid: [-1, 0], token: [-1, 0], payload: [-1, 0] },
    };
  }
  try {
    const version = c.u32();
    const isV1 = version === QUIC_V1;
    const isV2 = version === QUIC_V2;
    const limit = isV1 || isV2 ? 20 : 255;
    const typeBits = (first >> 4) & 3;
    let type: LongPacketType;
    if (isV1) type = V1_TYPES[typeBits];
    else if (isV2) type = V1_TYPES.find((t) => V2_BITS[t] === typeBits)!;
    else type = version === 0 ? 'version-negotiation' : 'unknown-version';
    const dl = c.u8();
    if (dl > limit) return { error: 'dcid-too-long' };
    const dcid: [number, number] = [c.pos, dl];
    c.skip(dl);
    const sl = c.u8();
    if (sl > limit) return { error: 'scid-too-long' };
    const scid: [number, number] = [c.pos, sl];
    c.skip(sl);
    let token: [number, number] = [-1, 0];
    let payload: [number, number] = [-1, 0];
    if (type === 'initial') {
      const tl = c.varint();
      token = [c.pos, tl];
      c.skip(tl);
      const pl = c.varint();
      payload = [c.pos, pl];
      c.skip(pl);
    }
    return { error: (isV1 || isV2) && !fixed ? 'no-fixed-bit' : null, fields: { form: 'long', version, type, dcid, scid, token, payload } };
  } catch (e) {
    if (e instanceof Truncated) return { error: 'truncated' };
    throw e;
  }
}

/** The parser's fields, made relative to `base` for comparison with referenceParse. */
function relativeFields(h: QuicHeader, base: number): RefResult['fields'] {
  const rel = (off: number, len: number): [number, number] => [off < 0 ? off : off - base, len];
  return {
    form: h.form,
    version: h.version,
    type: h.type,
    dcid: rel(h.dcidOffset, h.dcidLength),
    scid: rel(h.scidOffset, h.scidLength),
    token: rel(h.tokenOffset, h.tokenLength),
    payload: rel(h.payloadOffset, h.payloadLength),
  };
}

/** Invariants every result must satisfy, whatever the input. Returns a problem description or null. */
function checkInvariants(err: HeaderError | null, h: QuicHeader, bufLength: number, offset: number, end: number): string | null {
  if (err !== null && !KNOWN_ERRORS.includes(err)) return `unknown result ${String(err)}`;
  if (err !== null && err !== 'no-fixed-bit') return null;
  const within = (off: number, len: number) => Number.isInteger(off) && Number.isInteger(len) && off >= offset && len >= 0 && off + len <= end && end <= bufLength;
  if (!within(h.dcidOffset, h.dcidLength)) return 'dcid out of bounds';
  if (h.form === 'short') {
    if (h.scidOffset !== -1 || h.scidLength !== 0 || h.type !== 'short' || h.version !== 0) return 'bad short header fields';
  } else if (!within(h.scidOffset, h.scidLength)) return 'scid out of bounds';
  if (h.tokenOffset !== -1 && !within(h.tokenOffset, h.tokenLength)) return 'token out of bounds';
  if (h.payloadOffset !== -1 && !within(h.payloadOffset, h.payloadLength)) return 'payload out of bounds';
  if ((h.version === QUIC_V1 || h.version === QUIC_V2 || h.form === 'short') && (h.dcidLength > 20 || h.scidLength > 20)) return 'v1/v2 CID over 20 bytes';
  return null;
}

// ---------------------------------------------------------------------------------------------------

describe('QUIC v1 long headers (RFC 9000 §17.2)', () => {
  it.each(V1_TYPES)('parses a v1 %s packet: form, version, type from bits (b0>>4)&3, DCID and SCID', (type) => {
    const dcid = seq(8, 0x10);
    const scid = seq(5, 0x40);
    const rest = type === 'initial' ? initialRest([], 30) : seq(40, 0xa0);
    const pkt = longPacket(firstByte(QUIC_V1, type, 0x5), QUIC_V1, dcid, scid, rest);
    const { err, h } = parse(pkt);
    expect(err).toBeNull();
    expect(h.form).toBe('long');
    expect(h.version).toBe(QUIC_V1);
    expect(h.type).toBe(type);
    expect([h.dcidOffset, h.dcidLength]).toEqual([6, 8]);
    expect([h.scidOffset, h.scidLength]).toEqual([15, 5]);
    expect(h.dcid(pkt)).toEqual(dcid);
    expect(h.scid(pkt)).toEqual(scid);
  });

  it('maps the v1 type bits 0..3 to initial, 0rtt, handshake, retry', () => {
    const got = [0, 1, 2, 3].map((bits) => parse(longPacket(0xc0 | (bits << 4), QUIC_V1, [1], [2], initialRest([], 1))).h.type);
    expect(got).toEqual(['initial', '0rtt', 'handshake', 'retry']);
  });

  it('reports the token and the Length-covered range of an Initial, ignoring coalesced packets after it', () => {
    const token = seq(12, 0x70);
    const coalesced = longPacket(firstByte(QUIC_V1, 'handshake'), QUIC_V1, [9], [], seq(20));
    const pkt = bytes(longPacket(firstByte(QUIC_V1, 'initial'), QUIC_V1, seq(8), seq(4), initialRest(token, 100)), coalesced);
    const { err, h } = parse(pkt);
    expect(err).toBeNull();
    const tokenOffset = 1 + 4 + 1 + 8 + 1 + 4 + 1;
    expect([h.tokenOffset, h.tokenLength]).toEqual([tokenOffset, 12]);
    expect(h.token(pkt)).toEqual(token);
    expect([h.payloadOffset, h.payloadLength]).toEqual([tokenOffset + 12 + 2, 100]);
    expect(h.payloadOffset + h.payloadLength).toBe(pkt.length - coalesced.length);
  });

  it('accepts an Initial with an empty token and non-minimal varint encodings (2/4/8 bytes)', () => {
    for (const [ts, ls] of [[1, 1], [2, 4], [8, 8], [4, 2]]) {
      const pkt = longPacket(firstByte(QUIC_V1, 'initial'), QUIC_V1, seq(8), [], initialRest([], 3, ts, ls));
      const { err, h } = parse(pkt);
      expect(err).toBeNull();
      expect([h.tokenOffset, h.tokenLength]).toEqual([15 + ts, 0]);
      expect([h.payloadOffset, h.payloadLength]).toEqual([15 + ts + ls, 3]);
    }
  });

  it('leaves token and payload unset (-1, 0) for long headers other than v1/v2 Initial', () => {
    for (const type of ['0rtt', 'handshake', 'retry'] as const) {
      const { h } = parse(longPacket(firstByte(QUIC_V1, type), QUIC_V1, [1], [2], [0xff, 0xff]));
      expect([h.tokenOffset, h.tokenLength, h.payloadOffset, h.payloadLength]).toEqual([-1, 0, -1, 0]);
      expect(h.token(new Uint8Array(4)).length).toBe(0);
    }
  });

  it('accepts zero-length and 20-byte CIDs', () => {
    expect(parse(longPacket(firstByte(QUIC_V1, 'handshake'), QUIC_V1, [], [])).err).toBeNull();
    const { err, h } = parse(longPacket(firstByte(QUIC_V1, 'handshake'), QUIC_V1, seq(20), seq(20, 100)));
    expect(err).toBeNull();
    expect([h.dcidLength, h.scidLength]).toEqual([20, 20]);
  });
});

describe('QUIC v2 long headers (RFC 9369 §3.2)', () => {
  it.each(V1_TYPES)('parses a v2 %s packet with the v2 type-bit mapping', (type) => {
    const dcid = seq(20, 0x10);
    const scid = seq(0);
    const rest = type === 'initial' ? initialRest(seq(3), 10) : seq(40, 0xa0);
    const pkt = longPacket(firstByte(QUIC_V2, type, 0xa), QUIC_V2, dcid, scid, rest);
    const { err, h } = parse(pkt);
    expect(err).toBeNull();
    expect(h.form).toBe('long');
    expect(h.version).toBe(QUIC_V2);
    expect(h.type).toBe(type);
    expect(h.dcid(pkt)).toEqual(dcid);
    expect(h.scid(pkt)).toEqual(scid);
  });

  it('maps the v2 type bits 0..3 to retry, initial, 0rtt, handshake (not the v1 mapping)', () => {
    const got = [0, 1, 2, 3].map((bits) => parse(longPacket(0xc0 | (bits << 4), QUIC_V2, [1], [2], initialRest([], 1))).h.type);
    expect(got).toEqual(['retry', 'initial', '0rtt', 'handshake']);
  });

  it('validates the token and Length of a v2 Initial (type bits 01), not of a v2 Retry (type bits 00)', () => {
    const init = parse(longPacket(0xd0, QUIC_V2, [1], [2], [0x05]));
    expect(init.err).toBe('truncated');
    const retry = parse(longPacket(0xc0, QUIC_V2, [1], [2], [0x05]));
    expect(retry.err).toBeNull();
    expect(retry.h.type).toBe('retry');
  });
});

describe('Version Negotiation and unknown versions (RFC 8999 invariants)', () => {
  it('parses version 0 as version-negotiation, with version 0, whatever the type and fixed bits', () => {
    for (const first of [0x80, 0xff, 0xbf, 0x8a]) {
      const pkt = longPacket(first, 0, seq(8), seq(8, 50), bytes(u32(QUIC_V1), u32(QUIC_V2)));
      const { err, h } = parse(pkt);
      expect(err).toBeNull();
      expect([h.form, h.version, h.type]).toEqual(['long', 0, 'version-negotiation']);
      expect(h.dcid(pkt)).toEqual(seq(8));
      expect(h.scid(pkt)).toEqual(seq(8, 50));
    }
  });

  it('allows CIDs of up to 255 bytes in Version Negotiation', () => {
    const pkt = longPacket(0x80, 0, seq(255), seq(255, 7), u32(QUIC_V1));
    const { err, h } = parse(pkt);
    expect(err).toBeNull();
    expect([h.dcidOffset, h.dcidLength, h.scidOffset, h.scidLength]).toEqual([6, 255, 262, 255]);
  });

  it.each([
    ['a reserved (greased) version', 0x1a2a3a4a],
    ['a draft version', 0xff00001d],
    ['an unassigned version', 0x00000002],
    ['version 0xffffffff', 0xffffffff],
  ])('parses %s as unknown-version with its uint32 version', (_name, version) => {
    const pkt = longPacket(0xc5, version, seq(4), seq(3), seq(10));
    const { err, h } = parse(pkt);
    expect(err).toBeNull();
    expect([h.form, h.version, h.type]).toEqual(['long', version, 'unknown-version']);
    expect(h.dcid(pkt)).toEqual(seq(4));
  });

  it('allows 255-byte CIDs and a clear fixed bit for unknown versions, and does not parse an Initial token', () => {
    const pkt = longPacket(0x80, 0x1a2a3a4a, seq(255), seq(255), []);
    const { err, h } = parse(pkt);
    expect(err).toBeNull();
    expect([h.dcidLength, h.scidLength, h.tokenOffset, h.payloadOffset]).toEqual([255, 255, -1, -1]);
  });

  it('isReservedVersion recognises exactly the 0x?a?a?a?a pattern', () => {
    expect(isReservedVersion(0x0a0a0a0a)).toBe(true);
    expect(isReservedVersion(0xfafafafa)).toBe(true);
    expect(isReservedVersion(0x1a2a3a4a)).toBe(true);
    expect(isReservedVersion(QUIC_V1)).toBe(false);
    expect(isReservedVersion(QUIC_V2)).toBe(false);
    expect(isReservedVersion(0)).toBe(false);
    expect(isReservedVersion(0x0a0a0a0b)).toBe(false);
  });

  it('exports the version constants', () => {
    expect(QUIC_V1).toBe(1);
    expect(QUIC_V2).toBe(0x6b3343cf);
  });
});

describe('short headers (RFC 9000 §17.3)', () => {
  it('takes the DCID as the configured number of bytes after the first byte', () => {
    const dcid = seq(8, 0x33);
    const pkt = shortPacket(0x41, dcid);
    const { err, h } = parse(pkt, 8);
    expect(err).toBeNull();
    expect([h.form, h.version, h.type]).toEqual(['short', 0, 'short']);
    expect([h.dcidOffset, h.dcidLength]).toEqual([1, 8]);
    expect([h.scidOffset, h.scidLength]).toEqual([-1, 0]);
    expect(h.dcid(pkt)).toEqual(dcid);
    expect(h.scid(pkt).length).toBe(0);
  });

  it('accepts DCID lengths 0 and 20, and a packet that is exactly first byte + DCID', () => {
    expect(parse(bytes([0x40]), 0).h.dcidLength).toBe(0);
    expect(parse(bytes([0x40]), 0).err).toBeNull();
    const { err, h } = parse(bytes([0x7f], seq(20)), 20);
    expect(err).toBeNull();
    expect(h.dcidLength).toBe(20);
  });

  it('ignores spin, reserved, key-phase and packet-number-length bits', () => {
    for (let low = 0; low < 0x40; low++) expect(parse(shortPacket(0x40 | low, seq(8)), 8).err).toBeNull();
  });

  it('overwrites every field left by a previous long-header parse', () => {
    const h = new QuicHeader();
    expect(parseQuicHeader(longPacket(firstByte(QUIC_V1, 'initial'), QUIC_V1, seq(8), seq(8), initialRest(seq(4), 5)), h, 8)).toBeNull();
    expect(parseQuicHeader(shortPacket(0x40, seq(8)), h, 8)).toBeNull();
    expect(snapshot(h)).toEqual(snapshot(parse(shortPacket(0x40, seq(8)), 8).h));
  });
});

describe('error reasons', () => {
  it("'empty' for zero bytes, including offset at the end of the buffer", () => {
    expect(parse(new Uint8Array(0)).err).toBe('empty');
    expect(parse(seq(10), 8, 10).err).toBe('empty');
    expect(parse(seq(10), 8, 3, 0).err).toBe('empty');
  });

  it("'empty' (not a throw) for a negative, fractional, NaN or out-of-buffer offset or length", () => {
    const buf = shortPacket(0x40, seq(8));
    for (const [offset, length] of [[-1, 5], [0, -3], [1.5, 5], [0, 2.5], [NaN, 5], [0, NaN], [Infinity, 1], [11 + buf.length, 1], [-Infinity, Infinity]]) {
      expect(parse(buf, 8, offset, length).err).toBe('empty');
    }
  });

  it('clips a length that reaches past the end of the buffer', () => {
    const pkt = shortPacket(0x40, seq(8), []);
    expect(parse(pkt, 8, 0, 1000).err).toBeNull();
    expect(parse(pkt, 8, 0, Infinity).err).toBeNull();
  });

  it("'truncated' for every strict prefix of a v1 and a v2 Initial (the Length field covers the whole packet)", () => {
    for (const version of [QUIC_V1, QUIC_V2]) {
      const pkt = longPacket(firstByte(version, 'initial'), version, seq(8), seq(8), initialRest(seq(40), 300, 2, 2));
      expect(parse(pkt).err).toBeNull();
      for (let n = 1; n < pkt.length; n++) expect([n, parse(pkt, 8, 0, n).err]).toEqual([n, 'truncated']);
    }
  });

  it("'truncated' for long headers cut inside the version, DCID length, DCID, SCID length or SCID", () => {
    for (const version of [QUIC_V1, QUIC_V2, 0, 0x1a2a3a4a]) {
      const first = version === 0 || version === 0x1a2a3a4a ? 0x80 : firstByte(version, 'handshake');
      const pkt = longPacket(first, version, seq(8), seq(8));
      expect(parse(pkt).err).toBeNull();
      for (let n = 1; n < pkt.length; n++) expect([n, parse(pkt, 8, 0, n).err]).toEqual([n, 'truncated']);
    }
  });

  it("'truncated' when an Initial's token length or Length varint is cut, or its value exceeds the datagram", () => {
    const hdr = (rest: ArrayLike<number>) => longPacket(firstByte(QUIC_V1, 'initial'), QUIC_V1, [1], [2], rest);
    expect(parse(hdr([])).err).toBe('truncated'); // no token length
    expect(parse(hdr([0x40])).err).toBe('truncated'); // 2-byte token length cut
    expect(parse(hdr([0xc0, 0, 0, 0, 0, 0, 0])).err).toBe('truncated'); // 8-byte token length cut
    expect(parse(hdr([0x02, 0xaa])).err).toBe('truncated'); // token shorter than its length
    expect(parse(hdr([0x00])).err).toBe('truncated'); // no Length
    expect(parse(hdr([0x00, 0x80, 0, 0])).err).toBe('truncated'); // 4-byte Length cut
    expect(parse(hdr([0x00, 0x05, 1, 2, 3, 4])).err).toBe('truncated'); // 4 bytes where Length says 5
    expect(parse(hdr([0x00, 0x05, 1, 2, 3, 4, 5])).err).toBeNull();
    // Huge 8-byte varint values (up to 2^62 - 1) are compared exactly enough to be rejected.
    expect(parse(hdr([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0])).err).toBe('truncated');
    expect(parse(hdr([0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1])).err).toBe('truncated');
  });

  it("'dcid-too-long' / 'scid-too-long' for v1 and v2 CIDs of 21..255 bytes, even if the bytes are present", () => {
    for (const version of [QUIC_V1, QUIC_V2]) {
      for (const len of [21, 32, 255]) {
        expect(parse(longPacket(firstByte(version, 'handshake'), version, seq(len), seq(4))).err).toBe('dcid-too-long');
        expect(parse(longPacket(firstByte(version, 'handshake'), version, seq(4), seq(len))).err).toBe('scid-too-long');
      }
      // The length byte is judged before the CID bytes it announces are looked for.
      expect(parse(bytes([firstByte(version, 'initial')], u32(version), [21])).err).toBe('dcid-too-long');
      expect(parse(bytes([firstByte(version, 'initial')], u32(version), [0, 21])).err).toBe('scid-too-long');
    }
  });

  it("'no-fixed-bit' for v1/v2 long headers and short headers with bit 0x40 clear, with the header still filled in", () => {
    for (const version of [QUIC_V1, QUIC_V2]) {
      for (const type of V1_TYPES) {
        const pkt = longPacket(firstByte(version, type) & ~0x40, version, seq(8), seq(3), initialRest([], 4));
        const { err, h } = parse(pkt);
        expect(err).toBe('no-fixed-bit');
        expect([h.form, h.version, h.type, h.dcidOffset, h.dcidLength, h.scidLength]).toEqual(['long', version, type, 6, 8, 3]);
      }
    }
    const { err, h } = parse(shortPacket(0x00, seq(8)), 8);
    expect(err).toBe('no-fixed-bit');
    expect([h.form, h.dcidOffset, h.dcidLength]).toEqual(['short', 1, 8]);
  });

  it("reports structural errors before 'no-fixed-bit'", () => {
    expect(parse(bytes([0x80], u32(QUIC_V1), [30])).err).toBe('dcid-too-long');
    expect(parse(bytes([0x80], u32(QUIC_V1), [5, 1])).err).toBe('truncated');
    expect(parse(bytes([0x00, 1, 2]), 8).err).toBe('short-dcid-unavailable');
  });

  it("'short-dcid-unavailable' when fewer than shortDcidLength bytes follow, or shortDcidLength is not in 0..20", () => {
    expect(parse(shortPacket(0x40, seq(7), []), 8).err).toBe('short-dcid-unavailable');
    expect(parse(bytes([0x40]), 1).err).toBe('short-dcid-unavailable');
    for (const bad of [-1, 21, 255, 1.5, NaN, Infinity, 2 ** 32 + 4]) {
      expect([bad, parse(shortPacket(0x40, seq(300), []), bad).err]).toEqual([bad, 'short-dcid-unavailable']);
    }
  });

  it('leaves the result record untouched on every error other than no-fixed-bit', () => {
    const h = new QuicHeader();
    const good = longPacket(firstByte(QUIC_V2, 'initial'), QUIC_V2, seq(9), seq(7), initialRest(seq(5), 17));
    expect(parseQuicHeader(good, h, 8)).toBeNull();
    const before = snapshot(h);
    const bad: [Uint8Array, HeaderError][] = [
      [new Uint8Array(0), 'empty'],
      [good.subarray(0, good.length - 1), 'truncated'],
      [longPacket(firstByte(QUIC_V1, 'initial'), QUIC_V1, seq(21), []), 'dcid-too-long'],
      [longPacket(firstByte(QUIC_V1, 'initial'), QUIC_V1, [], seq(21)), 'scid-too-long'],
      [bytes([0x40, 1, 2]), 'short-dcid-unavailable'],
    ];
    for (const [buf, reason] of bad) {
      expect(parseQuicHeader(buf, h, 8)).toBe(reason);
      expect(snapshot(h)).toEqual(before);
    }
  });
});

describe('offsets and zero-copy views', () => {
  it('returns offsets into the whole buffer when parsing at a non-zero offset, and honours length', () => {
    const pkt = longPacket(firstByte(QUIC_V1, 'initial'), QUIC_V1, seq(8, 0x20), seq(4, 0x30), initialRest(seq(6), 9));
    const at = 37;
    const buf = bytes(seq(at, 0xee), pkt, seq(50, 0x41)); // a short header (0x41 ...) follows
    const { err, h } = parse(buf, 8, at, pkt.length);
    expect(err).toBeNull();
    expect([h.dcidOffset, h.scidOffset, h.tokenOffset]).toEqual([at + 6, at + 15, at + 20]);
    expect(h.payloadOffset + h.payloadLength).toBe(at + pkt.length);
    expect(h.dcid(buf)).toEqual(seq(8, 0x20));
    expect(h.scid(buf)).toEqual(seq(4, 0x30));
    expect(h.token(buf)).toEqual(seq(6));
    // Bytes after offset + length are not part of the datagram, even though the buffer has them.
    expect(parse(buf, 8, at, pkt.length - 1).err).toBe('truncated');
    // Short header at an offset.
    const s = parse(buf, 8, at + pkt.length);
    expect([s.err, s.h.dcidOffset]).toEqual([null, at + pkt.length + 1]);
    expect(parse(buf, 8, buf.length - 5).err).toBe('short-dcid-unavailable');
  });

  it('works on a Node Buffer slice that shares a larger ArrayBuffer', () => {
    const pkt = longPacket(firstByte(QUIC_V1, 'handshake'), QUIC_V1, seq(8, 0x20), seq(4, 0x30), seq(10));
    const big = Buffer.alloc(200, 0xee);
    Buffer.from(pkt).copy(big, 64);
    const slice = big.subarray(60, 60 + 4 + pkt.length);
    const { err, h } = parse(slice, 8, 4);
    expect(err).toBeNull();
    expect(h.dcidOffset).toBe(4 + 6);
    expect(Buffer.from(h.dcid(slice))).toEqual(Buffer.from(seq(8, 0x20)));
  });

  it('dcid(), scid() and token() return views: writing through them changes the source buffer', () => {
    const buf = longPacket(firstByte(QUIC_V1, 'initial'), QUIC_V1, seq(8), seq(4), initialRest(seq(3), 5));
    const { h } = parse(buf);
    const d = h.dcid(buf);
    const s = h.scid(buf);
    const t = h.token(buf);
    expect(d.buffer).toBe(buf.buffer);
    expect(s.buffer).toBe(buf.buffer);
    d[0] = 0xaa;
    s[3] = 0xbb;
    t[1] = 0xcc;
    expect(buf[h.dcidOffset]).toBe(0xaa);
    expect(buf[h.scidOffset + 3]).toBe(0xbb);
    expect(buf[h.tokenOffset + 1]).toBe(0xcc);
    // ... and the parser itself never writes to the buffer.
    const copy = Uint8Array.from(buf);
    parse(buf);
    expect(buf).toEqual(copy);
  });
});

describe('varint codec (RFC 9000 §16)', () => {
  it('decodes the RFC 9000 Appendix A.1 examples', () => {
    const cases: [number[], number][] = [
      [[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c], Number(151288809941952652n)], // above 2^53: the nearest double
      [[0x9d, 0x7f, 0x3e, 0x7d], 494878333],
      [[0x7b, 0xbd], 15293],
      [[0x25], 37],
      [[0x40, 0x25], 37],
    ];
    for (const [enc, value] of cases) {
      const b = Uint8Array.from(enc);
      expect(readVarint(b, 0, b.length)).toBe(value);
      expect(varintSize(b[0])).toBe(b.length);
    }
  });

  it('returns -1 for a varint cut by end, and reads nothing at or past end', () => {
    const b = Uint8Array.from([0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c]);
    for (let end = 0; end < 8; end++) expect(readVarint(b, 0, end)).toBe(-1);
    expect(readVarint(b, 8, 8)).toBe(-1);
    expect(readVarint(b, 9, 100)).toBe(-1);
    expect(readVarint(b, 4, 100)).toBe(-1); // end is clipped to the buffer: 0xff announces 8 bytes, 4 remain
    expect(readVarint(b, -1, 8)).toBe(-1);
  });

  it('round-trips values through writeVarint at every size that fits', () => {
    fc.assert(
      fc.property(fc.oneof(fc.integer({ min: 0, max: 0x3fffffff }), fc.maxSafeNat()), fc.constantFrom(1, 2, 4, 8), (v, size) => {
        const s = Math.max(size, varintLength(v));
        const b = new Uint8Array(8);
        expect(writeVarint(b, 0, v, s)).toBe(s);
        expect(varintSize(b[0])).toBe(s);
        expect(readVarint(b, 0, s)).toBe(v);
      }),
    );
  });

  it('writeVarint rejects values that are not 62-bit unsigned integers or do not fit the size', () => {
    const b = new Uint8Array(8);
    expect(() => writeVarint(b, 0, -1)).toThrow(RangeError);
    expect(() => writeVarint(b, 0, 1.5)).toThrow(RangeError);
    expect(() => writeVarint(b, 0, 2 ** 62)).toThrow(RangeError);
    expect(() => writeVarint(b, 0, 64, 1)).toThrow(RangeError);
    expect(() => writeVarint(b, 0, 1, 3)).toThrow(RangeError);
    expect(() => writeVarint(b, 4, 2 ** 40)).toThrow(RangeError);
  });
});

// ---------------------------------------------------------------------------------------------------
// Property tests.

const arbCid = (max: number) => fc.uint8Array({ maxLength: max });
const arbVarintSize = fc.constantFrom(1, 2, 4, 8);

/** A valid v1/v2 long-header packet, embedded at an offset in a buffer with garbage on both sides. */
const arbV1V2Long = fc.record({
  version: fc.constantFrom(QUIC_V1, QUIC_V2),
  type: fc.constantFrom(...V1_TYPES),
  low: fc.integer({ min: 0, max: 15 }),
  dcid: arbCid(20),
  scid: arbCid(20),
  token: fc.uint8Array({ maxLength: 80 }),
  payloadLength: fc.integer({ min: 0, max: 300 }),
  tokenLenSize: arbVarintSize,
  lengthSize: arbVarintSize,
  tail: fc.uint8Array({ maxLength: 60 }),
  before: fc.uint8Array({ maxLength: 24 }),
  after: fc.uint8Array({ maxLength: 24 }),
});

/** A valid Version Negotiation or unknown-version long header. */
const arbOtherLong = fc.record({
  version: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffffffff }).filter((v) => v !== QUIC_V1 && v !== QUIC_V2)),
  first: fc.integer({ min: 0x80, max: 0xff }),
  dcid: arbCid(255),
  scid: arbCid(255),
  tail: fc.uint8Array({ maxLength: 60 }),
  before: fc.uint8Array({ maxLength: 24 }),
});

const arbShort = fc.record({
  first: fc.integer({ min: 0x40, max: 0x7f }),
  dcid: arbCid(20),
  tail: fc.uint8Array({ maxLength: 60 }),
  before: fc.uint8Array({ maxLength: 24 }),
});

type V1V2Long = typeof arbV1V2Long extends fc.Arbitrary<infer T> ? T : never;

function buildV1V2(g: V1V2Long): Uint8Array {
  const rest =
    g.type === 'initial'
      ? initialRest(g.token, g.payloadLength, Math.max(g.tokenLenSize, varintLength(g.token.length)), Math.max(g.lengthSize, varintLength(g.payloadLength)))
      : g.tail;
  return longPacket(firstByte(g.version, g.type, g.low), g.version, g.dcid, g.scid, rest);
}

/** Any of the valid packet shapes, as [datagram bytes, shortDcidLength to parse it with]. */
const arbValidDatagram: fc.Arbitrary<[Uint8Array, number]> = fc.oneof(
  arbV1V2Long.map((g) => [buildV1V2(g), 8] as [Uint8Array, number]),
  arbOtherLong.map((g) => [longPacket(g.first, g.version, g.dcid, g.scid, g.tail), 8] as [Uint8Array, number]),
  arbShort.map((g) => [bytes([g.first], g.dcid, g.tail), g.dcid.length] as [Uint8Array, number]),
);

/** A valid datagram after one of a few random corruptions. */
const arbMutatedDatagram: fc.Arbitrary<[Uint8Array, number]> = fc
  .tuple(arbValidDatagram, fc.nat(), fc.nat({ max: 255 }), fc.constantFrom('flip', 'set', 'truncate', 'cid-length'))
  .map(([[d, sl], where, value, how]) => {
    const m = Uint8Array.from(d);
    if (m.length === 0) return [m, sl] as [Uint8Array, number];
    const i = where % m.length;
    if (how === 'flip') m[i] ^= 1 << (value & 7);
    else if (how === 'set') m[i] = value;
    else if (how === 'cid-length' && m.length > 5) m[5] = value;
    else return [m.subarray(0, i), sl] as [Uint8Array, number];
    return [m, sl] as [Uint8Array, number];
  });

describe('properties (fast-check)', () => {
  it('round-trips every field of generated v1/v2 long headers, at any offset', () => {
    fc.assert(
      fc.property(arbV1V2Long, (g) => {
        const pkt = buildV1V2(g);
        const buf = bytes(g.before, pkt, g.after);
        const at = g.before.length;
        const h = new QuicHeader();
        expect(parseQuicHeader(buf, h, 8, at, pkt.length)).toBeNull();
        expect([h.form, h.version, h.type]).toEqual(['long', g.version, g.type]);
        expect(h.dcidOffset).toBe(at + 6);
        expect(h.dcid(buf)).toEqual(g.dcid);
        expect(h.scid(buf)).toEqual(g.scid);
        if (g.type === 'initial') {
          expect(h.token(buf)).toEqual(g.token);
          expect(h.payloadLength).toBe(g.payloadLength);
          expect(h.payloadOffset + h.payloadLength).toBe(at + pkt.length);
        } else {
          expect([h.tokenOffset, h.payloadOffset]).toEqual([-1, -1]);
        }
        // Clearing the fixed bit changes only the verdict.
        buf[at] &= ~0x40;
        const h2 = new QuicHeader();
        expect(parseQuicHeader(buf, h2, 8, at, pkt.length)).toBe('no-fixed-bit');
        expect(snapshot(h2)).toEqual(snapshot(h));
      }),
      { numRuns: 2000 },
    );
  });

  it('round-trips Version Negotiation and unknown-version headers with CIDs up to 255 bytes', () => {
    fc.assert(
      fc.property(arbOtherLong, (g) => {
        const pkt = longPacket(g.first, g.version, g.dcid, g.scid, g.tail);
        const buf = bytes(g.before, pkt);
        const h = new QuicHeader();
        expect(parseQuicHeader(buf, h, 8, g.before.length)).toBeNull();
        expect([h.form, h.version, h.type]).toEqual(['long', g.version, g.version === 0 ? 'version-negotiation' : 'unknown-version']);
        expect(h.dcid(buf)).toEqual(g.dcid);
        expect(h.scid(buf)).toEqual(g.scid);
      }),
      { numRuns: 1000 },
    );
  });

  it('round-trips short headers for every DCID length 0..20', () => {
    fc.assert(
      fc.property(arbShort, (g) => {
        const buf = bytes(g.before, [g.first], g.dcid, g.tail);
        const h = new QuicHeader();
        expect(parseQuicHeader(buf, h, g.dcid.length, g.before.length)).toBeNull();
        expect([h.form, h.version, h.type, h.scidOffset]).toEqual(['short', 0, 'short', -1]);
        expect(h.dcid(buf)).toEqual(g.dcid);
      }),
      { numRuns: 1000 },
    );
  });

  it('every strict prefix of a generated v1/v2 Initial is truncated', () => {
    fc.assert(
      fc.property(arbV1V2Long, fc.nat(), (g, cut) => {
        const pkt = buildV1V2({ ...g, type: 'initial' });
        const n = cut % pkt.length;
        expect(parse(pkt, 8, 0, n).err).toBe(n === 0 ? 'empty' : 'truncated');
      }),
      { numRuns: 2000 },
    );
  });

  it('agrees with the reference parser on valid, mutated and arbitrary datagrams', () => {
    const arbDatagram = fc.oneof(
      arbValidDatagram,
      arbMutatedDatagram,
      fc.tuple(fc.uint8Array({ maxLength: 120 }), fc.integer({ min: 0, max: 20 })),
    );
    fc.assert(
      fc.property(arbDatagram, fc.uint8Array({ maxLength: 8 }), ([d, sl], before) => {
        const buf = bytes(before, d, [0xff, 0xff, 0xff]);
        const h = new QuicHeader();
        const err = parseQuicHeader(buf, h, sl, before.length, d.length);
        const ref = referenceParse(d, sl);
        expect(err).toBe(ref.error);
        if (ref.fields) expect(relativeFields(h, before.length)).toEqual(ref.fields);
      }),
      { numRuns: 20000 },
    );
  });

  it('never throws on arbitrary bytes, offsets, lengths and DCID lengths, and returns null or a known reason', () => {
    const arbNumber = fc.oneof(fc.integer({ min: -5, max: 2000 }), fc.double(), fc.constantFrom(NaN, Infinity, -Infinity, 2 ** 32, 2 ** 53));
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1500 }), arbNumber, arbNumber, arbNumber, (buf, offset, length, sl) => {
        const h = new QuicHeader();
        const err = parseQuicHeader(buf, h, sl, offset, length);
        expect(err === null || KNOWN_ERRORS.includes(err)).toBe(true);
        const end = Math.min(buf.length, offset + length);
        expect(checkInvariants(err, h, buf.length, offset, end)).toBeNull();
      }),
      { numRuns: 20000 },
    );
  });
});
