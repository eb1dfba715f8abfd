/**
 * Bounded per-flow state with idle expiry and counted eviction, allocation-free on lookups:
 *
 * - FlowTable: one Flow per (listener, client address, client port). A Flow carries the draft's 4-tuple table
 *   entry (`tupleServer`), its small 4-tuple‖SCID table, a one-entry DCID decode cache, and the forwarder's
 *   upstream sockets. Keyed by address string -> (listener << 16 | port) number: no string building per packet.
 * - DcidTable: unroutable DCID -> server (draft §4.3.1), keyed by the DCID's latin1 string.
 *
 * Both tables hold two classes of entries in separate budgets (Linux conntrack's "assured" idea): confirmed
 * entries (a flow whose client proved it receives the backend's answers; a server CID learned from such a flow)
 * and unconfirmed ones (everything new). Unconfirmed entries have their own smaller bound and a shorter idle
 * timeout, and only ever evict each other, so no amount of new or spoofed traffic evicts a confirmed entry.
 * Unconfirmed flows are also limited per client address. Each class keeps an intrusive doubly linked list in
 * least-recently-used order, so idle expiry walks only expired entries and eviction is O(1).
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
/** Longest legal connection ID (RFC 9000 §17.2). */
const MAX_CID = 20;

/** The flows of one client address (per-source accounting of unconfirmed flows). */
export class SourceEntry<S extends TableServer = TableServer> {
  readonly ports = new Map<number, Flow<S>>();
  unconfirmed = 0;
}

export class Flow<S extends TableServer = TableServer> {
  /** LRU list links (older, newer). */
  older: Flow<S> | null = null;
  newer: Flow<S> | null = null;
  lastSeen = 0;
  alive = true;
  /** The client proved it receives the backend's answers (see Router.route): in the protected budget. */
  confirmed = false;
  /** The backend answered this flow at least once. */
  answered = false;
  /** The backend sent a short-header (1-RTT) packet on this flow: it has a connection on this path. */
  answeredShort = false;
  /** SCID of the last long-header reply on this flow (what the client uses as DCID once it has heard it). */
  readonly serverCid = new Uint8Array(MAX_CID);
  serverCidLength = 0;
  /** The last long-header reply had a zero-length SCID (a server that uses zero-length CIDs). */
  zeroLengthServerCid = false;
  /** A server CID learned (unconfirmed) from this flow's replies: confirmed together with the flow. */
  pendingLearned: DcidEntry<S> | null = null;
  /** DCIDs this confirmed flow's client put into the protected DCID budget (bounded, see Router). */
  protectedDcids = 0;
  /** Draft table keyed by 4-tuple: the server the fallback chose for this flow. */
  tupleServer: S | null = null;
  /** Draft table keyed by 4-tuple‖SCID (long headers), a few slots per flow, oldest overwritten. */
  scidKeys: (Uint8Array | null)[] | null = null;
  scidServers: (S | null)[] | null = null;
  scidNext = 0;
  /** One-entry decode cache: the last DCID seen on this flow and where it led (router-private). */
  readonly cacheDcid = new Uint8Array(MAX_CID);
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
    readonly source: SourceEntry<S>,
  ) {}

  /** The flows of this flow's client address, by (listener << 16 | port). */
  get ports(): Map<number, Flow<S>> {
    return this.source.ports;
  }

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

  /** Records the SCID of a long-header reply (no allocation). */
  noteServerCid(buf: Uint8Array, offset: number, length: number): void {
    const n = length > MAX_CID ? MAX_CID : length;
    for (let i = 0; i < n; i++) this.serverCid[i] = buf[offset + i];
    this.serverCidLength = n;
    this.zeroLengthServerCid = n === 0;
  }

  /** Whether buf[offset, offset+length) starts with the recorded server CID (length >= its length). */
  echoesServerCid(buf: Uint8Array, offset: number, available: number): boolean {
    const n = this.serverCidLength;
    if (n === 0 || n > available) return false;
    const c = this.serverCid;
    let i = 0;
    while (i < n && c[i] === buf[offset + i]) i++;
    return i === n;
  }
}

export type RemovalReason = 'idle' | 'evicted' | 'cleared';

export interface TableCounters {
  created: number;
  /** Removed after the idle timeout (both classes). */
  expired: number;
  /** Evicted because a budget was full (both classes). */
  evicted: number;
  /** Entries that moved from the unconfirmed to the confirmed budget. */
  confirmed: number;
  /** Of `evicted`: unconfirmed entries (evicted by other unconfirmed ones). */
  evictedUnconfirmed: number;
  /** Of `expired`: unconfirmed entries. */
  expiredUnconfirmed: number;
  /** New flows refused because their client address had its share of unconfirmed flows (FlowTable only). */
  refusedPerSource: number;
  /** New flows refused by the new-flow rate limit (FlowTable only). */
  refusedRate: number;
}

