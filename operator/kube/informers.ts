/**
 * The operator's watches (TOOLCHAIN.md §2.3): list+watch informers on QuicLoadBalancers, Services, EndpointSlices
 * and Pods (in one namespace, or all), Nodes, and the user key Secrets labelled quiclb.io/key=true (key-secrets.ts). client-node's informers stop on a watch error; keepRunning()
 * restarts them after a delay unless they were stopped on purpose. Objects reach the reconciler only through the
 * caches (get/list); the callbacks only enqueue keys.
 */
import * as k8s from '@kubernetes/client-node';
import { GROUP, PLURAL, VERSION } from '../reconcile/spec.js';
import { KEY_SECRET_SELECTOR } from './key-secrets.js';

/** A QuicLoadBalancer as the API returns it (raw JSON: times are strings). */
export interface QuicLoadBalancerObject extends k8s.KubernetesObject {
  metadata?: k8s.V1ObjectMeta;
  spec?: unknown;
  status?: { conditions?: { type: string; status: string; reason?: string; message?: string; lastTransitionTime?: string; observedGeneration?: number }[] } & Record<string, unknown>;
}

export interface Informers {
  readonly qlbs: k8s.ListWatch<QuicLoadBalancerObject>;
  readonly services: k8s.ListWatch<k8s.V1Service>;
  readonly slices: k8s.ListWatch<k8s.V1EndpointSlice>;
  readonly pods: k8s.ListWatch<k8s.V1Pod>;
  readonly nodes: k8s.ListWatch<k8s.V1Node>;
  /** Only the labelled user key Secrets; used to requeue, never read for keys (the reconciler reads by name). */
  readonly keySecrets: k8s.ListWatch<k8s.V1Secret>;
}

/** What k8s.makeInformer() makes, typed as the ListWatch it is (listedOnce() reads its resource version). */
function informer<T extends k8s.KubernetesObject>(kc: k8s.KubeConfig, path: string, list: k8s.ListPromise<T>, labelSelector?: string): k8s.ListWatch<T> {
  return new k8s.ListWatch<T>(path, new k8s.Watch(kc), list, false, labelSelector);
}

/** `namespace` null: every namespace (needs the ClusterRole); otherwise only that one. */
export function makeInformers(kc: k8s.KubeConfig, namespace: string | null): Informers {
  const co = kc.makeApiClient(k8s.CustomObjectsApi);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const disc = kc.makeApiClient(k8s.DiscoveryV1Api);
  const nsPath = namespace === null ? '' : `/namespaces/${namespace}`;
  const qlbs = informer<QuicLoadBalancerObject>(
    kc,
    `/apis/${GROUP}/${VERSION}${nsPath}/${PLURAL}`,
    () =>
      (namespace === null
        ? co.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL })
        : co.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: PLURAL })) as Promise<k8s.KubernetesListObject<QuicLoadBalancerObject>>,
  );
  const services = informer<k8s.V1Service>(kc, `/api/v1${nsPath}/services`, () =>
    namespace === null ? core.listServiceForAllNamespaces() : core.listNamespacedService({ namespace }),
  );
  // Only slices that belong to a Service (the label the EndpointSlice controller sets).
  const sel = 'kubernetes.io/service-name';
  const slices = informer<k8s.V1EndpointSlice>(
    kc,
    `/apis/discovery.k8s.io/v1${nsPath}/endpointslices`,
    () => (namespace === null ? disc.listEndpointSliceForAllNamespaces({ labelSelector: sel }) : disc.listNamespacedEndpointSlice({ namespace, labelSelector: sel })),
    sel,
  );
  const pods = informer<k8s.V1Pod>(kc, `/api/v1${nsPath}/pods`, () =>
    namespace === null ? core.listPodForAllNamespaces() : core.listNamespacedPod({ namespace }),
  );
  const nodes = informer<k8s.V1Node>(kc, '/api/v1/nodes', () => core.listNode());
  const keySecrets = informer<k8s.V1Secret>(
    kc,
    `/api/v1${nsPath}/secrets`,
    () =>
      namespace === null
        ? core.listSecretForAllNamespaces({ labelSelector: KEY_SECRET_SELECTOR })
        : core.listNamespacedSecret({ namespace, labelSelector: KEY_SECRET_SELECTOR }),
    KEY_SECRET_SELECTOR,
  );
  return { qlbs, services, slices, pods, nodes, keySecrets };
}

/** The informers by the names the operator's logs give them ("watch failed: restarting", listedOnce()). */
export function informersByName(i: Informers): Record<string, k8s.ListWatch<k8s.KubernetesObject>> {
  return { quicloadbalancers: i.qlbs, services: i.services, endpointslices: i.slices, pods: i.pods, nodes: i.nodes, 'key secrets': i.keySecrets };
}

/**
 * Resolves once every informer has completed a list (each has a resource version). client-node's start() resolves
 * even when its first list failed: it reports the error (keepRunning() retries) and leaves the cache empty, and an
 * operator acting on empty caches would publish snapshots without the load balancers and release every server ID.
 * `waiting` gets the names of those not listed yet, at once and then every `reportMs` while any is missing.
 */
export async function listedOnce(byName: Record<string, k8s.ListWatch<k8s.KubernetesObject>>, waiting: (unlisted: string[]) => void, pollMs = 100, reportMs = 5000): Promise<void> {
  const unlisted = () => Object.entries(byName).filter(([, inf]) => inf.latestResourceVersion() === '').map(([name]) => name);
  let reported = Date.now() - reportMs;
  for (let missing = unlisted(); missing.length > 0; missing = unlisted()) {
    if (Date.now() - reported >= reportMs) {
      waiting(missing);
      reported = Date.now();
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** Restarts `inf` after a watch error, but never after our own stop(). */
export function keepRunning<T extends k8s.KubernetesObject>(inf: k8s.Informer<T>, onErr: (e: unknown) => void, delayMs = 2000): { stop(): Promise<void> } {
  let stopped = false;
  inf.on(k8s.ERROR, (err: unknown) => {
    if (stopped || (err as Error | undefined)?.name === 'AbortError') return;
    onErr(err);
    setTimeout(() => {
      if (!stopped) void inf.start().catch(onErr);
    }, delayMs).unref();
  });
  return {
    stop: async () => {
      stopped = true;
      await inf.stop();
    },
  };
}

export function objectKey(o: k8s.KubernetesObject): string {
  return `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
}

export function isConflict(e: unknown): boolean {
  return e instanceof k8s.ApiException && e.code === 409;
}

export function isNotFound(e: unknown): boolean {
  return e instanceof k8s.ApiException && e.code === 404;
}
