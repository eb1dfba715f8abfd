/** Strict hex helpers: Buffer.from(s, 'hex') silently stops at the first bad digit, which would turn a typo into a wrong key. */

export class HexError extends Error {}

const HEX_RE = /^(?:[0-9a-fA-F]{2})*$/;

/**
 * Parses an even-length hex string (optional 0x prefix). Throws HexError naming `what` on bad input; the message
 * gives the position of the problem but never the text itself, which may be key material.
 */
export function parseHex(text: string, what: string): Buffer {
  const s = text.startsWith('0x') || text.startsWith('0X') ? text.slice(2) : text;
  if (!HEX_RE.test(s)) {
    const bad = s.search(/[^0-9a-fA-F]/);
    const problem = bad >= 0 ? `a non-hex character at position ${bad + 1}` : `an odd number of digits (${s.length})`;
    throw new HexError(`${what}: expected an even number of hex digits, got ${problem}`);
  }
  return Buffer.from(s, 'hex');
}

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}
