/**
 * Builds desired.ts's `Observed` for one QuicLoadBalancer from what the operator can see: the informer caches
 * (the object, its Service and EndpointSlices, Nodes, the other load balancers' claims), the durable records it
 * read (server IDs, configs Secret, user key) and the config server's views of the connected data planes. The
 * records are read by the caller (they need their resourceVersion for the write); everything here is synchronous.
 */
import type * as k8s from '@kubernetes/client-node';
import type { DataPlaneView } from '../config-server/cache.js';
import type { ServerIdRecords } from '../allocation/server-ids.js';
import type { QuicLoadBalancerObject } from '../kube/informers.js';
import type { MachineState } from '../rotation/machine.js';
import { backendPods, configsSecretName, type DataPlaneObservation, type EndpointSliceView, type Observed, type PodView, type ServiceView } from './desired.js';
import type { HealthReportEntry } from './health-verdict.js';
import { claimFor, claimsOf, isEarlier, servingNodes, type BackendClaim, type NodeView } from './port-claims.js';
import { readPreviousServerId, readSpec, SERVER_ID_ANNOTATION, SERVER_ID_CHANGED_AT_ANNOTATION, SERVER_ID_PREVIOUS_ANNOTATION, type QuicLoadBalancerSpec } from './spec.js';
import type { ConfigAck } from './publisher.js';

export interface ObserveInput {
  readonly qlb: QuicLoadBalancerObject;
  /** Services, EndpointSlices and QuicLoadBalancers of the object's namespace; QuicLoadBalancers of every namespace for the port claims. */
  readonly services: readonly k8s.V1Service[];
  readonly slices: readonly k8s.V1EndpointSlice[];
  readonly allQlbs: readonly QuicLoadBalancerObject[];
  readonly nodes: readonly k8s.V1Node[];
  readonly records: ServerIdRecords;
  readonly rotation: MachineState;
  readonly keys: ReadonlyMap<number, Uint8Array>;
  readonly userKey: Observed['userKey'];
  readonly freshKey: Uint8Array;
  readonly dataPlanes: readonly DataPlaneView[];
  /** What the data plane's applied version held for this load balancer (publisher.configsAt). */
  readonly configsAt: (version: number) => readonly ConfigAck[] | null;
  readonly reconnectUntil?: number;
  readonly now: number;
  /** The pod cache of the object's namespace, by name. */
  readonly pods?: (name: string) => k8s.V1Pod | undefined;
  readonly serverIdPropagationMs?: number;
}

export function created(o: k8s.KubernetesObject): number {
  const t = o.metadata?.creationTimestamp as unknown;
  const ms = t instanceof Date ? t.getTime() : typeof t === 'string' ? Date.parse(t) : NaN;
  return Number.isFinite(ms) ? ms : 0;
}

export function nodeViews(nodes: readonly k8s.V1Node[]): NodeView[] {
  return nodes.filter((n) => n.metadata?.name).map((n) => ({ name: n.metadata!.name!, labels: n.metadata?.labels ?? {} }));
}

/** One connected data plane restricted to the load balancer `key` (namespace/name, the snapshot name). */
export function dataPlaneObservation(view: DataPlaneView, key: string, configsAt: (version: number) => readonly ConfigAck[] | null): DataPlaneObservation {
  const health = new Map<string, HealthReportEntry>();
  for (const h of view.health) if (h.loadBalancer === key) health.set(h.server, { state: h.state, reportedAt: h.reportedAt.getTime() });
  const traffic = new Map<number, number>();
  for (const lb of view.counters?.loadBalancers ?? []) {
    if (lb.loadBalancer !== key) continue;
    for (const t of lb.traffic) if (t.configId !== null) traffic.set(t.configId, (traffic.get(t.configId) ?? 0) + t.packets);
  }
  return {
    identity: view.identity,
    nodeName: view.hello?.nodeName ?? '',
    ackedConfigs: view.appliedVersion === null ? [] : (configsAt(view.appliedVersion) ?? []),
    health,
    traffic,
  };
}

function serviceView(svc: k8s.V1Service): ServiceView {
  return { ports: (svc.spec?.ports ?? []).map((p) => ({ name: p.name, port: p.port, protocol: p.protocol })) };
}

