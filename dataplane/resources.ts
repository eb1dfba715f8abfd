/**
 * What the process can hold: descriptors (RLIMIT_NOFILE) and local UDP ports (the ephemeral range), which bound
 * the upstream sockets of the data plane (one per client flow and server, each holding one descriptor and one
 * port). Node raises the soft RLIMIT_NOFILE to the hard limit when it starts, but has no setrlimit() to do it
 * later (when something lowered it, or Node could not): raiseNofileLimit() uses util-linux `prlimit --pid` on
 * this process (same user, so no privilege is needed to raise a soft limit up to the hard one) and reads the
 * result back from /proc/self/limits. Linux only; elsewhere the limits are unknown and nothing is capped.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readdirSync, readSync } from 'node:fs';

export interface NofileLimit {
  soft: number;
  hard: number;
}

/** Descriptors kept free for monitoring connections, health probes, reloads (files, watchers) and logs. */
export const FD_RESERVE = 256;
/** Share of the ephemeral port range the upstream sockets may use; the rest stays for other processes. */
export const PORT_RANGE_SHARE = 0.75;

function parseLimit(v: string): number {
  return v === 'unlimited' ? Infinity : Number(v);
}

/** RLIMIT_NOFILE of this process from /proc/self/limits, or null when unknown. */
export function readNofileLimit(limitsText?: string): NofileLimit | null {
  const text = limitsText ?? procText('/proc/self/limits');
  if (text === null) return null;
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(text);
  if (!m) return null;
  const soft = parseLimit(m[1]);
  const hard = parseLimit(m[2]);
  return Number.isNaN(soft) || Number.isNaN(hard) ? null : { soft, hard };
}

export interface RaiseResult {
  before: NofileLimit | null;
  after: NofileLimit | null;
  /** Why the soft limit is still below the hard one, if it is. */
  problem: string | null;
}

