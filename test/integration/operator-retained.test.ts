/**
 * An operator restart while one load balancer's reconcile keeps failing (its ServiceAccount may not write the
 * server-ID records ConfigMap, and a new pod needs an ID): when the 30 s start-up hold ends, the load balancer is
 * retained, not dropped, so the data plane keeps its listener and established connections go on; once the write is
 * allowed, the reconcile completes and the retention ends.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { CidEncoder } from '../../lib/quiclb/encoder.js';
import { kubectl } from './cluster.js';
import { json, OperatorWorld, POD_IPS, stop, waitFor, type Proc } from './operator-fixture.js';

const HOLD_MS = 30_000;
const RETAINED_MSG = 'start-up hold ended before these load balancers were reconciled: data planes keep them as they have them until they are';

describe('quiclb operator restarted while one reconcile keeps failing', () => {
  const w = new OperatorWorld();
  let operator: Proc;
  let configPort: number;

  beforeAll(async () => {
    await w.setUp(['web-0', 'web-1']);
    operator = w.startOperator([]);
    const running = await waitFor('operator running', async () => json(operator, 'operator running')[0], 30_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${operator.lines.join('\n')}`);
    });
    configPort = Number(String(running.configAddress).split(':').pop());
    await w.startDataPlane(configPort);
    await w.createQlb();
    const r = await kubectl(['wait', '--for=condition=Ready', `qlb/${w.qlbName}`, '-n', w.ns, '--timeout=60s']);
    if (r.code !== 0) throw new Error(`kubectl wait failed: ${r.stderr}`);
  }, 120_000);

  afterAll(async () => {
    await w.tearDown();
  });

  it('keeps forwarding through the end of the start-up hold, and catches up once the write is allowed', async () => {
    const ids = await w.podIds();
    const config = await w.activeConfig();
    // The operator's rules, but ConfigMaps read-only: the records write of a new pod's ID is refused (403).
    const account = await w.restrictedOperatorAccount('quiclb-op-nocm', (rules) =>
      rules.flatMap((r) =>
        (r.resources ?? []).includes('configmaps')
          ? [{ ...r, resources: (r.resources ?? []).filter((x) => x !== 'configmaps') }, { ...r, resources: ['configmaps'], verbs: ['get'] }]
          : [r],
      ),
    );
    const kubeconfig = account.kubeconfig;
    try {

      await stop(operator);
      // While it is down, a pod joins: the restarted operator must write an ID for it before it can publish.
      await w.setSlice(['web-0', 'web-1', 'web-2']);
      operator = w.startOperator([], `127.0.0.1:${configPort}`, kubeconfig);
      const t0 = Date.now();
      const traffic = w.peer!.stream(
        [0, 1].map((i) => ({ dcid: new CidEncoder(config, Buffer.from(ids[`web-${i}`]!, 'hex')).next(), ip: POD_IPS[i] })),
        20,
        HOLD_MS + 40_000,
      );
      await waitFor('the start-up hold to end with the load balancer retained', async () => json(operator, RETAINED_MSG)[0], HOLD_MS + 20_000, 200).catch((e: Error) => {
        throw new Error(`${e.message}\n${operator.lines.slice(-40).join('\n')}`);
      });
      const held = Date.now() - t0;
      // The data plane was sent the retaining snapshot and put it in force (not merely left alone).
      const key = `${w.ns}/${w.qlbName}`;
      await waitFor(
        'the data plane to apply a snapshot retaining the load balancer',
        async () => w.peer!.dataplaneLines.find((l) => l.includes('"snapshot applied"') && l.includes(`"retained":["${key}"]`)),
        10_000,
        100,
      );
      // Data planes got the retaining snapshot; traffic keeps flowing for a while after it.
      await new Promise((r) => setTimeout(r, 5000));
      const counts = await traffic.stop();
      for (const c of counts) {
        expect(c.sent).toBeGreaterThan(HOLD_MS / 40);
        expect({ misrouted: c.misrouted, lost: c.lost }).toEqual({ misrouted: 0, lost: 0 });
      }
      const retained = json(operator, RETAINED_MSG)[0]!;
      expect(retained.retained).toEqual([`${w.ns}/${w.qlbName}`]);
      expect(operator.lines.some((l) => l.includes('reconcile failed') && l.includes('"stage":"records"'))).toBe(true);
      expect((await w.podIds())['web-2']).toBeUndefined();
      process.stderr.write(
        `[operator-retained] hold ended ${held} ms after the restart; ${counts.reduce((n, c) => n + c.sent, 0)} datagrams forwarded through it, 0 lost\n`,
      );

      await account.grantAll();
      const id2 = await waitFor('web-2 annotated once the write is allowed', async () => (await w.podIds())['web-2'], 60_000, 200);
      expect(await w.reaches(id2, POD_IPS[2], 10_000)).toBeGreaterThanOrEqual(0);
      expect(await w.reaches(ids['web-0']!, POD_IPS[0], 10_000)).toBeGreaterThanOrEqual(0);
      await waitFor('retention ended', async () => json(operator, 'load balancer no longer retained')[0], 10_000);
    } finally {
      await stop(operator);
      await account.remove();
    }
  }, 180_000);
});
