/**
 * Exclusive ownership of listen addresses across quiclb instances. Worker processes bind with SO_REUSEPORT, so
 * the kernel lets a second instance (also with workers, same user) join the port and take a share of the flows
 * silently. Before binding, each instance takes a lock file per listen address in the runtime directory
 * ($XDG_RUNTIME_DIR/quiclb, else /run/quiclb when writable, else <tmpdir>/quiclb-locks). A lock names its owner
 * by PID and process start time (/proc/PID/stat), so a lock left by a dead process (or a reused PID) is taken
 * over. A wildcard address (0.0.0.0, ::) conflicts with every address of its family on the same port. Addresses
 * belong to a network namespace, so lock names carry the namespace's id: instances in two namespaces (two pods, or
 * a test's private namespace) may both listen on 127.0.0.1:443.
 */
import { randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, readdirSync, readFileSync, readlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatSocketAddress, type SocketAddress } from '../lib/config/address.js';
import { readRegularFile } from '../lib/config/safe-read.js';

export class ListenAddressInUse extends Error {}

interface Owner {
  pid: number;
  start: string;
}

/** Lock files this process holds (two instances in one process exclude each other too). */
const heldHere = new Set<string>();

function startTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // fields after the command name (which may hold spaces and parentheses): field 22 is the start time
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

/** A lock file's owner; throws for anything but a small regular file (the directory may be shared: no FIFO may block us). */
function readOwner(path: string): Owner {
  return JSON.parse(readRegularFile(path, 4096).toString('utf8')) as Owner;
}

function defaultDir(): string {
  if (process.env.XDG_RUNTIME_DIR) return join(process.env.XDG_RUNTIME_DIR, 'quiclb');
  try {
    mkdirSync('/run/quiclb', { recursive: true, mode: 0o755 });
    const probe = join('/run/quiclb', `.probe-${process.pid}`);
    writeFileSync(probe, '');
    unlinkSync(probe);
    return '/run/quiclb';
  } catch {
    return join(tmpdir(), 'quiclb-locks');
  }
}

function isWildcard(a: SocketAddress): boolean {
  return a.host === '0.0.0.0' || a.host === '::';
}

/** "net4026531833-" from /proc/self/ns/net ("net:[4026531833]"); "" where there is no such link (not Linux). */
function networkNamespacePrefix(): string {
  try {
    const id = /^net:\[(\d+)\]$/.exec(readlinkSync('/proc/self/ns/net'))?.[1];
    return id ? `net${id}-` : '';
  } catch {
    return '';
  }
}
const NETNS = networkNamespacePrefix();

function portPrefix(a: SocketAddress): string {
  return `${NETNS}udp${a.family}-${a.port}-`;
}

function fileName(a: SocketAddress): string {
  return `${portPrefix(a)}${a.host.replace(/[^0-9A-Za-z.]/g, '_')}.lock`;
}

export class ListenLocks {
  private readonly held = new Map<string, string>(); // address key -> lock path
  private readonly me: Owner;
  readonly dir: string;

  constructor(dir?: string) {
    this.dir = dir ?? defaultDir();
    mkdirSync(this.dir, { recursive: true });
    this.me = { pid: process.pid, start: startTime(process.pid) ?? 'unknown' };
  }

  /** Takes the locks of these addresses (port 0 needs none); throws ListenAddressInUse naming the owner. */
  acquire(addresses: readonly SocketAddress[]): void {
    const taken: string[] = [];
    try {
      for (const a of addresses) {
        if (a.port === 0 || this.held.has(formatSocketAddress(a))) continue;
        this.acquireOne(a);
        taken.push(formatSocketAddress(a));
      }
    } catch (e) {
      for (const k of taken) this.releaseOne(k);
      throw e;
    }
  }

  /** Keeps the locks of these addresses, releases the others. */
  retain(addresses: readonly SocketAddress[]): void {
    const keep = new Set(addresses.map(formatSocketAddress));
    for (const k of [...this.held.keys()]) if (!keep.has(k)) this.releaseOne(k);
  }

  releaseAll(): void {
    for (const k of [...this.held.keys()]) this.releaseOne(k);
  }

  private acquireOne(a: SocketAddress): void {
    // Conflicting locks: the same address; for a wildcard, every address of the family and port; else the wildcard.
    const prefix = portPrefix(a);
    const wildcard = fileName({ ...a, host: a.family === 4 ? '0.0.0.0' : '::' });
    for (const f of readdirSync(this.dir)) {
      if (!f.startsWith(prefix) || !f.endsWith('.lock')) continue;
      if (f !== fileName(a) && !isWildcard(a) && f !== wildcard) continue;
      const owner = this.liveOwner(join(this.dir, f));
      if (owner !== null) {
        throw new ListenAddressInUse(
          `${formatSocketAddress(a)} is already served by another quiclb instance (pid ${owner.pid}${owner.pid === process.pid ? ', this process' : ''}; lock ${join(this.dir, f)}): ` +
            'two instances on one address would split its flows (SO_REUSEPORT); stop the other one or listen elsewhere',
        );
      }
    }
    const path = join(this.dir, fileName(a));
    const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    writeFileSync(tmp, JSON.stringify({ ...this.me, address: formatSocketAddress(a) }) + '\n');
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          linkSync(tmp, path);
          break;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw e;
          if (this.liveOwner(path) !== null) throw new ListenAddressInUse(`${formatSocketAddress(a)} is already served by another quiclb instance (lock ${path})`);
          unlinkSync(path); // stale: its owner is gone
        }
      }
    } finally {
      unlinkSync(tmp);
    }
    heldHere.add(path);
    this.held.set(formatSocketAddress(a), path);
  }

  /** The owner of a lock file if it still runs (a lock of this process counts when this process holds it). */
  private liveOwner(path: string): Owner | null {
    let o: Owner;
    try {
      o = readOwner(path);
    } catch {
      return null; // vanished, unreadable or not a regular file: not a live lock
    }
    if (typeof o.pid !== 'number') return null;
    if (o.pid === process.pid) return heldHere.has(path) ? o : null;
    const st = startTime(o.pid);
    return st !== null && st === o.start ? o : null;
  }

  private releaseOne(key: string): void {
    const path = this.held.get(key);
    if (path === undefined) return;
    this.held.delete(key);
    heldHere.delete(path);
    try {
      const o = readOwner(path);
      if (o.pid === this.me.pid) unlinkSync(path);
    } catch {
      // already gone
    }
  }
}
