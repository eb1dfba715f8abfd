/**
 * `npm run bench:dataplane [-- --quick]`: the data plane side by side with nginx's UDP stream proxy and a naive
 * Node dgram forwarder, in one run on this machine, under the same load generator and echo backends.
 *
 * Topology (loopback only): gen (32 client sockets, CPU0) -> peer on 127.0.0.1:P (CPU1) -> 4 echo backends
 * 127.0.0.2-5:Q (one echo process, CPU0) -> peer -> gen. P and Q are picked free at start (other sessions may
 * run their own forwarders on this machine); a lock file keeps two runs of this benchmark from overlapping. The generator's datagrams are QUIC short headers
 * whose DCIDs are real encrypted QUIC-LB connection IDs minted with the project's codec (four-pass
 * algorithm, server_id_length 2, nonce_length 6 by default), one per client socket, naming the 4 servers in
 * turn, so quiclb measures its CID-decoding path (checked on its /metrics after each peer).
 *
 * Per (peer, size): a warm-up (1 s; 4 s for the first size after the peer started), a latency run at a fixed moderate rate (--lat-rate round trips/s: p50/p99
 * and CPU per datagram), an open-loop run, then a bisection for the highest fixed rate with <1% loss.
 * "CPU us per forwarded datagram" = CPU (user+sys, every process of the peer's session, from /proc) / (2 x
 * replies): a round trip is 2 forwarded datagrams. A run during which other processes used more than
 * --max-bg % CPU is redone (--retries). The table gives the mean over reps, except p50/p99: their median (the
 * per-rep p99s are listed under the table, and each peer's p99 against nginx's of the same rep: the median ratio
 * and how many reps were at or below). Method and caveats: /work/shared/bench/ANCHORS.md.
 *
 * Binaries (gen, echo) are built with cc into ~/.cache/quiclb/bench; results go to
 * ~/.cache/quiclb/bench/results/<stamp>.{jsonl,md}. Only processes started here are signalled.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';
import { homedir, cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { dump } from 'js-yaml';
import { CidEncoder, cidLength, cipherModeOf, makeConfig } from '../../lib/index.js';
import { DATAPLANE_V8_FLAGS } from '../../dataplane/v8-flags.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const SRC = join(REPO, 'bench/dataplane');
const WORK = process.env.BENCH_WORK ?? join(homedir(), '.cache/quiclb/bench');
const BACKEND_HOSTS = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5'];
const HARNESS_CPUS = '0';
const PEER_CPUS = '1';
/** Extra node flags for the Node peers (quiclb, naive), e.g. BENCH_PEER_NODE_ARGS=--trace-gc when diagnosing. */
const PEER_NODE_ARGS = (process.env.BENCH_PEER_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
/** The node flags quiclb runs with as installed (bin/quiclb.js's shebang), so the bench measures what users run. */
const QUICLB_NODE_ARGS = DATAPLANE_V8_FLAGS;
const TICK = 100; // USER_HZ: /proc/<pid>/stat and /proc/stat count in 1/100 s on Linux

const { values: opt } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    peers: { type: 'string', default: 'nginx,quiclb,quiclb-dgram,naive' },
    sizes: { type: 'string', default: '64,1200' },
    reps: { type: 'string' },
    clients: { type: 'string', default: '32' },
    'lat-rate': { type: 'string', default: '20000' },
    'lat-dur': { type: 'string' },
    dur: { type: 'string' },
    steps: { type: 'string' },
    confirm: { type: 'string', default: '1' },
    'max-bg': { type: 'string', default: '15' },
    retries: { type: 'string' },
    nice: { type: 'string' },
    'sid-len': { type: 'string', default: '2' },
    'nonce-len': { type: 'string', default: '6' },
    'time-limit': { type: 'string' },
    'client-gso': { type: 'string', default: '0' },
    help: { type: 'boolean', default: false },
  },
});
if (opt.help) {
  process.stdout.write(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0] + '*/\n' +
    'options: --quick --peers nginx,quiclb,quiclb-dgram,naive --sizes 64,1200 --reps N --clients 32 --lat-rate 20000 --lat-dur S --dur S\n' +
    '         --steps N --confirm 1 --max-bg 15 --retries 2 --nice -10 --sid-len 2 --nonce-len 6 --time-limit S\n' +
    '         --client-gso N (the generator sends trains of up to N datagrams per sendmsg with UDP GSO; peer quiclb-nogro:\n' +
    '         quiclb with QUICLB_IO_GRO=0, to compare UDP GRO on receive); peer quiclb-busypoll: quiclb with\n' +
    '         QUICLB_IO_BUSY_POLL_US=50 (busy-poll after data: shorter latency at moderate rates, more CPU)\n');
  process.exit(0);
}
const quick = opt.quick;
const A = {
  clients: Number(opt.clients),
  latRate: Number(opt['lat-rate']),
  latDur: Number(opt['lat-dur'] ?? (quick ? 1.5 : 3)),
  dur: Number(opt.dur ?? (quick ? 1 : 2)),
  steps: Number(opt.steps ?? (quick ? 4 : 7)),
  confirm: Number(opt.confirm),
  maxBg: Number(opt['max-bg']),
  retries: Number(opt.retries ?? (quick ? 1 : 2)),
  reps: Number(opt.reps ?? (quick ? 1 : 2)),
  nice: Number(opt.nice ?? (process.getuid?.() === 0 ? -10 : 0)),
  timeLimitS: Number(opt['time-limit'] ?? (quick ? 240 : 1500)),
  sizes: opt.sizes.split(',').map(Number),
  peers: opt.peers.split(','),
  clientGso: Number(opt['client-gso']),
};
const NICE = A.nice ? ['nice', '-n', String(A.nice)] : [];
const T0 = Date.now();
const overTime = (): boolean => (Date.now() - T0) / 1000 > A.timeLimitS;
const log = (s: string): void => {
  process.stderr.write(`[${((Date.now() - T0) / 1000).toFixed(0).padStart(4)}s] ${s}\n`);
};
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---- prerequisites ------------------------------------------------------------------------------------------
function which(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}
if (cpus().length < 2) throw new Error('needs 2 CPUs (harness on CPU0, peer on CPU1)');
for (const c of ['cc', 'taskset']) if (!which(c)) throw new Error(`${c} missing: run bash bench/dataplane/setup.sh`);
if (A.peers.includes('nginx') && (!which('nginx') || !existsSync('/usr/lib/nginx/modules/ngx_stream_module.so'))) {
  throw new Error('nginx or its stream module missing: run bash bench/dataplane/setup.sh');
}
mkdirSync(join(WORK, 'results'), { recursive: true });
for (const b of ['gen', 'echo']) {
  const src = join(SRC, `${b}.c`);
  const bin = join(WORK, b);
  if (!existsSync(bin) || statSync(bin).mtimeMs < statSync(src).mtimeMs) {
    const r = spawnSync('cc', ['-O2', '-Wall', '-o', bin, src], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`cc ${b}.c failed:\n${r.stderr}`);
  }
}

