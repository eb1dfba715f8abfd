/**
 * Stable upstream ports (dataplane/upstream-ports.ts): a data plane restarted with the same seed reaches the backend
 * from the same local port for the same client flow (the backend sees no path change); a candidate in use is
 * skipped, all in use leaves the choice to the kernel; on both I/O paths, with real sockets.
 */
import { afterAll, afterEach, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { CidEncoder } from '../../lib/index.js';
import { formatSocketAddress } from '../../lib/config/address.js';
import { Dataplane } from '../../dataplane/dataplane.js';
import { readReservedPorts } from '../../dataplane/resources.js';
import { loadIoAddon } from '../../dataplane/io/addon.js';
import { DgramIo } from '../../dataplane/io/dgram-io.js';
import type { IoErrorCounts, IoPath } from '../../dataplane/io/types.js';
import { attachMetrics, type MetricsSource } from '../../dataplane/metrics.js';
import { createSeedFile, loadOrCreateSeed, PORT_TRIES, SEED_BYTES, UpstreamPortPicker } from '../../dataplane/upstream-ports.js';
import { freeUdpPort } from '../agent/fake-operator.js';
import { repoRoot, runNode } from '../helpers/run-cli.js';
import { Client, config, server, shortPacket, snapshot, TaggingBackend, waitFor } from './helpers.js';

/**
 * Stable ports of these tests come from a range outside the kernel's ephemeral one: other suites running beside
 * them hold ephemeral ports, which would now and then take a flow's own port (it would be probed, not hashed).
 */
const TEST_RANGE = { low: 20000, high: 29999 };

const tmp = mkdtempSync(join(tmpdir(), 'quiclb-upstream-ports-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('UpstreamPortPicker', () => {
  const range = { low: 40000, high: 40999 };
  const srv = { host: '127.0.0.1', port: 4433, family: 4 as const };

  it('derives the same candidates from the same seed and flow, others from another seed or flow', () => {
    const seed = randomBytes(SEED_BYTES);
    const a = Array.from(new UpstreamPortPicker(seed, range).portsFor('127.0.0.1:443', '10.0.0.1', 5000, srv));
    const b = Array.from(new UpstreamPortPicker(Buffer.from(seed), range).portsFor('127.0.0.1:443', '10.0.0.1', 5000, srv));
    expect(a).toEqual(b);
    expect(a[0]).toBe(PORT_TRIES);
    for (const p of a.slice(1)) expect(p >= range.low && p <= range.high).toBe(true);
    // 200 other flows / seeds: their first candidates are spread over the range, not one port
    const picker = new UpstreamPortPicker(seed, range);
    const firsts = new Set<number>();
    for (let port = 1; port <= 200; port++) firsts.add(picker.portsFor('127.0.0.1:443', '10.0.0.1', port, srv)[1]);
    expect(firsts.size).toBeGreaterThan(150);
    const otherSeeds = new Set<number>();
    for (let i = 0; i < 200; i++) otherSeeds.add(new UpstreamPortPicker(randomBytes(SEED_BYTES), range).portsFor('127.0.0.1:443', '10.0.0.1', 5000, srv)[1]);
    expect(otherSeeds.size).toBeGreaterThan(150);
    // the server, the listener and the client address are part of the flow's key (4 equal candidates by chance: 1e-12)
    const key = (...a: Parameters<UpstreamPortPicker['portsFor']>) => Array.from(picker.portsFor(...a)).join();
    const base = key('127.0.0.1:443', '10.0.0.1', 5000, srv);
    expect(key('127.0.0.1:443', '10.0.0.1', 5000, { ...srv, port: 4434 })).not.toBe(base);
    expect(key('127.0.0.1:443', '10.0.0.1', 5000, { ...srv, host: '127.0.0.2' })).not.toBe(base);
    expect(key('127.0.0.1:444', '10.0.0.1', 5000, srv)).not.toBe(base);
    expect(key('127.0.0.1:443', '10.0.0.2', 5000, srv)).not.toBe(base);
    expect(key('127.0.0.1:443', '10.0.0.1', 5000, srv)).toBe(base);
  });

  it('never offers a reserved port (ip_local_reserved_ports) nor the same port twice', () => {
    const seed = randomBytes(SEED_BYTES);
    const tiny = { low: 40000, high: 40003 };
    // 4 ports, 8 digest words: repeats are skipped, so fewer than 4 candidates but all distinct
    const reserved = readReservedPorts('40001,40002-40002\n');
    expect(reserved !== null && reserved[40001] === 1 && reserved[40002] === 1 && reserved[40000] === 0).toBe(true);
    for (let port = 1; port <= 300; port++) {
      const all = Array.from(new UpstreamPortPicker(seed, tiny).portsFor('127.0.0.1:443', '10.0.0.1', port, srv));
      expect(new Set(all.slice(1, 1 + all[0])).size).toBe(all[0]);
      const free = Array.from(new UpstreamPortPicker(seed, tiny, reserved).portsFor('127.0.0.1:443', '10.0.0.1', port, srv));
      expect(free[0]).toBeLessThanOrEqual(2);
      for (const p of free.slice(1, 1 + free[0])) expect([40000, 40003]).toContain(p);
    }
    // everything reserved: no candidate (the kernel chooses)
    expect(new UpstreamPortPicker(seed, tiny, readReservedPorts('39000-41000')).portsFor('127.0.0.1:443', '10.0.0.1', 1, srv)[0]).toBe(0);
    expect(readReservedPorts('')).toBeNull();
    expect(readReservedPorts('\n')).toBeNull();
    expect(readReservedPorts('65000-70000')![65535]).toBe(1);
  });

  it('refuses a short seed and a bad range', () => {
    expect(() => new UpstreamPortPicker(randomBytes(8), range)).toThrow(/at least 16 bytes/);
    expect(() => new UpstreamPortPicker(randomBytes(32), { low: 5000, high: 4000 })).toThrow(/not a port range/);
    expect(() => new UpstreamPortPicker(randomBytes(32), { low: 0, high: 4000 })).toThrow(/not a port range/);
  });
});

describe('loadOrCreateSeed', () => {
  it('creates a private seed once and reads the same one afterwards', () => {
    const path = join(tmp, 'seed-a');
    const s1 = loadOrCreateSeed(path);
    expect(s1.length).toBe(SEED_BYTES);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(loadOrCreateSeed(path).equals(s1)).toBe(true);
    expect(readFileSync(path).equals(s1)).toBe(true);
    expect(readdirSync(tmp).filter((f) => f.endsWith('.tmp'))).toEqual([]); // no temporary file left
  });

  it('a seed that another process created first (between the read and the write) is never replaced', () => {
    const path = join(tmp, 'seed-c');
    const theirs = randomBytes(SEED_BYTES);
    writeFileSync(path, theirs, { mode: 0o600 });
    expect(createSeedFile(path, randomBytes(SEED_BYTES))).toBe(false);
    expect(readFileSync(path).equals(theirs)).toBe(true);
    expect(loadOrCreateSeed(path).equals(theirs)).toBe(true);
    expect(readdirSync(tmp).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('never replaces a file that is not a seed, and names it', () => {
    const path = join(tmp, 'seed-b');
    writeFileSync(path, 'not a seed');
    expect(() => loadOrCreateSeed(path)).toThrow(`${path}: not an upstream port seed (10 bytes, expected 32)`);
    expect(readFileSync(path, 'latin1')).toBe('not a seed');
    expect(() => loadOrCreateSeed(join(tmp, 'missing-dir', 'seed'))).toThrow(`${join(tmp, 'missing-dir', 'seed')}: cannot create the upstream port seed (ENOENT)`);
    const dangling = join(tmp, 'seed-dangling');
    symlinkSync(join(tmp, 'nowhere'), dangling);
    expect(() => loadOrCreateSeed(dangling)).toThrow(`${dangling}: cannot read the upstream port seed (a dangling symbolic link?)`);
    const linked = join(tmp, 'seed-linked');
    const target = loadOrCreateSeed(join(tmp, 'seed-target'));
    symlinkSync(join(tmp, 'seed-target'), linked); // a mounted Secret: a symbolic link to the seed
    expect(loadOrCreateSeed(linked).equals(target)).toBe(true);
    const dir = join(tmp, 'seed-dir');
    mkdirSync(dir);
    expect(() => loadOrCreateSeed(dir)).toThrow(/cannot read the upstream port seed \(EISDIR\)/);
    if (process.getuid?.() !== 0) {
      const ro = join(tmp, 'ro');
      mkdirSync(ro);
      chmodSync(ro, 0o500);
      expect(() => loadOrCreateSeed(join(ro, 'seed'))).toThrow(`${join(ro, 'seed')}: cannot create the upstream port seed (EACCES)`);
    }
  });
});

const paths = loadIoAddon().addon === null ? (['dgram'] as const) : (['batched', 'dgram'] as const);

describe.each(paths)('stable upstream ports on the %s path', (io) => {
  const opened: { dps: Dataplane[]; sockets: Socket[]; backends: TaggingBackend[]; clients: Client[] } = { dps: [], sockets: [], backends: [], clients: [] };
  afterEach(async () => {
    for (const dp of opened.dps.splice(0)) await dp.stop();
    for (const s of opened.sockets.splice(0)) s.close();
    for (const c of opened.clients.splice(0)) await c.close();
    for (const b of opened.backends.splice(0)) await b.close();
  });

  const cid = () => new CidEncoder(config(0), Buffer.from('0001', 'hex')).next();

  async function setup() {
    const backend = await TaggingBackend.start('a');
    opened.backends.push(backend);
    const client = await Client.open();
    opened.clients.push(client);
    const listen = { host: '127.0.0.1', port: await freeUdpPort(), family: 4 as const };
    const snap = snapshot([server('a', '0001', '127.0.0.1', backend.port)], { listen: [listen] });
    return { backend, client, listen, snap };
  }

  async function startDp(snap: ReturnType<typeof snapshot>, seed?: Uint8Array): Promise<Dataplane> {
    const dp = new Dataplane({ healthChecks: false, io, upstreamPortRange: TEST_RANGE, ...(seed ? { upstreamPortSeed: seed } : {}) });
    opened.dps.push(dp);
    await dp.start(snap);
    return dp;
  }

  /** The local port the backend saw for one request of this client through the data plane. */
  async function upstreamPort(s: Awaited<ReturnType<typeof setup>>): Promise<number> {
    const before = s.backend.received.length;
    expect(await s.client.request(shortPacket(cid()), s.listen.port)).toBe('a');
    return s.backend.received[before].port;
  }

  async function occupy(port: number): Promise<void> {
    const sock = createSocket('udp4');
    sock.bind(port);
    await once(sock, 'listening');
    opened.sockets.push(sock);
  }

  async function stopDp(dp: Dataplane): Promise<void> {
    opened.dps.splice(opened.dps.indexOf(dp), 1);
    await dp.stop();
  }

  it('a restart with the same seed reaches the backend from the same port; counted as hashed', async () => {
    const s = await setup();
    const seed = randomBytes(SEED_BYTES);
    const range = TEST_RANGE;
    const expected = new UpstreamPortPicker(seed, range, readReservedPorts()).portsFor(formatSocketAddress(s.listen), '127.0.0.1', s.client.port, { host: '127.0.0.1', port: s.backend.port, family: 4 });
    let dp = await startDp(s.snap, seed);
    const first = await upstreamPort(s);
    expect(first).toBe(expected[1]);
    expect(dp.upstreamPortChoices()).toEqual({ hashed: 1, probed: 0, kernel: 0 });
    expect(await dp.registry.getSingleMetricAsString('quiclb_upstream_ports_total')).toMatch(/choice="hashed"} 1/);
    await stopDp(dp);
    dp = await startDp(s.snap, seed);
    expect(await upstreamPort(s)).toBe(first);
    // without a seed the kernel chooses (and nothing is counted)
    await stopDp(dp);
    dp = await startDp(s.snap);
    expect(await upstreamPort(s)).not.toBe(first); // an ephemeral port equal to it by chance: 1 in ~28 000
    expect(dp.upstreamPortChoices()).toBeNull();
  });

  it('a candidate in use is skipped (probed); all in use: the kernel chooses, and traffic flows either way', async () => {
    const s = await setup();
    const seed = randomBytes(SEED_BYTES);
    const range = TEST_RANGE;
    const c = Array.from(new UpstreamPortPicker(seed, range, readReservedPorts()).portsFor(formatSocketAddress(s.listen), '127.0.0.1', s.client.port, { host: '127.0.0.1', port: s.backend.port, family: 4 }));
    await occupy(c[1]);
    let dp = await startDp(s.snap, seed);
    expect(await upstreamPort(s)).toBe(c[2]);
    expect(dp.upstreamPortChoices()).toEqual({ hashed: 0, probed: 1, kernel: 0 });
    await stopDp(dp);
    for (const p of c.slice(2)) await occupy(p);
    dp = await startDp(s.snap, seed);
    const port = await upstreamPort(s);
    expect(c.slice(1)).not.toContain(port);
    expect(dp.upstreamPortChoices()).toEqual({ hashed: 0, probed: 0, kernel: 1 });
    expect(await s.client.request(shortPacket(cid()), s.listen.port)).toBe('a'); // the same upstream again
    expect(dp.stats().upstreamSockets).toBe(1);
  });
});

describe('node:dgram path: an upstream closed while its candidates are being bound', () => {
  it('leaves no socket open, reports no error and counts no choice, whenever the close comes', async () => {
    const errors: string[] = [];
    const io = new DgramIo<null, null>({ onClient: () => {}, onReply: () => {}, onError: (_d, e) => errors.push(String(e)) });
    const listener = await io.openListener({ host: '127.0.0.1', port: 0, family: 4 }, { reusePort: false, bufferBytes: 0 }, null);
    const held: Socket[] = [];
    const range = TEST_RANGE;
    const picker = new UpstreamPortPicker(randomBytes(SEED_BYTES), range);
    const server = { host: '127.0.0.1', port: 9, family: 4 as const };
    const udp = () => process.getActiveResourcesInfo().filter((r) => r === 'UDPWrap').length;
    try {
      const ports = Array.from(picker.portsFor('l', '127.0.0.1', 1, server));
      for (const p of ports.slice(1, 1 + ports[0])) {
        const sock = createSocket('udp4');
        sock.bind(p);
        await once(sock, 'listening');
        held.push(sock);
      }
      await new Promise((r) => setTimeout(r, 100)); // the sockets of earlier tests finish closing
      const baseline = udp();
      const turn = () => new Promise((r) => setImmediate(r));
      // every candidate in use: each refused bind replaces the socket; close after 0..8 event-loop turns
      for (let turns = 0; turns <= 8; turns++) {
        const up = io.openUpstream(listener, server, '127.0.0.1', 1, null, picker.portsFor('l', '127.0.0.1', 1, server))!;
        for (let i = 0; i < turns; i++) await turn();
        io.closeUpstream(up);
        for (let i = 0; i < 10; i++) await turn();
        expect(udp()).toBe(baseline);
      }
      expect(errors).toEqual([]);
      const c = io.portChoices();
      expect(c.hashed + c.probed).toBe(0);
      expect(c.kernel).toBeLessThanOrEqual(9); // counted only when the close came after the last refused candidate
    } finally {
      for (const s of held) s.close();
      await io.closeListener(listener);
    }
  });
});

/** The stray series of quiclb_io_errors_total for these counts. */
async function strayMetric(path: IoPath, errors: IoErrorCounts): Promise<string | undefined> {
  const registry = new Registry();
  attachMetrics(registry, { lbName: 't', ioPath: path, ioErrors: () => errors } as unknown as MetricsSource);
  const text = await registry.getSingleMetricAsString('quiclb_io_errors_total');
  return text.split('\n').find((l) => l.includes('reason="stray"'));
}

/** Sends `n` datagrams to 127.0.0.1:port from another process, run to its end while this one waits. */
function sendFromAnotherProcess(port: number, n: number, payload: string): void {
  const code = `const s = require('node:dgram').createSocket('udp4'); let k = ${n}; for (let i = 0; i < ${n}; i++) s.send('${payload}', ${port}, '127.0.0.1', () => { if (--k === 0) s.close(); });`;
  execFileSync(process.execPath, ['-e', code], { timeout: 10_000 });
}

/** node:dgram I/O with a listener, and an echo server answering "pong" to whatever reaches it; `replies` collects what is relayed. */
async function dgramWithEcho() {
  const replies: string[] = [];
  const io = new DgramIo<null, null>({ onClient: () => {}, onReply: (_o, b, off, len) => replies.push(b.toString('latin1', off, off + len)), onError: () => {} });
  const listener = await io.openListener({ host: '127.0.0.1', port: 0, family: 4 }, { reusePort: false, bufferBytes: 0 }, null);
  const echo = createSocket('udp4');
  echo.on('message', (_m, r) => echo.send('pong', r.port, r.address));
  echo.bind(0, '127.0.0.1');
  await once(echo, 'listening');
  const server = { host: '127.0.0.1', port: echo.address().port, family: 4 as const };
  return { replies, io, listener, echo, server };
}

describe('node:dgram path: a datagram that reached a bound candidate port before its connect()', () => {
  it('is not relayed to the client as the server\'s reply but counted as stray; the server\'s replies are relayed', async () => {
    const { replies, io, listener, echo, server } = await dgramWithEcho();
    const STRAYS = 3;
    try {
      const port = await freeUdpPort();
      const up = io.openUpstream(listener, server, '127.0.0.1', 1, null, Int32Array.of(1, port))!;
      // Bound, not yet connected (node:dgram connects a few ticks after the bind): another process, run to its end
      // while this one waits, sends to the port now; the kernel keeps those datagrams queued past the connect().
      (up as unknown as { socket: Socket }).socket.once('listening', () => sendFromAnotherProcess(port, STRAYS, 'stray'));
      const deadline = Date.now() + 5000;
      while (!replies.includes('pong') && Date.now() < deadline) {
        io.sendToServer(up, Buffer.from('ping'), 0, 4);
        await new Promise((r) => setTimeout(r, 20));
      }
      await new Promise((r) => setTimeout(r, 50)); // anything else already queued arrives too
      expect(io.portChoices().hashed).toBe(1); // the candidate port was the one taken
      expect(replies.length).toBeGreaterThan(0);
      expect(new Set(replies)).toEqual(new Set(['pong']));
      expect(io.errors().stray).toBe(STRAYS);
      expect(await strayMetric('dgram', io.errors())).toBe(`quiclb_io_errors_total{lb="t",path="dgram",direction="to_client",reason="stray"} ${STRAYS}`);

      // Connected now: the kernel delivers only the server's datagrams to this socket, so a third party's never
      // reach node:dgram (nothing to relay, nothing to count: on this path a stray can only arrive before connect()).
      const before = replies.length;
      sendFromAnotherProcess(port, 2, 'late');
      io.sendToServer(up, Buffer.from('ping'), 0, 4);
      expect(await waitFor(() => replies.length > before)).toBe(true);
      await new Promise((r) => setTimeout(r, 50));
      expect(new Set(replies)).toEqual(new Set(['pong']));
      expect(io.errors().stray).toBe(STRAYS);
      io.closeUpstream(up);
    } finally {
      echo.close();
      await io.closeListener(listener);
    }
  });
});

describe('node:dgram path: a datagram from the server itself that reached a bound candidate port before its connect()', () => {
  // node:dgram has no synchronous receive to empty the queue right after connect(), and once read the stale datagram
  // looks like the first reply: it reaches the client, whose QUIC stack drops what it cannot decrypt
  // (docs/dataplane-agent.md). This pins that the only difference from the batched path is there.
  it('is relayed to the client as a reply and not counted as stray (the batched path drops it)', async () => {
    const { replies, io, listener, echo, server } = await dgramWithEcho();
    try {
      const port = await freeUdpPort();
      const up = io.openUpstream(listener, server, '127.0.0.1', 1, null, Int32Array.of(1, port))!;
      // The server's own socket sends to the bound port, and only once its datagram is queued there (the send's
      // callback: loopback delivers within the sendmsg) does the upstream's connect() go ahead.
      const sock = (up as unknown as { socket: Socket }).socket;
      const connect = sock.connect.bind(sock) as (port: number, host: string, cb: () => void) => void;
      let sent: Error | null | undefined;
      sock.connect = ((p: number, h: string, cb: () => void) =>
        echo.send('stale', port, '127.0.0.1', (e) => {
          sent = e;
          connect(p, h, cb);
        })) as Socket['connect'];
      for (const end = Date.now() + 5000; !replies.includes('pong') && Date.now() < end; ) {
        io.sendToServer(up, Buffer.from('ping'), 0, 4);
        await new Promise((r) => setTimeout(r, 20));
      }
      await new Promise((r) => setTimeout(r, 50));
      expect(sent).toBeNull();
      expect(io.portChoices().hashed).toBe(1);
      expect(replies[0]).toBe('stale'); // queued before the server's replies, relayed as one of them
      expect(new Set(replies.slice(1))).toEqual(new Set(['pong']));
      expect(io.errors().stray).toBe(0);
      io.closeUpstream(up);
    } finally {
      echo.close();
      await io.closeListener(listener);
    }
  });
});

/**
 * The batched path binds and connects in one call of the addon, so no other process can be scheduled in between:
 * an LD_PRELOAD shim's connect() sends the strays (from a socket of its own, to the port the upstream socket is
 * bound to) just before the real connect(). The shim acts only on a datagram socket bound to STRAY_PORT. With
 * SERVER_COUNT it first sends that many from the server itself: the socket of this process bound to the address
 * connect() targets (the child's echo server); it writes how many it sent to SERVER_SENT_FILE.
 */
const SHIM = String.raw`
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
int connect(int fd, const struct sockaddr *addr, socklen_t len) {
  static int (*real)(int, const struct sockaddr *, socklen_t);
  if (!real) real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
  const char *port = getenv("STRAY_PORT"), *count = getenv("STRAY_COUNT");
  struct sockaddr_in me;
  socklen_t ml = sizeof me;
  int type = 0;
  socklen_t tl = sizeof type;
  if (port && count && getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_DGRAM &&
      getsockname(fd, (struct sockaddr *)&me, &ml) == 0 && me.sin_family == AF_INET && ntohs(me.sin_port) == atoi(port)) {
    struct sockaddr_in to;
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_port = me.sin_port;
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const char *server = getenv("SERVER_COUNT"), *report = getenv("SERVER_SENT_FILE");
    const struct sockaddr_in *target = (const struct sockaddr_in *)addr;
    if (server && report && len >= sizeof *target && target->sin_family == AF_INET) {
      int sent = 0;
      for (int f = 0; f < 4096; f++) {
        struct sockaddr_in b;
        socklen_t bl = sizeof b;
        if (f == fd || getsockopt(f, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_DGRAM ||
            getsockname(f, (struct sockaddr *)&b, &bl) != 0 || b.sin_family != AF_INET ||
            b.sin_port != target->sin_port || b.sin_addr.s_addr != target->sin_addr.s_addr) continue;
        for (int i = 0; i < atoi(server); i++) sent += sendto(f, "stale", 5, 0, (struct sockaddr *)&to, sizeof to) == 5;
        break;
      }
      FILE *out = fopen(report, "w");
      if (out) { fprintf(out, "%d", sent); fclose(out); }
    }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    for (int i = 0; i < atoi(count); i++) sendto(s, "stray", 5, 0, (struct sockaddr *)&to, sizeof to);
    close(s);
  }
  return real(fd, addr, len);
}
`;

/** The child: a BatchedIo relaying one client's pings to an echo server from candidate port STRAY_PORT. */
const BATCHED_CHILD = `
  const { createSocket } = await import('node:dgram');
  const { once } = await import('node:events');
  const { execFileSync } = await import('node:child_process');
  const { loadIoAddon } = await import(process.env.ROOT + '/dataplane/io/addon.ts');
  const { BatchedIo } = await import(process.env.ROOT + '/dataplane/io/batched-io.ts');
  const port = Number(process.env.STRAY_PORT);
  const replies = [];
  let up = null;
  const io = new BatchedIo(loadIoAddon().addon, {
    onClient: (_owner, b, off, len) => {
      up ??= io.openUpstream(l, server, '', 0, 'U', Int32Array.of(1, port));
      io.sendToServer(up, b, off, len);
    },
    onReply: (_u, b, off, len) => replies.push(b.toString('latin1', off, off + len)),
    onError: () => {},
  }, null, { slots: 16 });
  const echo = createSocket('udp4');
  echo.on('message', (_m, r) => echo.send('pong', r.port, r.address));
  echo.bind(0, '127.0.0.1');
  await once(echo, 'listening');
  const server = { host: '127.0.0.1', port: echo.address().port, family: 4 };
  const l = await io.openListener({ host: '127.0.0.1', port: 0, family: 4 }, { reusePort: false, bufferBytes: 0 }, 'L');
  const client = createSocket('udp4');
  client.bind(0, '127.0.0.1');
  await once(client, 'listening');
  const wait = async (f) => { for (const end = Date.now() + 5000; !f() && Date.now() < end; ) { client.send('ping', l.bound.port, '127.0.0.1'); await new Promise((r) => setTimeout(r, 20)); } };
  await wait(() => replies.includes('pong'));
  await new Promise((r) => setTimeout(r, 50));
  const first = { replies: [...new Set(replies)], errors: io.errors(), choices: io.portChoices() };
  // connected: a third party's datagrams to the port never reach the socket
  const code = "const s = require('node:dgram').createSocket('udp4'); let k = 2; for (let i = 0; i < 2; i++) s.send('late', " + port + ", '127.0.0.1', () => { if (--k === 0) s.close(); });";
  execFileSync(process.execPath, ['-e', code], { env: { ...process.env, LD_PRELOAD: '' } });
  const n = replies.length;
  await wait(() => replies.length > n);
  await new Promise((r) => setTimeout(r, 50));
  console.log(JSON.stringify({ first, later: { replies: [...new Set(replies)], stray: io.errors().stray } }));
  io.close();
  process.exit(0);
`;

const describeAddon = loadIoAddon().addon !== null ? describe : describe.skip;

interface BatchedReport {
  first: { replies: string[]; errors: IoErrorCounts; choices: unknown };
  later: { replies: string[]; stray: number };
}

let shimFile: string | undefined;

/** Runs BATCHED_CHILD under SHIM (compiled once) with these variables, from candidate port STRAY_PORT (free): its report. */
async function runBatchedChild(env: Record<string, string>): Promise<BatchedReport> {
  if (shimFile === undefined) {
    const shim = join(tmp, 'stray-shim.so');
    const cc = spawnSync(process.env.CC ?? 'cc', ['-O1', '-Wall', '-shared', '-fPIC', '-o', shim, '-x', 'c', '-', '-ldl'], { input: SHIM, encoding: 'utf8', timeout: 60_000 });
    expect({ status: cc.status, stderr: cc.stderr }).toEqual({ status: 0, stderr: '' });
    shimFile = shim;
  }
  const { code, out, err } = await runNode(['--import', 'tsx', '--input-type=module', '-e', BATCHED_CHILD], {
    env: { ROOT: repoRoot.replace(/\/$/, ''), LD_PRELOAD: shimFile, STRAY_PORT: String(await freeUdpPort()), ...env },
    timeoutMs: 25_000,
  });
  expect({ code, err }).toEqual({ code: 0, err: '' });
  return JSON.parse(out.at(-1)!) as BatchedReport;
}

describeAddon('batched path: datagrams that reached a bound candidate port before its connect()', () => {
  it('are drained before the socket is used, counted as stray, never relayed; the server\'s replies are', async () => {
    const STRAYS = 100; // more than an earlier drain bound of 64: every queued stray is dropped, none relayed
    const r = await runBatchedChild({ STRAY_COUNT: String(STRAYS) });
    expect(r.first.choices).toEqual({ hashed: 1, probed: 0, kernel: 0 }); // bound to the candidate, so the shim sent
    expect(r.first.replies).toEqual(['pong']);
    expect(r.first.errors.stray).toBe(STRAYS);
    expect(await strayMetric('batched', r.first.errors)).toBe(`quiclb_io_errors_total{lb="t",path="batched",direction="to_client",reason="stray"} ${STRAYS}`);
    // a third party's datagrams after the connect(): filtered by the kernel, neither relayed nor counted
    expect(r.later).toEqual({ replies: ['pong'], stray: STRAYS });
  }, 40_000);

  it('from the server itself: dropped too (not relayed to the client), not counted as stray; its later replies are relayed', async () => {
    const SERVER = 5;
    const STRAYS = 2;
    const sentFile = join(tmp, 'server-sent');
    const r = await runBatchedChild({ STRAY_COUNT: String(STRAYS), SERVER_COUNT: String(SERVER), SERVER_SENT_FILE: sentFile });
    expect(readFileSync(sentFile, 'utf8')).toBe(String(SERVER)); // the shim found the server's socket and sent from it
    expect(r.first.choices).toEqual({ hashed: 1, probed: 0, kernel: 0 });
    expect(r.first.replies).toEqual(['pong']); // no 'stale'
    expect(r.first.errors.stray).toBe(STRAYS); // the other sender's only
    expect(r.later).toEqual({ replies: ['pong'], stray: STRAYS });
  }, 40_000);
});
