/**
 * One QuicLoadBalancer's desired state, from its observed world (STYLE.md "Applied to quiclb"): pure. The reconciler
 * gathers `Observed` (informer caches, the ID records and configs Secret it read, the config server's view of the
 * data planes), calls computeDesired(), writes only what differs, publishes the snapshot, and then builds the status
 * with statusFacts() + operator/status/status.ts once it knows the published version.
 *
 * Guard: when the backend Service or its port is missing, the ID records are left as they are (no pod is released
 * because a Service was briefly deleted or renamed); the snapshot keeps no servers then.
 *
 * Pods that another load balancer's backend has too and that one owns (port-claims.ts podOwnership) are left out of
 * the allocation (so an ID this one had for such a pod is released and quarantined, as for a pod that left), the
 * annotations and the snapshot. A pod handed over to this one is 'draining' until its new ID can have reached it.
 */
import { defaultShortDcidLength, validateSnapshot, type DataplaneSnapshot, type SnapshotServer } from '../../lib/config/snapshot.js';
import { allocateServerIds, type AllocationResult, type EndpointObservation, type ServerIdRecords } from '../allocation/server-ids.js';
import { keyFingerprint } from '../../lib/config/key-fingerprint.js';
import { encodeConfigsSecret } from '../rotation/secret-codec.js';
import { liveConfigs, stepRotation, type DataPlaneAcks, type MachineState, type RotationResult } from '../rotation/machine.js';
import type { StatusFacts } from '../status/facts.js';
import { decideHealth, staleAfterMs, type DataPlaneHealth } from './health-verdict.js';
import { backendHolder, claimFor, podOwnership, portConflicts, servingNodes, type BackendClaim, type NodeView, type PortClaim } from './port-claims.js';
import { previousServerIdValue, readSpec, ROTATE_ANNOTATION, SERVER_ID_PROPAGATION_MS, type QuicLoadBalancerSpec } from './spec.js';

/** discovery.k8s.io/v1 EndpointSlice, reduced (client-node's V1EndpointSlice fits as is). */
export interface EndpointSliceView {
  readonly addressType: string;
  readonly ports?: readonly { readonly name?: string; readonly port?: number; readonly protocol?: string }[];
  readonly endpoints?: readonly {
    readonly addresses: readonly string[];
    readonly conditions?: { readonly ready?: boolean; readonly serving?: boolean; readonly terminating?: boolean };
    readonly targetRef?: { readonly kind?: string; readonly name?: string; readonly uid?: string };
    readonly nodeName?: string;
  }[];
}

/** A Service's ports (`{ ports: service.spec.ports }`). */
export interface ServiceView {
  readonly ports: readonly { readonly name?: string; readonly port: number; readonly protocol?: string }[];
}

/** A connected data plane, as the config server sees it, restricted to this load balancer. */
export interface DataPlaneObservation {
  readonly identity: string;
  readonly nodeName: string;
  /** Config ids and fingerprints of this load balancer in the snapshot the data plane last ACKed. */
  readonly ackedConfigs: DataPlaneAcks['ackedConfigs'];
  /** Its latest health entries for this load balancer's servers. */
  readonly health: DataPlaneHealth;
  /** Its per-config packet counters for this load balancer. */
  readonly traffic: ReadonlyMap<number, number>;
}

/** What the pod cache says of one backend pod (by UID), for the hand-over and ownership rules. */
export interface PodView {
  /** quiclb.io/server-id, or null without it. */
  readonly serverId: string | null;
  /** quiclb.io/server-id-changed-at (ms), or null without it (or unreadable). */
  readonly changedAt: number | null;
  /** Keys (namespace/name) of the load balancers whose configs Secret the pod mounts (observe.ts configsMountedBy). */
  readonly mounts: readonly string[];
  /** quiclb.io/server-id-previous (`<load balancer UID>/<hex>`, spec.ts readPreviousServerId), or null/absent. */
  readonly previous?: string | null;
}

