/**
 * What the pod network (pod-worker.ts) needs of a journey backend, whatever QUIC stack it runs:
 *   - `matrixai`: backend.ts, @matrixai/quic 2.0.9 (quiche 0.18) in the worker's process, minting its CIDs with the
 *     project's ServerCidGenerator;
 *   - `quic-go`: quicgo-backend.ts, a child process running test/journey/quicgo-backend (quic-go, its own QUIC-LB
 *     encoder in Go), for clients that move between paths: quiche 0.18 does not always resend what it last sent on a
 *     path the connection left, and the transfer can stall (docs/backends.md item 9); quic-go does.
 * Both audit every datagram their socket receives with the same rule (backend.ts's module comment). The one part of
 * the rule that needs the other backends (an Initial whose DCID another backend issued) is settled by the pod worker
 * at audit time: each backend reports the Initial and 0-RTT DCIDs it received but did not issue (`unownedInitial`),
 * and the worker asks every backend which of those it issued.
 */
export type BackendStack = 'matrixai' | 'quic-go';

export interface BackendAudit {
  datagrams: number;
  shortHeader: number;
  /** Datagrams whose DCID this backend did not issue (backend.ts's module comment: the exact rule). */
  foreignCids: number;
  /** Up to 10 foreign DCIDs (hex), with the packet kind ("short", "handshake", "retry"; "initial" also for 0-RTT). */
  examples: string[];
  /** Long-header datagrams of another version (health probes). */
  probes: number;
  initial: number;
  handshake: number;
  connections: number;
  requests: number;
  responses: number;
  /** CIDs this instance minted (the matrixai backend: those it still remembers). */
  issued: number;
  /**
   * Minted CIDs the backend forgot to bound its memory (the matrixai backend keeps its last 100 000, the quic-go one
   * 200 000): an Initial carrying one at another backend would not be settled as foreign.
   */
  issuedForgotten: number;
  /** Of those, how many were 0b111 (unroutable: no server ID or config yet). */
  unroutableIssued: number;
  connectionErrors: string[];
  stopped: boolean;
  /**
   * Initial and 0-RTT datagrams with a DCID this backend did not issue that came after `unownedInitial` was full
   * (MAX_UNOWNED_INITIAL distinct DCIDs): never settled, so the audit cannot say they were not foreign.
   */
  unsettledInitials: number;
}

export interface BackendStats {
  /** The audit without the Initials settled across backends (they are in `unownedInitial`). */
  audit: BackendAudit;
  /** DCIDs (hex) of v1 Initial and 0-RTT datagrams this backend did not issue, with how many datagrams carried each. */
  unownedInitial: Map<string, number>;
}

/** What the generator mints now (active config, server ID, or why it mints 0b111 CIDs). */
export interface GeneratorInfo {
  activeConfigId: number | null;
  serverId: string | null;
  cidLength: number;
  reason: string | null;
}

/** What every backend is started with. */
export interface PodBackendOptions {
  name: string;
  /** The pod IP to listen on. */
  host: string;
  port: number;
  /** The kubelet-mounted directory holding configs.json and server-id. */
  dir: string;
  tls: { key: string; cert: string };
  log: (line: string) => void;
  /** QUIC max_idle_timeout (default 120 s: a client spacing its requests out sets the effective one). */
  idleTimeoutMs?: number;
}

export interface PodBackend {
  readonly name: string;
  /** The pod IP it listens on. */
  readonly host: string;
  readonly stack: BackendStack;
  /** What the generator mints (matrixai: now; quic-go: when it started listening). */
  readonly generator: GeneratorInfo;
  stats(): Promise<BackendStats>;
  /** Which of these CIDs (hex) this backend issued (answers after stop() too). */
  issued(cids: string[]): Promise<Set<string>>;
  /**
   * Per client connection (the client's first SCID, hex): responses this backend served on it, and how many distinct
   * CIDs of this backend its client sent 1-RTT datagrams to (2 or more: it migrated to a new CID). Unknown: absent.
   */
  clients(clientCids: string[]): Promise<Map<string, { responses: number; dcids: number }>>;
  /** Closes the backend's connections and socket; the audit and issued() stay available. */
  stop(): Promise<void>;
  /** Ends whatever stop() kept (a child process); idempotent. */
  dispose(): Promise<void>;
}

/** Bounds of the per-backend records that clients can grow. */
export const MAX_UNOWNED_INITIAL = 20_000;
export const MAX_EXAMPLES = 10;
