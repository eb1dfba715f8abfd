// QUIC variable-length integers (RFC 9000 §16): the two high bits of the first byte give the encoded
// size (1, 2, 4 or 8 bytes); the remaining 6, 14, 30 or 62 bits hold the value, big-endian.
// Decoding is on the data plane's hot path: no allocation, no exceptions, plain index arithmetic.

/** Exclusive upper bound of QUIC varint values: they hold 0 .. 2^62 - 1. */
export const VARINT_LIMIT = 2 ** 62;

/** Encoded size in bytes (1, 2, 4 or 8) of the varint whose first byte is `firstByte`. */
export function varintSize(firstByte: number): number {
  return 1 << (firstByte >> 6);
}

/**
 * Decodes the varint starting at `pos`, which must end at or before `end` (clipped to `buf.length`).
 * Returns the value, or -1 if `pos >= end` or the encoding does not fit before `end`.
 * Its size is `varintSize(buf[pos])`. 8-byte values above 2^53 are returned rounded to the nearest
 * double, which keeps every comparison with a buffer length or offset exact.
 * Never throws, never allocates.
 */
export function readVarint(buf: Uint8Array, pos: number, end: number): number {
  if (end > buf.length) end = buf.length;
  if (!(pos >= 0 && pos < end)) return -1;
  const b0 = buf[pos];
  switch (b0 >> 6) {
    case 0:
      return b0;
    case 1:
      if (pos + 2 > end) return -1;
      return ((b0 & 0x3f) << 8) | buf[pos + 1];
    case 2:
      if (pos + 4 > end) return -1;
      // (b0 & 0x3f) << 24 < 2^30, so the result stays a positive int32.
      return ((b0 & 0x3f) << 24) | (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3];
    default: {
      if (pos + 8 > end) return -1;
      const hi = ((b0 & 0x3f) << 24) | (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3];
      const lo = ((buf[pos + 4] << 24) | (buf[pos + 5] << 16) | (buf[pos + 6] << 8) | buf[pos + 7]) >>> 0;
      return hi * 4294967296 + lo;
    }
  }
}

/** Minimal encoded size of `value` (0 <= value < VARINT_LIMIT). Not for the hot path. */
export function varintLength(value: number): number {
  if (value < 0x40) return 1;
  if (value < 0x4000) return 2;
  if (value < 0x40000000) return 4;
  return 8;
}

/**
 * Encodes `value` at `pos` using `size` bytes (default: the minimal size; a larger size gives the
 * non-minimal encodings QUIC permits). Returns the position after it. Throws RangeError if the value
 * is not a non-negative integer, does not fit in `size` bytes, or the buffer is too short.
 * Not for the hot path (encoding is only needed by tests and tools).
 */
export function writeVarint(buf: Uint8Array, pos: number, value: number, size: number = varintLength(value)): number {
  if (!Number.isInteger(value) || value < 0 || value >= VARINT_LIMIT) throw new RangeError(`not a QUIC varint: ${value}`);
  if ((size !== 1 && size !== 2 && size !== 4 && size !== 8) || varintLength(value) > size) {
    throw new RangeError(`varint ${value} does not fit in ${size} bytes`);
  }
  if (!Number.isInteger(pos) || pos < 0 || pos + size > buf.length) throw new RangeError('varint does not fit in buffer');
  const prefix = size === 1 ? 0 : size === 2 ? 0x40 : size === 4 ? 0x80 : 0xc0;
  let rest = value;
  for (let i = size - 1; i >= 1; i--) {
    buf[pos + i] = rest % 256;
    rest = Math.floor(rest / 256);
  }
  buf[pos] = prefix | rest;
  return pos + size;
}
