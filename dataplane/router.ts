/**
 * Routing decisions of the data plane, socket-free. Routing mode 'quic-lb' (the default) follows draft-21 §4.2:
 *   1. routable DCID (live config id, known server ID) -> that server;
 *   2. long header: 4-tuple‖SCID table;  3. DCID table (short headers: at the guessed DCID length, then at the
 *      lengths of server CIDs learned from replies);  4. 4-tuple table;
 *   5. fallback: weighted rendezvous hash of the client address over servers accepting new connections,
 *      recorded in the 4-tuple, DCID and (long header) 4-tuple‖SCID tables.
 * Routing mode '4-tuple' ignores connection IDs (the packet is not parsed): the 4-tuple table, else the fallback
 * (the draft's baseline, §4.3.1), recorded in the 4-tuple table; counted as table/fallback, never cid.
 *
 * Hot path: route() allocates nothing for packets routed by CID or by the flow's cached decision; it reuses one
 * QuicHeader and one DecodeResult, keeps counters in typed arrays, never logs and never throws for any input.
 */
import { parseQuicHeader, QuicHeader, type HeaderError } from '../lib/quic/header.js';
import { cidLength, UNROUTABLE_CONFIG_ID } from '../lib/quiclb/config.js';
import { CidDecoder, DecodeResult } from '../lib/quiclb/decoder.js';
import { DEFAULT_ROUTING, effectiveFlowSettings, serverIdFor, type DataplaneSnapshot, type RoutingMode, type ServerState, type SocketAddress } from '../lib/config/snapshot.js';
import { clientHash, FallbackPool, murmur3 } from './fallback.js';
import { DcidEntry, DcidTable, Flow, FlowTable, type RemovalReason, type TableLimits } from './flow-table.js';

export const OUTCOMES = ['cid', 'table', 'fallback'] as const;
export type Outcome = (typeof OUTCOMES)[number] | 'drop';
export const OUTCOME_CID = 0;
export const OUTCOME_TABLE = 1;
export const OUTCOME_FALLBACK = 2;
export const OUTCOME_DROP = 3;

export const TABLES = ['tuple_scid', 'dcid', 'tuple'] as const;
const TABLE_SCID = 0;
const TABLE_DCID = 1;
const TABLE_TUPLE = 2;

/** Why a DCID did not route by itself (the packet then goes through the tables and the fallback). */
export const UNROUTABLE_REASONS = ['reserved', 'unknown_config', 'too_short', 'unknown_server', 'empty_dcid'] as const;
const UNR_RESERVED = 0;
const UNR_UNKNOWN_CONFIG = 1;
const UNR_TOO_SHORT = 2;
const UNR_UNKNOWN_SERVER = 3;
const UNR_EMPTY = 4;

/** Why a datagram was dropped. The first five are malformed headers (lib/quic/header.ts). */
export const DROP_REASONS = [
  'empty',
  'truncated',
  'dcid_too_long',
  'scid_too_long',
  'short_dcid_unavailable',
  'no_server',
  'upstream_not_ready',
  'internal_error',
  'source_flow_limit',
  'upstream_socket_limit',
  'new_flow_rate',
] as const;
export type DropReason = (typeof DROP_REASONS)[number];
export const DROP_EMPTY = 0;
export const DROP_TRUNCATED = 1;
export const DROP_DCID_TOO_LONG = 2;
export const DROP_SCID_TOO_LONG = 3;
export const DROP_SHORT_DCID = 4;
export const DROP_NO_SERVER = 5;
export const DROP_UPSTREAM_NOT_READY = 6;
export const DROP_INTERNAL = 7;
/** A new flow from a client address that already has its share of unconfirmed flows. */
export const DROP_SOURCE_FLOW_LIMIT = 8;
/** A new upstream socket beyond the process's socket budget, with no unconfirmed flow left to evict. */
export const DROP_UPSTREAM_SOCKET_LIMIT = 9;
/** A new flow beyond flows.newFlowRate. */
export const DROP_NEW_FLOW_RATE = 10;

/** Client-chosen DCIDs one confirmed flow may put into the protected DCID budget (its connection's CIDs). */
const PROTECTED_DCIDS_PER_FLOW = 8;

function headerDrop(e: HeaderError): number {
  switch (e) {
    case 'empty':
      return DROP_EMPTY;
    case 'truncated':
      return DROP_TRUNCATED;
    case 'dcid-too-long':
      return DROP_DCID_TOO_LONG;
    case 'scid-too-long':
      return DROP_SCID_TOO_LONG;
    default:
      return DROP_SHORT_DCID;
  }
}

