/**
 * Leader election on a coordination.k8s.io/v1 Lease (client-node has none; this follows client-go's leaderelection).
 *
 * - Acquire: read the Lease (create it on 404; a 409 on create means another candidate won). A Lease held by
 *   someone else is taken only once it has expired, judged by *local* time since this candidate last saw the
 *   Lease change (its resourceVersion), plus the Lease's leaseDurationSeconds: clocks of different machines never
 *   enter the decision. A Lease with no holder (released) is taken at once. Writes carry the read resourceVersion, so
 *   the API server's optimistic locking decides every race (409 = lost). leaseTransitions counts changes of holder.
 * - Renew: the leader rewrites the Lease every retrySeconds. If no renewal has succeeded for renewDeadlineSeconds
 *   (counted from when the last successful renewal was *sent*), it stops leading (onStoppedLeading) although the
 *   Lease may still name it: renewDeadline < leaseSeconds, so it has stopped before any other candidate can see the
 *   Lease expire. That timer does not depend on the requests: a hung API call cannot keep a leader acting. A 409 on
 *   renew re-reads the Lease; if another holder is there, leadership is lost at once.
 * - stop(): stops leading first (onStoppedLeading, awaited), then releases the Lease (holder cleared, duration 1 s)
 *   so a standby takes over at its next retry instead of waiting for expiry. stop({ release: false }) leaves the
 *   Lease as a crashed process would.
 * - After losing leadership the elector stays a candidate and may lead again (onStartedLeading again); a caller
 *   that prefers client-go's "exit on loss" exits in onStoppedLeading. The callbacks are not awaited by the loop:
 *   onStoppedLeading can run while an async onStartedLeading is still busy, and must stop whatever that started.
 *
 * Least-privilege RBAC (a namespaced Role in `namespace`; create cannot be limited by resourceNames because the
 * name is not part of a create request's URL):
 *   - apiGroups: ["coordination.k8s.io"]
 *     resources: ["leases"]
 *     verbs: ["create"]
 *   - apiGroups: ["coordination.k8s.io"]
 *     resources: ["leases"]
 *     resourceNames: ["<name>"]          # e.g. quiclb-operator
 *     verbs: ["get", "update"]
 * test/integration/lease.test.ts runs the electors under exactly these rules.
 */
import { performance } from 'node:perf_hooks';
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';

export interface LeaderElectorOptions {
  kc: k8s.KubeConfig;
  namespace: string;
  /** Lease name, e.g. quiclb-operator. */
  name: string;
  /** Unique per replica and per process start (e.g. pod name + random suffix). */
  identity: string;
  /** Lease duration written to the Lease; integer. Default 15. */
  leaseSeconds?: number;
  /** Stop leading when renewals have failed this long. Default 10; must be < leaseSeconds. */
  renewDeadlineSeconds?: number;
  /** Interval between attempts (leader: renewals; candidate: acquisitions, jittered up to +20%). Default 2. */
  retrySeconds?: number;
  onStartedLeading: () => void | Promise<void>;
  onStoppedLeading: () => void | Promise<void>;
  logger?: Logger;
}

export type LeadershipLoss = 'renew-deadline' | 'taken' | 'stopped';

function isStatus(err: unknown, code: number): boolean {
  return err instanceof k8s.ApiException && err.code === code;
}

function describeError(err: unknown): string {
  if (err instanceof k8s.ApiException) return `HTTP ${err.code}`;
  if (err instanceof Error) return err.name === 'AbortError' || err.name === 'TimeoutError' ? 'request timed out' : err.message;
  return String(err);
}

/** Request options that abort the call when `signal` fires. */
function withSignal(signal: AbortSignal): k8s.ConfigurationOptions {
  return {
    middleware: [
      {
        pre: (ctx) => {
          ctx.setSignal(signal);
          return new k8s.Observable(Promise.resolve(ctx));
        },
        post: (ctx) => new k8s.Observable(Promise.resolve(ctx)),
      },
    ],
    middlewareMergeStrategy: 'append',
  };
}

