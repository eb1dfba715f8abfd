import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real `quiclb` CLI from source in a child process (tsx loader, this Node). */
export function runCli(args: string[], input?: string): CliResult {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'cli/main.ts', ...args], {
    cwd: repoRoot,
    input,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A child process from the checkout whose output is collected: stdout as lines, stderr as chunks. */
export interface CliProc {
  child: ChildProcess;
  out: string[];
  err: string[];
  exit: Promise<number | null>;
}

/**
 * Spawns this Node with `argv` (e.g. ['--import', 'tsx', 'cli/main.ts', 'standalone', ...]) from the checkout,
 * NODE_OPTIONS cleared. `onOutput` also sees every stdout line and stderr chunk (a test's log of all its processes).
 */
export function spawnNode(argv: string[], options: { env?: NodeJS.ProcessEnv; onOutput?: (text: string[]) => void } = {}): CliProc {
  const child = spawn(process.execPath, argv, {
    cwd: repoRoot,
    env: { ...process.env, NODE_OPTIONS: '', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const p: CliProc = { child, out: [], err: [], exit: new Promise((r) => child.on('exit', (code) => r(code))) };
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    const lines = buf.split('\n');
    buf = lines.pop()!;
    p.out.push(...lines);
    options.onOutput?.(lines);
  });
  child.stderr!.on('data', (d: Buffer) => {
    p.err.push(d.toString());
    options.onOutput?.([d.toString()]);
  });
  return p;
}

/**
 * Runs this Node with `argv` (spawnNode) to its end, SIGKILLed after `timeoutMs`: its exit code, stdout lines and
 * stderr text, read to their end.
 */
export async function runNode(argv: string[], options: { env?: NodeJS.ProcessEnv; timeoutMs: number }): Promise<{ code: number | null; out: string[]; err: string }> {
  const p = spawnNode(argv, { env: options.env });
  const timer = setTimeout(() => p.child.kill('SIGKILL'), options.timeoutMs);
  const [code] = (await once(p.child, 'close')) as [number | null];
  clearTimeout(timer);
  return { code, out: p.out, err: p.err.join('') };
}

/** The first stdout line of `p` matching `re`, waiting up to `timeoutMs`; the error shows all output. */
export async function waitLine(p: CliProc, re: RegExp, timeoutMs = 20_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = p.out.find((l) => re.test(l));
    if (line !== undefined) return line;
    if (Date.now() > deadline) throw new Error(`no line matching ${re} in:\n${p.out.join('\n')}\n${p.err.join('')}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
