/**
 * Plumbing shared by the journey agent and its workers: JSON lines in and out, `ip` commands, children that die with
 * their parent.
 */
import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createServer, type Server, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';

export type Json = Record<string, unknown>;

/** Writes one JSON line to stdout. */
export const emit = (o: Json): void => {
  process.stdout.write(JSON.stringify(o) + '\n');
};

/**
 * Reads JSON requests from stdin and answers each with `handle`'s result (or {"error"}) under the same id; calls
 * `onEnd` when stdin ends (the parent is gone or closed it). Requests run concurrently.
 */
export function serveLines(handle: (req: Json) => Promise<Json>, onEnd: () => void): void {
  createInterface({ input: process.stdin, crlfDelay: Infinity })
    .on('line', (line) => {
      if (line.trim() === '') return;
      let req: Json;
      try {
        req = JSON.parse(line) as Json;
        if (typeof req !== 'object' || req === null || Array.isArray(req)) throw new Error('not a JSON object');
      } catch (e) {
        emit({ id: null, error: `bad request line: ${(e as Error).message}` });
        return;
      }
      const id = req.id ?? null;
      handle(req).then(
        (answer) => emit({ id, ...answer }),
        (e: unknown) => emit({ id, error: e instanceof Error ? e.message : String(e) }),
      );
    })
    .on('close', onEnd);
}

/**
 * A worker's main loop: answers each request with `ops[req.op]`; {"op":"shutdown"} (after its answer), stdin's end
 * and SIGTERM run `cleanup` once, then exit 0. Announces {"event":"ready","pid"}.
 */
export function serveOps(ops: Record<string, (req: Json) => Json | Promise<Json>>, cleanup: () => Promise<void>): void {
  let ending = false;
  const end = (): void => {
    if (ending) return;
    ending = true;
    void cleanup().then(() => process.exit(0));
  };
  process.on('SIGTERM', end);
  serveLines(async (req) => {
    if (req.op === 'shutdown') {
      setImmediate(end);
      return { ok: true };
    }
    if (typeof req.op !== 'string' || !Object.hasOwn(ops, req.op)) throw new Error(`unknown op ${JSON.stringify(req.op)}`);
    return ops[req.op](req);
  }, end);
  emit({ event: 'ready', pid: process.pid });
}

const execFileP = promisify(execFile);

/** Runs `ip ARGS` in this process's network namespace; throws with ip's message. */
export async function ip(...args: string[]): Promise<void> {
  try {
    await execFileP('ip', args, { timeout: 10_000 });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')}: ${(err.stderr ?? err.message).trim()}`, { cause: e });
  }
}

/**
 * Spawns `cmd args` under `setpriv --pdeathsig KILL`: the kernel SIGKILLs the child when this process dies, whatever
 * the way (PR_SET_PDEATHSIG set between fork and exec, kept across the exec).
 */
export function spawnTied(cmd: string, args: string[], options: SpawnOptions): ChildProcess {
  return spawn('setpriv', ['--pdeathsig', 'KILL', '--', cmd, ...args], options);
}

/** Calls `onLine` for each line a stream of a child writes. */
export function eachLine(stream: NodeJS.ReadableStream | null, onLine: (line: string) => void): void {
  if (stream) createInterface({ input: stream, crlfDelay: Infinity }).on('line', onLine);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function str(req: Json, key: string): string {
  const v = req[key];
  if (typeof v !== 'string' || v === '') throw new Error(`"${key}" must be a non-empty string`);
  return v;
}

export function int(req: Json, key: string, min: number, max: number, fallback?: number): number {
  const v = req[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new Error(`"${key}" must be an integer from ${min} to ${max}`);
  return v;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;
export function ipv4(req: Json, key: string): string {
  const v = str(req, key);
  if (!IPV4.test(v)) throw new Error(`"${key}" must be an IPv4 address, got ${JSON.stringify(v)}`);
  return v;
}

export function cidr(v: unknown): string {
  if (typeof v !== 'string') throw new Error('a pod CIDR route must be a string');
  const [a, len, ...rest] = v.split('/');
  if (rest.length > 0 || !IPV4.test(a) || !/^\d{1,2}$/.test(len ?? '') || Number(len) > 32) throw new Error(`bad CIDR ${JSON.stringify(v)}`);
  return v;
}

/**
 * A stream relay (not yet listening): every accepted connection is piped both ways to a new `dial()` connection,
 * and an error or close of either end closes both. Relays between the host's config server (TCP or a Unix socket)
 * and the node namespaces.
 */
export function relayServer(dial: () => Socket): Server {
  return createServer((c) => {
    const up = dial();
    c.pipe(up).pipe(c);
    const end = () => {
      c.destroy();
      up.destroy();
    };
    c.on('error', end).on('close', end);
    up.on('error', end).on('close', end);
  });
}
