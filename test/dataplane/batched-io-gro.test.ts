/**
 * UDP GRO on the batched path (native/quiclb_io.c), on real loopback sockets with a real kernel GSO sender
 * (udp-gso-peer.c: one sendmsg with UDP_SEGMENT is a train of datagrams; on loopback a socket with UDP_GRO receives
 * it as one coalesced message). Every datagram of a train must reach the router as its own datagram, byte-exact
 * and in order, and leave as it would without GRO. Skipped (with the reason) when the addon is not built or no C
 * compiler can build the sender.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { runNode } from '../helpers/run-cli.js';
import { CidEncoder } from '../../lib/index.js';
import { IO_FLAGS, loadIoAddon, type AddonContext } from '../../dataplane/io/addon.js';
import { BatchedIo, type BatchedOptions } from '../../dataplane/io/batched-io.js';
import type { DatagramSink, IoListener, IoUpstream } from '../../dataplane/io/types.js';
import { buildGsoPeer, GsoPeer, sendBurstSync } from './gso-peer.js';
import { config, Opened, server, shortPacket, snapshot, waitFor } from './helpers.js';

const { addon, error, file } = loadIoAddon();
const built = addon !== null ? buildGsoPeer() : { skip: `batched I/O addon not available (${error})` };
const bin = 'bin' in built ? built.bin : null;
const describeGro = bin !== null ? describe : describe.skip;
if ('skip' in built) console.warn(`UDP GRO tests skipped: ${built.skip}`);

/** A sink recording client datagrams and replies; hooks may forward them. */
class Recorder implements DatagramSink<string, string> {
  clients: { address: string; port: number; data: Buffer }[] = [];
  replies: Buffer[] = [];
  onClientHook: ((buf: Buffer, off: number, len: number) => void) | null = null;
  onReplyHook: ((buf: Buffer, off: number, len: number) => void) | null = null;
  onClient(_l: string, buf: Buffer, off: number, len: number, address: string, port: number): void {
    this.clients.push({ address, port, data: Buffer.from(buf.subarray(off, off + len)) });
    this.onClientHook?.(buf, off, len);
  }
  onReply(_u: string, buf: Buffer, off: number, len: number): void {
    this.replies.push(Buffer.from(buf.subarray(off, off + len)));
    this.onReplyHook?.(buf, off, len);
  }
  onError(): void {}
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function peer(host = '127.0.0.1'): Promise<GsoPeer> {
  const p = await GsoPeer.start(bin!, host);
  cleanups.push(() => p.close());
  return p;
}

async function udp(host = '127.0.0.1'): Promise<{ socket: Socket; got: Buffer[] }> {
  const socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
  socket.bind(0, host);
  await once(socket, 'listening');
  socket.setRecvBufferSize(4 << 20);
  const got: Buffer[] = [];
  socket.on('message', (m) => got.push(m));
  cleanups.push(() => new Promise<void>((r) => socket.close(() => r())));
  return { socket, got };
}

async function makeIo(sink: Recorder, options: BatchedOptions, host = '127.0.0.1'): Promise<{ io: BatchedIo<string, string>; l: IoListener }> {
  const io = new BatchedIo<string, string>(addon!, sink, null, options);
  cleanups.push(() => io.close());
  const l = await io.openListener({ host, port: 0, family: host.includes(':') ? 6 : 4 }, { reusePort: false, bufferBytes: 4 << 20 }, 'L');
  return { io, l };
}

/** n datagrams of `size` bytes (the last `last` bytes), each numbered and filled with its own byte: a GSO train. */
/**
 * Every client datagram goes to the server at 127.0.0.1:port over one upstream socket, opened on the first;
 * returns a getter for that socket (for replies).
 */
function relayClientsTo(sink: Recorder, io: BatchedIo<string, string>, l: IoListener, port: number): () => IoUpstream {
  let up: IoUpstream | null = null;
  sink.onClientHook = (buf, off, len) => {
    up ??= io.openUpstream(l, { host: '127.0.0.1', port, family: 4 }, '', 0, 'U');
    expect(io.sendToServer(up!, buf, off, len)).toBe(true);
  };
  return () => up!;
}

function train(n: number, size: number, last = size, salt = 0): Buffer[] {
  return Array.from({ length: n }, (_, i) => {
    const d = Buffer.alloc(i === n - 1 ? last : size, (i * 7 + salt) & 0xff);
    d.writeUInt16BE(i, 0);
    d[2] = salt;
    return d;
  });
}

describeGro('UDP GRO on the batched path', () => {
  for (const host of ['127.0.0.1', '::1']) {
    it(`a GSO train from one client (8 x 1200 B + 500 B, ${host}) reaches the router as its 9 datagrams, byte-exact, in order, with the client's address`, async () => {
      const sink = new Recorder();
      const { io, l } = await makeIo(sink, { gro: true }, host);
      expect(io.gro).toBe('on');
      const p = await peer(host);
      const t = train(9, 1200, 500);
      expect(await p.send(host, l.bound.port, 1200, Buffer.concat(t))).toBe(8 * 1200 + 500);
      expect(await waitFor(() => sink.clients.length === 9)).toBe(true);
      expect(sink.clients.map((c) => c.data)).toEqual(t);
      expect(sink.clients.every((c) => c.address === host && c.port === p.port)).toBe(true);
      expect(io.calls()).toMatchObject({ gro: 'on', groMessages: 1, groDatagrams: 9, entriesFull: 0 });
    });
  }

  it('with GRO off (the option, as QUICLB_IO_GRO=0 sets it) the same train arrives as the same 9 datagrams, none coalesced', async () => {
    const sink = new Recorder();
    const { io, l } = await makeIo(sink, { gro: false });
    expect(io.gro).toBe('off');
    const p = await peer();
    const t = train(9, 1200, 500);
    await p.send('127.0.0.1', l.bound.port, 1200, Buffer.concat(t));
    expect(await waitFor(() => sink.clients.length === 9)).toBe(true);
    expect(sink.clients.map((c) => c.data)).toEqual(t);
    expect(io.calls()).toMatchObject({ gro: 'off', groMessages: 0, groDatagrams: 0 });
  });

  it('on a kernel without UDP_GRO (simulated) it runs without: state unavailable with the reason, the train arrives as 9 datagrams', async () => {
    const sink = new Recorder();
    const { io, l } = await makeIo(sink, { gro: true, simulateNoGro: true });
    expect(io.gro).toBe('unavailable');
    expect(io.groError).toMatch(/Protocol not available/);
    const p = await peer();
    const t = train(9, 1200, 500);
    await p.send('127.0.0.1', l.bound.port, 1200, Buffer.concat(t));
    expect(await waitFor(() => sink.clients.length === 9)).toBe(true);
    expect(sink.clients.map((c) => c.data)).toEqual(t);
    expect(io.calls()).toMatchObject({ gro: 'unavailable', groMessages: 0 });
  });

  it('a received train forwarded to one server leaves as ONE UDP GSO send (GRO in, GSO out), the server gets the 9 datagrams in order', async () => {
    const sink = new Recorder();
    const { io, l } = await makeIo(sink, { gro: true, gso: true });
    const backend = await udp();
    relayClientsTo(sink, io, l, backend.socket.address().port);
    const p = await peer();
    const t = train(9, 1200, 500);
    const before = io.calls();
    await p.send('127.0.0.1', l.bound.port, 1200, Buffer.concat(t));
    expect(await waitFor(() => backend.got.length === 9)).toBe(true);
    expect(backend.got).toEqual(t);
    const after = io.calls();
    expect(after.groMessages - before.groMessages).toBe(1);
    expect(after.gsoMessages - before.gsoMessages).toBe(1);
    expect(after.send - before.send).toBe(1); // one sendmmsg holding one GSO message
  });

  it("a server's GSO train on an upstream socket reaches the router as its datagrams and is relayed to the client in order (GSO out through the listener)", async () => {
    const sink = new Recorder();
    const { io, l } = await makeIo(sink, { gro: true, gso: true });
    const backend = await peer();
    const upstream = relayClientsTo(sink, io, l, backend.port);
    sink.onReplyHook = (buf, off, len) => io.sendToClient(upstream(), buf, off, len);
    const client = await udp();
    client.socket.send(Buffer.from('hello'), l.bound.port, '127.0.0.1');
    expect(await waitFor(() => backend.received.length === 1)).toBe(true);
    const t = train(6, 1000, 300, 9);
    const before = io.calls();
    await backend.send('127.0.0.1', backend.received[0].port, 1000, Buffer.concat(t));
    expect(await waitFor(() => client.got.length === 6)).toBe(true);
    expect(client.got).toEqual(t);
    expect(sink.replies).toEqual(t);
    const after = io.calls();
    expect(after.groMessages - before.groMessages).toBe(1);
    expect(after.gsoMessages - before.gsoMessages).toBe(1);
  });

  it('a train with more datagrams than the entry table (40 > 4 entries) is handed over 4 at a time: every datagram routed and forwarded in order, the early calls counted', async () => {
    const sink = new Recorder();
    const { io, l } = await makeIo(sink, { gro: true, slots: 4, entries: 4 });
    const backend = await udp();
    relayClientsTo(sink, io, l, backend.socket.address().port);
    const p = await peer();
    const t = train(40, 100, 100);
    await p.send('127.0.0.1', l.bound.port, 100, Buffer.concat(t));
    expect(await waitFor(() => backend.got.length === 40)).toBe(true);
    expect(sink.clients.map((c) => c.data)).toEqual(t);
    expect(backend.got).toEqual(t);
    const calls = io.calls();
    expect(calls.groDatagrams).toBe(40);
    expect(calls.entriesFull).toBe(9); // 10 calls of 4, 9 of them before the wake-up's end
    expect(calls.batches).toBeGreaterThanOrEqual(10);
  });

  it('a train of as many datagrams as one GSO send may hold (128 x 64 B, UDP_MAX_SEGMENTS) arrives whole, in order', async () => {
    const sink = new Recorder();
    const { io, l } = await makeIo(sink, { gro: true });
    const p = await peer();
    const t = train(128, 64, 40);
    expect(await p.send('127.0.0.1', l.bound.port, 64, Buffer.concat(t))).toBe(127 * 64 + 40);
    expect(await waitFor(() => sink.clients.length === 128)).toBe(true);
    expect(sink.clients.map((c) => c.data)).toEqual(t);
    expect(io.calls()).toMatchObject({ groMessages: 1, groDatagrams: 128 });
    expect(io.errors().truncated).toBe(0);
  });

  for (const host of ['127.0.0.1', '::1']) {
    it(`several messages taken by one receive (${host}): trains of mixed sizes (1 B and 7 B datagrams among them), single datagrams, one larger than a slot and a train cut by its slot: every datagram that fits arrives byte-exact and in order over several calls, each loss counted`, async () => {
      const sink = new Recorder();
      const { io, l } = await makeIo(sink, { gro: true, slots: 16, slotSize: 1000, entries: 16 }, host);
      const ones = Array.from({ length: 5 }, (_, i) => Buffer.from([0x10 + i]));
      const sevens = Array.from({ length: 128 }, (_, i) => Buffer.alloc(i === 127 ? 3 : 7, i));
      const mid = train(4, 300, 100, 1);
      const cut = train(8, 300, 300, 2);
      const single = Buffer.alloc(200, 0xcd);
      const last = Buffer.alloc(50, 0xef);
      const messages = [
        { segment: 0, data: Buffer.alloc(1500, 0xaa) }, // larger than a slot: dropped, so every later message is moved up a slot
        { segment: 1, data: Buffer.concat(ones) },
        { segment: 300, data: Buffer.concat(mid) },
        { segment: 0, data: single },
        { segment: 7, data: Buffer.concat(sevens) },
        { segment: 300, data: Buffer.concat(cut) }, // 2400 B in a 1000 B slot: its first 3 datagrams
        { segment: 0, data: last },
      ];
      const before = io.calls();
      const { port, sent } = sendBurstSync(bin!, host, l.bound.port, messages);
      expect(sent).toEqual(messages.map((m) => m.data.length));
      const expected = [...ones, ...mid, single, ...sevens, ...cut.slice(0, 3), last];
      expect(await waitFor(() => sink.clients.length >= expected.length && io.errors().truncated >= 6)).toBe(true);
      expect(sink.clients.map((c) => c.data)).toEqual(expected);
      expect(sink.clients.every((c) => c.address === host && c.port === port)).toBe(true);
      expect(io.errors().truncated).toBe(1 + 5);
      const after = io.calls();
      expect(after.groMessages - before.groMessages).toBe(4);
      expect(after.groDatagrams - before.groDatagrams).toBe(5 + 4 + 128 + 3);
      expect(after.entriesFull - before.entriesFull).toBeGreaterThanOrEqual(7); // 128 datagrams of one message, 16 a call
    });
  }

  it('a wake-up takes about `slots` datagrams, not `slots` coalesced messages: once trains were seen, a backlog of 64-datagram trains is read a few messages at a time', async () => {
    const counts: number[] = [];
    const ctx: AddonContext = addon!.create(16, 65536, (count) => (counts.push(count), 0), IO_FLAGS.gro, 4096);
    cleanups.push(() => addon!.destroy(ctx));
    const [, port] = addon!.openListener(ctx, '127.0.0.1', 0, false, 8 << 20);
    const trains = Array.from({ length: 12 }, (_, i) => ({ segment: 64, data: Buffer.concat(train(64, 64, 64, i)) }));
    // the first backlog: no train seen yet, so one request may take up to `slots` messages (64 datagrams each)
    sendBurstSync(bin!, '127.0.0.1', port, trains);
    expect(await waitFor(() => counts.reduce((a, b) => a + b, 0) === 12 * 64)).toBe(true);
    counts.length = 0;
    // the second: the trains seen size the requests, one 64-datagram message per wake-up here (16 slots)
    sendBurstSync(bin!, '127.0.0.1', port, trains);
    expect(await waitFor(() => counts.reduce((a, b) => a + b, 0) === 12 * 64)).toBe(true);
    expect(Math.max(...counts)).toBeLessThanOrEqual(16 + 63); // was 12 x 64 = 768 in one call
  });

  it('destroy() in the second of several calls of one wake-up: no further call, what the first call queued is sent, nothing crashes', async () => {
    const backend = await udp();
    const counts: number[] = [];
    let listener = -1;
    let up = -1;
    const { RX_WORDS, TX_WORDS } = addon!;
    const ctx: AddonContext = addon!.create(
      4,
      2048,
      (count) => {
        counts.push(count);
        if (up < 0) up = addon!.openUpstream(ctx, listener, 0, '127.0.0.1', backend.socket.address().port);
        const meta = new Int32Array(ctx.rxMeta);
        const tx = new Int32Array(ctx.tx);
        for (let i = 0; i < count; i++) tx.set([up, meta[i * RX_WORDS + 1], meta[i * RX_WORDS + 2]], i * TX_WORDS);
        if (counts.length === 2) addon!.destroy(ctx);
        return count;
      },
      IO_FLAGS.gro,
      4,
    );
    cleanups.push(() => addon!.destroy(ctx));
    expect(ctx.gro).toBe(true);
    const [id, port] = addon!.openListener(ctx, '127.0.0.1', 0, false, 0);
    listener = id;
    const t = train(40, 100);
    sendBurstSync(bin!, '127.0.0.1', port, [{ segment: 100, data: Buffer.concat(t) }]);
    expect(await waitFor(() => backend.got.length === 4)).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    expect(counts).toEqual([4, 4]);
    expect(backend.got).toEqual(t.slice(0, 4));
    expect(() => addon!.localPort(ctx, id)).toThrow(/closed or invalid context/);
  });

  it('rxMeta detached (transferred) in the first of several calls of one wake-up: the context closes, the rest of the train is never written into the moved memory', async () => {
    const script = `
      import { createRequire } from 'node:module';
      import { spawnSync } from 'node:child_process';
      const addon = createRequire(import.meta.url)(process.env.QUICLB_IO_ADDON);
      let uncaught = null, moved = null;
      const counts = [];
      process.on('uncaughtException', (e) => { uncaught = e.message; });
      const ctx = addon.create(4, 2048, (count) => { counts.push(count); if (counts.length === 1) moved = ctx.rxMeta.transfer(); return 0; }, 2, 4);
      const [, port] = addon.openListener(ctx, '127.0.0.1', 0, false, 0);
      const r = spawnSync(process.env.GSO_PEER, ['127.0.0.1'], { input: 'send 127.0.0.1 ' + port + ' 100 ' + Buffer.alloc(4000, 7).toString('hex') + '\\n' });
      await new Promise((res) => setTimeout(res, 200));
      const m = new Int32Array(moved);
      const w = addon.RX_WORDS;
      console.log(JSON.stringify({ status: r.status, counts, uncaught, offsets: [0, 1, 2, 3].map((i) => m[i * w + 1]) }));
      process.exit(0);`;
    const { code, out, err } = await runNode(['--input-type=module', '-e', script], { env: { QUICLB_IO_ADDON: file!, GSO_PEER: bin! }, timeoutMs: 15_000 });
    expect({ code, err }).toEqual({ code: 0, err: '' });
    expect(JSON.parse(out.at(-1)!)).toEqual({
      status: 0,
      counts: [4],
      uncaught: expect.stringMatching(/shared buffer was detached/),
      offsets: [0, 100, 200, 300], // the first call's 4 datagrams; the next 4 would have put 400..700 here
    });
  });

  it('a train longer than a receive slot keeps the whole datagrams that fit, counts the rest as truncated, and the next datagram still arrives', async () => {
    const sink = new Recorder();
    const { io, l } = await makeIo(sink, { gro: true, slots: 16, slotSize: 1000 });
    const p = await peer();
    const t = train(8, 300, 300);
    await p.send('127.0.0.1', l.bound.port, 300, Buffer.concat(t)); // 2400 B in a 1000 B slot: 3 whole datagrams
    await p.send('127.0.0.1', l.bound.port, 0, Buffer.alloc(200, 0xee));
    expect(await waitFor(() => sink.clients.length === 4)).toBe(true);
    expect(sink.clients.map((c) => c.data)).toEqual([...t.slice(0, 3), Buffer.alloc(200, 0xee)]);
    expect(io.errors().truncated).toBe(5);
    // datagrams each larger than the slot: all truncated, as without GRO
    await p.send('127.0.0.1', l.bound.port, 1200, Buffer.concat(train(3, 1200)));
    expect(await waitFor(() => io.errors().truncated === 8)).toBe(true);
    expect(sink.clients).toHaveLength(4);
  });
});

describeGro('UDP GRO in the data plane (router, real backends)', () => {
  const opened = new Opened();
  const names = ['a', 'b', 'c'];
  let backends: Awaited<ReturnType<Opened['backend']>>[];
  beforeAll(async () => {
    backends = await Promise.all(names.map((n) => opened.backend(n)));
  });
  afterAll(() => opened.closeAll());

  for (const gro of ['on', 'off'] as const) {
    it(`GRO ${gro}${gro === 'off' ? ' (QUICLB_IO_GRO=0)' : ''}: one train whose datagrams carry DCIDs of 3 servers is routed datagram by datagram, byte-exact and in order per server, replies come back`, async () => {
      const servers = names.map((n, i) => server(n, `000${i + 1}`, '127.0.0.1', backends[i].port));
      const encoders = names.map((_, i) => new CidEncoder(config(0), Buffer.from(`000${i + 1}`, 'hex')));
      if (gro === 'off') process.env.QUICLB_IO_GRO = '0';
      let dp, port;
      try {
        ({ dp, port } = await opened.dataplane(snapshot(servers, { version: 1 }), { io: 'batched' }));
      } finally {
        delete process.env.QUICLB_IO_GRO;
      }
      const before = backends.map((b) => b.received.length);
      // 9 datagrams of 1200 B (the last 600 B) for servers a b c a b c a b c, each DCID a new connection of its server
      const datagrams = Array.from({ length: 9 }, (_, i) => shortPacket(encoders[i % 3].next(), { size: i === 8 ? 600 : 1200 }));
      const p = await peer();
      expect(await p.send('127.0.0.1', port, 1200, Buffer.concat(datagrams))).toBe(8 * 1200 + 600);
      expect(await waitFor(() => backends.every((b, i) => b.received.length === before[i] + 3) && p.received.length === 9)).toBe(true);
      backends.forEach((b, i) => {
        expect(b.received.slice(before[i]).map((r) => r.data)).toEqual(datagrams.filter((_, k) => k % 3 === i));
      });
      const tags = (name: string) => p.received.filter((r) => r.data.toString().startsWith(`${name}|`)).map((r) => r.data.toString().slice(2));
      names.forEach((n, i) => expect(tags(n).sort()).toEqual(datagrams.filter((_, k) => k % 3 === i).map((d) => d.subarray(d.length - 8).toString('hex')).sort()));
      expect(p.received.every((r) => r.port === port)).toBe(true);
      const text = await dp.registry.metrics();
      expect(text).toMatch(new RegExp(`quiclb_io_gro_info\\{lb="[^"]*",state="${gro}"\\} 1`));
      const groMessages = Number(/quiclb_io_gro_messages_total\{[^}]*\} (\d+)/.exec(text)?.[1]);
      if (gro === 'on') expect(groMessages).toBeGreaterThanOrEqual(1);
      else expect(groMessages).toBe(0);
      expect(dp.stats().received).toBeGreaterThanOrEqual(9);
      await dp.stop();
    });
  }
});
