/**
 * The load balancers a snapshot asks for, each with its engine (data plane) and its health checker, and the
 * all-or-nothing change from one snapshot to the next: new load balancers start, running ones release the ports
 * they hand over to another one (LbEngine.release: the flows on those ports end), the others apply their new
 * snapshot (flows kept), the ones that disappeared stop. If any step fails, what was done is undone (moved ports
 * bound again by their previous holder) and the previous snapshot stays in force everywhere.
 *
 * Health rule (docs/config-channel.md): a server's health in the fallback pool is the operator's verdict
 * (SnapshotServer.verdict) while followVerdicts(lb) (the operator is connected, its stream brought the snapshot in
 * force, and that snapshot described this load balancer rather than retaining it) and the snapshot carries one;
 * otherwise this node's own probe result.
 */
import type { Registry } from 'prom-client';
import { formatSocketAddress } from '../../lib/config/address.js';
import type { DataplaneSnapshot, SnapshotServer } from '../../lib/config/snapshot.js';
import { HealthChecker, type TargetState } from '../health.js';
import type { ListenLocks } from '../listen-lock.js';
import type { Logger } from '../logging.js';
import type { HealthState } from '../router.js';
import type { LbEngine } from './engines.js';

export interface LoadBalancer {
  readonly name: string;
  snapshot: DataplaneSnapshot;
  engine: LbEngine;
  readonly checker: HealthChecker;
  /** Health last given to the engine, per server of the snapshot in force (servers that left are dropped). */
  readonly pushed: Map<string, HealthState>;
}

/** Why a snapshot could not be put in force: the wire field (as a Nack carries it) and a message. */
export interface ApplyFailure {
  readonly field: string;
  readonly message: string;
}

export interface LoadBalancerSetOptions {
  /** `health` is the load balancer's `pushed` map: the engine may read it, never write it. */
  readonly makeEngine: (name: string, health: ReadonlyMap<string, HealthState>) => LbEngine;
  readonly logger: Logger;
  readonly registry: Registry;
  /**
   * True while the operator's verdicts rule for load balancer `lb` (connected, its current stream brought the
   * snapshot in force, and that snapshot did not merely retain `lb`: a retained one's verdicts are as old as it).
   */
  readonly followVerdicts: (lb: string) => boolean;
  /**
   * Locks of the listen addresses (dataplane/listen-lock.ts): another quiclb instance on this host serving one of
   * them (worker processes bind with SO_REUSEPORT, so the kernel would let both share it) makes the snapshot fail.
   */
  readonly listenLocks?: ListenLocks;
}

/** A bind failure of the data plane ("cannot listen on ADDR: CODE") -> the listen entry's wire path. */
function failureField(index: number, s: DataplaneSnapshot, message: string): string {
  const m = /cannot listen on (\S+): /.exec(message);
  if (m) {
    const j = s.listen.findIndex((a) => formatSocketAddress(a) === m[1]);
    if (j >= 0) return `load_balancers[${index}].listen[${j}]`;
  }
  return `load_balancers[${index}]`;
}

export class LoadBalancerSet {
  private readonly lbs = new Map<string, LoadBalancer>();
  private consistentState = true;

  constructor(private readonly options: LoadBalancerSetOptions) {}

  /**
   * False after a failed apply() whose rollback did not fully succeed (a step failed: some load balancer may not run
   * its previous snapshot, a moved port may be unbound), until an apply() succeeds: the caller must then apply its
   * next snapshot even if it equals the one it believes in force.
   */
  get consistent(): boolean {
    return this.consistentState;
  }

  list(): LoadBalancer[] {
    return [...this.lbs.values()];
  }

  get(name: string): LoadBalancer | undefined {
    return this.lbs.get(name);
  }

