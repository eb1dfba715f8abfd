/**
 * Where the config server takes its snapshots from: the reconciler (later), a set of standalone YAML files
 * (file-source.ts), or memory (tests). A source holds the desired state of every data plane at one global
 * version; streams only read it, and are woken by a change notification (go-control-plane's cache split:
 * producers set snapshots, streams read them).
 */
import type { DataplaneSnapshot } from '../../lib/config/snapshot.js';

/** Who asks: the data plane's identity (identity.ts: certificate CN and node), and the node its Hello names. */
export interface DataPlaneKey {
  readonly identity: string;
  readonly nodeName: string;
}

/** What one data plane should serve. */
export interface SourceSnapshot {
  /** The source's global version when this was published; increases with every publication. */
  readonly version: number;
  /** Every load balancer the data plane serves (an empty list: serve nothing, unless `retained` names some). */
  readonly loadBalancers: readonly DataplaneSnapshot[];
  /**
   * Load balancers the data plane keeps as it has them (Snapshot.retained): the source cannot say what they should
   * be now. Never also in `loadBalancers`. Absent: none.
   */
  readonly retained?: readonly string[];
}

export interface SnapshotSource {
  /** The current global version (0 before anything was published). */
  version(): number;
  /** What `dataPlane` should serve now, or null when the source has nothing for it yet (nothing is sent). */
  snapshotFor(dataPlane: DataPlaneKey): SourceSnapshot | null;
  /** Calls `listener` after every publication; returns the unsubscribe function. */
  subscribe(listener: (version: number) => void): () => void;
}

/**
 * The next version: greater than `previous` and not below the wall clock in milliseconds, so the first version of
 * a restarted process is newer than anything the previous run published (unless that run published more than one
 * version per millisecond on average, or the clock went back).
 */
export function nextVersion(previous: number, now = Date.now()): number {
  return Math.max(previous + 1, Math.floor(now));
}

/**
 * Desired state: load balancers per data-plane identity (identity.ts), else per node name, else `all`; and per
 * node name the load balancers its data planes keep as they have them (only with a `byNode` entry).
 */
export interface DesiredState {
  readonly all?: readonly DataplaneSnapshot[];
  readonly byNode?: ReadonlyMap<string, readonly DataplaneSnapshot[]>;
  readonly byIdentity?: ReadonlyMap<string, readonly DataplaneSnapshot[]>;
  readonly retainedByNode?: ReadonlyMap<string, readonly string[]>;
}

/** A source held in memory: `publish()` replaces the whole desired state and bumps the version. */
export class InMemorySnapshotSource implements SnapshotSource {
  private current = 0;
  private desired: DesiredState | null = null;
  private readonly listeners = new Set<(version: number) => void>();

  constructor(private readonly clock: () => number = Date.now) {}

  version(): number {
    return this.current;
  }

  /**
   * Replaces the desired state; returns the new version. `desired` may be a function of the new version, for
   * snapshots that carry it (DataplaneSnapshot.version).
   */
  publish(desired: DesiredState | ((version: number) => DesiredState)): number {
    const version = nextVersion(this.current, this.clock());
    this.desired = typeof desired === 'function' ? desired(version) : desired;
    this.current = version;
    for (const l of [...this.listeners]) l(version);
    return version;
  }

  snapshotFor(dataPlane: DataPlaneKey): SourceSnapshot | null {
    const d = this.desired;
    if (d === null) return null;
    const byIdentity = d.byIdentity?.get(dataPlane.identity);
    if (byIdentity !== undefined) return { version: this.current, loadBalancers: byIdentity };
    const byNode = d.byNode?.get(dataPlane.nodeName);
    if (byNode !== undefined) {
      const retained = d.retainedByNode?.get(dataPlane.nodeName);
      return retained !== undefined && retained.length > 0 ? { version: this.current, loadBalancers: byNode, retained } : { version: this.current, loadBalancers: byNode };
    }
    return d.all === undefined ? null : { version: this.current, loadBalancers: d.all };
  }

  subscribe(listener: (version: number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
