/**
 * Stable upstream source ports: the local port of a flow's upstream socket is a keyed hash of the flow (listener,
 * client address and port, server), so a data plane restarted on the same node (a crash, a SIGKILL, an upgrade)
 * opens its upstream sockets from the same ports as before and the backend sees the same 4-tuple. Without this
 * every restart is a path change at every backend: a QUIC server has to validate the new path, a server with
 * migration disabled drops the packets, and some stacks lose what they had in flight on the old path (quiche 0.18
 * never resends it: docs/backends.md).
 *
 * This is RFC 6056's hash-based port selection (§3.3.3) without its per-destination counter: the secret seed keeps
 * the ports unpredictable to anyone off the node (the point of port randomisation), and it is stored in the data
 * plane's state directory so a restart derives the same ports. A candidate port in use is skipped (a few tries,
 * then the kernel picks one), so the cost of a new flow stays bounded whatever the clients' addresses hash to.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { writeFileAtomic } from '../lib/atomic-write.js';
import type { SocketAddress } from '../lib/config/snapshot.js';

/** Candidate ports per flow before the kernel's choice. */
export const PORT_TRIES = 4;
export const SEED_BYTES = 32;
/** The seed's file name in the agent's --state-dir. */
export const UPSTREAM_PORT_SEED_FILE = 'upstream-port-seed';

export interface PortRange {
  readonly low: number;
  readonly high: number;
}

/** Linux's default ip_local_port_range, for when /proc cannot be read. */
export const DEFAULT_PORT_RANGE: PortRange = { low: 32768, high: 60999 };

export class UpstreamPortPicker {
  /** [n, p1..pn], the layout the I/O layer takes; reused for every flow (one new flow at a time). */
  private readonly candidates = new Int32Array(1 + PORT_TRIES);

  constructor(
    private readonly seed: Uint8Array,
    private readonly range: PortRange,
  ) {
    if (seed.length < 16) throw new Error('upstream port seed: at least 16 bytes');
    if (!(range.low >= 1 && range.high <= 65535 && range.high >= range.low)) throw new Error(`upstream port range ${range.low}-${range.high}: not a port range`);
  }

  /** The candidate local ports of a flow's upstream socket to `server` ([n, p1..pn]; valid until the next call). */
  portsFor(listener: string, clientAddress: string, clientPort: number, server: SocketAddress): Int32Array {
    const digest = createHmac('sha256', this.seed).update(`${listener}\n${clientAddress}\n${clientPort}\n${server.host}\n${server.port}`).digest();
    const size = this.range.high - this.range.low + 1;
    const c = this.candidates;
    c[0] = PORT_TRIES;
    for (let i = 0; i < PORT_TRIES; i++) c[1 + i] = this.range.low + (digest.readUInt32BE(4 * i) % size);
    return c;
  }
}

/**
 * The seed kept at `path` (mode 0600), created when missing. Throws an Error naming the file when it exists but
 * cannot be read or is not a seed (a truncated or foreign file is never silently replaced: the ports would change).
 */
export function loadOrCreateSeed(path: string): Buffer {
  let data: Buffer | null = null;
  try {
    data = readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') throw new Error(`${path}: cannot read the upstream port seed (${code ?? (e as Error).message})`, { cause: e });
  }
  if (data !== null) {
    if (data.length !== SEED_BYTES) throw new Error(`${path}: not an upstream port seed (${data.length} bytes, expected ${SEED_BYTES}); remove it to make a new one`);
    return data;
  }
  const seed = randomBytes(SEED_BYTES);
  writeFileAtomic(path, seed, { mode: 0o600 });
  return seed;
}