export class LeaderElector {
  readonly identity: string;
  private readonly api: k8s.CoordinationV1Api;
  private readonly namespace: string;
  private readonly name: string;
  private readonly leaseSeconds: number;
  private readonly renewDeadlineMs: number;
  private readonly retryMs: number;
  private readonly requestTimeoutMs: number;
  private readonly onStarted: () => void | Promise<void>;
  private readonly onStopped: () => void | Promise<void>;
  private readonly logger: Logger | undefined;

  private leading = false;
  private running = false;
  /** The Lease as we last wrote it (its resourceVersion makes the next renewal a guarded write). */
  private ours: k8s.V1Lease | undefined;
  /** resourceVersion of the Lease as last seen, and the local time we first saw it. */
  private observedVersion: string | undefined;
  private observedAt = 0;
  private observedHolderValue: string | undefined;
  private stepDownTimer: ReturnType<typeof setTimeout> | undefined;
  private wake: (() => void) | undefined;
  private abort = new AbortController();
  private loopDone: Promise<void> = Promise.resolve();
  private stoppedCallback: Promise<void> = Promise.resolve();
  private stopping: Promise<void> = Promise.resolve();
  private failing = false;
  private acquiredCount = 0;
  private lostCount = 0;

  constructor(options: LeaderElectorOptions) {
    this.identity = options.identity;
    this.namespace = options.namespace;
    this.name = options.name;
    this.leaseSeconds = options.leaseSeconds ?? 15;
    this.renewDeadlineMs = (options.renewDeadlineSeconds ?? 10) * 1000;
    this.retryMs = (options.retrySeconds ?? 2) * 1000;
    this.onStarted = options.onStartedLeading;
    this.onStopped = options.onStoppedLeading;
    this.logger = options.logger?.child({ lease: `${options.namespace}/${options.name}`, identity: options.identity });
    if (!options.identity) throw new RangeError('LeaderElector: identity must not be empty');
    if (!Number.isInteger(this.leaseSeconds) || this.leaseSeconds < 1) {
      throw new RangeError(`LeaderElector: leaseSeconds must be an integer >= 1 (got ${this.leaseSeconds})`);
    }
    if (!(this.renewDeadlineMs > 0 && this.renewDeadlineMs < this.leaseSeconds * 1000)) {
      throw new RangeError(`LeaderElector: need 0 < renewDeadlineSeconds < leaseSeconds (${this.renewDeadlineMs / 1000} vs ${this.leaseSeconds})`);
    }
    if (!(this.retryMs > 0 && this.retryMs * 1.2 < this.renewDeadlineMs)) {
      throw new RangeError(`LeaderElector: need 0 < 1.2 * retrySeconds < renewDeadlineSeconds (${this.retryMs / 1000} vs ${this.renewDeadlineMs / 1000})`);
    }
    // Long enough for a slow API server, short enough to try again before the renew deadline.
    this.requestTimeoutMs = Math.min(this.renewDeadlineMs / 2, Math.max(2 * this.retryMs, 1000));
    this.api = options.kc.makeApiClient(k8s.CoordinationV1Api);
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** The holder named by the Lease when this elector last read or wrote it ('' when released). */
  get observedHolder(): string | undefined {
    return this.observedHolderValue;
  }

  /** Times this elector started leading, and stopped leading. */
  get transitions(): { acquired: number; lost: number } {
    return { acquired: this.acquiredCount, lost: this.lostCount };
  }

  /** Starts campaigning. After stop(), start again only once stop() has resolved. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.abort = new AbortController();
    this.loopDone = this.loop();
  }

  /**
   * Stops the loop. A leader stops leading (onStoppedLeading, awaited) and then, unless release is false, releases
   * the Lease so a standby can take over at once.
   */
  stop(options: { release?: boolean } = {}): Promise<void> {
    if (!this.running) return this.stopping;
    this.running = false;
    this.stopping = this.shutDown(options.release !== false);
    return this.stopping;
  }

  private async shutDown(release: boolean): Promise<void> {
    this.abort.abort();
    this.wake?.();
    const wasLeader = this.leading;
    if (wasLeader) this.loseLeadership('stopped');
    await this.stoppedCallback;
    await this.loopDone;
    // Also when a write that named us holder landed as we stopped, without our ever leading on it.
    if (release && (wasLeader || this.observedHolderValue === this.identity)) await this.release();
  }

  private async loop(): Promise<void> {
    while (this.running) {
      try {
        await this.attempt();
      } catch (err) {
        this.noteFailure(err);
      }
      if (!this.running) break;
      const delay = this.leading ? this.retryMs : this.retryMs * (1 + 0.2 * Math.random());
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, delay);
        t.unref();
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  /** One acquire-or-renew. Throws on API errors other than the conflicts it handles. */
  private async attempt(): Promise<void> {
    const sentAt = performance.now();
    if (this.leading && this.ours) {
      try {
        await this.write(this.renewed(this.ours, true), sentAt);
        return;
      } catch (err) {
        if (!isStatus(err, 409)) throw err;
        // someone else wrote the Lease: read it to see who holds it now
      }
    }
    let lease: k8s.V1Lease;
    try {
      lease = await this.api.readNamespacedLease({ name: this.name, namespace: this.namespace }, this.requestOptions());
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
      await this.create(sentAt);
      return;
    }
    const holder = this.observe(lease);
    if (holder && holder !== this.identity) {
      if (this.leading) this.loseLeadership('taken');
      if (!this.expired(lease)) return;
    }
    try {
      await this.write(this.renewed(lease, holder === this.identity && this.leading), sentAt);
    } catch (err) {
      if (!isStatus(err, 409)) throw err;
      if (this.leading) this.loseLeadership('taken');
      this.logger?.debug('lost the race for the Lease (409)');
    }
  }

  private async create(sentAt: number): Promise<void> {
    const now = new k8s.V1MicroTime();
    const body: k8s.V1Lease = {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: this.name, namespace: this.namespace },
      spec: { holderIdentity: this.identity, leaseDurationSeconds: this.leaseSeconds, acquireTime: now, renewTime: now, leaseTransitions: 0 },
    };
    try {
      const created = await this.api.createNamespacedLease({ namespace: this.namespace, body }, this.requestOptions());
      this.succeeded(created, sentAt);
    } catch (err) {
      if (!isStatus(err, 409)) throw err;
      this.logger?.debug('another candidate created the Lease first (409)');
    }
  }

  /** The Lease with us as holder and a fresh renewTime; a new term when we are not already leading on it. */
  private renewed(lease: k8s.V1Lease, sameTerm: boolean): k8s.V1Lease {
    const spec = lease.spec ?? {};
    const now = new k8s.V1MicroTime();
    const holderChanges = spec.holderIdentity !== this.identity;
    return {
      ...lease,
      spec: {
        ...spec,
        holderIdentity: this.identity,
        leaseDurationSeconds: this.leaseSeconds,
        renewTime: now,
        acquireTime: sameTerm ? spec.acquireTime : now,
        leaseTransitions: (spec.leaseTransitions ?? 0) + (holderChanges ? 1 : 0),
      },
    };
  }

  private async write(body: k8s.V1Lease, sentAt: number): Promise<void> {
    const written = await this.api.replaceNamespacedLease({ name: this.name, namespace: this.namespace, body }, this.requestOptions());
    this.succeeded(written, sentAt);
  }

  /** A write that names us holder succeeded: lead (or keep leading) until sentAt + renewDeadline. */
  private succeeded(written: k8s.V1Lease, sentAt: number): void {
    this.observe(written);
    this.ours = written;
    if (this.failing) this.logger?.info('Lease API reachable again');
    this.failing = false;
    if (!this.running) return; // stop() ran while this request was in flight: never lead on it (stop() releases it)
    const remaining = sentAt + this.renewDeadlineMs - performance.now();
    if (remaining <= 0) return; // too old to lead on; the next attempt renews afresh
    clearTimeout(this.stepDownTimer);
    this.stepDownTimer = setTimeout(() => this.loseLeadership('renew-deadline'), remaining);
    this.stepDownTimer.unref();
    if (!this.leading) {
      this.leading = true;
      this.acquiredCount++;
      this.logger?.info({ leaseTransitions: written.spec?.leaseTransitions }, 'started leading');
      void Promise.resolve()
        .then(() => this.onStarted())
        .catch((err: unknown) => this.logger?.error({ err }, 'onStartedLeading failed'));
    }
  }

  private loseLeadership(reason: LeadershipLoss): void {
    clearTimeout(this.stepDownTimer);
    this.stepDownTimer = undefined;
    if (!this.leading) return;
    this.leading = false;
    this.lostCount++;
    this.ours = undefined;
    const log = reason === 'stopped' ? this.logger?.info.bind(this.logger) : this.logger?.warn.bind(this.logger);
    log?.({ reason }, 'stopped leading');
    this.stoppedCallback = Promise.resolve()
      .then(() => this.onStopped())
      .catch((err: unknown) => this.logger?.error({ err }, 'onStoppedLeading failed'));
  }

  /** Notes the Lease's version (restarting the expiry clock when it changed) and returns its holder. */
  private observe(lease: k8s.V1Lease): string {
    const version = lease.metadata?.resourceVersion;
    if (version !== this.observedVersion) {
      this.observedVersion = version;
      this.observedAt = performance.now();
    }
    this.observedHolderValue = lease.spec?.holderIdentity ?? '';
    return this.observedHolderValue;
  }

  private expired(lease: k8s.V1Lease): boolean {
    const seconds = lease.spec?.leaseDurationSeconds ?? this.leaseSeconds;
    return performance.now() > this.observedAt + seconds * 1000;
  }

  /** Clears the holder so that a standby acquires at its next attempt. Best effort, bounded in time. */
  private async release(): Promise<void> {
    const signal = AbortSignal.timeout(this.requestTimeoutMs);
    try {
      const lease = await this.api.readNamespacedLease({ name: this.name, namespace: this.namespace }, withSignal(signal));
      if (lease.spec?.holderIdentity !== this.identity) return;
      const now = new k8s.V1MicroTime();
      const spec = { ...lease.spec, leaseDurationSeconds: 1, renewTime: now, acquireTime: now };
      delete spec.holderIdentity;
      await this.api.replaceNamespacedLease({ name: this.name, namespace: this.namespace, body: { ...lease, spec } }, withSignal(signal));
      this.observedHolderValue = '';
      this.logger?.info('released the Lease');
    } catch (err) {
      this.logger?.warn({ error: describeError(err) }, 'could not release the Lease; a standby takes over when it expires');
    }
  }

  private requestOptions(): k8s.ConfigurationOptions {
    return withSignal(AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.requestTimeoutMs)]));
  }

  private noteFailure(err: unknown): void {
    if (!this.running && err instanceof Error && err.name === 'AbortError') return;
    const fields = { error: describeError(err), leading: this.leading };
    if (!this.failing) this.logger?.warn(fields, 'Lease request failed; retrying');
    else this.logger?.debug(fields, 'Lease request failed; retrying');
    this.failing = true;
  }
}

/**
 * Leadership metrics on a registry the caller owns: quiclb_operator_leader (1 while this replica leads) and
 * quiclb_operator_leadership_changes_total{change="started"|"stopped"}.
 */
export function registerLeaderMetrics(registry: Registry, elector: LeaderElector): void {
  new Gauge({
    name: 'quiclb_operator_leader',
    help: 'Whether this operator replica holds the leader Lease and acts (1) or stands by (0).',
    registers: [registry],
    collect() {
      this.set(elector.isLeader ? 1 : 0);
    },
  });
  new Counter({
    name: 'quiclb_operator_leadership_changes_total',
    help: 'Times this replica started or stopped leading.',
    labelNames: ['change'],
    registers: [registry],
    collect() {
      const t = elector.transitions;
      this.reset();
      this.inc({ change: 'started' }, t.acquired);
      this.inc({ change: 'stopped' }, t.lost);
    },
  });
}
