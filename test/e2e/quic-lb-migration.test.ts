/**
 * Real QUIC, QUIC-LB routing + client migration, end to end on loopback:
 *   client   : Debian ngtcp2 gtlsclient (HTTP/3; --change-local-addr = active migration to a new CID,
 *              --nat-rebinding = new address with the same CID)
 *   LB       : `quiclb standalone` (child process), encrypted QUIC-LB config (four-pass, 20-byte CIDs)
 *   backends : three @matrixai/quic (quiche) HTTP/3 servers minting encrypted QUIC-LB CIDs with the project's
 *              generator, each recording the DCID of every datagram its socket receives.
 * Checks: the body arrives byte-identical, every 1-RTT datagram reached the backend that issued its DCID,
 * the serving backend saw the client's path change (a second LB upstream socket) and, for active migration,
 * a second DCID; the LB routed by CID.
 * Negative controls (proof that these checks can fail):
 *   - the same scenarios through the SAME quiclb binary in `routing: 4-tuple` mode (connection IDs ignored: the
 *     4-tuple table, else the fallback hash) fail. A real hash sends a migrated client's new 4-tuple to another
 *     of the 3 backends only about 2/3 of the time, so the client reaches the LB through a client-side NAT
 *     (peers/nat.ts) whose second source port is one the LB's own fallback hash (the product's Router, built from
 *     the same YAML) sends to another backend than the first: deterministic, and every prediction is checked
 *     against what the backends and the LB's counters saw. The same NAT and port choice in front of quiclb in
 *     the default quic-lb mode passes, so the routing mode is the only difference;
 *   - the same scenarios through a naive round-robin-per-4-tuple forwarder (peers/naive-forwarder.ts) fail.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadStandaloneConfig, toSnapshot } from '../../lib/index.js';
import { Router } from '../../dataplane/router.js';
import {
  changedSamples, freeTcpPort, metricsDelta, startStandalone, sumSamples, writeStandaloneYaml,
  type MetricsDelta, type StandaloneDataplane, type StandaloneSpec,
} from './peers/dataplane.js';
import { startMatrixaiBackend, type BackendStats, type MatrixaiBackend } from './peers/matrixai.js';
import { ClientNat, type NatMapping } from './peers/nat.js';
import { gtlsclientPath, gtlsDownload, sameFile, type DownloadResult } from './peers/ngtcp2.js';
import { expectNoProblems, makeCert, ProcGroup, type Proc } from './peers/proc.js';
import { freeUdpPort, waitForQuic } from './peers/udp.js';

const BODY_BYTES = 6_000_000;
/** Hard limit on one client run (a stalled download usually ends on the 4 s idle timeout, seen taking up to 20 s). */
const DOWNLOAD_LIMIT_MS = 25_000;
const group = new ProcGroup('lb-migration');
const bodyFile = join(group.dir, 'body.bin');
let backends: MatrixaiBackend[] = [];
/** The data planes under test: one process, and 2 worker processes sharing the port (SO_REUSEPORT). */
const lbs: { title: string; dp?: StandaloneDataplane; port: number }[] = [
  { title: 'quiclb (1 process)', port: 0 },
  { title: 'quiclb (workers: 2, SO_REUSEPORT)', port: 0 },
];
/** The negative control: the same quiclb, same config, in `routing: 4-tuple` mode. */
const tupleLb: { title: string; dp?: StandaloneDataplane; port: number } = { title: 'quiclb (routing: 4-tuple)', port: 0 };
/** The LB's fallback choice for a client port on 127.0.0.1 (the product's Router built from the 4-tuple YAML). */
let fallbackOf: (port: number) => string = () => {
  throw new Error('beforeAll did not run');
};
let naive: Proc;
let naivePort = 0;

