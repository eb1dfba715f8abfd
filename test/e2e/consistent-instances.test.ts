/**
 * Two `quiclb standalone` instances with the same config (the files differ only in the listen port) receive
 * one shared packet stream, and must deliver every datagram to the same backend: routing by CID, by the
 * flow tables and by the fallback hash is a function of the config and the stream, not of the instance.
 *
 * The stream is synthetic but protocol-shaped: QUIC v1 Initial and Handshake long headers with random
 * client-chosen DCIDs (fallback, then the 4-tuple‖SCID table), short headers with QUIC-LB CIDs made by the
 * codec for two live configs (one active, one draining), 0b111 CIDs, CIDs of a config id that is not live,
 * CIDs naming an unknown server, and random server CIDs as non-QUIC-LB backends mint them (all through the
 * tables), from 24 client sockets; some sockets start
 * with a short header (fallback without any Initial). The backends are UDP echo servers that append their
 * name to each reply, so the client sees which backend each instance chose.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { join } from 'node:path';
import { CidEncoder, makeConfig, mintUnroutableCid, type QuicLbConfig } from '../../lib/index.js';
import { freeTcpPort, startStandalone, sumSamples, writeStandaloneYaml, type StandaloneDataplane, type StandaloneSpec } from './peers/dataplane.js';
import { ProcGroup } from './peers/proc.js';
import { freeUdpPort, waitForQuic } from './peers/udp.js';

const group = new ProcGroup('consistent');
const key1 = randomBytes(16);
const key2 = randomBytes(16);
const config1 = makeConfig({ configId: 1, serverIdLength: 2, nonceLength: 6, key: key1 });
const config2 = makeConfig({ configId: 2, serverIdLength: 2, nonceLength: 8, key: key2 });
interface Srv { name: string; sid: Buffer; weight: number; state: 'active' | 'draining' }
const servers: Srv[] = [
  { name: 's1', sid: Buffer.from('0101', 'hex'), weight: 100, state: 'active' },
  { name: 's2', sid: Buffer.from('0202', 'hex'), weight: 100, state: 'active' },
  { name: 's3', sid: Buffer.from('0303', 'hex'), weight: 200, state: 'active' },
  // draining: still reachable by its CIDs, never chosen by the fallback
  { name: 's4', sid: Buffer.from('0404', 'hex'), weight: 100, state: 'draining' },
];
const instances: { dp: StandaloneDataplane; port: number }[] = [];

beforeAll(async () => {
  const ports = await Promise.all(servers.map(() => freeUdpPort()));
  const echo = group.spawnTs('tag-echo', 'test/e2e/peers/tag-echo.ts', servers.flatMap((s, i) => ['--listen', `${s.name}=127.0.0.1:${ports[i]}`]));
  await echo.waitFor(/READY/, 15000);
  const base: Omit<StandaloneSpec, 'listen' | 'metricsPort'> = {
    name: 'e2e-pair',
    loadbalancer: {
      server_id_length: 2,
      configs: [
        { config_id: 1, nonce_length: 6, encryption_key: key1.toString('base64'), state: 'active' },
        { config_id: 2, nonce_length: 8, encryption_key: key2.toString('base64'), state: 'draining' },
      ],
    },
    servers: servers.map((s, i) => ({ id: s.name, address: `127.0.0.1:${ports[i]}`, server_id: s.sid.toString('hex'), weight: s.weight, state: s.state })),
  };
  for (const name of ['A', 'B']) {
    const port = await freeUdpPort();
    const metricsPort = await freeTcpPort();
    const yaml = join(group.dir, `quiclb-${name}.yaml`);
    writeStandaloneYaml(yaml, { ...base, listen: [`127.0.0.1:${port}`], metricsPort });
    const dp = await startStandalone(group, `quiclb-${name}`, yaml, metricsPort, () => waitForQuic('127.0.0.1', port, 10000, `quiclb ${name}`));
    instances.push({ dp, port });
  }
}, 60000);

afterAll(async () => {
  await group.stopAll();
  group.cleanup();
});

// ---- the packet stream ---------------------------------------------------------------------------------------
type Kind = 'initial' | 'handshake' | 'cid-active' | 'cid-draining' | 'reserved-0b111' | 'unknown-config' | 'unknown-server' | 'random-server-cid';
interface Pkt { seq: number; client: number; kind: Kind; data: Buffer; expect?: string }
const MAGIC = 0x514c;

function seal(body: Buffer, seq: number): Buffer {
  const t = Buffer.alloc(8);
  t.writeUInt16BE(MAGIC, 0);
  t.writeUInt32BE(seq, 2);
  return Buffer.concat([body, t]);
}

function longHeader(type: 0 | 2, dcid: Buffer, scid: Buffer, seq: number): Buffer {
  const total = 1200 - 8;
  const head = Buffer.concat([
    Buffer.from([0xc0 | (type << 4) | 0x01]), Buffer.from([0, 0, 0, 1]),
    Buffer.from([dcid.length]), dcid, Buffer.from([scid.length]), scid,
    type === 0 ? Buffer.from([0]) : Buffer.alloc(0), // Initial: empty token
  ]);
  const rest = total - head.length - 2; // 2-byte Length varint
  const len = Buffer.from([0x40 | (rest >> 8), rest & 0xff]);
  return seal(Buffer.concat([head, len, randomBytes(rest)]), seq);
}

function shortHeader(dcid: Buffer, seq: number): Buffer {
  return seal(Buffer.concat([Buffer.from([0x40 | (randomBytes(1)[0] & 0x3f)]), dcid, randomBytes(40)]), seq);
}

function buildStream(): Pkt[] {
  const enc1 = servers.map((s) => new CidEncoder(config1, s.sid));
  const enc2 = servers.map((s) => new CidEncoder(config2, s.sid));
  const stranger = new CidEncoder(config1, Buffer.from('7777', 'hex'));
  const notLive: QuicLbConfig = makeConfig({ configId: 3, serverIdLength: 2, nonceLength: 6, key: randomBytes(16) });
  const notLiveEnc = new CidEncoder(notLive, servers[0].sid);
  const pkts: Pkt[] = [];
  let seq = 0;
  const add = (client: number, kind: Kind, make: (seq: number) => Buffer, expect?: string): void => {
    pkts.push({ seq, client, kind, data: make(seq), expect });
    seq++;
  };
  for (let c = 0; c < 24; c++) {
    const scid = randomBytes(8);
    const dcidLen = 8 + (c % 11);
    if (c < 16) {
      add(c, 'initial', (q) => longHeader(0, randomBytes(dcidLen), scid, q));
      add(c, 'handshake', (q) => longHeader(2, randomBytes(dcidLen), scid, q));
    }
    add(c, 'reserved-0b111', (q) => shortHeader(mintUnroutableCid(9), q));
    add(c, 'cid-active', (q) => shortHeader(enc1[c % 4].next(), q), servers[c % 4].name);
    add(c, 'unknown-server', (q) => shortHeader(stranger.next(), q));
    add(c, 'cid-draining', (q) => shortHeader(enc2[(c + 1) % 4].next(), q), servers[(c + 1) % 4].name);
    add(c, 'unknown-config', (q) => shortHeader(notLiveEnc.next(), q));
    // a backend that does not mint QUIC-LB CIDs (ngtcp2, say: 18 random bytes): its first octet is anything,
    // including 0b111 with "self-encoded lengths" that are not lengths (0xf9: 26, 0xff: 32)
    const first = [0xf9, 0xff, 0xe0 | (c & 0x1f), c * 11][c % 4];
    add(c, 'random-server-cid', (q) => shortHeader(Buffer.concat([Buffer.from([first]), randomBytes(17)]), q));
  }
  return pkts;
}

/** Sends each datagram of the stream to both instances from its client socket; returns seq -> backend per instance. */
async function replay(pkts: Pkt[]): Promise<Map<number, string>[]> {
  const sockets: Socket[] = [];
  const seen = instances.map(() => new Map<number, string>());
  const waiting = new Map<string, () => void>();
  for (let c = 0; c < 24; c++) {
    const s = createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
    s.on('message', (msg, rinfo) => {
      const i = instances.findIndex((x) => x.port === rinfo.port);
      if (i < 0 || msg.length < 10) return;
      const nameLen = msg[msg.length - 1];
      const name = msg.subarray(msg.length - 1 - nameLen, msg.length - 1).toString();
      const orig = msg.subarray(0, msg.length - 1 - nameLen);
      if (orig.readUInt16BE(orig.length - 8) !== MAGIC) return;
      const seq = orig.readUInt32BE(orig.length - 6);
      seen[i].set(seq, name);
      waiting.get(`${i}/${seq}`)?.();
    });
    sockets.push(s);
  }
  try {
    for (const p of pkts) {
      await Promise.all(instances.map((inst, i) => new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 500); // a lost reply shows up as a missing entry
        waiting.set(`${i}/${p.seq}`, () => {
          clearTimeout(timer);
          resolve();
        });
        sockets[p.client].send(p.data, inst.port, '127.0.0.1');
      })));
    }
  } finally {
    for (const s of sockets) s.close();
  }
  return seen;
}

