/**
 * Real QUIC, QUIC-LB routing + client migration, end to end on loopback:
 *   client   : Debian ngtcp2 gtlsclient (HTTP/3; --change-local-addr = active migration to a new CID,
 *              --nat-rebinding = new address with the same CID)
 *   LB       : `quiclb standalone` (child process), encrypted QUIC-LB config (four-pass, 20-byte CIDs)
 *   backends : three @matrixai/quic (quiche) HTTP/3 servers minting encrypted QUIC-LB CIDs with the project's
 *              generator, each recording the DCID of every datagram its socket receives.
 * Checks: the body arrives byte-identical, every 1-RTT datagram reached the backend that issued its DCID,
 * the serving backend saw the client's path change (a second LB upstream socket) and, for active migration,
 * a second DCID; the LB routed by CID. The same scenarios through a naive round-robin-per-4-tuple forwarder
 * must fail (proof that these checks can fail).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startStandalone, freeTcpPort, sumSamples, writeStandaloneYaml, type StandaloneDataplane } from './peers/dataplane.js';
import { startMatrixaiBackend, type BackendStats, type MatrixaiBackend } from './peers/matrixai.js';
import { gtlsclientPath, gtlsDownload, sameFile } from './peers/ngtcp2.js';
import { expectNoProblems, makeCert, ProcGroup, type Proc } from './peers/proc.js';
import { freeUdpPort, waitForQuic } from './peers/udp.js';

const BODY_BYTES = 6_000_000;
const group = new ProcGroup('lb-migration');
const bodyFile = join(group.dir, 'body.bin');
let backends: MatrixaiBackend[] = [];
/** The data planes under test: one process, and 2 worker processes sharing the port (SO_REUSEPORT). */
const lbs: { title: string; dp?: StandaloneDataplane; port: number }[] = [
  { title: 'quiclb (1 process)', port: 0 },
  { title: 'quiclb (workers: 2, SO_REUSEPORT)', port: 0 },
];
let naive: Proc;
let naivePort = 0;

