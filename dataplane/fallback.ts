/**
 * The baseline fallback of draft-21 §4.3.1: a consistent hash of the client address over the servers that
 * accept new connections, weighted, and identical on every instance given the same config.
 *
 * - The key is the client IP (IPv4 as its IPv4-mapped IPv6 form, so dual-stack sockets agree) and port,
 *   hashed with MurmurHash3 (x86, 32-bit, fixed seed). Never Node's randomized string hash.
 * - Weighted rendezvous (highest random weight) hashing: every server scores weight / -ln(u), u uniform in (0,1)
 *   from hash(client key, server seed); the highest score wins. A change of one server moves only the clients
 *   that go to or come from that server; weights give proportional shares (Schindelhauer & Schomaker 2005).
 * - A server's seed is the MurmurHash3 of its QUIC-LB server ID, which every instance gets from the config.
 * - Math.log is V8's fdlibm port, so the same Node version computes bit-identical scores everywhere.
 */

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;
const SEED = 0x51c1b0a7;

function mixK(k: number): number {
  k = Math.imul(k, C1);
  k = (k << 15) | (k >>> 17);
  return Math.imul(k, C2);
}

function mixH(h: number, k: number): number {
  h ^= mixK(k);
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function fmix(h: number, len: number): number {
  h ^= len;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** MurmurHash3_x86_32 of bytes[offset, offset+length). */
export function murmur3(bytes: Uint8Array, offset = 0, length = bytes.length - offset, seed = SEED): number {
  let h = seed | 0;
  const end4 = offset + (length & ~3);
  let i = offset;
  for (; i < end4; i += 4) {
    h = mixH(h, bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24));
  }
  const rest = length & 3;
  if (rest !== 0) {
    let k = bytes[i];
    if (rest > 1) k ^= bytes[i + 1] << 8;
    if (rest > 2) k ^= bytes[i + 2] << 16;
    h ^= mixK(k);
  }
  return fmix(h, length);
}

/** 16-byte IP of `address` (IPv4 as ::ffff:a.b.c.d); false if it is not an IP literal. Zone ids are ignored. */
export function ipBytes(address: string, out: Uint8Array): boolean {
  out.fill(0);
  if (address.indexOf(':') < 0) {
    out[10] = 0xff;
    out[11] = 0xff;
    return parseIPv4(address, 0, address.length, out, 12);
  }
  let end = address.indexOf('%');
  if (end < 0) end = address.length;
  // Split at '::' (at most once).
  const dbl = address.indexOf('::');
  if (dbl >= 0 && address.indexOf('::', dbl + 1) >= 0 && address.indexOf('::', dbl + 1) < end) return false;
  const groups: number[] = [];
  let tail: number[] = [];
  const parseGroups = (from: number, to: number, into: number[]): boolean => {
    if (from >= to) return true;
    let p = from;
    while (p <= to) {
      let q = address.indexOf(':', p);
      if (q < 0 || q > to) q = to;
      const part = address.slice(p, q);
      if (part.indexOf('.') >= 0) {
        if (q !== to) return false;
        const b = new Uint8Array(4);
        if (!parseIPv4(part, 0, part.length, b, 0)) return false;
        into.push((b[0] << 8) | b[1], (b[2] << 8) | b[3]);
      } else {
        if (part.length === 0 || part.length > 4 || !/^[0-9a-fA-F]+$/.test(part)) return false;
        into.push(parseInt(part, 16));
      }
      if (q === to) break;
      p = q + 1;
    }
    return true;
  };
  if (dbl >= 0 && dbl < end) {
    if (!parseGroups(0, dbl, groups)) return false;
    if (!parseGroups(dbl + 2, end, tail)) return false;
    if (groups.length + tail.length > 7) return false;
  } else {
    if (!parseGroups(0, end, groups)) return false;
    if (groups.length !== 8) return false;
    tail = [];
  }
  for (let i = 0; i < groups.length; i++) {
    out[2 * i] = groups[i] >> 8;
    out[2 * i + 1] = groups[i] & 0xff;
  }
  const start = 8 - tail.length;
  for (let i = 0; i < tail.length; i++) {
    out[2 * (start + i)] = tail[i] >> 8;
    out[2 * (start + i) + 1] = tail[i] & 0xff;
  }
  return true;
}

function parseIPv4(s: string, from: number, to: number, out: Uint8Array, at: number): boolean {
  let octet = 0;
  let digits = 0;
  let n = 0;
  for (let i = from; i <= to; i++) {
    const c = i < to ? s.charCodeAt(i) : 46; // virtual trailing '.'
    if (c === 46) {
      if (digits === 0 || n > 3) return false;
      out[at + n++] = octet;
      octet = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      octet = octet * 10 + (c - 48);
      if (++digits > 3 || octet > 255) return false;
    } else {
      return false;
    }
  }
  return n === 4;
}

const keyScratch = new Uint8Array(18);

/** Stable 32-bit hash of a client (address, port). Unparseable addresses hash their UTF-16 code units. */
export function clientHash(address: string, port: number): number {
  if (!ipBytes(address, keyScratch)) {
    keyScratch.fill(0);
    for (let i = 0; i < address.length; i++) keyScratch[i % 16] ^= address.charCodeAt(i) & 0xff;
  }
  keyScratch[16] = port >> 8;
  keyScratch[17] = port & 0xff;
  return murmur3(keyScratch, 0, 18);
}

/** Uniform value in (0, 1) from a client hash and a server seed. */
export function unitHash(client: number, seed: number): number {
  let h = mixH(seed, client);
  h = mixH(h, 0x2545f491);
  return (fmix(h, 8) + 0.5) / 4294967296;
}

export interface PoolMember {
  readonly seed: number;
  readonly weight: number;
}

/** The servers that accept new connections, with their weights. Immutable; rebuilt when the pool changes. */
export class FallbackPool<S extends PoolMember> {
  private readonly members: S[];
  private readonly seeds: Uint32Array;
  private readonly weights: Float64Array;

  constructor(members: readonly S[]) {
    // Sorted by seed so the choice does not depend on the order of servers in the config.
    this.members = members.filter((m) => m.weight > 0).sort((a, b) => a.seed - b.seed);
    this.seeds = Uint32Array.from(this.members, (m) => m.seed);
    this.weights = Float64Array.from(this.members, (m) => m.weight);
  }

  get size(): number {
    return this.members.length;
  }

  list(): readonly S[] {
    return this.members;
  }

  /** The member for this client hash, or null when the pool is empty. */
  pick(client: number): S | null {
    const n = this.seeds.length;
    if (n === 0) return null;
    if (n === 1) return this.members[0];
    let best = 0;
    let bestScore = -1;
    for (let i = 0; i < n; i++) {
      const score = this.weights[i] / -Math.log(unitHash(client, this.seeds[i]));
      if (score > bestScore) {
        bestScore = score;
        best = i;
      }
    }
    return this.members[best];
  }
}
