/** The operator's quiclb_operator_* metrics, on a prom-client Registry the caller owns, and its monitoring endpoint. */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, type Registry } from 'prom-client';

export interface OperatorMetricsSource {
  /** Data planes with an open config stream. */
  connectedDataPlanes(): number;
  /** Keys waiting in the work queue. */
  queueLength(): number;
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
      help: 'Reconcile failures, by the step that failed (read, spec, records, secret, pods, status, finalizer).',
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
 */
export async function serveMonitoring(registry: Registry, host: string, port: number, acting: () => boolean): Promise<{ server: Server; address: AddressInfo }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405, { allow: 'GET, HEAD' }).end();
    if (path === '/metrics') {
      registry
        .metrics()
        .then((body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body))
        .catch((e: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics collection failed: ${e.message}\n`));
      return;
    }
    if (path === '/healthz') return void res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    if (path === '/readyz') {
      const ok = acting();
      return void res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'acting\n' : 'standing by (not the leader)\n');
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics, /healthz or /readyz\n');
  });
  server.headersTimeout = 5000;
  server.requestTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return { server, address: server.address() as AddressInfo };
}