/** Cache kinds of Flow.cacheKind. */
const CACHE_NONE = 0;
const CACHE_CID = 1;
/** A DCID-table entry found at the DCID length of the header (exact for long headers, guessed for short). */
const CACHE_DCID_TABLE = 2;
/** A DCID-table entry found by a short header at a learned server CID length (cacheLength) other than the guess. */
const CACHE_DCID_LEARNED = 3;

/** Longest legal connection ID (RFC 9000 §17.2). */
const MAX_CID = 20;
/** Learned lengths 1..7 (bits of Router.learnedLengths): too short to rule out a chance match of a prefix. */
const SHORT_LEARNED = 0xfe;

export type HealthState = 'unknown' | 'healthy' | 'unhealthy';

/** The router's record of a configured server; the same object while the server stays in the config. */
export class RouterServer {
  removed = false;
  health: HealthState = 'unknown';
  seed: number;
  /** Client -> server datagrams routed to it / server -> client datagrams relayed from it. */
  packets = 0;
  bytes = 0;
  replyPackets = 0;
  replyBytes = 0;

  constructor(
    readonly name: string,
    public serverId: Uint8Array,
    public address: SocketAddress,
    public weight: number,
    public state: ServerState,
  ) {
    this.seed = murmur3(serverId);
  }

  /** In the fallback pool: configured, state active, weight > 0, not unhealthy ('unknown' counts as healthy). */
  get acceptsNew(): boolean {
    return !this.removed && this.state === 'active' && this.weight > 0 && this.health !== 'unhealthy';
  }
}

interface SidNode {
  readonly sid: Uint8Array;
  readonly server: RouterServer;
  next: SidNode | null;
}

/** Server ID -> server for one config, looked up from a view into the packet without allocating. */
class SidMap {
  private readonly map = new Map<number, SidNode>();

  static keyOf(sid: Uint8Array, length: number): number {
    if (length === 1) return sid[0];
    if (length === 2) return (sid[0] << 8) | sid[1];
    if (length === 3) return (sid[0] << 16) | (sid[1] << 8) | sid[2];
    return murmur3(sid, 0, length) & 0x3fffffff;
  }

  add(sid: Uint8Array, server: RouterServer): void {
    const k = SidMap.keyOf(sid, sid.length);
    this.map.set(k, { sid: Buffer.from(sid), server, next: this.map.get(k) ?? null });
  }

  get(sid: Uint8Array): RouterServer | null {
    const len = sid.length;
    let n = this.map.get(SidMap.keyOf(sid, len)) ?? null;
    while (n !== null) {
      const s = n.sid;
      let i = 0;
      while (i < len && s[i] === sid[i]) i++;
      if (i === len) return n.server;
      n = n.next;
    }
    return null;
  }
}

export interface RouterCounters {
  /** Datagrams and bytes received (every one ends in exactly one of routed[*] or dropped[*]). */
  received: number;
  receivedBytes: number;
  /** [outcome * 8 + configId] with configId 7 = not routed by a live config (table/fallback). */
  routedPackets: Float64Array;
  routedBytes: Float64Array;
  dropPackets: Float64Array;
  dropBytes: Float64Array;
  unroutable: Float64Array;
  tableHits: Float64Array;
  /** Long-header SCIDs learned from servers' replies into the DCID table. */
  learned: number;
  /** Short headers routed by the DCID table at a learned server CID length other than the guessed DCID length. */
  learnedLengthHits: number;
}

export interface RouterStats {
  /** The routing mode in force. */
  routing: RoutingMode;
  received: number;
  receivedBytes: number;
  routed: Record<(typeof OUTCOMES)[number], number>;
  routedBytes: Record<(typeof OUTCOMES)[number], number>;
  routedByConfig: Record<string, number>;
  dropped: Partial<Record<DropReason, number>>;
  unroutable: Partial<Record<(typeof UNROUTABLE_REASONS)[number], number>>;
  tableHits: Record<(typeof TABLES)[number], number>;
  flows: number;
  dcids: number;
  flowsCreated: number;
  flowsExpired: number;
  flowsEvicted: number;
  dcidsCreated: number;
  dcidsExpired: number;
  dcidsEvicted: number;
  /** Of flows / dcids: entries in the unconfirmed budget. */
  unconfirmedFlows: number;
  unconfirmedDcids: number;
  /** Flows / DCID entries moved into the confirmed budget. */
  flowsConfirmed: number;
  dcidsConfirmed: number;
  /** Of flowsEvicted / dcidsEvicted: unconfirmed entries. */
  flowsEvictedUnconfirmed: number;
  dcidsEvictedUnconfirmed: number;
  /** New flows refused by the per-client-address limit of unconfirmed flows. */
  flowsRefusedPerSource: number;
  /** New flows refused by the new-flow rate limit. */
  flowsRefusedRate: number;
  learned: number;
  learnedLengthHits: number;
  /** Distinct lengths of the server CIDs learned so far (the lengths short headers are retried at), ascending. */
  learnedLengths: number[];
}

