/**
 * Counters of worker processes that exited, carried into the aggregated /metrics so that the sums stay
 * monotonic across a worker restart. Prometheus reads any decrease of a counter as a reset, after which
 * rate() and increase() count the whole remaining total again: one crashed worker would show as a burst of
 * traffic. What a worker counted after the last scrape before it died is lost (it is never reported).
 *
 * prom-client's AggregatorRegistry sums metrics over processes but has no notion of a process that is gone,
 * hence this small fold.
 */
import type { Registry } from 'prom-client';

export type MetricsJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;
type Metric = MetricsJson[number];
type Value = Metric['values'][number] & { metricName?: string };

/** Metric types whose values only grow while a process lives (a histogram's buckets, sum and count too); only
 *  those summed over processes are carried. */
const MONOTONIC = new Set(['counter', 'histogram']);

const valueKey = (v: Value): string =>
  `${v.metricName ?? ''}|${Object.entries(v.labels)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, x]) => `${k}=${String(x)}`)
    .join(',')}`;

/**
 * Adds the counters and histograms of `last` (an exited worker's last report) to `carried` (what earlier exits
 * of workers left) and returns the new carried set. Gauges are not carried: they describe the present.
 */
export function carryCounters(carried: MetricsJson, last: MetricsJson): MetricsJson {
  const byName = new Map<string, Metric>(carried.map((m) => [m.name, { ...m, values: m.values.map((v) => ({ ...v })) }]));
  for (const m of last) {
    if (!MONOTONIC.has(String(m.type)) || (m.aggregator ?? 'sum') !== 'sum') continue;
    let into = byName.get(m.name);
    if (into === undefined) {
      into = { ...m, values: [] };
      byName.set(m.name, into);
    }
    const index = new Map(into.values.map((v, i) => [valueKey(v as Value), i]));
    for (const v of m.values) {
      const i = index.get(valueKey(v as Value));
      if (i === undefined) {
        index.set(valueKey(v as Value), into.values.length);
        into.values.push({ ...v });
      } else into.values[i] = { ...into.values[i], value: into.values[i].value + v.value };
    }
  }
  return [...byName.values()];
}
