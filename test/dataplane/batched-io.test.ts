/**
 * The batched I/O addon (native/quiclb_io.c through dataplane/io/batched-io.ts) on real loopback sockets: batch
 * boundaries, truncation, IPv6, error counting, closing sockets with datagrams pending, many sockets; and the
 * Dataplane reporting which path it runs. Skipped (with a note) when the addon is not built.
 */
import { afterEach, describe, expect, it } from '@jest/globals';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import fc from 'fast-check';
import { loadIoAddon } from '../../dataplane/io/addon.js';
import { BatchedIo } from '../../dataplane/io/batched-io.js';
import { AddressCache, formatIpv6 } from '../../dataplane/io/address-cache.js';
import type { DatagramSink, IoUpstream } from '../../dataplane/io/types.js';
import { Dataplane } from '../../dataplane/dataplane.js';
import { parseStandaloneConfig } from '../../lib/config/standalone.js';
import { ioFlag } from '../../cli/args.js';
import { server, shortPacket, snapshot, sleep, TaggingBackend, waitFor } from './helpers.js';

const { addon, error } = loadIoAddon();
const describeAddon = addon !== null ? describe : describe.skip;
if (addon === null) console.warn(`batched I/O addon not available (${error}): its tests are skipped`);

interface Got {
  listener: string;
  address: string;
  port: number;
  data: Buffer;
}

