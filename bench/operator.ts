/**
 * Operator figures against a real control plane (not a timed test): `quiclb operator` (ServiceAccount token,
 * deploy/rbac.yaml) and one `quiclb dataplane` process on the host, a QuicLoadBalancer over N backend pods whose
 * EndpointSlice the script writes (tier 1 has no controllers).
 *
 * Measures, per change, the time from an endpoint turning ready in the EndpointSlice (the API write) to the data
 * plane's ACK of the first snapshot published after it (from the operator's log lines, same host clock), p50/p99/
 * max over --changes changes, at each --backends size; and the operator's RSS at the largest size.
 *
 * Needs a running cluster: bash test/cluster/up.sh --tier 1 --name bench, then
 *   QUICLB_CLUSTER_DIR=/tmp/quiclb-cluster-bench node --import tsx bench/operator.ts [--backends 10,200] [--changes 30]
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { json, NODE, OperatorWorld, start, stop, waitFor, type Proc } from '../test/integration/operator-fixture.js';

const { values } = parseArgs({ options: { backends: { type: 'string', default: '10,200' }, changes: { type: 'string', default: '30' } } });
const sizes = values.backends.split(',').map(Number);
const changes = Number(values.changes);

const dir = process.env.QUICLB_CLUSTER_DIR;
if (!dir) throw new Error('set QUICLB_CLUSTER_DIR to a running cluster (bash test/cluster/up.sh --tier 1 --name bench)');
for (const line of readFileSync(join(dir, 'cluster.env'), 'utf8').split('\n')) {
  const i = line.indexOf('=');
  if (i > 0) process.env[line.slice(0, i)] ??= line.slice(i + 1);
}

const ip = (i: number) => `198.18.${1 + (i >> 7)}.${(i & 127) + 1}`;
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];

const w = new OperatorWorld();
let dp: Proc | null = null;
try {
  await w.setUp([]);
  const op = w.startOperator([]);
  const running = await waitFor('operator running', async () => json(op, 'operator running')[0], 30_000);
  const port = Number(String(running.configAddress).split(':').pop());
  dp = start(['dataplane', '--operator', `localhost:${port}`, '--tls-dir', w.clientTls.dir, '--node-name', NODE, '--no-metrics']);
  await w.createQlb({ healthCheck: { enabled: false }, listen: { ports: [18443], addresses: ['127.0.0.1'] } });
  const results: { backends: number; p50: number; p99: number; max: number; n: number }[] = [];
  for (const n of sizes) {
    const extra = Array.from({ length: n }, (_, i) => ip(i));
    await w.setSlice([], extra);
    await waitFor(`${n} backends in status`, async () => (((await w.getQlb()).status as { backends?: { total: number } } | undefined)?.backends?.total === n ? true : undefined), 60_000);
    const samples: number[] = [];
    for (let k = 0; k < changes; k++) {
      // Endpoint k % n: not ready, wait for its ACK, then ready again (the measured change).
      const target = k % n;
      const body = (ready: boolean) => {
        const s = w.slice([], extra);
        s.endpoints![target].conditions = { ready, serving: ready, terminating: false };
        return s;
      };
      for (const ready of [false, true]) {
        const cur = await w.disc.readNamespacedEndpointSlice({ name: 'web-slice', namespace: w.ns });
        const mark = op.lines.length;
        const t0 = Date.now();
        const b = body(ready);
        await w.disc.replaceNamespacedEndpointSlice({ name: 'web-slice', namespace: w.ns, body: { ...b, metadata: { ...b.metadata, resourceVersion: cur.metadata!.resourceVersion } } });
        const since = () => op.lines.slice(mark).flatMap((l) => {
          try {
            return [JSON.parse(l) as { msg: string; version?: number; time: number }];
          } catch {
            return [];
          }
        });
        const published = await waitFor('publication', async () => since().find((l) => l.msg === 'snapshot published'), 20_000, 2);
        const ack = await waitFor('ACK', async () => since().find((l) => l.msg === 'data plane ACKed' && (l.version ?? 0) >= published.version!), 20_000, 2);
        if (ready) samples.push(ack.time - t0);
      }
    }
    results.push({ backends: n, p50: pct(samples, 50), p99: pct(samples, 99), max: Math.max(...samples), n: samples.length });
  }
  const metricsAddress = String(json(op, 'operator running')[0].metricsAddress);
  const text = await (await fetch(`http://${metricsAddress}/metrics`)).text();
  const rss = Number(/^quiclb_process_resident_memory_bytes (\S+)/m.exec(text)?.[1] ?? NaN);
  const heap = Number(/^quiclb_nodejs_heap_size_used_bytes (\S+)/m.exec(text)?.[1] ?? NaN);
  for (const r of results) console.log(`backends ${r.backends}: endpoint ready -> data plane ACK p50 ${r.p50} ms, p99 ${r.p99} ms, max ${r.max} ms (${r.n} changes)`);
  console.log(`operator at ${sizes[sizes.length - 1]} backends: RSS ${(rss / 2 ** 20).toFixed(1)} MiB, heap used ${(heap / 2 ** 20).toFixed(1)} MiB`);
} finally {
  if (dp) await stop(dp);
  await w.tearDown();
}