/**
 * The backend pods of every load balancer of `namespace` (port-claims.ts podOwnership), from the caches. Of several
 * naming the same Service only the earliest claims (the others give no IDs: BackendConflict); one being deleted
 * claims until it is gone. One whose spec cannot be read but names a Service (spec.backend.serviceName, a string)
 * claims every pod endpoint of that Service whatever the port, as does one whose Service lacks its port: they
 * cannot tell the port, and the snapshot they last published still routes those pods. One whose Service is
 * missing claims none (it has no endpoints to route to). Cost: one pass over the namespace's Services, slices and
 * load balancers; each Service's slices are read once.
 */
export function backendClaimsOf(
  namespace: string,
  qlbs: readonly QuicLoadBalancerObject[],
  services: readonly k8s.V1Service[],
  slices: readonly k8s.V1EndpointSlice[],
): BackendClaim[] {
  const byService = new Map<string, { key: string; createdAt: number; spec: QuicLoadBalancerSpec | null }>();
  for (const q of qlbs) {
    if (q.metadata?.namespace !== namespace) continue;
    let spec: QuicLoadBalancerSpec | null;
    let serviceName: unknown;
    try {
      spec = readSpec(q.spec);
      serviceName = spec.backend.serviceName;
    } catch {
      spec = null;
      serviceName = (q.spec as { backend?: { serviceName?: unknown } } | undefined)?.backend?.serviceName;
    }
    if (typeof serviceName !== 'string') continue;
    const c = { key: `${namespace}/${q.metadata.name ?? ''}`, createdAt: created(q), spec };
    const prev = byService.get(serviceName);
    if (prev === undefined || isEarlier(c, prev)) byService.set(serviceName, c);
  }
  if (byService.size === 0) return [];
  const svcs = new Map<string, k8s.V1Service>();
  for (const s of services) if (s.metadata?.namespace === namespace && byService.has(s.metadata.name ?? '')) svcs.set(s.metadata.name!, s);
  const slicesOf = new Map<string, k8s.V1EndpointSlice[]>();
  for (const s of slices) {
    const name = s.metadata?.labels?.['kubernetes.io/service-name'];
    if (s.metadata?.namespace !== namespace || name === undefined || !byService.has(name)) continue;
    const list = slicesOf.get(name);
    if (list) list.push(s);
    else slicesOf.set(name, [s]);
  }
  return [...byService].map(([service, c]) => {
    const svc = svcs.get(service);
    return { key: c.key, createdAt: c.createdAt, pods: backendPods(c.spec, svc ? serviceView(svc) : null, slicesOf.get(service) ?? []) };
  });
}

const CONFIGS_SUFFIX = configsSecretName('');

/** Keys (namespace/name) of the load balancers whose configs Secret the pod mounts (secret or projected volumes). */
export function configsMountedBy(pod: k8s.V1Pod): string[] {
  const namespace = pod.metadata?.namespace ?? '';
  const names = new Set<string>();
  for (const v of pod.spec?.volumes ?? []) {
    if (v.secret?.secretName) names.add(v.secret.secretName);
    for (const src of v.projected?.sources ?? []) if (src.secret?.name) names.add(src.secret.name);
  }
  return [...names].filter((n) => n.endsWith(CONFIGS_SUFFIX) && n.length > CONFIGS_SUFFIX.length).map((n) => `${namespace}/${n.slice(0, -CONFIGS_SUFFIX.length)}`);
}

/** The cached pods of `slices`' pod endpoints, by UID (one cache look-up per pod; a cached pod of another UID is left out). */
function podViews(slices: readonly EndpointSliceView[], get: (name: string) => k8s.V1Pod | undefined): Map<string, PodView> {
  const out = new Map<string, PodView>();
  const seen = new Set<string>();
  for (const s of slices) {
    for (const e of s.endpoints ?? []) {
      const ref = e.targetRef;
      if (ref?.kind !== 'Pod' || !ref.uid || !ref.name || seen.has(ref.uid)) continue;
      seen.add(ref.uid);
      const pod = get(ref.name);
      if (pod?.metadata?.uid !== ref.uid) continue;
      const a = pod.metadata.annotations ?? {};
      const t = Date.parse(a[SERVER_ID_CHANGED_AT_ANNOTATION] ?? '');
      const previous = readPreviousServerId(a[SERVER_ID_PREVIOUS_ANNOTATION]);
      out.set(ref.uid, { serverId: a[SERVER_ID_ANNOTATION] || null, changedAt: Number.isFinite(t) ? t : null, mounts: configsMountedBy(pod), ...(previous !== null ? { previous } : {}) });
    }
  }
  return out;
}