beforeAll(async () => {
  gtlsclientPath(); // a missing client fails the suite here, it is never skipped
  makeCert(group.dir);
  writeFileSync(bodyFile, randomBytes(BODY_BYTES));
  const ports = [await freeUdpPort(), await freeUdpPort(), await freeUdpPort()];
  const key = randomBytes(16).toString('base64');
  for (const l of lbs) l.port = await freeUdpPort();
  naivePort = await freeUdpPort();
  const yamls = [join(group.dir, 'quiclb.yaml'), join(group.dir, 'quiclb-workers.yaml')];
  const metricsPorts = [await freeTcpPort(), await freeTcpPort()];
  // the two files differ only in listen, workers and the monitoring port
  lbs.forEach((l, i) => writeStandaloneYaml(yamls[i], {
    name: 'e2e-migration',
    listen: [`127.0.0.1:${l.port}`],
    ...(i === 1 ? { workers: 2 } : {}),
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
  }));
  backends = await Promise.all(ports.map((port, i) =>
    startMatrixaiBackend(group, `b${i + 1}`, { port, configFile: yamls[0], serverName: `b${i + 1}`, certDir: group.dir, bodyFile, extraCids: 3 })));
  await Promise.all(lbs.map(async (l, i) => {
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

async function resetBackends(): Promise<void> {
  await Promise.all(backends.map((b) => b.reset()));
}

async function allStats(): Promise<BackendStats[]> {
  return Promise.all(backends.map((b) => b.stats()));
}

const describeStats = (ss: BackendStats[]): string =>
  ss.map((s) => `${s.serverId}: conns=${s.connections} resp=${s.responses} own1rtt=${s.shortOwn} foreign1rtt=${s.shortForeign} ` +
    `(decodable ${s.shortForeignDecodable}) paths=${JSON.stringify(s.senders.map((a) => s.perSender[a]))} dcids=${Object.keys(s.dcids).length} long=${JSON.stringify(s.long)}` +
    (s.uncaught.length ? ` uncaught=${JSON.stringify(s.uncaught)}` : '')).join('\n');

async function download(port: number, name: string, args: string[]) {
  return gtlsDownload(group, name, { host: '127.0.0.1', port, path: '/', downloadDir: join(group.dir, `dl-${name}`), args, idleTimeout: '4s', timeoutMs: 25000 });
}

type Migration = 'active' | 'active-mid' | 'nat';

/** What is wrong with a run that should have succeeded (empty = all checks passed). */
function cidRoutingProblems(ss: BackendStats[], migration: Migration): string[] {
  const problems: string[] = [];
  const foreign = ss.reduce((n, s) => n + s.shortForeign, 0);
  // every 1-RTT datagram, on every backend, carried a DCID that this backend issued
  if (foreign !== 0) problems.push(`${foreign} 1-RTT datagrams reached a backend that did not issue their DCID`);
  const serving = ss.filter((s) => s.responses > 0);
  if (serving.length !== 1) return [...problems, `expected exactly one backend to serve the request, got ${serving.length}`];
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
 * Known peer bug: @matrixai/quic 2.0.9 (quiche) sometimes stops sending stream data after the client migrates
 * in the middle of a download, with no load balancer in the path at all (measured here: 5 of 40 single
 * downloads of 6 MB straight from a backend with --change-local-addr=50ms stalled; gtlsclient against
 * gtlsserver: 0 of 30). Migrations before the request never stalled (0 of 30, 0 of 32 with 4 clients).
 * So the mid-transfer scenario gets up to 3 attempts; every attempt must pass every routing check, and the
 * LB must not have dropped a datagram; only a body that stalls with correct routing is retried.
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
        const delta = (name: string, labels: Record<string, string> = {}): number => sumSamples(after, name, labels) - sumSamples(before, name, labels);
        const problems = cidRoutingProblems(ss, migration);
        // the LB decoded every 1-RTT datagram the backends received (not a lucky 4-tuple hash)
        const own = ss.reduce((n, s) => n + s.shortOwn, 0);
        const cidRouted = delta('quiclb_packets_total', { outcome: 'cid' });
        if (cidRouted < own) problems.push(`quiclb routed ${cidRouted} datagrams by CID, fewer than the ${own} 1-RTT datagrams delivered`);
        const dropped = delta('quiclb_dropped_packets_total');
        if (dropped > 0) problems.push(`quiclb dropped ${dropped} datagrams`);
        const bodyOk = r.bytes === BODY_BYTES && sameFile(r.file, bodyFile);
        const context = { attempt, stalledBefore: stalled, backends: describeStats(ss), client: r.output.slice(-600), quiclbLog: lb.proc.tail(800) };
        if (bodyOk || problems.length > 0 || attempt >= attempts) {
          if (!bodyOk) problems.unshift(`body: ${r.bytes} bytes after ${r.ms} ms, not the ${BODY_BYTES} served`);
          expectNoProblems(problems, context);
          return;
        }
        stalled.push(`attempt ${attempt}: ${r.bytes} bytes after ${r.ms} ms, routing correct (${describeStats(ss.filter((s) => s.responses > 0))})`);
        process.stderr.write(`[e2e] ${l.title} ${title}: the download stalled with correct routing (known @matrixai/quic bug), retrying\n`);
      }
    }), 60000);
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
    const delta = (name: string, labels: Record<string, string> = {}): number => sumSamples(after, name, labels) - sumSamples(before, name, labels);
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
    const own = ss.reduce((n, s) => n + s.shortOwn, 0);
    const cidRouted = delta('quiclb_packets_total', { outcome: 'cid' });
    if (cidRouted < own) problems.push(`quiclb routed ${cidRouted} datagrams by CID, fewer than the ${own} 1-RTT datagrams delivered`);
    const counters = [...after].filter(([k, v]) => /^quiclb_(dropped|send_errors|packets_total|backend_packets|flow)/.test(k) && v !== (before.get(k) ?? 0))
      .map(([k, v]) => `${k} +${v - (before.get(k) ?? 0)}`);
    expectNoProblems(problems, { backends: describeStats(ss), counters, clients: rs.map((r) => `${r.bytes} B ${r.ms} ms: ${r.output.slice(-200)}`) });
  }), 40000);
});

describe('the same scenarios through a naive round-robin-per-4-tuple forwarder fail (the checks can fail)', () => {
  const cases: [string, Migration, string[]][] = [
    ['active migration before the request', 'active', ['--change-local-addr=100ms', '--delay-stream=400ms']],
    ['NAT rebinding before the request', 'nat', ['--change-local-addr=100ms', '--nat-rebinding', '--delay-stream=400ms']],
  ];
  for (const [title, migration, args] of cases) {
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
        problems: [expect.stringMatching(/1-RTT datagrams reached a backend that did not issue their DCID$/), 'expected exactly one backend to serve the request, got 0'],
        ctx,
      });
      expect({ foreignDecodable: ss.reduce((n, s) => n + s.shortForeignDecodable, 0) > 0, ctx }).toEqual({ foreignDecodable: true, ctx });
      expect(r.bytes === BODY_BYTES && sameFile(r.file, bodyFile)).toBe(false);
    }), 40000);
  }
});
