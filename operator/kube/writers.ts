/**
 * Writes to QuicLoadBalancer objects and backend pods: status by server-side apply (field manager
 * quiclb-operator, TOOLCHAIN.md §2.4), the finalizer as a JSON patch guarded by a resourceVersion test, and the
 * server-ID annotation on pods by merge patch.
 */
import * as k8s from '@kubernetes/client-node';
import { GROUP, KIND, PLURAL, SERVER_ID_ANNOTATION, SERVER_ID_CHANGED_AT_ANNOTATION, SERVER_ID_PREVIOUS_ANNOTATION, VERSION } from '../reconcile/spec.js';
import type { QuicLoadBalancerStatus } from '../status/status.js';

export const FIELD_MANAGER = 'quiclb-operator';
export const FINALIZER = 'quiclb.io/cleanup';
const QLB = { group: GROUP, version: VERSION, plural: PLURAL };

export class ObjectWriter {
  private readonly co: k8s.CustomObjectsApi;
  private readonly core: k8s.CoreV1Api;

  constructor(kc: k8s.KubeConfig) {
    this.co = kc.makeApiClient(k8s.CustomObjectsApi);
    this.core = kc.makeApiClient(k8s.CoreV1Api);
  }

  async applyStatus(namespace: string, name: string, status: QuicLoadBalancerStatus): Promise<void> {
    await this.co.patchNamespacedCustomObjectStatus(
      { ...QLB, namespace, name, fieldManager: FIELD_MANAGER, force: true, body: { apiVersion: `${GROUP}/${VERSION}`, kind: KIND, metadata: { name, namespace }, status } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.ServerSideApply),
    );
  }

  /**
   * Sets the finalizer list to `finalizers`, only if the object is still at `resourceVersion` (a 422/409 otherwise:
   * re-read and retry). JSON patch is the client's default content type.
   */
  async setFinalizers(namespace: string, name: string, resourceVersion: string, hadList: boolean, finalizers: readonly string[]): Promise<void> {
    await this.co.patchNamespacedCustomObject({
      ...QLB,
      namespace,
      name,
      body: [
        { op: 'test', path: '/metadata/resourceVersion', value: resourceVersion },
        { op: hadList ? 'replace' : 'add', path: '/metadata/finalizers', value: finalizers },
      ],
    });
  }

  /**
   * Sets (or with null removes) the server-ID annotation of a pod; with `change`, in the same patch, the
   * quiclb.io/server-id-changed-at annotation (`at`, ms: the pod's previous ID may be minted until that time +
   * propagation) and quiclb.io/server-id-previous (`previous`, spec.ts previousServerIdValue; null removes it).
   * With `uid`, the patch carries metadata.uid: the API server rejects it (409, a failed uid precondition; or a 422
   * naming metadata.uid: podReplaced) when the pod of that name is another one (a StatefulSet pod re-created under
   * the same name).
   */
  async annotatePod(namespace: string, pod: string, serverId: string | null, change?: { readonly at: number; readonly previous: string | null }, uid?: string): Promise<void> {
    const annotations = {
      [SERVER_ID_ANNOTATION]: serverId,
      ...(change !== undefined ? { [SERVER_ID_CHANGED_AT_ANNOTATION]: new Date(change.at).toISOString(), [SERVER_ID_PREVIOUS_ANNOTATION]: change.previous } : {}),
    };
    await this.core.patchNamespacedPod(
      { namespace, name: pod, body: { metadata: { ...(uid !== undefined ? { uid } : {}), annotations } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
  }
}

/** A pod patch refused because the pod of that name is another one (annotatePod's uid), or gone: nothing to write. */
export function podReplaced(e: unknown): boolean {
  if (!(e instanceof k8s.ApiException)) return false;
  if (e.code === 404 || e.code === 409) return true;
  // Only a refusal about the uid means "another pod": any other 422 (an admission policy, annotations too large) is
  // a real failure, left to the reconcile's error path (logged, counted, retried) instead of skipped in silence.
  return e.code === 422 && /metadata\.uid/.test(typeof e.body === 'string' ? e.body : JSON.stringify(e.body ?? e.message));
}
