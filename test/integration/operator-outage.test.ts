/**
 * The API server unreachable for a while (every operator connection to it cut and refused through a relay): the
 * data plane keeps forwarding established connections, the operator keeps running, its watches restart, and a
 * change made during the outage is applied once the API server is back. Then a
 * restarted operator whose first list of one kind fails (EndpointSlices refused by its RBAC): it must not act on that
 * empty cache (a snapshot without the servers, every server ID released) until the list succeeds.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { CidEncoder } from '../../lib/quiclb/encoder.js';
import { cluster, kubectl } from './cluster.js';
import type { QuicLbConfig } from '../../lib/quiclb/config.js';
import { json, OperatorWorld, POD_IPS, stop, TcpRelay, waitFor, type Proc, type StreamCounts } from './operator-fixture.js';

const OUTAGE_MS = 8000;

describe('quiclb operator while the API server is unreachable', () => {
  const w = new OperatorWorld();
  let relay: TcpRelay;
  let operator: Proc;

  beforeAll(async () => {
    await w.setUp(['web-0', 'web-1']);
    relay = await TcpRelay.start(Number(new URL(cluster().server).port));
    operator = w.startOperator([], '127.0.0.1:0', w.relayedKubeconfig(relay.port));
    const running = await waitFor('operator running', async () => json(operator, 'operator running')[0], 30_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${operator.lines.join('\n')}`);
    });
    await w.startDataPlane(Number(String(running.configAddress).split(':').pop()));
    await w.createQlb();
    const r = await kubectl(['wait', '--for=condition=Ready', `qlb/${w.qlbName}`, '-n', w.ns, '--timeout=60s']);
    if (r.code !== 0) throw new Error(`kubectl wait failed: ${r.stderr}`);
  }, 120_000);

  afterAll(async () => {
    await w.tearDown();
    relay?.close();
  });

  /** Established connections to the pods `pods` send every 20 ms until OUTAGE_MS after `t0`; none may be lost or misrouted. */
  async function steadyTraffic(ids: Record<string, string | undefined>, config: QuicLbConfig, pods: number[], t0: number): Promise<StreamCounts[]> {
    const traffic = w.peer!.stream(
      pods.map((i) => ({ dcid: new CidEncoder(config, Buffer.from(ids[`web-${i}`]!, 'hex')).next(), ip: POD_IPS[i] })),
      20,
      OUTAGE_MS + 10_000,
    );
    while (Date.now() - t0 < OUTAGE_MS) await new Promise((r) => setTimeout(r, 200));
    const counts = await traffic.stop();
    for (const c of counts) {
      expect(c.sent).toBeGreaterThan(OUTAGE_MS / 40);
      expect({ misrouted: c.misrouted, lost: c.lost }).toEqual({ misrouted: 0, lost: 0 });
    }
    return counts;
  }

  it('forwards throughout, survives, and catches up after the outage', async () => {
    const ids = await w.podIds();
    const config = await w.activeConfig();
    relay.cut();
    const t0 = Date.now();
    // A change the operator cannot see yet.
    await w.setSlice(['web-0', 'web-1', 'web-2']);
    // Two established connections send steadily through the whole outage; every datagram is counted.
    const counts = await steadyTraffic(ids, config, [0, 1], t0);
    const sent = counts.reduce((n, c) => n + c.sent, 0);
    const lost = counts.reduce((n, c) => n + c.lost + c.misrouted, 0);
    expect(operator.child.exitCode).toBeNull();
    expect((await w.podIds())['web-2']).toBeUndefined();

    relay.restore();
    const t1 = Date.now();
    const id2 = await waitFor('web-2 annotated after the outage', async () => (await w.podIds())['web-2'], 30_000, 100);
    expect(await w.reaches(id2, POD_IPS[2], 10_000)).toBeGreaterThanOrEqual(0);
    process.stderr.write(`[operator-outage] ${sent} datagrams during ${OUTAGE_MS} ms without the API server, ${lost} lost or misrouted; change applied ${Date.now() - t1} ms after it came back\n`);
    expect(operator.lines.some((l) => l.includes('watch failed: restarting'))).toBe(true);
    const after = await w.podIds();
    expect([after['web-0'], after['web-1']]).toEqual([ids['web-0'], ids['web-1']]);
    await waitFor('Ready', async () => ((await w.condition('Ready'))?.status === 'True' ? true : undefined), 20_000);
  });

  it('an operator whose first EndpointSlice list fails waits for it: forwarding holds, no server ID moves', async () => {
    const ids = await w.podIds();
    expect(Object.entries(ids).filter(([, id]) => id !== undefined).map(([pod]) => pod)).toEqual(['web-0', 'web-1', 'web-2']); // web-2: the first test's
    const config = await w.activeConfig();
    const configPort = Number(String(json(operator, 'operator running')[0]!.configAddress).split(':').pop());
    // Its own ServiceAccount with the operator's rules except EndpointSlices: every other first list succeeds, that
    // one is refused (403) until a second binding grants the operator's whole ClusterRole.
    const account = await w.restrictedOperatorAccount('quiclb-op-noslices', (rules) => {
      const noSlices = rules.map((r) => ({ ...r, resources: (r.resources ?? []).filter((x) => x !== 'endpointslices') })).filter((r) => r.resources.length > 0);
      expect(noSlices.length).toBe(rules.length - 1);
      return noSlices;
    });
    const kubeconfig = account.kubeconfig;
    try {
      await stop(operator);
      // The same config address: the data plane dials it again, as it would a restarted operator pod's Service.
      operator = w.startOperator([], `127.0.0.1:${configPort}`, kubeconfig);
      const counts = await steadyTraffic(ids, config, [0, 1, 2], Date.now());
      const waiting = json(operator, 'waiting for the first list of every watch: not acting on empty caches');
      expect(waiting.length).toBeGreaterThan(0);
      expect(waiting.at(-1)!.informers).toEqual(['endpointslices']);
      expect(json(operator, 'operator running')).toEqual([]);
      expect(await w.podIds()).toEqual(ids);

      await account.grantAll();
      const t1 = Date.now();
      await waitFor('operator running after its first EndpointSlice list', async () => json(operator, 'operator running')[0], 30_000).catch((e: Error) => {
        throw new Error(`${e.message}\n${operator.lines.join('\n')}`);
      });
      process.stderr.write(
        `[operator-outage] operator whose EndpointSlice list was refused: ${counts.reduce((n, c) => n + c.sent, 0)} datagrams forwarded meanwhile, 0 lost; acting ${Date.now() - t1} ms after the grant\n`,
      );
      await waitFor('Ready', async () => ((await w.condition('Ready'))?.status === 'True' ? true : undefined), 20_000);
      expect(await w.podIds()).toEqual(ids);
      expect(await w.reaches(ids['web-2']!, POD_IPS[2], 10_000)).toBeGreaterThanOrEqual(0);
    } finally {
      await stop(operator); // before its ServiceAccount goes
      await account.remove();
    }
  });
});
