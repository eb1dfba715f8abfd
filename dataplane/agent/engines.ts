/**
 * How one load balancer's data plane runs in the node agent: in this process (a Dataplane), or in N worker
 * processes sharing its ports with SO_REUSEPORT (a WorkerPool, as standalone `workers: N`). Either way without
 * health probes of its own: the agent probes (one HealthChecker per load balancer) and sets each server's health.
 */
import type { Registry } from 'prom-client';
import { formatSocketAddress } from '../../lib/config/address.js';
import type { DataplaneSnapshot, SocketAddress } from '../../lib/config/snapshot.js';
import { Dataplane } from '../dataplane.js';
import type { Logger } from '../logging.js';
import type { MetricsJson } from '../metrics-carry.js';
import type { HealthState } from '../router.js';
import { WorkerPool } from '../workers.js';

export interface LbEngine {
  start(s: DataplaneSnapshot): Promise<void>;
  apply(s: DataplaneSnapshot): Promise<void>;
  /**
   * Closes the listeners of these addresses before apply() of a snapshot that drops them, so that another load
   * balancer can bind them first; the flows on them end. The snapshot in force stays; restore() binds them again.
   */
  release(addresses: readonly SocketAddress[]): Promise<void>;
  /** Binds again these listen addresses (by default every one) of the snapshot in force that release() closed. */
  restore(addresses?: readonly SocketAddress[]): Promise<void>;
  stop(): Promise<void>;
  /** Bound listen addresses, in the snapshot's order. */
  addresses(): SocketAddress[];
  setHealth(server: string, state: HealthState): void;
  readiness(): { ready: number; total: number };
  /** Metrics of worker processes (in-process engines register on the agent's registry instead). */
  workerMetrics(): Promise<MetricsJson[]>;
}

export class InProcessEngine implements LbEngine {
  readonly dataplane: Dataplane;
  constructor(logger: Logger, registry: Registry, upstreamPortSeed?: Uint8Array) {
    this.dataplane = new Dataplane({ logger, registry, healthChecks: false, ...(upstreamPortSeed ? { upstreamPortSeed } : {}) });
  }
  start(s: DataplaneSnapshot) {
    return this.dataplane.start(s);
  }
  apply(s: DataplaneSnapshot) {
    return this.dataplane.apply(s);
  }
  release(addresses: readonly SocketAddress[]) {
    return this.dataplane.releaseListeners(addresses);
  }
  restore(addresses?: readonly SocketAddress[]) {
    if (addresses === undefined) return this.dataplane.restoreListeners();
    const keys = new Set(addresses.map(formatSocketAddress));
    return this.dataplane.restoreListeners((this.dataplane.currentSnapshot?.listen ?? []).filter((a) => !keys.has(formatSocketAddress(a))));
  }
  stop() {
    return this.dataplane.stop();
  }
  addresses() {
    return this.dataplane.addresses();
  }
  setHealth(server: string, state: HealthState) {
    this.dataplane.setServerHealth(server, state);
  }
  readiness() {
    return { ready: 1, total: 1 };
  }
  workerMetrics() {
    return Promise.resolve([]);
  }
}

export class WorkerEngine implements LbEngine {
  private readonly pool: WorkerPool;
  /** `health`: what was last set per server of the snapshot in force (kept by the caller), for (re)started workers. */
  constructor(count: number, logger: Logger, logLevel: () => string, health: ReadonlyMap<string, HealthState>, upstreamPortSeed?: Uint8Array) {
    this.pool = new WorkerPool({ count, logger, logLevel, health: () => new Map(health), ...(upstreamPortSeed ? { upstreamPortSeed } : {}) });
  }
  async start(s: DataplaneSnapshot) {
    try {
      await this.pool.start(s);
    } catch (e) {
      await this.pool.stop(); // workers that did start
      throw e;
    }
  }
  apply(s: DataplaneSnapshot) {
    return this.pool.apply(s);
  }
  release(addresses: readonly SocketAddress[]) {
    return this.pool.release(addresses);
  }
  restore(addresses?: readonly SocketAddress[]) {
    return this.pool.restore(addresses);
  }
  stop() {
    return this.pool.stop();
  }
  addresses() {
    return this.pool.addresses();
  }
  setHealth(server: string, state: HealthState) {
    this.pool.broadcastHealth(server, state);
  }
  readiness() {
    return { ready: this.pool.readyCount, total: this.pool.count };
  }
  workerMetrics() {
    return this.pool.workerMetrics();
  }
}
