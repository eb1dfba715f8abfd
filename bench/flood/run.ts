/**
 * bench:flood - established QUIC-LB connections under a spoofed-source flood (issue 10).
 *
 *   npm run bench:flood -- [--established 50] [--rate 10000] [--seconds 10] [--nofile 1024:1048576] [--new-flow-rate R]
 *
 * Runs inside a network namespace of its own (re-executes itself under `unshare -n`, loopback only; needs root or
 * user namespaces). `quiclb standalone` (one process, default flow settings) forwards to two echo backends that
 * answer an Initial with a long header whose SCID is a QUIC-LB CID of their own (the client then switches to it,
 * which confirms its flow) and echo everything else. Meanwhile:
 *   - N established connections (handshake done before the flood) send a short header every 20 ms each;
 *   - bench/flood/spoof.py sends M Initials per second from random 127.0.0.0/8 sources for S seconds;
 *   - every 50 ms two new connections start (Initial, then a Handshake to the server's CID): one sends its Initial
 *     once and waits 1 s, the other retransmits it up to 3 times every 333 ms, as a QUIC client does on PTO.
 * Reports established-flow loss, new-connection success during the flood, the LB's descriptors and RSS (max), and
 * its flow counters from /metrics.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { CidEncoder } from '../../lib/quiclb/encoder.js';
import { makeConfig } from '../../lib/quiclb/config.js';
import { DATAPLANE_V8_FLAGS } from '../../dataplane/v8-flags.js';

const { values: opt } = parseArgs({
  options: {
    established: { type: 'string', default: '50' },
    rate: { type: 'string', default: '10000' },
    seconds: { type: 'string', default: '10' },
    nofile: { type: 'string' },
    'new-flow-rate': { type: 'string' },
    backend: { type: 'string' },
    key: { type: 'string' },
  },
});
const root = fileURLToPath(new URL('../../', import.meta.url));

if (process.env.QUICLB_FLOOD_NETNS !== '1') {
  const args = process.argv.slice(2).map((a) => `'${a.replace(/'/g, '')}'`).join(' ');
  const limit = opt.nofile ? `prlimit --nofile=${opt.nofile.replace(/[^0-9:]/g, '')}` : '';
  const r = spawnSync('unshare', ['-n', 'sh', '-c', `ip link set lo up && QUICLB_FLOOD_NETNS=1 exec ${limit} "${process.execPath}" --import tsx bench/flood/run.ts ${args}`], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  process.exit(r.status ?? 1);
}

const N = Number(opt.established);
const M = Number(opt.rate);
const S = Number(opt.seconds);
const KEY = opt.key ? Buffer.from(opt.key, 'hex') : randomBytes(16);
const lbConfig = makeConfig({ configId: 0, serverIdLength: 2, nonceLength: 6, key: KEY });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Echo backend: an Initial gets a 1200-byte Initial from the server's own QUIC-LB CID; anything else is echoed. */
async function backend(sidHex: string): Promise<Socket> {
  const enc = new CidEncoder(lbConfig, Buffer.from(sidHex, 'hex'));
  // large buffers: the backends' own drops would show as established-flow loss that is not the LB's
  const s = createSocket({ type: 'udp4', recvBufferSize: 8 << 20, sendBufferSize: 8 << 20 });
  s.on('message', (m, r) => {
    if (m.length >= 1200 && (m[0] & 0xf0) === 0xc0 && m.readUInt32BE(1) === 1) {
      const dl = m[5];
      const sl = m[6 + dl];
      const clientScid = m.subarray(7 + dl, 7 + dl + sl);
      const cid = enc.next();
      const reply = Buffer.alloc(1200);
      reply[0] = 0xc0;
      reply.writeUInt32BE(1, 1);
      reply[5] = clientScid.length;
      clientScid.copy(reply, 6);
      reply[6 + clientScid.length] = cid.length;
      cid.copy(reply, 7 + clientScid.length);
      m.copy(reply, 1192, m.length - 8);
      s.send(reply, r.port, r.address);
    } else s.send(m, r.port, r.address);
  });
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  return s;
}

function initial(dcid: Buffer, scid: Buffer, tag: Buffer): Buffer {
  const p = Buffer.alloc(1200);
  p[0] = 0xc0;
  p.writeUInt32BE(1, 1);
  p[5] = dcid.length;
  dcid.copy(p, 6);
  p[6 + dcid.length] = scid.length;
  scid.copy(p, 7 + dcid.length);
  tag.copy(p, 1192);
  return p;
}
function handshake(dcid: Buffer, scid: Buffer, tag: Buffer): Buffer {
  const p = initial(dcid, scid, tag);
  p[0] = 0xe0; // Handshake
  return p;
}
function short(dcid: Buffer, tag: Buffer): Buffer {
  const p = Buffer.alloc(100, 0x5a);
  p[0] = 0x41;
  dcid.copy(p, 1);
  tag.copy(p, 92);
  return p;
}

