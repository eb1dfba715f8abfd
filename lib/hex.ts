/** Strict hex helpers: Buffer.from(s, 'hex') silently stops at the first bad digit, which would turn a typo into a wrong key. */

export class HexError extends Error {}

const HEX_RE = /^(?:[0-9a-fA-F]{2})*$/;

/** Parses an even-length hex string (optional 0x prefix). Throws HexError naming `what` on bad input. */
export function parseHex(text: string, what: string): Buffer {
  const s = text.startsWith('0x') || text.startsWith('0X') ? text.slice(2) : text;
  if (!HEX_RE.test(s)) {
    throw new HexError(`${what}: expected an even number of hex digits, got ${JSON.stringify(text.length > 80 ? text.slice(0, 80) + '…' : text)}`);
  }
  return Buffer.from(s, 'hex');
}

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}
