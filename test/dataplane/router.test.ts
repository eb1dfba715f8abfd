import { describe, expect, it } from '@jest/globals';
import { Registry } from 'prom-client';
import { CidEncoder, ConfigError, encodeCid, mintUnroutableCid, validateSnapshot, type RoutingMode } from '../../lib/index.js';
import { clientHash, FallbackPool, ipBytes, murmur3 } from '../../dataplane/fallback.js';
import { FlowTable, DcidTable } from '../../dataplane/flow-table.js';
import { attachMetrics } from '../../dataplane/metrics.js';
import { Router, type RouterServer } from '../../dataplane/router.js';
import { config, longPacket, randomServerCid, server, shortPacket, snapshot } from './helpers.js';

const SERVERS = [server('a', '0001', '127.0.0.1', 4001), server('b', '0002', '127.0.0.1', 4002), server('c', '0003', '127.0.0.1', 4003)];

function router(servers = SERVERS, extra: Parameters<typeof snapshot>[1] = {}) {
  return new Router(snapshot(servers, extra), undefined, 1000);
}

const name = (s: RouterServer | null) => (s === null ? null : s.name);
const rand = (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(Math.random() * 256)));

function checkInvariant(r: Router) {
  const s = r.stats();
  const dropped = Object.values(s.dropped).reduce((a, b) => a + (b ?? 0), 0);
  expect(s.routed.cid + s.routed.table + s.routed.fallback + dropped).toBe(s.received);
}

describe('fallback hash', () => {
  it('is MurmurHash3_x86_32 (known vectors)', () => {
    expect(murmur3(Buffer.from('hello'), 0, 5, 0)).toBe(0x248bfa47);
    expect(murmur3(Buffer.from('The quick brown fox jumps over the lazy dog'), 0, 43, 0)).toBe(0x2e4ff723);
    expect(murmur3(Buffer.alloc(0), 0, 0, 0)).toBe(0);
  });

  it('parses IPv4, IPv6 and mapped addresses into the same 16-byte form', () => {
    const a = new Uint8Array(16);
    const b = new Uint8Array(16);
    expect(ipBytes('1.2.3.4', a)).toBe(true);
    expect(ipBytes('::ffff:1.2.3.4', b)).toBe(true);
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    expect(ipBytes('2001:db8::7', a)).toBe(true);
    expect(Buffer.from(a).toString('hex')).toBe('20010db8000000000000000000000007');
    expect(ipBytes('fe80::1%eth0', a)).toBe(true);
    expect(Buffer.from(a).toString('hex')).toBe('fe800000000000000000000000000001');
    expect(ipBytes('::', a)).toBe(true);
    expect(ipBytes('1:2:3:4:5:6:7:8', a)).toBe(true);
    for (const bad of ['1.2.3', '256.1.1.1', '1::2::3', 'x::1', '1:2:3:4:5:6:7:8:9', 'host']) expect(ipBytes(bad, a)).toBe(false);
    expect(clientHash('1.2.3.4', 5)).toBe(clientHash('::ffff:1.2.3.4', 5));
    expect(clientHash('1.2.3.4', 5)).not.toBe(clientHash('1.2.3.4', 6));
  });

  const members = [1, 2, 3, 4].map((i) => ({ name: `s${i}`, seed: murmur3(Buffer.from([0, i])), weight: 100 }));

  it('gives fixed answers (golden values: every instance and version must agree)', () => {
    const pool = new FallbackPool(members);
    const got = (
      [
        ['10.0.0.1', 1234],
        ['10.0.0.2', 5555],
        ['192.168.1.77', 40000],
        ['::1', 443],
        ['2001:db8::7', 9999],
        ['127.0.0.1', 1],
        ['127.0.0.1', 2],
        ['127.0.0.1', 3],
      ] as [string, number][]
    ).map(([a, p]) => pool.pick(clientHash(a, p))!.name);
    expect(got).toEqual(['s3', 's4', 's4', 's3', 's1', 's1', 's2', 's3']);
  });

  it('does not depend on the order of servers, spreads by weight, and moves only the clients of a changed server', () => {
    const p1 = new FallbackPool(members);
    const p2 = new FallbackPool([...members].reverse());
    const weighted = new FallbackPool(members.map((m, i) => ({ ...m, weight: i === 0 ? 300 : 100 })));
    const without = new FallbackPool(members.slice(1));
    const counts = new Map<string, number>();
    let moved = 0;
    const N = 20000;
    for (let i = 0; i < N; i++) {
      const h = clientHash(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, 1000 + (i % 50000));
      const x = p1.pick(h)!;
      expect(p2.pick(h)!.name).toBe(x.name);
      const w = weighted.pick(h)!.name;
      counts.set(w, (counts.get(w) ?? 0) + 1);
      const y = without.pick(h)!;
      if (x.name !== 's1') expect(y.name).toBe(x.name);
      else moved++;
    }
    // weights 3:1:1:1 -> s1 gets half
    expect(counts.get('s1')! / N).toBeGreaterThan(0.47);
    expect(counts.get('s1')! / N).toBeLessThan(0.53);
    for (const s of ['s2', 's3', 's4']) expect(Math.abs(counts.get(s)! / N - 1 / 6)).toBeLessThan(0.02);
    expect(Math.abs(moved / N - 0.25)).toBeLessThan(0.02);
    expect(new FallbackPool([]).pick(1)).toBeNull();
    expect(new FallbackPool(members.map((m) => ({ ...m, weight: 0 }))).pick(1)).toBeNull();
  });
});

