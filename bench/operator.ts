/**
 * Operator figures against a real control plane (not a timed test): `quiclb operator` (ServiceAccount token,
 * deploy/rbac.yaml) and one `quiclb dataplane` process on the host, a QuicLoadBalancer over N backend pods whose
 * EndpointSlice the script writes (tier 1 has no controllers).
 *
 * Measures, per change, the time from an endpoint turning ready in the EndpointSlice (the API write) to the data
 * plane's ACK of the first snapshot published after it (from the operator's log lines, same host clock), p50/p99/
 * max over --changes changes, at each --backends size; and the operator's RSS at the largest size. Then, with two
 * `--leader-elect` replicas (lease --lease-duration s, renew deadline 3/4 of it, retry 1 s), --takeovers times: the
 * leader stopped (SIGKILL and SIGTERM in turn) -> the standby's "leading" line, and -> the data plane's first ACK
 * of the new leader; the stopped replica starts again as the next standby.
 *
 * Needs a running cluster: bash test/cluster/up.sh --tier 1 --name bench, then
 *   QUICLB_CLUSTER_DIR=/tmp/quiclb-cluster-bench node --import tsx bench/operator.ts [--backends 10,200] [--changes 30]
 *     [--takeovers 6] [--lease-duration 4]
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { json, NODE, OperatorWorld, start, stop, waitFor, type Proc } from '../test/integration/operator-fixture.js';

const { values } = parseArgs({
  options: {
    backends: { type: 'string', default: '10,200' },
    changes: { type: 'string', default: '30' },
    takeovers: { type: 'string', default: '6' },
    'lease-duration': { type: 'string', default: '4' },
  },
});
const sizes = values.backends.split(',').map(Number);
const changes = Number(values.changes);
const takeovers = Number(values.takeovers);
const leaseSeconds = Number(values['lease-duration']);

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

  if (takeovers > 0) {
    // Two replicas on the config address the data plane dials (only the leader binds it).
    await stop(op);
    const renew = Math.max(1, Math.floor((leaseSeconds * 3) / 4));
    const lease = ['--leader-elect', '--lease-duration', String(leaseSeconds), '--renew-deadline', String(renew), '--retry-period', '1'];
    const replica = () => w.startOperator(lease, `127.0.0.1:${port}`);
    const leading = (p: Proc) => json(p, 'leading: acting and serving snapshots')[0] as { time: number } | undefined;
    let leader = replica();
    await waitFor('first leader', async () => leading(leader), 30_000);
    let standby = replica();
    await waitFor('standby candidate', async () => json(standby, 'operator running: candidate for leadership')[0], 30_000);
    const taken: Record<string, { lead: number[]; ack: number[] }> = { SIGKILL: { lead: [], ack: [] }, SIGTERM: { lead: [], ack: [] } };
    for (let k = 0; k < takeovers; k++) {
      const signal = k % 2 === 0 ? 'SIGKILL' : 'SIGTERM';
      const t0 = Date.now();
      leader.child.kill(signal);
      await leader.exit;
      const led = await waitFor('standby leads', async () => leading(standby), 4 * leaseSeconds * 1000, 5);
      const ack = await waitFor('data plane ACKs the new leader', async () => json(standby, 'data plane ACKed')[0] as { time: number } | undefined, 30_000, 5);
      taken[signal].lead.push(led.time - t0);
      taken[signal].ack.push(ack.time - t0);
      [leader, standby] = [standby, replica()];
      await waitFor('standby candidate', async () => json(standby, 'operator running: candidate for leadership')[0], 30_000);
    }
    for (const [signal, t] of Object.entries(taken)) {
      if (t.lead.length === 0) continue;
      console.log(
        `standby takeover after ${signal} of the leader (lease ${leaseSeconds} s, renew ${renew} s, retry 1 s): leading p50 ${pct(t.lead, 50)} ms, max ${Math.max(...t.lead)} ms; ` +
          `data plane ACKed the new leader p50 ${pct(t.ack, 50)} ms, max ${Math.max(...t.ack)} ms (${t.lead.length} takeovers)`,
      );
    }
  }
} finally {
  if (dp) await stop(dp);
  await w.tearDown();
}
