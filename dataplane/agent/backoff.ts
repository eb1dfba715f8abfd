/**
 * Reconnect delays of the operator stream: exponential with full jitter (a random delay between 0 and the
 * current ceiling, the ceiling doubling per failed attempt up to a cap), so a fleet of data planes that lost the
 * operator at once does not reconnect in lockstep. The ceiling resets when the operator proves healthy: it sent a
 * snapshot on the stream (as Envoy's xDS client resets on a received message), or the stream stayed up long enough.
 * A server that accepts connections and then fails before answering keeps growing the ceiling.
 */
export interface BackoffOptions {
  /** Ceiling of the first delay (default 500 ms). */
  readonly initialMs?: number;
  /** Cap of the ceiling (default 30 s). */
  readonly maxMs?: number;
  /** A stream that lived at least this long resets the ceiling (default 30 s). */
  readonly resetAfterMs?: number;
  /** Random source in [0, 1) (tests). */
  readonly random?: () => number;
}

export const DEFAULT_BACKOFF = Object.freeze({ initialMs: 500, maxMs: 30_000, resetAfterMs: 30_000 });

export class Backoff {
  private failures = 0;
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly resetAfterMs: number;
  private readonly random: () => number;

  constructor(options: BackoffOptions = {}) {
    this.initialMs = options.initialMs ?? DEFAULT_BACKOFF.initialMs;
    this.maxMs = Math.max(this.initialMs, options.maxMs ?? DEFAULT_BACKOFF.maxMs);
    this.resetAfterMs = options.resetAfterMs ?? DEFAULT_BACKOFF.resetAfterMs;
    this.random = options.random ?? Math.random;
  }

  /** The current ceiling (what the next delay is drawn below). */
  get ceilingMs(): number {
    return Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.failures, 30));
  }

  /** The delay before the next attempt; each call doubles the ceiling (up to the cap). */
  next(): number {
    const delay = Math.floor(this.random() * this.ceilingMs);
    this.failures++;
    return delay;
  }

  /** The operator answered (sent a snapshot): the next failure starts from the first ceiling again. */
  reset(): void {
    this.failures = 0;
  }

  /** A stream ended after `livedMs`: a long-lived one resets the ceiling. */
  streamEnded(livedMs: number): void {
    if (livedMs >= this.resetAfterMs) this.failures = 0;
  }
}
