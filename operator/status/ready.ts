/**
 * Ready: True when the load balancer routes: the backend Service exists with its port, at least one backend takes
 * new connections, and every connected data plane runs the latest snapshot. `kubectl wait --for=condition=Ready`
 * waits for this (with observedGeneration = the current generation).
 */
import { metaTime, type Verdict } from './conditions.js';
import { configSyncedCondition } from './config-synced.js';
import { listNames, type StatusFacts } from './facts.js';

export const READY = 'Ready';

export function readyCondition(f: StatusFacts): Verdict {
  const b = f.backends;
  if (!f.serviceFound) return { status: 'False', reason: 'ServiceNotFound', message: `Service ${f.serviceName} not found in this namespace` };
  if (!f.servicePortFound) return { status: 'False', reason: 'ServicePortNotFound', message: `Service ${f.serviceName} has no port ${f.servicePort}` };
  if (f.backendHolder !== null) return { status: 'False', reason: 'BackendConflict', message: `Service ${f.serviceName} belongs to QuicLoadBalancer ${f.backendHolder}` };
  if (f.rotation.activeConfigId === null && f.keyProblem !== null) return { status: 'False', reason: 'KeyUnavailable', message: f.keyProblem };
  if (b.total === 0) {
    return b.unassigned > 0
      ? { status: 'False', reason: 'ServerIDsExhausted', message: `${b.unassigned} endpoint(s) wait for a server ID (see the Degraded condition)` }
      : f.podsHeldByOthers.length > 0
        ? {
            status: 'False',
            reason: 'BackendPodConflict',
            message: `every endpoint of Service ${f.serviceName} gets its server ID from ${f.podsHeldByOthers.length === 1 ? 'QuicLoadBalancer' : 'QuicLoadBalancers'} ${listNames(f.podsHeldByOthers.map((h) => h.holder))} (see the Degraded condition)`,
          }
        : { status: 'False', reason: 'NoBackends', message: `Service ${f.serviceName} has no endpoints` };
  }
  if (b.healthy === 0) {
    return {
      status: 'False',
      reason: 'NoHealthyBackends',
      message:
        `none of ${b.total} backend(s) is ready and healthy (${b.draining} draining)` +
        (b.awaitingId ? `; ${b.awaitingId.count} wait until ${metaTime(b.awaitingId.until)} for their new server ID to reach them` : '') +
        ': new connections have nowhere to go',
    };
  }
  const synced = configSyncedCondition(f);
  if (synced.status !== 'True') {
    return { status: 'False', reason: synced.reason === 'Pending' ? 'ConfigNotSynced' : synced.reason, message: synced.message };
  }
  return {
    status: 'True',
    reason: 'Routing',
    message: `${b.healthy} of ${b.total} backend(s) take new connections; ${f.dataPlanes.connected} data plane(s) run snapshot version ${f.snapshotVersion}`,
  };
}
