/**
 * All-or-nothing snapshots in worker mode, for test/dataplane/worker-apply-rollback.test.ts (run with
 * `node --import tsx`), printing one JSON line. Two workers listen on port A; one worker is made unable to open a
 * socket (its RLIMIT_NOFILE lowered to its lowest free descriptor with prlimit(1): a real per-worker bind error,
 * "cannot listen on ...: EMFILE", no test hook in the data plane).
 * - bind: a snapshot adding port B fails on worker 1 only -> `error`, each worker's config version afterwards,
 *   whether B is free (no worker kept it), answered requests on A; then with the limit restored the same
 *   snapshot applies on both (`retry`).
 * - rollbackFails: worker 1 fails to bind C while worker 0, which applied it, is stopped before its rollback
 *   -> worker 0 is replaced (new PID) and comes back with the previous snapshot.
 * - silent: worker 1 is stopped during an apply -> the apply fails after applyTimeoutMs, worker 0 rolls back,
 *   worker 1 is replaced with the previous snapshot.
 */
import { execFileSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { readdirSync } from 'node:fs';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { mintUnroutableCid } from '../../lib/index.js';
import type { DataplaneSnapshot } from '../../lib/config/snapshot.js';
import { aggregateMetrics, WorkerPool } from '../../dataplane/workers.js';
import { Client, failureOf, freeUdpPort, server, shortPacket, sleep, snapshot, TaggingBackend, waitFor } from './helpers.js';

const until = (cond: () => boolean, ms: number) => waitFor(cond, ms, 20);
/** Whether nothing is bound to the port (an exclusive bind succeeds). */
async function portFree(port: number): Promise<boolean> {
  const s = createSocket('udp4');
  const ok = await new Promise<boolean>((r) => {
    s.once('error', () => r(false));
    s.bind({ port, address: '127.0.0.1', exclusive: true }, () => r(true));
  });
  await new Promise<void>((r) => s.close(() => r()));
  return ok;
}
/** Lowers a process's RLIMIT_NOFILE soft limit to its lowest free descriptor: every new socket() fails (EMFILE). */
function starveDescriptors(pid: number): void {
  const open = new Set(readdirSync(`/proc/${pid}/fd`).map(Number));
  let n = 0;
  while (open.has(n)) n++;
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${n}:`]);
}
function restoreDescriptors(pid: number, soft: number): void {
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${soft}:`]);
}
const softLimit = Number(execFileSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim());

const backends = await Promise.all(['a', 'b'].map((n) => TaggingBackend.start(n)));
const servers = [server('a', '0001', '127.0.0.1', backends[0].port), server('b', '0002', '127.0.0.1', backends[1].port)];
const logs: { msg: string }[] = [];
let onLog: ((msg: string) => void) | null = null;
const logger = pino({ level: 'info' }, {
  write: (l: string) => {
    const line = JSON.parse(l) as { msg: string };
    logs.push(line);
    onLog?.(line.msg);
  },
});
const pool = new WorkerPool({ count: 2, logger, logLevel: () => 'silent', health: () => new Map(), applyTimeoutMs: 1500 });
const s1 = snapshot(servers);
await pool.start(s1);
const portA = pool.addresses()[0].port;
const A = { host: '127.0.0.1', port: portA, family: 4 as const };

const versions = async (): Promise<number[]> =>
  (await pool.workerMetrics())
    .map((m) => m.find((x) => x.name === 'quiclb_config_version')?.values[0]?.value)
    .filter((v): v is number => v !== undefined);
async function answered(port: number, n = 20): Promise<number> {
  let ok = 0;
  for (let i = 0; i < n; i++) {
    const c = await Client.open();
    if ((await c.request(shortPacket(mintUnroutableCid(8)), port, '127.0.0.1', 1000)) !== null) ok++;
    await c.close();
  }
  return ok;
}
const tryApply = (s: DataplaneSnapshot) => failureOf(pool.apply(s));
const pids = () => pool.workerPids() as number[];
const out: Record<string, unknown> = { versions: { s1: s1.version } };

// bind: port B fails on worker 1 only.
const portB = await freeUdpPort();
const s2 = snapshot(servers, { listen: [A, { host: '127.0.0.1', port: portB, family: 4 }] });
(out.versions as Record<string, number>).s2 = s2.version;
starveDescriptors(pids()[1]);
const error = await tryApply(s2);
restoreDescriptors(pids()[1], softLimit); // before traffic: upstream sockets need descriptors too
out.bind = { error, portB, versions: await versions(), bFree: await portFree(portB), answeredA: await answered(portA), addresses: pool.addresses().map((a) => a.port) };
const retry = await tryApply(s2);
out.retry = { error: retry, versions: await versions(), answeredB: await answered(portB) };

// rollbackFails: worker 1 cannot bind C; worker 0 applied it and is stopped before it can roll back.
const portC = await freeUdpPort();
const s3 = snapshot(servers, { listen: [A, { host: '127.0.0.1', port: portC, family: 4 }] });
(out.versions as Record<string, number>).s3 = s3.version;
const [w0, w1] = pids();
starveDescriptors(w1);
onLog = (msg) => {
  if (msg.startsWith('a worker could not apply the snapshot')) {
    onLog = null;
    process.kill(w0, 'SIGSTOP');
  }
};
const error3 = await tryApply(s3);
onLog = null;
restoreDescriptors(w1, softLimit);
const back = await until(() => pool.readyCount === 2 && !pids().includes(w0), 15_000);
await sleep(200);
out.rollbackFails = {
  error: error3,
  back,
  w1Kept: pids()[1] === w1,
  versions: await versions(),
  cFree: await portFree(portC),
  answeredB: await answered(portB),
  replacements: { ...pool.replacements },
  rollbackLogged: logs.some((l) => l.msg.startsWith('worker could not roll back')),
};

// silent: worker 1 stopped during the apply.
const s4 = snapshot(servers.slice(0, 1), { listen: [A] });
const silentPid = pids()[1];
process.kill(silentPid, 'SIGSTOP');
const error4 = await tryApply(s4);
const back4 = await until(() => pool.readyCount === 2 && !pids().includes(silentPid), 15_000);
await sleep(200);
out.silent = { error: error4, back: back4, versions: await versions(), replacements: { ...pool.replacements } };
const final = await tryApply(s4);
const text = (await aggregateMetrics(new Registry(), await pool.workerMetrics())).body;
out.final = {
  error: final,
  versions: await versions(),
  s4: s4.version,
  metric: text.split('\n').filter((l) => l.startsWith('quiclb_worker_replacements_total{')),
};

console.log(JSON.stringify(out));
await pool.stop();
for (const b of backends) await b.close();
process.exit(0);
