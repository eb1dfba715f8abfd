/** Component tests: a real Dataplane on loopback sockets, tagging UDP backends, synthetic QUIC packets. */
import { describe, expect, it, beforeAll, afterAll } from '@jest/globals';
import { CidEncoder, mintUnroutableCid } from '../../lib/index.js';
import { Dataplane } from '../../dataplane/dataplane.js';
import { Client, config, longPacket, randomServerCid, server, shortPacket, sleep, snapshot, TaggingBackend, waitFor, Opened } from './helpers.js';
import type { DataplaneSnapshot } from '../../lib/config/snapshot.js';

const rand = (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(Math.random() * 256)));

let backends: TaggingBackend[];
let v6backend: TaggingBackend;
const opened = new Opened();
const client = (host?: string): Promise<Client> => opened.client(host);
const start = (snap: DataplaneSnapshot) => opened.dataplane(snap);

function servers() {
  return [
    server('a', '0001', '127.0.0.1', backends[0].port),
    server('b', '0002', '127.0.0.1', backends[1].port),
    server('c', '0003', '127.0.0.1', backends[2].port),
  ];
}

function cidFor(sid: string, configId = 0): Buffer {
  return new CidEncoder(config(configId), Buffer.from(sid, 'hex')).next();
}

beforeAll(async () => {
  backends = await Promise.all(['a', 'b', 'c'].map((n) => opened.backend(n)));
  v6backend = await opened.backend('v6', '::1');
});

afterAll(() => opened.closeAll());

