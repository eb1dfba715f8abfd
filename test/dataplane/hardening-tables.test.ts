/**
 * Issue 10, items 1 and 3 at the router: confirmed flows and the server CIDs learned for them live in a budget
 * that new (unconfirmed) traffic cannot evict; unconfirmed flows have their own bound, a short timeout and a
 * per-source limit; a flow is confirmed only by a client that echoes what the backend answered.
 */
import { describe, expect, it } from '@jest/globals';
import { Router, type RouterServer } from '../../dataplane/router.js';
import { CidEncoder } from '../../lib/index.js';
import type { Flow } from '../../dataplane/flow-table.js';
import { config, longPacket, randomServerCid, server, shortPacket, snapshot } from './helpers.js';

const SERVERS = [server('a', '0001', '127.0.0.1', 4001), server('b', '0002', '127.0.0.1', 4002), server('c', '0003', '127.0.0.1', 4003)];
const rand = (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(Math.random() * 256)));
/** A server CID of a backend without QUIC-LB (18 random octets that decode to no configured server). */
const serverCid = () => randomServerCid(0x40 | Math.floor(Math.random() * 0x3f), 18, [config(0)], SERVERS.map((s) => s.serverId));
const randomAddress = () => `10.${1 + Math.floor(Math.random() * 250)}.${Math.floor(Math.random() * 256)}.${1 + Math.floor(Math.random() * 250)}`;

/** A QUIC handshake through the router: client Initial, server Initial (SCID = its CID), client Handshake echoing it. */
function handshake(r: Router, address: string, port: number, cid = serverCid()): { server: RouterServer; cid: Buffer; flow: Flow<RouterServer> } {
  const clientScid = rand(8);
  const s = r.route(longPacket(rand(8), clientScid), address, port, 0)!;
  const flow = r.flow!;
  r.learnReply(longPacket(clientScid, cid, { type: 0 }), s, flow);
  expect(r.route(longPacket(cid, clientScid, { type: 2 }), address, port, 0)).toBe(s);
  return { server: s, cid, flow };
}

