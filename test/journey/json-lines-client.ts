/**
 * The requesting side of a JSON-lines protocol with a child process: each request goes to the child's stdin as one
 * JSON line with a fresh numeric "id"; the line on its stdout with that id answers it (serveLines() is the other side).
 */
import type { ChildProcess } from 'node:child_process';
import { eachLine, type Json } from './lines.js';

export interface JsonLinesClientOptions {
  /** Names the child in errors: `${name} exited (SIGKILL)`. */
  name: string;
  /** Every stdout line that answers no pending request (events, logs, late answers); `m` when it is a JSON object. */
  onLine?: (line: string, m: Json | undefined) => void;
}

export class JsonLinesClient {
  private seq = 0;
  private readonly pending = new Map<number, { resolve: (m: Json) => void; reject: (e: Error) => void }>();
  private exit: string | null = null;
  /**
   * Resolves once the child has exited and its output is read to the end: the signal's name, the exit code, or
   * `spawn error: ...`. Pending requests are rejected then.
   */
  readonly closed: Promise<string>;

  constructor(
    private readonly child: ChildProcess,
    private readonly options: JsonLinesClientOptions,
  ) {
    eachLine(child.stdout, (line) => this.line(line));
    child.stdin!.on('error', () => {}); // a write after the child died: its end rejects the request
    let spawnError: string | null = null;
    child.on('error', (e) => {
      if (child.pid === undefined) spawnError = `spawn error: ${e.message}`;
    });
    // 'close', not 'exit': an answer written just before the child exited is still read
    this.closed = new Promise((resolve) => {
      child.on('close', (code, signal) => {
        const exit = spawnError ?? signal ?? String(code);
        this.exit = exit;
        for (const p of this.pending.values()) p.reject(new Error(`${options.name} exited (${exit})`));
        this.pending.clear();
        resolve(exit);
      });
    });
  }

  private line(line: string): void {
    let m: Json | undefined;
    try {
      const v: unknown = JSON.parse(line);
      if (typeof v === 'object' && v !== null && !Array.isArray(v)) m = v as Json;
    } catch {
      // not JSON: for onLine
    }
    const p = typeof m?.id === 'number' ? this.pending.get(m.id) : undefined;
    if (!m || !p) return this.options.onLine?.(line, m);
    const { id, ...answer } = m;
    this.pending.delete(id as number);
    p.resolve(answer);
  }

  /**
   * Sends `req` with a fresh id; resolves with the answer without its id (error answers too). Rejects when the child
   * has ended or ends first, and, given `timeoutMs`, when no answer comes within it.
   */
  request(req: Json, timeoutMs?: number): Promise<Json> {
    if (this.exit !== null) return Promise.reject(new Error(`${this.options.name} exited (${this.exit})`));
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      const timer = timeoutMs === undefined ? undefined : setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${this.options.name}: no answer to ${String(req.op)} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (m) => (clearTimeout(timer), resolve(m)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      this.child.stdin!.write(JSON.stringify({ ...req, id }) + '\n');
    });
  }

  /** Ends the child's stdin (the protocol's "stop"), SIGKILLs the child if it has not ended after `graceMs`. */
  async close(graceMs: number): Promise<string> {
    if (this.exit !== null) return this.exit;
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    const exit = await this.closed;
    clearTimeout(timer);
    return exit;
  }
}
