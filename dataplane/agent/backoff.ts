/**
 * Reconnect delays of the operator stream: exponential with full jitter (a random delay between 0 and the
 * current ceiling, the ceiling doubling per failed attempt up to a cap), so a fleet of data planes that lost the
 * operator at once does not reconnect in lockstep. The ceiling resets when the operator proves healthy: it sent a
 * snapshot on the stream (as Envoy's xDS client resets on a received message), or the stream stayed up long enough.
 * A server that accepts connections and then fails before answering keeps growing the ceiling.
 *
 * While the last contact with a healthy operator is recent, the ceiling stops at a lower cap: an operator that was
 * serving a moment ago is most likely going through a leader change or a restart (the standby binds the config
 * address only once it leads, so until then nobody listens), which ends within a lease period. Doubling to 30 s
 * there made the data plane reach the new leader seconds after the takeover. Past the window (the operator has been
 * gone longer than any takeover takes) the ceiling grows to the full cap, so a fleet does not keep hammering a
 * control plane that is down for good.
 */
export interface BackoffOptions {
  /** Ceiling of the first delay (default 500 ms). */
  readonly initialMs?: number;
  /** Cap of the ceiling (default 30 s). */
  readonly maxMs?: number;
  /** A stream that lived at least this long resets the ceiling (default 30 s). */
  readonly resetAfterMs?: number;
  /** Cap of the ceiling while the last healthy contact is recent (default 4 s; never above maxMs). */
  readonly recentMaxMs?: number;
  /** How long after the last healthy contact the lower cap applies (default 60 s: the default lease is 15 s). */
  readonly recentWindowMs?: number;
  /** Random source in [0, 1) (tests). */
  readonly random?: () => number;
  /** Clock in ms (tests). */
  readonly now?: () => number;
}

export const DEFAULT_BACKOFF = Object.freeze({
  initialMs: 500,
  maxMs: 30_000,
  resetAfterMs: 30_000,
  recentMaxMs: 4_000,
  recentWindowMs: 60_000,
});

export class Backoff {
  private failures = 0;
  /** A snapshot arrived since the last failed attempt: the stream now open is served by a healthy operator. */
  private healthy = false;
  /** When a healthy operator was last in contact (its stream ended, or it sent a snapshot); -Infinity: never. */
  private lastHealthyAt = Number.NEGATIVE_INFINITY;
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly resetAfterMs: number;
  private readonly recentMaxMs: number;
  private readonly recentWindowMs: number;
  private readonly random: () => number;
  private readonly now: () => number;

  constructor(options: BackoffOptions = {}) {
    this.initialMs = options.initialMs ?? DEFAULT_BACKOFF.initialMs;
    this.maxMs = Math.max(this.initialMs, options.maxMs ?? DEFAULT_BACKOFF.maxMs);
    this.resetAfterMs = options.resetAfterMs ?? DEFAULT_BACKOFF.resetAfterMs;
    this.recentMaxMs = Math.min(this.maxMs, Math.max(this.initialMs, options.recentMaxMs ?? DEFAULT_BACKOFF.recentMaxMs));
    this.recentWindowMs = options.recentWindowMs ?? DEFAULT_BACKOFF.recentWindowMs;
    this.random = options.random ?? Math.random;
    this.now = options.now ?? Date.now;
  }

  /** The current ceiling (what the next delay is drawn below). */
  get ceilingMs(): number {
    const recent = this.now() - this.lastHealthyAt < this.recentWindowMs;
    return Math.min(recent ? this.recentMaxMs : this.maxMs, this.initialMs * 2 ** Math.min(this.failures, 30));
  }

  /** The delay before the next attempt; each call doubles the ceiling (up to the cap). */
  next(): number {
    const delay = Math.floor(this.random() * this.ceilingMs);
    this.failures++;
    this.healthy = false;
    return delay;
  }

  /** The operator answered (sent a snapshot): the next failure starts from the first ceiling again. */
  reset(): void {
    this.failures = 0;
    this.healthy = true;
    this.lastHealthyAt = this.now();
  }

  /**
   * A stream ended after `livedMs`: a long-lived one resets the ceiling. If the operator behind it was healthy
   * (it sent a snapshot, or the stream lived long), it was in contact until now: the lower cap applies from here.
   */
  streamEnded(livedMs: number): void {
    const longLived = livedMs >= this.resetAfterMs;
    if (longLived) this.failures = 0;
    if (longLived || this.healthy) this.lastHealthyAt = this.now();
  }
}