export class Router {
  private decoder = new CidDecoder();
  private readonly sidMaps: (SidMap | undefined)[] = new Array(8);
  /** CID length per live config id (-1 = not live), the short-header DCID length for that codepoint. */
  private readonly cidLengths = new Int16Array(8).fill(-1);
  private shortDcidLength = 8;
  /**
   * The distinct lengths of server CIDs learned from replies, as a bit set (bit L = length L, 1..20): bounded by
   * the protocol to 20 members, in practice one per kind of backend. A short header does not carry its DCID
   * length and route() guesses it from the first octet, so a learned CID of another length (e.g. ngtcp2's
   * 18 random bytes whose first octet happens to name a live config) is looked up again at these lengths.
   * Only servers add to it (never client-chosen DCIDs), so clients cannot make the retries longer.
   */
  private learnedLengths = 0;
  private readonly servers = new Map<string, RouterServer>();
  private pool = new FallbackPool<RouterServer>([]);
  /** Routing mode '4-tuple': connection IDs are ignored (routeTuple()). */
  private tupleOnly = false;
  /** Bumped by every apply(): invalidates the flows' decode caches. */
  generation = 0;
  version = -1;

  readonly flows: FlowTable<RouterServer>;
  readonly dcids: DcidTable<RouterServer>;
  private flowSettings: DataplaneSnapshot['flows'];
  /** Upper bound of flows the process can hold (socket budget); Infinity = the settings alone. */
  private flowCap = Infinity;
  /** Coarse clock (ms), advanced by tick(); used for idle timers. */
  now = 0;

  // Results of the last route() call.
  outcome = OUTCOME_DROP;
  dropReason = -1;
  /** Config id of the DCID when routed by CID, else -1. */
  configId = -1;
  flow: Flow<RouterServer> | null = null;

  private readonly header = new QuicHeader();
  private readonly decoded = new DecodeResult();

  readonly counters: RouterCounters = {
    received: 0,
    receivedBytes: 0,
    routedPackets: new Float64Array(3 * 8),
    routedBytes: new Float64Array(3 * 8),
    dropPackets: new Float64Array(DROP_REASONS.length),
    dropBytes: new Float64Array(DROP_REASONS.length),
    unroutable: new Float64Array(UNROUTABLE_REASONS.length),
    tableHits: new Float64Array(TABLES.length),
    learned: 0,
    learnedLengthHits: 0,
  };

  constructor(
    snapshot: DataplaneSnapshot,
    onFlowRemoved: (flow: Flow<RouterServer>, reason: RemovalReason) => void = () => {},
    now = Date.now(),
  ) {
    this.now = now;
    this.flowSettings = snapshot.flows;
    this.flows = new FlowTable<RouterServer>(this.flowLimits(), undefined, onFlowRemoved);
    this.dcids = new DcidTable<RouterServer>(this.dcidLimits());
    this.apply(snapshot);
  }

  /**
   * Installs a new snapshot (validated by the caller). Keeps flows and tables: entries of servers that stay
   * keep working, entries of removed servers are ignored from now on.
   */
  apply(s: DataplaneSnapshot): void {
    const decoder = new CidDecoder(s.configs.map((l) => l.config));
    const next = new Map<string, RouterServer>();
    for (const srv of s.servers) {
      let r = this.servers.get(srv.name);
      if (r === undefined) {
        r = new RouterServer(srv.name, Buffer.from(srv.serverId), srv.address, srv.weight, srv.state);
      } else {
        if (Buffer.compare(r.serverId, srv.serverId) !== 0) {
          r.serverId = Buffer.from(srv.serverId);
          r.seed = murmur3(r.serverId);
        }
        if (r.address.host !== srv.address.host || r.address.port !== srv.address.port) r.address = srv.address;
        r.weight = srv.weight;
        r.state = srv.state;
      }
      next.set(srv.name, r);
    }
    for (const [name, r] of this.servers) if (!next.has(name)) r.removed = true;
    this.sidMaps.fill(undefined);
    this.cidLengths.fill(-1);
    for (const l of s.configs) {
      const m = new SidMap();
      for (const srv of s.servers) {
        const sid = serverIdFor(srv, l.config);
        if (sid !== null) m.add(sid, next.get(srv.name)!);
      }
      this.sidMaps[l.config.configId] = m;
      this.cidLengths[l.config.configId] = cidLength(l.config);
    }
    this.decoder = decoder;
    this.shortDcidLength = s.shortDcidLength;
    this.servers.clear();
    for (const [k, v] of next) this.servers.set(k, v);
    this.flowSettings = s.flows;
    this.flows.setLimits(this.flowLimits());
    this.dcids.setLimits(this.dcidLimits());
    this.tupleOnly = (s.routing ?? DEFAULT_ROUTING) === '4-tuple';
    this.version = s.version;
    this.generation++;
    this.rebuildPool();
  }

