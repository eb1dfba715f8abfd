/**
 * What the config server knows about each data plane, keyed by its identity (identity.ts: certificate CN and node): who it says it is, when
 * it connected, what was sent to it, what it applied or rejected, and its last health and counters reports. The
 * streams (server.ts) write it; status aggregation and key rotation read it through plain, frozen views
 * (dataPlanes()). Everything a peer makes it hold is bounded: health entries only for the servers of the snapshot
 * last sent to that data plane (before the first push of a stream, e.g. a data plane forwarding with its saved
 * snapshot while the source has nothing for it yet, any server up to `maxHealthEntries`, pruned at the first push),
 * one counters report, and disconnected data planes are forgotten after a while.
 */
import type { DataplaneSnapshot } from '../../lib/config/snapshot.js';
import {
  HealthVerdict,
  ProbeResult,
  RoutingOutcome,
  type BackendHealth,
  type CountersReport,
  type Hello,
} from '../../proto/gen/quiclb/v1/distribution.js';

export interface HelloInfo {
  readonly nodeName: string;
  readonly podName: string;
  readonly softwareVersion: string;
  readonly capabilities: readonly string[];
  /** The version the data plane said it forwarded with when it connected (0 = none). */
  readonly currentVersion: number;
  readonly processStartTime: Date | null;
}

export interface PushInfo {
  readonly version: number;
  readonly nonce: string;
  readonly at: Date;
}

export interface NackInfo {
  readonly version: number;
  readonly nonce: string;
  /** Wire path of the offending field ('' when none). */
  readonly field: string;
  readonly message: string;
  readonly at: Date;
}

export type VerdictView = 'healthy' | 'unhealthy' | 'unknown';

export interface BackendHealthView {
  readonly loadBalancer: string;
  readonly server: string;
  readonly state: VerdictView;
  readonly lastResult: 'success' | 'failure' | 'none';
  readonly lastProbeTime: Date | null;
  readonly consecutiveFailures: number;
  readonly lastRttMs: number | null;
  readonly lastError: string;
  /** When the report holding this entry arrived. */
  readonly reportedAt: Date;
}

export type OutcomeView = 'cid' | 'table' | 'fallback' | 'unknown';

export interface LoadBalancerCountersView {
  readonly loadBalancer: string;
  readonly receivedPackets: number;
  readonly receivedBytes: number;
  readonly traffic: readonly { readonly outcome: OutcomeView; readonly configId: number | null; readonly packets: number; readonly bytes: number }[];
  readonly drops: readonly { readonly reason: string; readonly packets: number; readonly bytes: number }[];
  readonly liveFlows: number;
}

export interface CountersView {
  /** When the data plane read the counters (null: it did not say). */
  readonly time: Date | null;
  /** Counters are cumulative since then; a newer value is a reset. */
  readonly processStartTime: Date | null;
  readonly receivedAt: Date;
  readonly loadBalancers: readonly LoadBalancerCountersView[];
}

export interface DataPlaneView {
  /** Certificate CN and the node its Hello names (`quiclb-dataplane@node-a`; the CN alone without a node). */
  readonly identity: string;
  /** The client certificate's subject CN (several data planes may share it). */
  readonly certificateName: string;
  readonly connected: boolean;
  /** Remote address of the current (or last) stream. */
  readonly peer: string;
  readonly hello: HelloInfo | null;
  readonly connectedSince: Date | null;
  readonly disconnectedAt: Date | null;
  /** Why the last stream ended. */
  readonly disconnectReason: string;
  readonly lastSent: PushInfo | null;
  /** Version the data plane acknowledged last (or named in its Hello); null: none known. */
  readonly appliedVersion: number | null;
  readonly appliedAt: Date | null;
  readonly lastNack: NackInfo | null;
  /** Per (load balancer, server) of the snapshot last sent: the latest reported probe state. */
  readonly health: readonly BackendHealthView[];
  readonly lastHealthReportAt: Date | null;
  readonly counters: CountersView | null;
  /** Last HealthReport or CountersReport (before the first: the Hello). */
  readonly lastReportAt: Date | null;
}

