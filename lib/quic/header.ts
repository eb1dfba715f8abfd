// QUIC packet header parser for routing: RFC 8999 (version-independent invariants), QUIC v1 (RFC 9000)
// and QUIC v2 (RFC 9369). It parses only the first packet of a datagram, which is all the load balancer
// needs to route it (coalesced packets share the datagram's destination CID).
//
// Hot path: parseQuicHeader never throws and never allocates on success. It fills a caller-owned,
// reusable QuicHeader with offsets into the buffer instead of copying connection IDs; the string
// fields are assigned interned constants.

import { readVarint } from './varint.js';

/**
 * Long-header packet type. 'version-negotiation' is version 0; 'unknown-version' is any version other
 * than 0, QUIC v1 and QUIC v2 (including reserved/greased versions), whose type bits are not interpreted.
 */
export type LongPacketType = 'initial' | '0rtt' | 'handshake' | 'retry' | 'version-negotiation' | 'unknown-version';

/**
 * Why a header is malformed:
 * - 'empty': no bytes to parse (length 0, or an offset/length that selects no bytes of the buffer).
 * - 'truncated': a long header ends before its version, a CID length byte, a CID, or (v1/v2 Initial)
 *   the token length, token or Length field, or the Length field's value exceeds the datagram.
 * - 'dcid-too-long' / 'scid-too-long': a QUIC v1/v2 long header with a CID longer than 20 bytes.
 * - 'no-fixed-bit': a short header, or a v1/v2 long header, whose fixed bit (0x40) is clear. Checked
 *   last: when this is returned, the header is otherwise well-formed and `out` is fully filled in.
 * - 'short-dcid-unavailable': a short header with fewer than `shortDcidLength` bytes after the first
 *   byte, or a `shortDcidLength` that is not an integer in 0..20.
 */
export type HeaderError = 'empty' | 'truncated' | 'dcid-too-long' | 'scid-too-long' | 'no-fixed-bit' | 'short-dcid-unavailable';

/** QUIC version 1 (RFC 9000). */
export const QUIC_V1 = 0x00000001;
/** QUIC version 2 (RFC 9369). */
export const QUIC_V2 = 0x6b3343cf;

/** Largest connection ID QUIC v1 and v2 allow (RFC 9000 §17.2, RFC 9369). */
export const MAX_CID_LENGTH_V1 = 20;

/** True for the versions reserved to exercise version negotiation (RFC 9000 §15): 0x?a?a?a?a. */
export function isReservedVersion(v: number): boolean {
  return (v & 0x0f0f0f0f) === 0x0a0a0a0a;
}

const EMPTY = new Uint8Array(0);

/**
 * Reusable, mutable result record: the hot path allocates one and passes it to every parse.
 * After a successful parse (and after 'no-fixed-bit') every field describes the parsed header;
 * after any other error the record is left exactly as it was.
 * All offsets are absolute indices into the parsed buffer (they include the `offset` argument).
 */
export class QuicHeader {
  form: 'long' | 'short' = 'short';
  /** Version field of a long header (uint32); 0 for short headers and for Version Negotiation. */
  version = 0;
  type: LongPacketType | 'short' = 'short';
  dcidOffset = 0;
  dcidLength = 0;
  /** -1 and 0 for short headers. */
  scidOffset = -1;
  scidLength = 0;
  /** QUIC v1/v2 Initial only: the token (length 0 if none). -1 and 0 otherwise. */
  tokenOffset = -1;
  tokenLength = 0;
  /**
   * QUIC v1/v2 Initial only: where the bytes covered by the Length field start (the protected packet
   * number, then the payload) and that Length; `payloadOffset + payloadLength` is where the first packet
   * ends and any coalesced packet starts. -1 and 0 otherwise.
   */
  payloadOffset = -1;
  payloadLength = 0;

  /** The destination connection ID: a subarray view of `buf` (the buffer that was parsed), no copy. */
  dcid(buf: Uint8Array): Uint8Array {
    return buf.subarray(this.dcidOffset, this.dcidOffset + this.dcidLength);
  }

  /** The source connection ID (empty for short headers): a subarray view of `buf`, no copy. */
  scid(buf: Uint8Array): Uint8Array {
    return this.scidOffset < 0 ? EMPTY : buf.subarray(this.scidOffset, this.scidOffset + this.scidLength);
  }

  /** The Initial token (empty if none or not a v1/v2 Initial): a subarray view of `buf`, no copy. */
  token(buf: Uint8Array): Uint8Array {
    return this.tokenOffset < 0 ? EMPTY : buf.subarray(this.tokenOffset, this.tokenOffset + this.tokenLength);
  }
}

/**
 * Parses the header at the start of one datagram, `buf[offset .. offset + length)` (first packet only;
 * coalesced packets need no further parsing for routing). A `length` reaching past the end of `buf` is
 * clipped to it; a negative or non-integer `offset` or `length` selects no bytes ('empty').
 *
 * `shortDcidLength` is the DCID length to assume for short headers (the LB knows it from config),
 * an integer in 0..20.
 *
 * Returns null on success (and fills `out`), or the reason the header is malformed.
 * Never throws, never allocates on success.
 */
