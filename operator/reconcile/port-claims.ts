/**
 * What a QuicLoadBalancer claims, and which earlier claim wins.
 *
 * Ports: two QuicLoadBalancers that claim the same UDP port on the same node: the earlier one (creation time, then
 * namespace/name) keeps it, the later one is not served on that node and is Degraded/PortConflict. Addresses overlap
 * when they are equal, or either side binds every address (no addresses = 0.0.0.0; '0.0.0.0' covers IPv4; '::'
 * is treated as covering both families, as a dual-stack socket does). Every earlier claim counts, served or not,
 * so the outcome does not depend on the order in which conflicts are resolved.
 *
 * Backend Service: each load balancer writes its own server IDs into its backends' pod annotation, so the pods of
 * one Service belong to one load balancer: the earliest that names it (same order). A later one is
 * Degraded/BackendConflict and leaves the pods, its records and the data planes alone until the holder is gone. A
 * load balancer whose spec cannot be read holds the Service its spec names all the same (claimsOf).
 *
 * Backend pods: two load balancers naming different Services may still select the same pods (overlapping
 * selectors, one Service a superset of another). A pod (by UID) belongs, among the load balancers whose backend has
 * it as an endpoint, to the one whose configs Secret (<name>-quiclb-configs) it mounts: it can mint only with that
 * one's keys, and a selector change does not move it. When it mounts none of theirs, or several, it belongs to the
 * earliest (same order). The others give it no server ID, never write its annotation and do not route to it
 * (Degraded/BackendPodConflict), and take it once the holder is gone or stops selecting it.
 */
import type { PortConflict } from '../status/facts.js';
import { readSpec, selectsNode, type QuicLoadBalancerSpec } from './spec.js';

export interface PortClaim {
  /** namespace/name */
  readonly key: string;
  readonly createdAt: number;
  readonly ports: readonly number[];
  readonly addresses: readonly string[];
  /** Nodes the load balancer selects. */
  readonly nodes: ReadonlySet<string>;
  /** namespace/name of the backend Service (spec.backend.serviceName in the load balancer's namespace). */
  readonly service: string;
}

/** The one order of every claim above: creation time, then namespace/name. */
export function isEarlier(a: { readonly key: string; readonly createdAt: number }, b: { readonly key: string; readonly createdAt: number }): boolean {
  return a.createdAt < b.createdAt || (a.createdAt === b.createdAt && a.key < b.key);
}

function bound(addresses: readonly string[]): readonly string[] {
  return addresses.length === 0 ? ['0.0.0.0'] : addresses;
}

function overlap(a: string, b: string): boolean {
  if (a === b || a === '::' || b === '::') return true;
  const v6 = (x: string): boolean => x.includes(':');
  if (v6(a) !== v6(b)) return false;
  return a === '0.0.0.0' || b === '0.0.0.0';
}

/** The conflicts of `self` with earlier claims, sorted by node then port. */
export function portConflicts(self: PortClaim, others: readonly PortClaim[]): PortConflict[] {
  const out: PortConflict[] = [];
  const mine = bound(self.addresses);
  for (const o of others) {
    if (o.key === self.key || !isEarlier(o, self)) continue;
    if (!bound(o.addresses).some((a) => mine.some((b) => overlap(a, b)))) continue;
    const ports = self.ports.filter((p) => o.ports.includes(p));
    if (ports.length === 0) continue;
    for (const node of self.nodes) {
      if (!o.nodes.has(node)) continue;
      for (const port of ports) out.push({ port, node, holder: o.key });
    }
  }
  const seen = new Set<string>();
  return out
    .sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : a.port - b.port || (a.holder < b.holder ? -1 : 1)))
    .filter((c) => {
      const k = `${c.node}/${c.port}`;
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    });
}

/** The earliest load balancer, earlier than `self`, whose backend is the same Service (namespace/name), or null. */
export function backendHolder(self: PortClaim, others: readonly PortClaim[]): string | null {
  let holder: PortClaim | null = null;
  for (const o of others) {
    if (o.key === self.key || o.service !== self.service || !isEarlier(o, self)) continue;
    if (holder === null || isEarlier(o, holder)) holder = o;
  }
  return holder?.key ?? null;
}

/** The pods (UIDs) a load balancer's backend has as endpoints, as it would give them server IDs. */
export interface BackendClaim {
  /** namespace/name */
  readonly key: string;
  readonly createdAt: number;
  readonly pods: ReadonlySet<string>;
}

export interface PodOwnership {
  /** Pods of `self` that another load balancer owns: pod UID -> that one (the holder). */
  readonly heldByOthers: ReadonlyMap<string, string>;
  /** Other load balancers that want pods `self` owns -> those pods (UIDs, sorted): they must look again when that changes. */
  readonly waiting: ReadonlyMap<string, readonly string[]>;
}