/** Raises the soft RLIMIT_NOFILE to the hard limit (no-op when equal). */
export function raiseNofileLimit(): RaiseResult {
  const before = readNofileLimit();
  if (before === null) return { before, after: null, problem: 'descriptor limits unknown (no /proc/self/limits)' };
  if (before.soft >= before.hard) return { before, after: before, problem: null };
  const hard = before.hard === Infinity ? 'unlimited' : String(before.hard);
  let problem: string | null = null;
  try {
    execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${hard}:${hard}`], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 5000 });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: Buffer };
    problem = err.code === 'ENOENT' ? 'prlimit (util-linux) is not installed' : `prlimit failed: ${(err.stderr?.toString('utf8') ?? err.message).trim().slice(0, 200)}`;
  }
  const after = readNofileLimit();
  if (problem === null && after !== null && after.soft < after.hard) problem = 'prlimit did not change the limit';
  return { before, after, problem };
}

/** A kernel file's text (/proc, /sys: small files; at most 64 KiB is read), or null. */
function procText(path: string): string | null {
  let fd: number | null = null;
  try {
    fd = openSync(path, 'r');
    const buf = Buffer.alloc(65536);
    return buf.toString('latin1', 0, readSync(fd, buf, 0, buf.length, null));
  } catch {
    return null;
  } finally {
    if (fd !== null) closeSync(fd);
  }
}

/** Local port range of this network namespace (/proc/sys/net/ipv4/ip_local_port_range), or null. */
export function readPortRange(text?: string): { low: number; high: number } | null {
  const t = text ?? procText('/proc/sys/net/ipv4/ip_local_port_range');
  if (t === null) return null;
  const m = /^\s*(\d+)\s+(\d+)/.exec(t);
  if (!m) return null;
  const low = Number(m[1]);
  const high = Number(m[2]);
  return high >= low ? { low, high } : null;
}

/**
 * Ports of the node's ip_local_reserved_ports (kept for services that bind them later: the kernel never picks them
 * for an unbound socket, but an explicit bind takes them), as a bitmap indexed by port; null when none or unknown.
 */
export function readReservedPorts(text?: string): Uint8Array | null {
  const t = text ?? procText('/proc/sys/net/ipv4/ip_local_reserved_ports');
  if (t === null) return null;
  let reserved: Uint8Array | null = null;
  for (const item of t.split(',')) {
    const m = /^\s*(\d+)(?:-(\d+))?\s*$/.exec(item);
    if (!m) continue;
    const low = Number(m[1]);
    const high = Math.min(m[2] === undefined ? low : Number(m[2]), 65535);
    for (let p = low; p <= high; p++) (reserved ??= new Uint8Array(65536))[p] = 1;
  }
  return reserved;
}

/** Descriptors this process has open now, or null when unknown. */
export function openDescriptors(): number | null {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return null;
  }
}

export interface SocketBudget {
  /** Upstream sockets this process may open (Infinity when nothing is known). */
  cap: number;
  /** What limits it, for logs: e.g. "descriptors: soft limit 1024 - 256 reserved - 20 open". */
  limitedBy: string;
  fdLimit: number | null;
  ports: number | null;
}

export interface BudgetInput {
  nofile: NofileLimit | null;
  openFds: number | null;
  portRange: { low: number; high: number } | null;
  /** Processes sharing the port range (worker processes): each gets its share. */
  processes: number;
  reserve?: number;
}

/** The upstream-socket cap of one process: descriptors minus a reserve, and its share of the port range. */
export function socketBudget(input: BudgetInput): SocketBudget {
  let cap = Infinity;
  let limitedBy = 'nothing known';
  const fdLimit = input.nofile?.soft ?? null;
  if (fdLimit !== null && Number.isFinite(fdLimit)) {
    const reserve = Math.min(input.reserve ?? FD_RESERVE, Math.floor(fdLimit / 4));
    const open = input.openFds ?? 0;
    cap = Math.max(1, fdLimit - reserve - open);
    limitedBy = `descriptors: soft limit ${fdLimit} - ${reserve} reserved - ${open} open`;
  }
  let ports: number | null = null;
  if (input.portRange !== null) {
    ports = input.portRange.high - input.portRange.low + 1;
    const share = Math.max(1, Math.floor((ports * PORT_RANGE_SHARE) / Math.max(1, input.processes)));
    if (share < cap) {
      cap = share;
      limitedBy = `local ports: ${Math.round(PORT_RANGE_SHARE * 100)}% of ip_local_port_range ${input.portRange.low}-${input.portRange.high}${input.processes > 1 ? ` / ${input.processes} processes` : ''}`;
    }
  }
  return { cap, limitedBy, fdLimit, ports };
}

/** This process's budget now. */
export function currentSocketBudget(processes = 1, reserve?: number): SocketBudget {
  return socketBudget({ nofile: readNofileLimit(), openFds: openDescriptors(), portRange: readPortRange(), processes, reserve });
}

/**
 * The CPU quota of this process's cgroup, in CPUs (quota / period), or null when there is none or it cannot be read:
 * cgroup v2's cpu.max, else v1's cpu.cfs_quota_us (the cpu controller's hierarchy wins on hybrid machines: the
 * controller is bound to one hierarchy only). The effective quota is the smallest along the path from the process's
 * cgroup up to the mount's root (bandwidth limits apply to the whole subtree). `read` returns a file's text or null
 * (tests pass their own).
 */
export function readCpuQuota(read: (path: string) => string | null = procText): number | null {
  const lines = (read('/proc/self/cgroup') ?? '').split('\n').map((l) => l.split(':'));
  const v1 = lines.find((f) => f.length >= 3 && f[1]!.split(',').includes('cpu'));
  const v2 = lines.find((f) => f.length >= 3 && f[0] === '0' && f[1] === '');
  const cg = v1 ?? v2;
  if (cg === undefined) return null;
  const parts = cg.slice(2).join(':').split('/').filter(Boolean);
  if (parts.includes('..') || parts.length > 64) return null; // outside the namespace's root, or nonsense
  // v1: the hierarchy's directory is named for its controllers, in some distributions in another order than
  // /proc/self/cgroup lists them; systemd and Docker also link /sys/fs/cgroup/cpu to it
  const roots = v1 === undefined ? ['/sys/fs/cgroup/'] : [`/sys/fs/cgroup/${v1[1]}/`, '/sys/fs/cgroup/cpu/'];
  const quotaAt = (dir: string): number | null => {
    if (v1 === undefined) {
      const m = /^(\d+) (\d+)\s*$/.exec(read(`${dir}cpu.max`) ?? ''); // "max PERIOD": no quota
      return m === null || Number(m[2]) === 0 ? null : Number(m[1]) / Number(m[2]);
    }
    const quota = Number((read(`${dir}cpu.cfs_quota_us`) ?? '').trim()); // -1: no quota
    const period = Number((read(`${dir}cpu.cfs_period_us`) ?? '').trim());
    return quota > 0 && period > 0 ? quota / period : null;
  };
  const root = roots.find((r) => read(`${r}${v1 === undefined ? 'cgroup.controllers' : 'cpu.cfs_period_us'}`) !== null) ?? roots[0]!;
  let quota: number | null = null;
  for (let depth = parts.length; depth >= 0; depth--) {
    const q = quotaAt(root + parts.slice(0, depth).map((p) => `${p}/`).join(''));
    if (q !== null && (quota === null || q < quota)) quota = q;
  }
  return quota;
}
