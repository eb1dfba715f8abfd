/** Shared helpers of the data-plane tests: snapshots, synthetic QUIC packets, tagging UDP backends, clients. */
import { spawn } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { makeConfig, type QuicLbConfig } from '../../lib/quiclb/config.js';
import { CidDecoder } from '../../lib/quiclb/decoder.js';
import { writeVarint } from '../../lib/quic/varint.js';
import { defaultShortDcidLength, DEFAULT_HEALTH, type DataplaneSnapshot, type LiveConfig, type SnapshotServer } from '../../lib/config/snapshot.js';
import { isReservedVersion } from '../../lib/quic/header.js';
import { Dataplane, type DataplaneOptions } from '../../dataplane/dataplane.js';

export const KEY = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
export const KEY_B64 = KEY.toString('base64');

/**
 * A standalone YAML for the runner tests: listens on an ephemeral loopback port, one config encrypted with KEY
 * (server_id_length 2, nonce_length 6), monitoring on an ephemeral loopback port. `servers` are YAML list lines.
 */
export function standaloneYaml(o: { name: string; servers: readonly string[]; healthCheck: string; extra?: string }): string {
  return `name: ${o.name}
listen: ["127.0.0.1:0"]
loadbalancer:
  server_id_length: 2
  nonce_length: 6
  encryption_key: "${KEY_B64}"
servers:
${o.servers.join('\n')}
monitoring:
  prometheus_port: 0
  address: 127.0.0.1
  health_check: ${o.healthCheck}
${o.extra ?? ''}`;
}

export function config(configId = 0, key: Uint8Array | null = KEY, serverIdLength = 2, nonceLength = 6, extra = 0): QuicLbConfig {
  return makeConfig({ configId, serverIdLength, nonceLength, key, extraLength: extra });
}

export function server(name: string, sidHex: string, host: string, port: number, extra: Partial<SnapshotServer> = {}): SnapshotServer {
  return {
    name,
    serverId: Buffer.from(sidHex, 'hex'),
    address: { host, port, family: host.includes(':') ? 6 : 4 },
    weight: 100,
    state: 'active',
    ...extra,
  };
}

let version = 1;
export function snapshot(servers: SnapshotServer[], extra: Partial<DataplaneSnapshot> = {}): DataplaneSnapshot {
  const configs: LiveConfig[] = extra.configs ? [...extra.configs] : [{ config: config(), state: 'active' }];
  return {
    version: version++,
    name: 'test',
    listen: [{ host: '127.0.0.1', port: 0, family: 4 }],
    configs,
    servers,
    flows: { maxFlows: 1000, idleTimeoutMs: 30_000 },
    health: { ...DEFAULT_HEALTH, enabled: false },
    shortDcidLength: defaultShortDcidLength(configs),
    ...extra,
  };
}

/**
 * A random server CID (as a server without QUIC-LB mints them, e.g. ngtcp2's 18 octets) with the given first
 * octet, whose octets do not decode to any of `serverIds` under `configs` (the LB would route it by CID).
 */
export function randomServerCid(first: number, length: number, configs: QuicLbConfig[], serverIds: Uint8Array[]): Buffer {
  const dec = new CidDecoder(configs);
  const known = new Set(serverIds.map((s) => Buffer.from(s).toString('hex')));
  for (;;) {
    const cid = Buffer.concat([Buffer.from([first]), randomBytes(length - 1)]);
    const d = dec.decode(cid);
    if (d.serverId === null || !known.has(d.serverId.toString('hex'))) return cid;
  }
}

/** A QUIC v1 long-header packet (Initial by default), padded to `size`, ending with an 8-byte tag. */
export function longPacket(dcid: Uint8Array, scid: Uint8Array, opts: { type?: number; version?: number; size?: number; tag?: Buffer } = {}): Buffer {
  const size = opts.size ?? 1200;
  const type = opts.type ?? 0;
  const version = opts.version ?? 1;
  const p = Buffer.alloc(size);
  p[0] = 0xc0 | (type << 4) | 0x01;
  p.writeUInt32BE(version, 1);
  let o = 5;
  p[o++] = dcid.length;
  p.set(dcid, o);
  o += dcid.length;
  p[o++] = scid.length;
  p.set(scid, o);
  o += scid.length;
  if (version === 1 && type === 0) {
    p[o++] = 0; // token length
    writeVarint(p, o, size - o - 2, 2);
  } else if (version === 1 && type !== 3) {
    writeVarint(p, o, size - o - 2, 2);
  }
  (opts.tag ?? randomBytes(8)).copy(p, size - 8);
  return p;
}