/** Every load balancer but namespace/name, in the form claimsOf() reads. */
export function otherObjects(allQlbs: readonly QuicLoadBalancerObject[], namespace: string, name: string) {
  return allQlbs
    .filter((o) => !(o.metadata?.namespace === namespace && o.metadata?.name === name))
    .map((o) => ({ namespace: o.metadata?.namespace ?? '', name: o.metadata?.name ?? '', createdAt: created(o), spec: o.spec }));
}

/**
 * The nodes that serve `qlb` by the operator's view now (computeDesired's rule, for a load balancer that cannot be
 * reconciled), or null when its spec cannot be read.
 */
export function servingNodesOf(qlb: QuicLoadBalancerObject, allQlbs: readonly QuicLoadBalancerObject[], nodes: readonly k8s.V1Node[]): string[] | null {
  const namespace = qlb.metadata?.namespace ?? '';
  const name = qlb.metadata?.name ?? '';
  let spec;
  try {
    spec = readSpec(qlb.spec);
  } catch {
    return null;
  }
  const views = nodeViews(nodes);
  return servingNodes(claimFor(`${namespace}/${name}`, created(qlb), spec, views), claimsOf(otherObjects(allQlbs, namespace, name), views));
}

export function observe(i: ObserveInput): Observed {
  const meta = i.qlb.metadata ?? {};
  const namespace = meta.namespace ?? '';
  const name = meta.name ?? '';
  const key = `${namespace}/${name}`;
  const spec = (i.qlb.spec ?? {}) as { backend?: { serviceName?: unknown } };
  const serviceName = typeof spec.backend?.serviceName === 'string' ? spec.backend.serviceName : null;
  const svc = serviceName === null ? undefined : i.services.find((s) => s.metadata?.namespace === namespace && s.metadata?.name === serviceName);
  const service: ServiceView | null = svc ? serviceView(svc) : null;
  const endpointSlices: EndpointSliceView[] =
    serviceName === null ? [] : i.slices.filter((s) => s.metadata?.namespace === namespace && s.metadata?.labels?.['kubernetes.io/service-name'] === serviceName);
  const nodes = nodeViews(i.nodes);
  const others = otherObjects(i.allQlbs, namespace, name);
  return {
    namespace,
    name,
    ...(meta.uid ? { uid: meta.uid } : {}),
    generation: meta.generation ?? 0,
    createdAt: created(i.qlb),
    annotations: meta.annotations ?? {},
    spec: i.qlb.spec,
    service,
    endpointSlices,
    records: i.records,
    rotation: i.rotation,
    keys: i.keys,
    userKey: i.userKey,
    freshKey: i.freshKey,
    nodes,
    otherClaims: claimsOf(others, nodes),
    // Alone in its namespace (the common case), nobody shares its pods: no need to read every Service's slices.
    otherBackends: i.allQlbs.some((q) => q.metadata?.namespace === namespace && q.metadata?.name !== name)
      ? backendClaimsOf(namespace, i.allQlbs, i.services, i.slices).filter((c) => c.key !== key)
      : [],
    ...(i.pods ? { pods: podViews(endpointSlices, i.pods) } : {}),
    ...(i.serverIdPropagationMs !== undefined ? { serverIdPropagationMs: i.serverIdPropagationMs } : {}),
    dataPlanes: i.dataPlanes.filter((d) => d.connected).map((d) => dataPlaneObservation(d, key, i.configsAt)),
    ...(i.reconnectUntil !== undefined ? { reconnectUntil: i.reconnectUntil } : {}),
    now: i.now,
  };
}