/**
 * Which of `pods` (the backend pods of `self`) belong to another load balancer, and which others wait for pods
 * `self` owns. `others` are the claims of the other load balancers of the namespace (pods are namespaced);
 * `mounts(uid)` the keys (namespace/name) of the load balancers whose configs Secret the pod mounts, asked only for
 * pods that several claim. Cost: for each other claim, the smaller of the two pod sets is walked: at most the
 * endpoints of the namespace.
 */
export function podOwnership(
  self: { readonly key: string; readonly createdAt: number },
  pods: ReadonlySet<string>,
  others: readonly BackendClaim[],
  mounts: (podUid: string) => readonly string[] | undefined = () => undefined,
): PodOwnership {
  const contenders = new Map<string, BackendClaim[]>(); // shared pod -> the others that have it
  for (const o of others) {
    if (o.key === self.key) continue;
    const [small, big] = o.pods.size < pods.size ? [o.pods, pods] : [pods, o.pods];
    for (const p of small) {
      if (!big.has(p)) continue;
      const list = contenders.get(p);
      if (list) list.push(o);
      else contenders.set(p, [o]);
    }
  }
  const heldByOthers = new Map<string, string>();
  const waiting = new Map<string, string[]>();
  for (const [p, list] of contenders) {
    const all: { readonly key: string; readonly createdAt: number }[] = [self, ...list];
    const m = mounts(p);
    const mounted = m && m.length > 0 ? all.filter((c) => m.includes(c.key)) : [];
    const owner = mounted.length === 1 ? mounted[0] : all.reduce((a, b) => (isEarlier(b, a) ? b : a));
    if (owner.key !== self.key) {
      heldByOthers.set(p, owner.key);
      continue;
    }
    for (const o of list) {
      const w = waiting.get(o.key);
      if (w) w.push(p);
      else waiting.set(o.key, [p]);
    }
  }
  return { heldByOthers, waiting: new Map([...waiting].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => [k, v.sort()])) };
}

/**
 * The nodes that serve `self`: those it selects, minus those where an earlier claim holds one of its ports; none
 * while an earlier load balancer holds its backend Service.
 */
export function servingNodes(self: PortClaim, others: readonly PortClaim[]): string[] {
  if (backendHolder(self, others) !== null) return [];
  const conflictNodes = new Set(portConflicts(self, others).map((c) => c.node));
  return [...self.nodes].filter((n) => !conflictNodes.has(n)).sort();
}

export interface NodeView {
  readonly name: string;
  readonly labels?: Readonly<Record<string, string>>;
}

/** The claim of a load balancer with a read spec. */
export function claimFor(key: string, createdAt: number, spec: QuicLoadBalancerSpec, nodes: readonly NodeView[]): PortClaim {
  return {
    key,
    createdAt,
    ports: spec.listen.ports,
    addresses: spec.listen.addresses,
    nodes: new Set(nodes.filter((n) => selectsNode(spec.nodeSelector, n.labels)).map((n) => n.name)),
    service: `${key.slice(0, key.indexOf('/'))}/${spec.backend.serviceName}`,
  };
}

/**
 * The claims of stored QuicLoadBalancers (objects as the API returns them); one being deleted still claims until it
 * is gone. The operator passes a load balancer edited into an invalid spec with its last readable one
 * (last-good-specs.ts): its last snapshot still serves. One whose spec cannot be read and was never read by this
 * process (it is Degraded for that reason itself) claims no port and no node, but when its spec names a Service
 * (spec.backend.serviceName, a string) it holds that Service against later load balancers: the snapshot it last
 * published may still route the Service's pods, and every other load balancer counts those pods as its own
 * (observe.ts backendClaimsOf).
 */
export function claimsOf(
  objects: readonly { readonly namespace: string; readonly name: string; readonly createdAt: number; readonly spec: unknown }[],
  nodes: readonly NodeView[],
): PortClaim[] {
  const out: PortClaim[] = [];
  for (const o of objects) {
    const key = `${o.namespace}/${o.name}`;
    let spec: QuicLoadBalancerSpec;
    try {
      spec = readSpec(o.spec);
    } catch {
      const serviceName = (o.spec as { backend?: { serviceName?: unknown } } | null | undefined)?.backend?.serviceName;
      if (typeof serviceName === 'string') out.push({ key, createdAt: o.createdAt, ports: [], addresses: [], nodes: new Set(), service: `${o.namespace}/${serviceName}` });
      continue;
    }
    out.push(claimFor(key, o.createdAt, spec, nodes));
  }
  return out;
}
