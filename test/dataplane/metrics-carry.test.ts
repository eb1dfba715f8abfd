import { describe, expect, it } from '@jest/globals';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { carryCounters, type MetricsJson } from '../../dataplane/metrics-carry.js';

/** One worker's report: a counter with labels, a gauge, a histogram and a counter aggregated with 'max'. */
async function report(packets: Record<string, number>, flows: number, rtts: number[], generation: number): Promise<MetricsJson> {
  const r = new Registry();
  const c = new Counter({ name: 'packets_total', help: 'h', labelNames: ['outcome'], registers: [r] });
  for (const [outcome, n] of Object.entries(packets)) c.inc({ outcome }, n);
  new Gauge({ name: 'flows', help: 'h', registers: [r] }).set(flows);
  const h = new Histogram({ name: 'rtt_seconds', help: 'h', buckets: [0.1, 1], registers: [r] });
  for (const x of rtts) h.observe(x);
  new Counter({ name: 'generation_total', help: 'h', registers: [r], aggregator: 'max' }).inc(generation);
  return r.getMetricsAsJSON();
}

const values = (m: MetricsJson, name: string) =>
  Object.fromEntries(m.find((x) => x.name === name)!.values.map((v) => [`${(v as { metricName?: string }).metricName ?? name}${JSON.stringify(v.labels)}`, v.value]));

describe('carryCounters: what exited workers had counted stays in the sums', () => {
  it('adds counters label by label, and histograms bucket by bucket, over several exits', async () => {
    let carried = carryCounters([], await report({ cid: 5, fallback: 1 }, 7, [0.05, 2], 3));
    carried = carryCounters(carried, await report({ cid: 2, table: 4 }, 9, [0.5], 1));
    expect(values(carried, 'packets_total')).toEqual({ 'packets_total{"outcome":"cid"}': 7, 'packets_total{"outcome":"fallback"}': 1, 'packets_total{"outcome":"table"}': 4 });
    const rtt = values(carried, 'rtt_seconds');
    expect(rtt['rtt_seconds_bucket{"le":0.1}']).toBe(1);
    expect(rtt['rtt_seconds_bucket{"le":1}']).toBe(2);
    expect(rtt['rtt_seconds_bucket{"le":"+Inf"}']).toBe(3);
    expect(rtt['rtt_seconds_count{}']).toBe(3);
    expect(rtt['rtt_seconds_sum{}']).toBeCloseTo(2.55);
  });

  it('carries no gauge (they describe the present) and no metric that is not summed over processes', async () => {
    const carried = carryCounters([], await report({ cid: 1 }, 7, [], 3));
    expect(carried.map((m) => m.name).sort()).toEqual(['packets_total', 'rtt_seconds']);
  });

  it('does not change the set it is given', async () => {
    const first = carryCounters([], await report({ cid: 1 }, 0, [], 0));
    const copy = JSON.stringify(first);
    carryCounters(first, await report({ cid: 10 }, 0, [], 0));
    expect(JSON.stringify(first)).toBe(copy);
  });
});
