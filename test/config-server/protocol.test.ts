/**
 * The config server's stream protocol over real mTLS on loopback: Hello first, the latest snapshot with the right
 * content, ACK and NACK bookkeeping (a rejected version is never sent again), stale nonces, identity replacement,
 * reports, the read-only view and the metrics.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { status } from '@grpc/grpc-js';
import { snapshotFromWire } from '../../proto/convert.js';
import { HealthVerdict, ProbeResult, RoutingOutcome } from '../../proto/gen/quiclb/v1/distribution.js';
import { InMemorySnapshotSource } from '../../operator/config-server/source.js';
import { TestCa, type TlsDir } from '../helpers/tls.js';
import { makeLoadBalancer, sleep, startServer, TestDataPlane, TEST_KEYS, type StartedServer } from './helpers.js';

let ca: TestCa;
let serverTls: TlsDir;
let clients: Record<string, TlsDir>;
const open: TestDataPlane[] = [];
const servers: StartedServer[] = [];

beforeAll(() => {
  ca = new TestCa();
  serverTls = ca.issue({ cn: 'quiclb-operator', usage: 'server' });
  clients = Object.fromEntries(['dp-a', 'dp-b', 'dp-c', 'dp-d', 'dp-e', 'dp-f', 'dp-g', 'dp-h'].map((cn) => [cn, ca.issue({ cn, usage: 'client' })]));
});

afterAll(async () => {
  for (const c of open) c.close();
  for (const s of servers) await s.server.close(200);
  ca.remove();
});

async function setup(options: Parameters<typeof startServer>[2] = {}) {
  const source = new InMemorySnapshotSource();
  const started = await startServer(source, serverTls, options);
  servers.push(started);
  const connect = (cn: string) => {
    const dp = TestDataPlane.withTls(started.address, clients[cn]);
    open.push(dp);
    return dp;
  };
  return { source, ...started, connect };
}

describe('config server stream', () => {
  it('sends nothing before Hello, then the latest snapshot with its content, version and a nonce', async () => {
    const { source, connect, server } = await setup();
    const version = source.publish({ all: [makeLoadBalancer('web', { servers: 4 })] });
    const dp = connect('dp-a');
    await sleep(300);
    expect(dp.snapshots).toHaveLength(0);
    dp.hello('node-1');
    const s = await dp.waitForVersion(version);
    expect(s.nonce).not.toBe('');
    const content = snapshotFromWire(s);
    expect(content.version).toBe(version);
    expect(content.loadBalancers.map((lb) => lb.name)).toEqual(['web']);
    expect(content.loadBalancers[0].servers.map((x) => x.name)).toEqual(['web-server-0', 'web-server-1', 'web-server-2', 'web-server-3']);
    expect(Buffer.from(content.loadBalancers[0].configs[0].config.key!)).toEqual(TEST_KEYS[0]);
    const view = server.dataPlane('dp-a@node-1')!;
    expect(view).toMatchObject({ identity: 'dp-a@node-1', certificateName: 'dp-a', connected: true, hello: { nodeName: 'node-1', podName: 'pod-a', softwareVersion: '0.1.0' } });
    expect(view.lastSent).toMatchObject({ version, nonce: s.nonce });
    expect(view.appliedVersion).toBeNull();
  });

  it('tracks an ACK as the applied version and pushes every newer version', async () => {
    const { source, connect, server } = await setup();
    const v1 = source.publish({ all: [makeLoadBalancer('web')] });
    const dp = connect('dp-a');
    dp.hello();
    const s1 = await dp.waitForVersion(v1);
    dp.ack(s1);
    await server.waitForAck(v1, 2000);
    expect(server.dataPlane('dp-a@node-a')!.appliedVersion).toBe(v1);
    const v2 = source.publish({ all: [makeLoadBalancer('web', { weight: 7 })] });
    const s2 = await dp.waitForVersion(v2);
    expect(s2.nonce).not.toBe(s1.nonce);
    expect(snapshotFromWire(s2).loadBalancers[0].servers[0].weight).toBe(7);
    dp.ack(s2);
    await server.waitForAck(v2, 2000);
  });

  it('records a NACK with field and message, offers that version again only after the retry delay (doubling), and pushes a newer one at once', async () => {
    const RETRY_MS = 1500;
    const { source, connect, server, registry } = await setup({ cache: { rejectedRetryMs: RETRY_MS } });
    const v1 = source.publish({ all: [makeLoadBalancer('web')] });
    const dp = connect('dp-b');
    dp.hello();
    const s1 = await dp.waitForVersion(v1);
    const nacks: unknown[] = [];
    server.on('nack', (n) => nacks.push(n));
    const t0 = Date.now();
    dp.nack(s1, 'load_balancers[0].listen[0]', 'cannot bind 127.0.0.1:4433: EADDRINUSE');
    await sleep(200);
    const view = server.dataPlane('dp-b@node-a')!;
    expect(view.lastNack).toMatchObject({ version: v1, nonce: s1.nonce, field: 'load_balancers[0].listen[0]', message: 'cannot bind 127.0.0.1:4433: EADDRINUSE' });
    expect(view.appliedVersion).toBeNull();
    expect(nacks).toHaveLength(1);
    // Not pushed again within the delay...
    await sleep(300);
    if (Date.now() - t0 < RETRY_MS - 100) expect(dp.snapshots).toHaveLength(1);
    // ...nor to a reconnect of the same process.
    dp.close();
    const again = connect('dp-b');
    again.hello();
    await sleep(200);
    if (Date.now() - t0 < RETRY_MS - 100) expect(again.snapshots).toHaveLength(0);
    // Once due (a port held for a moment is free again), v1 comes again with a new nonce.
    const r1 = await again.waitForVersion(v1, 5000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(RETRY_MS - 50);
    expect(r1.nonce).not.toBe(s1.nonce);
    // Rejected again: the next offer waits twice as long.
    const t1 = Date.now();
    again.nack(r1, '', 'still in use');
    await sleep(RETRY_MS);
    if (Date.now() - t1 < 2 * RETRY_MS - 100) expect(again.snapshots).toHaveLength(1);
    await again.waitFor(() => again.snapshots.length === 2, 5000, 'the second offer of v1');
    expect(Date.now() - t1).toBeGreaterThanOrEqual(2 * RETRY_MS - 50);
    again.ack(again.last!);
    await server.waitForAck(v1, 2000, ['dp-b@node-a']);
    expect(server.dataPlane('dp-b@node-a')!.appliedVersion).toBe(v1);
    // A newer version goes out at once.
    const v2 = source.publish({ all: [makeLoadBalancer('web', { port: 4434 })] });
    const s2 = await again.waitForVersion(v2, 5000);
    again.ack(s2);
    await server.waitForAck(v2, 2000, ['dp-b@node-a']);
    const metrics = await registry.getSingleMetricAsString('quiclb_config_server_snapshots_nacked_total');
    expect(metrics).toMatch(/quiclb_config_server_snapshots_nacked_total 2$/m);
  });

  it('a newer version published while a rejected one waits for its retry goes out at once; the retry is dropped', async () => {
    const { source, connect, server } = await setup({ cache: { rejectedRetryMs: 60_000 } });
    const v1 = source.publish({ all: [makeLoadBalancer('web')] });
    const dp = connect('dp-e');
    dp.hello();
    dp.nack(await dp.waitForVersion(v1), '', 'port in use');
    await sleep(100);
    const v2 = source.publish({ all: [makeLoadBalancer('web', { port: 4435 })] });
    const s2 = await dp.waitForVersion(v2, 5000);
    dp.ack(s2);
    await server.waitForAck(v2, 2000, ['dp-e@node-a']);
    expect(dp.snapshots.map((x) => Number(x.version))).toEqual([v1, v2]);
    // v1 is older than what is in force now: never offered again, its retry time passing changes nothing.
    expect(server.dataPlane('dp-e@node-a')!.appliedVersion).toBe(v2);
  });

  it('offers a NACKed version again to a restarted data-plane process (a new process_start_time)', async () => {
    const { source, connect } = await setup();
    const v1 = source.publish({ all: [makeLoadBalancer('web')] });
    const dp = connect('dp-c');
    dp.hello();
    dp.nack(await dp.waitForVersion(v1), '', 'port in use');
    await sleep(100);
    dp.close();
    const restarted = connect('dp-c');
    restarted.send({
      message: { $case: 'hello', hello: { nodeName: 'node-a', podName: 'pod-a2', softwareVersion: '0.1.0', capabilities: [], currentVersion: 0n, processStartTime: new Date() } },
    });
    await restarted.waitForVersion(v1);
  });

  it('pushes the next version only after the previous push was answered, or its answer timed out', async () => {
    const { source, connect } = await setup({ answerTimeoutMs: 500 });
    const v1 = source.publish({ all: [makeLoadBalancer('web')] });
    const dp = connect('dp-g');
    dp.hello();
    const s1 = await dp.waitForVersion(v1);
    const v2 = source.publish({ all: [makeLoadBalancer('web', { weight: 2 })] });
    const v3 = source.publish({ all: [makeLoadBalancer('web', { weight: 3 })] });
    await sleep(200);
    expect(dp.snapshots).toHaveLength(1);
    dp.ack(s1);
    // v2 was never pushed: the newest wins.
    const s3 = await dp.waitForVersion(v3, 400);
    expect(dp.snapshots.map((s) => s.version)).toEqual([BigInt(v1), BigInt(v3)]);
    void v2;
    // Without an answer, the next version goes out once the answer timeout has passed.
    const v4 = source.publish({ all: [makeLoadBalancer('web', { weight: 4 })] });
    const t0 = Date.now();
    await dp.waitForVersion(v4, 2000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    void s3;
  });

  it('ignores ACKs and NACKs whose nonce is not the latest push', async () => {
    const { source, connect, server } = await setup({ answerTimeoutMs: 200 });
    const v1 = source.publish({ all: [makeLoadBalancer('web')] });
    const dp = connect('dp-d');
    dp.hello();
    const s1 = await dp.waitForVersion(v1);
    const v2 = source.publish({ all: [makeLoadBalancer('web', { weight: 5 })] });
    const s2 = await dp.waitForVersion(v2);
    // Answers to the replaced push s1 (and made-up nonces) change nothing.
    dp.ack(s1);
    dp.nack(s1, 'x', 'stale');
    dp.send({ message: { $case: 'ack', ack: { version: s2.version, nonce: 'not-a-nonce' } } });
    await sleep(300);
    let view = server.dataPlane('dp-d@node-a')!;
    expect(view.appliedVersion).toBeNull();
    expect(view.lastNack).toBeNull();
    dp.ack(s2);
    await server.waitForAck(v2, 2000);
    // A second answer to the same push is ignored too.
    dp.nack(s2, 'y', 'late');
    await sleep(200);
    view = server.dataPlane('dp-d@node-a')!;
    expect(view.appliedVersion).toBe(v2);
    expect(view.lastNack).toBeNull();
  });

  it('a second stream of the same identity (certificate and node) replaces the first (which is closed with ABORTED)', async () => {
    const { source, connect, server } = await setup();
    const v1 = source.publish({ all: [makeLoadBalancer('web')] });
    const first = connect('dp-e');
    first.hello('node-e');
    await first.waitForVersion(v1);
    const second = connect('dp-e');
    second.hello('node-e');
    second.ack(await second.waitForVersion(v1));
    const end = await first.waitForEnd();
    expect(end).toEqual({ code: status.ABORTED, details: 'replaced by a newer stream of the same data plane' });
    expect(server.dataPlane('dp-e@node-e')).toMatchObject({ connected: true, appliedVersion: v1 });
    // Only the new stream gets new versions.
    const v2 = source.publish({ all: [makeLoadBalancer('web', { weight: 9 })] });
    await second.waitForVersion(v2);
    expect(first.snapshots.map((s) => s.version)).toEqual([BigInt(v1)]);
    expect(server.dataPlanes().filter((d) => d.certificateName === 'dp-e').map((d) => d.identity)).toEqual(['dp-e@node-e']);
  });

  it('records health and counters reports, emits them, and exposes them in the view', async () => {
    const { source, connect, server } = await setup();
    const v1 = source.publish({ all: [makeLoadBalancer('web', { servers: 2 })] });
    const dp = connect('dp-f');
    dp.autoAck = true;
    const seen: string[] = [];
    server.on('health', (h) => seen.push(`health:${h.identity}:${h.backends.length}`));
    server.on('counters', (c) => seen.push(`counters:${c.identity}:${c.counters.loadBalancers[0].traffic[0].packets}`));
    dp.hello();
    await dp.waitForVersion(v1);
    const probeTime = new Date(Date.now() - 1000);
    dp.send({
      message: {
        $case: 'health',
        health: {
          backends: [
            { loadBalancer: 'web', server: 'web-server-0', state: HealthVerdict.HEALTH_VERDICT_HEALTHY, lastResult: ProbeResult.PROBE_RESULT_SUCCESS, lastProbeTime: probeTime, consecutiveFailures: 0, lastRtt: { seconds: 0n, nanos: 1_500_000 }, lastError: '' },
            { loadBalancer: 'web', server: 'web-server-1', state: HealthVerdict.HEALTH_VERDICT_UNHEALTHY, lastResult: ProbeResult.PROBE_RESULT_FAILURE, lastProbeTime: probeTime, consecutiveFailures: 4, lastRtt: undefined, lastError: 'timeout' },
            // Not in the snapshot sent: ignored (what a peer makes the server hold is bounded by the snapshot).
            { loadBalancer: 'web', server: 'made-up', state: HealthVerdict.HEALTH_VERDICT_HEALTHY, lastResult: ProbeResult.PROBE_RESULT_SUCCESS, lastProbeTime: probeTime, consecutiveFailures: 0, lastRtt: undefined, lastError: '' },
          ],
        },
      },
    });
    dp.send({
      message: {
        $case: 'counters',
        counters: {
          time: new Date(),
          processStartTime: new Date(1_700_000_000_000),
          loadBalancers: [
            {
              loadBalancer: 'web',
              receivedPackets: 10n,
              receivedBytes: 12000n,
              traffic: [{ outcome: RoutingOutcome.ROUTING_OUTCOME_CID, configId: 0, packets: 8n, bytes: 9600n }],
              drops: [{ reason: 'truncated', packets: 2n, bytes: 40n }],
              liveFlows: 3n,
            },
          ],
        },
      },
    });
    await sleep(300);
    const view = server.dataPlane('dp-f@node-a')!;
    expect(view.health).toHaveLength(2);
    expect(view.health.find((h) => h.server === 'web-server-0')).toMatchObject({ state: 'healthy', lastResult: 'success', lastRttMs: 1.5, consecutiveFailures: 0 });
    expect(view.health.find((h) => h.server === 'web-server-1')).toMatchObject({ state: 'unhealthy', lastResult: 'failure', lastError: 'timeout', consecutiveFailures: 4 });
    expect(view.counters!.loadBalancers[0]).toMatchObject({ loadBalancer: 'web', receivedPackets: 10, liveFlows: 3, traffic: [{ outcome: 'cid', configId: 0, packets: 8, bytes: 9600 }] });
    expect(seen).toEqual(['health:dp-f@node-a:2', 'counters:dp-f@node-a:8']);
    // The view is read-only.
    expect(Object.isFrozen(view)).toBe(true);
    // A snapshot without web-server-1 drops its health entry.
    const v2 = source.publish({ all: [makeLoadBalancer('web', { servers: 1 })] });
    await dp.waitForVersion(v2);
    expect(server.dataPlane('dp-f@node-a')!.health.map((h) => h.server)).toEqual(['web-server-0']);
  });

  it('keeps health reported before the first push (nothing to serve yet) and prunes it to the servers pushed', async () => {
    const { source, connect, server } = await setup();
    const dp = connect('dp-c');
    dp.autoAck = true;
    dp.hello();
    const entry = (srv: string) => ({ loadBalancer: 'web', server: srv, state: HealthVerdict.HEALTH_VERDICT_HEALTHY, lastResult: ProbeResult.PROBE_RESULT_SUCCESS, lastProbeTime: undefined, consecutiveFailures: 0, lastRtt: undefined, lastError: '' });
    // A data plane forwarding with its saved snapshot reports every server before the source has anything for it.
    dp.send({ message: { $case: 'health', health: { backends: [entry('web-server-0'), entry('gone')] } } });
    await sleep(200);
    expect(server.dataPlane('dp-c@node-a')!.health.map((h) => h.server).sort()).toEqual(['gone', 'web-server-0']);
    const v1 = source.publish({ all: [makeLoadBalancer('web', { servers: 2 })] });
    await dp.waitForVersion(v1);
    expect(server.dataPlane('dp-c@node-a')!.health.map((h) => h.server)).toEqual(['web-server-0']);
  });

  it('closes a stream that sends no Hello in time, or something else first', async () => {
    const { source, connect } = await setup({ helloTimeoutMs: 300 });
    source.publish({ all: [makeLoadBalancer('web')] });
    const silent = connect('dp-g');
    silent.send({ message: { $case: 'counters', counters: { time: undefined, processStartTime: undefined, loadBalancers: [] } } });
    expect(await silent.waitForEnd()).toMatchObject({ code: status.FAILED_PRECONDITION, details: 'the first message must be hello, got counters' });
    const mute = connect('dp-h');
    expect(await mute.waitForEnd(3000)).toMatchObject({ code: status.DEADLINE_EXCEEDED, details: 'no hello within 300 ms' });
    expect(silent.snapshots).toHaveLength(0);
    expect(mute.snapshots).toHaveLength(0);
  });

  it('exposes quiclb_config_server_* metrics', async () => {
    const { source, connect, registry, server } = await setup();
    const v1 = source.publish({ all: [makeLoadBalancer('web')] });
    const dp = connect('dp-a');
    dp.hello();
    dp.ack(await dp.waitForVersion(v1));
    await server.waitForAck(v1, 2000);
    const text = await registry.metrics();
    expect(text).toMatch(/^quiclb_config_server_connected_data_planes 1$/m);
    expect(text).toMatch(new RegExp(`^quiclb_config_server_snapshot_version ${v1}$`, 'm'));
    expect(text).toMatch(/^quiclb_config_server_snapshots_sent_total 1$/m);
    expect(text).toMatch(/^quiclb_config_server_snapshots_acked_total 1$/m);
    expect(text).toMatch(/^quiclb_config_server_seconds_since_last_report\{data_plane="dp-a@node-a"\} \d/m);
  });
});
