/**
 * The central health rule (DESIGN.md "The health path"): one verdict per backend for every data plane, so every
 * data plane's fallback pool is the same for the same snapshot version.
 *
 * Rule: a backend is unhealthy when more of the connected data planes serving its load balancer report it
 * unhealthy than healthy, counting only reports younger than `staleMs` and ignoring "unknown" (no probe result
 * yet). A tie, or no fresh report at all, is healthy: a backend that one node cannot reach (a local network
 * problem) stays in everyone's pool, and a load balancer whose data planes have not probed yet routes to every
 * ready backend instead of none. Readiness (EndpointSlice conditions) is separate: a not-ready or terminating pod is
 * out of the pool whatever its probes say.
 */
import type { HealthVerdict } from '../../lib/config/snapshot.js';

export interface HealthReportEntry {
  readonly state: 'healthy' | 'unhealthy' | 'unknown';
  /** When the report holding it arrived (ms). */
  readonly reportedAt: number;
}

/** Per data plane: server name -> its latest entry. */
export type DataPlaneHealth = ReadonlyMap<string, HealthReportEntry>;

/** Reports older than this are ignored: three probe intervals plus a timeout. */
export function staleAfterMs(intervalMs: number, timeoutMs: number): number {
  return 3 * intervalMs + timeoutMs;
}

export function decideHealth(servers: readonly string[], reports: readonly DataPlaneHealth[], staleMs: number, now: number): Map<string, HealthVerdict> {
  const out = new Map<string, HealthVerdict>();
  for (const s of servers) {
    let healthy = 0;
    let unhealthy = 0;
    for (const r of reports) {
      const e = r.get(s);
      if (!e || now - e.reportedAt > staleMs) continue;
      if (e.state === 'healthy') healthy++;
      else if (e.state === 'unhealthy') unhealthy++;
    }
    out.set(s, unhealthy > healthy ? 'unhealthy' : 'healthy');
  }
  return out;
}
