/**
 * Data planes that share a client certificate (the Helm chart gives every data plane of the DaemonSet the same one,
 * CN quiclb-dataplane) are told apart by the node of their Hello: on different nodes they stay connected side by
 * side and each ACKs every version, with their own view, NACK and metrics; on the same node, the newer stream (a
 * reconnect) replaces the older. Real grpc-js streams over mTLS on loopback.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { status } from '@grpc/grpc-js';
import { HealthVerdict, ProbeResult } from '../../proto/gen/quiclb/v1/distribution.js';
import { InMemorySnapshotSource } from '../../operator/config-server/source.js';
import { TestCa, type TlsDir } from '../helpers/tls.js';
import { makeLoadBalancer, sleep, startServer, TestDataPlane, type StartedServer } from './helpers.js';

const CN = 'quiclb-dataplane';
/** How long the two data planes run side by side, and how often a new version is published meanwhile. */
const RUN_MS = 4000;
const PUBLISH_EVERY_MS = 200;

let ca: TestCa;
let serverTls: TlsDir;
let shared: TlsDir;
const open: TestDataPlane[] = [];
const servers: StartedServer[] = [];

beforeAll(() => {
  ca = new TestCa();
  serverTls = ca.issue({ cn: 'quiclb-operator', usage: 'server' });
  shared = ca.issue({ cn: CN, usage: 'client' });
});

afterAll(async () => {
  for (const c of open) c.close();
  for (const s of servers) await s.server.close(200);
  ca.remove();
});

async function setup() {
  const source = new InMemorySnapshotSource();
  const started = await startServer(source, serverTls);
  servers.push(started);
  const connect = (node: string) => {
    const dp = TestDataPlane.withTls(started.address, shared);
    open.push(dp);
    dp.hello(node);
    return dp;
  };
  const logCount = (msg: string) => started.lines.filter((l) => (JSON.parse(l) as { msg: string }).msg === msg).length;
  const replaced = async () => {
    const text = await started.registry.getSingleMetricAsString('quiclb_config_server_streams_refused_total');
    return Number(/^quiclb_config_server_streams_refused_total\{reason="replaced"\} (\d+)$/m.exec(text)?.[1] ?? 0);
  };
  return { source, ...started, connect, logCount, replaced };
}

