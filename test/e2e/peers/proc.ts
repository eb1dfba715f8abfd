/**
 * Process management for the end-to-end tests: spawn peers with their output captured in a log file,
 * wait for readiness, and stop exactly the processes we started (by PID, never by name).
 */
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, rmSync, type WriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));

/** How long captured output is kept in memory per process (the log file keeps everything). */
const TAIL_CHARS = 256 * 1024;

export class Proc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly logPath: string;
  /** Resolves with the exit code (or the signal name) once the process has exited. */
  readonly exited: Promise<number | string>;
  /**
   * Resolves once the process has exited AND its stdout/stderr are drained ('close'): only then is the output
   * complete. Output can still arrive after 'exit' (the pipes are read asynchronously).
   */
  readonly closed: Promise<void>;
  private output = '';
  private exitStatus: number | string | null = null;
  private readonly log: WriteStream;
  private logEnded: Promise<void> | null = null;
  private readonly waiters: { re: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];

  constructor(name: string, child: ChildProcess, logPath: string) {
    this.name = name;
    this.child = child;
    this.logPath = logPath;
    this.log = createWriteStream(logPath);
    const onData = (chunk: Buffer): void => {
      // stop() ends the log only after 'close' (or after destroying pipes a surviving grandchild kept open),
      // so nothing should arrive after that; never write after end regardless ("write after end" otherwise).
      if (!this.log.writableEnded) this.log.write(chunk);
      this.output += chunk.toString('utf8');
      if (this.output.length > TAIL_CHARS) this.output = this.output.slice(-TAIL_CHARS);
      for (const w of [...this.waiters]) {
        const m = this.output.match(w.re);
        if (m) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(m);
        }
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.exitStatus = code ?? signal ?? 'unknown';
        resolve(this.exitStatus);
      });
      child.on('error', (e) => {
        this.output += `\n[spawn error] ${e.message}\n`;
        this.exitStatus = 'spawn-error';
        resolve(this.exitStatus);
      });
    });
    this.closed = new Promise((resolve) => {
      child.on('close', () => resolve());
      child.on('error', () => resolve());
    });
  }

  get pid(): number {
    if (this.child.pid === undefined) throw new Error(`${this.name}: not started`);
    return this.child.pid;
  }

  get running(): boolean {
    return this.exitStatus === null;
  }

  /** The captured stdout+stderr (the last 256 KiB). */
  get text(): string {
    return this.output;
  }

  /** Waits until the output matches `re`; fails with the output tail if the process exits or time runs out. */
  async waitFor(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    const m = this.output.match(re);
    if (m) return m;
    let timer: NodeJS.Timeout | undefined;
    let waiter: { re: RegExp; resolve: (m: RegExpMatchArray) => void } | undefined;
    try {
      return await Promise.race([
        new Promise<RegExpMatchArray>((resolve) => {
          waiter = { re, resolve };
          this.waiters.push(waiter);
        }),
        // (the last output may arrive just after the exit: give the pipes a moment before quoting the tail)
        this.exited.then(async (status) => {
          await Promise.race([this.closed, sleep(1000)]);
          throw new Error(`${this.name} exited (${status}) before printing ${re}:\n${this.tail()}`);
        }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`${this.name}: no ${re} within ${timeoutMs} ms:\n${this.tail()}`)), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
      if (waiter && this.waiters.includes(waiter)) this.waiters.splice(this.waiters.indexOf(waiter), 1);
    }
  }

  tail(chars = 3000): string {
    return this.output.slice(-chars);
  }

  /**
   * SIGTERM, then SIGKILL after `graceMs`. Signals only this PID. Returns once the output is complete and the
   * log file closed: after 'close', or, if a grandchild still holds the pipes 2 s after the exit, after
   * destroying our ends of them.
   */
  async stop(graceMs = 2000): Promise<number | string> {
    if (this.running) {
      try {
        process.kill(this.pid, 'SIGTERM');
      } catch {
        /* already gone */
      }
      const timer = setTimeout(() => {
        try {
          if (this.running) process.kill(this.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }, graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    let drainTimer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      this.closed.then(() => true),
      new Promise<boolean>((r) => {
        drainTimer = setTimeout(() => r(false), 2000);
      }),
    ]);
    clearTimeout(drainTimer);
    if (!drained) {
      this.output += '\n[e2e] output pipes still open 2 s after the exit (a surviving child process?): closed them\n';
      this.child.stdout?.destroy();
      this.child.stderr?.destroy();
    }
    this.logEnded ??= new Promise<void>((r) => this.log.end(r));
    await this.logEnded;
    return this.exitStatus ?? 'unknown';
  }
}

/**
 * Every child still running, so that a test process that exits without reaching afterAll (a jest timeout,
 * process.exit) does not leave peers behind: they are killed by PID on 'exit' (synchronous, so SIGKILL).
 */
const live = new Set<Proc>();
process.once('exit', () => {
  for (const p of live) {
    try {
      if (p.running) process.kill(p.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

/** A set of processes started by one test file; `stopAll()` in afterAll stops every one of them by PID. */
export class ProcGroup {
  readonly dir: string;
  private readonly procs: Proc[] = [];
  private seq = 0;
  /** Set when a guarded test failed: cleanup() then keeps the logs. */
  private failed = false;

  constructor(prefix: string) {
    this.dir = mkdtempSync(join(tmpdir(), `quiclb-e2e-${prefix}-`));
  }

  /** Every process this group started, in start order (stopped ones included). */
  get processes(): readonly Proc[] {
    return this.procs;
  }

  spawn(name: string, command: string, args: string[], options: SpawnOptions = {}): Proc {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
    const p = new Proc(name, child, join(this.dir, `${String(++this.seq).padStart(2, '0')}-${name}.log`));
    this.procs.push(p);
    if (child.pid !== undefined) {
      live.add(p);
      void p.exited.then(() => live.delete(p));
    }
    return p;
  }

  /** Runs a TypeScript file of this repo in a child Node (the project's Node 24, through the tsx loader). */
  spawnTs(name: string, script: string, args: string[], options: SpawnOptions = {}): Proc {
    return this.spawn(name, process.execPath, ['--import', 'tsx', script, ...args], {
      cwd: repoRoot,
      ...options,
      env: { ...process.env, NODE_OPTIONS: '', ...(options.env ?? {}) },
    });
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.procs.map((p) => p.stop()));
  }

  /** Wraps a test body: if it fails, the logs of every process are kept for inspection. */
  guard(fn: () => Promise<void>): () => Promise<void> {
    return async () => {
      try {
        await fn();
      } catch (e) {
        this.failed = true;
        throw e;
      }
    };
  }

  /** Removes the temp dir, unless a guarded test failed or QUICLB_E2E_KEEP is set (then says where the logs are). */
  cleanup(): void {
    if (this.failed || process.env.QUICLB_E2E_KEEP) {
      process.stderr.write(`e2e logs kept in ${this.dir}\n`);
      return;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Result of a command run to completion under a hard time limit. */
export interface RunResult {
  status: number | string;
  /** The last 256 KiB of stdout+stderr (all of it is in logPath). */
  output: string;
  logPath: string;
  ms: number;
  timedOut: boolean;
}

/** Runs a command to completion; kills it (by PID) after `timeoutMs`. Output is captured (last 256 KiB). */
export async function run(group: ProcGroup, name: string, command: string, args: string[], timeoutMs: number, options: SpawnOptions = {}): Promise<RunResult> {
  const t0 = Date.now();
  const p = group.spawn(name, command, args, options);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    void p.stop(500);
  }, timeoutMs);
  const status = await p.exited;
  clearTimeout(timer);
  await p.stop();
  return { status, output: p.text, logPath: p.logPath, ms: Date.now() - t0, timedOut };
}

/** Finds an executable or throws: a missing peer must fail the test, never skip it. */
export function requireExecutable(name: string, hint: string): string {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/usr/bin', '/sbin', '/bin'])) {
    const p = join(dir, name);
    if (dir && existsSync(p)) return p;
  }
  throw new Error(`required peer ${name} not found on PATH (${hint})`);
}

/** Self-signed P-256 certificate for localhost/127.0.0.1 (what both ngtcp2 and quiche accept). */
export function makeCert(dir: string): { key: string; cert: string } {
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  const r = spawnSync(
    requireExecutable('openssl', 'apt-get install openssl'),
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '30',
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'],
    { encoding: 'utf8' },
  );
  if (r.status !== 0 || !existsSync(cert)) throw new Error(`openssl failed: ${r.stderr}`);
  return { key, cert };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Fails the test with every problem and the context needed to understand it (jest's diff would hide the
 * context behind expect.any()).
 */
export function expectNoProblems(problems: string[], context: Record<string, unknown>): void {
  if (problems.length === 0) return;
  const ctx = Object.entries(context)
    .map(([k, v]) => `--- ${k}:\n${typeof v === 'string' ? v : JSON.stringify(v, null, 1)}`)
    .join('\n');
  throw new Error(`${problems.length} problem(s):\n  - ${problems.join('\n  - ')}\n${ctx}`);
}