/** A sink recording client datagrams and replies; `onClientHook` may forward. */
class Recorder implements DatagramSink<string, string> {
  clients: Got[] = [];
  replies: { up: string; data: Buffer }[] = [];
  errors: string[] = [];
  onClientHook: ((l: string, buf: Buffer, off: number, len: number) => void) | null = null;
  onClient(l: string, buf: Buffer, off: number, len: number, address: string, port: number): void {
    this.clients.push({ listener: l, address, port, data: Buffer.from(buf.subarray(off, off + len)) });
    this.onClientHook?.(l, buf, off, len);
  }
  onReply(u: string, buf: Buffer, off: number, len: number): void {
    this.replies.push({ up: u, data: Buffer.from(buf.subarray(off, off + len)) });
  }
  onError(direction: string, err: Error | string): void {
    this.errors.push(`${direction}: ${String(err)}`);
  }
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/**
 * A loopback socket with a 4 MiB receive buffer: the batched path forwards a whole batch at once, and peers in this
 * same process read only between batches (the default 208 KiB holds ~270 small datagrams).
 */
async function udp(type: 'udp4' | 'udp6' = 'udp4', host = type === 'udp4' ? '127.0.0.1' : '::1'): Promise<Socket> {
  const s = createSocket(type);
  s.bind(0, host);
  await once(s, 'listening');
  s.setRecvBufferSize(4 << 20);
  cleanups.push(() => new Promise<void>((r) => s.close(() => r())));
  return s;
}

function makeIo(sink: Recorder, slots = 256, slotSize = 65536): BatchedIo<string, string> {
  const io = new BatchedIo<string, string>(addon!, sink, null, { slots, slotSize });
  cleanups.push(() => io.close());
  return io;
}

describeAddon('batched I/O addon', () => {
  it('delivers every datagram of a burst larger than the ring, in order, one JS call per batch of at most `slots`', async () => {
    const sink = new Recorder();
    const io = makeIo(sink, 8);
    const l = await io.openListener({ host: '127.0.0.1', port: 0, family: 4 }, { reusePort: false, bufferBytes: 1 << 20 }, 'L');
    const c = await udp();
    const N = 200;
    for (let i = 0; i < N; i++) c.send(Buffer.from(`d${i}`), l.bound.port, '127.0.0.1');
    expect(await waitFor(() => sink.clients.length === N, 5000)).toBe(true);
    expect(sink.clients.map((g) => g.data.toString())).toEqual(Array.from({ length: N }, (_, i) => `d${i}`));
    expect(sink.clients.every((g) => g.address === '127.0.0.1' && g.port === c.address().port && g.listener === 'L')).toBe(true);
    const calls = io.calls();
    expect(calls.batches).toBeGreaterThanOrEqual(N / 8);
    expect(calls.batches).toBeLessThan(N); // batched: fewer JS calls than datagrams
  });

  for (const [gso, family] of [[true, 4], [false, 4], [true, 6]] as const) {
    it(`forwards runs of datagrams to one destination ${gso ? 'as UDP GSO messages' : 'one message each (gso off)'}, IPv${family}: same datagrams, boundaries and order`, async () => {
      const host = family === 4 ? '127.0.0.1' : '::1';
      const sink = new Recorder();
      const io = new BatchedIo<string, string>(addon!, sink, null, { slots: 256, gso });
      cleanups.push(() => io.close());
      const l = await io.openListener({ host, port: 0, family }, { reusePort: false, bufferBytes: 4 << 20 }, 'L');
      const backend = await udp(family === 4 ? 'udp4' : 'udp6');
      const got: Buffer[] = [];
      backend.on('message', (m) => got.push(m));
      let up: IoUpstream | null = null;
      sink.onClientHook = (_l, buf, off, len) => {
        up ??= io.openUpstream(l, { host, port: backend.address().port, family }, '', 0, 'U');
        io.sendToServer(up!, buf, off, len);
      };
      // runs of equal sizes, a shorter one ending a run, a longer one starting the next, sizes up to 1400
      const sizes = Array.from({ length: 300 }, (_, i) => [1200, 1200, 1200, 700, 1400, 1400, 64, 64][i % 8]);
      const c = await udp(family === 4 ? 'udp4' : 'udp6');
      const sent = sizes.map((n, i) => {
        const d = Buffer.alloc(n, i & 0xff);
        d.writeUInt32BE(i, 0);
        return d;
      });
      for (let i = 0; i < sent.length; i += 50) {
        for (const d of sent.slice(i, i + 50)) c.send(d, l.bound.port, host);
        await sleep(5); // let a batch build up in the listener's buffer
      }
      expect(await waitFor(() => got.length === sent.length, 5000)).toBe(true);
      expect(got.map((d) => d.length)).toEqual(sizes);
      expect(got.every((d, i) => d.equals(sent[i]))).toBe(true);
      if (gso) expect(io.calls().gsoMessages).toBeGreaterThan(0);
      else expect(io.calls().gsoMessages).toBe(0);
    });
  }

  it('drops and counts a datagram larger than a slot, and delivers the ones around it', async () => {
    const sink = new Recorder();
    const io = makeIo(sink, 16, 100);
    const l = await io.openListener({ host: '127.0.0.1', port: 0, family: 4 }, { reusePort: false, bufferBytes: 0 }, 'L');
    const c = await udp();
    c.send(Buffer.alloc(50, 1), l.bound.port, '127.0.0.1');
    c.send(Buffer.alloc(101, 2), l.bound.port, '127.0.0.1');
    c.send(Buffer.alloc(100, 3), l.bound.port, '127.0.0.1');
    expect(await waitFor(() => sink.clients.length === 2 && io.errors().truncated === 1)).toBe(true);
    expect(sink.clients.map((g) => [g.data.length, g.data[0]])).toEqual([
      [50, 1],
      [100, 3],
    ]);
  });

  it('listens on IPv6 with the client address as node:dgram spells it, and relays both ways', async () => {
    const sink = new Recorder();
    const io = makeIo(sink);
    const l = await io.openListener({ host: '::1', port: 0, family: 6 }, { reusePort: false, bufferBytes: 0 }, 'L6');
    const backend = await udp('udp6');
    backend.on('message', (m, r) => backend.send(Buffer.concat([Buffer.from('re:'), m]), r.port, r.address));
    const ups: IoUpstream[] = [];
    sink.onClientHook = (_l, buf, off, len) => {
      const up = io.openUpstream(l, { host: '::1', port: backend.address().port, family: 6 }, '', 0, 'U');
      expect(up).not.toBeNull();
      ups.push(up!);
      expect(io.sendToServer(up!, buf, off, len)).toBe(true);
    };
    // replies go out through the listener to the client of the upstream
    const origReply = sink.onReply.bind(sink);
    sink.onReply = (u, buf, off, len) => {
      origReply(u, buf, off, len);
      io.sendToClient(ups[0], buf, off, len);
    };
    const c = await udp('udp6');
    const got: Buffer[] = [];
    const from: number[] = [];
    c.on('message', (m, r) => {
      got.push(m);
      from.push(r.port);
    });
    c.send(Buffer.from('hello6'), l.bound.port, '::1');
    expect(await waitFor(() => got.length === 1)).toBe(true);
    expect(got[0].toString()).toBe('re:hello6');
    expect(from).toEqual([l.bound.port]);
    expect(sink.clients[0].address).toBe('::1');
    expect(sink.clients[0].port).toBe(c.address().port);
  });

  /** A listener whose client datagrams go, through one upstream opened on the first, to a port nothing listens on. */
  async function relayToClosedPort(sink: Recorder) {
    const io = makeIo(sink);
    const l = await io.openListener({ host: '127.0.0.1', port: 0, family: 4 }, { reusePort: false, bufferBytes: 0 }, 'L');
    const gone = await udp();
    const port = gone.address().port;
    await new Promise<void>((r) => gone.close(() => r()));
    cleanups.pop();
    let up: IoUpstream | null = null;
    sink.onClientHook = (_l, buf, off, len) => {
      up ??= io.openUpstream(l, { host: '127.0.0.1', port, family: 4 }, '', 0, 'U');
      io.sendToServer(up!, buf, off, len);
    };
    return { io, l, port, upstream: () => up };
  }

  it('counts ECONNREFUSED from a closed server port (ICMP on the connected upstream socket), never throws', async () => {
    const sink = new Recorder();
    const { io, l } = await relayToClosedPort(sink);
    const c = await udp();
    for (let i = 0; i < 5; i++) {
      c.send(Buffer.from('x'), l.bound.port, '127.0.0.1');
      await sleep(20);
    }
    expect(await waitFor(() => io.errors().toServer.refused >= 1)).toBe(true);
    expect(sink.clients).toHaveLength(5);
  });

  it('an upstream keeps relaying after ICMP errors: once a server listens on the refused port, its replies reach the client', async () => {
    // libuv stops watching a socket that reports POLLERR (the pending ICMP error): the addon must watch it again
    const sink = new Recorder();
    const { io, l, port, upstream } = await relayToClosedPort(sink);
    const replies: string[] = [];
    sink.onReply = (_u: string, buf: Buffer, off: number, len: number): void => {
      replies.push(buf.toString('latin1', off, off + len));
      io.sendToClient(upstream()!, buf, off, len);
    };
    const c = await udp();
    const got: string[] = [];
    c.on('message', (m) => got.push(m.toString()));
    for (let i = 1; i <= 3; i++) {
      c.send(Buffer.from('x'), l.bound.port, '127.0.0.1');
      expect(await waitFor(() => io.errors().toServer.refused >= i)).toBe(true);
    }
    const srv = createSocket('udp4');
    srv.bind(port, '127.0.0.1');
    await once(srv, 'listening');
    cleanups.push(() => new Promise<void>((r) => srv.close(() => r())));
    srv.on('message', (m, r) => srv.send(Buffer.concat([Buffer.from('re:'), m]), r.port, r.address));
    for (let i = 0; i < 3; i++) c.send(Buffer.from(`y${i}`), l.bound.port, '127.0.0.1');
    expect(await waitFor(() => got.length === 3)).toBe(true);
    expect(got.sort()).toEqual(['re:y0', 're:y1', 're:y2']);
    expect(replies).toHaveLength(3);
  });

  it('closes a socket with datagrams pending (and one inside a batch) without delivering them or failing', async () => {
    const sink = new Recorder();
    const io = makeIo(sink, 64);
    const a = await io.openListener({ host: '127.0.0.1', port: 0, family: 4 }, { reusePort: false, bufferBytes: 0 }, 'A');
    const b = await io.openListener({ host: '127.0.0.1', port: 0, family: 4 }, { reusePort: false, bufferBytes: 0 }, 'B');
    const c = await udp();
    // Closing B from inside the batch that holds datagrams of both: B's later datagrams of that batch are skipped.
    let closedB = false;
    sink.onClientHook = (l) => {
      if (l === 'A' && !closedB) {
        closedB = true;
        void io.closeListener(b);
      }
    };
    for (let i = 0; i < 5; i++) c.send(Buffer.from('b'), b.bound.port, '127.0.0.1');
    for (let i = 0; i < 5; i++) c.send(Buffer.from('a'), a.bound.port, '127.0.0.1');
    await sleep(50); // both readable before the loop polls
    expect(await waitFor(() => sink.clients.filter((g) => g.listener === 'A').length === 5)).toBe(true);
    const bSeen = sink.clients.filter((g) => g.listener === 'B').length;
    expect(bSeen === 0 || bSeen === 5).toBe(true); // all of B's came before A's in the batch, or none after close
    // A closed listener with datagrams queued: nothing more arrives, a new one works.
    for (let i = 0; i < 5; i++) c.send(Buffer.from('a2'), a.bound.port, '127.0.0.1');
    await io.closeListener(a);
    await sleep(50);
    expect(sink.clients.filter((g) => g.data.toString() === 'a2')).toHaveLength(0);
    const d = await io.openListener({ host: '127.0.0.1', port: 0, family: 4 }, { reusePort: false, bufferBytes: 0 }, 'D');
    c.send(Buffer.from('d'), d.bound.port, '127.0.0.1');
    expect(await waitFor(() => sink.clients.some((g) => g.listener === 'D'))).toBe(true);
  });

  it('handles many upstream sockets: one per client, replies from each relayed to its own client', async () => {
    const sink = new Recorder();
    const io = makeIo(sink);
    const l = await io.openListener({ host: '127.0.0.1', port: 0, family: 4 }, { reusePort: false, bufferBytes: 4 << 20 }, 'L');
    const backend = await udp();
    backend.on('message', (m, r) => backend.send(m, r.port, r.address));
    const ups = new Map<string, IoUpstream>();
    const byName = new Map<string, IoUpstream>();
    let n = 0;
    sink.onClientHook = (_l, buf, off, len) => {
      const g = sink.clients[sink.clients.length - 1];
      const key = `${g.address}:${g.port}`;
      let up = ups.get(key);
      if (up === undefined) {
        const name = `U${n++}`;
        up = io.openUpstream(l, { host: '127.0.0.1', port: backend.address().port, family: 4 }, g.address, g.port, name)!;
        ups.set(key, up);
        byName.set(name, up);
      }
      io.sendToServer(up, buf, off, len);
    };
    sink.onReply = (u, buf, off, len) => {
      sink.replies.push({ up: u, data: Buffer.alloc(0) });
      io.sendToClient(byName.get(u)!, buf, off, len);
    };
    const CLIENTS = 300;
    const clients = await Promise.all(Array.from({ length: CLIENTS }, () => udp()));
    const answered = new Set<number>();
    clients.forEach((c, i) => {
      c.on('message', (m) => {
        if (m.toString() === `c${i}`) answered.add(i);
      });
      c.send(Buffer.from(`c${i}`), l.bound.port, '127.0.0.1');
    });
    expect(await waitFor(() => answered.size === CLIENTS, 10000)).toBe(true);
    expect(ups.size).toBe(CLIENTS);
    // closing them all leaves nothing behind and a stale id is ignored
    for (const up of ups.values()) io.closeUpstream(up);
    for (const up of ups.values()) io.closeUpstream(up);
  });

  it('shares a port between listeners with SO_REUSEPORT (worker processes), and only then', async () => {
    const sinkA = new Recorder();
    const sinkB = new Recorder();
    const a = makeIo(sinkA);
    const b = makeIo(sinkB);
    const la = await a.openListener({ host: '127.0.0.1', port: 0, family: 4 }, { reusePort: true, bufferBytes: 0 }, 'A');
    const lb = await b.openListener({ host: '127.0.0.1', port: la.bound.port, family: 4 }, { reusePort: true, bufferBytes: 0 }, 'B');
    expect(lb.bound.port).toBe(la.bound.port);
    await expect(makeIo(new Recorder()).openListener({ host: '127.0.0.1', port: la.bound.port, family: 4 }, { reusePort: false, bufferBytes: 0 }, 'C')).rejects.toThrow(/EADDRINUSE/);
    // the kernel spreads client sockets over both
    const clients = await Promise.all(Array.from({ length: 32 }, () => udp()));
    for (const c of clients) c.send(Buffer.from('x'), la.bound.port, '127.0.0.1');
    expect(await waitFor(() => sinkA.clients.length + sinkB.clients.length === 32)).toBe(true);
    expect(sinkA.clients.length).toBeGreaterThan(0);
    expect(sinkB.clients.length).toBeGreaterThan(0);
  });

  it('refuses to listen on an address in use with the error code, like the dgram path', async () => {
    const io = makeIo(new Recorder());
    const taken = await udp();
    await expect(io.openListener({ host: '127.0.0.1', port: taken.address().port, family: 4 }, { reusePort: false, bufferBytes: 0 }, 'L')).rejects.toThrow(
      /cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE/,
    );
  });
});

describe('IPv6 address text', () => {
  it('matches the WHATWG serializer (RFC 5952) for addresses without an embedded IPv4 part', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.array(fc.integer({ min: 0, max: 7 }), { maxLength: 8 }), (b, zeros) => {
        for (const z of zeros) b[2 * z] = b[2 * z + 1] = 0; // runs of zero groups
        const words = Array.from({ length: 8 }, (_, i) => (b[2 * i] << 8) | b[2 * i + 1]);
        if (words.slice(0, 5).every((w) => w === 0) && (words[5] === 0 || words[5] === 0xffff)) return; // ::a.b.c.d forms
        const text = formatIpv6(b, 0);
        expect(text).toBe(new URL(`http://[${text}]/`).hostname.slice(1, -1));
        expect(new URL(`http://[${text}]/`).hostname).toBe(new URL(`http://[${words.map((w) => w.toString(16)).join(':')}]/`).hostname);
      }),
      { numRuns: 2000 },
    );
    expect(formatIpv6(Buffer.from('00000000000000000000000000000001', 'hex'), 0)).toBe('::1');
    expect(formatIpv6(Buffer.from('00000000000000000000ffff7f000001', 'hex'), 0)).toBe('::ffff:127.0.0.1');
    expect(formatIpv6(Buffer.alloc(16), 0)).toBe('::');
  });
});

