/** quiclb_operator_* metrics of the node agent: the config channel's state, as /metrics and /readyz show it. */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { OperatorStream } from './operator-stream.js';

export interface AgentCounters {
  snapshots: Counter<'result'>;
  stateFile: Counter<'op' | 'result'>;
}

export function agentMetrics(registry: Registry, stream: () => OperatorStream | null, inForce: () => number | null): AgentCounters {
  new Gauge({
    name: 'quiclb_operator_connected',
    help: '1 while the stream to the operator is up, else 0 (forwarding goes on with the last good snapshot).',
    registers: [registry],
    aggregator: 'max',
    collect() {
      this.set(stream()?.connected ? 1 : 0);
    },
  });
  new Gauge({
    name: 'quiclb_operator_disconnected_seconds',
    help: 'Seconds since the stream to the operator was lost (0 while connected; since start when never connected).',
    registers: [registry],
    aggregator: 'max',
    collect() {
      const s = stream();
      const since = s === null || s.connected ? 0 : s.disconnectedSince || startedAt;
      this.set(since === 0 ? 0 : (Date.now() - since) / 1000);
    },
  });
  new Gauge({
    name: 'quiclb_operator_last_contact_timestamp_seconds',
    help: 'When the last message arrived from the operator (0 = never).',
    registers: [registry],
    aggregator: 'max',
    collect() {
      this.set((stream()?.lastContact ?? 0) / 1000);
    },
  });
  new Counter({
    name: 'quiclb_operator_connect_attempts_total',
    help: 'Streams opened to the operator (the first one and every reconnect attempt).',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(stream()?.attempts ?? 0);
    },
  });
  new Gauge({
    name: 'quiclb_operator_snapshot_version',
    help: 'Version of the snapshot in force (0 = none yet).',
    registers: [registry],
    aggregator: 'max',
    collect() {
      this.set(inForce() ?? 0);
    },
  });
  const startedAt = Date.now();
  const snapshots = new Counter({
    name: 'quiclb_operator_snapshots_total',
    help: 'Snapshots received, by result: applied, unchanged (already in force), rejected (Nack; the last good one stays), restored (from --state-dir).',
    labelNames: ['result'],
    registers: [registry],
  });
  for (const r of ['applied', 'unchanged', 'rejected', 'restored']) snapshots.inc({ result: r }, 0);
  const stateFile = new Counter({
    name: 'quiclb_state_file_operations_total',
    help: 'Reads and writes of the --state-dir snapshot file, by result (error: see the log).',
    labelNames: ['op', 'result'],
    registers: [registry],
  });
  return { snapshots, stateFile };
}