interface Entry {
  identity: string;
  certificateName: string;
  connected: boolean;
  peer: string;
  hello: HelloInfo | null;
  connectedSince: Date | null;
  disconnectedAt: Date | null;
  disconnectReason: string;
  lastSent: PushInfo | null;
  appliedVersion: number | null;
  appliedAt: Date | null;
  lastNack: NackInfo | null;
  /** The process whose stream NACKed lastNack (a restarted process is offered the latest version again). */
  nackProcess: string;
  /** How many times in a row that process NACKed lastNack's version (the retry delay doubles with each). */
  nackCount: number;
  health: Map<string, BackendHealthView>;
  /** `${loadBalancer}\0${server}` of the snapshot last sent; null before the first push of the stream. */
  knownServers: ReadonlySet<string> | null;
  lastHealthReportAt: Date | null;
  counters: CountersView | null;
  lastReportAt: Date | null;
}

const serverKey = (lb: string, server: string) => `${lb}\0${server}`;

const serverIndex = new WeakMap<readonly DataplaneSnapshot[], ReadonlySet<string>>();

/** The (load balancer, server) keys of a snapshot, computed once per snapshot (shared by every stream). */
function serversOf(loadBalancers: readonly DataplaneSnapshot[]): ReadonlySet<string> {
  let s = serverIndex.get(loadBalancers);
  if (!s) {
    s = new Set(loadBalancers.flatMap((lb) => lb.servers.map((srv) => serverKey(lb.name, srv.name))));
    serverIndex.set(loadBalancers, s);
  }
  return s;
}

function date(d: Date | undefined): Date | null {
  return d === undefined || Number.isNaN(d.getTime()) ? null : d;
}

const VERDICTS: Record<number, VerdictView> = { [HealthVerdict.HEALTH_VERDICT_HEALTHY]: 'healthy', [HealthVerdict.HEALTH_VERDICT_UNHEALTHY]: 'unhealthy' };
const RESULTS: Record<number, BackendHealthView['lastResult']> = { [ProbeResult.PROBE_RESULT_SUCCESS]: 'success', [ProbeResult.PROBE_RESULT_FAILURE]: 'failure' };
const OUTCOMES: Record<number, OutcomeView> = {
  [RoutingOutcome.ROUTING_OUTCOME_CID]: 'cid',
  [RoutingOutcome.ROUTING_OUTCOME_TABLE]: 'table',
  [RoutingOutcome.ROUTING_OUTCOME_FALLBACK]: 'fallback',
};

function processOf(hello: HelloInfo | null): string {
  return `${hello?.podName ?? ''}/${hello?.processStartTime?.getTime() ?? ''}/${hello?.softwareVersion ?? ''}`;
}

export function helloInfo(h: Hello): HelloInfo {
  return Object.freeze({
    nodeName: h.nodeName,
    podName: h.podName,
    softwareVersion: h.softwareVersion,
    capabilities: Object.freeze([...h.capabilities]),
    currentVersion: Number(h.currentVersion),
    processStartTime: date(h.processStartTime),
  });
}

function healthView(b: BackendHealth, at: Date): BackendHealthView {
  const rtt = b.lastRtt === undefined ? null : Number(b.lastRtt.seconds) * 1000 + b.lastRtt.nanos / 1e6;
  return Object.freeze({
    loadBalancer: b.loadBalancer,
    server: b.server,
    state: VERDICTS[b.state] ?? 'unknown',
    lastResult: RESULTS[b.lastResult] ?? 'none',
    lastProbeTime: date(b.lastProbeTime),
    consecutiveFailures: b.consecutiveFailures,
    lastRttMs: rtt,
    lastError: b.lastError,
    reportedAt: at,
  });
}

function countersView(c: CountersReport, at: Date): CountersView {
  return Object.freeze({
    time: date(c.time),
    processStartTime: date(c.processStartTime),
    receivedAt: at,
    loadBalancers: Object.freeze(
      c.loadBalancers.map((lb) =>
        Object.freeze({
          loadBalancer: lb.loadBalancer,
          receivedPackets: Number(lb.receivedPackets),
          receivedBytes: Number(lb.receivedBytes),
          traffic: Object.freeze(
            lb.traffic.map((t) =>
              Object.freeze({ outcome: OUTCOMES[t.outcome] ?? 'unknown', configId: t.configId ?? null, packets: Number(t.packets), bytes: Number(t.bytes) }),
            ),
          ),
          drops: Object.freeze(lb.drops.map((d) => Object.freeze({ reason: d.reason, packets: Number(d.packets), bytes: Number(d.bytes) }))),
          liveFlows: Number(lb.liveFlows),
        }),
      ),
    ),
  });
}