  /**
   * Puts `next` in force (its order is the wire order, for error paths). Resolves null on success, else the
   * failure, with the previous load balancers running as before. A load balancer whose entry is the very snapshot
   * object it runs (a retained one, Snapshot.retained) is left as it is: no apply, its checker untouched.
   */
  async apply(next: readonly DataplaneSnapshot[]): Promise<ApplyFailure | null> {
    const { logger, listenLocks } = this.options;
    const inForce = this.list().flatMap((lb) => lb.snapshot.listen);
    const lockFailure = this.lockListenAddresses(next);
    if (lockFailure !== null) return lockFailure;
    const wanted = new Set(next.map((s) => s.name));
    const claimed = new Set(next.flatMap((s) => s.listen.filter((a) => a.port !== 0).map(formatSocketAddress)));
    const removed = this.list().filter((lb) => !wanted.has(lb.name));
    // Load balancers that go away but hold an address another one now wants are stopped first; the rest last.
    const stopFirst = removed.filter((lb) => lb.snapshot.listen.some((a) => a.port !== 0 && claimed.has(formatSocketAddress(a))));
    const stopLast = removed.filter((lb) => !stopFirst.includes(lb));
    // New ones that bind nothing an existing one holds go first: if one cannot bind (a port taken on the host), the
    // snapshot is rejected before any running load balancer was touched (a rollback re-binds moved ports, and
    // closing a listener drops its flows). Then running ones release the addresses they give up to another one (two
    // that swap ports would each find the other's port still bound), then existing ones that give up an address,
    // then the rest.
    const held = new Set(inForce.filter((a) => a.port !== 0).map(formatSocketAddress));
    const releases = (s: DataplaneSnapshot, lb: LoadBalancer) =>
      lb.snapshot.listen.some((a) => a.port !== 0 && !s.listen.some((b) => formatSocketAddress(b) === formatSocketAddress(a)));
    const rank = ({ s, lb }: { s: DataplaneSnapshot; lb: LoadBalancer | undefined }) =>
      lb === undefined ? (s.listen.some((a) => held.has(formatSocketAddress(a))) ? 2 : 0) : releases(s, lb) ? 1 : 2;
    const steps = next
      .map((s, index) => ({ s, index, lb: this.lbs.get(s.name) }))
      .filter(({ s, lb }) => lb === undefined || lb.snapshot !== s)
      .sort((a, b) => rank(a) - rank(b));
    const firstRunning = steps.findIndex((st) => rank(st) > 0);
    const claimedBy = new Map<string, string>();
    for (const s of next) for (const a of s.listen) if (a.port !== 0) claimedBy.set(formatSocketAddress(a), s.name);
    const handOver = steps.flatMap(({ s, index, lb }) => {
      if (lb === undefined) return [];
      const wanted = new Set(s.listen.map(formatSocketAddress));
      const addresses = lb.snapshot.listen.filter((a) => {
        const k = formatSocketAddress(a);
        return a.port !== 0 && !wanted.has(k) && claimedBy.has(k) && claimedBy.get(k) !== lb.name;
      });
      return addresses.length > 0 ? [{ s, index, lb, addresses }] : [];
    });
    /** Re-applied load balancers and the held addresses they took over, released first in a rollback. */
    const tookOver: { lb: LoadBalancer; addresses: DataplaneSnapshot['listen'] }[] = [];

    const undo: (() => Promise<void>)[] = [];
    const started: LoadBalancer[] = [];
    const rollback = async () => {
      // Moved ports go back: whoever took one lets go of it before its previous holder binds it again.
      for (const { lb, addresses } of tookOver) {
        try {
          await lb.engine.release(addresses);
        } catch (e) {
          this.consistentState = false;
          logger.error({ lb: lb.name, error: (e as Error).message }, 'rollback step failed');
        }
      }
      for (const u of undo.reverse()) {
        try {
          await u();
        } catch (e) {
          this.consistentState = false;
          logger.error({ error: (e as Error).message }, 'rollback step failed');
        }
      }
    };
    try {
      for (const lb of stopFirst) {
        await lb.engine.stop();
        undo.push(async () => {
          const engine = this.options.makeEngine(lb.name, lb.pushed);
          await engine.start(lb.snapshot);
          lb.engine = engine;
          lb.pushed.clear();
          this.lbs.set(lb.name, lb);
          this.syncHealth(lb);
        });
        this.lbs.delete(lb.name);
      }
    } catch (e) {
      await rollback();
      listenLocks?.retain(inForce);
      return { field: '', message: (e as Error).message };
    }
    const releaseHandedOver = async (): Promise<ApplyFailure | null> => {
      // Flows on a released address end: its clients' datagrams go to the load balancer that binds it next.
      for (const h of handOver) {
        try {
          await h.lb.engine.release(h.addresses);
        } catch (e) {
          await rollback();
          listenLocks?.retain(inForce);
          return { field: `load_balancers[${h.index}]`, message: (e as Error).message };
        }
        // Only these: an address released later (a rollback releasing what it took over) may be served by another.
        undo.push(() => h.lb.engine.restore(h.addresses));
      }
      return null;
    };
    for (const [i, { s, index, lb }] of steps.entries()) {
      if (i === firstRunning) {
        const failure = await releaseHandedOver();
        if (failure !== null) return failure;
      }
      try {
        if (lb) {
          const prev = lb.snapshot;
          await lb.engine.apply(s);
          const before = new Set(prev.listen.map(formatSocketAddress));
          const gained = s.listen.filter((a) => a.port !== 0 && !before.has(formatSocketAddress(a)) && held.has(formatSocketAddress(a)));
          if (gained.length > 0) tookOver.push({ lb, addresses: gained });
          // Verdicts of the new snapshot at once (its new servers start as 'unknown', which counts as healthy).
          lb.snapshot = s;
          this.syncHealth(lb);
          undo.push(async () => {
            try {
              await lb.engine.apply(prev);
            } catch (e) {
              // Its state is unknown (a worker pool may have rolled some workers back to `s` minus what it released):
              // it starts over from `prev`, as a load balancer stopped first comes back.
              logger.error({ lb: lb.name, error: (e as Error).message }, 'rollback to the previous snapshot failed; restarting the load balancer with it');
              await this.restartEngine(lb, prev);
              return;
            }
            lb.snapshot = prev;
            this.syncHealth(lb);
          });
        } else {
          const pushed = new Map<string, HealthState>();
          const engine = this.options.makeEngine(s.name, pushed);
          try {
            await engine.start(s);
          } catch (e) {
            await engine.stop().catch(() => {});
            throw e;
          }
          const checker = new HealthChecker(s.health, logger, s.name, this.options.registry);
          const created: LoadBalancer = { name: s.name, snapshot: s, engine, checker, pushed };
          this.syncHealth(created);
          started.push(created);
          undo.push(async () => {
            await checker.stop();
            await engine.stop();
          });
        }
      } catch (e) {
        await rollback();
        listenLocks?.retain(inForce);
        const message = (e as Error).message;
        return { field: failureField(index, s, message), message };
      }
    }
    // Committed: nothing below fails on the data path.
    for (const lb of started) {
      lb.checker.on('change', () => this.syncHealth(lb));
      lb.checker.update(lb.snapshot.servers, lb.snapshot.health);
      lb.checker.start();
      this.lbs.set(lb.name, lb);
    }
    for (const { s, lb } of steps) if (lb) lb.checker.update(s.servers, s.health);
    for (const lb of [...stopFirst, ...stopLast]) {
      this.lbs.delete(lb.name);
      try {
        await lb.checker.stop();
        if (stopLast.includes(lb)) await lb.engine.stop();
        logger.info({ lb: lb.name }, 'load balancer removed');
      } catch (e) {
        // The snapshot is in force whatever this one's stop did: failing here would leave it applied but unanswered.
        logger.error({ lb: lb.name, error: (e as Error).message }, 'load balancer removed, but it did not stop cleanly');
      }
    }
    this.syncAllHealth();
    listenLocks?.retain(next.flatMap((s) => s.listen));
    this.consistentState = true;
    return null;
  }