beforeAll(async () => {
  gtlsclientPath(); // a missing client fails the suite here, it is never skipped
  makeCert(group.dir);
  writeFileSync(bodyFile, randomBytes(BODY_BYTES));
  const ports = [await freeUdpPort(), await freeUdpPort(), await freeUdpPort()];
  const key = randomBytes(16).toString('base64');
  for (const l of [...lbs, tupleLb]) l.port = await freeUdpPort();
  naivePort = await freeUdpPort();
  const yamls = [join(group.dir, 'quiclb.yaml'), join(group.dir, 'quiclb-workers.yaml'), join(group.dir, 'quiclb-4tuple.yaml')];
  const metricsPorts = [await freeTcpPort(), await freeTcpPort(), await freeTcpPort()];
  // the three files differ only in listen, workers / routing and the monitoring port
  const spec = (i: number, port: number): StandaloneSpec => ({
    name: 'e2e-migration',
    listen: [`127.0.0.1:${port}`],
    ...(i === 1 ? { workers: 2 } : {}),
    ...(i === 2 ? { routing: '4-tuple' as const } : {}),
    loadbalancer: {
      config_id: 1,
      server_id_length: 2,
      // @matrixai/quic parses short headers with a fixed 20-byte DCID: 1 + 2 + 17 = 20 (four-pass, 19 octets)
      nonce_length: 17,
      encryption_key: key,
    },
    // server IDs derived from the names (SHA-256), by the LB and by each backend's generator alike
    servers: ports.map((p, n) => ({ id: `b${n + 1}`, address: `127.0.0.1:${p}` })),
    metricsPort: metricsPorts[i],
  });
  [...lbs, tupleLb].forEach((l, i) => writeStandaloneYaml(yamls[i], spec(i, l.port)));
  const predictor = new Router(toSnapshot(loadStandaloneConfig(yamls[2]), 1));
  fallbackOf = (port) => predictor.fallbackFor('127.0.0.1', port)!.name;
  backends = await Promise.all(ports.map((port, i) =>
    startMatrixaiBackend(group, `b${i + 1}`, { port, configFile: yamls[0], serverName: `b${i + 1}`, certDir: group.dir, bodyFile, extraCids: 3 })));
  await Promise.all([...lbs, tupleLb].map(async (l, i) => {
    l.dp = await startStandalone(group, `quiclb-${i}`, yamls[i], metricsPorts[i], () => waitForQuic('127.0.0.1', l.port, 15000, `${l.title} -> backend`));
  }));
  naive = group.spawnTs('naive-rr', 'test/e2e/peers/naive-forwarder.ts',
    ['--listen', `127.0.0.1:${naivePort}`, ...backends.flatMap((b) => ['--backend', b.address])]);
  await naive.waitFor(/READY/, 15000);
}, 60000);

afterAll(async () => {
  await group.stopAll();
  group.cleanup();
});

/**
 * Clears the backends' counters once the previous test's traffic has drained. A busy backend answers the stats/reset
 * IPC message before it has read every datagram already in its socket buffer, so without this the tail of the last
 * download (its final ACKs and CONNECTION_CLOSE) was counted in the next test as 1-RTT datagrams on a backend that
 * test never used (seen 2 runs in 3 as "backend X also got N 1-RTT datagrams", always the first test after a
 * download through another data plane).
 */
async function resetBackends(): Promise<void> {
  const shortCount = async (): Promise<number> => (await allStats()).reduce((n, s) => n + s.shortOwn + s.shortForeign, 0);
  let last = await shortCount();
  for (const deadline = Date.now() + 3000; Date.now() < deadline;) {
    await new Promise((r) => setTimeout(r, 300));
    const now = await shortCount();
    if (now === last) break;
    last = now;
  }
  await Promise.all(backends.map((b) => b.reset()));
}

async function allStats(): Promise<BackendStats[]> {
  return Promise.all(backends.map((b) => b.stats()));
}

const describeStats = (ss: BackendStats[]): string =>
  ss.map((s) => `${s.serverId}: conns=${s.connections} req=${s.requests} resp=${s.responses} own1rtt=${s.shortOwn} foreign1rtt=${s.shortForeign} ` +
    `(decodable ${s.shortForeignDecodable}) paths=${JSON.stringify(s.senders.map((a) => s.perSender[a]))} dcids=${Object.keys(s.dcids).length} long=${JSON.stringify(s.long)}` +
    (s.connectionErrors.length ? ` connection errors=${JSON.stringify(s.connectionErrors)}` : '') +
    (s.uncaught.length ? ` uncaught=${JSON.stringify(s.uncaught)}` : '')).join('\n');

