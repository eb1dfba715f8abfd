/**
 * What the agent reports on the stream: per-backend probe state (HealthReport: every server on a new stream,
 * then only the ones whose state changed) and traffic counters (CountersReport) read from the same metrics
 * /metrics serves, so the two always agree.
 */
import { durationFromMs } from '../../proto/convert.js';
import {
  HealthVerdict,
  ProbeResult,
  RoutingOutcome,
  type BackendHealth,
  type LoadBalancerCounters,
  type TrafficCounter,
} from '../../proto/gen/quiclb/v1/distribution.js';
import type { TargetState } from '../health.js';
import type { MetricsJson } from '../metrics-carry.js';

const VERDICT: Record<TargetState['state'], HealthVerdict> = {
  unknown: HealthVerdict.HEALTH_VERDICT_UNSPECIFIED,
  healthy: HealthVerdict.HEALTH_VERDICT_HEALTHY,
  unhealthy: HealthVerdict.HEALTH_VERDICT_UNHEALTHY,
};

export function backendHealth(lb: string, t: TargetState): BackendHealth {
  const probes = t.checks.success + t.checks.failure;
  return {
    loadBalancer: lb,
    server: t.name,
    state: VERDICT[t.state],
    lastResult: probes === 0 ? ProbeResult.PROBE_RESULT_UNSPECIFIED : t.lastError === null ? ProbeResult.PROBE_RESULT_SUCCESS : ProbeResult.PROBE_RESULT_FAILURE,
    lastProbeTime: t.lastProbeAt > 0 ? new Date(t.lastProbeAt) : undefined,
    consecutiveFailures: t.failures,
    lastRtt: t.lastRttMs >= 0 ? durationFromMs(Math.round(t.lastRttMs)) : undefined,
    lastError: t.lastError ?? '',
  };
}

/** The part of a BackendHealth whose change is news (not the probe time or RTT, which move with every probe). */
function stateKey(h: BackendHealth): string {
  return `${h.state}|${h.lastResult}|${h.consecutiveFailures}|${h.lastError}`;
}

/** Remembers what was reported on the current stream and yields the changes. */
export class HealthReporter {
  private sent = new Map<string, string>();

  /** A new stream: the next report lists every server. */
  reset(): void {
    this.sent = new Map();
  }

  /** The entries to report now (all on a new stream, then the changed ones); empty when nothing changed. */
  changes(all: readonly BackendHealth[]): BackendHealth[] {
    const first = this.sent.size === 0;
    const next = new Map<string, string>();
    const out: BackendHealth[] = [];
    for (const h of all) {
      const id = JSON.stringify([h.loadBalancer, h.server]);
      const key = stateKey(h);
      next.set(id, key);
      if (first || this.sent.get(id) !== key) out.push(h);
    }
    this.sent = next;
    return out;
  }
}

const OUTCOME: Record<string, RoutingOutcome> = {
  cid: RoutingOutcome.ROUTING_OUTCOME_CID,
  table: RoutingOutcome.ROUTING_OUTCOME_TABLE,
  fallback: RoutingOutcome.ROUTING_OUTCOME_FALLBACK,
};

type Values = { value: number; labels: Record<string, string | number> }[];

function valuesOf(metrics: MetricsJson, name: string): Values {
  const m = metrics.find((x) => x.name === name);
  return (m?.values ?? []) as Values;
}

function sumFor(metrics: MetricsJson, name: string, lb: string): number {
  return valuesOf(metrics, name)
    .filter((v) => v.labels.lb === lb)
    .reduce((a, v) => a + v.value, 0);
}

const big = (n: number) => BigInt(Math.max(0, Math.round(n)));

/** Per load balancer: the numbers of quiclb_received_*, quiclb_packets/bytes_total, quiclb_dropped_*, quiclb_flows. */
export function countersFromMetrics(metrics: MetricsJson, loadBalancers: readonly string[]): LoadBalancerCounters[] {
  const packets = valuesOf(metrics, 'quiclb_packets_total');
  const bytes = valuesOf(metrics, 'quiclb_bytes_total');
  const dropPackets = valuesOf(metrics, 'quiclb_dropped_packets_total');
  const dropBytes = valuesOf(metrics, 'quiclb_dropped_bytes_total');
  return loadBalancers.map((lb) => {
    const traffic: TrafficCounter[] = [];
    for (const v of packets) {
      if (v.labels.lb !== lb || v.value === 0) continue;
      const outcome = OUTCOME[String(v.labels.outcome)];
      if (outcome === undefined) continue;
      const cfg = String(v.labels.config_id);
      const b = bytes.find((x) => x.labels.lb === lb && x.labels.outcome === v.labels.outcome && String(x.labels.config_id) === cfg);
      traffic.push({ outcome, ...(cfg === 'none' ? {} : { configId: Number(cfg) }), packets: big(v.value), bytes: big(b?.value ?? 0) });
    }
    const drops = dropPackets
      .filter((v) => v.labels.lb === lb && v.value > 0)
      .map((v) => ({
        reason: String(v.labels.reason),
        packets: big(v.value),
        bytes: big(dropBytes.find((x) => x.labels.lb === lb && x.labels.reason === v.labels.reason)?.value ?? 0),
      }));
    return {
      loadBalancer: lb,
      receivedPackets: big(sumFor(metrics, 'quiclb_received_packets_total', lb)),
      receivedBytes: big(sumFor(metrics, 'quiclb_received_bytes_total', lb)),
      traffic,
      drops,
      liveFlows: big(sumFor(metrics, 'quiclb_flows', lb)),
    };
  });
}