  /**
   * Caps the flows at what the process can hold (one upstream socket each, dataplane/resources.ts): the
   * unconfirmed budget gets at most a quarter of the cap, the confirmed one the rest.
   */
  setFlowCap(cap: number): void {
    this.flowCap = cap;
    this.flows.setLimits(this.flowLimits());
  }

  /** The flow table's bounds: the settings, within the socket cap. */
  flowLimits(): Required<TableLimits> {
    const f = effectiveFlowSettings(this.flowSettings);
    let maxUnconfirmed = f.maxUnconfirmed;
    let max = f.maxFlows;
    if (maxUnconfirmed + max > this.flowCap) {
      maxUnconfirmed = Math.max(1, Math.min(maxUnconfirmed, Math.floor(this.flowCap / 4)));
      max = Math.max(1, Math.min(max, this.flowCap - maxUnconfirmed));
    }
    return {
      max,
      idleTimeoutMs: f.idleTimeoutMs,
      maxUnconfirmed,
      unconfirmedTimeoutMs: f.unconfirmedTimeoutMs,
      maxUnconfirmedPerSource: f.maxUnconfirmedPerSource,
      newFlowRate: f.newFlowRate,
    };
  }

  private dcidLimits(): TableLimits {
    const f = effectiveFlowSettings(this.flowSettings);
    return { max: f.maxFlows, idleTimeoutMs: f.idleTimeoutMs, maxUnconfirmed: f.maxUnconfirmed, unconfirmedTimeoutMs: f.unconfirmedTimeoutMs };
  }

  /** Rebuilds the fallback pool (after apply or a health change). */
  rebuildPool(): void {
    this.pool = new FallbackPool([...this.servers.values()].filter((r) => r.acceptsNew));
  }

  /** The routing mode in force. */
  get routing(): RoutingMode {
    return this.tupleOnly ? '4-tuple' : 'quic-lb';
  }

  getServer(name: string): RouterServer | undefined {
    return this.servers.get(name);
  }

  serverList(): RouterServer[] {
    return [...this.servers.values()];
  }

  /** Servers accepting new connections through the fallback. */
  poolMembers(): readonly RouterServer[] {
    return this.pool.list();
  }

  /** Sets a server's health; returns true when its membership of the fallback pool changed. */
  setHealth(name: string, health: HealthState): boolean {
    const r = this.servers.get(name);
    if (r === undefined || r.health === health) return false;
    const before = r.acceptsNew;
    r.health = health;
    if (before !== r.acceptsNew) {
      this.rebuildPool();
      return true;
    }
    return false;
  }

  /** The fallback's choice for a client (what two instances with the same config agree on). */
  fallbackFor(address: string, port: number): RouterServer | null {
    return this.pool.pick(clientHash(address, port));
  }

  /** Advances the clock and expires idle flows and DCID entries. */
  tick(now: number): void {
    this.now = now;
    this.flows.expire(now);
    this.dcids.expire(now);
  }

  /** Books a datagram as dropped for `reason` (an index of DROP_REASONS); returns null for route(). */
  drop(reason: number, bytes: number): null {
    this.outcome = OUTCOME_DROP;
    this.dropReason = reason;
    this.counters.dropPackets[reason]++;
    this.counters.dropBytes[reason] += bytes;
    return null;
  }

  /** Re-books the last routed datagram as dropped (the forwarder could not hand it to the server). */
  undoRoute(server: RouterServer, bytes: number, reason: number): void {
    if (this.outcome === OUTCOME_DROP) return;
    const idx = this.outcome * 8 + (this.configId < 0 ? 7 : this.configId);
    this.counters.routedPackets[idx]--;
    this.counters.routedBytes[idx] -= bytes;
    server.packets--;
    server.bytes -= bytes;
    this.drop(reason, bytes);
  }

