/**
 * A node's worker: runs inside the node's namespace N_i (started by agent.ts as `unshare --net`, so N_i is this
 * process's own namespace and dies with it and its children). It configures the node side of the veth pair the pod
 * worker created (eth0 with the node IP, routes to the pod CIDRs and to the client address), runs the TCP relay
 * 127.0.0.1:RELAY_PORT -> the config server's Unix socket on the host (a filesystem path: reachable from any network
 * namespace; TLS stays end to end), and runs `quiclb dataplane ARGS` here (hostNetwork: the node's own namespace).
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { connect, type Server } from 'node:net';
import { fileURLToPath } from 'node:url';
import { cidr, eachLine, emit, int, ip, ipv4, relayServer, serveOps, spawnTied, str, type Json } from './lines.js';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
let nodeName = '';
let relay: Server | null = null;
let dataplane: ChildProcess | null = null;
let dataplaneExit: Promise<string> | null = null;

async function setup(req: Json): Promise<Json> {
  nodeName = str(req, 'node');
  const nodeIp = ipv4(req, 'ip');
  const clientIp = ipv4(req, 'clientIp');
  const routes = (req.podCidrRoutes as unknown[]).map(cidr);
  await ip('link', 'set', 'lo', 'up');
  await ip('addr', 'add', `${nodeIp}/32`, 'dev', 'eth0');
  await ip('link', 'set', 'eth0', 'up');
  for (const r of routes) await ip('route', 'add', r, 'dev', 'eth0', 'src', nodeIp);
  await ip('route', 'replace', `${clientIp}/32`, 'dev', 'eth0', 'src', nodeIp);
  relay = await startRelay(int(req, 'relayPort', 1, 65535), str(req, 'configServerSocket'));
  return { ok: true };
}

async function startRelay(port: number, socketPath: string): Promise<Server> {
  const server = relayServer(() => connect(socketPath));
  server.listen(port, '127.0.0.1');
  await Promise.race([once(server, 'listening'), once(server, 'error').then(([e]) => Promise.reject(e as Error))]);
  return server;
}

function baseEnv(): Record<string, string> {
  const out: Record<string, string> = { NODE_OPTIONS: '' };
  for (const k of ['PATH', 'HOME', 'TMPDIR', 'LANG']) if (process.env[k] !== undefined) out[k] = process.env[k]!;
  return out;
}

function startDataplane(req: Json): Json {
  if (dataplane) throw new Error(`the data plane of ${nodeName} is running (pid ${dataplane.pid}): killDataplane first`);
  if (!Array.isArray(req.args) || !req.args.every((a) => typeof a === 'string')) throw new Error('"args" must be an array of strings');
  const env = (req.env ?? {}) as Record<string, unknown>;
  if (typeof env !== 'object' || Object.values(env).some((v) => typeof v !== 'string')) throw new Error('"env" must map names to strings');
  const child = spawnTied(process.execPath, ['--import', 'tsx', 'cli/main.ts', 'dataplane', ...(req.args as string[])], {
    cwd: repoRoot,
    // only what a container would have (PATH, HOME, TMPDIR) and the given env: nothing of the test's environment
    // (a KUBECONFIG, tokens) reaches the data plane unless the test passes it
    env: { ...baseEnv(), ...(env as Record<string, string>) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const onLine = (line: string) => emit({ event: 'dp', node: nodeName, line });
  eachLine(child.stdout, onLine);
  eachLine(child.stderr, onLine);
  dataplane = child;
  dataplaneExit = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      if (dataplane === child) dataplane = null;
      const exit = signal ?? String(code);
      emit({ event: 'dpExit', node: nodeName, exit });
      resolve(exit);
    });
    child.on('error', (e) => resolve(`spawn error: ${e.message}`));
  });
  return { ok: true, pid: child.pid };
}

async function killDataplane(req: Json): Promise<Json> {
  const child = dataplane;
  const exited = dataplaneExit;
  if (!child || !exited) throw new Error(`no data plane is running on ${nodeName}`);
  const signal = (req.signal ?? 'SIGTERM') as NodeJS.Signals;
  if (!['SIGKILL', 'SIGTERM', 'SIGINT'].includes(signal)) throw new Error('"signal" must be SIGKILL, SIGTERM or SIGINT');
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  const exit = await exited;
  clearTimeout(timer);
  return { ok: true, exit };
}

/** Largest body `fetch` returns (a /metrics page is a few hundred KB at most). */
const MAX_FETCH_BYTES = 1024 * 1024;

/** An HTTP GET from inside the node (the data plane's /metrics, /readyz on the node's loopback or node IP). */
async function fetchUrl(req: Json): Promise<Json> {
  const url = new URL(str(req, 'url'));
  if (url.protocol !== 'http:') throw new Error('"url" must be http://');
  const r = await fetch(url, { signal: AbortSignal.timeout(int(req, 'timeoutMs', 100, 60_000, 5000)) });
  const body = Buffer.from(await r.arrayBuffer());
  return { ok: true, status: r.status, body: body.subarray(0, MAX_FETCH_BYTES).toString('utf8'), truncated: body.length > MAX_FETCH_BYTES };
}

serveOps({ setup, dataplane: startDataplane, killDataplane, fetch: fetchUrl }, async () => {
  relay?.close();
  const child = dataplane;
  if (child && dataplaneExit) {
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
    await dataplaneExit;
    clearTimeout(timer);
  }
});