describe('forwarding over real sockets', () => {
  it('routes by CID to the tagged backend, as a full proxy both ways', async () => {
    const { dp, port } = await start(snapshot(servers()));
    const c = await client();
    for (const [sid, n] of [
      ['0001', 'a'],
      ['0002', 'b'],
      ['0003', 'c'],
    ]) {
      expect(await c.request(shortPacket(cidFor(sid)), port)).toBe(n);
      expect(await c.request(longPacket(cidFor(sid), rand(8), { type: 2 }), port)).toBe(n);
    }
    // Replies come from the listening socket, and backends never see the client's address.
    expect([...c.replyPorts]).toEqual([port]);
    for (const b of backends) for (const r of b.received) expect(r.port).not.toBe(c.port);
    const st = dp.stats();
    expect(st.routed.cid).toBe(6);
    expect(st.servers.a.replyPackets).toBe(2);
    expect(st.upstreamSockets).toBe(3); // one per (client flow, backend)
  });

  it('keeps a connection on its server across client migration: fallback, tables, then CID', async () => {
    const { dp, port } = await start(snapshot(servers()));
    const c1 = await client();
    const initialDcid = rand(16);
    const first = await c1.request(longPacket(initialDcid, rand(8)), port);
    expect(first).not.toBeNull();
    // Same 4-tuple, unroutable short header: 4-tuple table.
    expect(await c1.request(shortPacket(mintUnroutableCid(8)), port)).toBe(first);
    // The server's CID routes from any address.
    const sid = { a: '0001', b: '0002', c: '0003' }[first!]!;
    const c2 = await client();
    expect(await c2.request(shortPacket(cidFor(sid)), port)).toBe(first);
    // The client's Initial DCID from a new address: DCID table.
    const c3 = await client();
    expect(await c3.request(longPacket(initialDcid, rand(8)), port)).toBe(first);
    const st = dp.stats();
    expect(st.routed).toEqual({ cid: 1, table: 2, fallback: 1 });
    expect(st.tableHits.dcid).toBe(1);
  });

  it('learns a 0b111 server CID from its long-header reply and routes a migrated client by it', async () => {
    const { dp, port } = await start(snapshot(servers()));
    const serverCid = mintUnroutableCid(8);
    const c1 = await client();
    const target = dp.router.fallbackFor('127.0.0.1', c1.port)!.name;
    const tb = backends.find((b) => b.name === target)!;
    const before = tb.received.length;
    expect(await c1.request(longPacket(rand(16), rand(8)), port)).toBe(target);
    const upstream = tb.received[before];
    // The backend answers like a server without config: a Handshake whose SCID is a 0b111 CID.
    tb.socket.send(longPacket(rand(8), serverCid, { type: 2 }), upstream.port, upstream.from);
    expect(await waitFor(() => dp.stats().learned === 1)).toBe(true);
    const c2 = await client();
    expect(await c2.request(shortPacket(serverCid), port)).toBe(target);
    expect(dp.stats().tableHits.dcid).toBe(1);
  });

  it('routes a NAT-rebound client by a learned 18-byte random server CID whatever length its first octet suggests', async () => {
    // Like ngtcp2's gtlsserver: no QUIC-LB, 18 random octets. The LB guesses 9 octets for short headers whose
    // first octet names config 0 (its CID length) or any other non-0b111 codepoint (the default length), and
    // the self-encoded length for 0b111; the learned CID is found again at its own length.
    const { dp, port } = await start(snapshot(servers()));
    const sids = servers().map((s) => s.serverId);
    const firsts = [0x05, 0xe4, 0x5a];
    for (const [i, first] of firsts.entries()) {
      const serverCid = randomServerCid(first, 18, [config(0)], sids);
      const c1 = await client();
      const target = dp.router.fallbackFor('127.0.0.1', c1.port)!.name;
      const tb = backends.find((b) => b.name === target)!;
      const before = tb.received.length;
      expect(await c1.request(longPacket(rand(18), rand(17)), port)).toBe(target);
      const upstream = tb.received[before];
      // The backend's Handshake carries its CID as SCID; the LB relays it to the client and learns it.
      tb.socket.send(longPacket(rand(17), serverCid, { type: 2 }), upstream.port, upstream.from);
      expect(await waitFor(() => dp.stats().learned === i + 1)).toBe(true);
      // The client rebinds: a new port whose fallback would pick another server, same DCID, short headers.
      let c2 = await client();
      while (dp.router.fallbackFor('127.0.0.1', c2.port)!.name === target) c2 = await client();
      for (let k = 0; k < 3; k++) expect(await c2.request(shortPacket(serverCid, { size: 40 + k }), port)).toBe(target);
    }
    const st = dp.stats();
    expect(st.learnedLengths).toEqual([18]);
    expect(st.learnedLengthHits).toBe(3 * firsts.length);
    expect(st.tableHits.dcid).toBe(3 * firsts.length);
    expect(st.routed).toEqual({ cid: 0, table: 3 * firsts.length, fallback: firsts.length });
  });

  it('listens on IPv6 and forwards to IPv6 backends', async () => {
    const snap = snapshot([...servers(), server('v6', '0006', '::1', v6backend.port)], {
      listen: [
        { host: '127.0.0.1', port: 0, family: 4 },
        { host: '::1', port: 0, family: 6 },
      ],
    });
    const { port6 } = await start(snap);
    const c = await client('::1');
    expect(await c.request(shortPacket(cidFor('0006')), port6!, '::1')).toBe('v6');
    expect(await c.request(shortPacket(cidFor('0002')), port6!, '::1')).toBe('b');
    expect(v6backend.received.at(-1)!.from).toBe('::1');
  });

  it('hot reload keeps flows: same upstream socket, same server; removed servers get nothing', async () => {
    const { dp, port } = await start(snapshot(servers()));
    const clients = await Promise.all(Array.from({ length: 12 }, () => client()));
    const where = new Map<Client, string>();
    const upstreamPorts = new Map<Client, number>();
    for (const c of clients) {
      where.set(c, (await c.request(longPacket(rand(16), rand(8)), port))!);
      upstreamPorts.set(c, backends.find((x) => x.name === where.get(c))!.received.at(-1)!.port);
    }
    // Reload: add a heavy server d (= backend c's socket under a new name and ID), change weights.
    const next = snapshot([...servers().map((s) => ({ ...s, weight: s.name === 'a' ? 1 : 500 })), server('d', '0004', '127.0.0.1', backends[2].port, { weight: 10000 })]);
    await dp.apply(next);
    for (const c of clients) {
      const n = where.get(c)!;
      expect(await c.request(shortPacket(mintUnroutableCid(8)), port)).toBe(n);
      expect(backends.find((x) => x.name === n)!.received.at(-1)!.port).toBe(upstreamPorts.get(c));
    }
    expect(dp.stats().flows).toBe(12);
    // Remove b: its CIDs and its flows move elsewhere.
    const bCount = backends[1].received.length;
    await dp.apply(snapshot(servers().filter((s) => s.name !== 'b')));
    const c = await client();
    expect(await c.request(shortPacket(cidFor('0002')), port)).not.toBe('b');
    for (const cl of clients) expect(await cl.request(shortPacket(mintUnroutableCid(8)), port)).not.toBe('b');
    expect(backends[1].received.length).toBe(bCount);
    expect(dp.stats().unroutable.unknown_server).toBeGreaterThanOrEqual(1);
  });

  it('loses no datagram while snapshots are applied under continuous traffic', async () => {
    const { dp, port } = await start(snapshot(servers()));
    const clients = await Promise.all(Array.from({ length: 8 }, () => client()));
    const marks = backends.map((b) => b.received.length);
    const delivered = () => backends.reduce((a, b, i) => a + b.received.length - marks[i], 0);
    // The backends share this process's event loop: libuv reads at most 32 datagrams per socket per loop turn, while
    // the batched data plane forwards all it received in one turn. Under CPU load every turn carries a burst, and an
    // unpaced sender overflows a backend's receive buffer (about 250 datagrams of 64 octets at the default 208 KiB):
    // the kernel drops them at the backend, not the data plane. So the next burst waits until at most one burst is
    // unaccounted for (at most 2 x BURST in flight anywhere).
    const BURST = 80; // 8 clients x 10
    const MIN_BURSTS = 15;
    const MAX_BURSTS = 400; // bound: the 6 reloads take about 100 ms
    let sent = 0;
    let reloading = true;
    let stalled: string | null = null;
    const tag = (ci: number) => Buffer.concat([Buffer.from([ci, 0x77]), rand(6)]);
    const sending = (async () => {
      for (let burst = 0; burst < MAX_BURSTS && (reloading || burst < MIN_BURSTS); burst++) {
        for (let k = 0; k < BURST / clients.length; k++) {
          const i = burst * 10 + k;
          clients.forEach((c, ci) => {
            const dcid = i % 2 ? cidFor(['0001', '0002', '0003'][i % 3]) : mintUnroutableCid(8);
            c.send(shortPacket(dcid, { tag: tag(ci) }), port);
            sent++;
          });
        }
        await sleep(2);
        if (!(await waitFor(() => sent - delivered() <= BURST, 5000, 1))) {
          stalled = `${sent - delivered()} of ${sent} datagrams undelivered after 5 s`;
          break;
        }
      }
    })();
    // The reloads happen while datagrams are being sent (the sender goes on until the last one is applied).
    const sentAtReload: number[] = [];
    for (let v = 0; v < 6; v++) {
      await sleep(15);
      sentAtReload.push(sent);
      await dp.apply(snapshot(servers().map((s) => ({ ...s, weight: 50 + ((v * 37 + s.name.charCodeAt(0)) % 200) }))));
    }
    reloading = false;
    await sending;
    expect(stalled).toBeNull();
    expect(sentAtReload[0]).toBeGreaterThan(0);
    expect(sentAtReload[5]).toBeGreaterThan(sentAtReload[0]);
    expect(await waitFor(() => delivered() === sent, 5000)).toBe(true);
    const st = dp.stats();
    expect(st.received).toBe(sent);
    expect(st.flows).toBe(8);
    // Each client's fallback-routed (0b111) datagrams stayed on one server and one upstream socket across the reloads.
    const paths = new Map<number, Set<string>>();
    backends.forEach((b, i) => {
      for (const r of b.received.slice(marks[i])) {
        const t = r.data.subarray(r.data.length - 8);
        if (t[1] !== 0x77 || r.data[1] >> 5 !== 7) continue;
        if (!paths.has(t[0])) paths.set(t[0], new Set());
        paths.get(t[0])!.add(`${b.name}:${r.port}`);
      }
    });
    expect(paths.size).toBe(8);
    for (const p of paths.values()) expect(p.size).toBe(1);
  });

  it('expires idle flows (closing their upstream sockets) and evicts beyond the bound, counted', async () => {
    const { dp, port } = await start(snapshot(servers(), { flows: { maxFlows: 4, idleTimeoutMs: 400, maxUnconfirmed: 4 } }));
    const clients = await Promise.all(Array.from({ length: 6 }, () => client()));
    for (const c of clients) expect(await c.request(shortPacket(cidFor('0001')), port)).toBe('a');
    let st = dp.stats();
    expect(st.flows).toBe(4);
    expect(st.flowsEvicted).toBe(2);
    expect(st.upstreamSockets).toBe(4);
    expect(await waitFor(() => dp.stats().flows === 0, 2000)).toBe(true);
    st = dp.stats();
    expect(st.upstreamSockets).toBe(0);
    expect(st.flowsExpired).toBe(4);
    // A flow that keeps talking stays.
    const c = clients[0];
    for (let i = 0; i < 6; i++) {
      expect(await c.request(shortPacket(cidFor('0001')), port)).toBe('a');
      await sleep(100);
    }
    expect(dp.stats().flows).toBe(1);
  });

  it('counts malformed datagrams by reason and every datagram exactly once', async () => {
    const { dp, port } = await start(snapshot(servers()));
    const c = await client();
    const bad = [Buffer.alloc(0), Buffer.from([0xc0, 0, 0]), Buffer.from([0x40]), Buffer.from([0xc3, 0, 0, 0, 1, 25, ...rand(30)])];
    for (const b of bad) c.send(b, port);
    const good = 20;
    for (let i = 0; i < good; i++) c.send(shortPacket(cidFor('0003')), port);
    expect(await waitFor(() => dp.stats().received === bad.length + good)).toBe(true);
    const st = dp.stats();
    expect(st.dropped).toEqual({ empty: 1, truncated: 1, short_dcid_unavailable: 1, dcid_too_long: 1 });
    expect(st.routed.cid).toBe(good);
    const text = await dp.registry.metrics();
    expect(text).toMatch(/quiclb_dropped_packets_total\{lb="test",reason="truncated"\} 1/);
    expect(text).toMatch(/quiclb_packets_total\{lb="test",outcome="cid",config_id="0"\} 20/);
  });

  it('refuses to start on an address in use, and apply() rejects an invalid snapshot keeping the old one', async () => {
    const { dp, port } = await start(snapshot(servers()));
    const dp2 = new Dataplane({ healthChecks: false });
    await expect(dp2.start(snapshot(servers(), { listen: [{ host: '127.0.0.1', port, family: 4 }] }))).rejects.toThrow(/cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE/);
    await expect(dp.apply(snapshot(servers(), { configs: [] }))).rejects.toThrow(/configs: must hold at least one QUIC-LB config/);
    const c = await client();
    expect(await c.request(shortPacket(cidFor('0002')), port)).toBe('b');
  });
});
