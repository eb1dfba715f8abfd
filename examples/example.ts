/**
 * `quiclb standalone --example`: a self-contained example. It writes a config (random key in a key file,
 * three servers), starts three example backends in-process and the load balancer in front of them, runs a
 * short demo client, and prints how to send your own requests through it.
 *
 * The example backends are real QUIC servers (examples/example-quic-backend.ts: @matrixai/quic, minimal
 * HTTP/3) minting encrypted QUIC-LB connection IDs with ServerCidGenerator from the example's YAML, and the
 * demo client is a real QUIC client (examples/example-quic-client.ts) that also migrates its connection to a
 * new local port. @matrixai/quic is a devDependency: where it cannot be loaded (installed without dev
 * dependencies, no prebuilt binary for the platform) the example says so and falls back to UDP backends that
 * are not QUIC servers (they answer version-negotiation health probes and reply with text).
 */
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { formatSocketAddress, parseSocketAddress, type SocketAddress } from '../lib/config/address.js';
import { isReservedVersion, parseQuicHeader, QuicHeader } from '../lib/quic/header.js';
import { ServerCidGenerator } from '../lib/backend/generator.js';
import { toHex } from '../lib/hex.js';
import type { LogLevel } from '../lib/config/standalone.js';
import type { DataplaneStats } from '../dataplane/dataplane.js';
// type-only: erased at run time (the modules are loaded with import() so that a missing @matrixai/quic can be reported)
import type { ExampleQuicBackend } from './example-quic-backend.js';
import type { ExampleCidDecoder, ExampleQuicClient } from './example-quic-client.js';
import { runStandalone, type StandaloneHandle } from '../dataplane/standalone.js';

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
  /** 'quic': @matrixai/quic backends and client; 'udp': the fallback without @matrixai/quic. */
  readonly mode: 'quic' | 'udp';
  stop(): Promise<void>;
}

const NAMES = ['server1', 'server2', 'server3'];

type QuicBackendModule = typeof import('./example-quic-backend.js');
type QuicClientModule = typeof import('./example-quic-client.js');

/** The example's QUIC modules, or why they cannot be loaded (@matrixai/quic missing or unusable). */
async function loadQuic(): Promise<{ backend: QuicBackendModule; client: QuicClientModule } | { error: string }> {
  try {
    const backend = await import('./example-quic-backend.js');
    const client = await import('./example-quic-client.js');
    return { backend, client };
  } catch (e) {
    return { error: ((e as Error).message ?? String(e)).split('\n')[0] };
  }
}

/** The client side of a listen address: wildcards become loopback. */
function clientHost(a: SocketAddress): string {
  return a.host === '0.0.0.0' ? '127.0.0.1' : a.host === '::' ? '::1' : a.host;
}

/** Where `name` is on PATH (the example mentions gtlsclient only when it is installed). */
function onPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      /* not here */
    }
  }
  return null;
}

function exampleYaml(listen: string, metricsPort: number, backends: { name: string; port: number }[], quic: boolean): string {
  return `# Written by 'quiclb standalone --example'. Copy it, point servers: at your QUIC servers, and run
# 'quiclb standalone --config FILE'. Reference: docs/standalone-config.md
name: example
listen: ["${listen}"]
workers: 1
loadbalancer:
  server_id_length: 2            # server IDs derived from the ids below (SHA-256 prefix)
  nonce_length: 17               # connection IDs are 1 + 2 + 17 = 20 bytes (what @matrixai/quic servers use)
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
# example backends: ${quic ? 'QUIC servers (@matrixai/quic, HTTP/3) in the quiclb process' : 'UDP text responders (not QUIC servers)'}
`;
}

interface Setup {
  dir: string;
  configPath: string;
  listen: SocketAddress;
  metricsPort: number;
  out: (line: string) => void;
  options: ExampleOptions;
}

/** The example's handle: stopping it stops the load balancer, then the backends, then removes the directory. */
function exampleHandle(s: Setup, lb: StandaloneHandle, mode: ExampleHandle['mode'], stopBackends: () => Promise<void>): ExampleHandle {
  return {
    lb,
    configPath: s.configPath,
    mode,
    stop: async () => {
      await lb.stop();
      await stopBackends();
      rmSync(s.dir, { recursive: true, force: true });
    },
  };
}

