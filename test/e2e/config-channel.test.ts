/**
 * The config channel end to end, every component a real, separate process on loopback:
 *   config server : `quiclb config-server` serving two standalone YAML files over mTLS gRPC (/metrics, JSON log)
 *   data planes   : two `quiclb dataplane --operator` processes, each with its own client certificate (TestCa) and
 *                   --state-dir. Both get the same snapshot (the file source serves every load balancer to every
 *                   data plane) and two processes cannot bind one UDP port (no SO_REUSEPORT outside --workers), so
 *                   both load balancers listen on 127.0.0.1:0: each data plane binds its own ports, read from its
 *                   /readyz ("load balancer quic: listening on 127.0.0.1:P"), kept across re-applies.
 *   load balancer "quic" : three @matrixai/quic HTTP/3 backends minting encrypted QUIC-LB CIDs from the same YAML
 *                   (peers/matrixai-backend.ts), Debian ngtcp2 gtlsclient as the client (with active migration);
 *   load balancer "echo" : UDP echo backends (peers/tag-echo.ts) for steady datagram streams whose every reply says
 *                   which backend answered, so a single lost datagram is seen.
 * Scenarios (in order, one process set): snapshot -> ACK -> QUIC by CID through both data planes; a YAML edit that
 * moves, adds and removes servers (every data plane ACKs, new connections follow, an established one keeps working);
 * an invalid YAML (the config server keeps the last good one) and a snapshot the data planes reject (a listen port
 * held by another socket: NACK with the field at the config server, forwarding unchanged); the config server
 * SIGKILLed mid-traffic, edited and restarted (zero lost datagrams, both converge); a data plane SIGKILLed and
 * restarted from --state-dir while the config server is down (forwards at once, converges when it is back).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { copyFileSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CidEncoder, loadStandaloneConfig, makeConfig, toSnapshot } from '../../lib/index.js';
import { Router } from '../../dataplane/router.js';
import { TestCa, type TlsDir } from '../helpers/tls.js';
import { freeTcpPort, metricsDelta, parseMetrics, sumSamples, writeStandaloneYaml, type MetricsDelta, type StandaloneSpec } from './peers/dataplane.js';
import { startMatrixaiBackend, type BackendStats, type MatrixaiBackend } from './peers/matrixai.js';
import { ClientNat } from './peers/nat.js';
import { gtlsclientPath, gtlsDownload, sameFile, type DownloadResult } from './peers/ngtcp2.js';
import { expectNoProblems, makeCert, ProcGroup, sleep, type Proc } from './peers/proc.js';
import { freeUdpPort } from './peers/udp.js';

const BODY_BYTES = 4_000_000;
const DOWNLOAD_LIMIT_MS = 25_000;
/**
 * How long a data plane may take to come back to a restarted config server: its reconnect delay is drawn below a
 * ceiling that doubles per failed attempt (0.5 s .. 30 s cap) and is reset only by a stream that lived 30 s
 * (docs/dataplane-agent.md), so after outages a few seconds apart the ceiling can reach the cap.
 */
const RECONNECT_LIMIT_MS = 35_000;
const group = new ProcGroup('config-channel');
const bodyFile = join(group.dir, 'body.bin');
const quicYaml = join(group.dir, 'quic.yaml');
const echoYaml = join(group.dir, 'echo.yaml');
const quicKey = randomBytes(16);
const echoKey = randomBytes(16);
const ECHO_CONFIG_ID = 2;
const echoConfig = makeConfig({ configId: ECHO_CONFIG_ID, serverIdLength: 2, nonceLength: 6, key: echoKey });
const ECHO_SERVERS = [
  { id: 'e1', sid: '0e01' },
  { id: 'e2', sid: '0e02' },
];

let ca: TestCa;
let serverTls: TlsDir;
let grpcPort = 0;
let csMetricsPort = 0;
let cs: Proc;
const echoPorts: number[] = [];
/** The echo LB's second listen address in the scenario a data plane rejects (held by `holder`). */
let holder: Socket | null = null;

/** One `quiclb dataplane` process and what the test knows about it. */
interface DataPlane {
  identity: string;
  tls: TlsDir;
  stateDir: string;
  metricsPort: number;
  proc: Proc;
  /** Bound UDP ports of its load balancers (from /readyz). */
  quicPort: number;
  echoPort: number;
}
const dps: DataPlane[] = [];
/** Backends of the quic load balancer, by server name; `retired` ones left the YAML (still running, watched). */
const backends = new Map<string, MatrixaiBackend>();
const retired: MatrixaiBackend[] = [];

// ---- YAML ---------------------------------------------------------------------------------------------------

function quicSpec(servers: { id: string; port: number }[]): StandaloneSpec {
  return {
    name: 'quic',
    listen: ['127.0.0.1:0'],
    loadbalancer: {
      config_id: 1,
      server_id_length: 2,
      // @matrixai/quic parses short headers with a fixed 20-byte DCID: 1 + 2 + 17 = 20
      nonce_length: 17,
      encryption_key: quicKey.toString('base64'),
    },
    // server IDs derived from the names (SHA-256) by the config server and by each backend's generator alike
    servers: servers.map((s) => ({ id: s.id, address: `127.0.0.1:${s.port}` })),
    metricsPort: null,
  };
}

