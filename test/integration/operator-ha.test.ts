/**
 * Two `quiclb operator --leader-elect` replicas (ServiceAccount token, deploy/rbac.yaml's Lease Role) and a real
 * data plane: only the Lease holder acts and listens; the leader is SIGKILLed while it allocates server IDs for 200
 * new endpoints; the standby takes over within the lease period, binds the same config address, the data plane
 * reconnects, every ID stored before the kill is kept, all IDs are unique, pod annotations do not change, and a
 * connection's datagrams reach its pod throughout.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { json, OperatorWorld, POD_IPS, waitFor, type Proc } from './operator-fixture.js';
import { kubectl } from './cluster.js';
import { freeTcpPort } from '../e2e/peers/dataplane.js';
import { CidEncoder } from '../../lib/quiclb/encoder.js';

const LEASE = ['--leader-elect', '--lease-duration', '4', '--renew-deadline', '3', '--retry-period', '1'];
const EXTRA = Array.from({ length: 200 }, (_, i) => `198.18.${1 + (i >> 8)}.${(i & 255) + 1}`);

describe('quiclb operator with leader election on a real API server', () => {
  const w = new OperatorWorld();
  let port: number;
  let a: Proc;
  let b: Proc;

  beforeAll(async () => {
    await w.setUp(['web-0', 'web-1']);
    port = await freeTcpPort();
    a = w.startOperator(LEASE, `127.0.0.1:${port}`);
    await waitFor('first replica leads', async () => json(a, 'leading: acting and serving snapshots')[0], 30_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${a.lines.join('\n')}`);
    });
    b = w.startOperator(LEASE, `127.0.0.1:${port}`);
    await waitFor('second replica stands by', async () => json(b, 'operator running: candidate for leadership')[0], 30_000);
    await w.startDataPlane(port);
    await w.createQlb({ healthCheck: { enabled: false } });
    const r = await kubectl(['wait', '--for=condition=Ready', `qlb/${w.qlbName}`, '-n', w.ns, '--timeout=60s']);
    if (r.code !== 0) throw new Error(`kubectl wait failed: ${r.stderr}\n${a.lines.slice(-30).join('\n')}`);
  }, 120_000);

  afterAll(() => w.tearDown());

  it('only the leader acts; the standby takes over a killed leader mid-allocation and keeps every ID', async () => {
    expect(json(b, 'leading: acting and serving snapshots')).toHaveLength(0);
    const readyz = async (p: Proc) => (await fetch(`http://${String(json(p, 'operator running: candidate for leadership')[0].metricsAddress)}/readyz`)).status;
    expect([await readyz(a), await readyz(b)]).toEqual([200, 503]);
    expect(b.lines.some((l) => l.includes('server-ID records written'))).toBe(false);
    const before = await w.podIds();
    const config = await w.activeConfig();
    expect(await w.reaches(before['web-1']!, POD_IPS[1], 5000, config)).toBeGreaterThanOrEqual(0);

    // Two established connections send steadily from before the kill until the data plane runs the new leader's
    // snapshot; every datagram is counted.
    const traffic = w.peer!.stream(
      [0, 1].map((i) => ({ dcid: new CidEncoder(config, Buffer.from(before[`web-${i}`]!, 'hex')).next(), ip: POD_IPS[i] })),
      20,
      90_000,
    );
    // 200 new endpoints; kill the leader while it works on them.
    await w.setSlice(['web-0', 'web-1'], EXTRA);
    await waitFor('leader starts allocating', async () => (a.lines.some((l) => l.includes('"assigned":200')) ? true : undefined), 10_000, 5).catch(() => undefined);
    a.child.kill('SIGKILL');
    const killedAt = Date.now();
    await a.exit;
    const atKill = await w.storedIds();

    // Forwarding goes on while nobody leads.
    expect(await w.reaches(before['web-1']!, POD_IPS[1], 2000, config)).toBeGreaterThanOrEqual(0);

    await waitFor('standby leads', async () => json(b, 'leading: acting and serving snapshots')[0], 20_000, 50);
    const takeoverMs = Date.now() - killedAt;
    await waitFor('202 IDs stored', async () => ((await w.storedIds()).assigned.size === 202 ? true : undefined), 30_000);
    await waitFor('data plane in sync with the new leader', async () => ((await w.condition('ConfigSynced'))?.status === 'True' && json(b, 'data plane ACKed').length > 0 ? true : undefined), 30_000);
    const readyMs = Date.now() - killedAt;
    const counts = await traffic.stop();
    process.stderr.write(`[operator-ha] datagrams of two connections from before the kill to the new leader's snapshot: ${JSON.stringify(counts)}\n`);
    for (const c of counts) {
      expect(c.sent).toBeGreaterThan(50);
      expect({ misrouted: c.misrouted, lost: c.lost }).toEqual({ misrouted: 0, lost: 0 });
    }
    process.stderr.write(`[operator-ha] killed with ${atKill.assigned.size} IDs stored; SIGKILL -> standby leading: ${takeoverMs} ms; -> all 202 IDs stored and data plane ACKed the new leader: ${readyMs} ms (lease 4 s)\n`);

    const after = await w.storedIds();
    for (const [uid, id] of atKill.assigned) expect({ uid, id: after.assigned.get(uid) }).toEqual({ uid, id });
    expect(new Set(after.assigned.values()).size).toBe(202);
    expect(after.released).toEqual([]);
    expect(await w.podIds()).toEqual(before);
    expect(await w.activeConfig()).toEqual(config);
    expect(await w.reaches(before['web-1']!, POD_IPS[1], 5000, config)).toBeGreaterThanOrEqual(0);
    expect((await w.condition('Ready'))?.status).toBe('True');
    expect(await readyz(b)).toBe(200);
  });
});