describe('flow budgets under floods', () => {
  it('never evicts confirmed flows for new ones: 10,000 spoofed 4-tuples against 100 flows, 50 of them established', () => {
    const r = new Router(snapshot(SERVERS, { flows: { maxFlows: 100, idleTimeoutMs: 30_000, newFlowRate: 0 } }), undefined, 0);
    const est = Array.from({ length: 50 }, (_, i) => ({ port: 20000 + i, ...handshake(r, '192.0.2.1', 20000 + i) }));
    for (const e of est) expect(e.flow.confirmed).toBe(true);
    for (let i = 0; i < 10_000; i++) r.route(longPacket(rand(8), rand(8)), randomAddress(), 1024 + (i % 60000), 0);
    for (const e of est) {
      expect(r.flows.get('192.0.2.1', e.port, 0)).toBe(e.flow);
      expect(r.route(shortPacket(e.cid, { size: 64 }), '192.0.2.1', e.port, 0)).toBe(e.server);
    }
    const s = r.stats();
    expect(s.unconfirmedFlows).toBe(25); // ceil(100 / 4)
    expect(s.flowsEvictedUnconfirmed).toBe(s.flowsEvicted);
    expect(s.flowsEvicted).toBeGreaterThan(9000);
  });

  it('does not confirm a flow whose client does not echo the server CID (a blind spoofer sending twice)', () => {
    const r = new Router(snapshot(SERVERS), undefined, 0);
    const s = r.route(longPacket(rand(8), rand(8)), '198.51.100.7', 4444, 0)!;
    const flow = r.flow!;
    r.learnReply(longPacket(rand(8), serverCid(), { type: 0 }), s, flow); // the backend answered the spoofed address
    r.route(longPacket(rand(8), rand(8)), '198.51.100.7', 4444, 0); // the spoofer cannot know the server's CID
    r.route(shortPacket(rand(18)), '198.51.100.7', 4444, 0);
    expect(flow.confirmed).toBe(false);
    expect(r.stats().flowsConfirmed).toBe(0);
  });

  it('does not confirm a spoofed flow whose Initial carries a routable DCID the spoofer chose (a long-header answer proves nothing)', () => {
    // A blind spoofer picks a DCID that names a server (one of its own connection's CIDs, or any CID under a
    // plaintext config), so both of its datagrams route by CID; the server answers the Initial with a long header.
    const r = new Router(snapshot(SERVERS), undefined, 0);
    const known = new CidEncoder(config(0), SERVERS[1].serverId).next();
    const s = r.route(longPacket(known, rand(8)), '198.51.100.9', 4444, 0)!;
    expect(r.outcome).toBe(0); // cid
    const flow = r.flow!;
    r.learnReply(longPacket(rand(8), new CidEncoder(config(0), SERVERS[1].serverId).next(), { type: 0 }), s, flow);
    r.route(longPacket(known, rand(8), { type: 2 }), '198.51.100.9', 4444, 0);
    r.route(shortPacket(known), '198.51.100.9', 4444, 0);
    expect(flow.confirmed).toBe(false);
  });

  it('confirms a migrated connection routed by CID once its server answered the new path in 1-RTT (PATH_CHALLENGE)', () => {
    const r = new Router(snapshot(SERVERS), undefined, 0);
    const cid = new CidEncoder(config(0), SERVERS[2].serverId).next();
    const s = r.route(shortPacket(cid), '198.51.100.10', 5555, 0)!;
    const flow = r.flow!;
    r.learnReply(shortPacket(rand(8)), s, flow);
    r.route(shortPacket(cid), '198.51.100.10', 5555, 0);
    expect(flow.confirmed).toBe(true);
  });

  it('confirms the flows of a server with zero-length CIDs as conntrack does (nothing to echo)', () => {
    const r = new Router(snapshot(SERVERS), undefined, 0);
    const s = r.route(longPacket(rand(8), rand(8)), '198.51.100.8', 4444, 0)!;
    const flow = r.flow!;
    r.learnReply(longPacket(rand(8), Buffer.alloc(0), { type: 0 }), s, flow);
    r.route(longPacket(rand(8), rand(8), { type: 2 }), '198.51.100.8', 4444, 0);
    expect(flow.confirmed).toBe(true);
  });

  it('limits unconfirmed flows per client address (counted as source_flow_limit drops); other sources are unaffected', () => {
    const r = new Router(snapshot(SERVERS, { flows: { maxFlows: 10_000, idleTimeoutMs: 30_000, maxUnconfirmedPerSource: 100 } }), undefined, 0);
    for (let p = 1; p <= 150; p++) r.route(longPacket(rand(8), rand(8)), '203.0.113.9', p, 0);
    expect(r.flows.unconfirmedOf('203.0.113.9')).toBe(100);
    expect(r.stats().dropped.source_flow_limit).toBe(50);
    expect(r.stats().flowsRefusedPerSource).toBe(50);
    expect(r.route(longPacket(rand(8), rand(8)), '203.0.113.10', 1, 0)).not.toBeNull();
    // Once confirmed, a flow no longer counts against its source's share.
    const c = handshake(r, '203.0.113.11', 1);
    expect(c.flow.confirmed).toBe(true);
    expect(r.flows.unconfirmedOf('203.0.113.11')).toBe(0);
  });

  it('limits the rate of new flows (token bucket, one second of burst), counted as new_flow_rate drops', () => {
    const r = new Router(snapshot(SERVERS, { flows: { maxFlows: 10_000, idleTimeoutMs: 30_000, newFlowRate: 100 } }), undefined, 0);
    let t = 0;
    r.flows.useClock(() => t); // a full bucket at t = 0
    for (let i = 0; i < 150; i++) r.route(longPacket(rand(8), rand(8)), randomAddress(), 1000 + i, 0);
    expect(r.stats().flows).toBe(100);
    expect(r.stats().dropped.new_flow_rate).toBe(50);
    t = 500; // half a second: 50 more
    for (let i = 0; i < 80; i++) r.route(longPacket(rand(8), rand(8)), randomAddress(), 2000 + i, 0);
    expect(r.stats().flows).toBe(150);
    expect(r.stats().flowsRefusedRate).toBe(80);
    // Packets of existing flows are never rate limited.
    expect(r.route(longPacket(rand(8), rand(8)), r.flows[Symbol.iterator]().next().value!.address, r.flows[Symbol.iterator]().next().value!.port, 0)).not.toBeNull();
  });

  it('expires unconfirmed flows after the short timeout and confirmed ones after the idle timeout', () => {
    const r = new Router(snapshot(SERVERS, { flows: { maxFlows: 1000, idleTimeoutMs: 30_000, unconfirmedTimeoutMs: 2000 } }), undefined, 0);
    const c = handshake(r, '192.0.2.5', 5);
    r.route(longPacket(rand(8), rand(8)), '192.0.2.6', 6, 0);
    r.tick(2500);
    expect(r.flows.get('192.0.2.6', 6, 0)).toBeNull();
    expect(r.flows.get('192.0.2.5', 5, 0)).toBe(c.flow);
    r.tick(31_000);
    expect(r.flows.get('192.0.2.5', 5, 0)).toBeNull();
    expect(r.stats().flowsExpired).toBe(2);
  });
});