/** The last lines of the log of the backend that received the request (library logs, connection ends). */
const receiverLog = (ss: BackendStats[]): string =>
  ss.flatMap((s, i) => (s.requests > 0 ? [`${backends[i].name}:\n${backends[i].proc.tail(1500)}`] : [])).join('\n');

async function download(port: number, name: string, args: string[]) {
  return gtlsDownload(group, name, { host: '127.0.0.1', port, path: '/', downloadDir: join(group.dir, `dl-${name}`), args, idleTimeout: '4s', timeoutMs: DOWNLOAD_LIMIT_MS });
}

type Migration = 'active' | 'active-mid' | 'nat';

/** What is wrong with a run that should have succeeded (empty = all checks passed). */
function cidRoutingProblems(ss: BackendStats[], migration: Migration): string[] {
  const problems: string[] = [];
  const foreign = ss.reduce((n, s) => n + s.shortForeign, 0);
  // every 1-RTT datagram, on every backend, carried a DCID that this backend issued
  if (foreign !== 0) problems.push(`${foreign} 1-RTT datagrams reached a backend that did not issue their DCID`);
  // the request reached one backend (whether its response got through is the body check's business)
  const serving = ss.filter((s) => s.requests > 0);
  if (serving.length !== 1) return [...problems, `expected exactly one backend to receive the request, got ${serving.length}`];
  const srv = serving[0];
  // not vacuous: the download's 1-RTT traffic reached the serving backend...
  if (srv.shortOwn < 20) problems.push(`only ${srv.shortOwn} 1-RTT datagrams reached the serving backend`);
  // ...over two paths (the client's new address made the LB open a second upstream socket)...
  if (srv.senders.length < 2) problems.push(`the serving backend saw ${srv.senders.length} path(s): the client did not migrate`);
  const dcids = Object.entries(srv.dcids);
  if (migration !== 'nat' && dcids.length < 2) {
    // active migration switches to a CID from NEW_CONNECTION_ID, which only ever crossed the wire encrypted
    problems.push(`active migration but the serving backend saw ${dcids.length} DCID(s)`);
  }
  if (migration === 'active-mid') {
    // the download's ACKs flowed on both paths: the client really moved in the middle of the transfer
    const counts = srv.senders.map((a) => srv.perSender[a]);
    if (counts.length < 2 || counts[0] < 5 || counts[counts.length - 1] < 10) {
      problems.push(`not a migration in the middle of the transfer: 1-RTT datagrams per path ${JSON.stringify(counts)}`);
    }
  }
  if (migration === 'nat' && !dcids.some(([, senders]) => senders.length >= 2)) {
    // NAT rebinding keeps the CID: one DCID arrives over both paths
    problems.push('NAT rebinding but no DCID arrived over two paths');
  }
  // ...and no other backend got any 1-RTT datagram of this connection
  for (const s of ss) if (s !== srv && s.shortOwn > 0) problems.push(`backend ${s.serverId} also got ${s.shortOwn} 1-RTT datagrams`);
  return problems;
}

/**
 * The LB's own account of a run that should have succeeded: it decoded every 1-RTT datagram the backends
 * received (not a lucky 4-tuple hash), and dropped nothing.
 */
function lbCidProblems(ss: BackendStats[], delta: MetricsDelta): string[] {
  const problems: string[] = [];
  const own = ss.reduce((n, s) => n + s.shortOwn, 0);
  const cidRouted = delta('quiclb_packets_total', { outcome: 'cid' });
  if (cidRouted < own) problems.push(`quiclb routed ${cidRouted} datagrams by CID, fewer than the ${own} 1-RTT datagrams delivered`);
  const dropped = delta('quiclb_dropped_packets_total');
  if (dropped > 0) problems.push(`quiclb dropped ${dropped} datagrams`);
  return problems;
}

