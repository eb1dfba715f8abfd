/**
 * Publishes the reconciled load balancers to the config server, per node.
 *
 * Node rule: a data plane gets the load balancers whose `nodes` (spec.nodeSelector matched against the Node
 * objects, minus nodes lost to a port conflict; desired.ts) include the node name of its Hello. Every Node the
 * operator knows gets an entry (possibly an empty list: serve nothing); a data plane naming a node the API server
 * does not know gets nothing at all (it keeps forwarding with its last good snapshot), so a typo in NODE_NAME never
 * tears down listeners.
 *
 * Nothing is published until every load balancer that existed at start has been reconciled once (or the hold
 * ends, `releaseHold()`): a restarted operator must not push a partial set that would close the others' listeners.
 * When the hold ends by timeout, the load balancers still waiting (their reconcile keeps failing: an API write
 * refused, say) are *retained*: each node they select (`retainNodesOf`, every node when that cannot be told) is
 * told to keep them exactly as it has them (Snapshot.retained), since this process does not know their content
 * and dropping them would close their listeners. So is one that existed at start and was reconciled with nothing
 * to publish (settle(): an invalid spec edit, a key Secret gone) before this process published it: as an
 * operator that had published it would, the data planes keep its last good configuration. A retained load
 * balancer stops being retained at its first set() (its content replaces the retention) or remove() (deleted, or
 * its backend Service is another's). Its configs are unknown, so configsAt() holds none for it in the versions that
 * retain it: an ACK of such a version promotes nothing of it. The nodes it is kept on follow its spec and the
 * nodes' labels: refreshRetained(), after every reconcile, publishes when they changed.
 *
 * A load balancer's content is compared without its version: an unchanged one publishes nothing new. Per version,
 * it remembers each load balancer's config ids and fingerprints (what an ACK of that version means for rotation)
 * and the correlation id of the reconcile that caused it, for the last HISTORY versions.
 */
import type { Logger } from 'pino';
import { snapshotToJson, type DataplaneSnapshot } from '../../lib/config/snapshot.js';
import type { InMemorySnapshotSource } from '../config-server/source.js';
import { configFingerprint } from '../rotation/keys.js';

const HISTORY = 256;

interface Entry {
  readonly snapshot: DataplaneSnapshot;
  readonly canonical: string;
  readonly nodes: readonly string[];
  /** The global version at which this content was first published (0 while held). */
  version: number;
}

export interface ConfigAck {
  readonly configId: number;
  readonly fingerprint: string;
}

export class SnapshotPublisher {
  private readonly entries = new Map<string, Entry>();
  private nodes: readonly string[] = [];
  private readonly waitingFor: Set<string>;
  /** Keys the hold's end found still waiting: data planes keep them as they have them. */
  private readonly retained = new Set<string>();
  /** Keys that existed at start and that this process has neither set nor removed yet. */
  private readonly unpublishedInitial: Set<string>;
  /** The retained keys per node in the last publication (retainedSignature), to see when they move. */
  private publishedRetained = '[]';
  private held: boolean;
  private readonly history = new Map<number, { configs: Map<string, ConfigAck[]>; correlationIds: string[] }>();
  private pendingCorrelation: string[] = [];

  constructor(
    private readonly source: InMemorySnapshotSource,
    private readonly logger: Logger,
    /** Load balancer keys that exist at start: publishing waits until each was set or removed. */
    initialKeys: readonly string[],
    /** The nodes a retained load balancer is kept on (asked at every publication); null: every node. */
    private readonly retainNodesOf: (key: string) => readonly string[] | null = () => null,
  ) {
    this.waitingFor = new Set(initialKeys);
    this.unpublishedInitial = new Set(initialKeys);
    this.held = this.waitingFor.size > 0;
  }

  get isHeld(): boolean {
    return this.held;
  }

  /** How many load balancers the data planes are told to keep as they have them. */
  get retainedCount(): number {
    return this.retained.size;
  }

  /** The node names the API server knows. */
  setNodes(names: readonly string[]): void {
    const sorted = [...names].sort();
    if (sorted.join('\0') === this.nodes.join('\0')) return;
    this.nodes = sorted;
    this.publish('nodes changed');
  }

  /** Sets one load balancer; returns the version its current content was published at (0 while held). */
  set(key: string, snapshot: DataplaneSnapshot, nodes: readonly string[], correlationId: string): number {
    const canonical = JSON.stringify(snapshotToJson({ ...snapshot, version: 0 }));
    const prev = this.entries.get(key);
    this.waitingFor.delete(key);
    this.unpublishedInitial.delete(key);
    this.endRetention(key, 'reconciled');
    if (prev && prev.canonical === canonical && prev.nodes.join('\0') === [...nodes].sort().join('\0')) {
      this.maybeRelease();
      return prev.version;
    }
    const entry: Entry = { snapshot, canonical, nodes: [...nodes].sort(), version: 0 };
    this.entries.set(key, entry);
    this.pendingCorrelation.push(correlationId);
    if (!this.maybeRelease()) this.publish(key);
    return entry.version;
  }

