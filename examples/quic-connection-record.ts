/**
 * A bounded diagnostic record of one @matrixai/quic server connection (example code): per peer address (each data
 * plane's upstream socket is one), datagrams in and out, when the last one went each way and the first bytes of the
 * DCIDs this backend sent with; the path events quiche reports (New, Validated, FailedValidation, Closed,
 * ReusedSourceConnectionId; PeerMigrated only counted: behind alternating data planes there is one per path change);
 * quiche's own per-path statistics when the connection ends. It is what tells, after a stalled transfer, which path
 * the backend sent on last and whether the client was still sending (docs/backends.md, item 9).
 */

/** The quiche calls the record reads (the native connection of @matrixai/quic 2.0.9). */
export interface NativePathApi {
  pathEventNext(): unknown;
  pathStats(): unknown[];
  availableDcids(): number;
  isClosed(): boolean;
  isTimedOut(): boolean;
}

export interface PeerRecord {
  in: number;
  out: number;
  /** ms after the connection started */
  lastIn: number;
  lastOut: number;
  /** First 8 bytes (hex) of the DCIDs this backend sent to the peer with, at most 4. */
  dcids: string[];
}

export interface ConnectionSummary {
  ms: number;
  peers: Record<string, PeerRecord>;
  events: Record<string, number>;
  /** The last path events other than PeerMigrated, "<ms> <type> <peer>". */
  recent: string[];
  availableDcids?: number;
  timedOut?: boolean;
  /** quiche's per-path statistics (peer, active, packets and bytes each way, lost, retransmitted, cwnd, rtt). */
  paths?: unknown[];
}

const MAX_PEERS = 16;
const MAX_RECENT = 20;
const MAX_EVENTS_PER_DRAIN = 64;

export class ConnectionRecord {
  private readonly t0 = Date.now();
  private readonly peers = new Map<string, PeerRecord>();
  private readonly events: Record<string, number> = {};
  private readonly recent: string[] = [];

  constructor(private readonly native: NativePathApi) {}

  private peer(address: string): PeerRecord | null {
    let p = this.peers.get(address);
    if (!p) {
      if (this.peers.size >= MAX_PEERS) return null;
      p = { in: 0, out: 0, lastIn: -1, lastOut: -1, dcids: [] };
      this.peers.set(address, p);
    }
    return p;
  }

  /** Peer addresses the connection exchanged datagrams with (at most 16). */
  peerCount(): number {
    return this.peers.size;
  }

  /** A probe the backend sent on a path other than the active one (example-quic-backend.ts, workaround 7). */
  probed(): void {
    this.events.probesOnOtherPaths = (this.events.probesOnOtherPaths ?? 0) + 1;
  }

  received(address: string): void {
    const p = this.peer(address);
    if (p) {
      p.in++;
      p.lastIn = Date.now() - this.t0;
    }
    this.drainEvents();
  }

  sent(address: string, datagram: Uint8Array): void {
    const p = this.peer(address);
    if (p) {
      p.out++;
      p.lastOut = Date.now() - this.t0;
      const dcid = datagram.length > 9 && (datagram[0] & 0x80) === 0 ? Buffer.from(datagram.subarray(1, 9)).toString('hex') : 'long';
      if (p.dcids.length < 4 && !p.dcids.includes(dcid)) p.dcids.push(dcid);
    }
    this.drainEvents();
  }

  /** quiche queues path events until the application reads them (@matrixai/quic never does): read and count them. */
  drainEvents(): void {
    for (let i = 0; i < MAX_EVENTS_PER_DRAIN; i++) {
      let ev: unknown;
      try {
        ev = this.native.pathEventNext();
      } catch {
        return;
      }
      if (ev === null || ev === undefined || typeof ev !== 'object') return;
      const e = ev as { type?: unknown; peer?: { host: string; port: number }; new?: unknown };
      const type = typeof e.type === 'string' ? e.type : 'unknown';
      this.events[type] = (this.events[type] ?? 0) + 1;
      if (type === 'PeerMigrated') continue;
      const peer = e.peer ? `${e.peer.host}:${e.peer.port}` : JSON.stringify(e.new ?? '');
      this.recent.push(`${Date.now() - this.t0} ${type} ${peer}`);
      if (this.recent.length > MAX_RECENT) this.recent.shift();
    }
  }

  /** Whether quiche closed the connection (it may do so without telling @matrixai/quic: no usable path left). */
  closed(): boolean {
    try {
      return this.native.isClosed();
    } catch {
      return true;
    }
  }

  summary(): ConnectionSummary {
    this.drainEvents();
    const out: ConnectionSummary = { ms: Date.now() - this.t0, peers: Object.fromEntries(this.peers), events: { ...this.events }, recent: [...this.recent] };
    try {
      out.availableDcids = this.native.availableDcids();
      out.timedOut = this.native.isTimedOut();
      out.paths = this.native.pathStats().map((p) => {
        const s = p as Record<string, unknown> & { peerHost?: { host: string; port: number } };
        const n = (v: unknown) => (typeof v === 'bigint' ? Number(v) : v);
        return {
          peer: s.peerHost ? `${s.peerHost.host}:${s.peerHost.port}` : '?', active: s.active, recv: n(s.recv), sent: n(s.sent), lost: n(s.lost),
          retrans: n(s.retrans), sentBytes: n(s.sentBytes), recvBytes: n(s.recvBytes), cwnd: n(s.cwnd), rtt: n(s.rtt),
        };
      });
    } catch {
      /* the native connection is gone */
    }
    return out;
  }
}
