/**
 * Worker liveness for test/dataplane/hardening-workers.test.ts (run with `node --import tsx`), one JSON line:
 * - hung: one of two workers is SIGSTOPped; `notReadyMs` = time until the pool no longer counts it ready,
 *   `replacedMs` = until a new worker (another PID) is ready, `answered` = of 40 new client flows afterwards;
 * - backoff: a worker killed twice, the second time after it lived longer than restartBackoffResetMs:
 *   `delays` = restart_in_ms of each restart (the second must not have grown).
 */
import cluster from 'node:cluster';
import { pino } from 'pino';
import { mintUnroutableCid } from '../../lib/index.js';
import { WorkerPool } from '../../dataplane/workers.js';
import { Client, server, shortPacket, snapshot, TaggingBackend } from './helpers.js';

const backends = await Promise.all(['a', 'b'].map((n) => TaggingBackend.start(n)));
const s1 = snapshot([server('a', '0001', '127.0.0.1', backends[0].port), server('b', '0002', '127.0.0.1', backends[1].port)]);
const logs: { msg: string; restart_in_ms?: number }[] = [];
const logger = pino({ level: 'info' }, { write: (l: string) => void logs.push(JSON.parse(l)) });
const pool = new WorkerPool({
  count: 2,
  logger,
  logLevel: () => 'silent',
  health: () => new Map(),
  heartbeatIntervalMs: 200,
  heartbeatTimeoutMs: 1000,
  restartBackoffResetMs: 1500,
});
await pool.start(s1);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean, ms: number): Promise<number> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) return -1;
    await sleep(20);
  }
  return Date.now() - t0;
}

/** PIDs of the live workers (from node:cluster, so the script also runs against a pool without workerPids()). */
const pids = () => Object.values(cluster.workers ?? {}).map((w) => w!.process.pid!);

// Hung worker.
const [victim] = pids();
process.kill(victim!, 'SIGSTOP');
const t0 = Date.now();
const notReadyMs = await until(() => pool.readyCount < 2, 8000);
const replaced = await until(() => pool.readyCount === 2 && !pids().includes(victim!), 10_000);
const replacedMs = replaced < 0 ? -1 : Date.now() - t0;
try {
  process.kill(victim!, 'SIGCONT'); // if it still exists (without the fix), let it go on
} catch {
  // killed and reaped
}
const port = pool.addresses()[0].port;
let answered = 0;
const clients: Client[] = [];
for (let i = 0; i < 40; i++) {
  const c = await Client.open();
  clients.push(c);
  if ((await c.request(shortPacket(mintUnroutableCid(8)), port, '127.0.0.1', 1000)) !== null) answered++;
}

// Backoff reset: slot 1 killed once, then again after it lived longer than restartBackoffResetMs.
const restartsBefore = logs.filter((l) => l.msg === 'worker exited; restarting').length;
const other = pids().find((p) => p !== victim)!;
process.kill(other, 'SIGKILL');
await until(() => pool.readyCount === 2 && logs.filter((l) => l.msg === 'worker exited; restarting').length > restartsBefore, 10_000);
await until(() => pool.readyCount === 2, 10_000);
await sleep(1800);
process.kill(pids().find((p) => p !== other && p !== victim) ?? pids()[0], 'SIGKILL');
await until(() => logs.filter((l) => l.msg === 'worker exited; restarting').length > restartsBefore + 1, 10_000);
const delays = logs
  .filter((l) => l.msg === 'worker exited; restarting')
  .slice(restartsBefore)
  .map((l) => l.restart_in_ms);

console.log(JSON.stringify({ hung: { notReadyMs, replacedMs, answered }, backoff: { delays }, hungWorkers: pool.hungWorkers }));
for (const c of clients) await c.close();
await pool.stop();
for (const b of backends) await b.close();
process.exit(0);