/** A short-header packet: 0x40|bits, DCID, filler, 8-byte tag. */
export function shortPacket(dcid: Uint8Array, opts: { size?: number; tag?: Buffer } = {}): Buffer {
  const size = Math.max(opts.size ?? 64, 1 + dcid.length + 8);
  const p = Buffer.alloc(size, 0x5a);
  p[0] = 0x41;
  p.set(dcid, 1);
  (opts.tag ?? randomBytes(8)).copy(p, size - 8);
  return p;
}

/** Version Negotiation answer to a probe (what a QUIC server sends). */
export function vnFor(probe: Buffer): Buffer | null {
  if (probe.length < 1200 || (probe[0] & 0x80) === 0) return null;
  const version = probe.readUInt32BE(1);
  if (!isReservedVersion(version)) return null;
  const dl = probe[5];
  const dcid = probe.subarray(6, 6 + dl);
  const sl = probe[6 + dl];
  const scid = probe.subarray(7 + dl, 7 + dl + sl);
  return Buffer.concat([Buffer.from([0x80 | 0x3f]), Buffer.alloc(4), Buffer.from([sl]), scid, Buffer.from([dl]), dcid, Buffer.from([0, 0, 0, 1])]);
}

export interface Received {
  readonly data: Buffer;
  readonly from: string;
  readonly port: number;
}

/** A UDP backend that answers VN probes and replies to every other datagram with "<name>|<tag hex>". */
export class TaggingBackend {
  readonly received: Received[] = [];
  probes = 0;
  answerProbes = true;
  silent = false;
  private constructor(
    readonly name: string,
    readonly socket: Socket,
    readonly host: string,
    readonly port: number,
  ) {}

  static async start(name: string, host = '127.0.0.1'): Promise<TaggingBackend> {
    const socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    socket.bind(0, host);
    await once(socket, 'listening');
    const b = new TaggingBackend(name, socket, host, socket.address().port);
    socket.on('message', (msg, rinfo) => {
      const vn = vnFor(msg);
      if (vn) {
        b.probes++;
        if (b.answerProbes) socket.send(vn, rinfo.port, rinfo.address);
        return;
      }
      b.received.push({ data: msg, from: rinfo.address, port: rinfo.port });
      if (!b.silent) socket.send(Buffer.from(`${name}|${msg.subarray(msg.length - 8).toString('hex')}`), rinfo.port, rinfo.address);
    });
    return b;
  }

  tags(): string[] {
    return this.received.map((r) => r.data.subarray(r.data.length - 8).toString('hex'));
  }

  async close(): Promise<void> {
    await new Promise<void>((r) => this.socket.close(() => r()));
  }
}

/** A client socket that collects replies. */
export class Client {
  readonly replies: string[] = [];
  /** Source ports of the replies (the load balancer's listening port for a full proxy). */
  readonly replyPorts = new Set<number>();
  private waiters: (() => void)[] = [];
  private constructor(readonly socket: Socket) {}

  static async open(host = '127.0.0.1'): Promise<Client> {
    const socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    socket.bind(0, host);
    await once(socket, 'listening');
    const c = new Client(socket);
    socket.on('message', (m, rinfo) => {
      c.replyPorts.add(rinfo.port);
      c.replies.push(m.toString('latin1'));
      const w = c.waiters;
      c.waiters = [];
      for (const f of w) f();
    });
    return c;
  }

  get port(): number {
    return this.socket.address().port;
  }

  send(data: Buffer, port: number, host = '127.0.0.1'): void {
    this.socket.send(data, port, host);
  }

  /** Waits until at least n replies arrived (or the timeout passes), returns them. */
  async waitReplies(n: number, timeoutMs = 3000): Promise<string[]> {
    const end = Date.now() + timeoutMs;
    while (this.replies.length < n && Date.now() < end) {
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.max(1, end - Date.now()));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
    return this.replies;
  }

  /** Sends and waits for the reply that carries this packet's tag; returns the backend name or null. */
  async request(data: Buffer, port: number, host = '127.0.0.1', timeoutMs = 2000): Promise<string | null> {
    const tag = data.subarray(data.length - 8).toString('hex');
    this.send(data, port, host);
    const end = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.replies.find((r) => r.endsWith(`|${tag}`));
      if (hit) return hit.split('|')[0];
      if (Date.now() >= end) return null;
      await this.waitReplies(this.replies.length + 1, end - Date.now());
    }
  }

  async close(): Promise<void> {
    await new Promise<void>((r) => this.socket.close(() => r()));
  }
}

