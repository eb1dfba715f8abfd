/**
 * The journey's driver of the network "world" (test/journey/agent.ts, its protocol at the top of that file): an agent
 * process that owns the network namespaces of the pod network and of each kwok node, and runs the backends, the data
 * planes, an ECMP relay and the QUIC clients in them. One JSON line per request on its stdin, answers carry the
 * request's id; `{"event":"dp",...}` lines are the data planes' log lines.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../helpers/run-cli.js';

export const WORLD_AGENT = join(repoRoot, 'test', 'journey', 'agent.ts');

export function worldAvailable(): boolean {
  return existsSync(WORLD_AGENT);
}

export interface ClientResult {
  id: number;
  ok: boolean;
  bytes: number;
  intact: boolean;
  servedBy: string[];
  ms: number;
  detail?: unknown;
  error?: string;
}

export interface AuditResult {
  backends: Record<string, { datagrams: number; shortHeader: number; foreignCids: number; examples: string[] }>;
  /** The pod network's kernel UDP counters (RcvbufErrors: datagrams full socket buffers dropped). */
  udp?: Record<string, number>;
}

export type ClientKind = 'ngtcp2' | 'ngtcp2-migrate' | 'matrixai';

export class World {
  private seq = 0;
  private readonly pending = new Map<number, { resolve: (v: Record<string, unknown>) => void; timer: NodeJS.Timeout }>();
  /** Every data-plane log line, per node. */
  readonly dpLines = new Map<string, string[]>();
  /** The agent's stderr and lines it sent that were not JSON. */
  readonly log: string[] = [];
  readonly exit: Promise<number | null>;
  private constructor(private readonly child: ChildProcess) {
    this.exit = new Promise((r) => child.on('exit', (code) => r(code)));
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      for (const line of parts) this.onLine(line);
    });
    child.stderr!.on('data', (d: Buffer) => {
      this.log.push(d.toString());
      if (this.log.length > 2000) this.log.splice(0, 1000);
    });
  }

  /**
   * Starts the agent at nice -5 (inherited by its backends, data planes and clients) when allowed (root): the world
   * stands for other machines, but here it shares 2 cores with the control plane, and an API server starting up would
   * otherwise stall the packet path for seconds, longer than gtlsclient's 5 s idle timeout.
   */
  static start(): World {
    const argv = [process.execPath, '--import', 'tsx', WORLD_AGENT];
    const [file, ...args] = process.getuid?.() === 0 ? ['nice', '-n', '-5', ...argv] : argv;
    const child = spawn(file, args, { cwd: repoRoot, env: { ...process.env, NODE_OPTIONS: '' }, stdio: ['pipe', 'pipe', 'pipe'] });
    return new World(child);
  }

  private onLine(line: string): void {
    let m: Record<string, unknown>;
    try {
      m = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.log.push(line);
      return;
    }
    if (m.event === 'dp') {
      const node = String(m.node);
      const lines = this.dpLines.get(node) ?? [];
      lines.push(String(m.line));
      if (lines.length > 5000) lines.splice(0, 2500);
      this.dpLines.set(node, lines);
      return;
    }
    if (typeof m.id === 'number') {
      const p = this.pending.get(m.id);
      if (p) {
        clearTimeout(p.timer);
        this.pending.delete(m.id);
        p.resolve(m);
      }
      return;
    }
    this.log.push(line);
  }

  /** Sends a request; resolves with its answer (also an error answer: callers check `error`), or an error answer after timeoutMs. */
  request(msg: Record<string, unknown>, timeoutMs = 60_000): Promise<Record<string, unknown>> {
    const id = ++this.seq;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve({ id, error: `no answer to ${String(msg.op)} within ${timeoutMs} ms` });
      }, timeoutMs);
      this.pending.set(id, { resolve, timer });
      this.child.stdin!.write(JSON.stringify({ ...msg, id }) + '\n');
    });
  }

  /** Like request() but throws on an error answer. */
  async ok(msg: Record<string, unknown>, timeoutMs = 60_000): Promise<Record<string, unknown>> {
    const r = await this.request(msg, timeoutMs);
    if (r.error !== undefined) throw new Error(`world ${String(msg.op)} failed: ${String(r.error)}\n${this.log.slice(-20).join('')}`);
    return r;
  }

  client(kind: ClientKind, host: string, port: number, path: string, count = 1, extra: Record<string, unknown> = {}, timeoutMs = 60_000): Promise<ClientResult> {
    return this.request({ op: 'client', kind, host, port, path, count, ...extra }, timeoutMs) as unknown as Promise<ClientResult>;
  }

  async audit(): Promise<AuditResult> {
    return (await this.ok({ op: 'audit' })) as unknown as AuditResult;
  }

  /** Asks the agent to shut down; SIGKILL if it has not exited within timeoutMs (its children die with it). */
  async shutdown(timeoutMs = 15_000): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    void this.request({ op: 'shutdown' }, timeoutMs);
    this.child.stdin!.end();
    const t = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    await this.exit;
    clearTimeout(t);
  }
}