/** One client connection: handshake, then datagrams; counts replies by tag. */
class Conn {
  sent = 0;
  received = 0;
  cid: Buffer | null = null;
  private waiting = new Map<string, () => void>();
  private constructor(readonly s: Socket) {}
  static async open(): Promise<Conn> {
    const s = createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
    const c = new Conn(s);
    s.on('message', (m) => {
      c.received++;
      if (c.cid === null && (m[0] & 0x80) !== 0 && m.length >= 1200) {
        const dl = m[5];
        const sl = m[6 + dl];
        c.cid = Buffer.from(m.subarray(7 + dl, 7 + dl + sl));
      }
      const k = m.subarray(m.length - 8).toString('hex');
      c.waiting.get(k)?.();
      c.waiting.delete(k);
    });
    return c;
  }
  send(p: Buffer, port: number): void {
    this.sent++;
    this.s.send(p, port, '127.0.0.1');
  }
  request(p: Buffer, port: number, timeoutMs: number): Promise<boolean> {
    const k = p.subarray(p.length - 8).toString('hex');
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.waiting.delete(k);
        resolve(false);
      }, timeoutMs);
      this.waiting.set(k, () => {
        clearTimeout(t);
        resolve(true);
      });
      this.send(p, port);
    });
  }
  /** Initial (sent up to `tries` times, as a QUIC client retransmits it on PTO), then a Handshake to the server's CID. */
  async connect(port: number, tries = 1, timeoutMs = 1000): Promise<boolean> {
    const scid = randomBytes(8);
    const dcid = randomBytes(8);
    let answered = false;
    for (let i = 0; i < tries && !answered; i++) answered = await this.request(initial(dcid, scid, randomBytes(8)), port, timeoutMs);
    if (!answered || this.cid === null) return false;
    return this.request(handshake(this.cid, scid, randomBytes(8)), port, timeoutMs);
  }
  close(): void {
    this.s.close();
  }
}

// Backend mode (a child process of the bench, so the echo servers do not compete with the clients' event loop).
if (opt.backend) {
  const b = await backend(opt.backend);
  process.stdout.write(`${b.address().port}\n`);
  process.on('SIGTERM', () => process.exit(0));
  await new Promise(() => {});
}
const backendProcs = ['0001', '0002'].map((sid) =>
  spawn(process.execPath, ['--import', 'tsx', 'bench/flood/run.ts', '--backend', sid, '--key', KEY.toString('hex')], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], env: process.env }),
);
const backendPorts = await Promise.all(
  backendProcs.map((p) => new Promise<number>((resolve) => p.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))))),
);
const dir = mkdtempSync(join(tmpdir(), 'quiclb-flood-bench-'));
const cfg = join(dir, 'lb.yaml');
writeFileSync(
  cfg,
  `name: flood
listen: ["127.0.0.1:0"]
loadbalancer: { server_id_length: 2, nonce_length: 6, encryption_key: "${KEY.toString('base64')}" }
servers:
  - { id: s1, address: "127.0.0.1:${backendPorts[0]}", server_id: "0001" }
  - { id: s2, address: "127.0.0.1:${backendPorts[1]}", server_id: "0002" }
monitoring: { prometheus_port: 0, address: 127.0.0.1, health_check: { enabled: false } }
${opt['new-flow-rate'] !== undefined ? `flows: { unconfirmed: { rate: ${Number(opt['new-flow-rate'])} } }` : ''}
logging: { level: info }
`,
);
const lb = spawn(process.execPath, [...DATAPLANE_V8_FLAGS, '--import', 'tsx', 'cli/main.ts', 'standalone', '--config', cfg], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, XDG_RUNTIME_DIR: dir } });
const lines: string[] = [];
lb.stdout.on('data', (d: Buffer) => lines.push(...d.toString().split('\n').filter(Boolean)));
const t0 = Date.now();
while (!lines.some((l) => l.includes('quiclb standalone running')) && Date.now() - t0 < 30_000) await sleep(50);
const port = Number(JSON.parse(lines.find((l) => l.includes('quiclb standalone running'))!).listen[0].split(':')[1]);
const mon = JSON.parse(lines.find((l) => l.includes('monitoring: '))!).address as string;
const nofile = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync(`/proc/${lb.pid}/limits`, 'latin1'))!;

const established: Conn[] = [];
for (let i = 0; i < N; i++) {
  const c = await Conn.open();
  if (!(await c.connect(port))) throw new Error('an established connection could not be set up before the flood');
  established.push(c);
}
for (const c of established) c.sent = c.received = 0;