export interface Observed {
  readonly namespace: string;
  readonly name: string;
  /** metadata.uid (quiclb.io/server-id-previous names it); without it no pod is spared the hand-over drain. */
  readonly uid?: string;
  readonly generation: number;
  readonly createdAt: number;
  readonly annotations: Readonly<Record<string, string>>;
  /** The object's spec as stored (validated again by readSpec). */
  readonly spec: unknown;
  readonly service: ServiceView | null;
  readonly endpointSlices: readonly EndpointSliceView[];
  readonly records: ServerIdRecords;
  readonly rotation: MachineState;
  /** Keys of the live configs (config id -> key), from the configs Secret. */
  readonly keys: ReadonlyMap<number, Uint8Array>;
  /** With spec.encryption.keySecretRef: the key, or why it is unusable. null without a keySecretRef. */
  readonly userKey: { readonly key: Uint8Array } | { readonly problem: string } | null;
  /** A fresh random key, used if a rotation starts now (generated key mode). */
  readonly freshKey: Uint8Array;
  readonly nodes: readonly NodeView[];
  /** Port claims of every other QuicLoadBalancer (port-claims.ts claimsOf). */
  readonly otherClaims: readonly PortClaim[];
  /** Backend pods of every other QuicLoadBalancer of the namespace (observe.ts backendClaimsOf). */
  readonly otherBackends: readonly BackendClaim[];
  /** The cached pods of the backend Service's endpoints (any port), by UID; a pod not cached is absent. */
  readonly pods?: ReadonlyMap<string, PodView>;
  /** How long a pod whose server ID changed may still mint with the previous one (default SERVER_ID_PROPAGATION_MS). */
  readonly serverIdPropagationMs?: number;
  readonly dataPlanes: readonly DataPlaneObservation[];
  /** Until when data planes may still be reconnecting to this operator process (it began acting recently). */
  readonly reconnectUntil?: number;
  readonly now: number;
}

export interface EventNote {
  readonly type: 'Normal' | 'Warning';
  readonly reason: string;
  readonly message: string;
  /** A key lifecycle step: also an audit log line. */
  readonly audit: boolean;
  /**
   * transition: reported by the call that made the change (emit it once the write that records the change succeeded);
   * state: true for as long as the problem lasts (emit it when the Degraded condition changes, not on every reconcile).
   */
  readonly kind: 'transition' | 'state';
}

export interface Desired {
  readonly spec: QuicLoadBalancerSpec;
  /** null when the Service or its port is missing (records unchanged). */
  readonly allocation: AllocationResult | null;
  readonly rotation: RotationResult;
  /** The load balancer for the data planes (version 0: the publisher sets it), or null when none can be built. */
  readonly snapshot: DataplaneSnapshot | null;
  /** Why there is no snapshot, when there is none. */
  readonly snapshotProblem: string | null;
  /** Nodes whose data planes serve it: selected by spec.nodeSelector, minus port conflicts; none while another holds its backend Service. */
  readonly nodes: readonly string[];
  /** Data of the configs Secret (backends mount it; the operator restores its rotation from it: secret-codec.ts), or null when there is no config yet. */
  readonly configsSecretData: Readonly<Record<string, string>> | null;
  /** Backend pod name -> server ID (hex), for the quiclb.io/server-id annotation. */
  readonly podServerIds: ReadonlyMap<string, string>;
  /** Backend pod name -> the UID the ID is for (the annotation is written only on that pod). */
  readonly podUids: ReadonlyMap<string, string>;
  /** Pods whose ID was released now and whose quiclb.io/server-id annotation comes off if it still is that ID. */
  readonly clearPods: readonly { readonly podName: string; readonly podUid: string; readonly serverId: string }[];
  readonly events: readonly EventNote[];
  /** Reconcile again after this long even without a change (ms), or null. */
  readonly requeueAfterMs: number | null;
  /** Other load balancers that want pods this one owns -> those pods (reconcile one when its list changes). */
  readonly waiting: ReadonlyMap<string, readonly string[]>;
  /** Facts for the status except the data planes' sync state (statusFacts() adds it). */
  readonly facts: Omit<StatusFacts, 'dataPlanes' | 'snapshotVersion'>;
}

/** Name of the Secret backends mount (the live configs and keys), per QuicLoadBalancer. */
export function configsSecretName(qlbName: string): string {
  return `${qlbName}-quiclb-configs`;
}

