/**
 * For test/dataplane/worker-start-fails.test.ts (run with `node --import tsx`), printing one JSON line: workers
 * that never become ready (dataplane/workers.ts, WorkerPool.fork). Two workers, applyTimeoutMs and startTimeoutMs 1500.
 * - crash: worker 0 is killed; its replacement is killed as soon as it is online (before 'ready': a crash at
 *   module load, an OOM kill). It must be restarted again, and the pool gets back to two ready workers.
 * - stuck: worker 1 is killed; its replacement is stopped (SIGSTOP) as soon as it is online. It must be replaced
 *   after startTimeoutMs (start_timeout), and the pool gets back to two ready workers.
 * - initial: a new pool of one worker whose worker is stopped as soon as it is online: start() must fail with the
 *   start timeout, and the worker must be gone.
 */
import cluster from 'node:cluster';
import { pino } from 'pino';
import { WorkerPool } from '../../dataplane/workers.js';
import { server, sleep, snapshot, TaggingBackend, waitFor } from './helpers.js';

const until = (cond: () => boolean, ms: number) => waitFor(cond, ms, 20);
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const backend = await TaggingBackend.start('a');
const servers = [server('a', '0001', '127.0.0.1', backend.port)];
const logger = pino({ level: 'silent' });
const pool = new WorkerPool({ count: 2, logger, logLevel: () => 'silent', health: () => new Map(), applyTimeoutMs: 1500, startTimeoutMs: 1500, heartbeatTimeoutMs: 60_000 });
await pool.start(snapshot(servers));

let mode: 'crash' | 'stuck' | 'initial' | null = null;
let victim: number | null = null;
cluster.on('online', (worker) => {
  const pid = worker.process.pid;
  if (mode === null || pid === undefined) return;
  victim = pid;
  process.kill(pid, mode === 'crash' ? 'SIGKILL' : 'SIGSTOP');
  mode = null;
});

const [w0, w1] = pool.workerPids() as number[];
mode = 'crash';
process.kill(w0, 'SIGKILL');
const crashVictim = await until(() => victim !== null, 10_000);
const crashRecovered = await until(() => pool.readyCount === 2 && !pool.workerPids().some((p) => p === w0 || p === victim), 15_000);

victim = null;
mode = 'stuck';
process.kill(w1, 'SIGKILL');
const stuckVictim = await until(() => victim !== null, 10_000);
const stuckRecovered = await until(() => pool.readyCount === 2 && !pool.workerPids().some((p) => p === w1 || p === victim), 15_000);
const replacements = { ...pool.replacements };
await pool.stop();

victim = null;
mode = 'initial';
const pool2 = new WorkerPool({ count: 1, logger, logLevel: () => 'silent', health: () => new Map(), applyTimeoutMs: 1500, startTimeoutMs: 1500 });
let initialError: string | null = null;
const t0 = Date.now();
try {
  await Promise.race([pool2.start(snapshot(servers)), sleep(20_000).then(() => Promise.reject(new Error('start() still pending after 20 s')))]);
} catch (e) {
  initialError = (e as Error).message;
}
const initialMs = Date.now() - t0;
const initialGone = victim !== null && (await until(() => !alive(victim!), 5000));
await pool2.stop();
console.log(JSON.stringify({ crashVictim, crashRecovered, stuckVictim, stuckRecovered, replacements, initialError, initialMs, initialGone }));
await backend.close();
process.exit(0);
