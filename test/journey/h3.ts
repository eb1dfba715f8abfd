/**
 * Just enough HTTP/3 for the journey's backends: read the `:path` of a request's HEADERS frame (QPACK with the static
 * table only: our backends advertise no dynamic table, so clients must not use one), write a response HEADERS frame
 * with `:status` and `x-served-by`, and the deterministic body `GET /<n>` answers with.
 */
import { createHash } from 'node:crypto';
import { readVarint, varintSize } from '../../lib/quic/varint.js';
import { h3Varint } from '../../examples/example-quic-backend.js';

/** The response header that names the backend (pod) that served a request. */
export const SERVED_BY_HEADER = 'x-served-by';
/** Largest body a request may ask for (bounds what one request costs a backend). */
export const MAX_BODY_BYTES = 64 * 1024 * 1024;

const BLOCK = (() => {
  // 64 KiB of SHA-256 output chained from a fixed seed: incompressible, and any shift or mix-up shows.
  const parts: Buffer[] = [];
  let h = createHash('sha256').update('quiclb journey body').digest();
  for (let i = 0; i < 2048; i++) {
    parts.push(h);
    h = createHash('sha256').update(h).digest();
  }
  return Buffer.concat(parts);
})();

/** The n bytes `GET /<n>` returns (the same on every backend, so a client can check the body without knowing who served it). */
export function bodyOf(n: number): Buffer {
  const out = Buffer.allocUnsafe(n);
  for (let o = 0; o < n; o += BLOCK.length) BLOCK.copy(out, o, 0, Math.min(BLOCK.length, n - o));
  return out;
}

/** Whether `data` is exactly bodyOf(data.length) (no copy of the whole expected body). */
export function isIntactBody(data: Buffer, expectedLength: number): boolean {
  if (data.length !== expectedLength) return false;
  for (let o = 0; o < data.length; o += BLOCK.length) {
    const n = Math.min(BLOCK.length, data.length - o);
    if (!data.subarray(o, o + n).equals(BLOCK.subarray(0, n))) return false;
  }
  return true;
}

/** The size a path asks for (`/1000000` -> 1000000), or null when it is not `/<n>` with n <= MAX_BODY_BYTES. */
export function sizeOfPath(path: string): number | null {
  const m = /^\/(\d{1,9})$/.exec(path);
  if (!m) return null;
  const n = Number(m[1]);
  return n <= MAX_BODY_BYTES ? n : null;
}

// ---- QPACK (RFC 9204) field lines, static table only ----------------------------------------------------------

/** RFC 7541 §5.1 prefix integer at b[o] with an N-bit prefix: [value, next offset], or null when cut or too large. */
function prefixInt(b: Buffer, o: number, bits: number): [number, number] | null {
  if (o >= b.length) return null;
  const max = (1 << bits) - 1;
  let v = b[o] & max;
  o++;
  if (v < max) return [v, o];
  for (let shift = 0; shift <= 21; shift += 7) {
    if (o >= b.length) return null;
    const c = b[o++];
    v += (c & 0x7f) << shift;
    if ((c & 0x80) === 0) return [v, o];
  }
  return null;
}

/**
 * HPACK Huffman codes (RFC 7541 Appendix B) of the characters a path `/<n>` and common URL paths use: the 5- and
 * 6-bit codes. A string with any other character is refused (null) rather than misread.
 */
const HUFFMAN: ReadonlyArray<readonly [string, number, number]> = [
  ['0', 0x0, 5], ['1', 0x1, 5], ['2', 0x2, 5], ['a', 0x3, 5], ['c', 0x4, 5], ['e', 0x5, 5], ['i', 0x6, 5], ['o', 0x7, 5],
  ['s', 0x8, 5], ['t', 0x9, 5], [' ', 0x14, 6], ['%', 0x15, 6], ['-', 0x16, 6], ['.', 0x17, 6], ['/', 0x18, 6],
  ['3', 0x19, 6], ['4', 0x1a, 6], ['5', 0x1b, 6], ['6', 0x1c, 6], ['7', 0x1d, 6], ['8', 0x1e, 6], ['9', 0x1f, 6],
  ['=', 0x20, 6], ['A', 0x21, 6], ['_', 0x22, 6], ['b', 0x23, 6], ['d', 0x24, 6], ['f', 0x25, 6], ['g', 0x26, 6],
  ['h', 0x27, 6], ['l', 0x28, 6], ['m', 0x29, 6], ['n', 0x2a, 6], ['p', 0x2b, 6], ['r', 0x2c, 6], ['u', 0x2d, 6],
];
const BY_CODE = new Map(HUFFMAN.map(([ch, code, bits]) => [`${bits}:${code}`, ch]));

