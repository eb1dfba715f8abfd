/**
 * For test/dataplane/worker-rollback-exited.test.ts (run with `node --import tsx`), printing one JSON line: a
 * worker that applied a snapshot and then died is not rolled back over its closed IPC channel. Two workers;
 * worker 1 is stopped (SIGSTOP), an apply starts, worker 0 applies it and is killed (SIGKILL) before the apply
 * times out on worker 1. The primary must survive: the apply fails with worker 1's silence, both workers restart
 * with the previous snapshot, and the next apply succeeds on both.
 * Then `resync`: worker 0 is killed; while its replacement starts (with the snapshot in force), an apply goes to
 * worker 1 alone; the replacement is stopped as soon as it reports ready, before it can apply the catch-up sent
 * then (pings are not judged: heartbeatTimeoutMs is 60 s). It must be replaced for not answering the catch-up, and both workers end on the new snapshot.
 */
import cluster from 'node:cluster';
import { pino } from 'pino';
import type { DataplaneSnapshot } from '../../lib/config/snapshot.js';
import { WorkerPool } from '../../dataplane/workers.js';
import { failureOf, server, sleep, snapshot, TaggingBackend, waitFor } from './helpers.js';

const until = (cond: () => boolean, ms: number) => waitFor(cond, ms, 20);

const backend = await TaggingBackend.start('a');
const servers = [server('a', '0001', '127.0.0.1', backend.port)];
const logs: { msg: string; worker?: number; pid?: number }[] = [];
const logger = pino({ level: 'info' }, { write: (l: string) => void logs.push(JSON.parse(l) as { msg: string }) });
const pool = new WorkerPool({ count: 2, logger, logLevel: () => 'silent', health: () => new Map(), applyTimeoutMs: 1500, heartbeatTimeoutMs: 60_000 });
const s1 = snapshot(servers);
await pool.start(s1);
const A = pool.addresses()[0];

const versions = async (): Promise<number[]> =>
  (await pool.workerMetrics())
    .map((m) => m.find((x) => x.name === 'quiclb_config_version')?.values[0]?.value)
    .filter((v): v is number => v !== undefined);
const tryApply = (s: DataplaneSnapshot) => failureOf(pool.apply(s));
const [w0, w1] = pool.workerPids() as number[];
const s2 = snapshot(servers, { listen: [A] });
process.kill(w1, 'SIGSTOP');
const applying = tryApply(s2);
await sleep(500);
process.kill(w0, 'SIGKILL');
const error = await applying;
const back = await until(() => pool.readyCount === 2 && !pool.workerPids().some((p) => p === w0 || p === w1), 15_000);
await sleep(200);
const after = await versions();
const again = await tryApply(s2);
const versionsAgain = await versions();

const [r0, r1] = pool.workerPids() as number[];
let stopped: number | null = null;
const s3 = snapshot(servers, { listen: [A] });
let resyncApply: Promise<string | null> | null = null;
cluster.on('online', (worker) => {
  if (resyncApply === null && worker.process.pid !== r1) resyncApply = tryApply(s3);
});
cluster.on('message', (worker, m: { t?: string }) => {
  const pid = worker.process.pid;
  if (m.t === 'ready' && stopped === null && pid !== undefined && pid !== r1) {
    stopped = pid;
    process.kill(pid, 'SIGSTOP');
  }
});
process.kill(r0, 'SIGKILL');
const replaced = await until(() => stopped !== null && pool.readyCount === 2 && !pool.workerPids().includes(stopped), 15_000);
await sleep(200);
console.log(
  JSON.stringify({
    s1: s1.version,
    s2: s2.version,
    error,
    back,
    versions: after,
    again,
    versionsAgain,
    replacements: { ...pool.replacements },
    resync: { s3: s3.version, apply: await resyncApply, stopped: stopped !== null, replaced, versions: await versions(), replacements: { ...pool.replacements } },
  }),
);
await pool.stop();
await backend.close();
process.exit(0);