/** Bounds of the two budgets. */
export interface TableLimits {
  /** Confirmed entries. */
  max: number;
  idleTimeoutMs: number;
  /** Unconfirmed entries (default: max). */
  maxUnconfirmed?: number;
  /** Idle timeout of unconfirmed entries (default: idleTimeoutMs). */
  unconfirmedTimeoutMs?: number;
  /** Unconfirmed flows per client address (FlowTable only; default: no limit). */
  maxUnconfirmedPerSource?: number;
  /** New flows per second (FlowTable only; token bucket with a burst of one second's worth; 0 or absent: no limit). */
  newFlowRate?: number;
}

/** Intrusive LRU list links shared by both tables. */
interface Linked<T> {
  older: T | null;
  newer: T | null;
  lastSeen: number;
  confirmed: boolean;
}

class LruList<T extends Linked<T>> {
  oldest: T | null = null;
  newest: T | null = null;
  size = 0;

  push(e: T): void {
    e.older = this.newest;
    e.newer = null;
    if (this.newest !== null) this.newest.newer = e;
    else this.oldest = e;
    this.newest = e;
    this.size++;
  }

  unlink(e: T): void {
    if (e.older !== null) e.older.newer = e.newer;
    else this.oldest = e.newer;
    if (e.newer !== null) e.newer.older = e.older;
    else this.newest = e.older;
    e.older = null;
    e.newer = null;
    this.size--;
  }

  /** Marks `e` most recently used. */
  touch(e: T): void {
    if (this.newest === e) return;
    this.unlink(e);
    this.push(e);
  }
}

/** What both tables share: the two LRU lists, their bounds, idle expiry and counted eviction. */
abstract class LruTable<T extends Linked<T>> {
  protected readonly confirmedList = new LruList<T>();
  protected readonly unconfirmedList = new LruList<T>();
  readonly counters: TableCounters = { created: 0, expired: 0, evicted: 0, confirmed: 0, evictedUnconfirmed: 0, expiredUnconfirmed: 0, refusedPerSource: 0, refusedRate: 0 };
  max: number;
  idleTimeoutMs: number;
  maxUnconfirmed: number;
  unconfirmedTimeoutMs: number;

  constructor(limits: TableLimits) {
    this.max = limits.max;
    this.idleTimeoutMs = limits.idleTimeoutMs;
    this.maxUnconfirmed = limits.maxUnconfirmed ?? limits.max;
    this.unconfirmedTimeoutMs = limits.unconfirmedTimeoutMs ?? limits.idleTimeoutMs;
  }

  get size(): number {
    return this.confirmedList.size + this.unconfirmedList.size;
  }

  get confirmedCount(): number {
    return this.confirmedList.size;
  }

  get unconfirmedCount(): number {
    return this.unconfirmedList.size;
  }

  abstract remove(e: T, reason: RemovalReason): void;

  protected listOf(e: T): LruList<T> {
    return e.confirmed ? this.confirmedList : this.unconfirmedList;
  }

  /** Marks an entry used now. */
  touch(e: T, now: number): void {
    e.lastSeen = now;
    this.listOf(e).touch(e);
  }

  /** Makes room for one more unconfirmed entry: evicts least recently used unconfirmed entries only (counted). */
  protected makeRoom(): void {
    while (this.unconfirmedList.size >= this.maxUnconfirmed && this.unconfirmedList.oldest !== null) this.evictOldest(this.unconfirmedList);
  }

  /** Evicts the least recently used unconfirmed entry; false when there is none. */
  evictOneUnconfirmed(): boolean {
    if (this.unconfirmedList.oldest === null) return false;
    this.evictOldest(this.unconfirmedList);
    return true;
  }

  /** Makes room for one more confirmed entry: evicts least recently used confirmed entries (counted). */
  protected makeConfirmedRoom(): void {
    while (this.confirmedList.size >= this.max && this.confirmedList.oldest !== null) this.evictOldest(this.confirmedList);
  }

  private evictOldest(list: LruList<T>): void {
    const e = list.oldest!;
    this.counters.evicted++;
    if (!e.confirmed) this.counters.evictedUnconfirmed++;
    this.remove(e, 'evicted');
  }

