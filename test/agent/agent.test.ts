/**
 * The node agent in this process against a DistributionService server over real mTLS on loopback, with real UDP
 * backends and clients: ACK/NACK, all-or-nothing apply with rollback, servers moving, load balancers added and
 * removed, counters and health reports on the stream, the verdict-vs-probes rule, and no key bytes in debug logs.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { CidEncoder } from '../../lib/index.js';
import { makeConfig } from '../../lib/quiclb/config.js';
import type { DataplaneSnapshot, SnapshotServer } from '../../lib/config/snapshot.js';
import { RETAINED_CAPABILITY, snapshotToWire } from '../../proto/convert.js';
import { HealthVerdict, ProbeResult, RoutingOutcome } from '../../proto/gen/quiclb/v1/distribution.js';
import { runAgent, type AgentHandle } from '../../dataplane/agent/agent.js';
import { InProcessEngine } from '../../dataplane/agent/engines.js';
import { REDACT_PATHS } from '../../dataplane/logging.js';
import { TestCa, type TlsDir } from '../helpers/tls.js';
import { Client, KEY, longPacket, server, shortPacket, snapshot, TaggingBackend, waitFor } from '../dataplane/helpers.js';
import { FakeOperator, freeUdpPort } from './fake-operator.js';

const KEY2 = Buffer.from('f0e1d2c3b4a5968778695a4b3c2d1e0f', 'hex');
const cfg = (key: Buffer) => makeConfig({ configId: 0, serverIdLength: 2, nonceLength: 6, key });
const cid = (sidHex: string, key = KEY) => new CidEncoder(cfg(key), Buffer.from(sidHex, 'hex')).next();

let ca: TestCa;
let serverTls: TlsDir;
let clientTls: TlsDir;
let op: FakeOperator;
let agent: AgentHandle;
let a: TaggingBackend, b: TaggingBackend, c: TaggingBackend;
let client: Client;
const logLines: string[] = [];
let version = 0;

function lb(name: string, port: number, servers: SnapshotServer[], extra: Partial<DataplaneSnapshot> = {}, key = KEY): DataplaneSnapshot {
  return snapshot(servers, { name, listen: [{ host: '127.0.0.1', port, family: 4 }], configs: [{ config: cfg(key), state: 'active' }], ...extra });
}
const srv = (name: string, sid: string, backend: TaggingBackend, extra: Partial<SnapshotServer> = {}) => server(name, sid, '127.0.0.1', backend.port, extra);

async function pushAndWait(lbs: DataplaneSnapshot[]): Promise<{ version: number; nonce: string; ok: boolean }> {
  const v = ++version;
  const nonce = op.push(v, lbs);
  const ok = await waitFor(() => op.acks().some((x) => x.nonce === nonce) || op.nacks().some((x) => x.nonce === nonce), 10_000);
  if (!ok) throw new Error(`no answer to version ${v}`);
  return { version: v, nonce, ok: op.acks().some((x) => x.nonce === nonce) };
}

function metricValue(text: string, name: string, labels: Record<string, string>): number {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && want.every((w) => l.includes(w)));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

function plainValue(text: string, name: string): number {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`no ${name} in /metrics`);
  return Number(m[1]);
}

let alphaPort: number;
let betaPort: number;

beforeAll(async () => {
  ca = new TestCa();
  serverTls = ca.issue({ cn: 'quiclb-operator', usage: 'server' });
  clientTls = ca.issue({ cn: 'node-a', usage: 'client' });
  op = await FakeOperator.start(serverTls.dir);
  [a, b, c] = await Promise.all(['a', 'b', 'c'].map((n) => TaggingBackend.start(n)));
  client = await Client.open();
  alphaPort = await freeUdpPort();
  betaPort = await freeUdpPort();
  const logger = pino({ level: 'debug', redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, { write: (s: string) => void logLines.push(s) });
  agent = await runAgent({
    operator: `localhost:${op.port}`,
    tlsDir: clientTls.dir,
    nodeName: 'node-x',
    podName: 'quiclb-dataplane-abcde',
    metricsPort: 0,
    metricsAddress: '127.0.0.1',
    logger,
    reportIntervalMs: 200,
    healthReportIntervalMs: 50,
    backoff: { initialMs: 50, maxMs: 300 },
  });
});

afterAll(async () => {
  await agent?.stop();
  op?.stop();
  await client?.close();
  for (const x of [a, b, c]) await x?.close();
  ca?.remove();
});

describe('quiclb dataplane agent (in-process, real mTLS gRPC)', () => {
  it('says hello, is not ready before the first snapshot, then ACKs it and forwards by CID', async () => {
    expect(await waitFor(() => op.streams.some((s) => s.hello !== null), 10_000)).toBe(true);
    const hello = op.streams[0].hello!;
    expect(op.streams[0].peer).toBe('node-a');
    expect(hello).toMatchObject({ nodeName: 'node-x', podName: 'quiclb-dataplane-abcde', softwareVersion: '0.1.0', currentVersion: 0n });
    expect(hello.capabilities).toEqual(expect.arrayContaining(['health-reports', 'counters']));
    expect(hello.processStartTime!.getTime()).toBeLessThanOrEqual(Date.now());
    expect(agent.readiness().ready).toBe(false);
    expect(agent.readiness().detail[0]).toMatch(/no snapshot yet/);

    const r = await pushAndWait([lb('alpha', alphaPort, [srv('a', '0001', a), srv('b', '0002', b)])]);
    expect(r.ok).toBe(true);
    expect(op.acks().at(-1)).toEqual({ version: BigInt(r.version), nonce: r.nonce });
    expect(await client.request(shortPacket(cid('0002')), alphaPort)).toBe('b');
    expect(await client.request(shortPacket(cid('0001')), alphaPort)).toBe('a');
    expect(agent.readiness().ready).toBe(true);
    expect(agent.versionInForce()).toBe(r.version);
  });

  it('NACKs an invalid snapshot with the wire field path and keeps forwarding with the last good one', async () => {
    const before = agent.versionInForce();
    const dup = await pushAndWait([lb('alpha', alphaPort, [srv('a', '0001', a), srv('b', '0001', c)])]);
    expect(dup.ok).toBe(false);
    const nack = op.nacks().at(-1)!;
    expect(nack).toMatchObject({ version: BigInt(dup.version), nonce: dup.nonce, field: 'load_balancers[0].servers[1].server_id' });
    expect(nack.message).toMatch(/also the server ID of servers\[0\]/);
    // A key of the wrong length: named, and its bytes appear nowhere.
    const wire = snapshotToWire(++version, 'bad-key', [lb('alpha', alphaPort, [srv('a', '0001', a)])]);
    wire.loadBalancers[0].configs[0].key = Buffer.from(KEY.subarray(0, 5));
    op.pushWire(wire);
    expect(await waitFor(() => op.nacks().some((n) => n.nonce === 'bad-key'), 10_000)).toBe(true);
    const keyNack = op.nacks().find((n) => n.nonce === 'bad-key')!;
    expect(keyNack.field).toBe('load_balancers[0].configs[0].key');
    expect(keyNack.message).not.toContain(KEY.subarray(0, 5).toString('hex'));
    expect(agent.versionInForce()).toBe(before);
    expect(await client.request(shortPacket(cid('0002')), alphaPort)).toBe('b');
    expect(agent.readiness().detail.join('\n')).toMatch(/last rejected snapshot: version \d+: load_balancers\[0\]\.configs\[0\]\.key/);
  });

  it('all or nothing: a listen port that cannot be bound NACKs naming it, and the other load balancer\'s change is rolled back', async () => {
    const squatter = createSocket('udp4');
    squatter.bind(betaPort, '127.0.0.1');
    await once(squatter, 'listening');
    try {
      // alpha moves b to c, beta (new) cannot bind: the whole snapshot is rejected. beta is tried first, so the
      // running alpha is never touched (no apply, no rollback).
      const applied = () => logLines.filter((l) => l.includes('"msg":"config applied"') && l.includes('"lb":"alpha"')).length;
      const before = applied();
      const r = await pushAndWait([lb('alpha', alphaPort, [srv('a', '0001', a), srv('b', '0002', c)]), lb('beta', betaPort, [srv('a', '0001', a)], {}, KEY2)]);
      expect(r.ok).toBe(false);
      expect(applied()).toBe(before);
      const nack = op.nacks().at(-1)!;
      expect(nack.field).toBe('load_balancers[1].listen[0]');
      expect(nack.message).toMatch(/cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE/);
      expect(await client.request(shortPacket(cid('0002')), alphaPort)).toBe('b');
      expect(agent.addresses('beta')).toEqual([]);
      expect(agent.loadBalancers.list().map((l) => l.name)).toEqual(['alpha']);
    } finally {
      await new Promise<void>((r) => squatter.close(() => r()));
    }
  });

  it('a snapshot that moves a server: its traffic follows (flows kept for the others)', async () => {
    const r = await pushAndWait([lb('alpha', alphaPort, [srv('a', '0001', a), srv('b', '0002', c)])]);
    expect(r.ok).toBe(true);
    expect(await client.request(shortPacket(cid('0002')), alphaPort)).toBe('c');
    expect(await client.request(shortPacket(cid('0001')), alphaPort)).toBe('a');
  });

  it('two load balancers at once; a load balancer removed from the snapshot closes its port', async () => {
    const r = await pushAndWait([lb('alpha', alphaPort, [srv('a', '0001', a), srv('b', '0002', c)]), lb('beta', betaPort, [srv('x', '0009', b)], {}, KEY2)]);
    expect(r.ok).toBe(true);
    expect(await client.request(shortPacket(cid('0009', KEY2)), betaPort)).toBe('b');
    expect(await client.request(shortPacket(cid('0001')), alphaPort)).toBe('a');
    const gone = await pushAndWait([lb('beta', betaPort, [srv('x', '0009', b)], {}, KEY2)]);
    expect(gone.ok).toBe(true);
    expect(await client.request(shortPacket(cid('0001')), alphaPort, '127.0.0.1', 300)).toBeNull();
    // The port is free again: an exclusive bind succeeds.
    const probe = createSocket('udp4');
    probe.bind({ port: alphaPort, address: '127.0.0.1', exclusive: true });
    await once(probe, 'listening');
    await new Promise<void>((res) => probe.close(() => res()));
    expect(await client.request(shortPacket(cid('0009', KEY2)), betaPort)).toBe('b');
  });

  it('a listen port moves between load balancers in one snapshot; an empty snapshot closes every port', async () => {
    // beta removed, gamma (new) takes its port.
    let r = await pushAndWait([lb('gamma', betaPort, [srv('g', '0003', a)])]);
    expect(r.ok).toBe(true);
    expect(await client.request(shortPacket(cid('0003')), betaPort)).toBe('a');
    // gamma (existing) moves to alphaPort and gives betaPort to delta (new).
    r = await pushAndWait([lb('gamma', alphaPort, [srv('g', '0003', a)]), lb('delta', betaPort, [srv('d', '0004', c)], {}, KEY2)]);
    expect(r.ok).toBe(true);
    expect(await client.request(shortPacket(cid('0003')), alphaPort)).toBe('a');
    expect(await client.request(shortPacket(cid('0004', KEY2)), betaPort)).toBe('c');
    r = await pushAndWait([]);
    expect(r.ok).toBe(true);
    expect(agent.loadBalancers.list()).toEqual([]);
    expect(await client.request(shortPacket(cid('0003')), alphaPort, '127.0.0.1', 200)).toBeNull();
    expect(await client.request(shortPacket(cid('0004', KEY2)), betaPort, '127.0.0.1', 200)).toBeNull();
    expect(agent.readiness().ready).toBe(true);
  });

  it('retained: a load balancer the operator retains keeps running untouched, the others are applied, the ACK covers both; a retained name not served is left out (logged once)', async () => {
    expect(op.streams[0].hello!.capabilities).toContain(RETAINED_CAPABILITY);
    let r = await pushAndWait([lb('alpha', alphaPort, [srv('a', '0001', a)]), lb('beta', betaPort, [srv('x', '0009', b)], {}, KEY2)]);
    expect(r.ok).toBe(true);
    const alpha = agent.loadBalancers.get('alpha')!;
    const { snapshot: before, engine } = alpha;
    let applies = 0;
    const apply = engine.apply.bind(engine);
    engine.apply = (s) => {
      applies++;
      return apply(s);
    };
    const retaining = async (lbs: DataplaneSnapshot[], retained: string[]) => {
      const v = ++version;
      const nonce = op.pushWire(snapshotToWire(v, `retain-${v}`, lbs, new Date(), retained));
      expect(await waitFor(() => op.acks().some((x) => x.nonce === nonce) || op.nacks().some((x) => x.nonce === nonce), 10_000)).toBe(true);
      return { version: v, ack: op.acks().some((x) => x.nonce === nonce), nack: op.nacks().find((x) => x.nonce === nonce) };
    };
    const r1 = await retaining([lb('beta', betaPort, [srv('y', '0009', c)], {}, KEY2)], ['alpha', 'ghost']);
    expect(r1.ack).toBe(true);
    expect(agent.versionInForce()).toBe(r1.version);
    expect(agent.loadBalancers.get('alpha')).toBe(alpha);
    expect(alpha.engine).toBe(engine);
    expect(alpha.snapshot).toBe(before);
    expect(applies).toBe(0);
    expect(agent.loadBalancers.list().map((l) => l.name).sort()).toEqual(['alpha', 'beta']);
    expect(await client.request(shortPacket(cid('0001')), alphaPort)).toBe('a');
    expect(await client.request(shortPacket(cid('0009', KEY2)), betaPort)).toBe('c');
    const ghostLines = () => logLines.filter((l) => l.includes('does not serve') && l.includes('"ghost"')).length;
    expect(ghostLines()).toBe(1);
    // Retained again (beta changes): still untouched, the missing one not logged again.
    const r2 = await retaining([lb('beta', betaPort, [srv('y', '0009', c, { weight: 5 })], {}, KEY2)], ['alpha', 'ghost']);
    expect(r2.ack).toBe(true);
    expect(applies).toBe(0);
    expect(ghostLines()).toBe(1);
    expect(await client.request(shortPacket(cid('0001')), alphaPort)).toBe('a');
    // Its content arrives: applied as usual.
    r = await pushAndWait([lb('alpha', alphaPort, [srv('a', '0001', a), srv('b', '0002', b)]), lb('beta', betaPort, [srv('y', '0009', c)], {}, KEY2)]);
    expect(r.ok).toBe(true);
    expect(applies).toBe(1);
    expect(await client.request(shortPacket(cid('0002')), alphaPort)).toBe('b');
  });

  it('retained: NACKs a retained name also sent, and a new load balancer on a retained one\'s port, by wire path; the snapshot in force stays', async () => {
    const before = agent.versionInForce();
    let v = ++version;
    let nonce = op.pushWire(snapshotToWire(v, `dup-${v}`, [lb('beta', betaPort, [srv('y', '0009', c)], {}, KEY2)], new Date(), ['alpha', 'beta']));
    expect(await waitFor(() => op.nacks().some((x) => x.nonce === nonce), 10_000)).toBe(true);
    expect(op.nacks().find((x) => x.nonce === nonce)).toMatchObject({ field: 'retained[1]', message: expect.stringMatching(/"beta" is also the name of load_balancers\[0\]/) });
    v = ++version;
    nonce = op.pushWire(snapshotToWire(v, `clash-${v}`, [lb('gamma', alphaPort, [srv('g', '0003', a)])], new Date(), ['alpha']));
    expect(await waitFor(() => op.nacks().some((x) => x.nonce === nonce), 10_000)).toBe(true);
    expect(op.nacks().find((x) => x.nonce === nonce)).toMatchObject({ field: 'load_balancers[0].listen[0]', message: expect.stringMatching(/also a listen address of "alpha"/) });
    expect(agent.versionInForce()).toBe(before);
    expect(await client.request(shortPacket(cid('0002')), alphaPort)).toBe('b');
    expect(await client.request(shortPacket(cid('0009', KEY2)), betaPort)).toBe('c');
    expect((await pushAndWait([])).ok).toBe(true);
  });

  it('counters on the stream are the numbers of /metrics; health reports list every server, then the changes', async () => {
    const health = { enabled: true, intervalMs: 100, timeoutMs: 80, failuresThreshold: 2, successesThreshold: 1 };
    const r = await pushAndWait([lb('beta', betaPort, [srv('x', '0009', b), srv('y', '0008', c)], { health }, KEY2)]);
    expect(r.ok).toBe(true);
    for (let i = 0; i < 20; i++) client.send(shortPacket(cid('0009', KEY2)), betaPort);
    client.send(Buffer.from([0xc0, 0, 0, 0, 1]), betaPort); // a long header cut short: dropped
    for (let i = 0; i < 5; i++) client.send(longPacket(randomBytes(8), randomBytes(8)), betaPort); // fallback
    await waitFor(() => false, 300);
    const quietSince = Date.now();
    const stream = op.open()[0];
    expect(await waitFor(() => stream.counters.some((x) => x.time!.getTime() > quietSince + 50), 5000)).toBe(true);
    const report = stream.counters.filter((x) => x.time!.getTime() > quietSince + 50).at(-1)!;
    const text = await agent.metrics();
    const beta = report.loadBalancers.find((x) => x.loadBalancer === 'beta')!;
    expect(report.loadBalancers.map((x) => x.loadBalancer)).toEqual(['beta']);
    expect(Number(beta.receivedPackets)).toBe(metricValue(text, 'quiclb_received_packets_total', { lb: 'beta' }));
    expect(Number(beta.receivedBytes)).toBe(metricValue(text, 'quiclb_received_bytes_total', { lb: 'beta' }));
    expect(Number(beta.liveFlows)).toBe(metricValue(text, 'quiclb_flows', { lb: 'beta' }));
    expect(Number(beta.receivedPackets)).toBeGreaterThanOrEqual(26);
    const cidTraffic = beta.traffic.find((t) => t.outcome === RoutingOutcome.ROUTING_OUTCOME_CID && t.configId === 0)!;
    expect(Number(cidTraffic.packets)).toBe(metricValue(text, 'quiclb_packets_total', { lb: 'beta', outcome: 'cid', config_id: '0' }));
    expect(Number(cidTraffic.bytes)).toBe(metricValue(text, 'quiclb_bytes_total', { lb: 'beta', outcome: 'cid', config_id: '0' }));
    const fb = beta.traffic.find((t) => t.outcome === RoutingOutcome.ROUTING_OUTCOME_FALLBACK)!;
    expect(fb.configId).toBeUndefined();
    expect(Number(fb.packets)).toBe(metricValue(text, 'quiclb_packets_total', { lb: 'beta', outcome: 'fallback', config_id: 'none' }));
    expect(Number(fb.packets)).toBeGreaterThanOrEqual(1); // the first Initial; the others hit the 4-tuple table
    expect(beta.drops.map((d) => d.reason)).toContain('truncated');
    for (const d of beta.drops) {
      expect(Number(d.packets)).toBe(metricValue(text, 'quiclb_dropped_packets_total', { lb: 'beta', reason: d.reason }));
      expect(Number(d.bytes)).toBe(metricValue(text, 'quiclb_dropped_bytes_total', { lb: 'beta', reason: d.reason }));
    }

    // Health: both healthy after the first probes; then c stops answering and is reported unhealthy.
    const healthOf = (server: string) => stream.health.flatMap((h) => h.backends).filter((x) => x.loadBalancer === 'beta' && x.server === server);
    expect(await waitFor(() => ['x', 'y'].every((s) => healthOf(s).some((h) => h.state === HealthVerdict.HEALTH_VERDICT_HEALTHY)), 5000)).toBe(true);
    const ok = healthOf('y').find((h) => h.state === HealthVerdict.HEALTH_VERDICT_HEALTHY)!;
    expect(ok).toMatchObject({ lastResult: ProbeResult.PROBE_RESULT_SUCCESS, consecutiveFailures: 0, lastError: '' });
    expect(ok.lastProbeTime).toBeInstanceOf(Date);
    expect(ok.lastRtt).toBeDefined();
    c.answerProbes = false;
    try {
      expect(await waitFor(() => healthOf('y').some((h) => h.state === HealthVerdict.HEALTH_VERDICT_UNHEALTHY), 5000)).toBe(true);
      const bad = healthOf('y').find((h) => h.state === HealthVerdict.HEALTH_VERDICT_UNHEALTHY)!;
      expect(bad).toMatchObject({ lastResult: ProbeResult.PROBE_RESULT_FAILURE, lastError: 'timeout' });
      expect(bad.consecutiveFailures).toBeGreaterThanOrEqual(2);
      // Only changes after the first report: x (healthy all along) is not repeated in every report.
      const reportsWithX = stream.health.filter((h) => h.backends.some((x) => x.server === 'x')).length;
      expect(reportsWithX).toBeLessThan(stream.health.length);
    } finally {
      c.answerProbes = true;
    }
  });

  it('connected: the fallback pool follows the verdict, even against local probes; disconnected: local probes act', async () => {
    const health = { enabled: true, intervalMs: 100, timeoutMs: 80, failuresThreshold: 2, successesThreshold: 1 };
    // x: local probes healthy, verdict unhealthy. y: local probes fail, verdict healthy.
    c.answerProbes = false;
    const r = await pushAndWait([
      lb('beta', betaPort, [srv('x', '0009', b, { verdict: 'unhealthy' }), srv('y', '0008', c, { verdict: 'healthy' })], { health }, KEY2),
    ]);
    expect(r.ok).toBe(true);
    const dp = (agent.loadBalancers.get('beta')!.engine as InProcessEngine).dataplane;
    const pool = () => dp.router.poolMembers().map((s) => s.name);
    // Wait until the local probes have made up their minds (y unhealthy, x healthy) while connected.
    const checker = agent.loadBalancers.get('beta')!.checker;
    expect(await waitFor(() => checker.states().get('y') === 'unhealthy' && checker.states().get('x') === 'healthy', 5000)).toBe(true);
    expect(pool()).toEqual(['y']);
    // New connections (unroutable Initials: the fallback) all go to y.
    const answers = await Promise.all(Array.from({ length: 8 }, async () => {
      const cl = await Client.open();
      try {
        return await cl.request(longPacket(randomBytes(8), randomBytes(8)), betaPort);
      } finally {
        await cl.close();
      }
    }));
    expect(new Set(answers)).toEqual(new Set(['c']));
    let text = await agent.metrics();
    expect(metricValue(text, 'quiclb_backend_accepting', { lb: 'beta', server: 'x' })).toBe(0);
    expect(plainValue(text, 'quiclb_operator_connected')).toBe(1);

    // The operator goes away: local probes rule (x in, y out); forwarding goes on.
    op.stop();
    expect(await waitFor(() => !agent.operator.connected, 5000)).toBe(true);
    expect(pool()).toEqual(['x']);
    expect(await client.request(longPacket(randomBytes(8), randomBytes(8)), betaPort)).toBe('b');
    expect(await waitFor(() => agent.operator.attempts >= 2, 5000)).toBe(true);
    text = await agent.metrics();
    expect(plainValue(text, 'quiclb_operator_connected')).toBe(0);
    expect(plainValue(text, 'quiclb_operator_disconnected_seconds')).toBeGreaterThan(0);
    expect(plainValue(text, 'quiclb_operator_connect_attempts_total')).toBeGreaterThanOrEqual(2);
    expect(agent.readiness().ready).toBe(true);
    expect(agent.readiness().detail.join('\n')).toMatch(/operator localhost:\d+: unreachable for \d+s \(last contact/);

    // It comes back (same port): connected, but until it sends a snapshot the verdicts in force may be stale, so
    // local probes still rule; with the snapshot (the same one), the verdicts rule again.
    const port = op.port;
    const latest = op.latest!;
    op = await FakeOperator.start(serverTls.dir, port);
    expect(await waitFor(() => agent.operator.connected, 10_000)).toBe(true);
    await new Promise((r) => setTimeout(r, 300)); // health checks keep running meanwhile
    expect(pool()).toEqual(['x']);
    op.pushWire(latest);
    expect(await waitFor(() => agent.operator.connected && op.acks().length > 0, 10_000)).toBe(true);
    expect(op.streams[0].hello!.currentVersion).toBe(BigInt(r.version));
    expect(pool()).toEqual(['y']);

    // A snapshot that only retains beta (the operator could not reconcile it): its verdicts are as old as it is,
    // so local probes rule for it (x in, y out); described again, its verdicts rule again.
    const acked = op.acks().length;
    op.pushWire(snapshotToWire(r.version + 100, 'retain-beta', [], new Date(), ['beta']));
    expect(await waitFor(() => op.acks().length > acked, 10_000)).toBe(true);
    expect((agent.loadBalancers.get('beta')!.engine as InProcessEngine).dataplane).toBe(dp);
    expect(pool()).toEqual(['x']);
    op.pushWire(snapshotToWire(r.version + 101, 'describe-beta', [
      lb('beta', betaPort, [srv('x', '0009', b, { verdict: 'unhealthy' }), srv('y', '0008', c, { verdict: 'healthy' })], { health }, KEY2),
    ], new Date()));
    expect(await waitFor(() => op.acks().length > acked + 1, 10_000)).toBe(true);
    expect(pool()).toEqual(['y']);
    c.answerProbes = true;
  });

  it('debug-level logs of the run hold no key bytes (hex or base64)', () => {
    expect(logLines.length).toBeGreaterThan(20);
    expect(logLines.some((l) => /"level":20/.test(l))).toBe(true);
    const all = logLines.join('');
    for (const k of [KEY, KEY2]) {
      for (const form of [k.toString('hex'), k.toString('hex').toUpperCase(), k.toString('base64'), k.toString('base64url')]) expect(all).not.toContain(form);
    }
  });
});