  /**
   * Decides where one client datagram goes. Returns the server, or null when dropped (dropReason set).
   * Leaves outcome, configId and flow (the client flow, created if it was new) for the caller. The datagram is
   * buf[off, off + len) (the batched I/O path routes in place in its receive ring).
   */
  route(buf: Buffer, address: string, port: number, listener: number, off = 0, len = buf.length - off): RouterServer | null {
    const c = this.counters;
    c.received++;
    c.receivedBytes += len;
    this.flow = null;
    this.configId = -1;
    if (len === 0) return this.drop(DROP_EMPTY, 0);
    if (this.tupleOnly) return this.routeTuple(len, address, port, listener);

    // Short headers carry no DCID length: take it from the codepoint's config, the self-encoded length of
    // 0b111 (when it is a legal length), or the default; never more than the datagram holds, so a packet of a
    // server with other CIDs (e.g. random ones) is still forwarded through the tables.
    let shortLen = 0;
    if ((buf[off] & 0x80) === 0) {
      if (len < 2) return this.drop(DROP_SHORT_DCID, len);
      const cr = buf[off + 1] >> 5;
      if (cr === UNROUTABLE_CONFIG_ID) {
        shortLen = (buf[off + 1] & 0x1f) + 1;
        if (shortLen > 20) shortLen = this.shortDcidLength;
      } else shortLen = this.cidLengths[cr] > 0 ? this.cidLengths[cr] : this.shortDcidLength;
      if (shortLen > len - 1) shortLen = len - 1;
    }
    const h = this.header;
    const err = parseQuicHeader(buf, h, shortLen, off, len);
    // A clear fixed bit is legal after grease_quic_bit (RFC 9287): route it like any other packet.
    if (err !== null && err !== 'no-fixed-bit') return this.drop(headerDrop(err), len);

    const now = this.now;
    const isLong = h.form === 'long';
    const dOff = h.dcidOffset;
    const dLen = h.dcidLength;
    let flow = this.flows.get(address, port, listener);
    let server: RouterServer | null = null;
    let outcome = OUTCOME_FALLBACK;
    let table = -1;
    /** The DCID-table entry that routed the datagram (table dcid), if any. */
    let hit: DcidEntry<RouterServer> | null = null;

    // Per-flow cache of the last DCID's decision (same DCID, same config generation). A short header's DCID
    // found at a learned length is compared at that length (its true length), not at the guessed one.
    const ck = flow === null ? CACHE_NONE : flow.cacheKind;
    if (ck !== CACHE_NONE && flow!.cacheGeneration === this.generation) {
      const cl = flow!.cacheLength;
      if (ck === CACHE_DCID_LEARNED ? !isLong && cl < len : cl === dLen) {
        const cd = flow!.cacheDcid;
        let i = 0;
        while (i < cl && cd[i] === buf[dOff + i]) i++;
        if (i === cl) {
          if (ck === CACHE_CID) {
            server = flow!.cacheServer;
            outcome = OUTCOME_CID;
            this.configId = flow!.cacheConfigId;
          } else if (!isLong) {
            const e = flow!.cacheEntry!;
            if (e.alive && e.server === flow!.cacheServer && !e.server.removed) {
              this.dcids.touch(e, now);
              hit = e;
              server = e.server;
              outcome = OUTCOME_TABLE;
              table = TABLE_DCID;
              if (ck === CACHE_DCID_LEARNED) c.learnedLengthHits++;
            }
          }
        }
      }
    }

    if (server === null) {
      // 1. Routable DCID.
      let unr = -1;
      if (dLen === 0) unr = UNR_EMPTY;
      else {
        const d = this.decoded;
        if (this.decoder.decodeInto(buf, dOff, dLen, d)) {
          server = this.sidMaps[d.configId]!.get(d.serverId);
          if (server !== null) {
            outcome = OUTCOME_CID;
            this.configId = d.configId;
          } else unr = UNR_UNKNOWN_SERVER;
        } else {
          unr = d.reason === 'reserved' ? UNR_RESERVED : d.reason === 'unknown-config' ? UNR_UNKNOWN_CONFIG : UNR_TOO_SHORT;
        }
      }
      let dcidEntry: DcidEntry<RouterServer> | null = null;
      let dcidKey: string | null = null;
      /** The short header's DCID found in the DCID table at a learned length (its key's length). */
      let learned: DcidEntry<RouterServer> | null = null;
      if (server === null) {
        c.unroutable[unr]++;
        // 2. Long header: 4-tuple‖SCID.
        if (isLong && flow !== null) {
          server = flow.scidLookup(buf, h.scidOffset, h.scidLength);
          if (server !== null) {
            outcome = OUTCOME_TABLE;
            table = TABLE_SCID;
          }
        }
        // 3. DCID table.
        if (server === null && dLen > 0) {
          dcidKey = DcidTable.keyOf(buf, dOff, dLen);
          const e = this.dcids.get(dcidKey);
          if (e !== undefined && !e.server.removed) {
            this.dcids.touch(e, now);
            server = e.server;
            dcidEntry = e;
            outcome = OUTCOME_TABLE;
            table = TABLE_DCID;
          }
        }
        // 3b. Short header: the DCID table again at each other length of a learned server CID that fits in the
        //     datagram, longest first. A hit needs all octets of an entry of exactly that length, which for 8
        //     octets or more only the connection's own CID has. Shorter lengths could match a prefix of another
        //     connection's CID by chance, so they are tried only when the flow has no 4-tuple entry (4b).
        let retry = 0;
        if (server === null && !isLong && this.learnedLengths !== 0) {
          const fit = len - 1 < MAX_CID ? len - 1 : MAX_CID;
          retry = this.learnedLengths & ((1 << (fit + 1)) - 1) & ~(1 << dLen);
          learned = this.findLearned(buf, dOff, retry & ~SHORT_LEARNED, now);
        }
        // 4. 4-tuple table. The DCID is recorded too, so the connection survives a NAT rebinding even when its
        //    server's CIDs never decode (a server without config, or one with random CIDs). An Initial that steps
        //    1-3 do not know is a NEW connection from a reused client socket (the 4-tuple‖SCID table knows the
        //    Initials of the connections it recorded): it goes to the fallback when the 4-tuple's server no
        //    longer accepts new connections (draining, unhealthy), without moving the 4-tuple's old connection.
        const tupleServer = server === null && learned === null && flow !== null && flow.tupleServer !== null && !flow.tupleServer.removed ? flow.tupleServer : null;
        const newConnectionMoved = tupleServer !== null && isLong && h.type === 'initial' && !tupleServer.acceptsNew;
        if (tupleServer !== null && !newConnectionMoved) {
          server = tupleServer;
          outcome = OUTCOME_TABLE;
          table = TABLE_TUPLE;
          if (dLen > 0) dcidEntry = this.dcids.set(dcidKey!, server, now, this.protectsDcid(flow!));
        }
        // 4b. The learned lengths under 8 octets, for a flow without 4-tuple entry (a migrated or NAT-rebound client).
        if (server === null && learned === null) learned = this.findLearned(buf, dOff, retry & SHORT_LEARNED, now);
        // A hit of 3b or 4b.
        if (learned !== null) {
          dcidEntry = learned;
          server = learned.server;
          outcome = OUTCOME_TABLE;
          table = TABLE_DCID;
          c.learnedLengthHits++;
        }
        // 5. Fallback.
        if (server === null) {
          server = this.pool.pick(clientHash(address, port));
          if (server === null) return this.drop(DROP_NO_SERVER, len);
          outcome = OUTCOME_FALLBACK;
          if (flow === null) flow = this.flows.create(address, port, listener, now);
          if (flow === null) return this.refuseFlow(len);
          if (!newConnectionMoved) flow.tupleServer = server;
          if (isLong) flow.scidRecord(buf, h.scidOffset, h.scidLength, server);
          if (dLen > 0) dcidEntry = this.dcids.set(dcidKey!, server, now, this.protectsDcid(flow));
        }
      }
      if (table === TABLE_DCID) hit = dcidEntry;
      if (flow === null) flow = this.flows.create(address, port, listener, now);
      if (flow === null) return this.refuseFlow(len);
      // Remember the decision for the next packet with this DCID (a decoded CID, or a DCID-table entry).
      if (dLen <= MAX_CID) {
        let cl = dLen;
        if (outcome === OUTCOME_CID) {
          flow.cacheKind = CACHE_CID;
          flow.cacheConfigId = this.configId;
          flow.cacheEntry = null;
        } else if (dcidEntry !== null) {
          flow.cacheEntry = dcidEntry;
          if (learned !== null) {
            flow.cacheKind = CACHE_DCID_LEARNED;
            cl = learned.key.length; // latin1 key: one character per octet
          } else flow.cacheKind = CACHE_DCID_TABLE;
        } else flow.cacheKind = CACHE_NONE;
        if (flow.cacheKind !== CACHE_NONE) {
          flow.cacheServer = server;
          flow.cacheGeneration = this.generation;
          flow.cacheLength = cl;
          const cd = flow.cacheDcid;
          for (let i = 0; i < cl; i++) cd[i] = buf[dOff + i];
        }
      }
    }
    // flow is set on both paths: the cache hit's, or the one the miss found or created (lastSeen = now).
    if (!flow!.confirmed && flow!.answered) this.confirmIfProven(flow!, buf, isLong, dOff, dLen, len, outcome, hit);
    if (flow!.lastSeen !== now) this.flows.touch(flow!, now);
    if (table >= 0) c.tableHits[table]++;
    return this.routed(server!, flow!, outcome, len);
  }