export interface DataPlaneCacheOptions {
  /** A disconnected data plane is forgotten after this long (default 1 h). */
  readonly forgetAfterMs?: number;
  /** At most this many data planes are remembered; the longest-disconnected go first (default 10000). */
  readonly maxTracked?: number;
  /** Health entries kept per data plane before its first push (default 20000). */
  readonly maxHealthEntries?: number;
  /**
   * A NACKed version is offered again to the process that rejected it after this long, doubling with each further
   * NACK of it up to 16x (default 60 s: 1, 2, 4, 8, then every 16 min): a failure of that host's (a port held for
   * a moment, a descriptor limit) heals without waiting for a newer version.
   */
  readonly rejectedRetryMs?: number;
}

export class DataPlaneCache {
  private readonly entries = new Map<string, Entry>();
  private readonly forgetAfterMs: number;
  private readonly maxTracked: number;
  private readonly maxHealthEntries: number;
  private readonly rejectedRetryMs: number;

  constructor(options: DataPlaneCacheOptions = {}) {
    this.rejectedRetryMs = options.rejectedRetryMs ?? 60_000;
    this.forgetAfterMs = options.forgetAfterMs ?? 3_600_000;
    this.maxTracked = options.maxTracked ?? 10_000;
    this.maxHealthEntries = options.maxHealthEntries ?? 20_000;
  }

  /** A stream said Hello. */
  connected(identity: string, certificateName: string, hello: HelloInfo, peer: string, now: Date): void {
    this.prune(now);
    const prev = this.entries.get(identity);
    const e: Entry = prev ?? {
      identity,
      certificateName,
      connected: false,
      peer,
      hello: null,
      connectedSince: null,
      disconnectedAt: null,
      disconnectReason: '',
      lastSent: null,
      appliedVersion: null,
      appliedAt: null,
      lastNack: null,
      nackProcess: '',
      nackCount: 0,
      health: new Map(),
      knownServers: null,
      lastHealthReportAt: null,
      counters: null,
      lastReportAt: null,
    };
    e.connected = true;
    e.certificateName = certificateName;
    e.peer = peer;
    e.hello = hello;
    e.connectedSince = now;
    e.disconnectedAt = null;
    e.disconnectReason = '';
    e.lastSent = null;
    // What it runs now is what its Hello says (it may have restarted from its state directory).
    e.appliedVersion = hello.currentVersion > 0 ? hello.currentVersion : null;
    e.appliedAt = hello.currentVersion > 0 ? now : null;
    e.health = new Map();
    e.knownServers = null;
    e.lastHealthReportAt = null;
    e.counters = null;
    e.lastReportAt = now;
    this.entries.delete(identity); // re-insert: the map's order is the order of (re)connection
    this.entries.set(identity, e);
  }

  /**
   * The version below or at which nothing may be pushed to this data plane now: its last NACKed version, unless the
   * process that rejected it has since been replaced (a restarted or upgraded data plane may accept it) or its
   * retry is due (retryAt).
   */
  rejectedVersion(identity: string, now: Date = new Date()): number {
    const at = this.retryAt(identity);
    return at !== null && now < at ? this.entries.get(identity)!.lastNack!.version : 0;
  }

  /** Its last NACK, unless a version at least as new has been applied since (null: none pending). */
  unappliedNack(identity: string): NackInfo | null {
    const e = this.entries.get(identity);
    if (!e?.lastNack) return null;
    return (e.appliedVersion ?? -1) < e.lastNack.version ? e.lastNack : null;
  }

  /** When the last NACKed version may be offered again to the process that rejected it (null: no such NACK). */
  retryAt(identity: string): Date | null {
    const e = this.entries.get(identity);
    if (!e?.lastNack || e.nackProcess !== processOf(e.hello)) return null;
    return new Date(e.lastNack.at.getTime() + this.rejectedRetryMs * 2 ** Math.min(e.nackCount - 1, 4));
  }