  /** Moves an unconfirmed entry into the confirmed budget (evicting the least recently used confirmed one when full). */
  confirm(e: T, now: number): void {
    if (e.confirmed) return;
    this.unconfirmedList.unlink(e);
    this.onConfirm(e);
    e.confirmed = true;
    e.lastSeen = now;
    this.makeConfirmedRoom();
    this.confirmedList.push(e);
    this.counters.confirmed++;
  }

  protected onConfirm(_e: T): void {}

  /** Removes entries idle for longer than their class's timeout; returns how many. */
  expire(now: number): number {
    let n = 0;
    const u = this.unconfirmedList;
    const uLimit = now - this.unconfirmedTimeoutMs;
    while (u.oldest !== null && u.oldest.lastSeen <= uLimit) {
      this.remove(u.oldest, 'idle');
      n++;
    }
    this.counters.expiredUnconfirmed += n;
    const c = this.confirmedList;
    const limit = now - this.idleTimeoutMs;
    while (c.oldest !== null && c.oldest.lastSeen <= limit) {
      this.remove(c.oldest, 'idle');
      n++;
    }
    this.counters.expired += n;
    return n;
  }

  /** Applies new bounds; smaller ones immediately (counted as evictions, unconfirmed entries first). */
  setLimits(limits: TableLimits): void {
    this.max = limits.max;
    this.idleTimeoutMs = limits.idleTimeoutMs;
    this.maxUnconfirmed = limits.maxUnconfirmed ?? limits.max;
    this.unconfirmedTimeoutMs = limits.unconfirmedTimeoutMs ?? limits.idleTimeoutMs;
    while (this.unconfirmedList.size > this.maxUnconfirmed && this.unconfirmedList.oldest !== null) this.evictOldest(this.unconfirmedList);
    while (this.confirmedList.size > this.max && this.confirmedList.oldest !== null) this.evictOldest(this.confirmedList);
  }

  /** Applies a smaller bound to both budgets immediately (counted as evictions). */
  shrinkTo(max: number): void {
    this.setLimits({ max, idleTimeoutMs: this.idleTimeoutMs, maxUnconfirmed: Math.min(this.maxUnconfirmed, max), unconfirmedTimeoutMs: this.unconfirmedTimeoutMs });
  }

  clear(): void {
    while (this.unconfirmedList.oldest !== null) this.remove(this.unconfirmedList.oldest, 'cleared');
    while (this.confirmedList.oldest !== null) this.remove(this.confirmedList.oldest, 'cleared');
  }
}

export class FlowTable<S extends TableServer = TableServer> extends LruTable<Flow<S>> {
  private readonly sources = new Map<string, SourceEntry<S>>();
  maxUnconfirmedPerSource: number;
  newFlowRate: number;
  private tokens: number;
  private tokensAt: number;
  /** Why the last create() returned null. */
  refusal: 'source' | 'rate' | null = null;

  /** `limits` or (max, idle timeout): the latter keeps one budget's bounds for both classes. */
  constructor(
    limits: TableLimits | number,
    idleTimeoutMs?: number,
    private readonly onRemove: (flow: Flow<S>, reason: RemovalReason) => void = () => {},
  ) {
    const l = typeof limits === 'number' ? { max: limits, idleTimeoutMs: idleTimeoutMs! } : limits;
    super(l);
    this.maxUnconfirmedPerSource = l.maxUnconfirmedPerSource ?? Infinity;
    this.newFlowRate = l.newFlowRate || Infinity;
    this.tokens = this.newFlowRate;
    this.tokensAt = this.clock();
  }

  /** Clock of the rate limit (ms): real time, finer than the router's coarse clock. */
  private clock: () => number = () => performance.now();

  /** Replaces the rate limit's clock (tests) and refills the bucket. */
  useClock(clock: () => number): void {
    this.clock = clock;
    this.tokens = this.newFlowRate;
    this.tokensAt = clock();
  }

  override setLimits(limits: TableLimits): void {
    this.maxUnconfirmedPerSource = limits.maxUnconfirmedPerSource ?? Infinity;
    this.newFlowRate = limits.newFlowRate || Infinity;
    if (this.tokens > this.newFlowRate) this.tokens = this.newFlowRate;
    super.setLimits(limits);
  }

  /** Takes a token of the new-flow rate limit; false when there is none. */
  private takeToken(): boolean {
    const rate = this.newFlowRate;
    if (rate === Infinity) return true;
    const t = this.clock();
    const tokens = Math.min(rate, this.tokens + ((t - this.tokensAt) * rate) / 1000);
    this.tokensAt = t;
    if (tokens < 1) {
      this.tokens = tokens;
      return false;
    }
    this.tokens = tokens - 1;
    return true;
  }