describe('router: draft-21 §4.2 order', () => {
  it('routes routable DCIDs to their server, long and short headers, counted per config id', () => {
    const cfg1 = config(1, null, 2, 6);
    const r = router(SERVERS, { configs: [{ config: config(0), state: 'active' }, { config: cfg1, state: 'draining' }] });
    for (const s of SERVERS) {
      const enc = new CidEncoder(config(0), s.serverId);
      for (let i = 0; i < 5; i++) {
        expect(name(r.route(shortPacket(enc.next()), '10.0.0.1', 1000 + i, 0))).toBe(s.name);
        expect(r.outcome).toBe(0);
        expect(name(r.route(longPacket(enc.next(), rand(8), { type: 2 }), '10.0.0.1', 1000 + i, 0))).toBe(s.name);
      }
      const enc1 = new CidEncoder(cfg1, s.serverId);
      expect(name(r.route(shortPacket(enc1.next()), '10.0.0.9', 9, 0))).toBe(s.name);
    }
    const st = r.stats();
    expect(st.routed.cid).toBe(33);
    expect(st.routedByConfig).toEqual({ 'cid/0': 30, 'cid/1': 3 });
    checkInvariant(r);
  });

  it('falls back for unroutable DCIDs and records 4-tuple, DCID and 4-tuple||SCID entries', () => {
    const r = router();
    const dcid = rand(16);
    const scid = rand(8);
    const first = r.route(longPacket(dcid, scid), '10.0.0.1', 5000, 0)!;
    expect(r.outcome).toBe(2);
    expect(first.name).toBe(r.fallbackFor('10.0.0.1', 5000)!.name);
    // Same 4-tuple, new random DCID: the 4-tuple table (short header), which records the DCID too ...
    const serverCid = mintUnroutableCid(8);
    expect(r.route(shortPacket(serverCid), '10.0.0.1', 5000, 0)).toBe(first);
    expect(r.outcome).toBe(1);
    // ... so a NAT rebinding (same DCID, new address) finds it in the DCID table.
    expect(r.route(shortPacket(serverCid), '10.0.0.77', 7777, 0)).toBe(first);
    expect(r.stats().tableHits).toEqual({ tuple_scid: 0, dcid: 1, tuple: 1 });
    // ... the DCID table from another address (client migration with an unroutable DCID)
    for (let p = 1; p < 40; p++) {
      expect(r.route(longPacket(dcid, scid), '10.9.9.9', p, 0)).toBe(first);
    }
    expect(r.stats().tableHits.dcid).toBeGreaterThanOrEqual(40);
    checkInvariant(r);
  });

  it('uses the 4-tuple||SCID table before the DCID table when the pool changes', () => {
    const r = router();
    const scid = rand(8);
    const chosen = r.route(longPacket(rand(16), scid), '10.0.0.2', 6000, 0)!;
    // Take the chosen server out of the pool: a fresh fallback would pick another one.
    r.apply(snapshot(SERVERS.map((s) => (s.name === chosen.name ? { ...s, state: 'draining' as const } : s))));
    expect(r.fallbackFor('10.0.0.2', 6000)!.name).not.toBe(chosen.name);
    // A second Initial with a new DCID but the same SCID and 4-tuple stays with the chosen server.
    expect(r.route(longPacket(rand(16), scid), '10.0.0.2', 6000, 0)).toBe(chosen);
    expect(r.stats().tableHits.tuple_scid).toBe(1);
  });

  it('sends a new connection from a reused client socket away from a draining server, and keeps the old connection there', () => {
    const r = router();
    const oldScid = rand(8);
    const oldDcid = mintUnroutableCid(8); // the old connection's server issued CIDs the LB cannot decode
    const chosen = r.route(longPacket(rand(16), oldScid), '10.0.0.4', 7000, 0)!;
    expect(r.route(shortPacket(oldDcid), '10.0.0.4', 7000, 0)).toBe(chosen); // 4-tuple table (and DCID recorded)
    r.apply(snapshot(SERVERS.map((s) => (s.name === chosen.name ? { ...s, state: 'draining' as const } : s))));
    const elsewhere = r.fallbackFor('10.0.0.4', 7000)!;
    expect(elsewhere.name).not.toBe(chosen.name);
    // A new connection (new SCID, new client DCID) from the same socket: not to the draining server...
    const newScid = rand(8);
    expect(name(r.route(longPacket(rand(16), newScid), '10.0.0.4', 7000, 0))).toBe(elsewhere.name);
    expect(r.outcome).toBe(2); // fallback
    // ...its retransmitted Initials follow it (4-tuple||SCID table)...
    expect(name(r.route(longPacket(rand(16), newScid), '10.0.0.4', 7000, 0))).toBe(elsewhere.name);
    // ...and the old connection stays on the draining server: its Initials, its Handshake packets, its 1-RTT packets.
    expect(r.route(longPacket(rand(16), oldScid), '10.0.0.4', 7000, 0)).toBe(chosen);
    expect(r.route(longPacket(rand(8), rand(8), { type: 2 }), '10.0.0.4', 7000, 0)).toBe(chosen);
    expect(r.route(shortPacket(oldDcid), '10.0.0.4', 7000, 0)).toBe(chosen);
    // While the server still accepted new connections, a new Initial from the socket went to it (draft §4 order).
    const r2 = router();
    const first = r2.route(longPacket(rand(16), rand(8)), '10.0.0.5', 7001, 0)!;
    expect(r2.route(longPacket(rand(16), rand(8)), '10.0.0.5', 7001, 0)).toBe(first);
    checkInvariant(r);
  });

  it('keeps CID traffic on its server whatever the pool looks like, until the server is removed', () => {
    const r = router();
    const cid = new CidEncoder(config(0), SERVERS[1].serverId).next();
    r.setHealth('b', 'unhealthy');
    expect(r.poolMembers().map((s) => s.name).sort()).toEqual(['a', 'c']);
    expect(name(r.route(shortPacket(cid), '10.0.0.3', 1, 0))).toBe('b');
    r.apply(snapshot(SERVERS.map((s) => ({ ...s, weight: s.name === 'b' ? 0 : 100, state: s.name === 'b' ? ('draining' as const) : ('active' as const) }))));
    expect(name(r.route(shortPacket(cid), '10.0.0.3', 1, 0))).toBe('b');
    expect(r.outcome).toBe(0);
    // Removed from the config: the CID falls to the tables/fallback, never to b.
    r.apply(snapshot(SERVERS.filter((s) => s.name !== 'b')));
    const s = r.route(shortPacket(cid), '10.0.0.3', 1, 0)!;
    expect(s.name).not.toBe('b');
    expect(r.stats().unroutable.unknown_server).toBe(1);
    // And tables pointing at b are ignored: find a client whose fallback was b before.
    const r2 = router();
    let port = 1;
    while (r2.fallbackFor('10.1.1.1', port)!.name !== 'b') port++;
    const dcid = mintUnroutableCid(8);
    expect(name(r2.route(shortPacket(dcid), '10.1.1.1', port, 0))).toBe('b');
    r2.apply(snapshot(SERVERS.filter((x) => x.name !== 'b')));
    expect(name(r2.route(shortPacket(dcid), '10.1.1.1', port, 0))).not.toBe('b');
    expect(name(r2.route(shortPacket(dcid), '10.1.1.2', port, 0))).not.toBe('b');
    checkInvariant(r2);
  });

  it('takes short-header DCID lengths from the codepoint: config CID length, self-encoded 0b111, or the default', () => {
    const long = config(2, null, 2, 6, 4); // CID length 13
    const r = router(SERVERS, { configs: [{ config: config(0), state: 'active' }, { config: long, state: 'accepting' }], shortDcidLength: 9 });
    const cid = encodeCid(long, SERVERS[2].serverId, rand(6), { extra: rand(4) });
    expect(cid.length).toBe(13);
    expect(name(r.route(shortPacket(cid, { size: 14 }), '10.0.0.4', 1, 0))).toBe('c');
    // Cut inside the appended octets: the server ID part is all the LB needs.
    expect(name(r.route(shortPacket(cid, { size: 13 }).subarray(0, 12), '10.0.0.4', 2, 0))).toBe('c');
    // Cut before the end of the server ID and nonce: not decodable, but still forwarded (tables/fallback).
    expect(r.route(shortPacket(cid, { size: 13 }).subarray(0, 8), '10.0.0.4', 1, 0)).not.toBeNull();
    expect(r.stats().unroutable.too_short).toBe(1);
    // A "0b111" first octet with an illegal self-encoded length (26, 32): a server's random CID, forwarded.
    for (const b of [0xf9, 0xff]) {
      const random = Buffer.concat([Buffer.from([b]), rand(17)]);
      const s1 = r.route(shortPacket(random), '10.0.0.9', 9, 0);
      expect(s1).not.toBeNull();
      expect(r.route(shortPacket(random), '10.0.0.10', 10, 0)).toBe(s1); // same DCID (default length): DCID table
    }
    expect(r.stats().dropped).toEqual({});
    // 0b111 with self-encoded length 20: a 20-byte DCID goes into the DCID table.
    const u = mintUnroutableCid(20);
    const hits = r.stats().tableHits.dcid;
    const first = r.route(shortPacket(u), '10.0.0.5', 1, 0);
    expect(r.route(shortPacket(u), '10.0.0.6', 77, 0)).toBe(first);
    expect(r.stats().tableHits.dcid).toBe(hits + 1);
  });

  it('drops malformed datagrams by reason, routes a cleared fixed bit (RFC 9287), never throws', () => {
    const r = router();
    expect(r.route(Buffer.alloc(0), '10.0.0.1', 1, 0)).toBeNull();
    expect(r.route(Buffer.from([0xc0, 0, 0, 0]), '10.0.0.1', 1, 0)).toBeNull();
    expect(r.route(Buffer.from([0x40]), '10.0.0.1', 1, 0)).toBeNull();
    expect(name(r.route(Buffer.from([0x40, 0x00]), '10.0.0.1', 1, 0))).not.toBeNull(); // 1-byte DCID: forwarded
    const tooLong = longPacket(rand(20), rand(8));
    tooLong[5] = 21;
    expect(r.route(tooLong, '10.0.0.1', 1, 0)).toBeNull();
    const greased = shortPacket(new CidEncoder(config(0), SERVERS[0].serverId).next());
    greased[0] &= ~0x40;
    expect(name(r.route(greased, '10.0.0.1', 1, 0))).toBe('a');
    expect(r.stats().dropped).toEqual({ empty: 1, truncated: 1, short_dcid_unavailable: 1, dcid_too_long: 1 });
    const none = router([]);
    expect(none.route(shortPacket(rand(9)), '10.0.0.1', 1, 0)).toBeNull();
    expect(none.stats().dropped).toEqual({ no_server: 1 });
    checkInvariant(r);
  });

  it('caches the decision per flow and invalidates it on apply()', () => {
    const r = router();
    const cid = new CidEncoder(config(0), SERVERS[0].serverId).next();
    for (let i = 0; i < 10; i++) expect(name(r.route(shortPacket(cid), '10.0.0.7', 7, 0))).toBe('a');
    // Re-map a's server ID to server c: the cached decision must not survive.
    r.apply(snapshot([{ ...SERVERS[0], serverId: Buffer.from('0009', 'hex') }, SERVERS[1], { ...SERVERS[2], serverId: Buffer.from('0001', 'hex') }]));
    expect(name(r.route(shortPacket(cid), '10.0.0.7', 7, 0))).toBe('c');
    // A cached DCID-table decision dies with its entry.
    const u = mintUnroutableCid(8);
    const s1 = r.route(shortPacket(u), '10.0.0.8', 8, 0)!;
    expect(r.route(shortPacket(u), '10.0.0.8', 8, 0)).toBe(s1);
    r.dcids.clear();
    r.flows.get('10.0.0.8', 8, 0)!.tupleServer = null;
    r.route(shortPacket(u), '10.0.0.8', 8, 0);
    expect(r.outcome).toBe(2);
  });

  it('learns server CIDs from long-header replies (0b111 servers) so a migrated client finds its server', () => {
    const r = router();
    const srv = r.getServer('c')!;
    const serverCid = mintUnroutableCid(8);
    r.learnReply(longPacket(rand(8), serverCid, { type: 2 }), srv);
    // A CID that decodes to a configured server is not learned.
    r.learnReply(longPacket(rand(8), new CidEncoder(config(0), SERVERS[0].serverId).next(), { type: 2 }), srv);
    expect(r.stats().learned).toBe(1);
    expect(name(r.route(shortPacket(serverCid), '10.7.7.7', 7777, 0))).toBe('c');
    expect(r.outcome).toBe(1);
  });
});