export function parseQuicHeader(
  buf: Uint8Array,
  out: QuicHeader,
  shortDcidLength: number,
  offset = 0,
  length = buf.length - offset,
): HeaderError | null {
  let end = offset + length;
  if (end > buf.length) end = buf.length;
  // `x >>> 0 !== x` rejects negative, fractional, NaN and infinite values in one comparison.
  if ((offset >>> 0) !== offset || (end >>> 0) !== end || end <= offset) return 'empty';

  const b0 = buf[offset];

  if ((b0 & 0x80) === 0) {
    // Short header (RFC 9000 §17.3): first byte, then a DCID whose length the endpoint chose.
    if ((shortDcidLength & 31) !== shortDcidLength || shortDcidLength > MAX_CID_LENGTH_V1) return 'short-dcid-unavailable';
    if (offset + 1 + shortDcidLength > end) return 'short-dcid-unavailable';
    out.form = 'short';
    out.version = 0;
    out.type = 'short';
    out.dcidOffset = offset + 1;
    out.dcidLength = shortDcidLength;
    out.scidOffset = -1;
    out.scidLength = 0;
    out.tokenOffset = -1;
    out.tokenLength = 0;
    out.payloadOffset = -1;
    out.payloadLength = 0;
    return (b0 & 0x40) === 0 ? 'no-fixed-bit' : null;
  }

  // Long header (RFC 8999 §5.1): first byte, version (4), DCID length (1), DCID, SCID length (1), SCID.
  let p = offset + 5;
  if (p >= end) return 'truncated'; // version, or the DCID length byte after it, missing
  const version = ((buf[offset + 1] << 24) | (buf[offset + 2] << 16) | (buf[offset + 3] << 8) | buf[offset + 4]) >>> 0;

  let type: LongPacketType;
  let maxCid = 255;
  let isInitial = false;
  const typeBits = (b0 >> 4) & 3;
  if (version === QUIC_V1) {
    maxCid = MAX_CID_LENGTH_V1;
    type = typeBits === 0 ? 'initial' : typeBits === 1 ? '0rtt' : typeBits === 2 ? 'handshake' : 'retry';
    isInitial = typeBits === 0;
  } else if (version === QUIC_V2) {
    maxCid = MAX_CID_LENGTH_V1;
    type = typeBits === 1 ? 'initial' : typeBits === 2 ? '0rtt' : typeBits === 3 ? 'handshake' : 'retry';
    isInitial = typeBits === 1;
  } else if (version === 0) {
    type = 'version-negotiation';
  } else {
    type = 'unknown-version';
  }

  const dcidLength = buf[p];
  if (dcidLength > maxCid) return 'dcid-too-long';
  const dcidOffset = p + 1;
  p = dcidOffset + dcidLength;
  if (p >= end) return 'truncated'; // DCID, or the SCID length byte after it, missing
  const scidLength = buf[p];
  if (scidLength > maxCid) return 'scid-too-long';
  const scidOffset = p + 1;
  p = scidOffset + scidLength;
  if (p > end) return 'truncated';

  let tokenOffset = -1;
  let tokenLength = 0;
  let payloadOffset = -1;
  let payloadLength = 0;
  if (isInitial) {
    // v1/v2 Initial (RFC 9000 §17.2.2): Token Length (varint), Token, Length (varint), packet number + payload.
    // The 1- and 2-byte varint forms (all that real Initials use in practice) are decoded inline;
    // readVarint handles the rest.
    if (p >= end) return 'truncated';
    let first = buf[p];
    let size = 1 << (first >> 6);
    if (p + size > end) return 'truncated';
    tokenLength = size === 1 ? first : size === 2 ? ((first & 0x3f) << 8) | buf[p + 1] : readVarint(buf, p, end);
    tokenOffset = p + size;
    if (tokenLength > end - tokenOffset) return 'truncated';
    p = tokenOffset + tokenLength;
    if (p >= end) return 'truncated';
    first = buf[p];
    size = 1 << (first >> 6);
    if (p + size > end) return 'truncated';
    payloadLength = size === 1 ? first : size === 2 ? ((first & 0x3f) << 8) | buf[p + 1] : readVarint(buf, p, end);
    payloadOffset = p + size;
    if (payloadLength > end - payloadOffset) return 'truncated';
  }

  out.form = 'long';
  out.version = version;
  out.type = type;
  out.dcidOffset = dcidOffset;
  out.dcidLength = dcidLength;
  out.scidOffset = scidOffset;
  out.scidLength = scidLength;
  out.tokenOffset = tokenOffset;
  out.tokenLength = tokenLength;
  out.payloadOffset = payloadOffset;
  out.payloadLength = payloadLength;
  // The fixed bit is a v1/v2 rule (RFC 9000 §17.2, RFC 9369); RFC 8999 leaves it free for other versions.
  return maxCid === MAX_CID_LENGTH_V1 && (b0 & 0x40) === 0 ? 'no-fixed-bit' : null;
}
