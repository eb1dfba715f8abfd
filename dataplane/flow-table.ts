/**
 * Bounded per-flow state with idle expiry and counted eviction, allocation-free on lookups:
 *
 * - FlowTable: one Flow per (listener, client address, client port). A Flow carries the draft's 4-tuple table
 *   entry (`tupleServer`), its small 4-tuple‖SCID table, a one-entry DCID decode cache, and the forwarder's
 *   upstream sockets. Keyed by address string -> (listener << 16 | port) number: no string building per packet.
 * - DcidTable: unroutable DCID -> server (draft §4.3.1), keyed by the DCID's latin1 string.
 *
 * Both keep an intrusive doubly linked list in least-recently-used order, so idle expiry walks only expired
 * entries and eviction of the least recently used entry is O(1).
 */

/** What the tables point at: the router's server record. */
export interface TableServer {
  /** Set when the server left the config: entries pointing at it are ignored. */
  removed: boolean;
}

/** The forwarder's per-(flow, server) upstream, chained on the flow. */
export interface UpstreamLink<S> {
  readonly server: S;
  next: UpstreamLink<S> | null;
}

const SCID_SLOTS = 4;

export class Flow<S extends TableServer = TableServer> {
  /** LRU list links (older, newer). */
  older: Flow<S> | null = null;
  newer: Flow<S> | null = null;
  lastSeen = 0;
  alive = true;
  /** Draft table keyed by 4-tuple: the server the fallback chose for this flow. */
  tupleServer: S | null = null;
  /** Draft table keyed by 4-tuple‖SCID (long headers), a few slots per flow, oldest overwritten. */
  scidKeys: (Uint8Array | null)[] | null = null;
  scidServers: (S | null)[] | null = null;
  scidNext = 0;
  /** One-entry decode cache: the last DCID seen on this flow and where it led (router-private). */
  readonly cacheDcid = new Uint8Array(20);
  cacheLength = -1;
  cacheGeneration = -1;
  cacheKind = 0;
  cacheServer: S | null = null;
  cacheConfigId = -1;
  cacheEntry: DcidEntry<S> | null = null;
  /** The forwarder's upstream sockets of this flow (one per server). */
  upstream: UpstreamLink<S> | null = null;

  constructor(
    readonly address: string,
    readonly port: number,
    readonly listener: number,
    readonly portKey: number,
    readonly ports: Map<number, Flow<S>>,
  ) {}

  /** The 4-tuple‖SCID slot holding the SCID buf[offset, offset+length), or -1. */
  private scidSlot(buf: Uint8Array, offset: number, length: number): number {
    const keys = this.scidKeys;
    if (keys === null) return -1;
    for (let i = 0; i < SCID_SLOTS; i++) {
      const k = keys[i];
      if (k === null || k.length !== length) continue;
      let j = 0;
      while (j < length && k[j] === buf[offset + j]) j++;
      if (j === length) return i;
    }
    return -1;
  }

  /** 4-tuple‖SCID lookup; ignores removed servers. */
  scidLookup(buf: Uint8Array, offset: number, length: number): S | null {
    const i = this.scidSlot(buf, offset, length);
    if (i < 0) return null;
    const s = this.scidServers![i];
    return s !== null && !s.removed ? s : null;
  }

  scidRecord(buf: Uint8Array, offset: number, length: number, server: S): void {
    if (this.scidKeys === null) {
      this.scidKeys = new Array<Uint8Array | null>(SCID_SLOTS).fill(null);
      this.scidServers = new Array<S | null>(SCID_SLOTS).fill(null);
    }
    let slot = this.scidSlot(buf, offset, length);
    if (slot < 0) {
      slot = this.scidNext;
      this.scidNext = (slot + 1) % SCID_SLOTS;
      this.scidKeys[slot] = Uint8Array.prototype.slice.call(buf, offset, offset + length);
    }
    this.scidServers![slot] = server;
  }
}

export type RemovalReason = 'idle' | 'evicted' | 'cleared';

export interface TableCounters {
  created: number;
  expired: number;
  evicted: number;
}

/** Intrusive LRU list helpers shared by both tables. */
interface Linked<T> {
  older: T | null;
  newer: T | null;
  lastSeen: number;
}

class LruList<T extends Linked<T>> {
  oldest: T | null = null;
  newest: T | null = null;

  push(e: T): void {
    e.older = this.newest;
    e.newer = null;
    if (this.newest !== null) this.newest.newer = e;
    else this.oldest = e;
    this.newest = e;
  }

  unlink(e: T): void {
    if (e.older !== null) e.older.newer = e.newer;
    else this.oldest = e.newer;
    if (e.newer !== null) e.newer.older = e.older;
    else this.newest = e.older;
    e.older = null;
    e.newer = null;
  }