describe('the Dataplane reports its I/O path', () => {
  for (const path of addon !== null ? (['batched', 'dgram'] as const) : (['dgram'] as const)) {
    it(`io: ${path}: logged path, quiclb_io_path_info and the sampled routing latency`, async () => {
      const backend = await TaggingBackend.start('a');
      backend.socket.setRecvBufferSize(4 << 20);
      cleanups.push(() => backend.close());
      const dp = new Dataplane({ io: path, healthChecks: false });
      await dp.start(snapshot([server('a', '0001', '127.0.0.1', backend.port)]));
      cleanups.push(() => dp.stop());
      expect(dp.ioPath).toBe(path);
      const c = await udp();
      const port = dp.addresses()[0].port;
      let replies = 0;
      c.on('message', () => replies++);
      const pkt = shortPacket(Buffer.from('0123456789abcdef', 'hex'));
      for (let i = 0; i < 3000; i++) {
        c.send(pkt, port, '127.0.0.1');
        if (i % 100 === 99) await sleep(2);
      }
      expect(await waitFor(() => replies >= 2900, 5000)).toBe(true);
      const text = await dp.registry.metrics();
      expect(text).toContain(`quiclb_io_path_info{lb="test",path="${path}"} 1`);
      const count = /quiclb_routing_latency_seconds_count\{path="(\w+)"\} (\d+)/.exec(text);
      expect(count?.[1]).toBe(path);
      expect(Number(count?.[2])).toBeGreaterThanOrEqual(1);
      const batches = /quiclb_io_batches_total\{lb="test"\} (\d+)/.exec(text);
      if (path === 'batched') {
        expect(Number(batches?.[1])).toBeGreaterThan(0);
        expect(Number(batches?.[1])).toBeLessThanOrEqual(dp.stats().received + dp.stats().servers.a.replyPackets);
        expect(text).toMatch(/quiclb_io_syscalls_total\{lb="test",call="recvmmsg"\} [1-9]/);
      } else expect(batches).toBeNull();
    });
  }

  it('QUICLB_IO is read as the default, and an invalid value is refused', async () => {
    const saved = process.env.QUICLB_IO;
    try {
      process.env.QUICLB_IO = 'nonsense';
      const dp = new Dataplane({ healthChecks: false });
      await expect(dp.start(snapshot([server('a', '0001', '127.0.0.1', 9)]))).rejects.toThrow(/QUICLB_IO: expected one of auto, batched, dgram/);
      process.env.QUICLB_IO = 'dgram';
      const dp2 = new Dataplane({ healthChecks: false });
      await dp2.start(snapshot([server('a', '0001', '127.0.0.1', 9)]));
      expect(dp2.ioPath).toBe('dgram');
      await dp2.stop();
    } finally {
      if (saved === undefined) delete process.env.QUICLB_IO;
      else process.env.QUICLB_IO = saved;
    }
  });
});

