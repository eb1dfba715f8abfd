/**
 * `quiclb dataplane` as a real process (spawned from source) against a DistributionService server over mTLS on
 * loopback, with real UDP traffic: the operator killed mid-traffic (no datagram of an established flow lost) and
 * restarted (reconnect, convergence to the newest version), the data-plane process killed and restarted (with the
 * operator: convergence; without it: forwarding at once from --state-dir), no snapshot without a state dir (not
 * ready), a corrupt state file (reported, ignored), --workers 2, stable upstream ports across a SIGKILL (--state-dir,
 * 1 and 2 workers), and no key bytes in any debug log line.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CidEncoder } from '../../lib/index.js';
import { makeConfig } from '../../lib/quiclb/config.js';
import type { DataplaneSnapshot, SnapshotServer } from '../../lib/config/snapshot.js';
import { runCli, spawnNode, waitLine, type CliProc } from '../helpers/run-cli.js';
import { TestCa, type TlsDir } from '../helpers/tls.js';
import { Client, KEY, server, shortPacket, snapshot, TaggingBackend, waitFor } from '../dataplane/helpers.js';
import { FakeOperator, freeUdpPort } from './fake-operator.js';

const KEY3 = Buffer.from('a1b2c3d4e5f60718293a4b5c6d7e8f90', 'hex');
const cfg = (key: Buffer) => makeConfig({ configId: 0, serverIdLength: 2, nonceLength: 6, key });
const cid = (sidHex: string, key = KEY) => new CidEncoder(cfg(key), Buffer.from(sidHex, 'hex')).next();

type Proc = CliProc;
const procs: Proc[] = [];
const allLines: string[] = [];

function startAgent(args: string[]): Proc {
  const p = spawnNode(['--import', 'tsx', 'cli/main.ts', 'dataplane', '--log-level', 'debug', '--metrics-port', '0', '--metrics-address', '127.0.0.1', ...args], {
    env: { NODE_NAME: 'node-proc' },
    onOutput: (text) => allLines.push(...text),
  });
  procs.push(p);
  return p;
}

async function kill(p: Proc, signal: NodeJS.Signals = 'SIGKILL'): Promise<number | null> {
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill(signal);
  return p.exit;
}

async function monitoringPort(p: Proc): Promise<number> {
  const line = await waitLine(p, /monitoring: \/metrics/);
  return Number(/"address":"127\.0\.0\.1:(\d+)"/.exec(line)![1]);
}

async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: r.status, body: await r.text() };
}

function plainValue(text: string, name: string): number {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`no ${name} in /metrics`);
  return Number(m[1]);
}

function metricValue(text: string, name: string, labels: Record<string, string>): number {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && want.every((w) => l.includes(w)));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

let ca: TestCa;
let serverTls: TlsDir;
let clientTls: TlsDir;
let backends: TaggingBackend[];
let dir: string;
const clients: Client[] = [];
const operators: FakeOperator[] = [];

function lb(name: string, port: number, servers: SnapshotServer[], key = KEY): DataplaneSnapshot {
  return snapshot(servers, { name, listen: [{ host: '127.0.0.1', port, family: 4 }], configs: [{ config: cfg(key), state: 'active' }] });
}
const srv = (name: string, sid: string, b: TaggingBackend) => server(name, sid, '127.0.0.1', b.port);

async function operator(port = 0): Promise<FakeOperator> {
  const op = await FakeOperator.start(serverTls.dir, port);
  operators.push(op);
  return op;
}

async function client(): Promise<Client> {
  const c = await Client.open();
  clients.push(c);
  return c;
}

/** Sends until a reply comes (or the time is up); resolves the ms it took, or -1. */
async function firstReply(c: Client, sid: string, port: number, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if ((await c.request(shortPacket(cid(sid)), port, '127.0.0.1', 50)) !== null) return Date.now() - t0;
  }
  return -1;
}