  /** Marks `e` most recently used. */
  touch(e: T): void {
    if (this.newest === e) return;
    this.unlink(e);
    this.push(e);
  }
}

/** What both tables share: the LRU list, the bound, idle expiry and counted eviction. */
abstract class LruTable<T extends Linked<T>> {
  protected readonly lru = new LruList<T>();
  readonly counters: TableCounters = { created: 0, expired: 0, evicted: 0 };

  constructor(
    public max: number,
    public idleTimeoutMs: number,
  ) {}

  abstract readonly size: number;

  abstract remove(e: T, reason: RemovalReason): void;

  /** Marks an entry used now. */
  touch(e: T, now: number): void {
    e.lastSeen = now;
    this.lru.touch(e);
  }

  /** Makes room for one more entry: evicts least recently used entries while the table is full (counted). */
  protected makeRoom(): void {
    while (this.size >= this.max && this.lru.oldest !== null) this.evictOldest();
  }

  private evictOldest(): void {
    this.counters.evicted++;
    this.remove(this.lru.oldest!, 'evicted');
  }

  /** Removes entries idle for longer than the timeout; returns how many. */
  expire(now: number): number {
    let n = 0;
    const limit = now - this.idleTimeoutMs;
    while (this.lru.oldest !== null && this.lru.oldest.lastSeen <= limit) {
      this.remove(this.lru.oldest, 'idle');
      n++;
    }
    this.counters.expired += n;
    return n;
  }

  /** Applies a smaller bound immediately (counted as evictions). */
  shrinkTo(max: number): void {
    this.max = max;
    while (this.size > max && this.lru.oldest !== null) this.evictOldest();
  }

  clear(): void {
    while (this.lru.oldest !== null) this.remove(this.lru.oldest, 'cleared');
  }
}

export class FlowTable<S extends TableServer = TableServer> extends LruTable<Flow<S>> {
  private readonly hosts = new Map<string, Map<number, Flow<S>>>();
  size = 0;

  constructor(
    max: number,
    idleTimeoutMs: number,
    private readonly onRemove: (flow: Flow<S>, reason: RemovalReason) => void = () => {},
  ) {
    super(max, idleTimeoutMs);
  }

  get(address: string, port: number, listener: number): Flow<S> | null {
    const ports = this.hosts.get(address);
    if (ports === undefined) return null;
    return ports.get((listener << 16) | port) ?? null;
  }

  /** Creates a flow (evicting the least recently used one when the table is full). */
  create(address: string, port: number, listener: number, now: number): Flow<S> {
    this.makeRoom();
    let ports = this.hosts.get(address);
    if (ports === undefined) {
      ports = new Map();
      this.hosts.set(address, ports);
    }
    const key = (listener << 16) | port;
    const flow = new Flow<S>(address, port, listener, key, ports);
    flow.lastSeen = now;
    ports.set(key, flow);
    this.lru.push(flow);
    this.size++;
    this.counters.created++;
    return flow;
  }

  override remove(flow: Flow<S>, reason: RemovalReason): void {
    if (!flow.alive) return;
    flow.alive = false;
    this.lru.unlink(flow);
    flow.ports.delete(flow.portKey);
    if (flow.ports.size === 0 && this.hosts.get(flow.address) === flow.ports) this.hosts.delete(flow.address);
    this.size--;
    this.onRemove(flow, reason);
  }

  *[Symbol.iterator](): IterableIterator<Flow<S>> {
    for (let f = this.lru.oldest; f !== null; f = f.newer) yield f;
  }
}

export class DcidEntry<S extends TableServer = TableServer> {
  older: DcidEntry<S> | null = null;
  newer: DcidEntry<S> | null = null;
  lastSeen = 0;
  alive = true;
  constructor(
    readonly key: string,
    public server: S,
  ) {}
}

/** Unroutable DCID -> server. */
export class DcidTable<S extends TableServer = TableServer> extends LruTable<DcidEntry<S>> {
  private readonly map = new Map<string, DcidEntry<S>>();

  get size(): number {
    return this.map.size;
  }

  static keyOf(buf: Buffer, offset: number, length: number): string {
    return buf.toString('latin1', offset, offset + length);
  }

  get(key: string): DcidEntry<S> | undefined {
    return this.map.get(key);
  }

  set(key: string, server: S, now: number): DcidEntry<S> {
    const e = this.map.get(key);
    if (e !== undefined) {
      e.server = server;
      this.touch(e, now);
      return e;
    }
    this.makeRoom();
    const n = new DcidEntry<S>(key, server);
    n.lastSeen = now;
    this.map.set(key, n);
    this.lru.push(n);
    this.counters.created++;
    return n;
  }

  override remove(e: DcidEntry<S>): void {
    if (!e.alive) return;
    e.alive = false;
    this.lru.unlink(e);
    this.map.delete(e.key);
  }
}
