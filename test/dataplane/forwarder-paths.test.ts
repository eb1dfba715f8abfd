/**
 * The data plane on each datagram I/O path, forced with the io option (whatever QUICLB_IO says): one traffic
 * pattern leaves the same counters on both paths; worker processes share a port with SO_REUSEPORT on both; a full
 * socket buffer is counted (network namespace). The batched cases are skipped, with a note, when the addon is not
 * built; the other suites run on both paths through scripts/test.sh's second pass (QUICLB_IO=dgram).
 */
import { describe, expect, it, beforeAll, afterAll } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CidEncoder, mintUnroutableCid } from '../../lib/index.js';
import { loadIoAddon } from '../../dataplane/io/addon.js';
import type { IoPath } from '../../dataplane/io/types.js';
import { repoRoot, spawnNode, waitLine, type CliProc } from '../helpers/run-cli.js';
import { config, longPacket, server, shortPacket, snapshot, standaloneYaml, waitFor, Opened, TaggingBackend } from './helpers.js';

const { addon, error } = loadIoAddon();
const PATHS: readonly IoPath[] = addon !== null ? ['batched', 'dgram'] : ['dgram'];
if (addon === null) console.warn(`batched I/O addon not available (${error}): only the dgram path is tested here`);

const rand = (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(Math.random() * 256)));
const cidFor = (sid: string) => new CidEncoder(config(0), Buffer.from(sid, 'hex')).next();

const opened = new Opened();
let backends: TaggingBackend[];
let v6backend: TaggingBackend;
/** A loopback port nothing listens on (bound once, then closed): sends to it draw ICMP port unreachable. */
let closedPort: number;
let dir: string;
const procs: CliProc[] = [];

beforeAll(async () => {
  backends = await Promise.all(['a', 'b', 'c'].map((n) => opened.backend(n)));
  v6backend = await opened.backend('v6', '::1');
  const s = createSocket('udp4');
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  closedPort = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  dir = mkdtempSync(join(tmpdir(), 'quiclb-paths-'));
});
afterAll(async () => {
  for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
  await opened.closeAll();
  rmSync(dir, { recursive: true, force: true });
});