/**
 * Known peer bug: @matrixai/quic 2.0.9 (quiche) sometimes stops sending stream data, or closes the connection,
 * after the client migrates in the middle of a download, with no load balancer in the path at all. Measured
 * here with --change-local-addr=50ms and 6 MB bodies: 5 of 40 single downloads straight from a backend stalled
 * in one series, 3 of 200 (4 clients at a time) in another, against 1 of 200 through quiclb (correct routing,
 * nothing dropped); gtlsclient against gtlsserver: 0 of 30. Once, in CI, the backend closed the connection
 * 117 ms in. Migrations before the request never stalled (0 of 30, 0 of 32 with 4 clients, 0 of 60). So the mid-transfer scenario gets up to 3 attempts; every attempt must pass every routing check
 * (the request reached one backend, every 1-RTT datagram reached the backend that issued its DCID, over both
 * paths) and the LB must not have dropped a datagram; only a body cut short with correct routing is retried,
 * and the retry is reported with the backend's account of how the connection ended.
 */
const MID_TRANSFER_ATTEMPTS = 3;

describe.each(lbs.map((l) => [l.title, l] as const))('QUIC-LB routing through %s: real QUIC migration (ngtcp2 client, @matrixai/quic backends)', (_title, l) => {
  const cases: [string, Migration, string[]][] = [
    ['active migration before the request', 'active', ['--change-local-addr=100ms', '--delay-stream=400ms']],
    ['NAT rebinding before the request', 'nat', ['--change-local-addr=100ms', '--nat-rebinding', '--delay-stream=400ms']],
    ['active migration in the middle of the download', 'active-mid', ['--change-local-addr=50ms']],
  ];
  for (const [title, migration, args] of cases) {
    it(`${title}: body intact, every 1-RTT packet reached the backend its CID names`, group.guard(async () => {
      const lb = l.dp!;
      const attempts = migration === 'active-mid' ? MID_TRANSFER_ATTEMPTS : 1;
      const stalled: string[] = [];
      for (let attempt = 1; ; attempt++) {
        await resetBackends();
        const before = await lb.metrics();
        const r = await download(l.port, `quiclb-${l.port}-${migration}-${attempt}`, args);
        const ss = await allStats();
        const after = await lb.metrics();
        const problems = [...cidRoutingProblems(ss, migration), ...lbCidProblems(ss, metricsDelta(before, after))];
        const bodyOk = r.bytes === BODY_BYTES && sameFile(r.file, bodyFile);
        const context = {
          attempt, stalledBefore: stalled, backends: describeStats(ss), client: r.output.slice(-600), quiclbLog: lb.proc.tail(800), backendLog: receiverLog(ss),
        };
        if (bodyOk || problems.length > 0 || attempt >= attempts) {
          if (!bodyOk) problems.unshift(`body: ${r.bytes} bytes after ${r.ms} ms, not the ${BODY_BYTES} served`);
          expectNoProblems(problems, context);
          return;
        }
        const cut = `attempt ${attempt}: ${r.bytes} bytes after ${r.ms} ms, routing correct (${describeStats(ss.filter((s) => s.requests > 0))})`;
        stalled.push(cut);
        process.stderr.write(`[e2e] ${l.title} ${title}: the body was cut short with correct routing (known @matrixai/quic bug), retrying: ${cut}\n`);
      }
    }), MID_TRANSFER_ATTEMPTS * (DOWNLOAD_LIMIT_MS + 2000) + 5000);
  }
});

