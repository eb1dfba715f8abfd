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
import { JsonLinesClient } from '../journey/json-lines-client.js';
import type { BackendAudit } from '../journey/pod-backend.js';

export const WORLD_AGENT = join(repoRoot, 'test', 'journey', 'agent.ts');

export function worldAvailable(): boolean {
  return existsSync(WORLD_AGENT);
}

export interface ClientResult {
  ok: boolean;
  bytes: number;
  intact: boolean;
  servedBy: string[];
  ms: number;
  detail?: unknown;
  error?: string;
}

export interface AuditResult {
  backends: Record<string, BackendAudit>;
  /** The pod network's kernel UDP counters (RcvbufErrors: datagrams full socket buffers dropped). */
  udp?: Record<string, number>;
}

export type ClientKind = 'ngtcp2' | 'ngtcp2-migrate' | 'matrixai';

export class World {
  private readonly agent: JsonLinesClient;
  /** Every data-plane log line, per node. */
  readonly dpLines = new Map<string, string[]>();
  /** The agent's stderr and lines it sent that were not JSON. */
  readonly log: string[] = [];
  private constructor(child: ChildProcess) {
    this.agent = new JsonLinesClient(child, { name: 'journey agent', onLine: (line, m) => this.onLine(line, m) });
    child.stderr!.on('data', (d: Buffer) => this.keep(d.toString()));
  }

  private keep(text: string): void {
    this.log.push(text);
    if (this.log.length > 2000) this.log.splice(0, 1000);
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

  /** A line that answers no pending request (late answers are dropped). */
  private onLine(line: string, m: Record<string, unknown> | undefined): void {
    if (m?.event === 'dp') {
      const node = String(m.node);
      const lines = this.dpLines.get(node) ?? [];
      lines.push(String(m.line));
      if (lines.length > 5000) lines.splice(0, 2500);
      this.dpLines.set(node, lines);
    } else if (typeof m?.id !== 'number') {
      this.keep(line);
    }
  }

  /**
   * Sends a request; resolves with its answer (also an error answer: callers check `error`), or an error answer after
   * timeoutMs or once the agent has ended.
   */
  request(msg: Record<string, unknown>, timeoutMs = 60_000): Promise<Record<string, unknown>> {
    return this.agent.request(msg, timeoutMs).catch((e: unknown) => ({ error: (e as Error).message }));
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
    void this.request({ op: 'shutdown' }, timeoutMs);
    await this.agent.close(timeoutMs);
  }
}