  get(address: string, port: number, listener: number): Flow<S> | null {
    const source = this.sources.get(address);
    if (source === undefined) return null;
    return source.ports.get((listener << 16) | port) ?? null;
  }

  /**
   * Creates an unconfirmed flow (evicting the least recently used unconfirmed flow when that budget is full).
   * Returns null (reason in `refusal`, counted) when the client address already has its share of unconfirmed flows,
   * or beyond the new-flow rate.
   */
  create(address: string, port: number, listener: number, now: number): Flow<S> | null {
    let source = this.sources.get(address);
    if (source !== undefined && source.unconfirmed >= this.maxUnconfirmedPerSource) {
      this.counters.refusedPerSource++;
      this.refusal = 'source';
      return null;
    }
    if (!this.takeToken()) {
      this.counters.refusedRate++;
      this.refusal = 'rate';
      return null;
    }
    this.makeRoom();
    source = this.sources.get(address); // makeRoom may have removed it
    if (source === undefined) {
      source = new SourceEntry<S>();
      this.sources.set(address, source);
    }
    const key = (listener << 16) | port;
    const flow = new Flow<S>(address, port, listener, key, source);
    flow.lastSeen = now;
    source.ports.set(key, flow);
    source.unconfirmed++;
    this.unconfirmedList.push(flow);
    this.counters.created++;
    return flow;
  }

  protected override onConfirm(flow: Flow<S>): void {
    flow.source.unconfirmed--;
  }

  override remove(flow: Flow<S>, reason: RemovalReason): void {
    if (!flow.alive) return;
    flow.alive = false;
    this.listOf(flow).unlink(flow);
    const source = flow.source;
    if (!flow.confirmed) source.unconfirmed--;
    source.ports.delete(flow.portKey);
    if (source.ports.size === 0 && this.sources.get(flow.address) === source) this.sources.delete(flow.address);
    this.onRemove(flow, reason);
  }

  /** Unconfirmed flows of a client address. */
  unconfirmedOf(address: string): number {
    return this.sources.get(address)?.unconfirmed ?? 0;
  }

  *[Symbol.iterator](): IterableIterator<Flow<S>> {
    for (let f = this.confirmedList.oldest; f !== null; f = f.newer) yield f;
    for (let f = this.unconfirmedList.oldest; f !== null; f = f.newer) yield f;
  }
}

export class DcidEntry<S extends TableServer = TableServer> {
  older: DcidEntry<S> | null = null;
  newer: DcidEntry<S> | null = null;
  lastSeen = 0;
  alive = true;
  confirmed = false;
  constructor(
    readonly key: string,
    public server: S,
  ) {}
}

/** Unroutable DCID -> server. */
export class DcidTable<S extends TableServer = TableServer> extends LruTable<DcidEntry<S>> {
  private readonly map = new Map<string, DcidEntry<S>>();

  /** `limits` or (max, idle timeout). */
  constructor(limits: TableLimits | number, idleTimeoutMs?: number) {
    super(typeof limits === 'number' ? { max: limits, idleTimeoutMs: idleTimeoutMs! } : limits);
  }

  static keyOf(buf: Buffer, offset: number, length: number): string {
    return buf.toString('latin1', offset, offset + length);
  }

  get(key: string): DcidEntry<S> | undefined {
    return this.map.get(key);
  }

  /**
   * Records key -> server. A new entry is unconfirmed unless `confirmed`; an existing one keeps its class (and is
   * confirmed when `confirmed`), so unconfirmed traffic never demotes or evicts a confirmed entry.
   */
  set(key: string, server: S, now: number, confirmed = false): DcidEntry<S> {
    const e = this.map.get(key);
    if (e !== undefined) {
      e.server = server;
      this.touch(e, now);
      if (confirmed && !e.confirmed) this.confirm(e, now);
      return e;
    }
    if (!confirmed) this.makeRoom();
    const n = new DcidEntry<S>(key, server);
    n.lastSeen = now;
    this.map.set(key, n);
    if (confirmed) {
      n.confirmed = true;
      this.makeConfirmedRoom();
      this.confirmedList.push(n);
    } else this.unconfirmedList.push(n);
    this.counters.created++;
    return n;
  }

  override remove(e: DcidEntry<S>): void {
    if (!e.alive) return;
    e.alive = false;
    this.listOf(e).unlink(e);
    this.map.delete(e.key);
  }
}