describe.each(lbs.map((l) => [l.title, l] as const))('QUIC-LB routing through %s with concurrent migrating clients', (_title, l) => {
  it('four clients migrate at once: every body intact, no 1-RTT datagram on a backend that did not issue its DCID', group.guard(async () => {
    await resetBackends();
    const lb = l.dp!;
    const before = await lb.metrics();
    // migration before the request: mid-transfer migrations stall now and then in @matrixai/quic (see above)
    const rs = await Promise.all([0, 1, 2, 3].map((i) => download(l.port, `quiclb-${l.port}-concurrent-${i}`, ['--change-local-addr=100ms', '--delay-stream=400ms'])));
    const ss = await allStats();
    const after = await lb.metrics();
    const problems: string[] = [];
    rs.forEach((r, i) => {
      if (r.bytes !== BODY_BYTES || !sameFile(r.file, bodyFile)) problems.push(`client ${i}: body ${r.bytes} bytes after ${r.ms} ms, not the ${BODY_BYTES} served`);
    });
    const foreign = ss.reduce((n, s) => n + s.shortForeign, 0);
    if (foreign !== 0) problems.push(`${foreign} 1-RTT datagrams reached a backend that did not issue their DCID`);
    const responses = ss.reduce((n, s) => n + s.responses, 0);
    if (responses !== 4) problems.push(`${responses} responses served, expected 4`);
    for (const s of ss) {
      if (s.responses > 0 && s.senders.length < 2 * s.responses) problems.push(`backend ${s.serverId}: ${s.responses} connection(s) but only ${s.senders.length} paths`);
    }
    problems.push(...lbCidProblems(ss, metricsDelta(before, after)));
    const counters = changedSamples(before, after, /^quiclb_(dropped|send_errors|packets_total|backend_packets|flow)/);
    expectNoProblems(problems, { backends: describeStats(ss), counters, clients: rs.map((r) => `${r.bytes} B ${r.ms} ms: ${r.output.slice(-200)}`) });
  }), 40000);
});

interface NatRun {
  r: DownloadResult;
  ss: BackendStats[];
  mappings: NatMapping[];
  overflow: string[];
  delta: MetricsDelta;
  after: Map<string, number>;
}

/**
 * One download through a client-side NAT in front of `l`: the NAT's first source port is any free port, every
 * further one (the client's migrated / rebound path) one whose fallback backend differs from the first one's.
 */
async function downloadThroughNat(l: { dp?: StandaloneDataplane; port: number }, name: string, args: string[]): Promise<NatRun> {
  const nat = await ClientNat.start({ host: '127.0.0.1', port: l.port }, (i, port, earlier) => i === 0 || fallbackOf(port) !== fallbackOf(earlier[0]));
  try {
    await resetBackends();
    const before = await l.dp!.metrics();
    const r = await download(nat.port, name, args);
    const ss = await allStats();
    const after = await l.dp!.metrics();
    return { r, ss, mappings: nat.mappings.map((m) => ({ ...m })), overflow: [...nat.overflow], delta: metricsDelta(before, after), after };
  } finally {
    await nat.close();
  }
}

const statsOf = (ss: BackendStats[], name: string): BackendStats => ss[backends.findIndex((b) => b.name === name)];

/** The predicted path of a NAT run: the backend the first source port hashes to, and the one the second does. */
function natPrediction(n: NatRun): { problems: string[]; home: string; moved: string } {
  const problems: string[] = [];
  if (n.mappings.length !== 2 || n.overflow.length > 0) {
    problems.push(`the client used ${n.mappings.length + n.overflow.length} source addresses, expected 2 (one migration): ${JSON.stringify(n.mappings)}`);
  }
  const home = n.mappings[0] ? fallbackOf(n.mappings[0].port) : '?';
  const moved = n.mappings[1] ? fallbackOf(n.mappings[1].port) : '?';
  if (home === moved) problems.push(`the NAT's two source ports hash to the same backend ${home}`); // cannot happen: ClientNat chose them
  // the LB's fallback pool is the predictor's: all three backends accept new connections
  for (const b of backends) {
    if (sumSamples(n.after, 'quiclb_backend_accepting', { server: b.name }) !== 1) problems.push(`backend ${b.name} is not in the LB's fallback pool`);
  }
  return { problems, home, moved };
}

