/**
 * The whole QuicLoadBalancer status (the CRD's status schema) from the facts: the four conditions with their
 * bookkeeping, counts and summaries for `kubectl get qlb`, the live configs as fingerprints. Pure; keys never
 * appear (the rotation state holds fingerprints only).
 */
import type { MachineState } from '../rotation/machine.js';
import { metaTime, setCondition, type Condition } from './conditions.js';
import { CONFIG_SYNCED, configSyncedCondition } from './config-synced.js';
import { DEGRADED, degradedCondition } from './degraded.js';
import type { StatusFacts } from './facts.js';
import { KEY_ROTATION, keyRotationCondition } from './key-rotation.js';
import { READY, readyCondition } from './ready.js';

export interface QuicLoadBalancerStatus {
  observedGeneration: number;
  conditions: Condition[];
  backends: { total: number; healthy: number; draining: number; unassigned: number; summary: string };
  dataPlanes: { connected: number; inSync: number; summary: string };
  activeConfigId?: number;
  lastRotationTime?: string;
  snapshotVersion?: number;
  rotation: {
    phase: string;
    lastTrigger: string;
    configs: { id: number; state: 'Accepting' | 'Active' | 'Draining'; since: string; keyFingerprint?: string }[];
  };
  serverIds?: { assigned: number; quarantined: number; capacity: number };
}

const STATE_WORD = { accepting: 'Accepting', active: 'Active', draining: 'Draining' } as const;

export function buildStatus(input: {
  readonly facts: StatusFacts;
  readonly previousConditions: readonly Condition[] | undefined;
  readonly rotation: MachineState;
  /** From the allocation; absent when it did not run (Service missing). */
  readonly serverIds?: { readonly assigned: number; readonly quarantined: number; readonly capacity: bigint };
  readonly now: number;
}): QuicLoadBalancerStatus {
  const { facts: f, now } = input;
  let conditions = [...(input.previousConditions ?? [])];
  conditions = setCondition(conditions, READY, readyCondition(f), f.generation, now);
  conditions = setCondition(conditions, CONFIG_SYNCED, configSyncedCondition(f), f.generation, now);
  conditions = setCondition(conditions, DEGRADED, degradedCondition(f), f.generation, now);
  conditions = setCondition(conditions, KEY_ROTATION, keyRotationCondition(f), f.generation, now);
  const r = input.rotation;
  const status: QuicLoadBalancerStatus = {
    observedGeneration: f.generation,
    conditions,
    backends: { ...f.backends, summary: `${f.backends.healthy}/${f.backends.total}` },
    dataPlanes: { connected: f.dataPlanes.connected, inSync: f.dataPlanes.inSync, summary: `${f.dataPlanes.inSync}/${f.dataPlanes.connected}` },
    rotation: {
      phase: f.rotation.phase,
      lastTrigger: (r.lastTriggers.spec ?? '').slice(0, 63),
      configs: r.configs.map((c) => ({
        id: c.configId,
        state: STATE_WORD[c.state],
        since: metaTime(c.since),
        ...(c.keyFingerprint !== null ? { keyFingerprint: c.keyFingerprint } : {}),
      })),
    },
  };
  if (f.rotation.activeConfigId !== null) status.activeConfigId = f.rotation.activeConfigId;
  if (r.lastRotationAt !== null) status.lastRotationTime = metaTime(r.lastRotationAt);
  if (f.snapshotVersion !== null) status.snapshotVersion = f.snapshotVersion;
  if (input.serverIds) {
    const cap = input.serverIds.capacity;
    status.serverIds = {
      assigned: input.serverIds.assigned,
      quarantined: input.serverIds.quarantined,
      capacity: cap > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(cap),
    };
  }
  return status;
}