describe('router: learned server CID lengths (short headers of servers with non-QUIC-LB CIDs)', () => {
  // A server that does not mint QUIC-LB CIDs (e.g. ngtcp2: 18 random bytes). The LB guesses a short header's
  // DCID length from its first octet: a live config's CID length (9 here), the self-encoded 0b111 length, or
  // short_header_dcid_length (18 here, as in the e2e config).
  /** A random CID with this first octet whose guessed-length prefix does not decode to a configured server. */
  const serverCid = (first: number, len = 18, configs = [config(0)]) =>
    randomServerCid(first, len, configs, SERVERS.map((s) => s.serverId));
  /** A client port (from `from` up) whose fallback is not `avoid`, so a table hit is told apart from luck. */
  function portAvoiding(r: Router, address: string, avoid: string, from = 1): number {
    let p = from;
    while (r.fallbackFor(address, p)!.name === avoid) p++;
    return p;
  }
  const learnedRouter = () => router(SERVERS, { shortDcidLength: 18 });

  it('routes a migrated client by a learned 18-byte CID whatever length its first octet suggests', () => {
    const r = learnedRouter();
    const srv = r.getServer('c')!;
    // 0x05, 0x1f: live config 0 (guess 9); 0xe4, 0xf3: 0b111 with self-encoded length 5, 20; 0x40, 0x9a: configs
    // 2 and 4, not live (guess 18: found at the first lookup).
    const cids = [0x05, 0x1f, 0xe4, 0xf3, 0x40, 0x9a].map((b) => serverCid(b));
    for (const cid of cids) r.learnReply(longPacket(rand(17), cid, { type: 2 }), srv);
    expect(r.stats().learned).toBe(cids.length);
    let port = 1;
    for (const cid of cids) {
      port = portAvoiding(r, '10.7.0.1', 'c', port + 1);
      expect(name(r.route(shortPacket(cid), '10.7.0.1', port, 0))).toBe('c');
      expect(r.outcome).toBe(1);
    }
    const st = r.stats();
    expect(st.learnedLengthHits).toBe(4);
    expect(st.tableHits).toEqual({ tuple_scid: 0, dcid: cids.length, tuple: 0 });
    expect(st.routed).toEqual({ cid: 0, table: cids.length, fallback: 0 });
    expect(st.dcids).toBe(cids.length); // nothing recorded besides the learned CIDs
    checkInvariant(r);
  });

  it('keeps the learned length in the per-flow cache, and tries learned lengths only on a miss', () => {
    const r = learnedRouter();
    const cid = serverCid(0x07);
    r.learnReply(longPacket(rand(17), cid, { type: 2 }), r.getServer('b')!);
    const port = portAvoiding(r, '10.7.0.1', 'b');
    let lookups = 0;
    const get = r.dcids.get.bind(r.dcids);
    r.dcids.get = (k: string) => {
      lookups++;
      return get(k);
    };
    expect(name(r.route(shortPacket(cid), '10.7.0.1', port, 0))).toBe('b');
    expect(lookups).toBe(2); // guessed length 9, then the learned 18
    for (let i = 0; i < 5; i++) expect(name(r.route(shortPacket(cid, { size: 30 + i }), '10.7.0.1', port, 0))).toBe('b');
    expect(lookups).toBe(2); // the flow's cache, compared at 18 octets
    // Another (unknown) 18-byte DCID on the same flow matches neither the cache nor the table: the fallback.
    const other = serverCid(0x07);
    expect(name(r.route(shortPacket(other), '10.7.0.1', port, 0))).not.toBe('b');
    expect(r.outcome).toBe(2);
    const st = r.stats();
    expect(st.learnedLengthHits).toBe(6);
    expect(st.learnedLengths).toEqual([18]);
    checkInvariant(r);
  });

  it('retries every learned length that fits, matches only exact octets, ignores removed servers', () => {
    const r = learnedRouter();
    // Server a: 8-byte random CIDs (not 0b111), server c: 18-byte ones, server b: an exact 0b111 CID.
    const a8 = serverCid(0x11, 8);
    const c18 = serverCid(0x12);
    const b0b111 = mintUnroutableCid(12);
    r.learnReply(longPacket(rand(8), a8, { type: 2 }), r.getServer('a')!);
    r.learnReply(longPacket(rand(8), c18, { type: 2 }), r.getServer('c')!);
    r.learnReply(longPacket(rand(8), b0b111, { type: 2 }), r.getServer('b')!);
    expect(r.stats().learnedLengths).toEqual([8, 12, 18]);
    const via = (cid: Buffer, port: number, opts: { size?: number } = {}) => {
      const s = name(r.route(shortPacket(cid, opts), '10.7.0.2', port, 0));
      return `${s}/${r.outcome}`;
    };
    let port = 100;
    const fresh = (avoid: string) => (port = portAvoiding(r, '10.7.0.2', avoid, port + 1));
    expect(via(a8, fresh('a'))).toBe('a/1');
    expect(via(c18, fresh('c'))).toBe('c/1');
    expect(via(b0b111, fresh('b'))).toBe('b/1'); // self-encoded length: found at the first lookup
    expect(r.stats().learnedLengthHits).toBe(2);
    // One octet off at the end of the learned CID: no match at any length.
    const near = Buffer.from(c18);
    near[17] ^= 1;
    expect(via(near, fresh('c'))).toBe(`${r.fallbackFor('10.7.0.2', port)!.name}/2`);
    // A datagram too short to hold the 18 octets cannot match them (only the 8-octet length is tried).
    const c18b = serverCid(0x13);
    r.learnReply(longPacket(rand(8), c18b, { type: 2 }), r.getServer('c')!);
    const cut = shortPacket(c18b).subarray(0, 12);
    const p = fresh('c');
    expect(name(r.route(cut, '10.7.0.2', p, 0))).not.toBe('c');
    expect(r.outcome).toBe(2);
    // A learned entry of a removed server is ignored.
    r.apply(snapshot(SERVERS.filter((x) => x.name !== 'a'), { shortDcidLength: 18 }));
    expect(via(a8, fresh('a'))).not.toMatch(/^a\//);
    checkInvariant(r);
  });

  it('tries learned lengths under 8 octets only for flows without a 4-tuple entry (chance prefix matches)', () => {
    const r = learnedRouter();
    // A server with 4-octet random CIDs (quic-go's default length), first octet of a non-live codepoint (guess 18).
    const a4 = Buffer.from([0x51, 0x9c, 0x27, 0xe0]);
    r.learnReply(longPacket(rand(8), a4, { type: 2 }), r.getServer('a')!);
    // NAT rebinding of a's connection: a new flow, its short headers carry the 4 octets, then the payload.
    expect(name(r.route(shortPacket(a4), '10.7.0.4', portAvoiding(r, '10.7.0.4', 'a'), 0))).toBe('a');
    expect(r.stats().learnedLengthHits).toBe(1);
    // Another connection, established through the fallback on its own flow, whose 18-octet CID starts with
    // the same 4 octets: its 4-tuple entry wins over the chance match.
    const port = portAvoiding(r, '10.7.0.4', 'a', 1000);
    const other = r.route(longPacket(rand(18), rand(17)), '10.7.0.4', port, 0)!;
    expect(r.outcome).toBe(2);
    expect(name(r.route(shortPacket(Buffer.concat([a4, rand(14)])), '10.7.0.4', port, 0))).toBe(other.name);
    expect(r.stats().tableHits.tuple).toBe(1);
    expect(r.stats().learnedLengthHits).toBe(1);
    checkInvariant(r);
  });

  it('still finds a learned CID when a reload changes the guessed length, and still routes a decodable CID first', () => {
    const plain2 = config(2, null, 2, 6); // plaintext: the server ID is octets 1..2, CID length 9
    const r = learnedRouter();
    // Codepoint 2, not live yet: the guess is short_header_dcid_length (18). Octets 1..2 name no server.
    const c18 = serverCid(0x45, 18, [config(0), plain2]);
    const toB = Buffer.concat([Buffer.from([0x46, 0x00, 0x02]), rand(15)]); // decodes to b once config 2 is live
    r.learnReply(longPacket(rand(8), c18, { type: 2 }), r.getServer('c')!);
    r.learnReply(longPacket(rand(8), toB, { type: 2 }), r.getServer('c')!);
    expect(name(r.route(shortPacket(c18), '10.7.0.3', portAvoiding(r, '10.7.0.3', 'c'), 0))).toBe('c');
    expect(r.stats().learnedLengthHits).toBe(0); // guessed right
    r.apply(snapshot(SERVERS, { configs: [{ config: config(0), state: 'active' }, { config: plain2, state: 'accepting' }], shortDcidLength: 18 }));
    // Codepoint 2 is live now: the guess is 9, the learned length 18 still finds the entry...
    expect(name(r.route(shortPacket(c18), '10.7.0.3', portAvoiding(r, '10.7.0.3', 'c', 500), 0))).toBe('c');
    expect(r.outcome).toBe(1);
    expect(r.stats().learnedLengthHits).toBe(1);
    // ... but a CID that now decodes to a configured server goes there (draft order: routable DCID first).
    expect(name(r.route(shortPacket(toB), '10.7.0.3', 900, 0))).toBe('b');
    expect(r.outcome).toBe(0);
    r.clear();
    expect(r.stats().learnedLengths).toEqual([]);
    checkInvariant(r);
  });
});

describe("router: routing mode '4-tuple' (CIDs ignored: the 4-tuple table, else the fallback)", () => {
  const tupleRouter = (servers = SERVERS) => router(servers, { routing: '4-tuple' });
  const cidOf = (server: string) => new CidEncoder(config(0), SERVERS.find((s) => s.name === server)!.serverId).next();
  /** A client port (from `from` up) whose fallback is not `avoid`. */
  function portAvoiding(r: Router, address: string, avoid: string, from = 1): number {
    let p = from;
    while (r.fallbackFor(address, p)!.name === avoid) p++;
    return p;
  }

  it('routes by the fallback hash and then the 4-tuple table, whatever the DCID says, counted as fallback/table', () => {
    const r = tupleRouter();
    expect(r.routing).toBe('4-tuple');
    const cid = cidOf('b'); // decodes to b in quic-lb mode
    const port = portAvoiding(r, '10.5.0.1', 'b');
    const chosen = r.fallbackFor('10.5.0.1', port)!.name;
    expect(name(r.route(longPacket(cid, rand(8)), '10.5.0.1', port, 0))).toBe(chosen);
    expect(r.outcome).toBe(2);
    expect(r.configId).toBe(-1);
    for (let i = 0; i < 5; i++) {
      expect(name(r.route(shortPacket(cid), '10.5.0.1', port, 0))).toBe(chosen);
      expect(r.outcome).toBe(1);
    }
    // A migrated / NAT-rebound client is a new 4-tuple: the hash decides again, the CID is not looked at.
    const moved = portAvoiding(r, '10.5.0.1', chosen, port + 1);
    expect(name(r.route(shortPacket(cid), '10.5.0.1', moved, 0))).toBe(r.fallbackFor('10.5.0.1', moved)!.name);
    expect(name(r.route(shortPacket(cid), '10.5.0.1', moved, 0))).not.toBe(chosen);
    const st = r.stats();
    expect(st.routing).toBe('4-tuple');
    expect(st.routed).toEqual({ cid: 0, table: 6, fallback: 2 });
    expect(st.routedByConfig).toEqual({ 'table/none': 6, 'fallback/none': 2 });
    expect(st.tableHits).toEqual({ tuple_scid: 0, dcid: 0, tuple: 6 });
    expect(st.unroutable).toEqual({}); // the DCID is never decoded
    expect(st.dcids).toBe(0); // no DCID entries...
    expect(r.flows.get('10.5.0.1', port, 0)!.scidServers).toBeNull(); // ...and no 4-tuple||SCID entries
    expect(st.flows).toBe(2);
    checkInvariant(r);
  });

  it('learns nothing from replies, forwards any non-empty datagram, drops only empty ones and when no server accepts', () => {
    const r = tupleRouter();
    const serverCid = mintUnroutableCid(8);
    r.learnReply(longPacket(rand(8), serverCid, { type: 2 }), r.getServer('c')!);
    expect(r.stats()).toMatchObject({ learned: 0, learnedLengths: [], dcids: 0 });
    const port = portAvoiding(r, '10.5.0.2', 'c');
    expect(name(r.route(shortPacket(serverCid), '10.5.0.2', port, 0))).not.toBe('c');
    // Not parsed: what quic-lb mode drops as malformed is forwarded on the flow's 4-tuple.
    const first = r.route(Buffer.from([0xc0, 0, 0, 0]), '10.5.0.3', 1, 0); // truncated long header
    expect(first).not.toBeNull();
    expect(r.route(Buffer.from([0x40]), '10.5.0.3', 1, 0)).toBe(first);
    const tooLong = longPacket(rand(20), rand(8));
    tooLong[5] = 21;
    expect(r.route(tooLong, '10.5.0.3', 1, 0)).toBe(first);
    expect(r.route(Buffer.alloc(0), '10.5.0.3', 1, 0)).toBeNull();
    expect(r.stats().dropped).toEqual({ empty: 1 });
    const none = tupleRouter([]);
    expect(none.route(shortPacket(rand(9)), '10.5.0.1', 1, 0)).toBeNull();
    expect(none.stats().dropped).toEqual({ no_server: 1 });
    checkInvariant(r);
    checkInvariant(none);
  });

  it('keeps a 4-tuple on its server while it stays configured (draining, unhealthy), re-hashes it once removed', () => {
    const r = tupleRouter();
    const port = 4242;
    const chosen = r.route(shortPacket(rand(9)), '10.5.0.4', port, 0)!;
    r.setHealth(chosen.name, 'unhealthy');
    expect(r.route(shortPacket(rand(9)), '10.5.0.4', port, 0)).toBe(chosen);
    r.apply(snapshot(SERVERS.map((s) => (s.name === chosen.name ? { ...s, state: 'draining' as const } : s)), { routing: '4-tuple' }));
    expect(r.route(shortPacket(rand(9)), '10.5.0.4', port, 0)).toBe(chosen);
    expect(r.outcome).toBe(1);
    r.apply(snapshot(SERVERS.filter((s) => s.name !== chosen.name), { routing: '4-tuple' }));
    const next = r.route(shortPacket(rand(9)), '10.5.0.4', port, 0)!;
    expect(next.name).not.toBe(chosen.name);
    expect(r.outcome).toBe(2);
    expect(r.route(shortPacket(rand(9)), '10.5.0.4', port, 0)).toBe(next);
    checkInvariant(r);
  });

  it('switches modes on apply(): the per-flow CID cache does not survive into 4-tuple mode, CID routing resumes after', () => {
    const r = router();
    expect(r.routing).toBe('quic-lb');
    const cid = cidOf('a');
    const port = portAvoiding(r, '10.5.0.5', 'a');
    for (let i = 0; i < 3; i++) expect(name(r.route(shortPacket(cid), '10.5.0.5', port, 0))).toBe('a'); // cached after the first
    expect(r.outcome).toBe(0);
    r.apply(snapshot(SERVERS, { routing: '4-tuple' }));
    expect(r.stats().routing).toBe('4-tuple');
    const fb = r.fallbackFor('10.5.0.5', port)!.name;
    expect(name(r.route(shortPacket(cid), '10.5.0.5', port, 0))).toBe(fb);
    expect(r.outcome).toBe(2);
    r.apply(snapshot(SERVERS, { routing: 'quic-lb' }));
    expect(name(r.route(shortPacket(cid), '10.5.0.5', port, 0))).toBe('a');
    expect(r.outcome).toBe(0);
    expect(r.stats().routed).toEqual({ cid: 4, table: 0, fallback: 1 });
    checkInvariant(r);
  });

  it('is checked by validateSnapshot and shown by the metrics', async () => {
    const bad = { ...snapshot(SERVERS), routing: 'naive' as RoutingMode };
    expect(() => validateSnapshot(bad)).toThrow(ConfigError);
    expect(() => validateSnapshot(bad)).toThrow(/^routing: must be one of quic-lb, 4-tuple, got "naive"/);
    expect(validateSnapshot(snapshot(SERVERS, { routing: '4-tuple' })).routing).toBe('4-tuple');
    expect(validateSnapshot(snapshot(SERVERS)).routing).toBeUndefined(); // optional: quic-lb
    const r = tupleRouter();
    r.route(shortPacket(cidOf('a')), '10.5.0.6', 1, 0);
    r.route(shortPacket(cidOf('a')), '10.5.0.6', 1, 0);
    const registry = new Registry();
    attachMetrics(registry, { lbName: 't', router: r, liveConfigs: () => [], sendErrors: { upstream: 0, reply: 0 }, upstreamSockets: 0, workerLabel: null });
    const text = await registry.metrics();
    expect(text).toMatch(/^quiclb_routing_mode\{lb="t",mode="4-tuple"\} 1$/m);
    expect(text).toMatch(/^quiclb_routing_mode\{lb="t",mode="quic-lb"\} 0$/m);
    expect(text).toMatch(/^quiclb_packets_total\{lb="t",outcome="fallback",config_id="none"\} 1$/m);
    expect(text).toMatch(/^quiclb_packets_total\{lb="t",outcome="table",config_id="none"\} 1$/m);
    expect(text).not.toMatch(/outcome="cid"/);
  });
});

describe('metrics: learned-length hits', () => {
  it('exports stats().learnedLengthHits as quiclb_learned_length_hits_total', async () => {
    const r = router(SERVERS, { shortDcidLength: 18 });
    const cid = randomServerCid(0x05, 18, [config(0)], SERVERS.map((s) => s.serverId)); // guessed length 9
    r.learnReply(longPacket(rand(8), cid, { type: 2 }), r.getServer('c')!);
    for (let p = 1; p <= 3; p++) expect(name(r.route(shortPacket(cid), '10.6.0.1', p, 0))).toBe('c');
    expect(r.stats().learnedLengthHits).toBe(3);
    const registry = new Registry();
    attachMetrics(registry, { lbName: 't', router: r, liveConfigs: () => [], sendErrors: { upstream: 0, reply: 0 }, upstreamSockets: 0, workerLabel: null });
    const text = await registry.metrics();
    expect(text).toMatch(/^# TYPE quiclb_learned_length_hits_total counter$/m);
    expect(text).toMatch(/^quiclb_learned_length_hits_total\{lb="t"\} 3$/m);
    expect(text).toMatch(/^quiclb_table_hits_total\{lb="t",table="dcid"\} 3$/m);
    expect(text).toMatch(/^quiclb_routing_mode\{lb="t",mode="quic-lb"\} 1$/m);
  });
});

describe('flow tables', () => {
  it('expire idle entries and evict the least recently used when full, counting both', () => {
    const removed: string[] = [];
    const t = new FlowTable(3, 100, (f, why) => removed.push(`${f.address}:${f.port}:${why}`));
    const a = t.create('1.1.1.1', 1, 0, 0)!;
    t.create('1.1.1.1', 2, 0, 10);
    t.create('2.2.2.2', 1, 0, 20);
    t.touch(a, 30); // a is now the most recently used
    t.create('3.3.3.3', 1, 0, 40); // evicts 1.1.1.1:2
    expect(removed).toEqual(['1.1.1.1:2:evicted']);
    expect(t.get('1.1.1.1', 2, 0)).toBeNull();
    expect(t.get('1.1.1.1', 1, 0)).toBe(a);
    expect(t.get('1.1.1.1', 1, 1)).toBeNull(); // another listener is another flow
    expect(t.counters).toMatchObject({ created: 4, expired: 0, evicted: 1 });
    expect(t.expire(125)).toBe(1); // 2.2.2.2 (20) expired; a (30) not yet
    expect(t.expire(200)).toBe(2);
    expect(t.size).toBe(0);
    expect(t.counters).toMatchObject({ created: 4, expired: 3, evicted: 1 });
    const d = new DcidTable(2, 100);
    d.set('x', { removed: false }, 0);
    d.set('y', { removed: false }, 1);
    d.touch(d.get('x')!, 2);
    d.set('z', { removed: false }, 3);
    expect(d.get('y')).toBeUndefined();
    expect(d.counters.evicted).toBe(1);
    d.shrinkTo(1);
    expect(d.size).toBe(1);
  });

  it('bounds the router tables and expires them through tick()', () => {
    const r = new Router(snapshot(SERVERS, { flows: { maxFlows: 50, idleTimeoutMs: 100, maxUnconfirmed: 50, maxUnconfirmedPerSource: 1000 } }), undefined, 0);
    for (let i = 0; i < 200; i++) r.route(longPacket(rand(16), rand(8)), '10.0.0.1', 10000 + i, 0);
    let s = r.stats();
    expect(s.flows).toBe(50);
    expect(s.dcids).toBe(50);
    expect(s.flowsEvicted).toBe(150);
    expect(s.dcidsEvicted).toBe(150);
    r.tick(50);
    r.route(shortPacket(mintUnroutableCid(8)), '10.0.0.1', 10199, 0); // keeps one flow alive
    r.tick(140);
    s = r.stats();
    expect(s.flows).toBe(1);
    expect(s.flowsExpired).toBe(49);
    checkInvariant(r);
  });
});