function echoSpec(weights: number[] = [100, 100], extraListen: string[] = []): StandaloneSpec {
  return {
    name: 'echo',
    listen: ['127.0.0.1:0', ...extraListen],
    loadbalancer: { config_id: ECHO_CONFIG_ID, server_id_length: 2, nonce_length: 6, encryption_key: echoKey.toString('base64') },
    servers: ECHO_SERVERS.map((s, i) => ({ id: s.id, address: `127.0.0.1:${echoPorts[i]}`, server_id: s.sid, weight: weights[i] })),
    metricsPort: null,
  };
}

/** The fallback choice of the quic load balancer of a YAML for client 127.0.0.1:port (the product's Router). */
function fallbackPredictor(yaml: string): (port: number) => string {
  const router = new Router(toSnapshot(loadStandaloneConfig(yaml), 1));
  return (port) => router.fallbackFor('127.0.0.1', port)!.name;
}

// ---- processes ----------------------------------------------------------------------------------------------

async function startConfigServer(): Promise<{ proc: Proc; listeningAt: number; version: number }> {
  const proc = group.spawnTs('config-server', 'cli/main.ts', [
    'config-server', '--listen', `127.0.0.1:${grpcPort}`, '--tls-dir', serverTls.dir,
    '--load-balancer', quicYaml, '--load-balancer', echoYaml, '--metrics-port', String(csMetricsPort), '--log-level', 'debug',
  ]);
  await proc.waitFor(/"msg":"config server listening"/, 30_000);
  const line = jsonLines(proc).find((l) => l.msg === 'config server listening')!;
  cs = proc;
  return { proc, listeningAt: Number(line.time), version: Number(line.version) };
}

function startDataPlane(dp: Pick<DataPlane, 'identity' | 'tls' | 'stateDir' | 'metricsPort'>): Proc {
  return group.spawnTs(dp.identity, 'cli/main.ts', [
    'dataplane', '--operator', `localhost:${grpcPort}`, '--tls-dir', dp.tls.dir, '--state-dir', dp.stateDir,
    '--node-name', dp.identity, '--metrics-port', String(dp.metricsPort), '--metrics-address', '127.0.0.1',
    '--report-interval', '1', '--log-level', 'debug',
  ]);
}

/** Waits until /readyz is 200 and lists both load balancers; returns their bound ports and the body. */
async function waitReady(dp: DataPlane, timeoutMs: number): Promise<{ quic: number; echo: number; body: string }> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    if (!dp.proc.running) throw new Error(`${dp.identity} exited:\n${dp.proc.tail()}`);
    try {
      const r = await fetch(`http://127.0.0.1:${dp.metricsPort}/readyz`);
      last = `${r.status} ${await r.text()}`;
      const quic = /load balancer quic: listening on 127\.0\.0\.1:(\d+)/.exec(last);
      const echo = /load balancer echo: listening on 127\.0\.0\.1:(\d+)/.exec(last);
      if (r.status === 200 && quic && echo) return { quic: Number(quic[1]), echo: Number(echo[1]), body: last };
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new Error(`${dp.identity}: not ready with both load balancers within ${timeoutMs} ms: ${last}\n${dp.proc.tail()}`);
    await sleep(50);
  }
}

async function readyz(dp: DataPlane): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${dp.metricsPort}/readyz`);
  return `${r.status} ${await r.text()}`;
}

async function dpMetrics(dp: DataPlane): Promise<Map<string, number>> {
  return parseMetrics(await (await fetch(`http://127.0.0.1:${dp.metricsPort}/metrics`)).text());
}

async function csMetrics(): Promise<Map<string, number>> {
  return parseMetrics(await (await fetch(`http://127.0.0.1:${csMetricsPort}/metrics`)).text());
}

type LogLine = Record<string, unknown> & { msg?: string; time?: number };

function jsonLines(p: Proc): LogLine[] {
  const out: LogLine[] = [];
  for (const line of p.text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as LogLine);
    } catch {
      /* a line cut by the 256 KiB tail */
    }
  }
  return out;
}

/**
 * The config server's log lines with message `msg` from data plane `identity` (any when omitted). Each data plane
 * here uses `identity` as its certificate CN and its node name, so the config server names it `identity@identity`.
 */
function csLines(msg: string, identity?: string): LogLine[] {
  return jsonLines(cs).filter((l) => l.msg === msg && (identity === undefined || l.identity === `${identity}@${identity}`));
}

/**
 * Waits until each of `which` ACKed `version` at the config server (its log; ACK lines logged at or after `since`).
 * Returns the time of each data plane's ACK (the config server's clock), in the order of `which`.
 */