  /**
   * Stops a load balancer's engine and starts a new one with `s` (a rollback step). If the new one cannot start,
   * the load balancer is dropped (it serves nothing: a later apply() starts it as a new one), the set is marked
   * inconsistent, and this throws.
   */
  private async restartEngine(lb: LoadBalancer, s: DataplaneSnapshot): Promise<void> {
    await lb.engine.stop().catch((e: Error) => this.options.logger.error({ lb: lb.name, error: e.message }, 'load balancer did not stop cleanly'));
    const engine = this.options.makeEngine(lb.name, lb.pushed);
    try {
      await engine.start(s);
    } catch (e) {
      await engine.stop().catch(() => {});
      this.lbs.delete(lb.name);
      await lb.checker.stop().catch(() => {});
      this.consistentState = false;
      throw e;
    }
    lb.engine = engine;
    lb.snapshot = s;
    lb.pushed.clear();
    this.syncHealth(lb);
  }

  /** Takes the locks of every listen address of `next` (those held stay held); on a conflict, the failure. */
  private lockListenAddresses(next: readonly DataplaneSnapshot[]): ApplyFailure | null {
    const locks = this.options.listenLocks;
    if (locks === undefined) return null;
    for (const [i, s] of next.entries()) {
      for (const [j, a] of s.listen.entries()) {
        try {
          locks.acquire([a]);
        } catch (e) {
          locks.retain(this.list().flatMap((lb) => lb.snapshot.listen));
          return { field: `load_balancers[${i}].listen[${j}]`, message: (e as Error).message };
        }
      }
    }
    return null;
  }

  /** The health a server should have in the fallback pool now (the rule above). */
  effectiveHealth(lb: LoadBalancer, server: SnapshotServer, local: Map<string, HealthState>): HealthState {
    if (server.verdict !== undefined && this.options.followVerdicts(lb.name)) return server.verdict;
    return local.get(server.name) ?? 'unknown';
  }

  /** Gives every engine the health of its servers under the rule (after a connect, disconnect or snapshot). */
  syncAllHealth(): void {
    for (const lb of this.lbs.values()) this.syncHealth(lb);
  }

  private syncHealth(lb: LoadBalancer): void {
    const local = lb.checker.states();
    const names = new Set<string>();
    for (const srv of lb.snapshot.servers) {
      names.add(srv.name);
      const h = this.effectiveHealth(lb, srv, local);
      if (lb.pushed.get(srv.name) === h) continue;
      lb.pushed.set(srv.name, h);
      lb.engine.setHealth(srv.name, h);
      this.options.logger.debug({ lb: lb.name, server: srv.name, state: h, verdict: srv.verdict ?? null, probe: local.get(srv.name) ?? 'unknown' }, 'server health set');
    }
    for (const n of lb.pushed.keys()) if (!names.has(n)) lb.pushed.delete(n);
  }

  /** Probe states of every server of every load balancer. */
  probeStates(): { lb: string; target: TargetState }[] {
    return this.list().flatMap((lb) => lb.checker.targetStates().map((target) => ({ lb: lb.name, target })));
  }

  /** Stops every load balancer (one that fails to stop is logged; the others still stop). */
  async stopAll(): Promise<void> {
    for (const lb of this.list()) {
      try {
        await lb.checker.stop();
        await lb.engine.stop();
      } catch (e) {
        this.options.logger.error({ lb: lb.name, error: (e as Error).message }, 'load balancer did not stop cleanly');
      }
    }
    this.lbs.clear();
    this.options.listenLocks?.releaseAll();
  }
}