const natContext = (n: NatRun, p: { home: string; moved: string }, l: { dp?: StandaloneDataplane }) => ({
  prediction: `first source port ${n.mappings[0]?.port} -> ${p.home}, second ${n.mappings[1]?.port} -> ${p.moved}`,
  nat: n.mappings,
  backends: describeStats(n.ss),
  counters: [...n.after].filter(([k]) => /^quiclb_(packets_total|dropped|table_hits|routing_mode|backend_packets)/.test(k)).map(([k, v]) => `${k} ${v}`),
  client: n.r.output.slice(-600),
  quiclbLog: l.dp!.proc.tail(800),
});

const NEGATIVE_CASES: [string, Migration, string[]][] = [
  ['active migration before the request', 'active', ['--change-local-addr=100ms', '--delay-stream=400ms']],
  ['NAT rebinding before the request', 'nat', ['--change-local-addr=100ms', '--nat-rebinding', '--delay-stream=400ms']],
];

describe('negative control: the same quiclb in `routing: 4-tuple` mode (connection IDs ignored) fails the same scenarios', () => {
  for (const [title, migration, args] of NEGATIVE_CASES) {
    it(`${title}: the migrated 4-tuple is hashed to another backend, which gets the first one's CIDs; the body never arrives`, group.guard(async () => {
      const n = await downloadThroughNat(tupleLb, `4tuple-${migration}`, args);
      const p = natPrediction(n);
      const problems = [...p.problems];
      const home = statsOf(n.ss, p.home);
      const moved = statsOf(n.ss, p.moved);
      if (home === undefined || moved === undefined) problems.push('no prediction');
      else {
        // the connection was set up on the backend the first 4-tuple hashes to...
        if (!((home.long.initial ?? 0) > 0 && home.issued > 0)) problems.push(`the handshake did not reach ${p.home}, the fallback of the first source port`);
        for (const s of n.ss) if (s !== home && (s.long.initial ?? 0) > 0) problems.push(`backend ${s.serverId} got Initials too`);
        // ...and the migrated 4-tuple's 1-RTT datagrams went to the backend it hashes to, carrying the home
        // backend's (decodable) QUIC-LB CIDs: a backend that did not issue them
        if (moved.shortForeignDecodable === 0) problems.push(`${p.moved} (the fallback of the second source port) got no 1-RTT datagram with another backend's QUIC-LB CID`);
        for (const s of n.ss) if (s !== moved && s.shortForeign > 0) problems.push(`backend ${s.serverId} got ${s.shortForeign} foreign 1-RTT datagrams, expected only on ${p.moved}`);
        if (n.mappings[1] && n.mappings[1].up === 0) problems.push('nothing was sent over the second source port');
      }
      // the very checks the quic-lb scenarios pass report the misrouting, and nothing was served
      const routing = cidRoutingProblems(n.ss, migration);
      const expected = [/1-RTT datagrams reached a backend that did not issue their DCID$/, /^expected exactly one backend to receive the request, got 0$/];
      if (routing.length !== expected.length || !expected.every((re, i) => re.test(routing[i]))) {
        problems.push(`cidRoutingProblems should report exactly the misrouting, got ${JSON.stringify(routing)}`);
      }
      if (n.r.bytes === BODY_BYTES && sameFile(n.r.file, bodyFile)) problems.push('the body arrived');
      // counted honestly by the LB: no datagram routed by CID, one fallback decision per 4-tuple (its first
      // datagram), the rest by the 4-tuple table; nothing dropped (misrouted, not lost at the LB)
      if (sumSamples(n.after, 'quiclb_routing_mode', { mode: '4-tuple' }) !== 1) problems.push('quiclb_routing_mode{mode="4-tuple"} is not 1');
      const cid = n.delta('quiclb_packets_total', { outcome: 'cid' });
      if (cid !== 0) problems.push(`quiclb routed ${cid} datagrams by CID in 4-tuple mode`);
      const fallback = n.delta('quiclb_packets_total', { outcome: 'fallback' });
      if (fallback !== n.mappings.length) problems.push(`${fallback} datagrams went through the fallback, expected ${n.mappings.length} (one per 4-tuple)`);
      const table = n.delta('quiclb_packets_total', { outcome: 'table' });
      const tuple = n.delta('quiclb_table_hits_total', { table: 'tuple' });
      if (table === 0 || tuple !== table) problems.push(`table-routed ${table}, 4-tuple table hits ${tuple}: expected equal and > 0`);
      const dropped = n.delta('quiclb_dropped_packets_total');
      if (dropped > 0) problems.push(`quiclb dropped ${dropped} datagrams`);
      const toMoved = n.delta('quiclb_backend_packets_total', { server: p.moved, direction: 'to_server' });
      if (moved !== undefined && toMoved < moved.shortForeign) problems.push(`the LB counted ${toMoved} datagrams to ${p.moved}, fewer than its ${moved.shortForeign} foreign 1-RTT datagrams`);
      expectNoProblems(problems, natContext(n, p, tupleLb));
    }), 40000);
  }
});