/** The Service port selected by spec.backend, and the EndpointSlice port name that carries it. */
function servicePort(spec: QuicLoadBalancerSpec, service: ServiceView | null): { name: string } | null {
  if (!service) return null;
  const p = service.ports.find((x) => (spec.backend.port !== undefined ? x.port === spec.backend.port : x.name === spec.backend.portName));
  return p ? { name: p.name ?? '' } : null;
}

interface PodAddress {
  readonly host: string;
  readonly port: number;
  readonly family: 4 | 6;
}

/** Endpoints of the slices (IPv4/IPv6 only, with the selected port) as allocation input, and one address per pod (IPv4 first). */
function readEndpoints(slices: readonly EndpointSliceView[], portName: string): { endpoints: EndpointObservation[]; addresses: Map<string, PodAddress> } {
  const endpoints: EndpointObservation[] = [];
  const addresses = new Map<string, PodAddress>();
  for (const s of slices) {
    if (s.addressType !== 'IPv4' && s.addressType !== 'IPv6') continue;
    const port = s.ports?.find((p) => (p.name ?? '') === portName && (p.protocol ?? 'TCP') === 'UDP')?.port;
    if (port === undefined) continue;
    const family = s.addressType === 'IPv4' ? 4 : 6;
    for (const e of s.endpoints ?? []) {
      if (e.addresses.length === 0) continue;
      const pod = e.targetRef?.kind === 'Pod' && e.targetRef.uid && e.targetRef.name ? e.targetRef : null;
      const podUid = pod ? pod.uid! : `address:${e.addresses[0]}`;
      const podName = pod ? pod.name! : e.addresses[0];
      endpoints.push({
        podUid,
        podName,
        addresses: e.addresses,
        ready: e.conditions?.ready,
        serving: e.conditions?.serving,
        terminating: e.conditions?.terminating,
        ...(e.nodeName !== undefined ? { nodeName: e.nodeName } : {}),
      });
      const prev = addresses.get(podUid);
      if (!prev || (prev.family === 6 && family === 4)) addresses.set(podUid, { host: e.addresses[0], port, family });
    }
  }
  return { endpoints, addresses };
}

function podUids(endpoints: readonly EndpointObservation[]): Set<string> {
  return new Set(endpoints.filter((e) => !e.podUid.startsWith('address:')).map((e) => e.podUid));
}

/**
 * The pods (UIDs) a load balancer claims (port-claims.ts podOwnership): those it would give server IDs to. Without a
 * readable spec (null) or when the Service lacks its port, it cannot tell the port: every pod endpoint of the slices,
 * whatever the port (its last published snapshot may still route them). Without the Service: none.
 */
export function backendPods(spec: QuicLoadBalancerSpec | null, service: ServiceView | null, slices: readonly EndpointSliceView[]): Set<string> {
  if (!service) return new Set();
  const port = spec === null ? null : servicePort(spec, service);
  if (port) return podUids(readEndpoints(slices, port.name).endpoints);
  const pods = new Set<string>();
  for (const s of slices) {
    if (s.addressType !== 'IPv4' && s.addressType !== 'IPv6') continue;
    for (const e of s.endpoints ?? []) if (e.addresses.length > 0 && e.targetRef?.kind === 'Pod' && e.targetRef.uid && e.targetRef.name) pods.add(e.targetRef.uid);
  }
  return pods;
}