  /**
   * Routing mode '4-tuple' (draft-21 §4.3.1 baseline, no connection IDs): the flow's 4-tuple entry, else the
   * fallback hash, recorded in the 4-tuple table. The datagram is not parsed (any non-empty one is forwarded),
   * its DCID is never looked at, and no DCID or 4-tuple‖SCID entry is made, so a migrated or NAT-rebound client
   * is a new flow that goes wherever the hash sends it.
   */
  private routeTuple(len: number, address: string, port: number, listener: number): RouterServer | null {
    const c = this.counters;
    const now = this.now;
    let flow = this.flows.get(address, port, listener);
    let server = flow === null ? null : flow.tupleServer;
    let outcome = OUTCOME_TABLE;
    if (server !== null && !server.removed) {
      c.tableHits[TABLE_TUPLE]++;
      if (flow!.lastSeen !== now) this.flows.touch(flow!, now);
    } else {
      server = this.pool.pick(clientHash(address, port));
      if (server === null) return this.drop(DROP_NO_SERVER, len);
      outcome = OUTCOME_FALLBACK;
      if (flow === null) flow = this.flows.create(address, port, listener, now);
      else if (flow.lastSeen !== now) this.flows.touch(flow, now);
      if (flow === null) return this.refuseFlow(len);
      flow.tupleServer = server;
    }
    // No connection IDs to check in this mode: the client spoke again after the backend answered (conntrack's rule).
    if (!flow!.confirmed && flow!.answered) this.confirmFlow(flow!);
    return this.routed(server, flow!, outcome, len);
  }