beforeAll(async () => {
  ca = new TestCa();
  serverTls = ca.issue({ cn: 'quiclb-operator', usage: 'server' });
  clientTls = ca.issue({ cn: 'node-proc', usage: 'client' });
  backends = await Promise.all(['a', 'b', 'c'].map((n) => TaggingBackend.start(n)));
  dir = mkdtempSync(join(tmpdir(), 'quiclb-agent-'));
});

afterAll(async () => {
  for (const p of procs) await kill(p);
  for (const op of operators) op.stop();
  for (const c of clients) await c.close();
  for (const b of backends ?? []) await b.close();
  ca?.remove();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('quiclb dataplane (real processes)', () => {
  it('--help lists every option; bad usage exits 2 with a precise message', () => {
    const help = runCli(['dataplane', '--help']);
    expect(help.status).toBe(0);
    for (const o of ['--operator', '--tls-dir', '--server-name', '--state-dir', '--node-name', '--pod-name', '--metrics-port', '--metrics-address', '--workers', '--report-interval', '--log-level']) {
      expect(help.stdout).toContain(o);
    }
    expect(runCli(['--help']).stdout).toMatch(/dataplane +run this node's data plane/);
    const cases: [string[], RegExp][] = [
      [[], /--operator HOST:PORT is required/],
      [['--operator', 'nohost'], /--operator: expected HOST:PORT/],
      [['--operator', 'localhost:1'], /--tls-dir DIR is required/],
      [['--operator', 'localhost:1', '--tls-dir', '/nonexistent', '--workers', '0'], /--workers: must be 1\.\.256/],
      [['--operator', 'localhost:1', '--tls-dir', '/nonexistent'], /TLS directory \/nonexistent: CA certificate \/nonexistent\/ca\.crt is missing/],
    ];
    for (const [args, re] of cases) {
      const r = runCli(['dataplane', ...args]);
      expect({ args, status: r.status }).toEqual({ args, status: 2 });
      expect(r.stderr).toMatch(re);
    }
  });

  let op: FakeOperator;
  let alphaPort: number;
  const stateDir = () => join(dir, 'state');

  it('the operator killed mid-traffic: zero lost datagrams; restarted: the data plane reconnects and converges to the newest version', async () => {
    const [a, b, c] = backends;
    op = await operator();
    alphaPort = await freeUdpPort();
    op.push(1, [lb('alpha', alphaPort, [srv('a', '0001', a), srv('b', '0002', b)])]);
    const agent = startAgent(['--operator', `localhost:${op.port}`, '--tls-dir', clientTls.dir, '--state-dir', stateDir(), '--report-interval', '0.5']);
    expect(await waitFor(() => op.acks().some((x) => x.version === 1n), 20_000)).toBe(true);
    expect(op.streams[0].hello).toMatchObject({ nodeName: 'node-proc', currentVersion: 0n });
    const mport = await monitoringPort(agent);
    expect((await get(mport, '/readyz')).status).toBe(200);
    expect(statSync(join(stateDir(), 'snapshot.pb')).mode & 0o777).toBe(0o600);

    // An established flow: one client, CID of server a, a datagram every 2 ms for 3 s; the operator dies after 1 s.
    const cl = await client();
    const sent = new Set<string>();
    const t0 = Date.now();
    let killedAt = 0;
    while (Date.now() - t0 < 3000) {
      const tag = Buffer.alloc(8);
      tag.writeUInt32BE(sent.size, 4);
      sent.add(tag.toString('hex'));
      cl.send(shortPacket(cid('0001'), { tag }), alphaPort);
      if (killedAt === 0 && Date.now() - t0 > 1000) {
        op.stop();
        killedAt = Date.now();
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    await waitFor(() => cl.replies.length >= sent.size, 2000);
    const replied = new Set(cl.replies.filter((r) => r.startsWith('a|')).map((r) => r.slice(2)));
    const lost = [...sent].filter((t) => !replied.has(t)).length;
    process.stdout.write(`operator killed mid-traffic: ${sent.size} datagrams sent, ${replied.size} replies, ${lost} lost\n`);
    expect(sent.size).toBeGreaterThan(300);
    expect(lost).toBe(0);

    // The gap shows in /metrics and /readyz (still ready: forwarding goes on).
    const metrics = (await get(mport, '/metrics')).body;
    expect(plainValue(metrics, 'quiclb_operator_connected')).toBe(0);
    expect(plainValue(metrics, 'quiclb_operator_disconnected_seconds')).toBeGreaterThan(0);
    expect(metricValue(metrics, 'quiclb_operator_snapshots_total', { result: 'applied' })).toBe(1);
    const ready = await get(mport, '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body).toMatch(/operator localhost:\d+: unreachable for \d+s/);

    // Back on the same port with a newer version (b moved to c): reconnect, Hello names version 1, ACK of 3.
    const port = op.port;
    op = await operator(port);
    op.push(3, [lb('alpha', alphaPort, [srv('a', '0001', a), srv('b', '0002', c)])]);
    const t1 = Date.now();
    expect(await waitFor(() => op.acks().some((x) => x.version === 3n), 40_000)).toBe(true);
    process.stdout.write(`operator restarted: converged to version 3 in ${Date.now() - t1} ms\n`);
    expect(op.streams.find((s) => s.hello)!.hello!.currentVersion).toBe(1n);
    expect(await cl.request(shortPacket(cid('0002')), alphaPort)).toBe('c');
    expect(plainValue((await get(mport, '/metrics')).body, 'quiclb_operator_connected')).toBe(1);
    await kill(agent);
  });

  it('the data-plane process killed and restarted: converges within a few seconds', async () => {
    const [a, , c] = backends;
    const agent = startAgent(['--operator', `localhost:${op.port}`, '--tls-dir', clientTls.dir, '--state-dir', stateDir()]);
    expect(await waitFor(() => op.streams.filter((s) => s.acks.length > 0).length >= 1 && op.open().length >= 1, 20_000)).toBe(true);
    op.push(4, [lb('alpha', alphaPort, [srv('a', '0001', a), srv('b', '0002', c)])]);
    expect(await waitFor(() => op.acks().some((x) => x.version === 4n), 20_000)).toBe(true);
    await kill(agent);
    const t0 = Date.now();
    const again = startAgent(['--operator', `localhost:${op.port}`, '--tls-dir', clientTls.dir, '--state-dir', stateDir()]);
    const before = op.streams.length;
    expect(await waitFor(() => op.streams.slice(before).some((s) => s.acks.some((x) => x.version === 4n)), 20_000)).toBe(true);
    const ms = Date.now() - t0;
    process.stdout.write(`data plane restarted (operator up): version 4 ACKed ${ms} ms after spawn\n`);
    expect(ms).toBeLessThan(10_000);
    expect(op.streams.slice(before).find((s) => s.hello)!.hello!.currentVersion).toBe(4n); // restored before the operator answered
    await kill(again);
  });

  it('--state-dir and no operator: a restarted data plane forwards at once from the saved snapshot', async () => {
    op.stop();
    const cl = await client();
    const t0 = Date.now();
    const agent = startAgent(['--operator', `localhost:${op.port}`, '--tls-dir', clientTls.dir, '--state-dir', stateDir()]);
    const ms = await firstReply(cl, '0002', alphaPort, 20_000);
    process.stdout.write(`data plane restarted (no operator): first datagram forwarded ${Date.now() - t0} ms after spawn\n`);
    expect(ms).toBeGreaterThanOrEqual(0);
    expect(await cl.request(shortPacket(cid('0002')), alphaPort)).toBe('c');
    await waitLine(agent, /forwarding with the saved snapshot/);
    const mport = await monitoringPort(agent);
    const ready = await get(mport, '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body).toMatch(/snapshot version 4 in force \(restored from .*snapshot\.pb\)/);
    expect(ready.body).toMatch(/unreachable/);
    expect(statSync(join(stateDir(), 'snapshot.pb')).mode & 0o777).toBe(0o600);
    const stop = await kill(agent, 'SIGTERM');
    expect(stop).toBe(0);
  });

  it('without --state-dir and no operator: not ready until a snapshot arrives', async () => {
    const agent = startAgent(['--operator', `localhost:${op.port}`, '--tls-dir', clientTls.dir]);
    const mport = await monitoringPort(agent);
    const ready = await get(mport, '/readyz');
    expect(ready.status).toBe(503);
    expect(ready.body).toMatch(/no snapshot yet: waiting for the operator at localhost:\d+/);
    expect((await get(mport, '/healthz')).status).toBe(200);
    await kill(agent);
  });

  it('a corrupt state file is reported and ignored (no crash, not ready)', async () => {
    const bad = join(dir, 'corrupt');
    rmSync(bad, { recursive: true, force: true });
    const { mkdirSync } = await import('node:fs');
    mkdirSync(bad);
    writeFileSync(join(bad, 'snapshot.pb'), Buffer.concat([Buffer.from('quiclb-snapshot/1\n'), Buffer.alloc(32, 7), Buffer.from('garbage')]));
    const agent = startAgent(['--operator', `localhost:${op.port}`, '--tls-dir', clientTls.dir, '--state-dir', bad]);
    await waitLine(agent, /checksum mismatch.*saved snapshot is unreadable/);
    const mport = await monitoringPort(agent);
    expect((await get(mport, '/readyz')).status).toBe(503);
    expect(metricValue((await get(mport, '/metrics')).body, 'quiclb_state_file_operations_total', { op: 'read', result: 'error' })).toBe(1);
    expect(agent.child.exitCode).toBeNull();
    await kill(agent);
  });

  it('--workers 2: one stream, the load balancer in two worker processes; counters on the stream match /metrics', async () => {
    const [a, b] = backends;
    const wop = await operator();
    const port = await freeUdpPort();
    wop.push(1, [lb('omega', port, [srv('a', '0001', a), srv('b', '0002', b)], KEY3)]);
    const agent = startAgent(['--operator', `localhost:${wop.port}`, '--tls-dir', clientTls.dir, '--workers', '2', '--report-interval', '0.3']);
    expect(await waitFor(() => wop.acks().some((x) => x.version === 1n), 40_000)).toBe(true);
    expect(wop.streams.length).toBe(1);
    const mport = await monitoringPort(agent);
    const cls = await Promise.all(Array.from({ length: 6 }, () => client()));
    for (const cl of cls) {
      expect(await cl.request(shortPacket(cid('0002', KEY3)), port, '127.0.0.1', 3000)).toBe('b');
      expect(await cl.request(shortPacket(cid('0001', KEY3)), port)).toBe('a');
    }
    const quietSince = Date.now();
    const stream = wop.streams[0];
    expect(await waitFor(() => stream.counters.some((x) => x.time!.getTime() > quietSince + 100), 10_000)).toBe(true);
    const report = stream.counters.filter((x) => x.time!.getTime() > quietSince + 100).at(-1)!;
    const text = (await get(mport, '/metrics')).body;
    const omega = report.loadBalancers.find((x) => x.loadBalancer === 'omega')!;
    expect(Number(omega.receivedPackets)).toBe(12);
    expect(Number(omega.receivedPackets)).toBe(metricValue(text, 'quiclb_received_packets_total', { lb: 'omega' }));
    expect(Number(omega.receivedBytes)).toBe(metricValue(text, 'quiclb_received_bytes_total', { lb: 'omega' }));
    expect(Number(omega.traffic[0].packets)).toBe(metricValue(text, 'quiclb_packets_total', { lb: 'omega', outcome: 'cid', config_id: '0' }));
    expect(text).toMatch(/quiclb_workers|quiclb_worker_received_packets_total\{lb="omega",worker="1"\}/);
    expect((await get(mport, '/readyz')).body).toMatch(/data-plane processes ready 2\/2/);
    expect(await kill(agent, 'SIGTERM')).toBe(0);
  });

  it.each([1, 2])('--state-dir, --workers %i: a data plane killed with SIGKILL and restarted reaches the backends from the same ports', async (workers) => {
    const [a, b] = backends;
    const sop = await operator();
    const port = await freeUdpPort();
    const state = join(dir, `stable-ports-${workers}`);
    sop.push(1, [lb('sigma', port, [srv('a', '0001', a), srv('b', '0002', b)])]);
    const args = ['--operator', `localhost:${sop.port}`, '--tls-dir', clientTls.dir, '--state-dir', state, '--workers', String(workers)];
    const cls = await Promise.all(Array.from({ length: 4 }, () => client()));
    /** client port -> the source port each backend saw for it */
    const seen = async (): Promise<Map<string, number>> => {
      const m = new Map<string, number>();
      for (const cl of cls) {
        for (const [sid, be] of [['0001', a], ['0002', b]] as const) {
          const before = be.received.length;
          expect(await firstReply(cl, sid, port, 20_000)).toBeGreaterThanOrEqual(0);
          m.set(`${cl.port}/${sid}`, be.received[before].port);
        }
      }
      return m;
    };
    let agent = startAgent(args);
    const first = await seen();
    expect(statSync(join(state, 'upstream-port-seed')).mode & 0o777).toBe(0o600);
    // worker processes report their metrics when asked: a scrape may show the previous answer
    const mport = await monitoringPort(agent);
    let choices = { hashed: 0, probed: 0, kernel: 0 };
    for (let i = 0; i < 20 && choices.hashed + choices.probed + choices.kernel !== 8; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 200));
      const text = (await get(mport, '/metrics')).body;
      choices = { hashed: 0, probed: 0, kernel: 0 };
      for (const c of ['hashed', 'probed', 'kernel'] as const) choices[c] = metricValue(text, 'quiclb_upstream_ports_total', { lb: 'sigma', choice: c });
    }
    expect(choices.hashed + choices.probed + choices.kernel).toBe(8);
    // Other tests run beside this one and hold ephemeral ports of the same range: a flow's own port may be taken by
    // one of them (then it is probed, and may come back on another port). One such flow is tolerated, not more.
    expect(choices.hashed).toBeGreaterThanOrEqual(7);
    await kill(agent);
    agent = startAgent(args);
    const again = await seen();
    expect([...again].filter(([flow, p]) => first.get(flow) === p).length).toBeGreaterThanOrEqual(7);
    await kill(agent);
    // another state directory: another seed, other ports (all 8 equal by chance: never)
    agent = startAgent(['--operator', `localhost:${sop.port}`, '--tls-dir', clientTls.dir, '--state-dir', `${state}-other`, '--workers', String(workers)]);
    const other = await seen();
    expect([...other.values()].filter((p, i) => p === [...first.values()][i]).length).toBeLessThan(8);
    await kill(agent);
  });

  it('no debug-level log line of these runs holds key bytes nor the upstream port seeds (hex or base64)', () => {
    expect(allLines.length).toBeGreaterThan(20);
    const all = allLines.join('\n');
    const seeds = ['stable-ports-1', 'stable-ports-1-other', 'stable-ports-2', 'stable-ports-2-other']
      .map((d) => join(dir, d, 'upstream-port-seed'))
      .filter((f) => existsSync(f))
      .map((f) => readFileSync(f));
    expect(seeds.length).toBe(4);
    for (const k of [KEY, KEY3, ...seeds]) {
      for (const form of [k.toString('hex'), k.toString('hex').toUpperCase(), k.toString('base64'), k.toString('base64url')]) expect(all).not.toContain(form);
    }
  });
});