async function waitAcked(version: number, timeoutMs: number, which: DataPlane[] = dps, since = 0): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const times = which.map((dp) => csLines('snapshot acknowledged', dp.identity).find((l) => Number(l.version) === version && Number(l.time) >= since)?.time);
    if (times.every((t) => t !== undefined)) return times.map(Number);
    if (Date.now() > deadline) {
      throw new Error(`not every data plane ACKed version ${version} within ${timeoutMs} ms (${which.map((d, i) => `${d.identity}: ${times[i] ?? 'no'}`).join(', ')}):\n` +
        `${csLines('snapshot acknowledged').map((l) => JSON.stringify(l)).join('\n')}\n${cs.tail(2000)}`);
    }
    await sleep(25);
  }
}

/** Waits until every data plane ACKed `version`; returns the time of the last ACK. */
async function waitAllAcked(version: number, timeoutMs: number): Promise<number> {
  return Math.max(...(await waitAcked(version, timeoutMs)));
}

/** "dp-a 1234 ms (3 connect attempts), dp-b ..." for ACK times measured from `from`. */
async function describeConvergence(times: number[], from: number): Promise<string> {
  const parts = await Promise.all(dps.map(async (dp, i) =>
    `${dp.identity} ${times[i] - from} ms (${sumSamples(await dpMetrics(dp), 'quiclb_operator_connect_attempts_total')} connect attempts since its start)`));
  return parts.join(', ');
}

/** The config server's current snapshot version (its /metrics). */
async function csVersion(): Promise<number> {
  return sumSamples(await csMetrics(), 'quiclb_config_server_snapshot_version');
}

/** Waits until the config server serves a version other than `previous` (a file reload); returns it. */
async function waitNewVersion(previous: number, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await csVersion();
    if (v !== previous) return v;
    if (Date.now() > deadline) throw new Error(`the config server still serves version ${previous} after ${timeoutMs} ms:\n${cs.tail(2000)}`);
    await sleep(25);
  }
}

// ---- echo streams (the "established flows" of the datagram checks) -------------------------------------------

const MAGIC = 0x4343;

interface StreamResult {
  target: string;
  sent: number;
  replied: number;
  lost: number;
  wrongBackend: number;
}

/**
 * A steady stream of short-header datagrams carrying one QUIC-LB CID of echo server `sid`, one every `intervalMs`,
 * to a data plane's echo port, until stop(); every datagram is numbered and must come back from that server.
 */
async function startEchoStream(dp: DataPlane, server = ECHO_SERVERS[0], intervalMs = 4): Promise<{ stop: () => Promise<StreamResult> }> {
  const port = dp.echoPort;
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const replies = new Map<number, string>();
  s.on('message', (msg) => {
    const nameLen = msg[msg.length - 1];
    const name = msg.subarray(msg.length - 1 - nameLen, msg.length - 1).toString();
    const orig = msg.subarray(0, msg.length - 1 - nameLen);
    if (orig.length < 8 || orig.readUInt16BE(orig.length - 6) !== MAGIC) return;
    replies.set(orig.readUInt32BE(orig.length - 4), name);
  });
  const cid = new CidEncoder(echoConfig, Buffer.from(server.sid, 'hex')).next();
  let seq = 0;
  const trailer = Buffer.alloc(6);
  const timer = setInterval(() => {
    trailer.writeUInt16BE(MAGIC, 0);
    trailer.writeUInt32BE(seq++, 2);
    s.send(Buffer.concat([Buffer.from([0x41]), cid, randomBytes(32), trailer]), port, '127.0.0.1');
  }, intervalMs);
  return {
    stop: async () => {
      clearInterval(timer);
      const deadline = Date.now() + 2000;
      while (replies.size < seq && Date.now() < deadline) await sleep(20);
      s.close();
      const wrong = [...replies.values()].filter((n) => n !== server.id).length;
      return { target: `${dp.identity} echo port ${port}`, sent: seq, replied: replies.size, lost: seq - replies.size, wrongBackend: wrong };
    },
  };
}

function expectStreams(results: StreamResult[], minSent: number): void {
  const problems: string[] = [];
  for (const r of results) {
    if (r.sent < minSent) problems.push(`${r.target}: only ${r.sent} datagrams sent`);
    if (r.lost !== 0) problems.push(`${r.target}: ${r.lost} of ${r.sent} datagrams lost`);
    if (r.wrongBackend !== 0) problems.push(`${r.target}: ${r.wrongBackend} replies from another backend than the CID names`);
  }
  expectNoProblems(problems, { results, logs: dps.map((d) => `${d.identity}:\n${d.proc.tail(1500)}`).join('\n') });
}

// ---- QUIC downloads -----------------------------------------------------------------------------------------

let downloads = 0;

async function download(port: number, args: string[] = [], idleTimeout = '4s'): Promise<DownloadResult> {
  const name = `gtlsclient-${++downloads}`;
  return gtlsDownload(group, name, { host: '127.0.0.1', port, path: '/', downloadDir: join(group.dir, `dl-${name}`), args, idleTimeout, timeoutMs: DOWNLOAD_LIMIT_MS });
}

