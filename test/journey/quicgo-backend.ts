/**
 * A quic-go backend pod of the journey (pod-backend.ts): the program in test/journey/quicgo-backend (quic-go HTTP/3,
 * its own QUIC-LB encoder reading the same kubelet-mounted configs.json and server-id as the TypeScript generator)
 * as a child process of the pod worker, which inherits the worker's network namespace and dies with it. It talks
 * JSON lines: requests on stdin, answers and events on stdout (quicgo-backend/README.md).
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JsonLinesClient } from './json-lines-client.js';
import { eachLine, spawnTied, type Json } from './lines.js';
import type { BackendAudit, BackendStats, GeneratorInfo, PodBackend, PodBackendOptions } from './pod-backend.js';

export interface QuicGoBackendOptions extends PodBackendOptions {
  /** The built program (quicgo-backend/build.sh prints its path). */
  binary: string;
}

/** How long the program may take to listen (it waits up to 10 s for its files itself). */
const START_TIMEOUT_MS = 20_000;
const REQUEST_TIMEOUT_MS = 10_000;
/** CIDs per `issued` or `clients` request: a request line stays far below the program's line limit. */
const CIDS_PER_REQUEST = 2000;

export class QuicGoBackend implements PodBackend {
  readonly stack = 'quic-go';
  private readonly client: JsonLinesClient;
  private stderrTail: string[] = [];
  /** Set from the program's `ready` line, before start() returns. */
  generator!: GeneratorInfo;

  private constructor(
    child: ChildProcess,
    private readonly options: QuicGoBackendOptions,
  ) {
    this.client = new JsonLinesClient(child, { name: `quic-go backend ${options.name}`, onLine: (line, m) => this.line(line, m) });
  }

  get name(): string {
    return this.options.name;
  }

  get host(): string {
    return this.options.host;
  }

  static async start(options: QuicGoBackendOptions): Promise<QuicGoBackend> {
    const tlsDir = mkdtempSync(join(tmpdir(), 'quicgo-tls-'));
    writeFileSync(join(tlsDir, 'key.pem'), options.tls.key, { mode: 0o600 });
    writeFileSync(join(tlsDir, 'cert.pem'), options.tls.cert);
    const args = [
      '--name', options.name, '--listen', `${options.host}:${options.port}`, '--dir', options.dir,
      '--cert', join(tlsDir, 'cert.pem'), '--key', join(tlsDir, 'key.pem'),
      '--idle-timeout-ms', String(options.idleTimeoutMs ?? 120_000),
      // a pod's socket like a production server's: bursts of client datagrams must not meet a ~208 KiB buffer (ecmp.ts)
      '--recv-buffer', String(4 * 1024 * 1024),
    ];
    const child = spawnTied(options.binary, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const b = new QuicGoBackend(child, options);
    const ready = new Promise<Json>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`quic-go backend ${options.name}: not listening after ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS);
      b.onReady = (m) => {
        clearTimeout(timer);
        resolve(m);
      };
      b.onEarlyExit = (why) => {
        clearTimeout(timer);
        reject(new Error(`quic-go backend ${options.name} exited before listening (${why}): ${b.stderrTail.join(' | ')}`));
      };
    });
    eachLine(child.stderr, (line) => {
      b.stderrTail = [...b.stderrTail.slice(-9), line];
      options.log(`stderr: ${line}`);
    });
    // the client's `closed` comes after stdout and stderr are read to their end (the stderr tail of a failed start)
    void b.client.closed.then((why) => b.onEarlyExit(why));
    try {
      const m = await ready;
      b.generator = m.generator as GeneratorInfo;
    } catch (e) {
      child.kill('SIGKILL');
      throw e;
    } finally {
      // the program loaded the key pair before it listened: the key need not stay on disk
      rmSync(tlsDir, { recursive: true, force: true });
    }
    return b;
  }

  private onReady: (m: Json) => void = () => {};
  private onEarlyExit: (why: string) => void = () => {};

  private line(line: string, m: Json | undefined): void {
    if (!m) return this.options.log(`unexpected output: ${line.slice(0, 200)}`);
    if (m.id === null && typeof m.error === 'string') return this.options.log(`control error without a request id: ${m.error}`);
    if (m.event === 'ready') return this.onReady(m);
    if (m.event === 'log' && typeof m.line === 'string') return this.options.log(m.line);
  }

  private async request(op: string, extra: Json = {}): Promise<Json> {
    const m = await this.client.request({ op, ...extra }, REQUEST_TIMEOUT_MS);
    if (typeof m.error === 'string') throw new Error(`quic-go backend ${this.name}: ${m.error}`);
    return m;
  }

  async stats(): Promise<BackendStats> {
    const m = await this.request('stats');
    const audit = m.audit as BackendAudit;
    const unowned = (m.unownedInitial ?? {}) as Record<string, number>;
    return { audit, unownedInitial: new Map(Object.entries(unowned)) };
  }

  async issued(cids: string[]): Promise<Set<string>> {
    const out = new Set<string>();
    for (let i = 0; i < cids.length; i += CIDS_PER_REQUEST) {
      const m = await this.request('issued', { cids: cids.slice(i, i + CIDS_PER_REQUEST) });
      for (const c of m.issued as string[]) out.add(c);
    }
    return out;
  }

  async clients(clientCids: string[]): Promise<Map<string, { responses: number; dcids: number }>> {
    const out = new Map<string, { responses: number; dcids: number }>();
    for (let i = 0; i < clientCids.length; i += CIDS_PER_REQUEST) {
      const m = await this.request('clients', { cids: clientCids.slice(i, i + CIDS_PER_REQUEST) });
      for (const [c, v] of Object.entries(m.clients as Record<string, { responses: number; dcids: number }>)) out.set(c, v);
    }
    return out;
  }

  async stop(): Promise<void> {
    await this.request('stop');
  }

  async dispose(): Promise<void> {
    await this.client.close(3000);
  }
}
