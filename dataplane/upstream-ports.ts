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
import { linkSync, readFileSync, renameSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { fsyncDir, writeTempFile } from '../lib/atomic-write.js';
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

  /** `reserved`: readReservedPorts() of dataplane/resources.ts (never candidates). */
  constructor(
    private readonly seed: Uint8Array,
    private readonly range: PortRange,
    private readonly reserved: Uint8Array | null = null,
  ) {
    if (seed.length < 16) throw new Error('upstream port seed: at least 16 bytes');
    if (!(range.low >= 1 && range.high <= 65535 && range.high >= range.low)) throw new Error(`upstream port range ${range.low}-${range.high}: not a port range`);
  }

  /**
   * The candidate local ports of a flow's upstream socket to `server` ([n, p1..pn], n <= PORT_TRIES, distinct, none
   * reserved; valid until the next call). The digest holds 8 words: repeats and reserved ports are skipped.
   */
  portsFor(listener: string, clientAddress: string, clientPort: number, server: SocketAddress): Int32Array {
    const digest = createHmac('sha256', this.seed).update(`${listener}\n${clientAddress}\n${clientPort}\n${server.host}\n${server.port}`).digest();
    const size = this.range.high - this.range.low + 1;
    const c = this.candidates;
    let n = 0;
    for (let w = 0; w + 4 <= digest.length && n < PORT_TRIES; w += 4) {
      const p = this.range.low + (digest.readUInt32BE(w) % size);
      if (this.reserved !== null && this.reserved[p] === 1) continue;
      let repeat = false;
      for (let i = 1; i <= n; i++) repeat ||= c[i] === p;
      if (!repeat) c[1 + n++] = p;
    }
    c[0] = n;
    return c;
  }
}

/**
 * The seed kept at `path` (mode 0600), created when missing. Throws an Error naming the file when it exists but
 * cannot be read or is not a seed (a truncated or foreign file is never silently replaced: the ports would change).
 */
export function loadOrCreateSeed(path: string): Buffer {
  for (let attempt = 0; ; attempt++) {
    const existing = readSeed(path);
    if (existing !== null) return existing;
    const seed = randomBytes(SEED_BYTES);
    let created: boolean;
    try {
      created = createSeedFile(path, seed);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new Error(`${path}: cannot create the upstream port seed (${code ?? (e as Error).message})`, { cause: e });
    }
    if (created) return seed;
    // another process created it between the read and the link: use theirs. Twice: a name that exists but reads as
    // missing (a dangling symbolic link), which is never replaced either.
    if (attempt > 0) throw new Error(`${path}: cannot read the upstream port seed (a dangling symbolic link?)`);
  }
}

function readSeed(path: string): Buffer | null {
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    throw new Error(`${path}: cannot read the upstream port seed (${code ?? (e as Error).message})`, { cause: e });
  }
  if (data.length !== SEED_BYTES) throw new Error(`${path}: not an upstream port seed (${data.length} bytes, expected ${SEED_BYTES}); remove it to make a new one`);
  return data;
}

/**
 * Writes `data` to a private temporary file (fsynced) and links it to `path` only if no file is there: two processes
 * starting at once (a second instance refused later by its listen lock) never replace the seed the first one uses,
 * and a crash never leaves a partial seed. false: `path` exists. (A file system without hard links: renamed.)
 */
export function createSeedFile(path: string, data: Buffer): boolean {
  const tmp = writeTempFile(path, data, 0o600);
  try {
    try {
      linkSync(tmp, path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') return false;
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw e;
      renameSync(tmp, path);
    }
  } finally {
    try {
      unlinkSync(tmp);
    } catch {
      // renamed
    }
  }
  fsyncDir(dirname(path));
  return true;
}
