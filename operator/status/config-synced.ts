/** ConfigSynced: True when every connected data plane has ACKed the latest snapshot version of this load balancer. */
import type { Verdict } from './conditions.js';
import { listNames, type StatusFacts } from './facts.js';

export const CONFIG_SYNCED = 'ConfigSynced';

export function configSyncedCondition(f: StatusFacts): Verdict {
  const d = f.dataPlanes;
  if (f.snapshotVersion === null) return { status: 'Unknown', reason: 'NoSnapshot', message: 'no snapshot could be built yet (see the Degraded condition)' };
  const v = f.snapshotVersion;
  if (d.rejections.length > 0) {
    const r = d.rejections[0];
    return {
      status: 'False',
      reason: 'DataPlaneRejected',
      message: `${listNames(d.rejections.map((x) => x.dataPlane))} rejected a snapshot (${r.dataPlane}, version ${r.version}: ${r.error})`,
    };
  }
  if (d.connected === 0) {
    return { status: 'False', reason: 'NoDataPlanes', message: 'no data plane is connected for the nodes this load balancer selects (spec.nodeSelector)' };
  }
  if (d.inSync < d.connected) {
    return {
      status: 'False',
      reason: 'Pending',
      message: `${d.inSync} of ${d.connected} connected data planes acknowledged version ${v}` + (d.pending.length > 0 ? `; waiting for ${listNames(d.pending)}` : ''),
    };
  }
  return { status: 'True', reason: 'Synced', message: `all ${d.connected} connected data plane(s) acknowledged version ${v}` };
}