describe('data planes sharing a client certificate', () => {
  it(`on different nodes: both stay connected and ACK every version for ${RUN_MS} ms, with no replacement`, async () => {
    const { source, server, registry, connect, logCount, replaced } = await setup();
    const ids = [`${CN}@node-a`, `${CN}@node-b`];
    let v = source.publish({ all: [makeLoadBalancer('web')] });
    const a = connect('node-a');
    const b = connect('node-b');
    a.autoAck = true;
    b.autoAck = true;
    // Waits on what each data plane received (not on the server's bookkeeping): a replaced stream shows as a
    // timeout naming its end status.
    const bothReceive = (version: number, timeoutMs: number) => Promise.all([a, b].map((dp) => dp.waitForVersion(version, timeoutMs)));
    await bothReceive(v, 5000);
    await sleep(200);
    expect([a.ended, b.ended, await replaced()]).toEqual([null, null, 0]);
    await server.waitForAck(v, 2000, ids);

    const published = [v];
    const end = Date.now() + RUN_MS;
    for (let i = 1; Date.now() < end; i++) {
      v = source.publish({ all: [makeLoadBalancer('web', { weight: i + 1 })] });
      published.push(v);
      await bothReceive(v, 2000);
      await server.waitForAck(v, 2000, ids);
      await sleep(PUBLISH_EVERY_MS);
    }
    expect(published.length).toBeGreaterThanOrEqual(10);
    // Latest wins may skip a version published while the previous push was unanswered; here each was ACKed
    // before the next was published, so each data plane received every one, once.
    for (const dp of [a, b]) {
      expect(dp.ended).toBeNull();
      expect(dp.snapshots.map((s) => Number(s.version))).toEqual(published);
    }
    expect(logCount('data plane connected')).toBe(2);
    expect(logCount('closing config stream')).toBe(0);
    expect(logCount('data plane disconnected')).toBe(0);
    expect(await replaced()).toBe(0);
    const views = server.dataPlanes().sort((x, y) => (x.identity < y.identity ? -1 : 1)); // listed in the order of their Hellos, which race
    expect(views.map((d) => [d.identity, d.certificateName, d.hello?.nodeName, d.connected, d.appliedVersion])).toEqual([
      [ids[0], CN, 'node-a', true, v],
      [ids[1], CN, 'node-b', true, v],
    ]);
    const metrics = await registry.metrics();
    expect(metrics).toMatch(/^quiclb_config_server_connected_data_planes 2$/m);
    expect(metrics).toMatch(/^quiclb_config_server_seconds_since_last_report\{data_plane="quiclb-dataplane@node-a"\} \d/m);
    expect(metrics).toMatch(/^quiclb_config_server_seconds_since_last_report\{data_plane="quiclb-dataplane@node-b"\} \d/m);
  });

  it('on different nodes: a NACK and health reports are booked for the data plane that sent them only', async () => {
    const { source, server, connect } = await setup();
    const ids = [`${CN}@node-a`, `${CN}@node-b`];
    const v1 = source.publish({ all: [makeLoadBalancer('web', { servers: 1 })] });
    const a = connect('node-a');
    const b = connect('node-b');
    a.nack(await a.waitForVersion(v1), 'load_balancers[0].listen[0]', 'cannot bind: EADDRINUSE');
    b.ack(await b.waitForVersion(v1));
    await server.waitForAck(v1, 2000, [ids[1]]);
    b.send({ message: { $case: 'health', health: { backends: [{ loadBalancer: 'web', server: 'web-server-0', state: HealthVerdict.HEALTH_VERDICT_HEALTHY, lastResult: ProbeResult.PROBE_RESULT_SUCCESS, lastProbeTime: new Date(), consecutiveFailures: 0, lastRtt: undefined, lastError: '' }] } } });
    await sleep(200);
    expect(server.dataPlane(ids[0])).toMatchObject({ appliedVersion: null, lastNack: { version: v1, field: 'load_balancers[0].listen[0]' }, health: [] });
    expect(server.dataPlane(ids[1])).toMatchObject({ appliedVersion: v1, lastNack: null, health: [{ server: 'web-server-0' }] });
    // The rejected version is held back from node-a only; the next one reaches both.
    const v2 = source.publish({ all: [makeLoadBalancer('web', { servers: 1, port: 4434 })] });
    a.ack(await a.waitForVersion(v2));
    b.ack(await b.waitForVersion(v2));
    await server.waitForAck(v2, 2000, ids);
    expect(a.snapshots.map((s) => Number(s.version))).toEqual([v1, v2]);
  });

  it('on the same node: the second stream (a reconnect) replaces the first; the other node is untouched', async () => {
    const { source, server, connect, logCount, replaced } = await setup();
    const v1 = source.publish({ all: [makeLoadBalancer('web')] });
    const old = connect('node-a');
    const other = connect('node-b');
    old.autoAck = true;
    other.autoAck = true;
    await server.waitForAck(v1, 5000, [`${CN}@node-a`, `${CN}@node-b`]);
    const disconnected: string[] = [];
    server.on('disconnected', (d) => disconnected.push(d.identity));

    const again = connect('node-a');
    again.autoAck = true;
    expect(await old.waitForEnd()).toEqual({ code: status.ABORTED, details: 'replaced by a newer stream of the same data plane' });
    await again.waitForVersion(v1);
    const v2 = source.publish({ all: [makeLoadBalancer('web', { weight: 3 })] });
    await server.waitForAck(v2, 2000, [`${CN}@node-a`, `${CN}@node-b`]);
    expect(old.snapshots.map((s) => Number(s.version))).toEqual([v1]);
    expect(other.ended).toBeNull();
    expect(other.snapshots.map((s) => Number(s.version))).toEqual([v1, v2]);
    expect(disconnected).toEqual([`${CN}@node-a`]);
    expect(await replaced()).toBe(1);
    expect(logCount('data plane connected')).toBe(3);
    expect(server.dataPlanes().filter((d) => d.connected).map((d) => d.identity).sort()).toEqual([`${CN}@node-a`, `${CN}@node-b`]);
  });

  it('a Hello without a node name: the certificate CN alone is the identity', async () => {
    const { source, server, connect } = await setup();
    const v1 = source.publish({ all: [makeLoadBalancer('web')] });
    const dp = connect('');
    dp.ack(await dp.waitForVersion(v1));
    await server.waitForAck(v1, 2000, [CN]);
    expect(server.dataPlane(CN)).toMatchObject({ identity: CN, certificateName: CN, connected: true });
  });
});