describe('the io option', () => {
  const yaml = (io: string) => `listen: ["127.0.0.1:0"]\n${io}loadbalancer:\n  server_id_length: 2\n  nonce_length: 6\nservers:\n  - { id: a, address: "127.0.0.1:4433" }\n`;
  it('standalone YAML io: auto|batched|dgram (absent: null, the environment decides); anything else names the field', () => {
    expect(parseStandaloneConfig(yaml('')).io).toBeNull();
    for (const v of ['auto', 'batched', 'dgram']) expect(parseStandaloneConfig(yaml(`io: ${v}\n`)).io).toBe(v);
    expect(() => parseStandaloneConfig(yaml('io: fast\n'))).toThrow(/^io: /);
  });
  it('--io on the command line', () => {
    expect(ioFlag('dgram')).toBe('dgram');
    expect(() => ioFlag('uring')).toThrow(/--io: must be one of auto, batched, dgram/);
  });
});

describe('AddressCache', () => {
  it('returns the dotted text of any IPv4 address, the same string object for repeats, and stays bounded', () => {
    const cache = new AddressCache(4);
    const b = new Uint8Array([203, 0, 113, 7, 255, 255, 255, 255]);
    const s1 = cache.ipv4(b, 0);
    expect(s1).toBe('203.0.113.7');
    expect(cache.ipv4(b, 4)).toBe('255.255.255.255');
    expect(Object.is(cache.ipv4(b, 0), s1)).toBe(true);
    for (let i = 0; i < 10; i++) expect(cache.ipv4(new Uint8Array([10, 0, 0, i]), 0)).toBe(`10.0.0.${i}`);
    const w = new Int32Array(8);
    const wb = new Uint8Array(w.buffer);
    wb.set(Buffer.from('20010db8000000000000000000000001', 'hex'), 0);
    wb.set(Buffer.from('fe800000000000000000000000000001', 'hex'), 16);
    expect(cache.ipv6(w, 0, wb)).toBe('2001:db8::1');
    expect(cache.ipv6(w, 4, wb)).toBe('fe80::1');
    expect(cache.ipv6(w, 0, wb)).toBe('2001:db8::1');
  });
});
