/**
 * `quiclb standalone --example`: a self-contained example. It writes a config (random key in a key file,
 * three servers), starts three example backends in-process and the load balancer in front of them, runs a
 * short demo client, and prints how to send your own datagrams through it.
 *
 * The example backends are honest about what they are: not full QUIC servers. They answer QUIC Version
 * Negotiation probes (so health checks pass), answer a long-header "Initial" with a long-header packet whose
 * SCID is a QUIC-LB connection ID minted by ServerCidGenerator from the same config, and reply to every other
 * datagram with a line of text naming themselves.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatSocketAddress, parseSocketAddress } from '../lib/config/address.js';
import { isReservedVersion, parseQuicHeader, QuicHeader } from '../lib/quic/header.js';
import { ServerCidGenerator } from '../lib/quiclb/server-generator.js';
import { toHex } from '../lib/hex.js';
import type { LogLevel } from '../lib/config/standalone.js';
import { runStandalone, type StandaloneHandle } from './standalone.js';

export interface ExampleOptions {
  /** Where the load balancer listens (default 127.0.0.1:4433). */
  listen?: string;
  /** Monitoring port on 127.0.0.1 (default 9090; 0 = any free port). */
  metricsPort?: number;
  /** Run the demo client (default true). */
  demo?: boolean;
  logLevel?: LogLevel;
  /** Where the human-readable output goes (default stdout). */
  out?: (line: string) => void;
}

export interface ExampleHandle {
  readonly lb: StandaloneHandle;
  readonly configPath: string;
  stop(): Promise<void>;
}

const NAMES = ['server1', 'server2', 'server3'];