describe('two quiclb instances with the same config route one packet stream identically', () => {
  it('every datagram reaches the same backend through both instances; CIDs reach the server they name', group.guard(async () => {
    const pkts = buildStream();
    const labels = ['cid', 'table', 'fallback'];
    const before = await Promise.all(instances.map((x) => x.dp.metrics()));
    const [a, b] = await replay(pkts);
    const after = await Promise.all(instances.map((x) => x.dp.metrics()));

    const problems: string[] = [];
    for (const p of pkts) {
      const ca = a.get(p.seq);
      const cb = b.get(p.seq);
      if (ca === undefined || cb === undefined) problems.push(`#${p.seq} ${p.kind} client ${p.client}: no reply (A ${ca}, B ${cb})`);
      else if (ca !== cb) problems.push(`#${p.seq} ${p.kind} client ${p.client}: A chose ${ca}, B chose ${cb}`);
      else if (p.expect && ca !== p.expect) problems.push(`#${p.seq} ${p.kind} client ${p.client}: went to ${ca}, its CID names ${p.expect}`);
    }
    // flow tables: after a client's Initial, its Handshake and unroutable short headers follow the Initial's server
    for (let c = 0; c < 16; c++) {
      const mine = pkts.filter((p) => p.client === c && !p.expect);
      const first = a.get(mine[0].seq);
      for (const p of mine) if (a.has(p.seq) && a.get(p.seq) !== first) problems.push(`client ${c}: ${p.kind} went to ${a.get(p.seq)}, its Initial to ${first}`);
    }
    expect(problems).toEqual([]);

    // not vacuous: the fallback spread new clients over several servers, never the draining one
    const fallbackChoices = new Set(pkts.filter((p) => p.kind === 'initial' || (p.client >= 16 && p.kind === 'reserved-0b111')).map((p) => a.get(p.seq)));
    expect(fallbackChoices.size).toBeGreaterThanOrEqual(2);
    expect(fallbackChoices.has('s4')).toBe(false);
    // every routing path was exercised, the same number of times on both instances
    const counts = instances.map((_, i) => Object.fromEntries(labels.map((o) =>
      [o, sumSamples(after[i], 'quiclb_packets_total', { outcome: o }) - sumSamples(before[i], 'quiclb_packets_total', { outcome: o })])));
    expect(counts[0]).toEqual(counts[1]);
    for (const o of labels) expect(counts[0][o]).toBeGreaterThan(0);
    expect(counts[0].cid + counts[0].table + counts[0].fallback).toBe(pkts.length);
  }), 60000);
});