/** A download through a client-side NAT whose first source port the quic LB's fallback hashes to `want`. */
async function downloadVia(port: number, fallbackOf: (port: number) => string, want: (server: string) => boolean, args: string[] = [], idleTimeout?: string): Promise<{ r: DownloadResult; natPort: number }> {
  const nat = await ClientNat.start({ host: '127.0.0.1', port }, (i, p) => i > 0 || want(fallbackOf(p)), 2);
  try {
    const r = await download(nat.port, args, idleTimeout);
    return { r, natPort: nat.mappings[0]?.port ?? -1 };
  } finally {
    await nat.close();
  }
}

const bodyOk = (r: DownloadResult): boolean => r.bytes === BODY_BYTES && sameFile(r.file, bodyFile);

async function statsOf(list: MatrixaiBackend[]): Promise<BackendStats[]> {
  return Promise.all(list.map((b) => b.stats()));
}

/**
 * Clears every backend's record once the previous connections have gone quiet: a busy backend process can read
 * the IPC 'reset' before datagrams still queued on its socket, which then count for the next download.
 */
async function resetAll(): Promise<void> {
  const all = [...backends.values(), ...retired];
  const deadline = Date.now() + 3000;
  let last = (await statsOf(all)).map((s) => s.datagrams);
  while (Date.now() < deadline) {
    await sleep(150);
    const now = (await statsOf(all)).map((s) => s.datagrams);
    if (now.every((n, i) => n === last[i])) break;
    last = now;
  }
  await Promise.all(all.map((b) => b.reset()));
}

const describeStats = (ss: BackendStats[], names: string[]): string =>
  ss.map((s, i) => `${names[i]} (${s.serverId}, port ${s.port}): conns=${s.connections} req=${s.requests} resp=${s.responses} own1rtt=${s.shortOwn} ` +
    `foreign1rtt=${s.shortForeign} datagrams=${s.datagrams} paths=${s.senders.length} dcids=${Object.keys(s.dcids).length}`).join('\n');

/** Every 1-RTT datagram on the backend that issued its CID; `served` got the request; the LB routed them by CID. */
function cidRoutingProblems(ss: BackendStats[], names: string[], served: string | null, delta: MetricsDelta, migrated: boolean): string[] {
  const problems: string[] = [];
  const foreign = ss.reduce((n, s) => n + s.shortForeign, 0);
  if (foreign !== 0) problems.push(`${foreign} 1-RTT datagrams reached a backend that did not issue their DCID`);
  const serving = ss.map((s, i) => [s, names[i]] as const).filter(([s]) => s.requests > 0);
  if (serving.length !== 1) return [...problems, `expected exactly one backend to receive the request, got ${serving.map(([, n]) => n).join(', ') || 'none'}`];
  const [srv, name] = serving[0];
  if (served !== null && name !== served) problems.push(`the request reached ${name}, expected ${served}`);
  if (srv.shortOwn < 20) problems.push(`only ${srv.shortOwn} 1-RTT datagrams reached the serving backend`);
  if (migrated && (srv.senders.length < 2 || Object.keys(srv.dcids).length < 2)) {
    problems.push(`active migration, but the serving backend saw ${srv.senders.length} path(s) and ${Object.keys(srv.dcids).length} DCID(s)`);
  }
  for (const [s, n] of ss.map((x, i) => [x, names[i]] as const)) if (s !== srv && s.shortOwn > 0) problems.push(`${n} also got ${s.shortOwn} 1-RTT datagrams`);
  const own = ss.reduce((n, s) => n + s.shortOwn, 0);
  const cid = delta('quiclb_packets_total', { lb: 'quic', outcome: 'cid' });
  if (cid < own) problems.push(`the data plane routed ${cid} datagrams by CID, fewer than the ${own} 1-RTT datagrams delivered`);
  const dropped = delta('quiclb_dropped_packets_total', { lb: 'quic' });
  if (dropped > 0) problems.push(`the data plane dropped ${dropped} datagrams of the quic load balancer`);
  return problems;
}

// ---- setup --------------------------------------------------------------------------------------------------

