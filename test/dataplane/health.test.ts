/** QUIC VN health probes against real UDP backends: thresholds, pool membership, metrics. */
import { describe, expect, it, beforeAll, afterAll } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { CidEncoder, mintUnroutableCid } from '../../lib/index.js';
import { Dataplane } from '../../dataplane/dataplane.js';
import { buildProbe, isProbeReply, PROBE_SIZE } from '../../dataplane/health.js';
import { parseQuicHeader, QuicHeader, isReservedVersion } from '../../lib/quic/header.js';
import { Client, config, server, shortPacket, snapshot, TaggingBackend, vnFor, waitFor } from './helpers.js';

let backends: TaggingBackend[];
const dataplanes: Dataplane[] = [];
const clients: Client[] = [];

beforeAll(async () => {
  backends = await Promise.all(['a', 'b'].map((n) => TaggingBackend.start(n)));
});
afterAll(async () => {
  for (const d of dataplanes) await d.stop();
  for (const c of clients) await c.close();
  for (const b of backends) await b.close();
});

describe('VN probe packets', () => {
  it('are 1200-byte long headers with a reserved version, type bits 00, and 8-byte random CIDs', () => {
    const dcid = randomBytes(8);
    const scid = randomBytes(8);
    const p = buildProbe(dcid, scid);
    expect(p.length).toBe(PROBE_SIZE);
    expect(p[0] & 0xf0).toBe(0xc0);
    const h = new QuicHeader();
    expect(parseQuicHeader(p, h, 0)).toBeNull();
    expect(isReservedVersion(h.version)).toBe(true);
    expect(Buffer.from(h.dcid(p)).equals(dcid)).toBe(true);
    expect(Buffer.from(h.scid(p)).equals(scid)).toBe(true);
  });

  it('accept only a VN with swapped CIDs and a version list', () => {
    const dcid = randomBytes(8);
    const scid = randomBytes(8);
    const vn = vnFor(buildProbe(dcid, scid))!;
    expect(isProbeReply(vn, dcid, scid)).toBe(true);
    // ngtcp2's exact reply from QUIC-PEERS.md §5
    const ngtcp2 = Buffer.from('d6000000000808090a0b0c0d0e0f0800010203040506073a6a8aba00000001', 'hex');
    expect(isProbeReply(ngtcp2, Buffer.from('0001020304050607', 'hex'), Buffer.from('08090a0b0c0d0e0f', 'hex'))).toBe(true);
    expect(isProbeReply(vn, scid, dcid)).toBe(false); // not swapped
    expect(isProbeReply(vn.subarray(0, vn.length - 4), dcid, scid)).toBe(false); // no versions
    const v1 = Buffer.from(vn);
    v1[4] = 1;
    expect(isProbeReply(v1, dcid, scid)).toBe(false); // not version 0
  });
});

describe('health checks in the data plane', () => {
  it('marks a silent server unhealthy after the threshold, takes it out of the fallback pool, and back after successes', async () => {
    const snap = snapshot([server('a', '0001', '127.0.0.1', backends[0].port), server('b', '0002', '127.0.0.1', backends[1].port)], {
      health: { enabled: true, intervalMs: 100, timeoutMs: 90, failuresThreshold: 2, successesThreshold: 2 },
    });
    const dp = new Dataplane();
    dataplanes.push(dp);
    const events: string[] = [];
    dp.on('health', (name, healthy) => events.push(`${name}:${healthy}`));
    await dp.start(snap);
    // Until the first probe result, servers count as healthy.
    expect(dp.router.poolMembers().map((s) => s.name).sort()).toEqual(['a', 'b']);
    expect(await waitFor(() => dp.serverHealth().get('a') === 'healthy' && dp.serverHealth().get('b') === 'healthy', 3000)).toBe(true);
    expect(backends[0].probes).toBeGreaterThan(0);

    backends[1].answerProbes = false;
    expect(await waitFor(() => dp.serverHealth().get('b') === 'unhealthy', 3000)).toBe(true);
    expect(dp.router.poolMembers().map((s) => s.name)).toEqual(['a']);
    // New connections all go to a; CID traffic for b still reaches b.
    const port = dp.addresses()[0].port;
    const c = await Client.open();
    clients.push(c);
    for (let i = 0; i < 5; i++) expect(await c.request(shortPacket(mintUnroutableCid(8)), port)).toBe('a');
    expect(await c.request(shortPacket(new CidEncoder(config(), Buffer.from('0002', 'hex')).next()), port)).toBe('b');
    const metrics = await dp.registry.metrics();
    expect(metrics).toMatch(/quiclb_backend_healthy\{lb="test",server="b"\} 0/);
    expect(metrics).toMatch(/quiclb_backend_accepting\{lb="test",server="b"\} 0/);
    expect(metrics).toMatch(/quiclb_health_checks_total\{lb="test",server="b",result="failure"\} [1-9]/);

    backends[1].answerProbes = true;
    expect(await waitFor(() => dp.serverHealth().get('b') === 'healthy', 3000)).toBe(true);
    expect(dp.router.poolMembers().map((s) => s.name).sort()).toEqual(['a', 'b']);
    expect(events.slice(0, 2).sort()).toEqual(['a:true', 'b:true']); // first results, in probe order
    expect(events.slice(2)).toEqual(['b:false', 'b:true']);
    expect(await dp.registry.metrics()).toMatch(/quiclb_health_transitions_total\{lb="test",server="b"\} 2/);
  });

  it('probes new servers after apply() and forgets removed ones; a closed port is a failure', async () => {
    const snap = snapshot([server('a', '0001', '127.0.0.1', backends[0].port)], {
      health: { enabled: true, intervalMs: 100, timeoutMs: 90, failuresThreshold: 1, successesThreshold: 1 },
    });
    const dp = new Dataplane();
    dataplanes.push(dp);
    await dp.start(snap);
    // Port 9 on loopback (discard): nothing answers.
    await dp.apply({ ...snap, version: snap.version + 1, servers: [...snap.servers, server('dead', '0009', '127.0.0.1', 9)] });
    expect(await waitFor(() => dp.serverHealth().get('dead') === 'unhealthy', 3000)).toBe(true);
    expect(dp.router.poolMembers().map((s) => s.name)).toEqual(['a']);
    await dp.apply({ ...snap, version: snap.version + 2 });
    expect([...dp.serverHealth().keys()]).toEqual(['a']);
  });
});