/** Decodes a Huffman string made of the characters above; null for anything else (or bad padding). */
export function huffmanDecode(b: Buffer): string | null {
  let out = '';
  let code = 0;
  let bits = 0;
  for (const byte of b) {
    for (let i = 7; i >= 0; i--) {
      code = (code << 1) | ((byte >> i) & 1);
      bits++;
      const ch = bits >= 5 ? BY_CODE.get(`${bits}:${code}`) : undefined;
      if (ch !== undefined) {
        out += ch;
        code = 0;
        bits = 0;
      } else if (bits >= 6 && code !== (1 << bits) - 1) return null; // a longer code: not a character we know
      else if (bits > 7) return null; // more than 7 bits of padding
    }
  }
  // padding: at most 7 bits, all ones (the EOS prefix)
  return bits <= 7 && code === (1 << bits) - 1 ? out : null;
}

/** A string literal with a 7-bit length prefix after the H bit: [text, next offset], or null. */
function stringLiteral(b: Buffer, o: number, bits: number): [string, number] | null {
  if (o >= b.length) return null;
  const huffman = (b[o] & (1 << bits)) !== 0;
  const len = prefixInt(b, o, bits);
  if (!len || len[1] + len[0] > b.length) return null;
  const raw = b.subarray(len[1], len[1] + len[0]);
  const text = huffman ? huffmanDecode(raw) : raw.toString('latin1');
  return text === null ? null : [text, len[1] + len[0]];
}

/** The `:path` of a HEADERS field section (static table 1 is `:path /`), or null when absent or not understood. */
export function pathOfFieldSection(fields: Buffer): string | null {
  // required insert count and delta base: 0 without a dynamic table
  const ric = prefixInt(fields, 0, 8);
  if (!ric || ric[0] !== 0) return null;
  const base = prefixInt(fields, ric[1], 7);
  if (!base) return null;
  let o = base[1];
  while (o < fields.length) {
    const c = fields[o];
    if ((c & 0xc0) === 0xc0) {
      const idx = prefixInt(fields, o, 6);
      if (!idx) return null;
      if (idx[0] === 1) return '/';
      o = idx[1];
    } else if ((c & 0xc0) === 0x40) {
      if ((c & 0x10) === 0) return null; // dynamic name reference
      const idx = prefixInt(fields, o, 4);
      if (!idx) return null;
      const value = stringLiteral(fields, idx[1], 7);
      if (!value) return null;
      if (idx[0] === 1) return value[0];
      o = value[1];
    } else if ((c & 0xe0) === 0x20) {
      const name = stringLiteral(fields, o, 3);
      if (!name) return null;
      const value = stringLiteral(fields, name[1], 7);
      if (!value) return null;
      if (name[0] === ':path') return value[0];
      o = value[1];
    } else {
      return null; // post-base references need a dynamic table
    }
  }
  return null;
}

/** The `:path` of a request stream's bytes (HEADERS frame first), or null. */
export function requestPath(raw: Buffer): string | null {
  let o = 0;
  while (o < raw.length) {
    const type = readVarint(raw, o, raw.length);
    if (type < 0) return null;
    o += varintSize(raw[o]);
    const length = readVarint(raw, o, raw.length);
    if (length < 0) return null;
    o += varintSize(raw[o]);
    if (o + length > raw.length) return null;
    if (type === 0x01) return pathOfFieldSection(raw.subarray(o, o + length));
    o += length;
  }
  return null;
}

/** A response HEADERS frame: `:status` (200 or 404, static table) and `x-served-by: name` (literal name and value). */
export function responseHeaders(status: 200 | 404, servedBy: string): Buffer {
  const name = Buffer.from(SERVED_BY_HEADER);
  const value = Buffer.from(servedBy);
  if (value.length > 126) throw new Error('x-served-by value too long for this encoder');
  const fields = Buffer.concat([
    Buffer.from([0x00, 0x00, 0xc0 | (status === 200 ? 25 : 27)]),
    // literal field line with literal name: 001 N=0 H=0, 3-bit name length prefix (11 = 7 + 4)
    Buffer.from([0x20 | 7, name.length - 7]),
    name,
    Buffer.from([value.length]),
    value,
  ]);
  return Buffer.concat([h3Varint(0x01), h3Varint(fields.length), fields]);
}