let maxFds = 0;
let maxRssKb = 0;
const sampler = setInterval(() => {
  try {
    maxFds = Math.max(maxFds, readdirSync(`/proc/${lb.pid}/fd`).length);
    maxRssKb = Math.max(maxRssKb, Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${lb.pid}/status`, 'latin1'))![1]));
  } catch {
    // the LB exited
  }
}, 200);

// Established traffic: every connection, every 20 ms, from 1 s before the flood to 1 s after.
let trafficOn = true;
const traffic = (async () => {
  while (trafficOn) {
    for (const c of established) c.send(short(c.cid!, randomBytes(8)), port);
    await sleep(20);
  }
})();
await sleep(1000);
const flood = spawn('python3', [join(root, 'bench/flood/spoof.py'), '127.0.0.1', String(port), String(M * S), String(M)], { stdio: ['ignore', 'pipe', 'inherit'] });
let floodOut = '';
flood.stdout.on('data', (d: Buffer) => (floodOut += d.toString()));
const floodDone = new Promise<void>((r) => flood.on('exit', () => r()));
let attempts = 0;
let succeeded = 0;
let succeededWithRetries = 0;
const fresh: Conn[] = [];
let floodRunning = true;
void floodDone.then(() => (floodRunning = false));
const newConns: Promise<void>[] = [];
while (floodRunning) {
  attempts++;
  newConns.push(
    Promise.all([Conn.open(), Conn.open()]).then(async ([c, d]) => {
      fresh.push(c, d);
      const [once, retried] = await Promise.all([c.connect(port, 1, 1000), d.connect(port, 3, 333)]);
      if (once) succeeded++;
      if (retried) succeededWithRetries++;
    }),
  );
  await sleep(50);
}
await Promise.all(newConns);
await sleep(1000);
trafficOn = false;
await traffic;
await sleep(500);
clearInterval(sampler);

const sent = established.reduce((a, c) => a + c.sent, 0);
const received = established.reduce((a, c) => a + c.received, 0);
const metrics = await (await fetch(`http://${mon}/metrics`)).text();
const metric = (re: RegExp) => Number(re.exec(metrics)?.[1] ?? NaN);
const floodStats = JSON.parse(floodOut.trim() || '{}') as { sent?: number; seconds?: number };

const rows: [string, string][] = [
  ['established connections', `${N} (a short header every 20 ms each)`],
  ['flows.unconfirmed.rate', opt['new-flow-rate'] ?? 'default (1000/s)'],
  ['spoofed flood', `${floodStats.sent ?? '?'} Initials from random 127/8 sources in ${floodStats.seconds ?? '?'} s (target ${M}/s)`],
  ['established datagrams sent / answered', `${sent} / ${received}`],
  ['established-flow loss', `${(((sent - received) / Math.max(1, sent)) * 100).toFixed(3)} %`],
  ['new connections during the flood, one Initial (1 s)', `${succeeded} / ${attempts} (${((succeeded / Math.max(1, attempts)) * 100).toFixed(1)} %)`],
  ['new connections during the flood, up to 3 Initials (333 ms each)', `${succeededWithRetries} / ${attempts} (${((succeededWithRetries / Math.max(1, attempts)) * 100).toFixed(1)} %)`],
  ['LB descriptors (max) / nofile soft', `${maxFds} / ${nofile[1]}`],
  ['LB RSS (max)', `${(maxRssKb / 1024).toFixed(0)} MiB`],
  ['LB received datagrams', String(metric(/^quiclb_received_packets_total\{lb="flood"\} (\d+)/m))],
  ['LB send errors to server / to client', `${metric(/^quiclb_send_errors_total\{lb="flood",direction="to_server"\} (\d+)/m)} / ${metric(/^quiclb_send_errors_total\{lb="flood",direction="to_client"\} (\d+)/m)}`],
  ['unconfirmed flows evicted', String(metric(/^quiclb_flow_evictions_total\{lb="flood",table="flow",state="unconfirmed"\} (\d+)/m))],
  ['confirmed flows evicted', String(metric(/^quiclb_flow_evictions_total\{lb="flood",table="flow",state="confirmed"\} (\d+)/m))],
  ['flows confirmed', String(metric(/^quiclb_flows_confirmed_total\{lb="flood",table="flow"\} (\d+)/m))],
  ['upstream socket limit', String(metric(/^quiclb_upstream_socket_limit\{lb="flood"\} (-?\d+)/m))],
  ['drops: new_flow_rate / source_flow_limit / upstream_socket_limit', ['new_flow_rate', 'source_flow_limit', 'upstream_socket_limit'].map((r) => metric(new RegExp(`^quiclb_dropped_packets_total\\{lb="flood",reason="${r}"\\} (\\d+)`, 'm'))).join(' / ')],
];
process.stdout.write(`\n| bench:flood | |\n|---|---|\n${rows.map(([k, v]) => `| ${k} | ${v} |`).join('\n')}\n`);

for (const c of [...established, ...fresh]) c.close();
for (const b of backendProcs) b.kill('SIGTERM');
lb.kill('SIGTERM');
await new Promise((r) => lb.on('exit', r));
process.exit(0);