function banner(s: Setup, lb: StandaloneHandle, backendLine: string, what: string): void {
  const a = lb.addresses()[0];
  const m = lb.monitoringAddress();
  s.out('quiclb standalone example');
  const io = lb.dataplane?.ioPath; // which datagram I/O path forwards (docs/standalone-config.md, Datagram I/O)
  s.out(`  load balancer  udp ${formatSocketAddress(a)}${io ? ` (${io} I/O)` : ''}   config: ${s.configPath}`);
  s.out(`  backends       ${backendLine}`);
  s.out(`                 ${what}`);
  if (m) s.out(`  metrics        http://${formatSocketAddress({ host: m.address, port: m.port })}/metrics   (also /healthz, /readyz)`);
  s.out('');
}

/** Runs the example; resolves once everything is up and the demo has run. */
export async function runExample(options: ExampleOptions = {}): Promise<ExampleHandle> {
  const out = options.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const listen = parseSocketAddress('--listen', options.listen ?? '127.0.0.1:4433', { allowPortZero: true });
  const quic = await loadQuic();
  const dir = mkdtempSync(join(tmpdir(), 'quiclb-example-'));
  const setup: Setup = { dir, configPath: join(dir, 'standalone.yaml'), listen, metricsPort: options.metricsPort ?? 9090, out, options };
  writeFileSync(join(dir, 'lb.key'), randomBytes(16).toString('base64') + '\n', { mode: 0o600 });
  try {
    if ('error' in quic) {
      out(`The QUIC example needs the npm package @matrixai/quic (a devDependency), which cannot be loaded here:`);
      out(`  ${quic.error}`);
      out('Run `npm install` in a quiclb checkout (it installs devDependencies) for the real thing: QUIC backends and a');
      out('QUIC client.');
      out('Running the UDP example instead (its backends are not QUIC servers).');
      out('');
      return await runUdpExample(setup);
    }
    return await runQuicExample(setup, quic.backend, quic.client);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

// ---- the QUIC example -------------------------------------------------------------------------------------

type Routed = DataplaneStats['routed'];
const diff = (a: Routed, b: Routed): Routed => ({ cid: a.cid - b.cid, table: a.table - b.table, fallback: a.fallback - b.fallback });
const fmtRouted = (r: Routed): string => `cid=${r.cid} table=${r.table} fallback=${r.fallback}`;

async function runQuicExample(s: Setup, B: QuicBackendModule, C: QuicClientModule): Promise<ExampleHandle> {
  const { out, configPath } = s;
  const tls = B.selfSignedCert();
  // The backends read their server ID and the QUIC-LB config from the YAML, which names their ports: write it
  // with placeholder ports (server IDs come from the names), start the backends, then write the real ports.
  const placeholder = NAMES.map((name, i) => ({ name, port: i + 1 }));
  writeFileSync(configPath, exampleYaml(formatSocketAddress(s.listen), s.metricsPort, placeholder, true));
  // @matrixai/quic throws connection-level events (idle timeouts, peer closes) as uncaught exceptions:
  // those are expected here; anything else still ends the process as it would have.
  const guard = (e: unknown) => {
    if (B.isQuicLibraryError(e)) return;
    process.stderr.write(`${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(1);
  };
  process.on('uncaughtException', guard);
  const backends: ExampleQuicBackend[] = [];
  let lb: StandaloneHandle;
  const stopBackends = async () => {
    await Promise.all(backends.map((b) => b.stop()));
    process.off('uncaughtException', guard);
  };
  try {
    for (const name of NAMES) backends.push(await B.ExampleQuicBackend.start({ configFile: configPath, serverName: name, tls }));
    writeFileSync(configPath, exampleYaml(formatSocketAddress(s.listen), s.metricsPort, backends, true));
    lb = await runStandalone({ configPath, logLevel: s.options.logLevel ?? 'warn', handleSignals: true });
  } catch (e) {
    await stopBackends();
    throw e;
  }
  const handle = exampleHandle(s, lb, 'quic', stopBackends);

  banner(
    s,
    lb,
    backends.map((b) => `${b.name} 127.0.0.1:${b.port} (server ID ${b.serverIdHex})`).join(', '),
    'QUIC servers (@matrixai/quic, HTTP/3) minting encrypted 20-byte QUIC-LB connection IDs from that config',
  );
  const a = lb.addresses()[0];
  const host = clientHost(a);
  if (s.options.demo !== false) {
    try {
      await quicDemo(out, lb, host, a.port, new C.ExampleCidDecoder(configPath), C, backends.length);
    } catch (e) {
      out(`  demo failed: ${(e as Error).message}`);
    }
    out('');
  }
  const portArgs = `${host} ${a.port}`;
  out('Send your own requests through the load balancer (in another terminal; each answer names its backend):');
  out(`  npm run example:client -- ${portArgs}`);
  out(`  npm run example:client -- ${portArgs} --migrate --config ${configPath}`);
  out('      from the quiclb checkout: one QUIC connection, 3 GETs; --migrate moves it to a new local port before');
  out("      the last one, --config decodes the server ID in each connection ID with the load balancer's key");
  const gtlsCmd = `gtlsclient -q --exit-on-all-streams-close --download=${s.dir} ${portArgs} https://localhost/ && cat ${join(s.dir, 'index.html')}`;
  if (onPath('gtlsclient')) {
    out(`  ${gtlsCmd}`);
    out("      Debian's ngtcp2 HTTP/3 client");
  } else {
    out("  Debian's ngtcp2 HTTP/3 client works too (apt-get install ngtcp2-client):");
    out(`  ${gtlsCmd}`);
  }
  const m = lb.monitoringAddress();
  if (m) {
    out(`  curl -s http://${formatSocketAddress({ host: m.address, port: m.port })}/metrics | grep '^quiclb_packets_total'`);
    out('      the datagrams the load balancer routed, by outcome (cid, table, fallback)');
  }
  out('');
  out(`Your own QUIC servers: copy ${configPath} and lb.key,`);
  out("point servers: at servers that mint connection IDs with the library's ServerCidGenerator (or any QUIC-LB");
  out('generator using the same key), and run quiclb standalone --config FILE.');
  out('Ctrl-C stops.');
  return handle;
}

async function quicDemo(
  out: (line: string) => void,
  lb: StandaloneHandle,
  host: string,
  port: number,
  decoder: ExampleCidDecoder,
  C: QuicClientModule,
  backendCount: number,
): Promise<void> {
  const dp = lb.dataplane;
  const routed = (): Routed => (dp ? { ...dp.stats().routed } : { cid: 0, table: 0, fallback: 0 });
  const start = routed();
  out(`Demo: a QUIC client (@matrixai/quic, HTTP/3) sends GET / through the load balancer at ${host}:${port}.`);
  out('Per response: status and body (from the backend), the QUIC-LB connection ID (CID) the server issued and the');
  out('client sends to, the server ID the load balancer decodes from it (encrypted: it takes the key), and the');
  out('datagrams the load balancer routed meanwhile, by cid / table / fallback. "from" is the peer the backend sees:');
  out("the load balancer's upstream socket for that client address (it is a UDP proxy).");
  const seen = new Set<string>();
  const request = async (c: ExampleQuicClient, n: number) => {
    const before = routed();
    const r = await c.get('/');
    const cid = c.serverCid;
    const body = r.body.toString('utf8').trim();
    seen.add(/^(\S+) \(server ID/.exec(body)?.[1] ?? '?');
    out(`    ${n}. ${r.status ?? '?'} ${body}`);
    out(`       CID ${toHex(cid)} -> ${decoder.describe(cid).text}   LB routed: ${fmtRouted(diff(routed(), before))}`);
  };
  const connect = async (n: number) => {
    const before = routed();
    const c = await C.ExampleQuicClient.connect({ host, port });
    out(`  connection ${n} from client port ${c.localPort} (handshake routed: ${fmtRouted(diff(routed(), before))})`);
    return c;
  };
  const c1 = await connect(1);
  try {
    await request(c1, 1);
    await request(c1, 2);
    const oldCid = toHex(c1.serverCid);
    const m = await c1.migrate();
    out(`    migration: client port ${m.from} -> ${m.to}, CID ${oldCid.slice(0, 12)}… -> ${toHex(c1.serverCid).slice(0, 12)}… (a spare CID the server issued;`);
    out('    the load balancer has seen neither the new address nor the new CID, and routes by the server ID inside it)');
    await request(c1, 3);
  } finally {
    await c1.close();
  }
  // More connections (at most 4 in all) until every backend has answered: the fallback spreads new connections.
  for (let i = 2; i <= 4 && seen.size < backendCount; i++) {
    const c = await connect(i);
    try {
      await request(c, 1);
    } finally {
      await c.close();
    }
  }
  out(`  load balancer, whole demo: routed by ${fmtRouted(diff(routed(), start))}`);
  out('  (fallback: the first Initial of each connection, whose random DCID names no server; every later datagram');
  out("   carries a QUIC-LB connection ID that the server issued, and the load balancer routes it by the server ID in it)");
}

// ---- the UDP fallback (no @matrixai/quic) -------------------------------------------------------------------

/** A shell command that sends one datagram with Node and prints the reply (works where nc is missing). */
export function sendCommand(data: Buffer | string, lb: string): string {
  const a = parseSocketAddress('lb', lb, { allowPortZero: true });
  const h = clientHost(a);
  const payload = typeof data === 'string' ? JSON.stringify(data).replace(/"/g, "'") : `Buffer.from('${data.toString('hex')}','hex')`;
  return `node -e "const s=require('dgram').createSocket('udp${h.includes(':') ? 6 : 4}');s.on('message',m=>{console.log(String(m));s.close()});s.send(${payload},${a.port},'${h}')"`;
}

/** A UDP "server" that mints QUIC-LB CIDs with the library generator. */
class UdpExampleBackend {
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

/** A UDP socket bound to an ephemeral 127.0.0.1 port (example backends and demo clients). */
async function loopbackSocket(): Promise<Socket> {
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

async function runUdpExample(s: Setup): Promise<ExampleHandle> {
  const { out, configPath } = s;
  const backends: UdpExampleBackend[] = [];
  let lb: StandaloneHandle | null = null;
  const lbAddress = () => (lb ? formatSocketAddress(lb.addresses()[0]) : formatSocketAddress(s.listen));
  const stopBackends = async () => {
    for (const b of backends) await b.close();
  };
  try {
    for (const name of NAMES) backends.push(new UdpExampleBackend(name, await loopbackSocket(), lbAddress, out));
    writeFileSync(configPath, exampleYaml(formatSocketAddress(s.listen), s.metricsPort, backends, false));
    for (const b of backends) b.gen = ServerCidGenerator.fromFile(configPath, b.name);
    lb = await runStandalone({ configPath, logLevel: s.options.logLevel ?? 'warn', handleSignals: true });
  } catch (e) {
    await stopBackends();
    throw e;
  }
  const handle = exampleHandle(s, lb, 'udp', stopBackends);

  const a = lb.addresses()[0];
  const m = lb.monitoringAddress();
  const sidOf = (b: UdpExampleBackend) => (b.gen?.serverId ? toHex(b.gen.serverId) : '?');
  banner(s, lb, backends.map((b) => `${b.name} 127.0.0.1:${b.port} (server ID ${sidOf(b)})`).join(', '), 'UDP text responders, not QUIC servers (@matrixai/quic is not available)');

  if (s.options.demo !== false) {
    const dp = lb.dataplane!;
    const host = clientHost(a);
    const c1 = await loopbackSocket();
    const c2 = await loopbackSocket();
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
  const nc = `${clientHost(a)} ${a.port}`;
  out('Send your own datagrams (each backend answers with a line naming itself):');
  out(`  ${sendCommand('hello through quiclb', formatSocketAddress(a))}`);
  out(`  or: echo 'hello through quiclb' | nc -u -w1 ${nc}`);
  out('  (a datagram without a known connection ID is placed by the fallback hash; the reply shows a printf command that');
  out('   reaches the same backend by its connection ID, from any client port)');
  if (m) out(`  curl -s http://${formatSocketAddress({ host: m.address, port: m.port })}/metrics | grep '^quiclb_packets_total'`);
  out('');
  out('The example backends are not QUIC servers: they answer QUIC version-negotiation health probes and reply with text.');
  out(`For real QUIC traffic, copy ${configPath} (and lb.key), point servers: at QUIC servers that mint connection IDs`);
  out("with the library's ServerCidGenerator (or any QUIC-LB generator using the same key), and run quiclb standalone --config.");
  out('Ctrl-C stops.');
  return handle;
}
