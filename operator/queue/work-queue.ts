/**
 * A keyed, de-duplicating work queue for reconciles (the controller-runtime contract, STYLE.md):
 * - it holds keys, not events: adding a key that is already waiting does nothing;
 * - one run in flight per key: a key added while it runs is run once more after that run ends;
 * - the run's verdict decides what follows: 'done' forgets the key's failures, 'requeue-after' schedules a known
 *   wait (and also forgets failures, as controller-runtime does), 'retry' (or a thrown error) schedules a retry after
 *   a per-key exponential backoff with jitter, capped at maxDelayMs;
 * - an add() always runs the key as soon as a worker is free, even during its backoff (new information may fix
 *   it), but keeps the failure count, so the next failure waits longer;
 * - addAfter() keeps the earliest pending time of a key.
 *
 * Keys may be added before start() (informers warm up while the operator is not yet leader); they run from start().
 * stop() waits for runs in flight, drops everything pending and clears all timers; the queue may be started again.
 * Timers are unref'd, so a forgotten queue never keeps the process alive.
 */
import type { Logger } from 'pino';

export type Verdict = { kind: 'done' } | { kind: 'requeue-after'; ms: number } | { kind: 'retry'; error: unknown };

/** Timer functions, injectable for tests. The default uses the global timers and unrefs them. */
export interface QueueTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface WorkQueueOptions<K extends string> {
  process: (key: K) => Promise<Verdict>;
  /** First retry delay (before jitter); doubles per consecutive failure. Default 200. */
  baseDelayMs?: number;
  /** Cap of the retry delay. Default 60000. */
  maxDelayMs?: number;
  /** Runs in flight at once (of different keys). Default 1. */
  concurrency?: number;
  /** Clock in ms; default Date.now. */
  now?: () => number;
  /** Timers; default global setTimeout/clearTimeout, unref'd. */
  timers?: QueueTimers;
  /** Uniform [0, 1) for jitter; default Math.random. */
  random?: () => number;
  logger?: Logger;
}

/** Node's setTimeout fires at once (with a warning) beyond this; longer waits are clamped to it. */
const MAX_TIMER_MS = 2 ** 31 - 1;

const defaultTimers: QueueTimers = {
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout(handle) {
    clearTimeout(handle as ReturnType<typeof setTimeout>);
  },
};

/**
 * The delay before retry number `failures` (1 = first failure): nominal = min(maxDelayMs, baseDelayMs * 2^(failures-1)),
 * jittered down into [nominal/2, nominal] so that keys failing together spread out, never above the cap.
 */
export function backoffDelay(failures: number, baseDelayMs: number, maxDelayMs: number, random: number): number {
  const exp = Math.min(failures - 1, 52); // 2^52 * base is far past any cap; keeps the arithmetic finite
  const nominal = Math.min(maxDelayMs, baseDelayMs * 2 ** exp);
  return nominal * (1 - random / 2);
}

interface Delayed {
  due: number;
  handle: unknown;
}

export class WorkQueue<K extends string> {
  private readonly processFn: (key: K) => Promise<Verdict>;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly concurrency: number;
  private readonly now: () => number;
  private readonly timers: QueueTimers;
  private readonly random: () => number;
  private readonly logger: Logger | undefined;

  /** Keys ready to run now, in arrival order; never a key in flight. */
  private readonly ready = new Set<K>();
  /** Keys scheduled for later (addAfter, requeue-after, retry); never a key in `ready` or `dirty`. */
  private readonly delayed = new Map<K, Delayed>();
  /** Runs in flight, by key. */
  private readonly inFlight = new Map<K, Promise<void>>();
  /** Keys in flight that were added again meanwhile: they run once more when their run ends. */
  private readonly dirty = new Set<K>();
  /** Consecutive failures per key. */
  private readonly failures = new Map<K, number>();
  private running = false;

