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
  readonly qlbs: k8s.Informer<QuicLoadBalancerObject> & k8s.ObjectCache<QuicLoadBalancerObject>;
  readonly services: k8s.Informer<k8s.V1Service> & k8s.ObjectCache<k8s.V1Service>;
  readonly slices: k8s.Informer<k8s.V1EndpointSlice> & k8s.ObjectCache<k8s.V1EndpointSlice>;
  readonly pods: k8s.Informer<k8s.V1Pod> & k8s.ObjectCache<k8s.V1Pod>;
  readonly nodes: k8s.Informer<k8s.V1Node> & k8s.ObjectCache<k8s.V1Node>;
  /** Only the labelled user key Secrets; used to requeue, never read for keys (the reconciler reads by name). */
  readonly keySecrets: k8s.Informer<k8s.V1Secret> & k8s.ObjectCache<k8s.V1Secret>;
}

/** `namespace` null: every namespace (needs the ClusterRole); otherwise only that one. */
export function makeInformers(kc: k8s.KubeConfig, namespace: string | null): Informers {
  const co = kc.makeApiClient(k8s.CustomObjectsApi);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const disc = kc.makeApiClient(k8s.DiscoveryV1Api);
  const nsPath = namespace === null ? '' : `/namespaces/${namespace}`;
  const qlbs = k8s.makeInformer<QuicLoadBalancerObject>(
    kc,
    `/apis/${GROUP}/${VERSION}${nsPath}/${PLURAL}`,
    () =>
      (namespace === null
        ? co.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL })
        : co.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: PLURAL })) as Promise<k8s.KubernetesListObject<QuicLoadBalancerObject>>,
  );
  const services = k8s.makeInformer<k8s.V1Service>(kc, `/api/v1${nsPath}/services`, () =>
    namespace === null ? core.listServiceForAllNamespaces() : core.listNamespacedService({ namespace }),
  );
  // Only slices that belong to a Service (the label the EndpointSlice controller sets).
  const sel = 'kubernetes.io/service-name';
  const slices = k8s.makeInformer<k8s.V1EndpointSlice>(
    kc,
    `/apis/discovery.k8s.io/v1${nsPath}/endpointslices`,
    () => (namespace === null ? disc.listEndpointSliceForAllNamespaces({ labelSelector: sel }) : disc.listNamespacedEndpointSlice({ namespace, labelSelector: sel })),
    sel,
  );
  const pods = k8s.makeInformer<k8s.V1Pod>(kc, `/api/v1${nsPath}/pods`, () =>
    namespace === null ? core.listPodForAllNamespaces() : core.listNamespacedPod({ namespace }),
  );
  const nodes = k8s.makeInformer<k8s.V1Node>(kc, '/api/v1/nodes', () => core.listNode());
  const keySecrets = k8s.makeInformer<k8s.V1Secret>(
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