describe('control for the control: the same NAT and source ports in front of quiclb in the default quic-lb mode pass', () => {
  for (const [title, migration, args] of NEGATIVE_CASES) {
    it(`${title}: the second source port hashes to another backend, yet every 1-RTT datagram reaches the backend its CID names`, group.guard(async () => {
      const l = lbs[0];
      const n = await downloadThroughNat(l, `quiclb-nat-${migration}`, args);
      const p = natPrediction(n);
      const problems = [...p.problems, ...cidRoutingProblems(n.ss, migration)];
      if (!(n.r.bytes === BODY_BYTES && sameFile(n.r.file, bodyFile))) problems.unshift(`body: ${n.r.bytes} bytes after ${n.r.ms} ms, not the ${BODY_BYTES} served`);
      // the Initial's (client-chosen) DCID does not decode: the fallback of the first port picked the backend
      const serving = n.ss.filter((s) => s.requests > 0);
      if (serving.length === 1 && serving[0] !== statsOf(n.ss, p.home)) problems.push(`served by ${serving[0].serverId}, not by ${p.home} (the fallback of the first source port)`);
      if (n.mappings[1] && n.mappings[1].up === 0) problems.push('nothing was sent over the second source port');
      problems.push(...lbCidProblems(n.ss, n.delta));
      if (sumSamples(n.after, 'quiclb_routing_mode', { mode: 'quic-lb' }) !== 1) problems.push('quiclb_routing_mode{mode="quic-lb"} is not 1');
      expectNoProblems(problems, natContext(n, p, l));
    }), 40000);
  }
});

describe('the same scenarios through a naive round-robin-per-4-tuple forwarder fail (the checks can fail)', () => {
  for (const [title, migration, args] of NEGATIVE_CASES) {
    it(`${title}: the migrated path lands on another backend and the body never arrives`, group.guard(async () => {
      await resetBackends();
      const flowsBefore = (naive.text.match(/^flow /gm) ?? []).length;
      const r = await download(naivePort, `naive-${migration}`, args);
      const ss = await allStats();
      const ctx = `\n${describeStats(ss)}\n${naive.text.split('\n').slice(-4).join('\n')}`;
      // the client's two 4-tuples went to two backends, round robin...
      expect({ newFlows: (naive.text.match(/^flow /gm) ?? []).length - flowsBefore, ctx }).toEqual({ newFlows: 2, ctx });
      // ...so the very checks the quiclb scenarios pass report the misrouting: the second backend received
      // 1-RTT datagrams carrying the first backend's (decodable) QUIC-LB CIDs, and nothing was served
      const problems = cidRoutingProblems(ss, migration);
      expect({ problems, ctx }).toEqual({
        problems: [expect.stringMatching(/1-RTT datagrams reached a backend that did not issue their DCID$/), 'expected exactly one backend to receive the request, got 0'],
        ctx,
      });
      expect({ foreignDecodable: ss.reduce((n, s) => n + s.shortForeignDecodable, 0) > 0, ctx }).toEqual({ foreignDecodable: true, ctx });
      expect(r.bytes === BODY_BYTES && sameFile(r.file, bodyFile)).toBe(false);
    }), 40000);
  }
});