// quiclb runs as installed: bin/quiclb.js over the compiled dist/ (npm's `prepare` builds it; rebuilt here so the
// bench measures the checkout). Not through tsx: its module-loader hooks run in a worker thread whose own V8 heap
// runs "memory reducer" mark-compacts (6-16 ms, --trace-gc) on the peer's pinned CPU in the middle of a run, and
// its esbuild service is one more process in the peer's session: both showed as quiclb's p99 at 20k rt/s.
if (A.peers.some((p) => p.startsWith('quiclb'))) {
  const r = spawnSync(process.execPath, [join(REPO, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(REPO, 'tsconfig.build.json')], { encoding: 'utf8', cwd: REPO });
  if (r.status !== 0) throw new Error(`building dist/ for quiclb failed:\n${r.stdout}${r.stderr}`);
}

// ---- addresses (free right now) and the lock --------------------------------------------------------------------
function bindable(host: string, port: number): Promise<number | null> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    s.once('error', () => {
      s.close();
      resolve(null);
    });
    s.bind(port, host, () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}
/** A UDP port free on every one of `hosts`. */
async function freePortOn(hosts: string[]): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const p = await bindable(hosts[0], 0);
    if (p === null) continue;
    let ok = true;
    for (const h of hosts.slice(1)) if ((await bindable(h, p)) === null) ok = false;
    if (ok) return p;
  }
  throw new Error('no free UDP port on ' + hosts.join(','));
}
const LB = `127.0.0.1:${await freePortOn(['127.0.0.1'])}`;
const backendPort = await freePortOn(BACKEND_HOSTS);
const BACKENDS = BACKEND_HOSTS.map((h) => `${h}:${backendPort}`);

