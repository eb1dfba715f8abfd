// The Grafana dashboard the chart ships: valid JSON, the panels users look for, and only metrics the code exports.
import { describe, expect, it } from '@jest/globals';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../helpers/run-cli.js';
import { CHART } from './helm.js';

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { uid: string };
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: Array<{ expr: string; refId: string }>;
}

const dashboard = JSON.parse(readFileSync(join(CHART, 'dashboards', 'quiclb.json'), 'utf8')) as {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: Array<{ name: string; query: unknown }> };
};

/** Every quiclb_* metric name the data plane and the operator register (quoted names in their sources). */
function exportedMetrics(): Set<string> {
  const names = new Set<string>();
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) for (const m of readFileSync(p, 'utf8').matchAll(/['"`](quiclb_[a-z0-9_]+)['"`]/g)) names.add(m[1]);
    }
  };
  walk(join(repoRoot, 'dataplane'));
  walk(join(repoRoot, 'operator'));
  return names;
}

const queries = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));

describe('Grafana dashboard', () => {
  it('is a dashboard with a uid, a data source variable and a load balancer variable', () => {
    expect(dashboard.uid).toBe('quiclb-overview');
    expect(dashboard.templating.list.map((v) => v.name)).toEqual(['datasource', 'lb']);
    for (const p of dashboard.panels.filter((x) => x.type !== 'row')) expect({ p: p.title, ds: p.datasource?.uid }).toEqual({ p: p.title, ds: '${datasource}' });
  });

  it('queries only metrics that the data plane or the operator export', () => {
    const known = exportedMetrics();
    expect(known.size).toBeGreaterThan(40);
    const used = new Set(queries.flatMap((q) => [...q.expr.matchAll(/quiclb_[a-z0-9_]+/g)].map((m) => m[0])));
    used.add('quiclb_packets_total'); // the $lb variable's label_values() query
    for (const name of used) expect({ name, exported: known.has(name.replace(/_(bucket|sum|count)$/, '')) }).toEqual({ name, exported: true });
  });

  it('has the panels users look for', () => {
    const byMetric = (metric: string, by: string) => queries.some((q) => q.expr.includes(metric) && q.expr.includes(by));
    expect(byMetric('quiclb_packets_total', 'by (outcome)')).toBe(true);
    expect(byMetric('quiclb_packets_total', 'by (config_id)')).toBe(true);
    expect(byMetric('quiclb_dropped_packets_total', 'by (reason)')).toBe(true);
    expect(byMetric('quiclb_backend_healthy', 'max by (lb, server)')).toBe(true);
    expect(byMetric('quiclb_operator_snapshot_version', 'by (instance)')).toBe(true);
    expect(byMetric('quiclb_config_live', 'state')).toBe(true);
    expect(byMetric('quiclb_operator_reconciles_total', 'by (result)')).toBe(true);
    expect(byMetric('quiclb_operator_rotations_total', 'by (phase)')).toBe(true);
    // routing latency: p50 and p99 from the sampled histogram, per I/O path; which path the data planes run
    expect(byMetric('histogram_quantile(0.5, sum by (le, path) (rate(quiclb_routing_latency_seconds_bucket', '')).toBe(true);
    expect(byMetric('histogram_quantile(0.99, sum by (le, path) (rate(quiclb_routing_latency_seconds_bucket', '')).toBe(true);
    expect(byMetric('quiclb_io_path_info', 'by (instance, path)')).toBe(true);
    expect(byMetric('quiclb_io_errors_total', 'by (path, direction, reason)')).toBe(true);
  });

  it('has unique panel ids and no overlapping panels', () => {
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const cells = new Set<string>();
    for (const p of dashboard.panels) {
      expect(p.gridPos.x + p.gridPos.w).toBeLessThanOrEqual(24);
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
        for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
          expect({ panel: p.title, cell: `${x},${y}`, free: !cells.has(`${x},${y}`) }).toEqual({ panel: p.title, cell: `${x},${y}`, free: true });
          cells.add(`${x},${y}`);
        }
      }
    }
  });

  it('has balanced parentheses and braces in every query', () => {
    for (const q of queries) {
      let depth = 0;
      for (const ch of q.expr) {
        if (ch === '(' || ch === '{' || ch === '[') depth++;
        if (ch === ')' || ch === '}' || ch === ']') depth--;
        expect(depth).toBeGreaterThanOrEqual(0);
      }
      expect({ q: q.expr, depth }).toEqual({ q: q.expr, depth: 0 });
    }
  });
});