describe('DCID table poisoning (issue 10 item 3)', () => {
  /** A client port whose fallback is not `avoid`, so a table hit is told apart from luck. */
  function portAvoiding(r: Router, address: string, avoid: RouterServer): number {
    let p = 1;
    while (r.fallbackFor(address, p) === avoid) p++;
    return p;
  }

  for (const attacker of ['a new socket', 'an established connection of its own'] as const) {
    it(`keeps a server CID learned from replies when ${attacker} sends 12,000 short headers with random DCIDs`, () => {
      const r = new Router(snapshot(SERVERS, { shortDcidLength: 18 }), undefined, 0); // flows.max 1000
      const victim = handshake(r, '192.0.2.20', 2020);
      if (attacker === 'an established connection of its own') handshake(r, '198.51.100.66', 6666);
      else r.route(longPacket(rand(8), rand(8)), '198.51.100.66', 6666, 0);
      for (let i = 0; i < 12_000; i++) r.route(shortPacket(rand(18)), '198.51.100.66', 6666, 0);
      // The victim migrates (new address and port): its server CID must still lead to its server, every time.
      const port = portAvoiding(r, '192.0.2.99', victim.server);
      for (let i = 0; i < 3; i++) {
        expect(r.route(shortPacket(victim.cid), '192.0.2.99', port, 0)).toBe(victim.server);
        expect(r.outcome).toBe(1); // table
      }
      expect(r.stats().dcidsEvicted).toBe(r.stats().dcidsEvictedUnconfirmed);
    });
  }

  it('learns a server CID of an unconfirmed flow as unconfirmed, and confirms it with the flow', () => {
    const r = new Router(snapshot(SERVERS, { shortDcidLength: 18 }), undefined, 0);
    const clientScid = rand(8);
    const s = r.route(longPacket(rand(8), clientScid), '192.0.2.30', 30, 0)!;
    const flow = r.flow!;
    const cid = serverCid();
    r.learnReply(longPacket(clientScid, cid, { type: 0 }), s, flow);
    const entry = r.dcids.get(cid.toString('latin1'))!;
    expect(entry.confirmed).toBe(false);
    r.route(longPacket(cid, clientScid, { type: 2 }), '192.0.2.30', 30, 0);
    expect(flow.confirmed).toBe(true);
    expect(entry.confirmed).toBe(true);
  });
});
