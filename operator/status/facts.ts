/**
 * What the status conditions are decided from: one QuicLoadBalancer's observed world reduced to plain facts
 * (gathered by the reconciler from the allocation, the rotation machine and the config server). Pure data.
 */
import type { RotationPhase } from '../rotation/machine.js';

export interface DataPlaneRejection {
  readonly dataPlane: string;
  readonly version: number;
  /** The data plane's NACK detail (field path and problem; never key material). */
  readonly error: string;
}

export interface PortConflict {
  readonly port: number;
  readonly node: string;
  /** namespace/name of the QuicLoadBalancer that holds the port (the earlier one). */
  readonly holder: string;
}

export interface StatusFacts {
  readonly generation: number;
  /** The Service named in spec.backend exists. */
  readonly serviceFound: boolean;
  readonly serviceName: string;
  /** The Service has the port named in spec.backend (checked only when the Service exists). */
  readonly servicePortFound: boolean;
  readonly servicePort: string;
  readonly backends: {
    readonly total: number;
    readonly healthy: number;
    readonly draining: number;
    readonly unassigned: number;
    /** Backends kept from new connections until their new server ID has reached them (a hand-over), and until when (ms). */
    readonly awaitingId?: { readonly count: number; readonly until: number };
  };
  /** Exhaustion message from the allocator, or null. */
  readonly serverIdsExhausted: string | null;
  readonly portConflicts: readonly PortConflict[];
  /** namespace/name of the earlier QuicLoadBalancer that holds the same backend Service, or null. */
  readonly backendHolder: string | null;
  /**
   * Endpoints of the backend Service that an earlier QuicLoadBalancer's backend has too (it gives them their IDs),
   * by holder (sorted): pod names, sorted.
   */
  readonly podsHeldByOthers: readonly { readonly holder: string; readonly pods: readonly string[] }[];
  readonly dataPlanes: {
    readonly connected: number;
    /** Connected data planes whose last ACK is of `snapshotVersion`. */
    readonly inSync: number;
    /** Names of connected data planes not in sync (for messages), at most a few. */
    readonly pending: readonly string[];
    readonly rejections: readonly DataPlaneRejection[];
  };
  /** The latest snapshot version pushed for this load balancer, or null when none could be built. */
  readonly snapshotVersion: number | null;
  /** Why the key is unusable (user Secret missing or invalid), or null. */
  readonly keyProblem: string | null;
  readonly rotation: {
    readonly phase: RotationPhase;
    readonly activeConfigId: number | null;
    readonly activeKeyFingerprint: string | null;
    /** The config being introduced, when any. */
    readonly acceptingConfigId: number | null;
    /** Configs still decodable for older connections. */
    readonly drainingConfigIds: readonly number[];
    /** Connected data planes that have not ACKed the accepting config. */
    readonly waitingFor: readonly string[];
    /** Promotion held until `until` (ms) while serving nodes (`nodes`) have no data plane connected to this operator process yet. */
    readonly reconnecting: { readonly until: number; readonly nodes: readonly string[] } | null;
    /** Latest time a draining config retires (ms), or null. */
    readonly drainEndsAt: number | null;
    readonly nextRotationAt: number | null;
    /** The rotation machine's blocked message, or null. */
    readonly blocked: string | null;
  };
}

/** "a, b, c and 4 more" */
export function listNames(names: readonly string[], max = 3): string {
  if (names.length <= max) return names.join(', ');
  return `${names.slice(0, max).join(', ')} and ${names.length - max} more`;
}
