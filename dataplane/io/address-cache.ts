/**
 * Client address strings for the batched I/O path, from the address bytes in the receive metadata, without
 * building a string per datagram: an IPv4 address is looked up by its 32-bit value, an IPv6 address by a hash of
 * its four words (compared in full). Strings match node:dgram's rinfo.address (inet_ntop's text), so flows and
 * the fallback hash are the same on both paths. Bounded: cleared when it holds `max` addresses.
 */
class V6Entry {
  constructor(
    readonly w0: number,
    readonly w1: number,
    readonly w2: number,
    readonly w3: number,
    readonly text: string,
    readonly next: V6Entry | undefined,
  ) {}
}

export class AddressCache {
  private readonly v4 = new Map<number, string>();
  private readonly v6 = new Map<number, V6Entry>();

  constructor(private readonly max = 1 << 16) {}

  /** The text of the IPv4 address bytes[at, at + 4). */
  ipv4(bytes: Uint8Array, at: number): string {
    // a signed 32-bit key stays a small integer (an unsigned one above 2^31 would be a heap number per lookup)
    const key = (bytes[at] << 24) | (bytes[at + 1] << 16) | (bytes[at + 2] << 8) | bytes[at + 3];
    let s = this.v4.get(key);
    if (s === undefined) {
      if (this.v4.size >= this.max) this.v4.clear();
      s = `${bytes[at]}.${bytes[at + 1]}.${bytes[at + 2]}.${bytes[at + 3]}`;
      this.v4.set(key, s);
    }
    return s;
  }

  /** The text of the IPv6 address whose 16 bytes are the int32 words words[at, at + 4). */
  ipv6(words: Int32Array, at: number, bytes: Uint8Array): string {
    const w0 = words[at], w1 = words[at + 1], w2 = words[at + 2], w3 = words[at + 3];
    const key = (Math.imul(w0, 0x9e3779b1) ^ Math.imul(w1, 0x85ebca6b) ^ Math.imul(w2, 0xc2b2ae35) ^ w3) | 0;
    let head = this.v6.get(key);
    for (let e = head; e !== undefined; e = e.next) {
      if (e.w0 === w0 && e.w1 === w1 && e.w2 === w2 && e.w3 === w3) return e.text;
    }
    if (this.v6.size >= this.max) {
      this.v6.clear();
      head = undefined;
    }
    const text = formatIpv6(bytes, at * 4);
    this.v6.set(key, new V6Entry(w0, w1, w2, w3, text, head));
    return text;
  }
}

/** inet_ntop(AF_INET6) of bytes[at, at + 16): RFC 5952 text, glibc's rule for embedded IPv4. */
export function formatIpv6(bytes: Uint8Array, at: number): string {
  const w: number[] = [];
  for (let i = 0; i < 8; i++) w.push((bytes[at + 2 * i] << 8) | bytes[at + 2 * i + 1]);
  let best = -1, bestLen = 0, cur = -1, curLen = 0;
  for (let i = 0; i < 8; i++) {
    if (w[i] === 0) {
      if (cur < 0) {
        cur = i;
        curLen = 1;
      } else curLen++;
      if (curLen > bestLen) {
        best = cur;
        bestLen = curLen;
      }
    } else cur = -1;
  }
  if (bestLen < 2) best = -1;
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (best >= 0 && i >= best && i < best + bestLen) {
      if (i === best) out += ':';
      continue;
    }
    if (i > 0) out += ':';
    // IPv4-compatible (::a.b.c.d) and IPv4-mapped (::ffff:a.b.c.d) addresses end in dotted decimal
    if (i === 6 && best === 0 && (bestLen === 6 || (bestLen === 5 && w[5] === 0xffff))) {
      out += `${bytes[at + 12]}.${bytes[at + 13]}.${bytes[at + 14]}.${bytes[at + 15]}`;
      break;
    }
    out += w[i].toString(16);
  }
  if (best >= 0 && best + bestLen === 8) out += ':';
  return out;
}