/** Metrics that exist on one path only or hold timings: left out of the comparison. */
const PATH_SPECIFIC = /^(# (HELP|TYPE) )?quiclb_(io_batches_total|io_syscalls_total|io_gso_messages_total|io_gro_[a-z_]+|io_busy_poll_[a-z_]+|io_held_wakeups_total|routing_latency_seconds)/;

/**
 * One scripted traffic pattern, each step awaited so that the counts do not depend on timing: CID routing to
 * every server over IPv4 and IPv6, long and short headers, a fallback (only server a accepts new connections, so
 * it does not depend on the client's port) and the 4-tuple table, a server CID learned from a reply and routed
 * from another client, malformed datagrams, two sends refused by a closed port, replies both ways; then a reload
 * that shortens the idle timeout, and every flow and DCID entry expires. Returns the metrics text.
 */
async function trafficPattern(io: IoPath): Promise<{ text: string; refused: number }> {
  const servers = [
    server('a', '0001', '127.0.0.1', backends[0].port),
    server('b', '0002', '127.0.0.1', backends[1].port, { state: 'draining' }),
    server('c', '0003', '127.0.0.1', backends[2].port, { state: 'draining' }),
    server('gone', '0004', '127.0.0.1', closedPort, { state: 'draining' }),
    server('v6', '0006', '::1', v6backend.port, { state: 'draining' }),
  ];
  const listen = [
    { host: '127.0.0.1', port: 0, family: 4 as const },
    { host: '::1', port: 0, family: 6 as const },
  ];
  const { dp: d, port, port6 } = await opened.dataplane(snapshot(servers, { version: 1, listen }), { io, maxUpstreamSockets: 1000 });
  expect(d.ioPath).toBe(io);
  const c1 = await opened.client();
  const c2 = await opened.client();
  const c3 = await opened.client();
  const c6 = await opened.client('::1');

  for (const [sid, name] of [['0001', 'a'], ['0002', 'b'], ['0003', 'c']]) expect(await c1.request(shortPacket(cidFor(sid)), port)).toBe(name);
  expect(await c1.request(longPacket(cidFor('0002'), rand(8), { type: 2 }), port)).toBe('b');
  expect(await c6.request(shortPacket(cidFor('0006')), port6!, '::1')).toBe('v6');
  expect(await c6.request(shortPacket(cidFor('0001')), port6!, '::1')).toBe('a');
  // Fallback (an Initial whose DCID names no config), then the 4-tuple table.
  expect(await c2.request(longPacket(mintUnroutableCid(16), rand(8)), port)).toBe('a');
  expect(await c2.request(shortPacket(mintUnroutableCid(8)), port)).toBe('a');
  // Server a answers c2 with a Handshake carrying a 0b111 server CID: learned, relayed, then routed for c3.
  const serverCid = mintUnroutableCid(8);
  const upstream = backends[0].received.at(-1)!;
  const repliesBefore = c2.replies.length;
  backends[0].socket.send(longPacket(rand(8), serverCid, { type: 2, size: 300 }), upstream.port, upstream.from);
  expect(await waitFor(() => d.stats().learned === 1 && c2.replies.length === repliesBefore + 1)).toBe(true);
  expect(await c3.request(shortPacket(serverCid), port)).toBe('a');
  // Malformed datagrams, dropped by reason.
  const bad = [Buffer.alloc(0), Buffer.from([0xc0, 0, 0]), Buffer.from([0x40]), Buffer.from([0xc3, 0, 0, 0, 1, 25, ...rand(30)])];
  const received = d.stats().received;
  for (const b of bad) c1.send(b, port);
  expect(await waitFor(() => d.stats().received === received + bad.length)).toBe(true);
  // Two datagrams for a server whose port is closed, one at a time: each draws an ICMP error, counted as refused.
  for (let i = 1; i <= 2; i++) {
    c1.send(shortPacket(cidFor('0004')), port);
    expect(await waitFor(() => d.ioErrors().toServer.refused === i)).toBe(true);
  }
  expect(d.stats().flows).toBe(4);
  // A reload to a 200 ms idle timeout: every flow and DCID entry expires, closing the upstream sockets.
  await d.apply(snapshot(servers, { version: 2, listen, flows: { maxFlows: 1000, idleTimeoutMs: 200 } }));
  expect(await waitFor(() => d.stats().flows === 0 && d.router.dcids.size === 0 && d.upstreamSockets === 0)).toBe(true);
  return { text: await d.registry.metrics(), refused: d.ioErrors().toServer.refused };
}

function comparable(text: string): string[] {
  return text
    .split('\n')
    .filter((l) => l !== '' && !PATH_SPECIFIC.test(l))
    .map((l) => l.replace(/path="(batched|dgram)"/, 'path="<path>"'));
}

describe('the data plane on each I/O path', () => {
  (addon !== null ? it : it.skip)('one traffic pattern leaves the same counters on the batched and the dgram path', async () => {
    const batched = await trafficPattern('batched');
    const dgram = await trafficPattern('dgram');
    expect(comparable(batched.text)).toEqual(comparable(dgram.text));
    // ... and they count what happened (the comparison is not between two empty sets).
    const t = batched.text;
    expect(t).toMatch(/^quiclb_received_packets_total\{lb="test"\} 15$/m);
    expect(t).toMatch(/^quiclb_packets_total\{lb="test",outcome="cid",config_id="0"\} 8$/m);
    expect(t).toMatch(/^quiclb_packets_total\{lb="test",outcome="fallback",config_id="none"\} 1$/m);
    expect(t).toMatch(/^quiclb_table_hits_total\{lb="test",table="tuple"\} 1$/m);
    expect(t).toMatch(/^quiclb_table_hits_total\{lb="test",table="dcid"\} 1$/m);
    expect(t).toMatch(/^quiclb_learned_cids_total\{lb="test"\} 1$/m);
    expect(t).toMatch(/^quiclb_dropped_packets_total\{lb="test",reason="truncated"\} 1$/m);
    expect(t).toMatch(/^quiclb_backend_packets_total\{lb="test",server="a",direction="to_client"\} 6$/m);
    expect(t).toMatch(/^quiclb_backend_packets_total\{lb="test",server="v6",direction="to_server"\} 1$/m);
    expect(t).toMatch(/^quiclb_backend_packets_total\{lb="test",server="gone",direction="to_server"\} 2$/m);
    expect(t).toMatch(/^quiclb_send_errors_total\{lb="test",direction="to_server"\} 2$/m);
    expect(t).toMatch(/^quiclb_io_errors_total\{lb="test",path="batched",direction="to_server",reason="refused"\} 2$/m);
    expect(t).toMatch(/^quiclb_flow_expirations_total\{lb="test",table="flow",state="confirmed"\} 2$/m);
    expect(t).toMatch(/^quiclb_flow_expirations_total\{lb="test",table="flow",state="unconfirmed"\} 2$/m);
    expect(t).toMatch(/^quiclb_flows\{lb="test"\} 0$/m);
    expect(t).toMatch(/^quiclb_upstream_sockets\{lb="test"\} 0$/m);
    expect(t).toMatch(/^quiclb_io_path_info\{lb="test",path="batched"\} 1$/m);
    expect(dgram.text).toMatch(/^quiclb_io_path_info\{lb="test",path="dgram"\} 1$/m);
  }, 30_000);

  for (const io of PATHS) {
    it(`${io}: worker processes share the port with SO_REUSEPORT; each flow stays on one worker; metrics name the path`, async () => {
      const path = join(dir, `workers-${io}.yaml`);
      writeFileSync(
        path,
        standaloneYaml({
          name: 'paths',
          servers: backends.map((b, i) => `  - { id: ${b.name}, address: "127.0.0.1:${b.port}", server_id: "000${i + 1}" }`),
          healthCheck: '{ interval: 200ms, timeout: 150ms }',
          extra: `workers: 2\nio: ${io}\n`,
        }),
      );
      const p = spawnNode(['--import', 'tsx', 'cli/main.ts', 'standalone', '--config', path]);
      procs.push(p);
      const running = JSON.parse(await waitLine(p, /quiclb standalone running/)) as { listen: string[] };
      const port = Number(running.listen[0].split(':')[1]);
      const mon = (JSON.parse(await waitLine(p, /monitoring: /)) as { address: string }).address;
      expect(await waitFor(() => p.out.filter((l) => l.includes('data plane started')).length === 2, 15_000, 25)).toBe(true);
      const started = p.out.filter((l) => l.includes('data plane started')).map((l) => JSON.parse(l) as { pid: number; io: string });
      expect(new Set(started.map((s) => s.pid)).size).toBe(2);
      expect(started.map((s) => s.io)).toEqual([io, io]);

      const N = 24;
      const PER = 4;
      const cs = await Promise.all(Array.from({ length: N }, () => opened.client()));
      const marks = backends.map((b) => b.received.length);
      for (const c of cs) for (let i = 0; i < PER; i++) expect(await c.request(shortPacket(mintUnroutableCid(8)), port)).not.toBeNull();
      // Each client's datagrams reached one backend through one upstream socket: one worker.
      const byClient = new Map<number, Set<string>>();
      backends.forEach((b, i) => {
        for (const r of b.received.slice(marks[i])) {
          const tag = r.data.subarray(r.data.length - 8).toString('hex');
          const owner = cs.findIndex((c) => c.replies.some((rep) => rep.endsWith(`|${tag}`)));
          if (!byClient.has(owner)) byClient.set(owner, new Set());
          byClient.get(owner)!.add(`${b.name}:${r.port}`);
        }
      });
      expect([...byClient.keys()].sort((x, y) => x - y)).toEqual(Array.from({ length: N }, (_, i) => i));
      for (const s of byClient.values()) expect(s.size).toBe(1);

      const metrics = await (await fetch(`http://${mon}/metrics`)).text();
      expect(metrics).toMatch(new RegExp(`^quiclb_received_packets_total\\{lb="paths"\\} ${N * PER}$`, 'm'));
      const perWorker = [...metrics.matchAll(/^quiclb_worker_received_packets_total\{lb="paths",worker="\d"\} (\d+)$/gm)].map((m) => Number(m[1]));
      expect(perWorker).toHaveLength(2);
      expect(perWorker.every((n) => n > 0)).toBe(true); // 24 flows over 2 sockets: p(all on one) = 2^-23
      expect(metrics).toMatch(new RegExp(`^quiclb_io_path_info\\{lb="paths",path="${io}"\\} 1$`, 'm'));
      expect(metrics).not.toMatch(new RegExp(`quiclb_io_path_info\\{lb="paths",path="(?!${io})`));
      // Health probes (run by the primary) reach the servers whichever path the workers run.
      const probed = async () => /^quiclb_health_checks_total\{lb="paths",server="c",result="success"\} [1-9]/m.test(await (await fetch(`http://${mon}/metrics`)).text());
      let ok = await probed();
      for (const end = Date.now() + 5000; !ok && Date.now() < end; ok = await probed()) await new Promise((r) => setTimeout(r, 100));
      expect(ok).toBe(true);
      p.child.kill('SIGTERM');
      expect(await p.exit).toBe(0);
    }, 60_000);
  }
});

// A network namespace of the test's own (loopback only) whose lo has a slow qdisc: datagrams wait there, charged
// to their socket's send buffer. That is the one way to fill a send buffer on loopback: a receiver with a full
// receive buffer makes the kernel drop at the receiver (its socket's drops in /proc/net/udp), never the sender fail.
// 2 Mbit/s: slow enough that the client's burst still waits in the qdisc while the data plane forwards, even when a
// loaded machine deschedules the data plane for a while (at 20 Mbit/s the dgram case sometimes found the queue drained).
const QDISC = 'tbf rate 2mbit burst 4kb limit 16mb';
const probe = spawnSync('unshare', ['-n', 'sh', '-c', `ip link set lo up && tc qdisc add dev lo root ${QDISC}`], { encoding: 'utf8' });
const noNamespace = probe.status !== 0 ? `network namespaces or tc tbf unavailable: ${(probe.stderr || probe.error?.message || '').trim()}` : null;
if (noNamespace) process.stderr.write(`forwarder-paths: full socket buffer cases skipped (${noNamespace})\n`);

interface FullBufferResult {
  io: IoPath;
  sent: number;
  received: number;
  delivered: number;
  ioErrors: { toServer: { refused: number; full: number; other: number } };
  sendErrors: { upstream: number; reply: number };
  metrics: string[];
}

function fullBuffer(io: IoPath, count: number): FullBufferResult {
  const r = spawnSync(
    'unshare',
    ['-n', 'sh', '-c', `ip link set lo up && tc qdisc add dev lo root ${QDISC} && exec "${process.execPath}" --import tsx test/dataplane/forwarder-full-buffer.script.ts ${io} ${count}`],
    { cwd: repoRoot, encoding: 'utf8', timeout: 60_000, env: { ...process.env, NODE_OPTIONS: '' } },
  );
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as FullBufferResult;
  } catch {
    throw new Error(`full-buffer scenario failed (status ${r.status}):\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`);
  }
}

