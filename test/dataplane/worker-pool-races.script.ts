/**
 * Worker-pool races for test/dataplane/forwarder-lifecycle.test.ts (run with `node --import tsx`), printing one JSON line:
 * - F3: a worker that is (re)starting while WorkerPool.apply() runs is not asked (not ready yet), got the old
 *   snapshot in its 'start' message, and stays on the old config: `versions` = each worker's config version.
 * - F3b: likewise a health change broadcast while a worker starts never reaches it: `aHealthyPerWorker`.
 * - F4: a live worker that does not answer a metrics request within 2 s (here: SIGSTOPped) is left out of the
 *   aggregated sums, so every counter goes down (a "reset" for Prometheus): `totals` = received_packets before/during.
 */
import cluster from 'node:cluster';
import { once } from 'node:events';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { mintUnroutableCid } from '../../lib/index.js';
import { aggregateMetrics, WorkerPool } from '../../dataplane/workers.js';
import { Client, server, shortPacket, snapshot, TaggingBackend } from './helpers.js';

const backends = await Promise.all(['a', 'b'].map((n) => TaggingBackend.start(n)));
const servers = [server('a', '0001', '127.0.0.1', backends[0].port), server('b', '0002', '127.0.0.1', backends[1].port)];
const s1 = snapshot(servers);
const s2 = snapshot(servers.filter((s) => s.name !== 'b')); // b removed from the config
const health = new Map<string, 'unknown' | 'healthy' | 'unhealthy'>();
const pool = new WorkerPool({ count: 2, logger: pino({ level: 'silent' }), logLevel: () => 'silent', health: () => health });
await pool.start(s1);

// F3: kill one worker; the moment its replacement is online (it has been sent the 'start' snapshot), reload.
const victim = Object.values(cluster.workers!)[0]!;
const online = once(cluster, 'online');
victim.process.kill('SIGKILL');
await online;
// F3b: a health change broadcast while the replacement starts (the primary's checker does exactly this).
health.set('a', 'unhealthy');
pool.broadcastHealth('a', 'unhealthy');
await pool.apply(s2);
const t0 = Date.now();
while (pool.readyCount < 2 && Date.now() - t0 < 20_000) await new Promise((r) => setTimeout(r, 50));
await new Promise((r) => setTimeout(r, 200));
const reports = await pool.workerMetrics();
const versions = reports.map((m) => m.find((x) => x.name === 'quiclb_config_version')?.values[0]?.value).filter((v) => v !== undefined);
const aHealthy = reports
  .map((m) => m.find((x) => x.name === 'quiclb_backend_healthy')?.values.find((v) => v.labels.server === 'a')?.value)
  .filter((v) => v !== undefined);

// F4: traffic on both workers, a scrape, then one worker stops answering (SIGSTOP, resumed afterwards).
// (a healthy again first: with no server in the fallback pool every request would wait for its timeout)
health.set('a', 'healthy');
pool.broadcastHealth('a', 'healthy');
await new Promise((r) => setTimeout(r, 100));
const port = pool.addresses()[0].port;
const clients = await Promise.all(Array.from({ length: 16 }, () => Client.open()));
for (const c of clients) await c.request(shortPacket(mintUnroutableCid(8)), port);
const total = async () => {
  const text = (await aggregateMetrics(new Registry(), await pool.workerMetrics())).body;
  return Number(/^quiclb_received_packets_total\{lb="test"\} (\d+)$/m.exec(text)?.[1] ?? NaN);
};
const before = await total();
const stopped = Object.values(cluster.workers!)[0]!;
stopped.process.kill('SIGSTOP');
const during = await total();
stopped.process.kill('SIGCONT');

console.log(JSON.stringify({ f3: { expected: s2.version, old: s1.version, versions }, f3b: { aHealthyPerWorker: aHealthy }, f4: { totals: [before, during] } }));
for (const c of clients) await c.close();
await pool.stop();
for (const b of backends) await b.close();
process.exit(0);