  /**
   * Moves an answered, unconfirmed flow into the confirmed budget when this client datagram proves that its sender
   * receives the backend's answers (a blind spoofer cannot): its DCID is the SCID of a long-header reply on this
   * flow (a new connection's client switched to the server's CID), or the DCID names a server on its own or through
   * a confirmed DCID entry and the server answered this path in 1-RTT (an established connection on a new path: its
   * server validates the path). A long-header answer does not count for the latter: a spoofer may choose a DCID that
   * names a server for its Initials, and every Initial gets one.
   */
  private confirmIfProven(flow: Flow<RouterServer>, buf: Buffer, isLong: boolean, dOff: number, dLen: number, len: number, outcome: number, hit: DcidEntry<RouterServer> | null): void {
    const echoes = isLong ? dLen === flow.serverCidLength && flow.echoesServerCid(buf, dOff, dLen) : flow.echoesServerCid(buf, dOff, len - 1);
    // A server with zero-length CIDs gives nothing to echo: its flows are confirmed as conntrack does (the client
    // spoke again after an answer).
    if (echoes || flow.zeroLengthServerCid || (flow.answeredShort && (outcome === OUTCOME_CID || (hit !== null && hit.confirmed)))) this.confirmFlow(flow);
  }

  /** Drops a datagram whose new flow the flow table refused (per-source limit or new-flow rate). */
  private refuseFlow(len: number): null {
    return this.drop(this.flows.refusal === 'rate' ? DROP_NEW_FLOW_RATE : DROP_SOURCE_FLOW_LIMIT, len);
  }

  private confirmFlow(flow: Flow<RouterServer>): void {
    this.flows.confirm(flow, this.now);
    const p = flow.pendingLearned;
    flow.pendingLearned = null;
    if (p !== null && p.alive) this.dcids.confirm(p, this.now);
  }

  /** Whether a client-chosen DCID recorded for this flow goes into the protected budget (bounded per flow). */
  private protectsDcid(flow: Flow<RouterServer>): boolean {
    if (!flow.confirmed || flow.protectedDcids >= PROTECTED_DCIDS_PER_FLOW) return false;
    flow.protectedDcids++;
    return true;
  }

  /** Books a routed datagram (undone by undoRoute()) and leaves outcome and flow for the caller. */
  private routed(server: RouterServer, flow: Flow<RouterServer>, outcome: number, bytes: number): RouterServer {
    const idx = outcome * 8 + (this.configId < 0 ? 7 : this.configId);
    this.counters.routedPackets[idx]++;
    this.counters.routedBytes[idx] += bytes;
    server.packets++;
    server.bytes += bytes;
    this.outcome = outcome;
    this.flow = flow;
    return server;
  }

