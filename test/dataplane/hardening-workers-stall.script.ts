/**
 * For test/dataplane/hardening-workers.test.ts (run with `node --import tsx`), one JSON line: the primary's own
 * event loop blocked for 2.5 s (a long reload, a GC pause, the host swapping) while its workers answer as usual.
 * The pongs then wait in the IPC pipes behind the late heartbeat tick: `hungWorkers` and whether every worker
 * kept its PID (`samePids`) say whether the pool took its own stall for hung workers.
 */
import cluster from 'node:cluster';
import { pino } from 'pino';
import { WorkerPool } from '../../dataplane/workers.js';
import { server, snapshot } from './helpers.js';

const pool = new WorkerPool({
  count: 2,
  logger: pino({ level: 'silent' }),
  logLevel: () => 'silent',
  health: () => new Map(),
  heartbeatIntervalMs: 200,
  heartbeatTimeoutMs: 1000,
});
await pool.start(snapshot([server('a', '0001', '127.0.0.1', 9)]));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pids = () => Object.values(cluster.workers ?? {}).map((w) => w!.process.pid!).sort();
await sleep(600);
const before = pids();
const t0 = Date.now();
while (Date.now() - t0 < 2500) {
  // the primary is busy
}
await sleep(1500);
console.log(JSON.stringify({ hungWorkers: pool.hungWorkers, samePids: JSON.stringify(pids()) === JSON.stringify(before), ready: pool.readyCount }));
await pool.stop();
process.exit(0);
