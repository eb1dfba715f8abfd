/**
 * Degraded: True when something keeps this load balancer from working as specified, even if it still routes.
 * An ordered chain of checks (most fundamental first); the first failing one gives reason and message, and the
 * message names the other failing reasons, so one look shows everything to fix.
 */
import type { Verdict } from './conditions.js';
import { listNames, type StatusFacts } from './facts.js';

export const DEGRADED = 'Degraded';

export type DegradedReason =
  | 'ServiceNotFound'
  | 'ServicePortNotFound'
  | 'KeyUnavailable'
  | 'ServerIDsExhausted'
  | 'PortConflict'
  | 'BackendConflict'
  | 'BackendPodConflict'
  | 'DataPlaneRejected'
  | 'RotationBlocked';

type Check = (f: StatusFacts) => { reason: DegradedReason; message: string } | null;

const CHECKS: readonly Check[] = [
  (f) =>
    f.serviceFound
      ? null
      : { reason: 'ServiceNotFound', message: `Service ${f.serviceName} not found in this namespace: create it, or fix spec.backend.serviceName` },
  (f) =>
    !f.serviceFound || f.servicePortFound
      ? null
      : { reason: 'ServicePortNotFound', message: `Service ${f.serviceName} has no port ${f.servicePort}: fix spec.backend.port or spec.backend.portName` },
  (f) => (f.keyProblem === null ? null : { reason: 'KeyUnavailable', message: f.keyProblem }),
  (f) => (f.serverIdsExhausted === null ? null : { reason: 'ServerIDsExhausted', message: f.serverIdsExhausted }),
  (f) => {
    if (f.portConflicts.length === 0) return null;
    const c = f.portConflicts[0];
    const nodes = [...new Set(f.portConflicts.map((p) => p.node))];
    return {
      reason: 'PortConflict',
      message:
        `UDP port ${c.port} on node ${c.node} is already served by QuicLoadBalancer ${c.holder}` +
        (f.portConflicts.length > 1 ? ` (${f.portConflicts.length} conflicts on ${listNames(nodes)})` : '') +
        ': this load balancer is not served there; choose another spec.listen.ports value or narrow spec.nodeSelector',
    };
  },
  (f) =>
    f.backendHolder === null
      ? null
      : {
          reason: 'BackendConflict',
          message:
            `the pods of Service ${f.serviceName} are already given server IDs by QuicLoadBalancer ${f.backendHolder}: ` +
            'this load balancer assigns none and is not served until it is gone; use one QuicLoadBalancer per backend Service, or a separate Service',
        },
  (f) => {
    const held = f.podsHeldByOthers;
    if (held.length === 0) return null;
    const pods = held.flatMap((h) => h.pods);
    return {
      reason: 'BackendPodConflict',
      message:
        `${pods.length} pod(s) of Service ${f.serviceName} (${listNames(pods)}) are also backends of ` +
        (held.length === 1 ? `QuicLoadBalancer ${held[0].holder}` : `earlier QuicLoadBalancers ${listNames(held.map((h) => `${h.holder} (${h.pods.length})`))}`) +
        ', which gives them their server IDs: this load balancer assigns them none and does not route to them while that one selects them; ' +
        'make the backend Services select disjoint pods',
    };
  },
  (f) => {
    const r = f.dataPlanes.rejections;
    if (r.length === 0) return null;
    return {
      reason: 'DataPlaneRejected',
      message:
        `data plane ${r[0].dataPlane} rejected snapshot version ${r[0].version}: ${r[0].error}` +
        (r.length > 1 ? ` (${r.length} data planes rejected: ${listNames(r.map((x) => x.dataPlane))})` : '') +
        '; they keep forwarding with their last good snapshot',
    };
  },
  (f) => (f.rotation.blocked === null ? null : { reason: 'RotationBlocked', message: `key rotation blocked: ${f.rotation.blocked}` }),
];

export function degradedCondition(f: StatusFacts): Verdict {
  const failing = CHECKS.map((c) => c(f)).filter((x) => x !== null);
  if (failing.length === 0) return { status: 'False', reason: 'AsExpected', message: 'no problem found' };
  const [first, ...rest] = failing;
  const also = rest.length > 0 ? ` (also: ${rest.map((r) => r.reason).join(', ')})` : '';
  return { status: 'True', reason: first.reason, message: first.message + also };
}