  sent(identity: string, push: PushInfo, loadBalancers: readonly DataplaneSnapshot[]): void {
    const e = this.entries.get(identity);
    if (!e) return;
    e.lastSent = Object.freeze({ ...push });
    const known = serversOf(loadBalancers);
    e.knownServers = known;
    for (const k of e.health.keys()) if (!known.has(k)) e.health.delete(k);
  }

  acked(identity: string, version: number, now: Date): void {
    const e = this.entries.get(identity);
    if (!e) return;
    e.appliedVersion = version;
    e.appliedAt = now;
  }

  nacked(identity: string, nack: NackInfo): void {
    const e = this.entries.get(identity);
    if (!e) return;
    const again = e.lastNack?.version === nack.version && e.nackProcess === processOf(e.hello);
    e.nackCount = again ? e.nackCount + 1 : 1;
    e.lastNack = Object.freeze({ ...nack });
    e.nackProcess = processOf(e.hello);
  }

  /** Merges a health report; returns the entries kept and how many named no server of the snapshot last sent. */
  health(identity: string, backends: readonly BackendHealth[], now: Date): { applied: BackendHealthView[]; ignored: number } {
    const e = this.entries.get(identity);
    const applied: BackendHealthView[] = [];
    if (!e) return { applied, ignored: backends.length };
    let ignored = 0;
    for (const b of backends) {
      const k = serverKey(b.loadBalancer, b.server);
      const known = e.knownServers === null ? e.health.has(k) || e.health.size < this.maxHealthEntries : e.knownServers.has(k);
      if (!known) {
        ignored++;
        continue;
      }
      const v = healthView(b, now);
      e.health.set(k, v);
      applied.push(v);
    }
    e.lastHealthReportAt = now;
    e.lastReportAt = now;
    return { applied, ignored };
  }

  counters(identity: string, report: CountersReport, now: Date): CountersView | null {
    const e = this.entries.get(identity);
    if (!e) return null;
    e.counters = countersView(report, now);
    e.lastReportAt = now;
    return e.counters;
  }

  disconnected(identity: string, reason: string, now: Date): void {
    const e = this.entries.get(identity);
    if (!e || !e.connected) return;
    e.connected = false;
    e.disconnectedAt = now;
    e.disconnectReason = reason;
  }

  /** Read-only views of every data plane known (connected, or disconnected less than forgetAfterMs ago). */
  dataPlanes(now = new Date()): DataPlaneView[] {
    this.prune(now);
    return [...this.entries.values()].map((e) => this.view(e));
  }

  dataPlane(identity: string): DataPlaneView | null {
    const e = this.entries.get(identity);
    return e ? this.view(e) : null;
  }

  /** Identities of the data planes connected now. */
  connectedIdentities(): string[] {
    return [...this.entries.values()].filter((e) => e.connected).map((e) => e.identity);
  }

  /** For metrics: (identity, seconds since its last report) of every data plane known. */
  reportAges(now: number): Array<[string, number]> {
    return [...this.entries.values()].filter((e) => e.lastReportAt).map((e) => [e.identity, (now - e.lastReportAt!.getTime()) / 1000]);
  }

  private view(e: Entry): DataPlaneView {
    return Object.freeze({
      identity: e.identity,
      certificateName: e.certificateName,
      connected: e.connected,
      peer: e.peer,
      hello: e.hello,
      connectedSince: e.connectedSince,
      disconnectedAt: e.disconnectedAt,
      disconnectReason: e.disconnectReason,
      lastSent: e.lastSent,
      appliedVersion: e.appliedVersion,
      appliedAt: e.appliedAt,
      lastNack: e.lastNack,
      health: Object.freeze([...e.health.values()]),
      lastHealthReportAt: e.lastHealthReportAt,
      counters: e.counters,
      lastReportAt: e.lastReportAt,
    });
  }

  private prune(now: Date): void {
    const cutoff = now.getTime() - this.forgetAfterMs;
    for (const e of this.entries.values()) {
      if (!e.connected && e.disconnectedAt && e.disconnectedAt.getTime() <= cutoff) this.entries.delete(e.identity);
    }
    if (this.entries.size < this.maxTracked) return;
    const gone = [...this.entries.values()].filter((e) => !e.connected).sort((a, b) => a.disconnectedAt!.getTime() - b.disconnectedAt!.getTime());
    for (const e of gone) {
      if (this.entries.size < this.maxTracked) break;
      this.entries.delete(e.identity);
    }
  }
}