beforeAll(async () => {
  gtlsclientPath(); // a missing client fails the suite here, it is never skipped
  makeCert(group.dir);
  writeFileSync(bodyFile, randomBytes(BODY_BYTES));
  ca = new TestCa();
  serverTls = ca.issue({ cn: 'quiclb-operator', usage: 'server' });
  grpcPort = await freeTcpPort();
  csMetricsPort = await freeTcpPort();
  for (let i = 0; i < ECHO_SERVERS.length; i++) echoPorts.push(await freeUdpPort());
  const echo = group.spawnTs('tag-echo', 'test/e2e/peers/tag-echo.ts', ECHO_SERVERS.flatMap((s, i) => ['--listen', `${s.id}=127.0.0.1:${echoPorts[i]}`]));
  await echo.waitFor(/READY/, 15_000);
  const servers = [];
  for (const id of ['b1', 'b2', 'b3']) servers.push({ id, port: await freeUdpPort() });
  writeStandaloneYaml(quicYaml, quicSpec(servers));
  writeStandaloneYaml(echoYaml, echoSpec());
  await Promise.all(servers.map(async (s) => {
    backends.set(s.id, await startMatrixaiBackend(group, s.id, { port: s.port, configFile: quicYaml, serverName: s.id, certDir: group.dir, bodyFile }));
  }));
  for (const identity of ['dp-a', 'dp-b']) {
    const tls = ca.issue({ cn: identity, usage: 'client' });
    dps.push({ identity, tls, stateDir: join(group.dir, `state-${identity}`), metricsPort: await freeTcpPort(), proc: undefined as unknown as Proc, quicPort: 0, echoPort: 0 });
  }
}, 90_000);

afterAll(async () => {
  holder?.close();
  await group.stopAll();
  ca?.remove();
  group.cleanup();
});

const KEY_FORMS = [quicKey, echoKey].flatMap((k) => [k.toString('hex'), k.toString('hex').toUpperCase(), k.toString('base64'), k.toString('base64url')]);

