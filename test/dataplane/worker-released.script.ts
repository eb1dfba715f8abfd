/**
 * Listen addresses a worker pool released (WorkerPool.release) stay unbound until restore() or an apply that no
 * longer lists them, whatever the pool sends meanwhile; for test/dataplane/worker-released.test.ts (run with
 * `node --import tsx`), printing one JSON line. Pools X (backend x, port P) and Y (backend y, port Q) of two
 * workers swap ports the way the agent does (LoadBalancerSet.apply): both release, Y applies P, X applies Q.
 * - restart: an X worker killed between its release and its apply restarts without binding P (`restartHolds`:
 *   X workers holding P).
 * - rollback: X's apply fails on worker 1 (descriptors starved with prlimit(1)); worker 0, which released P and
 *   applied Q, rolls back to [P] without binding it (`holds`), so only Y answers on P.
 * - restore: Y releases P, X.restore() binds P in both X workers; Y applies Q again; a restarted X worker binds P.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { pino } from 'pino';
import { mintUnroutableCid } from '../../lib/index.js';
import type { DataplaneSnapshot, SocketAddress } from '../../lib/config/snapshot.js';
import { WorkerPool } from '../../dataplane/workers.js';
import { Client, config, freeUdpPort, server, shortPacket, sleep, snapshot, TaggingBackend, waitFor } from './helpers.js';

const until = (cond: () => boolean, ms: number) => waitFor(cond, ms, 20);
/** UDP ports a process has sockets bound to (its socket inodes matched in /proc/PID/net/udp). */
function boundPorts(pid: number): Set<number> {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch {
      // closed meanwhile
    }
  }
  const ports = new Set<number>();
  for (const table of ['udp', 'udp6']) {
    for (const line of readFileSync(`/proc/${pid}/net/${table}`, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 9 && inodes.has(f[9])) ports.add(parseInt(f[1].split(':')[1], 16));
    }
  }
  return ports;
}
function starveDescriptors(pid: number): void {
  const open = new Set(readdirSync(`/proc/${pid}/fd`).map(Number));
  let n = 0;
  while (open.has(n)) n++;
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${n}:`]);
}
const softLimit = Number(execFileSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim());

const backends = await Promise.all(['x', 'y'].map((n) => TaggingBackend.start(n)));
const logger = pino({ level: process.env.WORKER_RELEASED_LOG_LEVEL ?? 'silent' });
const pool = () => new WorkerPool({ count: 2, logger, logLevel: () => 'silent', health: () => new Map(), applyTimeoutMs: 1500 });
const [X, Y] = [pool(), pool()];
const [P, Q] = [await freeUdpPort(), await freeUdpPort()];
const addr = (port: number): SocketAddress => ({ host: '127.0.0.1', port, family: 4 });
const lb = (name: string, i: number, port: number): DataplaneSnapshot =>
  snapshot([server(`${name}-server`, `000${i + 1}`, '127.0.0.1', backends[i].port)], { name, listen: [addr(port)], configs: [{ config: config(), state: 'active' }] });
async function answers(port: number, n = 12): Promise<string[]> {
  const names = new Set<string>();
  for (let i = 0; i < n; i++) {
    const c = await Client.open();
    names.add((await c.request(shortPacket(mintUnroutableCid(8)), port, '127.0.0.1', 1000)) ?? 'none');
    await c.close();
  }
  return [...names].sort();
}
const pids = (p: WorkerPool) => p.workerPids() as number[];
const holders = (p: WorkerPool, port: number) => pids(p).filter((pid) => boundPorts(pid).has(port)).length;
async function tryStep(f: () => Promise<void>): Promise<string | null> {
  try {
    await f();
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}
async function restartWorker(p: WorkerPool, i: number): Promise<boolean> {
  const old = pids(p)[i];
  process.kill(old, 'SIGKILL');
  const ok = await until(() => p.readyCount === 2 && pids(p)[i] !== old, 15_000);
  await sleep(200);
  return ok;
}

const out: Record<string, unknown> = {};
await X.start(lb('x', 0, P));
await Y.start(lb('y', 1, Q));
out.initial = { P: await answers(P), Q: await answers(Q) };
out.swapStart = [await tryStep(() => X.release([addr(P)])), await tryStep(() => Y.release([addr(Q)])), await tryStep(() => Y.apply(lb('y', 1, P)))];

const restarted = await restartWorker(X, 1);
out.restart = { restarted, restartHolds: holders(X, P), P: await answers(P) };

const w1 = pids(X)[1];
starveDescriptors(w1);
const error = await tryStep(() => X.apply(lb('x', 0, Q)));
execFileSync('prlimit', ['--pid', String(w1), `--nofile=${softLimit}:`]);
out.rollback = { error, holds: holders(X, P), holdsQ: holders(X, Q), P: await answers(P) };

const restore = [await tryStep(() => Y.release([addr(P)])), await tryStep(() => X.restore()), await tryStep(() => Y.apply(lb('y', 1, Q)))];
out.restore = { steps: restore, holds: holders(X, P), P: await answers(P), Q: await answers(Q) };
const restarted2 = await restartWorker(X, 1);
out.restoredRestart = { restarted: restarted2, holds: holders(X, P), P: await answers(P) };

console.log(JSON.stringify(out));
await X.stop();
await Y.stop();
for (const b of backends) await b.close();
process.exit(0);