export async function waitFor(cond: () => boolean, timeoutMs = 3000, stepMs = 10): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return true;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The message `p` rejects with, or null when it resolves. */
export async function failureOf(p: Promise<unknown>): Promise<string | null> {
  try {
    await p;
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

/** A UDP port of 127.0.0.1 that was free a moment ago (bound and closed). */
export async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Runs f with the environment variable `name` set to `value` (undefined: unset), then puts it back. */
export function withEnv(name: string, value: string | undefined, f: () => void): void {
  const old = process.env[name];
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
  try {
    f();
  } finally {
    if (old === undefined) delete process.env[name];
    else process.env[name] = old;
  }
}

/** The data planes and clients a test file opens (without health checks), all closed by closeAll() in afterAll. */
export class Opened {
  private readonly dataplanes: Dataplane[] = [];
  private readonly clients: Client[] = [];
  private readonly backends: TaggingBackend[] = [];

  async backend(name: string, host = '127.0.0.1'): Promise<TaggingBackend> {
    const b = await TaggingBackend.start(name, host);
    this.backends.push(b);
    return b;
  }

  async client(host = '127.0.0.1'): Promise<Client> {
    const c = await Client.open(host);
    this.clients.push(c);
    return c;
  }

  /** Starts a data plane (`options` besides healthChecks: false); `port` is its first listen address's port, `port6` the second's. */
  async dataplane(snap: DataplaneSnapshot, options: DataplaneOptions = {}): Promise<{ dp: Dataplane; port: number; port6?: number }> {
    const dp = new Dataplane({ healthChecks: false, ...options });
    this.dataplanes.push(dp);
    await dp.start(snap);
    const a = dp.addresses();
    return { dp, port: a[0].port, port6: a[1]?.port };
  }

  async closeAll(): Promise<void> {
    for (const dp of this.dataplanes) await dp.stop();
    for (const c of this.clients) await c.close();
    for (const b of this.backends) await b.close();
  }
}

/**
 * Another process that, for `ms`: sends a small datagram to 127.0.0.1:`port` every ~`gapUs` (default 100) us
 * (busy-waiting between sends: timers cannot pace this finely), echoes every datagram its echo socket receives,
 * and, when `tcpPort` is set, sends a line to that TCP port every 20 ms and times the answer. It prints its echo port first, then, on exit, a JSON line with the count sent
 * and the TCP round trips (ms). onCleanup gets what kills it (for the test's cleanup list).
 */
export function streamingPeer(port: number, ms: number, opts: { tcpPort?: number | null; gapUs?: number; onCleanup: (f: () => void) => void }) {
  const tcpPort = opts.tcpPort ?? null;
  const code = `
    const dgram = require('node:dgram'), net = require('node:net');
    const s = dgram.createSocket('udp4'), echo = dgram.createSocket('udp4');
    const rtts = []; let n = 0, tcp = null, pingAt = 0, nextPing = 0;
    echo.on('message', (m, r) => echo.send(m, r.port, r.address));
    echo.bind(0, '127.0.0.1', () => {
      process.stdout.write(echo.address().port + '\\n');
      if (${tcpPort} !== null) {
        tcp = net.connect(${tcpPort}, '127.0.0.1');
        tcp.on('data', () => { rtts.push(Number(process.hrtime.bigint() - pingAt) / 1e6); pingAt = 0; });
      }
      const end = Date.now() + ${ms}, msg = Buffer.from('x');
      const tick = () => {
        const t = process.hrtime.bigint();
        while (process.hrtime.bigint() - t < ${(opts.gapUs ?? 100) * 1000}n) {}
        n++;
        if (Date.now() >= end)
          return s.send(msg, ${port}, '127.0.0.1', () => {
            process.stdout.write(JSON.stringify({ sent: n, rtts }) + '\\n');
            process.exit(0);
          });
        s.send(msg, ${port}, '127.0.0.1');
        if (tcp !== null && pingAt === 0 && Date.now() >= nextPing) { pingAt = process.hrtime.bigint(); nextPing = Date.now() + 20; tcp.write('p'); }
        setImmediate(tick);
      };
      tick();
    });`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const killer = setTimeout(() => child.kill('SIGKILL'), ms + 10_000);
  opts.onCleanup(() => {
    clearTimeout(killer);
    child.kill('SIGKILL');
  });
  let out = '';
  const echoPort = new Promise<number>((resolve) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(Number(out.split('\n')[0]));
    });
  });
  // a peer that died without its report sent nothing countable: 0 fails the callers' first expectation
  const done = once(child, 'exit').then(() => {
    clearTimeout(killer);
    const report = out.trim().split('\n')[1];
    return report === undefined ? { sent: 0, rtts: [] } : (JSON.parse(report) as { sent: number; rtts: number[] });
  });
  return { echoPort, done };
}
