/**
 * Fuzz: a bounded run of random and mutated datagrams. One million go through the real Router in-process
 * (fixed seed, so a failure reproduces), a smaller run through a real Dataplane over loopback sockets.
 * No exception, and every datagram is counted: forwarded by an outcome or dropped with a reason.
 */
import { describe, expect, it, afterAll } from '@jest/globals';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { CidEncoder, mintUnroutableCid } from '../../lib/index.js';
import { Router, DROP_REASONS } from '../../dataplane/router.js';
import { Dataplane } from '../../dataplane/dataplane.js';
import { config, longPacket, server, shortPacket, snapshot, TaggingBackend, waitFor } from './helpers.js';

/** xorshift32: deterministic and allocation-free. */
function rng(seed: number) {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

const SERVERS = [server('a', '0001', '127.0.0.1', 4001), server('b', '0002', '127.0.0.1', 4002), server('c', '0003', '127.0.0.1', 4003)];
const CONFIGS = [
  { config: config(0), state: 'active' as const },
  { config: config(1, null, 2, 6), state: 'draining' as const },
  { config: config(2, Buffer.alloc(16, 3), 2, 14), state: 'accepting' as const },
];

/** Seeds the mutations start from: every routing path's packet shapes. */
function corpus(): Buffer[] {
  const out: Buffer[] = [];
  for (const l of CONFIGS) {
    for (const s of SERVERS) {
      const enc = new CidEncoder(l.config, s.serverId);
      out.push(shortPacket(enc.next(), { size: 40 }), longPacket(enc.next(), enc.next(), { type: 2, size: 100 }), longPacket(enc.next(), Buffer.alloc(0), { size: 1200 }));
    }
  }
  const r = () => Buffer.from(Array.from({ length: 16 }, (_, i) => (i * 37) & 255));
  out.push(
    longPacket(r(), r().subarray(0, 8)),
    longPacket(r(), r(), { version: 0x6b3343cf, type: 1 }),
    longPacket(r(), r(), { version: 0x1a2a3a4a }),
    longPacket(Buffer.alloc(0), Buffer.alloc(0), { type: 3, size: 60 }),
    shortPacket(mintUnroutableCid(8)),
    shortPacket(mintUnroutableCid(20)),
    // random server CIDs (no QUIC-LB) whose first octet suggests another short-header length: learned from the
    // Handshake (fed to learnReply below), then found at their own length
    longPacket(r(), SERVER_CID_18, { type: 2, size: 80 }),
    shortPacket(SERVER_CID_18, { size: 40 }),
    longPacket(r(), SERVER_CID_12, { type: 2, size: 80 }),
    shortPacket(SERVER_CID_12, { size: 40 }),
    Buffer.from([0x80, 0, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 1]),
  );
  return out;
}

const SERVER_CID_18 = Buffer.from('05a1b2c3d4e5f60718293a4b5c6d7e8f9001', 'hex');
const SERVER_CID_12 = Buffer.from('e3112233445566778899aabb', 'hex');

const ADDRS = ['10.0.0.1', '10.0.0.2', '192.168.7.9', '::1', '2001:db8::42', '::ffff:10.0.0.1', 'fe80::1%lo'];

const sockets: { close(cb?: () => void): void }[] = [];
afterAll(async () => {
  for (const s of sockets) await new Promise<void>((r) => s.close(() => r()));
});

describe('fuzz', () => {
  it('routes 1,000,000 random and mutated datagrams through the Router: no throw, every one counted', () => {
    const N = 1_000_000;
    const next = rng(0x5eed1234);
    const router = new Router(snapshot(SERVERS, { configs: CONFIGS, flows: { maxFlows: 5000, idleTimeoutMs: 2000, newFlowRate: 0 } }), undefined, 0);
    const seeds = corpus();
    const learner = router.getServer('c')!;
    // Random bytes to cut datagrams from, and one scratch buffer that mutated copies are made in.
    const noise = Buffer.alloc(1 << 16);
    for (let j = 0; j < noise.length; j += 4) noise.writeUInt32LE(next(), j);
    const scratch = Buffer.alloc(2048);
    let now = 0;
    const t0 = performance.now();
    for (let i = 0; i < N; i++) {
      const r = next();
      let buf: Buffer;
      const mode = r & 7;
      if (mode < 2) {
        // random bytes of a random length (mostly short, sometimes up to 1500)
        const len = (r >>> 3) % 8 === 0 ? next() % 1501 : next() % 64;
        const at = next() % (noise.length - len);
        buf = noise.subarray(at, at + len);
      } else {
        // a corpus packet with a few mutations: flipped bits, a changed length byte, truncation
        const seed = seeds[(r >>> 3) % seeds.length];
        const cut = mode === 2 ? next() % (seed.length + 1) : seed.length;
        seed.copy(scratch, 0, 0, cut);
        buf = scratch.subarray(0, cut);
        const flips = mode === 7 ? 0 : 1 + (next() % 4);
        for (let f = 0; f < flips && cut > 0; f++) {
          const at = next() % Math.min(cut, 48);
          buf[at] ^= 1 << (next() % 8);
        }
        if (mode === 6 && cut > 6) buf[5] = next() & 0xff; // the DCID length byte
      }
      const addr = ADDRS[next() % ADDRS.length];
      router.route(buf, addr, next() % 4096, next() % 3);
      // Some datagrams also go the other way, as if a server sent them: learned when a long header's SCID does
      // not decode (mutated lengths and random octets included).
      if (mode >= 5 && (r >>> 24) < 16) router.learnReply(buf, learner);
      if ((i & 0x3fff) === 0) {
        // noise changes slowly too, so random datagrams repeat sometimes (table hits on random input)
        noise.writeUInt32LE(next(), next() % (noise.length - 4));
        now += 100;
        router.tick(now);
      }
    }
    const ms = performance.now() - t0;
    const s = router.stats();
    const dropped = Object.values(s.dropped).reduce((a, b) => a + (b ?? 0), 0);
    expect(s.received).toBe(N);
    expect(s.routed.cid + s.routed.table + s.routed.fallback + dropped).toBe(N);
    expect(s.dropped.internal_error ?? 0).toBe(0);
    // Every path was exercised.
    expect(s.routed.cid).toBeGreaterThan(10_000);
    expect(s.routed.table).toBeGreaterThan(1_000);
    expect(s.routed.fallback).toBeGreaterThan(10_000);
    for (const reason of ['empty', 'truncated', 'dcid_too_long', 'short_dcid_unavailable'] as const) expect(s.dropped[reason]).toBeGreaterThan(0);
    expect(s.flows).toBeLessThanOrEqual(5000);
    expect(s.dcids).toBeLessThanOrEqual(5000);
    expect(s.flowsEvicted).toBeGreaterThan(0);
    expect(s.learned).toBeGreaterThan(1_000);
    expect(s.learnedLengthHits).toBeGreaterThan(100);
    process.stdout.write(`fuzz: ${N} datagrams in ${ms.toFixed(0)} ms (${((ms * 1000) / N).toFixed(2)} µs each incl. generation); ${JSON.stringify(s.routed)} dropped ${JSON.stringify(s.dropped)}; learned ${s.learned} (lengths ${s.learnedLengths.join(',')}), learned-length hits ${s.learnedLengthHits}\n`);
  }, 60_000);

  it('counts every one of 20,000 random and mutated datagrams sent through real sockets', async () => {
    const backend = await TaggingBackend.start('a');
    backend.silent = true;
    sockets.push(backend.socket);
    const dp = new Dataplane({ healthChecks: false });
    await dp.start(snapshot([server('a', '0001', '127.0.0.1', backend.port)], { configs: CONFIGS }));
    const port = dp.addresses()[0].port;
    const client = createSocket('udp4');
    client.bind(0, '127.0.0.1');
    await once(client, 'listening');
    sockets.push(client);
    const next = rng(42);
    const seeds = corpus();
    const N = 20_000;
    let sent = 0;
    for (let i = 0; i < N; i++) {
      const seed = seeds[next() % seeds.length];
      let b = Buffer.from(seed.subarray(0, next() % 3 === 0 ? next() % (seed.length + 1) : seed.length));
      if (next() % 4 === 0) b = Buffer.from(Array.from({ length: next() % 80 }, () => next() & 255));
      else if (b.length > 0) b[next() % Math.min(b.length, 40)] ^= 1 << (next() % 8);
      client.send(b, port, '127.0.0.1');
      sent++;
      // Pace so the kernel's socket buffers never overflow: every datagram must arrive to be counted.
      if (i % 200 === 199) await waitFor(() => dp.stats().received >= sent - 50, 2000, 1);
    }
    expect(await waitFor(() => dp.stats().received === N, 5000)).toBe(true);
    const s = dp.stats();
    const dropped = Object.values(s.dropped).reduce((a, b) => a + (b ?? 0), 0);
    expect(s.routed.cid + s.routed.table + s.routed.fallback + dropped).toBe(N);
    expect(s.dropped.internal_error ?? 0).toBe(0);
    const text = await dp.registry.metrics();
    const sum = (re: RegExp) => [...text.matchAll(re)].reduce((a, m) => a + Number(m[1]), 0);
    expect(sum(/^quiclb_packets_total\{[^}]*\} (\d+)$/gm) + sum(/^quiclb_dropped_packets_total\{[^}]*\} (\d+)$/gm)).toBe(N);
    expect(DROP_REASONS.every((r) => text.includes(`reason="${r}"`))).toBe(true);
    await dp.stop();
  }, 60_000);
});