  /**
   * Server -> client: a long-header reply's SCID is the CID the client will use as DCID. When it does not
   * decode to a configured server (e.g. a 0b111 CID of a server without config, or a random CID of a server
   * that does not mint QUIC-LB CIDs), learn it into the DCID table at its full length, and its length into the
   * learned lengths, so the connection survives client migration and NAT rebinding even when route() guesses
   * another length for its short headers. Nothing is learned in routing mode '4-tuple'.
   *
   * `flow` is the client flow the reply belongs to: it records the SCID (the proof its client must echo to be
   * confirmed), and a CID learned while the flow is unconfirmed stays in the unconfirmed budget until the flow
   * is confirmed. Without a flow the CID is learned as confirmed.
   */
  learnReply(buf: Buffer, server: RouterServer, flow: Flow<RouterServer> | null = null, off = 0, len = buf.length - off): void {
    if (flow !== null) {
      flow.answered = true;
      if (len > 0 && (buf[off] & 0x80) === 0) flow.answeredShort = true;
    }
    if (this.tupleOnly) return; // routing mode '4-tuple' never looks at connection IDs
    if (len < 7 || (buf[off] & 0x80) === 0) return;
    const h = this.header;
    const err = parseQuicHeader(buf, h, 0, off, len);
    if ((err !== null && err !== 'no-fixed-bit') || h.version === 0) return;
    if (flow !== null) flow.noteServerCid(buf, h.scidOffset, h.scidLength);
    if (h.scidLength === 0) return;
    const d = this.decoded;
    if (this.decoder.decodeInto(buf, h.scidOffset, h.scidLength, d) && this.sidMaps[d.configId]!.get(d.serverId) !== null) return;
    const confirmed = flow === null || flow.confirmed;
    const e = this.dcids.set(DcidTable.keyOf(buf, h.scidOffset, h.scidLength), server, this.now, confirmed);
    if (!e.confirmed && flow !== null) flow.pendingLearned = e;
    this.learnedLengths |= 1 << h.scidLength;
    this.counters.learned++;
  }

  /**
   * The DCID table at each length in `mask` (bit L = L octets of the short header's DCID at `off`), longest
   * first. Returns the first live entry found (touched; its key's length is the length it was found at), or null.
   */
  private findLearned(buf: Buffer, off: number, mask: number, now: number): DcidEntry<RouterServer> | null {
    let m = mask;
    while (m !== 0) {
      const l = 31 - Math.clz32(m);
      m ^= 1 << l;
      const e = this.dcids.get(DcidTable.keyOf(buf, off, l));
      if (e !== undefined && !e.server.removed) {
        this.dcids.touch(e, now);
        return e;
      }
    }
    return null;
  }

  /** Forgets all flows and tables (stop). */
  clear(): void {
    this.flows.clear();
    this.dcids.clear();
    this.learnedLengths = 0;
  }

  stats(): RouterStats {
    const c = this.counters;
    const sum = (a: Float64Array, o: number) => a.subarray(o * 8, o * 8 + 8).reduce((x, y) => x + y, 0);
    const routedByConfig: Record<string, number> = {};
    for (let o = 0; o < 3; o++) {
      for (let id = 0; id < 8; id++) {
        const v = c.routedPackets[o * 8 + id];
        if (v > 0) routedByConfig[`${OUTCOMES[o]}/${id === 7 ? 'none' : id}`] = v;
      }
    }
    const named = <T extends string>(names: readonly T[], a: Float64Array): Partial<Record<T, number>> => {
      const r: Partial<Record<T, number>> = {};
      names.forEach((n, i) => {
        if (a[i] > 0) r[n] = a[i];
      });
      return r;
    };
    return {
      routing: this.routing,
      received: c.received,
      receivedBytes: c.receivedBytes,
      routed: { cid: sum(c.routedPackets, 0), table: sum(c.routedPackets, 1), fallback: sum(c.routedPackets, 2) },
      routedBytes: { cid: sum(c.routedBytes, 0), table: sum(c.routedBytes, 1), fallback: sum(c.routedBytes, 2) },
      routedByConfig,
      dropped: named(DROP_REASONS, c.dropPackets),
      unroutable: named(UNROUTABLE_REASONS, c.unroutable),
      tableHits: { tuple_scid: c.tableHits[0], dcid: c.tableHits[1], tuple: c.tableHits[2] },
      flows: this.flows.size,
      dcids: this.dcids.size,
      flowsCreated: this.flows.counters.created,
      flowsExpired: this.flows.counters.expired,
      flowsEvicted: this.flows.counters.evicted,
      dcidsCreated: this.dcids.counters.created,
      dcidsExpired: this.dcids.counters.expired,
      dcidsEvicted: this.dcids.counters.evicted,
      unconfirmedFlows: this.flows.unconfirmedCount,
      unconfirmedDcids: this.dcids.unconfirmedCount,
      flowsConfirmed: this.flows.counters.confirmed,
      dcidsConfirmed: this.dcids.counters.confirmed,
      flowsEvictedUnconfirmed: this.flows.counters.evictedUnconfirmed,
      dcidsEvictedUnconfirmed: this.dcids.counters.evictedUnconfirmed,
      flowsRefusedPerSource: this.flows.counters.refusedPerSource,
      flowsRefusedRate: this.flows.counters.refusedRate,
      learned: c.learned,
      learnedLengthHits: c.learnedLengthHits,
      learnedLengths: Array.from({ length: MAX_CID }, (_, i) => i + 1).filter((l) => (this.learnedLengths & (1 << l)) !== 0),
    };
  }
}

export function outcomeName(o: number): Outcome {
  return o === OUTCOME_DROP ? 'drop' : OUTCOMES[o];
}
