/** The operator's quiclb_operator_* metrics, on a prom-client Registry the caller owns, and its monitoring endpoint. */
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, type Registry } from 'prom-client';
import { MonitoringServer, type MonitoringLogger } from '../lib/monitoring.js';

export interface OperatorMetricsSource {
  /** Data planes with an open config stream. */
  connectedDataPlanes(): number;
  /** Keys waiting in the work queue. */
  queueLength(): number;
  /** Load balancers the data planes keep as they have them (not reconciled since the start-up hold ended). */
  retainedLoadBalancers?(): number;
}

export type ReconcileResult = 'success' | 'requeue' | 'conflict' | 'error';

export class OperatorMetrics {
  readonly reconciles: Counter<'result'>;
  readonly errors: Counter<'stage'>;
  readonly allocations: Counter<'kind'>;
  readonly rotations: Counter<'phase'>;
  readonly acks: Counter;
  readonly nacks: Counter;
  readonly reconcileSeconds: Gauge;

  constructor(registry: Registry, source: OperatorMetricsSource) {
    const registers = [registry];
    this.reconciles = new Counter({ name: 'quiclb_operator_reconciles_total', help: 'Reconciles of QuicLoadBalancers, by result.', labelNames: ['result'], registers });
    this.errors = new Counter({
      name: 'quiclb_operator_reconcile_errors_total',
      help: 'Reconcile failures, by the step that failed (read, spec, records, secret, pods, status, finalizer, internal).',
      labelNames: ['stage'],
      registers,
    });
    this.allocations = new Counter({
      name: 'quiclb_operator_server_id_allocations_total',
      help: 'Server IDs assigned (kind=assigned) and released into quarantine (kind=released), counted when the records write succeeded.',
      labelNames: ['kind'],
      registers,
    });
    this.rotations = new Counter({
      name: 'quiclb_operator_rotations_total',
      help: 'Key rotation steps recorded, by phase (created, started, promoted, retired, abandoned).',
      labelNames: ['phase'],
      registers,
    });
    this.acks = new Counter({ name: 'quiclb_operator_snapshot_versions_acked_total', help: 'Snapshot versions acknowledged by data planes (one per data plane and version).', registers });
    this.nacks = new Counter({ name: 'quiclb_operator_snapshot_versions_rejected_total', help: 'Snapshot versions rejected by data planes.', registers });
    this.reconcileSeconds = new Gauge({ name: 'quiclb_operator_last_reconcile_seconds', help: 'Duration of the last reconcile.', registers });
    new Gauge({
      name: 'quiclb_operator_connected_data_planes',
      help: 'Data planes connected to the config server.',
      registers,
      collect() {
        this.set(source.connectedDataPlanes());
      },
    });
    new Gauge({
      name: 'quiclb_operator_retained_load_balancers',
      help: 'QuicLoadBalancers not reconciled since this operator started acting whose start-up hold ended: data planes keep them as they have them (Snapshot.retained).',
      registers,
      collect() {
        this.set(source.retainedLoadBalancers?.() ?? 0);
      },
    });
    new Gauge({
      name: 'quiclb_operator_queue_length',
      help: 'QuicLoadBalancer keys waiting in the work queue.',
      registers,
      collect() {
        this.set(source.queueLength());
      },
    });
  }
}

/**
 * The operator's monitoring endpoint: /metrics (Prometheus text), /healthz (the process runs) and /readyz (200 only
 * while this replica acts: with leader election a Service over the replicas then sends data planes to the leader).
 * The same bounded server as the data planes' (lib/monitoring.ts: connection cap, short timeouts, spaced scrapes).
 */
export async function serveMonitoring(
  registry: Registry,
  host: string,
  port: number,
  acting: () => boolean,
  logger: MonitoringLogger,
): Promise<{ server: MonitoringServer; address: AddressInfo }> {
  const server = new MonitoringServer({
    metrics: async () => ({ contentType: registry.contentType, body: await registry.metrics() }),
    readiness: () => {
      const ok = acting();
      return { ready: ok, detail: [ok ? 'acting' : 'standing by (not the leader)'] };
    },
    logger,
  });
  return { server, address: await server.listen(port, host) };
}
