/**
 * The finalizer quiclb.io/cleanup: added before the operator creates anything for a QuicLoadBalancer, removed
 * after teardown (the load balancer gone from every snapshot, its ID records and configs Secret deleted, the
 * server-ID annotations taken off its pods). Both patches are guarded by the resourceVersion that was read, so a
 * finalizer another controller added or removed meanwhile is never lost: the patch fails and the key is retried.
 */
import * as k8s from '@kubernetes/client-node';
import type { QuicLoadBalancerObject } from '../kube/informers.js';
import { FINALIZER, type ObjectWriter } from '../kube/writers.js';

export function hasFinalizer(o: QuicLoadBalancerObject): boolean {
  return (o.metadata?.finalizers ?? []).includes(FINALIZER);
}

export function isDeleting(o: QuicLoadBalancerObject): boolean {
  return o.metadata?.deletionTimestamp !== undefined && o.metadata.deletionTimestamp !== null;
}

/** A failed `test` op (the object moved on) or a conflict: re-read and retry. */
export function isStale(e: unknown): boolean {
  return e instanceof k8s.ApiException && (e.code === 409 || e.code === 422);
}

export async function addFinalizer(writer: ObjectWriter, o: QuicLoadBalancerObject): Promise<void> {
  const list = o.metadata?.finalizers;
  await writer.setFinalizers(o.metadata!.namespace!, o.metadata!.name!, o.metadata!.resourceVersion!, list !== undefined, [...(list ?? []), FINALIZER]);
}

export async function removeFinalizer(writer: ObjectWriter, o: QuicLoadBalancerObject): Promise<void> {
  const list = o.metadata?.finalizers ?? [];
  await writer.setFinalizers(o.metadata!.namespace!, o.metadata!.name!, o.metadata!.resourceVersion!, true, list.filter((f) => f !== FINALIZER));
}
