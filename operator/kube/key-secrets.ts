/**
 * Which user key Secrets the operator watches, and which load balancers a change of one concerns.
 *
 * RBAC cannot narrow list/watch of Secrets by name or label, so the narrowing is in what the operator asks for: its
 * Secret informer lists and watches only Secrets labelled `quiclb.io/key=true`, so no other Secret's data ever
 * enters its cache. A keySecretRef whose Secret lacks the label still works, but a change of it is seen only at the
 * next resync (docs/quicloadbalancer.md "Bring your own key").
 */
import type { QuicLoadBalancerObject } from './informers.js';

export const KEY_SECRET_LABEL = 'quiclb.io/key';
export const KEY_SECRET_SELECTOR = `${KEY_SECRET_LABEL}=true`;

/** spec.encryption.keySecretRef.name as written (the raw object: the reconciler validates the spec, not this). */
function keySecretName(q: QuicLoadBalancerObject): string | undefined {
  const name = (q.spec as { encryption?: { keySecretRef?: { name?: unknown } } } | undefined)?.encryption?.keySecretRef?.name;
  return typeof name === 'string' ? name : undefined;
}

/** Keys (`namespace/name`) of the load balancers in `qlbs` whose keySecretRef names Secret `namespace/secretName`. */
export function loadBalancersUsingSecret(qlbs: readonly QuicLoadBalancerObject[], namespace: string | undefined, secretName: string | undefined): string[] {
  if (namespace === undefined || secretName === undefined) return [];
  return qlbs
    .filter((q) => q.metadata?.namespace === namespace && keySecretName(q) === secretName)
    .map((q) => `${namespace}/${q.metadata?.name ?? ''}`);
}