const lockPath = join(WORK, 'run.lock');
{
  const alive = (pid: number): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const other = existsSync(lockPath) ? Number(readFileSync(lockPath, 'utf8')) : 0;
  if (other && other !== process.pid && alive(other)) {
    throw new Error(`another bench:dataplane run (pid ${other}) is in progress; two runs at once measure nothing (lock ${lockPath})`);
  }
  writeFileSync(lockPath, String(process.pid));
  process.on('exit', () => {
    try {
      if (readFileSync(lockPath, 'utf8') === String(process.pid)) unlinkSync(lockPath);
    } catch {
      /* gone */
    }
  });
}

// ---- QUIC-LB config and the generator's DCIDs ------------------------------------------------------------
const key = randomBytes(16);
const lbConfig = makeConfig({ configId: 1, serverIdLength: Number(opt['sid-len']), nonceLength: Number(opt['nonce-len']), key });
const serverIds = BACKENDS.map((_, i) => {
  const b = Buffer.alloc(lbConfig.serverIdLength);
  b.writeUIntBE(i + 1, 0, Math.min(lbConfig.serverIdLength, 6));
  return b;
});
const dcidFile = join(WORK, 'dcids.txt');
{
  const encoders = serverIds.map((sid) => new CidEncoder(lbConfig, sid));
  const lines = Array.from({ length: A.clients }, (_, i) => encoders[i % encoders.length].next().toString('hex'));
  writeFileSync(dcidFile, lines.join('\n') + '\n');
}
const cipherName = cipherModeOf(lbConfig);

// ---- processes ----------------------------------------------------------------------------------------------
const started = new Set<ChildProcess>();
const STAMP = new Date().toISOString().replace(/[:.]/g, '-');
const peerLogPath = join(WORK, 'results', `${STAMP}-peers.log`);
const peerLog = openSync(peerLogPath, 'a');

/** Starts a command in its own session (setsid), pinned and niced; CPU is summed over that session. */
function start(cmd: string[], cpusList: string, env: Record<string, string> = {}, cwd = WORK): ChildProcess {
  const full = [...NICE, 'taskset', '-c', cpusList, ...cmd];
  const p = spawn(full[0], full.slice(1), { cwd, env: { ...process.env, ...env }, detached: true, stdio: ['ignore', peerLog, peerLog] });
  started.add(p);
  return p;
}