  constructor(options: WorkQueueOptions<K>) {
    this.processFn = options.process;
    this.baseDelayMs = options.baseDelayMs ?? 200;
    this.maxDelayMs = options.maxDelayMs ?? 60000;
    this.concurrency = options.concurrency ?? 1;
    this.now = options.now ?? Date.now;
    this.timers = options.timers ?? defaultTimers;
    this.random = options.random ?? Math.random;
    this.logger = options.logger;
    if (!(this.baseDelayMs > 0) || !(this.maxDelayMs >= this.baseDelayMs) || this.maxDelayMs > MAX_TIMER_MS) {
      throw new RangeError(`WorkQueue: need 0 < baseDelayMs (${this.baseDelayMs}) <= maxDelayMs (${this.maxDelayMs}) <= ${MAX_TIMER_MS}`);
    }
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1) {
      throw new RangeError(`WorkQueue: concurrency must be an integer >= 1 (got ${this.concurrency})`);
    }
  }

  /** Keys waiting to run, now or later (runs in flight not counted). */
  get length(): number {
    return this.ready.size + this.delayed.size + this.dirty.size;
  }

  /** Runs in flight. */
  get processing(): number {
    return this.inFlight.size;
  }

  /** Runs the key as soon as a worker is free (after its current run, if one is in flight). */
  add(key: K): void {
    this.cancelDelayed(key);
    if (this.inFlight.has(key)) this.dirty.add(key);
    else this.ready.add(key);
    this.pump();
  }

  /** Runs the key in `ms` unless it is already due sooner. */
  addAfter(key: K, ms: number): void {
    if (!(ms > 0)) {
      this.add(key); // also NaN: running early is safe, losing the key is not
      return;
    }
    if (this.ready.has(key) || this.dirty.has(key)) return;
    const due = this.now() + Math.min(ms, MAX_TIMER_MS);
    const prev = this.delayed.get(key);
    if (prev && prev.due <= due) return;
    this.cancelDelayed(key);
    const handle = this.timers.setTimeout(() => {
      if (this.delayed.get(key)?.handle !== handle) return;
      this.delayed.delete(key);
      this.add(key);
    }, due - this.now());
    this.delayed.set(key, { due, handle });
  }

  /**
   * Drops the key's pending runs (now and later) and its failure count, e.g. when its object is gone for good.
   * A run in flight finishes and its verdict still applies (a 'retry' schedules one more run, which finds the
   * object gone), but adds made before forget() do not repeat it.
   */
  forget(key: K): void {
    this.cancelDelayed(key);
    this.ready.delete(key);
    this.dirty.delete(key);
    this.failures.delete(key);
  }

  start(): void {
    this.running = true;
    this.pump();
  }

  /** Stops taking work, drops everything pending, clears timers and resolves when the runs in flight have ended. */
  async stop(): Promise<void> {
    this.running = false;
    for (const d of this.delayed.values()) this.timers.clearTimeout(d.handle);
    this.delayed.clear();
    this.ready.clear();
    this.dirty.clear();
    this.failures.clear();
    await Promise.all([...this.inFlight.values()]);
  }

  private cancelDelayed(key: K): void {
    const d = this.delayed.get(key);
    if (!d) return;
    this.timers.clearTimeout(d.handle);
    this.delayed.delete(key);
  }

  private pump(): void {
    if (!this.running) return;
    while (this.inFlight.size < this.concurrency && this.ready.size > 0) {
      const key = this.ready.values().next().value as K;
      this.ready.delete(key);
      // The run starts on a microtask, after the key is marked in flight: a process() that adds its own key
      // (synchronously) then marks it dirty instead of starting a second run.
      const run = Promise.resolve()
        .then(() => this.runOnce(key))
        .catch((err: unknown) => this.logger?.error({ key, err }, 'work queue bookkeeping failed'))
        .finally(() => {
          this.inFlight.delete(key);
          if (this.dirty.delete(key)) this.add(key); // runs now, or from the next start() if stopped meanwhile
          else this.pump();
        });
      this.inFlight.set(key, run);
    }
  }

  private async runOnce(key: K): Promise<void> {
    let verdict: Verdict;
    try {
      verdict = await this.processFn(key);
    } catch (error) {
      verdict = { kind: 'retry', error };
    }
    if (!this.running) return; // stopped meanwhile: pending work is dropped, nothing to schedule
    this.settle(key, verdict);
  }

  private settle(key: K, verdict: Verdict): void {
    if (verdict?.kind === 'done') {
      this.failures.delete(key);
      return;
    }
    if (verdict?.kind === 'requeue-after' && Number.isFinite(verdict.ms) && verdict.ms >= 0) {
      this.failures.delete(key);
      this.addAfter(key, verdict.ms);
      return;
    }
    const error = verdict?.kind === 'retry' ? verdict.error : new Error(`invalid verdict (kind ${String((verdict as { kind?: unknown } | null)?.kind)})`);
    const failures = (this.failures.get(key) ?? 0) + 1;
    this.failures.set(key, failures);
    const delayMs = backoffDelay(failures, this.baseDelayMs, this.maxDelayMs, this.random());
    this.logger?.warn({ key, failures, delayMs: Math.round(delayMs), err: error }, 'reconcile failed; retrying after backoff');
    this.addAfter(key, delayMs);
  }
}
