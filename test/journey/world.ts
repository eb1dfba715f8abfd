/**
 * The test's side of the journey's network world (agent.ts): spawns the agent (tied to this process with
 * PR_SET_PDEATHSIG, so a killed test run takes the world with it), sends requests, collects events.
 *
 *   const world = await JourneyWorld.start();
 *   await world.setup({ podCidrRoutes: ['10.244.0.0/16'], nodes: [...], configServerSocket, relayPort: 15000 });
 *   await world.backend({ name: 'web-abc', ip: '10.244.1.5', port: 4433, dir });
 *   const r = await world.client({ kind: 'ngtcp2', host: '172.30.0.11', port: 4433, path: '/1000000' });
 *   await world.close();
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { JsonLinesClient } from './json-lines-client.js';
import { eachLine } from './lines.js';
import type { BackendAudit, BackendStack } from './pod-backend.js';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

export interface NodeSpec {
  name: string;
  ip: string;
}

export interface SetupRequest {
  podCidrRoutes: string[];
  nodes: NodeSpec[];
  configServerSocket: string;
  relayPort: number;
  clientIp?: string;
  /** quiche's active_connection_id_limit for the backends and matrixai clients (default 8; backend.ts says why). */
  activeConnectionIdLimit?: number;
  /** The quic-go backend program (test/journey/quicgo-backend/build.sh prints its path), for `stack: 'quic-go'`. */
  quicGoBackend?: string;
}

export interface BackendRequest {
  name: string;
  ip: string;
  port: number;
  dir: string;
  /** The backend's QUIC stack (pod-backend.ts); default matrixai. */
  stack?: BackendStack;
}

export interface ClientRequest {
  kind: 'ngtcp2' | 'ngtcp2-migrate' | 'matrixai';
  host: string;
  port: number;
  path: string;
  count?: number;
  spreadMs?: number;
  migrate?: boolean;
  migrateAfterMs?: number;
  timeoutMs?: number;
}

export interface ClientResult {
  ok: boolean;
  bytes: number;
  intact: boolean;
  servedBy: string[];
  ms: number;
  detail: Record<string, unknown>;
}

export type { BackendAudit } from './pod-backend.js';

export interface Audit {
  backends: Record<string, BackendAudit>;
  /** The pod network's kernel UDP counters (InDatagrams, RcvbufErrors, SndbufErrors). */
  udp: Record<string, number>;
  ecmp: Record<string, { fromClients: number; toTargets: number[]; shortToTargets: number[]; longHeader: number; flows: number; fromTargets: number; moves: number; run: number }>;
}

export type WorldEvent = Record<string, unknown> & { event: string };

export class JourneyWorld {
  private readonly agent: JsonLinesClient;
  /** Every event the agent sent (data-plane lines, backend and worker logs), oldest first, at most 50,000. */
  readonly events: WorldEvent[] = [];
  private readonly listeners = new Set<(e: WorldEvent) => void>();

  private constructor(readonly child: ChildProcess) {
    this.agent = new JsonLinesClient(child, {
      name: 'journey agent',
      onLine: (line, m) => {
        if (!m) this.push({ event: 'agentOutput', line });
        else if (typeof m.event === 'string') this.push(m as WorldEvent);
      },
    });
    eachLine(child.stderr, (line) => this.push({ event: 'agentStderr', line }));
  }

  /** Spawns the agent and waits for its ready event. */
  static async start(): Promise<JourneyWorld> {
    const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', process.execPath, '--import', 'tsx', 'test/journey/agent.ts'], {
      cwd: repoRoot,
      env: { ...process.env, NODE_OPTIONS: '' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const w = new JourneyWorld(child);
    await w.waitEvent((e) => e.event === 'ready', 30_000);
    return w;
  }

  private push(e: WorldEvent): void {
    if (this.events.length < 50_000) this.events.push(e);
    for (const l of this.listeners) l(e);
  }

  /** Resolves with the first event (already received or coming) that `match` accepts. */
  waitEvent(match: (e: WorldEvent) => boolean, timeoutMs: number): Promise<WorldEvent> {
    const seen = this.events.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.listeners.delete(l);
        reject(new Error(`no matching journey event within ${timeoutMs} ms\n${this.tail()}`));
      }, timeoutMs);
      const l = (e: WorldEvent) => {
        if (!match(e)) return;
        clearTimeout(timer);
        this.listeners.delete(l);
        resolve(e);
      };
      this.listeners.add(l);
    });
  }

  /** The last `n` events as text (failure context). */
  tail(n = 40): string {
    return this.events.slice(-n).map((e) => JSON.stringify(e)).join('\n');
  }

  /** Data-plane log lines of `node`. */
  dataplaneLines(node: string): string[] {
    return this.events.filter((e) => e.event === 'dp' && e.node === node).map((e) => String(e.line));
  }

  /** Sends one request; resolves with the answer, rejects with its error. */
  async request<T = Record<string, unknown>>(op: string, body: object = {}): Promise<T> {
    const answer = await this.agent.request({ ...body, op }).catch((e: unknown) => {
      throw new Error(`${(e as Error).message}\n${this.tail()}`, { cause: e });
    });
    if (answer.error !== undefined) throw new Error(`journey ${op}: ${String(answer.error)}`);
    return answer as T;
  }

  setup(r: SetupRequest): Promise<{ ok: true; clientIp: string }> {
    return this.request('setup', r);
  }

  backend(r: BackendRequest): Promise<{ ok: true; generator: { activeConfigId: number | null; serverId: string | null; cidLength: number; reason: string | null } }> {
    return this.request('backend', r);
  }

  stopBackend(name: string): Promise<{ ok: true }> {
    return this.request('stopBackend', { name });
  }

  dataplane(node: string, args: string[], env: Record<string, string> = {}): Promise<{ ok: true; pid: number }> {
    return this.request('dataplane', { node, args, env });
  }

  killDataplane(node: string, signal: 'SIGKILL' | 'SIGTERM' | 'SIGINT' = 'SIGKILL'): Promise<{ ok: true; exit: string }> {
    return this.request('killDataplane', { node, signal });
  }

  /** HTTP GET from inside a node's namespace (e.g. the data plane's /readyz or /metrics). */
  fetch(node: string, url: string): Promise<{ ok: true; status: number; body: string; truncated: boolean }> {
    return this.request('fetch', { node, url });
  }

  ecmp(listen: { ip: string; port: number }, targets: { ip: string; port: number }[]): Promise<{ ok: true }> {
    return this.request('ecmp', { listen, targets });
  }

  client(r: ClientRequest): Promise<ClientResult> {
    return this.request('client', r);
  }

  /** Sends one raw UDP datagram from the client address in the pod network. */
  datagram(to: { ip: string; port: number }, bytes: Buffer): Promise<{ ok: true }> {
    return this.request('datagram', { to, hex: bytes.toString('hex') });
  }

  audit(): Promise<Audit> {
    return this.request('audit');
  }

  /** Asks the agent to stop everything and waits for it (SIGKILL after 15 s): its exit (code or signal name). */
  async close(): Promise<string> {
    this.agent.request({ op: 'shutdown' }).catch(() => {});
    return this.agent.close(15_000);
  }
}