function statFields(pid: number | string): string[] | null {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return st.slice(st.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

function sessionPids(sid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const f = statFields(d);
    if (f && Number(f[3]) === sid) out.push(Number(d));
  }
  return out;
}

/** CPU seconds (utime+stime+cutime+cstime) of every live process in session `sid`. */
function sessionCpu(sid: number): number {
  let t = 0;
  for (const pid of sessionPids(sid)) {
    const f = statFields(pid);
    if (f) t += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  }
  return t / TICK;
}

function sysCpu(): { busy: number; softirq: number; steal: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f;
  return { busy: (user + nice + system + irq + softirq + steal) / TICK, softirq: (irq + softirq) / TICK, steal: steal / TICK };
}

function udpErrors(): number {
  const lines = readFileSync('/proc/net/snmp', 'utf8').split('\n').filter((l) => l.startsWith('Udp:')).map((l) => l.split(/\s+/));
  const d = Object.fromEntries(lines[0].slice(1).map((k, i) => [k, Number(lines[1][i + 1])]));
  return d.RcvbufErrors + d.SndbufErrors;
}

async function stop(p: ChildProcess): Promise<void> {
  const sid = p.pid!;
  if (p.exitCode === null && p.signalCode === null) {
    try {
      process.kill(sid, 'SIGTERM');
    } catch {
      /* gone */
    }
  }
  const deadline = Date.now() + 3000;
  for (;;) {
    const left = sessionPids(sid).filter((q) => q !== process.pid && statFields(q)?.[0] !== 'Z');
    if (left.length === 0) break;
    for (const q of left) {
      try {
        process.kill(q, Date.now() < deadline ? 'SIGTERM' : 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    if (Date.now() > deadline + 3000) break;
    await sleep(200);
  }
  started.delete(p);
}

function stopAllSync(): void {
  for (const p of started) {
    for (const q of sessionPids(p.pid!)) {
      try {
        process.kill(q, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
}
process.on('exit', stopAllSync);
for (const s of ['SIGINT', 'SIGTERM'] as const) {
  process.on(s, () => {
    stopAllSync();
    process.exit(130);
  });
}

// ---- peers ----------------------------------------------------------------------------------------------------
async function freeTcpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

interface Peer {
  proc: ChildProcess;
  metricsPort?: number;
  /** Files to remove once the peer is stopped. */
  scratch?: string;
}

async function startPeer(name: string): Promise<Peer> {
  if (name === 'nginx') {
    const prefix = join(WORK, `nginx-1w-${process.pid}`);
    mkdirSync(prefix, { recursive: true });
    writeFileSync(join(prefix, 'nginx.conf'), `daemon off;
master_process on;
worker_processes 1;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
events { worker_connections 8192; }
stream {
  upstream echo_backends {
    hash $remote_addr$remote_port consistent;
${BACKENDS.map((b) => `    server ${b};`).join('\n')}
  }
  server {
    listen ${LB} udp reuseport rcvbuf=4m sndbuf=4m;
    proxy_pass echo_backends;
    proxy_timeout 30s;
  }
}
`);
    return { proc: start(['nginx', '-p', prefix, '-c', join(prefix, 'nginx.conf'), '-e', join(prefix, 'error.log')], PEER_CPUS), scratch: prefix };
  }
  if (name === 'naive') {
    return {
      proc: start([process.execPath, ...PEER_NODE_ARGS, '--import', 'tsx', join(SRC, 'naive-forwarder.ts')], PEER_CPUS, { LISTEN: LB, BACKENDS: BACKENDS.join(','), NODE_OPTIONS: '' }, REPO),
    };
  }
  // quiclb: the batched I/O path (forced: the run fails rather than measure node:dgram silently when the addon is
  // not built); quiclb-dgram: the same data plane on its node:dgram fallback; quiclb-2w (not in the default
  // list): batched with `workers: 2`, on both CPUs (sharing CPU0 with the harness: a what-it-reaches figure);
  // quiclb-nogro (not in the default list): batched with UDP GRO off (QUICLB_IO_GRO=0), against quiclb under --client-gso;
  // quiclb-busypoll (not in the default list): batched with a 50 us busy-poll after data (QUICLB_IO_BUSY_POLL_US=50).
  if (name === 'quiclb' || name === 'quiclb-dgram' || name === 'quiclb-2w' || name === 'quiclb-nogro' || name === 'quiclb-busypoll') {
    const workers = name === 'quiclb-2w' ? 2 : 1;
    const metricsPort = await freeTcpPort();
    const yamlPath = join(WORK, `${name}-bench.yaml`);
    writeFileSync(yamlPath, `# generated by bench/dataplane/run.ts\n${dump({
      name: 'bench',
      listen: [LB],
      workers,
      loadbalancer: {
        server_id_length: lbConfig.serverIdLength,
        nonce_length: lbConfig.nonceLength,
        encryption_key: key.toString('base64'),
        config_id: lbConfig.configId,
      },
      servers: BACKENDS.map((address, i) => ({ id: `echo${i + 1}`, address, server_id: serverIds[i].toString('hex') })),
      flows: { max: 100000, idle_timeout: '30s' },
      // the C echo backends do not answer QUIC Version Negotiation probes; CID routing ignores health anyway
      monitoring: { prometheus_port: metricsPort, address: '127.0.0.1', health_check: { enabled: false } },
      logging: { level: 'warn' },
    })}`, { mode: 0o600 });
    return {
      proc: start(
        [process.execPath, ...QUICLB_NODE_ARGS, ...PEER_NODE_ARGS, join(REPO, 'bin', 'quiclb.js'), 'standalone', '--config', yamlPath, '--io', name === 'quiclb-dgram' ? 'dgram' : 'batched'],
        workers > 1 ? `${HARNESS_CPUS},${PEER_CPUS}` : PEER_CPUS,
        { NODE_OPTIONS: '', ...(name === 'quiclb-nogro' ? { QUICLB_IO_GRO: '0' } : {}), ...(name === 'quiclb-busypoll' ? { QUICLB_IO_BUSY_POLL_US: '50' } : {}) },
        REPO,
      ),
      metricsPort,
    };
  }
  throw new Error(`unknown peer ${name} (nginx, quiclb, quiclb-dgram, quiclb-2w, quiclb-nogro, quiclb-busypoll, naive)`);
}

// ---- generator runs ------------------------------------------------------------------------------------------
interface GenResult {
  target_pps: number;
  size: number;
  sent: number;
  recv: number;
  sent_pps: number;
  recv_pps: number;
  loss_pct: number;
  p50_us: number;
  p99_us: number;
  p999_us: number;
  misrouted: number;
  gen_cpu_s: number;
  [k: string]: unknown;
}
interface Measured extends GenResult {
  peer_cpu_s: number;
  us_per_pkt: number | null;
  peer_cpu_pct: number;
  bg_cpu_pct: number;
  softirq_pct: number;
  udp_buf_errors: number;
}

function gen(rate: number, dur: number, size: number, clients = A.clients): GenResult {
  const cmd = [...NICE, 'taskset', '-c', HARNESS_CPUS, join(WORK, 'gen'), '-t', LB, '-n', String(clients), '-s', String(size),
    '-r', String(Math.round(rate)), '-d', String(dur), '-f', dcidFile, ...(A.clientGso > 1 ? ['-g', String(A.clientGso)] : [])];
  const r = spawnSync(cmd[0], cmd.slice(1), { encoding: 'utf8', timeout: (dur + 30) * 1000 });
  if (r.status !== 0) throw new Error(`gen failed (${r.status ?? r.signal}): ${r.stderr}`);
  return JSON.parse(r.stdout) as GenResult;
}

const jsonl = join(WORK, 'results', `${STAMP}.jsonl`);
const record = (o: object): void => writeFileSync(jsonl, JSON.stringify(o) + '\n', { flag: 'a' });

function measureOnce(rate: number, dur: number, size: number, peerSid: number, echoSid: number, tags: object): Measured {
  const c0 = sessionCpu(peerSid), e0 = sessionCpu(echoSid), s0 = sysCpu(), u0 = udpErrors(), t0 = Date.now();
  const r = gen(rate, dur, size);
  const c1 = sessionCpu(peerSid), e1 = sessionCpu(echoSid), s1 = sysCpu(), u1 = udpErrors();
  const wall = (Date.now() - t0) / 1000;
  const ours = c1 - c0 + (e1 - e0) + r.gen_cpu_s + (s1.softirq - s0.softirq) + (s1.steal - s0.steal);
  const m: Measured = {
    ...r,
    peer_cpu_s: c1 - c0,
    us_per_pkt: r.recv > 0 ? (1e6 * (c1 - c0)) / (2 * r.recv) : null,
    peer_cpu_pct: (100 * (c1 - c0)) / wall,
    bg_cpu_pct: (100 * Math.max(0, s1.busy - s0.busy - ours)) / wall,
    softirq_pct: (100 * (s1.softirq - s0.softirq)) / wall,
    udp_buf_errors: u1 - u0,
  };
  record({ ...tags, ...m });
  return m;
}

/** One generator run, redone (up to --retries) while other processes used more than --max-bg % CPU. */
async function measure(rate: number, dur: number, size: number, peerSid: number, echoSid: number, tags: object): Promise<Measured> {
  let best: Measured | null = null;
  for (let attempt = 1; attempt <= A.retries + 1; attempt++) {
    const m = measureOnce(rate, dur, size, peerSid, echoSid, { ...tags, attempt });
    if (best === null || m.bg_cpu_pct < best.bg_cpu_pct) best = m;
    if (m.bg_cpu_pct <= A.maxBg) break;
    await sleep(500);
  }
  return best!;
}

interface SizeResult {
  peer: string;
  size: number;
  rep: number;
  lat: Measured;
  openLoop: Measured;
  best: Measured | null;
  /** The peer lost <1% even open loop: the harness is the limit, the figure is a lower bound. */
  bound: boolean;
}

/**
 * Warm-up before each (peer, size): 1 s, and 4 s for the first size after a peer process started. A Node peer's first
 * seconds carry its start-up (JIT tiers, the scavenges that promote the start-up heap: one of 7 ms at ~1.9 s in
 * --trace-gc): measured at once, whichever size ran first had a p99 3-4x the second's (quiclb 64 B first: 1498 us,
 * run second: 515 us), a property of the first seconds, not of the steady state the table compares.
 */
async function benchSize(peer: string, size: number, rep: number, peerSid: number, echoSid: number, firstAfterStart: boolean): Promise<SizeResult> {
  const tags = { peer, size, rep };
  await measure(A.latRate, firstAfterStart ? 4.0 : 1.0, size, peerSid, echoSid, { ...tags, phase: 'warmup' });
  const lat = await measure(A.latRate, A.latDur, size, peerSid, echoSid, { ...tags, phase: 'latency' });
  const ol = await measure(0, A.dur, size, peerSid, echoSid, { ...tags, phase: 'openloop' });
  if (ol.loss_pct < 1) return { peer, size, rep, lat, openLoop: ol, best: ol, bound: true };
  let best: Measured | null = null;
  let bound = false;
  let lo = 0;
  let hi = ol.sent_pps;
  let r = Math.max(1000, 0.9 * ol.recv_pps);
  for (let step = 0; step < A.steps && !overTime(); step++) {
    let res = await measure(r, A.dur, size, peerSid, echoSid, { ...tags, phase: 'search' });
    for (let c = 0; c < A.confirm && res.loss_pct >= 1; c++) {
      res = await measure(r, A.dur, size, peerSid, echoSid, { ...tags, phase: 'search-confirm' });
    }
    if (res.loss_pct < 1) {
      lo = Math.min(r, res.sent_pps);
      if (best === null || res.recv_pps > best.recv_pps) {
        best = res;
        bound = res.sent_pps < 0.97 * r;
      }
    } else {
      hi = r;
    }
    if (lo && hi / lo < 1.05) break;
    r = lo ? (lo + hi) / 2 : Math.max(1000, r * 0.6);
  }
  return { peer, size, rep, lat, openLoop: ol, best, bound };
}

async function waitReady(proc: ChildProcess): Promise<boolean> {
  for (let i = 0; i < 80; i++) {
    if (proc.exitCode !== null) return false;
    try {
      if (gen(2000, 0.2, 64, 1).recv > 0) return true;
    } catch {
      /* not up */
    }
    await sleep(250);
  }
  return false;
}

/** quiclb's own counters after its runs: how many datagrams went by CID, tables, fallback (sanity check). */
async function quiclbOutcomes(port: number): Promise<string> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const sums = new Map<string, number>();
    for (const line of text.split('\n')) {
      // UDP GRO/GSO on the batched path: coalesced messages received, datagrams in them, GSO messages sent
      const io = /^quiclb_io_(gro_messages|gro_datagrams|gso_messages)_total\{[^}]*\} (\S+)$/.exec(line);
      if (io) sums.set(`io_${io[1]}`, (sums.get(`io_${io[1]}`) ?? 0) + Number(io[2]));
      if (line.startsWith('#') || !line.includes('outcome="')) continue;
      const name = line.slice(0, line.indexOf('{'));
      if (!/packets|datagrams|routed/.test(name)) continue;
      const outcome = /outcome="([^"]+)"/.exec(line)![1];
      const k = `${name}{outcome=${outcome}}`;
      sums.set(k, (sums.get(k) ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1)));
    }
    return [...sums].map(([k, v]) => `${k}=${v}`).join(' ') || '(no outcome counters found)';
  } catch (e) {
    return `(metrics unavailable: ${(e as Error).message})`;
  }
}

// ---- report -----------------------------------------------------------------------------------------------------
const mean = (xs: number[]): number | null => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
/** Median (the mean of the middle two for an even count). */
const median = (xs: number[]): number | null => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const f0 = (v: number | null): string => (v === null ? '-' : v.toFixed(0));
const f2 = (v: number | null): string => (v === null ? '-' : v.toFixed(2));
const ratio = (v: number | null, base: number | null): string => (v === null || base === null || base === 0 ? '-' : `${(v / base).toFixed(2)}x`);

interface Row {
  peer: string;
  size: number;
  n: number;
  maxRt: number | null;
  bound: boolean;
  cpuMax: number | null;
  cpuLat: number | null;
  p50: number | null;
  p99: number | null;
}

function aggregate(results: SizeResult[]): Row[] {
  const rows: Row[] = [];
  for (const size of A.sizes) {
    for (const peer of A.peers) {
      const rs = results.filter((r) => r.peer === peer && r.size === size);
      if (!rs.length) continue;
      rows.push({
        peer, size, n: rs.length,
        maxRt: mean(rs.filter((r) => r.best).map((r) => r.best!.recv_pps)),
        bound: rs.some((r) => r.bound),
        cpuMax: mean(rs.filter((r) => r.best?.us_per_pkt != null).map((r) => r.best!.us_per_pkt!)),
        cpuLat: mean(rs.filter((r) => r.lat.us_per_pkt != null).map((r) => r.lat.us_per_pkt!)),
        // Latency percentiles: the median over reps. One rep's p99 on this shared machine can be 5-20x the others'
        // (another process's burst lands in that rep's 3 s), and a mean would let that one rep decide the ratio.
        p50: median(rs.map((r) => r.lat.p50_us)),
        p99: median(rs.map((r) => r.lat.p99_us)),
      });
    }
  }
  return rows;
}

/**
 * Each peer's p99 against nginx's in the same rep, summarised by the median and the count at or below 1. Within a
 * rep the peers run one after another, so a pair is measured a minute or two apart, while the table's medians may
 * take each peer's from a different rep: on this shared VM nginx's own p99 moves 2-5x between reps.
 */
function pairedP99(results: SizeResult[], size: number): string[] {
  const nginx = new Map(results.filter((r) => r.peer === 'nginx' && r.size === size).map((r) => [r.rep, r.lat.p99_us]));
  const out: string[] = [];
  for (const peer of A.peers) {
    if (peer === 'nginx') continue;
    const ratios: number[] = [];
    for (const r of results) {
      const base = nginx.get(r.rep) ?? 0;
      // a p99 of 0 is a run without replies (gen reports 0), not a short tail: left out on either side
      if (r.peer === peer && r.size === size && r.lat.p99_us > 0 && base > 0) ratios.push(r.lat.p99_us / base);
    }
    if (ratios.length) out.push(`${peer} ${median(ratios)!.toFixed(2)}x (${ratios.filter((x) => x <= 1).length}/${ratios.length})`);
  }
  return out;
}

function table(rows: Row[]): string {
  const out = [
    `| peer | size B | max rt/s <1% loss | fwd datagrams/s | vs nginx | CPU us/datagram @max | vs nginx | CPU us/datagram @${A.latRate / 1000}k rt/s | vs nginx | p50 us @${A.latRate / 1000}k | vs nginx | p99 us @${A.latRate / 1000}k | vs nginx | reps |`,
    '|' + '---|'.repeat(14),
  ];
  for (const r of rows) {
    const n = rows.find((x) => x.peer === 'nginx' && x.size === r.size);
    const ge = r.bound ? '>=' : '';
    out.push(`| ${r.peer} | ${r.size} | ${ge}${f0(r.maxRt)} | ${ge}${f0(r.maxRt === null ? null : 2 * r.maxRt)} | ${ratio(r.maxRt, n?.maxRt ?? null)} ` +
      `| ${f2(r.cpuMax)} | ${ratio(r.cpuMax, n?.cpuMax ?? null)} | ${f2(r.cpuLat)} | ${ratio(r.cpuLat, n?.cpuLat ?? null)} ` +
      `| ${f0(r.p50)} | ${ratio(r.p50, n?.p50 ?? null)} | ${f0(r.p99)} | ${ratio(r.p99, n?.p99 ?? null)} | ${r.n} |`);
  }
  return out.join('\n');
}

// ---- main -----------------------------------------------------------------------------------------------------------
function versions(): Record<string, string> {
  const sh = (c: string): string => {
    const r = spawnSync('sh', ['-c', c], { encoding: 'utf8' });
    return (r.stdout || r.stderr).trim();
  };
  return {
    node: process.version, nginx: sh('nginx -v 2>&1'), cc: sh('cc --version | head -1'), kernel: sh('uname -r'),
    cpu: sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").trim(), cpus: String(cpus().length),
  };
}

const results: SizeResult[] = [];
const notes: string[] = [];
const ver = versions();
record({ versions: ver, args: A, quiclbConfig: { configId: lbConfig.configId, serverIdLength: lbConfig.serverIdLength, nonceLength: lbConfig.nonceLength, cidLength: cidLength(lbConfig), cipher: cipherName } });
log(`work dir ${WORK}; peers ${A.peers.join(',')}; sizes ${A.sizes.join(',')}; reps ${A.reps}; ${quick ? 'quick' : 'full'} mode; time limit ${A.timeLimitS} s`);
log(`DCIDs: ${A.clients} encrypted QUIC-LB CIDs (${cipherName}, server_id_length ${lbConfig.serverIdLength}, nonce_length ${lbConfig.nonceLength}, ${cidLength(lbConfig)} bytes) naming ${BACKENDS.length} servers`);

const echo = start([join(WORK, 'echo'), ...BACKENDS.flatMap((b) => ['-a', b])], HARNESS_CPUS);
await sleep(300);
try {
  outer: for (let rep = 1; rep <= A.reps; rep++) {
    for (const name of A.peers) {
      if (overTime()) {
        notes.push(`time limit (${A.timeLimitS} s) reached: stopped before rep ${rep} of ${name}`);
        break outer;
      }
      const peer = await startPeer(name);
      if (!(await waitReady(peer.proc))) {
        notes.push(`${name}: not answering, skipped (see ${peerLogPath})`);
        log(`${name}: not answering, skipped`);
        await stop(peer.proc);
        continue;
      }
      for (const size of A.sizes) {
        if (overTime()) break;
        const t = Date.now();
        const x = await benchSize(name, size, rep, peer.proc.pid!, echo.pid!, size === A.sizes[0]);
        if (peer.proc.exitCode !== null || peer.proc.signalCode !== null) {
          notes.push(`${name} exited during the ${size} B runs (see ${peerLogPath}): its results are discarded`);
          log(`${name} exited during the runs: discarded`);
          break;
        }
        results.push(x);
        record({ phase: 'result', ...x });
        log(`rep ${rep} ${name.padEnd(12)} ${String(size).padStart(5)} B  max ${x.bound ? '>=' : ''}${f0(x.best?.recv_pps ?? null)} rt/s  ` +
          `${f2(x.best?.us_per_pkt ?? null)} us/datagram  p50/p99 ${x.lat.p50_us}/${x.lat.p99_us} us @${A.latRate} rt/s  (${((Date.now() - t) / 1000).toFixed(0)} s)`);
      }
      if (peer.metricsPort) {
        const o = await quiclbOutcomes(peer.metricsPort);
        notes.push(`${name} routing outcomes over its runs (rep ${rep}): ${o}`);
        log(`${name} outcomes: ${o}`);
      }
      await stop(peer.proc);
      if (peer.scratch) rmSync(peer.scratch, { recursive: true, force: true });
    }
  }
} finally {
  await stop(echo);
  closeSync(peerLog);
}

const rows = aggregate(results);
if (A.reps > 1) {
  for (const size of A.sizes) {
    const per = A.peers.map((peer) => `${peer} ${results.filter((r) => r.peer === peer && r.size === size).map((r) => r.lat.p99_us).join('/')}`);
    notes.push(`p99 us @${A.latRate / 1000}k rt/s per rep, ${size} B (the table gives the median): ${per.join('; ')}`);
    const paired = pairedP99(results, size);
    if (paired.length) notes.push(`p99 / nginx's p99 of the same rep, ${size} B (median; reps at or below): ${paired.join('; ')}`);
  }
}
const md = [
  `quiclb data plane vs nginx ${ver.nginx.replace('nginx version: ', '')} (stream, 1 worker) vs naive Node dgram forwarder; ${quick ? 'quick' : 'full'} mode; ` +
  `node ${ver.node}; ${ver.cpus} x ${ver.cpu}; kernel ${ver.kernel}`,
  `load: ${A.clients} client sockets, QUIC short headers with encrypted QUIC-LB DCIDs (${cipherName}, ${cidLength(lbConfig)} B); ` +
  `4 echo backends; gen+echo on CPU${HARNESS_CPUS}, peer on CPU${PEER_CPUS}; nice ${A.nice}; ` +
  `"rt/s" = echoed replies/s, each = 2 forwarded datagrams; ">=" = <1% loss even open loop (harness-bound)` +
  (A.clientGso > 1 ? `; the generator sends with UDP GSO, up to ${A.clientGso} datagrams per sendmsg (--client-gso)` : ''),
  '',
  table(rows),
  '',
  ...notes.map((n) => `- ${n}`),
].join('\n');
process.stdout.write(md + '\n');
writeFileSync(jsonl.replace(/\.jsonl$/, '.md'), md + '\n');
log(`raw runs: ${jsonl}`);