  /** Drops one load balancer (deleted, or no longer buildable); returns the version published (0 while held or unchanged). */
  remove(key: string, correlationId: string): number {
    this.waitingFor.delete(key);
    this.unpublishedInitial.delete(key);
    const wasRetained = this.endRetention(key, 'removed');
    if (!this.entries.delete(key)) {
      if (wasRetained) {
        this.pendingCorrelation.push(correlationId);
        return this.publish(key);
      }
      this.maybeRelease();
      return 0;
    }
    this.pendingCorrelation.push(correlationId);
    if (this.maybeRelease()) return this.source.version();
    return this.publish(key);
  }

  /**
   * `key` was reconciled but has nothing to publish (invalid spec, no key yet): stop waiting for it. What was
   * published of it stays; one that existed at start and that this process has not published is retained.
   */
  settle(key: string): void {
    if (this.unpublishedInitial.has(key) && !this.retained.has(key)) {
      this.retained.add(key);
      this.logger.warn({ qlb: key }, 'load balancer reconciled with nothing to publish before this process published it: data planes keep it as they have it');
      if (this.waitingFor.delete(key)) {
        if (!this.maybeRelease()) this.publish(key);
      } else this.publish(key);
      return;
    }
    if (this.waitingFor.delete(key)) this.maybeRelease();
  }

  /** Publishes when the nodes a retained load balancer is kept on changed (its spec, the nodes' labels). */
  refreshRetained(): void {
    if (this.held || (this.retained.size === 0 && this.publishedRetained === '[]')) return;
    if (retainedSignature(this.retainedByNode(new Set(this.nodes))) !== this.publishedRetained) this.publish('retained load balancers moved');
  }

  /**
   * Ends the start-up hold (e.g. after a timeout) and publishes what there is; the load balancers not reconciled
   * yet are retained.
   */
  releaseHold(): void {
    if (!this.held) return;
    this.held = false;
    for (const k of this.waitingFor) this.retained.add(k);
    this.waitingFor.clear();
    if (this.retained.size > 0) {
      this.logger.warn(
        { retained: [...this.retained].sort(), count: this.retained.size },
        'start-up hold ended before these load balancers were reconciled: data planes keep them as they have them until they are',
      );
    }
    this.publish('start-up hold ended');
  }

  /** Stops retaining `key`; true when it was retained (the caller publishes). */
  private endRetention(key: string, why: string): boolean {
    if (!this.retained.delete(key)) return false;
    this.logger.info({ qlb: key, why, stillRetained: this.retained.size }, 'load balancer no longer retained');
    return true;
  }

  /** Config ids and fingerprints of `key` in `version`, or null when that version is not remembered. */
  configsAt(version: number, key: string): readonly ConfigAck[] | null {
    const h = this.history.get(version);
    if (!h) return null;
    return h.configs.get(key) ?? [];
  }

  correlationIdsOf(version: number): readonly string[] {
    return this.history.get(version)?.correlationIds ?? [];
  }

  /** The version at which `key`'s current content was published, or null when it is not published. */
  versionOf(key: string): number | null {
    const e = this.entries.get(key);
    return e && e.version > 0 ? e.version : null;
  }

  private maybeRelease(): boolean {
    if (this.held && this.waitingFor.size === 0) {
      this.held = false;
      this.publish('start-up set complete');
      return true;
    }
    return false;
  }

  private retainedByNode(known: ReadonlySet<string>): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const key of [...this.retained].sort()) {
      for (const n of this.retainNodesOf(key) ?? this.nodes) {
        if (!known.has(n)) continue;
        const list = out.get(n);
        if (list) list.push(key);
        else out.set(n, [key]);
      }
    }
    return out;
  }

  private publish(why: string): number {
    if (this.held) return 0;
    const correlationIds = this.pendingCorrelation;
    this.pendingCorrelation = [];
    const version = this.source.publish((v) => {
      const byNode = new Map<string, DataplaneSnapshot[]>(this.nodes.map((n) => [n, []]));
      for (const e of this.entries.values()) {
        const s = { ...e.snapshot, version: v };
        for (const n of e.nodes) byNode.get(n)?.push(s);
      }
      for (const list of byNode.values()) list.sort((a, b) => (a.name < b.name ? -1 : 1));
      const retainedByNode = this.retainedByNode(new Set(byNode.keys()));
      this.publishedRetained = retainedSignature(retainedByNode);
      return { byNode, retainedByNode };
    });
    const configs = new Map<string, ConfigAck[]>();
    for (const [key, e] of this.entries) {
      if (e.version === 0) e.version = version;
      configs.set(key, e.snapshot.configs.map((c) => ({ configId: c.config.configId, fingerprint: configFingerprint(c.config) })));
    }
    this.history.set(version, { configs, correlationIds });
    for (const v of this.history.keys()) {
      if (this.history.size <= HISTORY) break;
      this.history.delete(v);
    }
    this.logger.info({ version, why, correlationIds, loadBalancers: this.entries.size, retained: this.retained.size, nodes: this.nodes.length }, 'snapshot published');
    return version;
  }
}

function retainedSignature(byNode: ReadonlyMap<string, readonly string[]>): string {
  return JSON.stringify([...byNode].sort(([a], [b]) => (a < b ? -1 : 1)));
}