function rotationNotes(r: RotationResult): EventNote[] {
  return r.actions.flatMap((a): EventNote[] => {
    const fp = (f: string | null): string => (f ? `, key ${f}` : '');
    switch (a.kind) {
      case 'created':
        return [{ type: 'Normal', reason: 'ConfigCreated', message: `config ${a.configId} created and active${fp(a.keyFingerprint)}`, audit: true, kind: 'transition' }];
      case 'started':
        return [{ type: 'Normal', reason: 'RotationStarted', message: `rotation (${a.reason}): config ${a.configId} accepting${fp(a.keyFingerprint)}, config ${a.activeConfigId} still active`, audit: true, kind: 'transition' }];
      case 'abandoned':
        return [{ type: 'Normal', reason: 'RotationAbandoned', message: `config ${a.configId} dropped before use: ${a.why}`, audit: true, kind: 'transition' }];
      case 'promoted':
        return [{ type: 'Normal', reason: 'ConfigPromoted', message: `config ${a.configId} active for backends, config ${a.demotedConfigId} draining`, audit: true, kind: 'transition' }];
      case 'retired':
        return [{ type: 'Normal', reason: 'ConfigRetired', message: `config ${a.configId} retired (${a.why === 'quiet' ? 'no traffic' : 'drain period ended'})`, audit: true, kind: 'transition' }];
      case 'blocked':
        return [{ type: 'Warning', reason: 'RotationBlocked', message: a.message, audit: true, kind: 'state' }];
      case 'waiting-for-acks':
      case 'waiting-for-reconnects':
        return [];
    }
  });
}

const FEW = 8;
function ids(list: readonly string[]): string {
  return list.length <= FEW ? list.join(', ') : `${list.slice(0, FEW).join(', ')} and ${list.length - FEW} more`;
}