describe('config channel end to end: quiclb config-server -> two quiclb dataplane processes -> real QUIC and UDP', () => {
  let v1 = 0;
  let v2 = 0;
  let vGood = 0;

  it('1. snapshot -> ACK -> a real QUIC transfer with active migration through each data plane, routed by CID', group.guard(async () => {
    const t0 = Date.now();
    const started = await startConfigServer();
    v1 = started.version;
    for (const dp of dps) dp.proc = startDataPlane(dp);
    for (const dp of dps) {
      const ports = await waitReady(dp, 30_000);
      dp.quicPort = ports.quic;
      dp.echoPort = ports.echo;
    }
    const ackedAt = await waitAllAcked(v1, 10_000);
    process.stdout.write(`[config-channel] config server + 2 data planes started, version ${v1} ACKed by both ${ackedAt - t0} ms after the spawn\n`);
    const m = await csMetrics();
    expect(sumSamples(m, 'quiclb_config_server_connected_data_planes')).toBe(2);
    expect(sumSamples(m, 'quiclb_config_server_snapshots_acked_total')).toBeGreaterThanOrEqual(2);
    expect(sumSamples(m, 'quiclb_config_server_snapshots_nacked_total')).toBe(0);
    for (const dp of dps) {
      const dm = await dpMetrics(dp);
      expect({ dp: dp.identity, version: sumSamples(dm, 'quiclb_operator_snapshot_version'), connected: sumSamples(dm, 'quiclb_operator_connected') })
        .toEqual({ dp: dp.identity, version: v1, connected: 1 });
      expect(statSync(join(dp.stateDir, 'snapshot.pb')).mode & 0o777).toBe(0o600);
    }
    expect(dps[0].quicPort).not.toBe(dps[1].quicPort);

    const names = ['b1', 'b2', 'b3'];
    for (const dp of dps) {
      await resetAll();
      const before = await dpMetrics(dp);
      const r = await download(dp.quicPort, ['--change-local-addr=100ms', '--delay-stream=400ms']);
      const ss = await statsOf(names.map((n) => backends.get(n)!));
      const delta = metricsDelta(before, await dpMetrics(dp));
      const problems = cidRoutingProblems(ss, names, null, delta, true);
      if (!bodyOk(r)) problems.unshift(`body: ${r.bytes} bytes after ${r.ms} ms, not the ${BODY_BYTES} served`);
      expectNoProblems(problems, { dp: dp.identity, backends: describeStats(ss, names), client: r.output.slice(-600), log: dp.proc.tail(1500) });
      process.stdout.write(`[config-channel] ${dp.identity}: ${BODY_BYTES} B with active migration in ${r.ms} ms, ${delta('quiclb_packets_total', { lb: 'quic', outcome: 'cid' })} datagrams routed by CID\n`);
    }
  }), 120_000);

  it('2. a YAML edit (a server moved, one added, one removed): every data plane ACKs, new connections follow, an established one keeps working', group.guard(async () => {
    const oldFallback = fallbackPredictor(quicYaml);
    // the next set: b1 stays, b2 moves to a new backend process (same name, so the same server ID), b3 goes, b4 comes
    const nextYaml = join(group.dir, 'quic-next.yaml');
    const b1 = backends.get('b1')!;
    const moved = { id: 'b2', port: await freeUdpPort() };
    const added = { id: 'b4', port: await freeUdpPort() };
    writeStandaloneYaml(nextYaml, quicSpec([{ id: 'b1', port: b1.port }, moved, added]));
    const [b2New, b4] = await Promise.all([moved, added].map((s) =>
      startMatrixaiBackend(group, `${s.id}-new`, { port: s.port, configFile: nextYaml, serverName: s.id, certDir: group.dir, bodyFile })));
    const newFallback = fallbackPredictor(nextYaml);
    await resetAll();

    // an established QUIC connection to b1 (the fallback of its source port before and after), its request 3 s later
    const streams = await Promise.all(dps.map((dp) => startEchoStream(dp)));
    const established = downloadVia(dps[0].quicPort, (p) => `${oldFallback(p)}/${newFallback(p)}`, (s) => s === 'b1/b1', ['--delay-stream=3000ms'], '8s');
    const tClient = Date.now();
    const connectDeadline = Date.now() + 3000;
    while ((await b1.stats()).connections === 0 && Date.now() < connectDeadline) await sleep(25);
    expect((await b1.stats()).connections).toBe(1);

    const tEdit = Date.now();
    copyFileSync(nextYaml, quicYaml);
    v2 = await waitNewVersion(v1, 10_000);
    const ackedAt = await waitAllAcked(v2, 10_000);
    const ackMs = ackedAt - tEdit;
    process.stdout.write(`[config-channel] YAML edit -> version ${v2} ACKed by both data planes in ${ackMs} ms\n`);
    expect(Date.now() - tClient).toBeLessThan(3000); // the established connection's request comes after the ACKs
    for (const dp of dps) expect(sumSamples(await dpMetrics(dp), 'quiclb_operator_snapshot_version')).toBe(v2);

    const { r: est } = await established;
    const problems: string[] = [];
    if (!bodyOk(est)) problems.push(`the connection established before the edit: body ${est.bytes} bytes after ${est.ms} ms`);
    const b1Stats = await b1.stats();
    if (b1Stats.responses !== 1) problems.push(`b1 (the established connection's backend) served ${b1Stats.responses} responses`);
    expectNoProblems(problems, { b1: describeStats([b1Stats], ['b1']), client: est.output.slice(-600) });

    // new connections follow the new set: b2's connections reach the moved backend, b4 is served, b3 is gone
    const old = { b2: backends.get('b2')!, b3: backends.get('b3')! };
    retired.push(old.b2, old.b3);
    backends.delete('b3');
    backends.set('b2', b2New);
    backends.set('b4', b4);
    const names = ['b1', 'b2', 'b4'];
    for (const [dp, target] of [[dps[0], 'b2'], [dps[1], 'b4']] as const) {
      await resetAll();
      const before = await dpMetrics(dp);
      const { r, natPort } = await downloadVia(dp.quicPort, newFallback, (s) => s === target);
      const ss = await statsOf(names.map((n) => backends.get(n)!));
      const delta = metricsDelta(before, await dpMetrics(dp));
      const probs = cidRoutingProblems(ss, names, target, delta, false);
      if (!bodyOk(r)) probs.unshift(`body: ${r.bytes} bytes after ${r.ms} ms`);
      const gone = await statsOf([old.b2, old.b3]);
      gone.forEach((s, i) => {
        if (s.datagrams > 0) probs.push(`${i === 0 ? 'b2 at its old address' : 'b3 (removed)'} got ${s.datagrams} datagrams`);
      });
      expectNoProblems(probs, { dp: dp.identity, natPort, backends: describeStats(ss, names), client: r.output.slice(-600) });
    }
    expectStreams(await Promise.all(streams.map((s) => s.stop())), 300);
  }), 120_000);

  it('3. an invalid YAML keeps the last good load balancer; a snapshot the data planes cannot apply is NACKed with its field, forwarding unchanged', group.guard(async () => {
    const good = readFileSync(quicYaml, 'utf8');
    const streams = await Promise.all(dps.map((dp) => startEchoStream(dp)));

    // the config server's own validation: no new version, the warning names the file and field
    const warningsBefore = csLines('invalid load balancer file: keeping its last good config').length;
    writeFileSync(quicYaml, good.replace('nonce_length: 17', 'nonce_length: 99'));
    const deadline = Date.now() + 10_000;
    while (csLines('invalid load balancer file: keeping its last good config').length === warningsBefore && Date.now() < deadline) await sleep(25);
    const warning = csLines('invalid load balancer file: keeping its last good config').at(-1);
    expect(warning).toMatchObject({ file: quicYaml, field: 'loadbalancer.nonce_length' });
    writeFileSync(quicYaml, good); // back to the last good content: the same set, no new version either
    await sleep(1000);
    expect(await csVersion()).toBe(v2);
    for (const dp of dps) expect(sumSamples(await dpMetrics(dp), 'quiclb_operator_snapshot_version')).toBe(v2);

    // a snapshot both data planes must reject: a second echo listen address another socket of this host holds
    holder = createSocket('udp4');
    await new Promise<void>((r) => holder!.bind(0, '127.0.0.1', r));
    const held = `127.0.0.1:${holder.address().port}`;
    const nackedBefore = sumSamples(await csMetrics(), 'quiclb_config_server_snapshots_nacked_total');
    const readyBefore = await Promise.all(dps.map((dp) => readyz(dp)));
    writeStandaloneYaml(echoYaml, echoSpec([100, 100], [held]));
    const v3 = await waitNewVersion(v2, 10_000);
    const nackDeadline = Date.now() + 10_000;
    const nacks = () => dps.map((dp) => csLines('snapshot rejected by data plane', dp.identity).find((l) => Number(l.version) === v3));
    while (nacks().some((n) => n === undefined) && Date.now() < nackDeadline) await sleep(25);
    const found = nacks();
    for (const n of found) expect(n).toMatchObject({ version: v3, field: 'load_balancers[1].listen[1]' });
    // the bind fails, or (two data planes on one host) the other one holds the address's lock while it tries the bind
    for (const n of found) expect(String(n!.err)).toMatch(/EADDRINUSE|already served by another quiclb instance/);
    process.stdout.write(`[config-channel] version ${v3} (echo also on ${held}, held by another socket) NACKed by both: ${JSON.stringify(found.map((n) => ({ identity: n!.identity, field: n!.field, err: n!.err })))}\n`);
    const m = await csMetrics();
    expect(sumSamples(m, 'quiclb_config_server_snapshots_nacked_total') - nackedBefore).toBe(2);
    for (const [i, dp] of dps.entries()) {
      const dm = await dpMetrics(dp);
      expect(sumSamples(dm, 'quiclb_operator_snapshot_version')).toBe(v2);
      expect(sumSamples(dm, 'quiclb_operator_snapshots_total', { result: 'rejected' })).toBe(1);
      const now = await readyz(dp);
      expect(now).toContain(`last rejected snapshot: version ${v3}: load_balancers[1].listen[1]`);
      // the same ports as before the rejected snapshot
      for (const lb of ['quic', 'echo']) {
        const re = new RegExp(`load balancer ${lb}: listening on ([^;]+);`);
        expect(re.exec(now)?.[1]).toBe(re.exec(readyBefore[i])?.[1]);
      }
    }
    expectStreams(await Promise.all(streams.map((s) => s.stop())), 100);

    // the file fixed: a newer version, ACKed by both
    writeStandaloneYaml(echoYaml, echoSpec());
    vGood = await waitNewVersion(v3, 10_000);
    await waitAllAcked(vGood, 10_000);
    holder.close();
    holder = null;
  }), 90_000);

  it('4. the config server SIGKILLed mid-traffic: zero lost datagrams, the download completes; edited while down and restarted: both converge', group.guard(async () => {
    const names = [...backends.keys()];
    await resetAll();
    const streams = await Promise.all(dps.map((dp) => startEchoStream(dp)));
    const t0 = Date.now();
    // a QUIC connection established before the kill, its request 1 s after the handshake: the transfer runs while
    // the config server is dead (killing it at a given point of a 4 MB transfer is not reliable on a loaded host)
    const dl = download(dps[0].quicPort, ['--delay-stream=1000ms'], '8s');
    const connected = Date.now() + 10_000;
    while (Date.now() < connected && !(await statsOf([...backends.values()])).some((s) => s.connections > 0)) await sleep(20);
    const before = await statsOf([...backends.values()]);
    expect(before.some((s) => s.connections > 0)).toBe(true);
    const phase = before.some((s) => s.requests > 0) ? 'request already received' : 'request not sent yet';
    process.kill(cs.pid, 'SIGKILL');
    expect(await cs.exited).toBe('SIGKILL');
    const killedAt = Date.now();
    process.stdout.write(`[config-channel] config server SIGKILLed ${killedAt - t0} ms after the QUIC client started (connection up, ${phase})\n`);

    // edited while it is down
    writeStandaloneYaml(echoYaml, echoSpec([100, 50]));
    const r = await dl;
    const ss = await statsOf(names.map((n) => backends.get(n)!));
    const problems: string[] = [];
    if (!bodyOk(r)) problems.push(`download across the kill: ${r.bytes} bytes after ${r.ms} ms`);
    if (r.ms < killedAt - t0) problems.push(`the download ended (${r.ms} ms) before the kill (${killedAt - t0} ms)`);
    const served = ss.filter((s) => s.responses > 0);
    if (served.length !== 1 || served[0].connections !== 1) problems.push('the response did not come over the one connection opened before the kill');
    expectNoProblems(problems, { backends: describeStats(ss, names), client: r.output.slice(-600) });
    for (const dp of dps) {
      const dm = await dpMetrics(dp);
      expect(sumSamples(dm, 'quiclb_operator_connected')).toBe(0);
      expect(await readyz(dp)).toMatch(/^200 [\s\S]*unreachable/);
    }

    // restarted on the same address: the newest files, a newer version; both data planes come back to it
    const restarted = await startConfigServer();
    expect(restarted.version).toBeGreaterThan(vGood);
    const acks = await waitAcked(restarted.version, RECONNECT_LIMIT_MS);
    process.stdout.write(`[config-channel] config server down ${restarted.listeningAt - killedAt} ms; its version ${restarted.version} ACKed after it listened by ${await describeConvergence(acks, restarted.listeningAt)}\n`);
    vGood = restarted.version;
    expectStreams(await Promise.all(streams.map((s) => s.stop())), 100);
    for (const dp of dps) {
      const dm = await dpMetrics(dp);
      expect({ dp: dp.identity, version: sumSamples(dm, 'quiclb_operator_snapshot_version'), connected: sumSamples(dm, 'quiclb_operator_connected') })
        .toEqual({ dp: dp.identity, version: vGood, connected: 1 });
    }
  }), 120_000);

  it('5. a data plane SIGKILLed and restarted with --state-dir while the config server is down forwards at once; then it converges', group.guard(async () => {
    const dp = dps[1];
    process.kill(cs.pid, 'SIGKILL');
    await cs.exited;
    process.kill(dp.proc.pid, 'SIGKILL');
    await dp.proc.exited;
    writeStandaloneYaml(echoYaml, echoSpec([100, 100])); // a change the restarted data plane does not know yet

    const t0 = Date.now();
    dp.proc = startDataPlane(dp);
    const ports = await waitReady(dp, 30_000);
    const readyMs = Date.now() - t0;
    dp.quicPort = ports.quic;
    dp.echoPort = ports.echo;
    expect(ports.body).toContain(`snapshot version ${vGood} in force (restored from`);
    expect(ports.body).toMatch(/unreachable/);
    const stream = await startEchoStream(dp);
    const firstReplyDeadline = Date.now() + 5000;
    let echoMs = -1;
    const probe = createSocket('udp4');
    await new Promise<void>((r) => probe.bind(0, '127.0.0.1', r));
    const cid = new CidEncoder(echoConfig, Buffer.from(ECHO_SERVERS[1].sid, 'hex')).next();
    let replied = false;
    probe.on('message', () => {
      replied = true;
    });
    while (!replied && Date.now() < firstReplyDeadline) {
      probe.send(Buffer.concat([Buffer.from([0x41]), cid, randomBytes(24)]), dp.echoPort, '127.0.0.1');
      await sleep(10);
    }
    probe.close();
    if (replied) echoMs = Date.now() - t0;
    process.stdout.write(`[config-channel] ${dp.identity} restarted from --state-dir with no config server: /readyz 200 after ${readyMs} ms, first echo reply after ${echoMs} ms (from the spawn)\n`);
    expect(echoMs).toBeGreaterThan(0);
    const r = await download(dp.quicPort);
    expect({ bytes: r.bytes, ok: bodyOk(r) }).toEqual({ bytes: BODY_BYTES, ok: true });
    expect(sumSamples(await dpMetrics(dp), 'quiclb_operator_snapshots_total', { result: 'restored' })).toBe(1);

    const restarted = await startConfigServer();
    const acks = await waitAcked(restarted.version, RECONNECT_LIMIT_MS);
    process.stdout.write(`[config-channel] config server back: its version ${restarted.version} ACKed after it listened by ${await describeConvergence(acks, restarted.listeningAt)}\n`);
    expectStreams([await stream.stop()], 100);
    expect(sumSamples(await dpMetrics(dp), 'quiclb_operator_snapshot_version')).toBe(restarted.version);
    vGood = restarted.version;
  }), 120_000);

  it('6. a data plane SIGKILLed and restarted while the config server is up converges within a few seconds and forwards', group.guard(async () => {
    const dp = dps[0];
    const other = await startEchoStream(dps[1]);
    process.kill(dp.proc.pid, 'SIGKILL');
    await dp.proc.exited;
    const t0 = Date.now();
    dp.proc = startDataPlane(dp);
    const [ackedAt] = await waitAcked(vGood, 10_000, [dp], t0);
    const ports = await waitReady(dp, 10_000);
    dp.quicPort = ports.quic;
    dp.echoPort = ports.echo;
    process.stdout.write(`[config-channel] ${dp.identity} SIGKILLed and restarted with the config server up: version ${vGood} ACKed ${ackedAt - t0} ms after the spawn\n`);
    const stream = await startEchoStream(dp);
    await sleep(500);
    expectStreams(await Promise.all([stream.stop(), other.stop()]), 50);
    const m = await csMetrics();
    expect(sumSamples(m, 'quiclb_config_server_connected_data_planes')).toBe(2);
  }), 60_000);

  it('no key bytes in any config-server or data-plane log line (debug level)', group.guard(async () => {
    await sleep(200);
    const logs = [cs, ...dps.map((d) => d.proc)].map((p) => p.text);
    for (const f of readdirLogs()) logs.push(readFileSync(f, 'utf8'));
    for (const text of logs) for (const form of KEY_FORMS) expect(text.includes(form)).toBe(false);
  }));
});

/** Every log file of a config server or data-plane process this file started (killed ones included). */
function readdirLogs(): string[] {
  return group.processes.filter((p) => /^(config-server|dp-)/.test(p.name)).map((p) => p.logPath);
}