/** A shell command that sends one datagram with Node and prints the reply (works where nc is missing). */
export function sendCommand(data: Buffer | string, lb: string): string {
  const { host, port } = parseSocketAddress('lb', lb, { allowPortZero: true });
  const h = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  const payload = typeof data === 'string' ? JSON.stringify(data).replace(/"/g, "'") : `Buffer.from('${data.toString('hex')}','hex')`;
  return `node -e "const s=require('dgram').createSocket('udp${h.includes(':') ? 6 : 4}');s.on('message',m=>{console.log(String(m));s.close()});s.send(${payload},${port},'${h}')"`;
}

/** A UDP "server" that mints QUIC-LB CIDs with the library generator. */
class ExampleBackend {
  readonly header = new QuicHeader();
  gen: ServerCidGenerator | null = null;
  /** Print a line per datagram (after the demo, for people trying it by hand). */
  announce = false;
  constructor(
    readonly name: string,
    readonly socket: Socket,
    readonly lbAddress: () => string,
    readonly out: (line: string) => void,
  ) {
    socket.on('message', (msg, rinfo) => this.onMessage(msg, rinfo.address, rinfo.port));
    socket.on('error', () => {});
  }

  get port(): number {
    return this.socket.address().port;
  }

  private send(b: Buffer, port: number, address: string) {
    this.socket.send(b, port, address);
  }

  private onMessage(msg: Buffer, address: string, port: number): void {
    const h = this.header;
    const err = parseQuicHeader(msg, h, this.gen?.cidLength ?? 8);
    if (err === null && h.form === 'long' && isReservedVersion(h.version)) {
      if (msg.length < 1200) return; // RFC 9000 §6: too small to deserve a VN
      const vn = Buffer.concat([
        Buffer.from([0x80 | (randomBytes(1)[0] & 0x7f), 0, 0, 0, 0, h.scidLength]),
        h.scid(msg),
        Buffer.from([h.dcidLength]),
        h.dcid(msg),
        Buffer.from([0, 0, 0, 1]),
      ]);
      this.send(vn, port, address);
      return;
    }
    const sid = this.gen?.serverId ? toHex(this.gen.serverId) : '(none)';
    if (this.announce) this.out(`[${this.name}] got ${msg.length} bytes (${err === null ? `${h.form} header` : err}) from the load balancer's ${address}:${port}`);
    if (err === null && h.form === 'long') {
      // A client "Initial": answer with our QUIC-LB CID as SCID, as a QUIC server's first packets do.
      const cid = this.gen!.next();
      const text = Buffer.from(`${this.name} (server ID ${sid}): hello! My connection ID for you is ${toHex(cid)}\n`);
      const reply = Buffer.concat([Buffer.from([0xe0, 0, 0, 0, 1, h.scidLength]), h.scid(msg), Buffer.from([cid.length]), cid, text]);
      this.send(reply, port, address);
      return;
    }
    const dcid = err === null ? toHex(h.dcid(msg)) : '?';
    const cid = this.gen!.next();
    const packet = Buffer.concat([Buffer.from([0x40]), cid, Buffer.from(' hello again')]);
    this.send(
      Buffer.from(
        `${this.name} (server ID ${sid}) got ${msg.length} bytes through the load balancer (DCID ${dcid}).\n` +
          `  To reach ${this.name} by its connection ID ${toHex(cid)} from any client port:\n` +
          `  ${sendCommand(packet, this.lbAddress())}\n`,
      ),
      port,
      address,
    );
  }

  async close(): Promise<void> {
    this.gen?.close();
    await new Promise<void>((r) => this.socket.close(() => r()));
  }
}

function exampleYaml(listen: string, metricsPort: number, backends: ExampleBackend[]): string {
  return `# Written by 'quiclb standalone --example'. Copy it, point servers: at your QUIC servers, and run
# 'quiclb standalone --config FILE'. Reference: docs/standalone-config.md
name: example
listen: ["${listen}"]
workers: 1
loadbalancer:
  server_id_length: 2            # server IDs derived from the ids below (SHA-256 prefix)
  nonce_length: 6                # connection IDs are 1 + 2 + 6 = 9 bytes
  encryption_key_file: lb.key    # a random 16-byte key made for this run (base64)
servers:
${backends.map((b) => `  - { id: ${b.name}, address: "127.0.0.1:${b.port}", weight: 100 }`).join('\n')}
flows: { max: 100000, idle_timeout: 30s }
monitoring:
  prometheus_port: ${metricsPort}
  address: 127.0.0.1
  health_check: { interval: 2s, timeout: 1s, failures_threshold: 3, successes_threshold: 2 }
logging:
  level: warn
`;
}

async function clientSocket(): Promise<Socket> {
  const s = createSocket('udp4');
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  return s;
}

async function ask(s: Socket, packet: Buffer, port: number, host: string, timeoutMs = 1500): Promise<Buffer | null> {
  const reply = once(s, 'message').then(([m]) => m as Buffer);
  s.send(packet, port, host);
  const t = new Promise<null>((r) => setTimeout(() => r(null), timeoutMs).unref());
  return Promise.race([reply, t]);
}

/** Runs the example; resolves once everything is up and the demo has run. */
export async function runExample(options: ExampleOptions = {}): Promise<ExampleHandle> {
  const out = options.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const listen = parseSocketAddress('--listen', options.listen ?? '127.0.0.1:4433', { allowPortZero: true });
  const dir = mkdtempSync(join(tmpdir(), 'quiclb-example-'));
  const configPath = join(dir, 'standalone.yaml');
  const backends: ExampleBackend[] = [];
  let lb: StandaloneHandle | null = null;
  const lbAddress = () => (lb ? formatSocketAddress(lb.addresses()[0]) : formatSocketAddress(listen));
  try {
    for (const name of NAMES) {
      const s = createSocket('udp4');
      s.bind(0, '127.0.0.1');
      await once(s, 'listening');
      backends.push(new ExampleBackend(name, s, lbAddress, out));
    }
    writeFileSync(join(dir, 'lb.key'), randomBytes(16).toString('base64') + '\n', { mode: 0o600 });
    writeFileSync(configPath, exampleYaml(formatSocketAddress(listen), options.metricsPort ?? 9090, backends));
    for (const b of backends) b.gen = ServerCidGenerator.fromFile(configPath, b.name);
    lb = await runStandalone({ configPath, logLevel: options.logLevel ?? 'warn', handleSignals: true });
  } catch (e) {
    for (const b of backends) await b.close();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const handle: ExampleHandle = {
    lb,
    configPath,
    stop: async () => {
      await lb!.stop();
      for (const b of backends) await b.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };

  const a = lb.addresses()[0];
  const m = lb.monitoringAddress();
  const sidOf = (b: ExampleBackend) => (b.gen?.serverId ? toHex(b.gen.serverId) : '?');
  out('quiclb standalone example');
  out(`  load balancer  udp ${formatSocketAddress(a)}   config: ${configPath}`);
  out(`  backends       ${backends.map((b) => `${b.name} 127.0.0.1:${b.port} (server ID ${sidOf(b)})`).join(', ')}`);
  if (m) out(`  metrics        http://${formatSocketAddress({ host: m.address, port: m.port })}/metrics   (also /healthz, /readyz)`);
  out('');

  if (options.demo !== false) {
    const dp = lb.dataplane!;
    const host = a.host === '0.0.0.0' ? '127.0.0.1' : a.host;
    const c1 = await clientSocket();
    const c2 = await clientSocket();
    try {
      out('Demo: a client sends QUIC-shaped packets through the load balancer.');
      const dcid = randomBytes(8);
      const scid = randomBytes(8);
      const initial = Buffer.alloc(1200);
      initial[0] = 0xc0;
      initial.writeUInt32BE(1, 1);
      initial[5] = 8;
      dcid.copy(initial, 6);
      initial[14] = 8;
      scid.copy(initial, 15);
      initial[23] = 0; // token length
      initial.writeUInt16BE(0x4000 | (1200 - 26), 24);
      const r1 = await ask(c1, initial, a.port, host);
      const who = (r: Buffer | null) => (r ? (/server\d/.exec(r.toString('latin1'))?.[0] ?? '?') : 'no answer');
      if (r1 === null || (r1[0] & 0x80) === 0) {
        out('  (no answer from the backends; is something else using the port?)');
      } else {
        const h = new QuicHeader();
        parseQuicHeader(r1, h, 0);
        const serverCid = Buffer.from(h.scid(r1));
        out(`  1. long header (Initial), random DCID ${toHex(dcid)}  -> ${who(r1)}  (no server ID in it: fallback hash of the client address)`);
        out(`     ${who(r1)} answered with its QUIC-LB connection ID ${toHex(serverCid)} (encrypted; the load balancer decodes the server ID)`);
        const short = Buffer.concat([Buffer.from([0x40]), serverCid, Buffer.from(' hello')]);
        const r2 = await ask(c1, short, a.port, host);
        out(`  2. short header, DCID ${toHex(serverCid)}          -> ${who(r2)}  (routed by the server ID in the connection ID)`);
        const r3 = await ask(c2, short, a.port, host);
        out(`  3. same DCID from another client port            -> ${who(r3)}  (client migration: the connection ID still routes)`);
        const st = dp.stats();
        out(`  load balancer counters: routed by cid=${st.routed.cid} table=${st.routed.table} fallback=${st.routed.fallback}`);
      }
    } finally {
      c1.close();
      c2.close();
    }
    out('');
  }
  for (const b of backends) b.announce = true;
  const nc = `${a.host === '0.0.0.0' ? '127.0.0.1' : a.host} ${a.port}`;
  out('Send your own datagrams (each backend answers with a line naming itself):');
  out(`  ${sendCommand('hello through quiclb', formatSocketAddress(a))}`);
  out(`  or: echo 'hello through quiclb' | nc -u -w1 ${nc}`);
  out("  (a datagram without a known connection ID is placed by the fallback hash; the reply shows a printf command that");
  out('   reaches the same backend by its connection ID, from any client port)');
  if (m) out(`  curl -s http://${formatSocketAddress({ host: m.address, port: m.port })}/metrics | grep '^quiclb_packets_total'`);
  out('');
  out('The example backends are not QUIC servers: they answer QUIC version-negotiation health probes and reply with text.');
  out(`For real QUIC traffic, copy ${configPath} (and lb.key), point servers: at QUIC servers that mint connection IDs`);
  out('with the library\'s ServerCidGenerator (or any QUIC-LB generator using the same key), and run quiclb standalone --config.');
  out('Ctrl-C stops.');
  return handle;
}