export function computeDesired(o: Observed): Desired {
  const spec = readSpec(o.spec);
  const key = `${o.namespace}/${o.name}`;
  const events: EventNote[] = [];

  // Nodes: selected, minus those where an earlier load balancer holds one of our ports; none when an earlier one
  // holds our backend Service (then no IDs, no annotations, no snapshot: the pods and data planes are the holder's).
  const mine = claimFor(key, o.createdAt, spec, o.nodes);
  const holder = backendHolder(mine, o.otherClaims);
  const conflicts = portConflicts(mine, o.otherClaims);
  const conflictNodes = new Set(conflicts.map((c) => c.node));
  const nodes = servingNodes(mine, o.otherClaims);
  const serving = new Set(nodes);
  const dataPlanes = o.dataPlanes.filter((d) => serving.has(d.nodeName));
  if (conflicts.length > 0) {
    events.push({ type: 'Warning', reason: 'PortConflict', message: `not served on ${conflictNodes.size} node(s): port ${conflicts[0].port} on ${conflicts[0].node} belongs to ${conflicts[0].holder}`, audit: false, kind: 'state' });
  }

  if (holder !== null) {
    events.push({ type: 'Warning', reason: 'BackendConflict', message: `Service ${spec.backend.serviceName} belongs to QuicLoadBalancer ${holder}: no server IDs assigned, not served`, audit: false, kind: 'state' });
  }

  // Server IDs (only when the Service and its port exist and no earlier load balancer holds the Service), for the
  // pods no other load balancer owns.
  const port = servicePort(spec, o.service);
  const read = port && holder === null ? readEndpoints(o.endpointSlices, port.name) : { endpoints: [], addresses: new Map<string, PodAddress>() };
  const ownership = podOwnership(mine, podUids(read.endpoints), o.otherBackends, (uid) => o.pods?.get(uid)?.mounts);
  const endpoints = read.endpoints.filter((e) => !ownership.heldByOthers.has(e.podUid));
  const addresses = read.addresses;
  const heldPods = new Map<string, Set<string>>(); // holder -> pod names
  for (const e of read.endpoints) {
    const h = ownership.heldByOthers.get(e.podUid);
    if (h !== undefined) heldPods.set(h, (heldPods.get(h) ?? new Set()).add(e.podName));
  }
  const podsHeldByOthers = [...heldPods].sort(([a], [b]) => (a < b ? -1 : 1)).map(([h, names]) => ({ holder: h, pods: [...names].sort() }));
  if (podsHeldByOthers.length > 0) {
    // Holders only, no count: the Event is not emitted again as pods come and go (the Degraded condition counts them).
    const by = podsHeldByOthers.length === 1 ? `QuicLoadBalancer ${podsHeldByOthers[0].holder}` : `QuicLoadBalancers ${ids(podsHeldByOthers.map((h) => h.holder))}`;
    events.push({ type: 'Warning', reason: 'BackendPodConflict', message: `pods of Service ${spec.backend.serviceName} belong to ${by}: no server IDs assigned to them, not routed to`, audit: false, kind: 'state' });
  }
  const allocation = port && holder === null
    ? allocateServerIds({ records: o.records, endpoints, length: spec.connectionIds.serverIdLength, quarantineMs: spec.connectionIds.serverIdQuarantineMs, now: o.now })
    : null;
  if (allocation) {
    if (allocation.allocated.length > 0) events.push({ type: 'Normal', reason: 'ServerIDsAssigned', message: `assigned server ID(s) ${ids(allocation.allocated)}`, audit: false, kind: 'transition' });
    if (allocation.releasedNow.length > 0) events.push({ type: 'Normal', reason: 'ServerIDsReleased', message: `released server ID(s) ${ids(allocation.releasedNow)} (quarantined)`, audit: false, kind: 'transition' });
    if (allocation.exhausted) events.push({ type: 'Warning', reason: 'ServerIDsExhausted', message: allocation.exhausted.message, audit: false, kind: 'state' });
    for (const r of allocation.repairs) events.push({ type: 'Warning', reason: 'ServerIDRecordRepaired', message: r, audit: false, kind: 'transition' });
  }

  // Keys and rotation.
  const userKey = o.userKey !== null && 'key' in o.userKey ? o.userKey.key : null;
  const keyProblem = o.userKey !== null && 'problem' in o.userKey ? o.userKey.problem : null;
  const newKey = spec.encryption.encrypted ? (spec.encryption.keySecretRef ? userKey : o.freshKey) : null;
  const traffic = new Map<number, number>();
  for (const d of dataPlanes) for (const [id, n] of d.traffic) traffic.set(id, (traffic.get(id) ?? 0) + n);
  const unconnected = nodes.filter((n) => !dataPlanes.some((d) => d.nodeName === n));
  const reconnectingUntil = o.reconnectUntil !== undefined && o.now < o.reconnectUntil && unconnected.length > 0 ? o.reconnectUntil : undefined;
  const rotation = stepRotation({
    state: o.rotation,
    desired: {
      serverIdLength: spec.connectionIds.serverIdLength,
      nonceLength: spec.connectionIds.nonceLength,
      lengthSelfEncoded: spec.connectionIds.lengthSelfEncoded,
      encrypted: spec.encryption.encrypted,
    },
    userKeyFingerprint: spec.encryption.encrypted && userKey ? keyFingerprint(userKey) : null,
    newKey: { key: newKey, keyFingerprint: newKey ? keyFingerprint(newKey) : null },
    dataPlanes: dataPlanes.map((d) => ({ name: d.identity, ackedConfigs: d.ackedConfigs })),
    ...(reconnectingUntil !== undefined ? { reconnectingUntil } : {}),
    traffic,
    settings: { intervalMs: spec.encryption.keySecretRef ? null : spec.rotation.intervalMs, drainMs: spec.rotation.drainMs, quietMs: spec.rotation.quietMs },
    triggers: { spec: spec.rotation.trigger, annotation: o.annotations[ROTATE_ANNOTATION] ?? '' },
    now: o.now,
  });
  events.push(...rotationNotes(rotation));
  const keys = new Map(o.keys);
  for (const [id, k] of rotation.newKeys) keys.set(id, k);

  // Health verdicts, servers, snapshot.
  const assignments = allocation?.assignments ?? [];
  const verdicts = decideHealth(
    assignments.map((a) => a.podName),
    dataPlanes.map((d) => d.health),
    staleAfterMs(spec.healthCheck.intervalMs, spec.healthCheck.timeoutMs),
    o.now,
  );
  // A pod whose annotation is another ID (a hand-over) or changed lately may still mint with its previous ID: no
  // new connections to it until its new ID has had time to reach it (spec.ts SERVER_ID_PROPAGATION_MS). Unless the
  // change was this load balancer taking off the very ID it gives the pod again (quiclb.io/server-id-previous, with
  // our UID: same keys) and the annotation is that ID or none: whatever the pod still mints is routed to it.
  const propagationMs = o.serverIdPropagationMs ?? SERVER_ID_PROPAGATION_MS;
  const handOverEnds: number[] = [];
  const handingOver = new Set<string>();
  for (const a of assignments) {
    const pod = o.pods?.get(a.podUid);
    if (!pod) continue;
    const foreign = pod.serverId !== null && pod.serverId !== a.serverId;
    const back = !foreign && o.uid !== undefined && pod.previous === previousServerIdValue(o.uid, a.serverId);
    const until = foreign ? o.now + propagationMs : pod.changedAt !== null && !back ? Math.min(pod.changedAt, o.now) + propagationMs : null;
    if (until === null || until <= o.now) continue;
    handingOver.add(a.podUid);
    handOverEnds.push(until);
  }
  const servers: SnapshotServer[] = [];
  for (const a of assignments) {
    const addr = addresses.get(a.podUid);
    if (!addr) continue;
    servers.push({
      name: a.podName,
      serverId: Buffer.from(a.serverId, 'hex'),
      address: addr,
      weight: 1,
      state: handingOver.has(a.podUid) ? 'draining' : a.state,
      verdict: spec.healthCheck.enabled ? (verdicts.get(a.podName) ?? 'healthy') : 'healthy',
    });
  }
  let snapshot: DataplaneSnapshot | null = null;
  let snapshotProblem: string | null = null;
  let configsSecretData: Record<string, string> | null = null;
  if (rotation.state.configs.length === 0) {
    snapshotProblem = 'no QUIC-LB config yet (no key)';
  } else {
    try {
      const configs = liveConfigs(rotation.state, keys);
      configsSecretData = encodeConfigsSecret(rotation.state, keys);
      const listenHosts = spec.listen.addresses.length > 0 ? spec.listen.addresses : ['0.0.0.0'];
      snapshot = validateSnapshot({
        version: 0,
        name: key,
        listen: listenHosts.flatMap((host) => spec.listen.ports.map((p) => ({ host, port: p, family: host.includes(':') ? (6 as const) : (4 as const) }))),
        configs,
        servers,
        flows: { maxFlows: spec.fallback.maxFlows, idleTimeoutMs: spec.fallback.flowIdleTimeoutMs },
        health: {
          enabled: spec.healthCheck.enabled,
          intervalMs: spec.healthCheck.intervalMs,
          timeoutMs: spec.healthCheck.timeoutMs,
          failuresThreshold: spec.healthCheck.failureThreshold,
          successesThreshold: spec.healthCheck.successThreshold,
        },
        shortDcidLength: defaultShortDcidLength(configs),
        routing: spec.routing,
      });
    } catch (e) {
      if (!(e instanceof Error)) throw e; // ConfigError from validateSnapshot, or a key that does not match its record
      snapshot = null;
      configsSecretData = null;
      snapshotProblem = e.message;
    }
  }
  if (holder !== null && snapshot !== null) snapshot = null; // its own configs Secret is kept (no backend of the holder reads it)

  const podServerIds = new Map<string, string>();
  const uidsByName = new Map<string, string>();
  for (const a of assignments) {
    if (a.podUid.startsWith('address:')) continue;
    podServerIds.set(a.podName, a.serverId);
    uidsByName.set(a.podName, a.podUid);
  }
  // IDs released now of pods no other load balancer's backend has (one that has it writes its own): their
  // annotation comes off if the cache still shows that ID, so the pod mints unroutable CIDs, not a stale ID.
  const releasedNow = new Set(allocation?.releasedNow ?? []);
  const clearPods = o.records.assigned
    .filter((r) => releasedNow.has(r.id) && !r.podUid.startsWith('address:') && !o.otherBackends.some((c) => c.pods.has(r.podUid)))
    .map((r) => ({ podName: r.podName, podUid: r.podUid, serverId: r.id }));

  const wakeups = [
    rotation.nextCheckAt,
    allocation?.exhausted?.nextReleaseAt ?? null,
    ...(allocation?.records.released.map((r) => r.releasedAt + spec.connectionIds.serverIdQuarantineMs) ?? []),
    ...handOverEnds,
  ].filter((t): t is number => t !== null);
  const requeueAfterMs = wakeups.length > 0 ? Math.max(0, Math.min(...wakeups) - o.now) : null;

  const active = rotation.state.configs.find((c) => c.state === 'active') ?? null;
  const accepting = rotation.state.configs.find((c) => c.state === 'accepting');
  const reconnectWait = rotation.actions.find((a) => a.kind === 'waiting-for-reconnects');
  const blocked = rotation.actions.find((a) => a.kind === 'blocked');
  const drainEnds = rotation.state.configs.filter((c) => c.state === 'draining').map((c) => c.since + spec.rotation.drainMs);
  const facts: Desired['facts'] = {
    generation: o.generation,
    serviceFound: o.service !== null,
    serviceName: spec.backend.serviceName,
    servicePortFound: port !== null,
    servicePort: spec.backend.port !== undefined ? String(spec.backend.port) : (spec.backend.portName ?? ''),
    backends: {
      total: assignments.length,
      healthy: servers.filter((s) => s.state === 'active' && s.verdict !== 'unhealthy').length,
      draining: assignments.filter((a) => a.phase === 'terminating').length,
      unassigned: allocation?.exhausted?.unassigned.length ?? 0,
      ...(handingOver.size > 0 ? { awaitingId: { count: handingOver.size, until: Math.max(...handOverEnds) } } : {}),
    },
    serverIdsExhausted: allocation?.exhausted?.message ?? null,
    portConflicts: conflicts,
    backendHolder: holder,
    podsHeldByOthers,
    keyProblem: keyProblem ?? (snapshotProblem !== null && rotation.state.configs.length > 0 ? `cannot build the configs: ${snapshotProblem}` : null),
    rotation: {
      phase: rotation.phase,
      activeConfigId: active?.configId ?? null,
      activeKeyFingerprint: active?.keyFingerprint ?? null,
      acceptingConfigId: accepting?.configId ?? null,
      drainingConfigIds: rotation.state.configs.filter((c) => c.state === 'draining').map((c) => c.configId),
      waitingFor: accepting
        ? dataPlanes.filter((d) => !d.ackedConfigs.some((a) => a.configId === accepting.configId && a.fingerprint === accepting.fingerprint)).map((d) => d.identity).sort()
        : [],
      reconnecting: reconnectWait ? { until: reconnectWait.until, nodes: unconnected } : null,
      drainEndsAt: drainEnds.length > 0 ? Math.max(...drainEnds) : null,
      nextRotationAt: spec.rotation.intervalMs !== null && !spec.encryption.keySecretRef && rotation.state.lastRotationAt !== null ? rotation.state.lastRotationAt + spec.rotation.intervalMs : null,
      blocked: blocked && blocked.kind === 'blocked' ? blocked.message : null,
    },
  };
  return { spec, allocation, rotation, snapshot, snapshotProblem, nodes, configsSecretData, podServerIds, podUids: uidsByName, clearPods, events, requeueAfterMs, waiting: ownership.waiting, facts };
}

/** Completes the facts once the snapshot is published and the data planes' ACK/NACK state for it is known. */
export function statusFacts(
  d: Desired,
  sync: {
    readonly snapshotVersion: number | null;
    /** Data planes serving this load balancer (on d.nodes), with the version of their last ACK and their newest NACK. */
    readonly dataPlanes: readonly { readonly identity: string; readonly ackedVersion: number | null; readonly rejection: { readonly version: number; readonly error: string } | null }[];
  },
): StatusFacts {
  const v = sync.snapshotVersion;
  const inSync = sync.dataPlanes.filter((p) => v !== null && p.ackedVersion !== null && p.ackedVersion >= v);
  const rejections = sync.dataPlanes
    .filter((p) => p.rejection !== null && (p.ackedVersion === null || p.rejection.version > p.ackedVersion))
    .map((p) => ({ dataPlane: p.identity, version: p.rejection!.version, error: p.rejection!.error }));
  return {
    ...d.facts,
    snapshotVersion: v,
    dataPlanes: {
      connected: sync.dataPlanes.length,
      inSync: inSync.length,
      pending: sync.dataPlanes.filter((p) => !inSync.includes(p)).map((p) => p.identity).sort(),
      rejections,
    },
  };
}