describe('a full socket buffer (network namespace, slow loopback qdisc)', () => {
  for (const io of PATHS) {
    (noNamespace ? it.skip : it)(`${io}: a burst of 3000 datagrams to one server is delivered or counted, every one`, () => {
      const r = fullBuffer(io, 3000);
      expect(r.io).toBe(io);
      expect(r.received).toBe(3000);
      expect(r.delivered + r.ioErrors.toServer.full).toBe(r.received);
      expect(r.ioErrors.toServer.refused + r.ioErrors.toServer.other).toBe(0);
      // batched: sendmmsg meets EAGAIN once the upstream socket's send buffer is full. dgram: libuv never reports
      // EAGAIN and queues in memory instead, so the data plane bounds that queue (256 per socket). Both: the
      // excess is dropped and counted, never held without bound.
      expect(r.ioErrors.toServer.full).toBeGreaterThan(0);
      expect(r.sendErrors.upstream).toBe(r.ioErrors.toServer.full);
      expect(r.metrics).toContain(`quiclb_io_errors_total{lb="test",path="${io}",direction="to_server",reason="full"} ${r.ioErrors.toServer.full}`);
      expect(r.metrics).toContain(`quiclb_send_errors_total{lb="test",direction="to_server"} ${r.ioErrors.toServer.full}`);
      if (io === 'dgram') expect(r.delivered).toBeGreaterThanOrEqual(256);
    }, 70_000);
  }
});
