/**
 * `quiclb operator`: the composition root. Informers (QuicLoadBalancers, Services, EndpointSlices, Pods, Nodes) feed
 * a de-duplicating work queue; the reconciler writes records, Secrets, annotations and status, and publishes
 * per-node snapshots into an in-memory source that the config server (mTLS gRPC) streams to the data planes. The
 * data planes' ACKs, NACKs, health reports and connections requeue the load balancers so status follows them.
 */
import type { Server as HttpServer } from 'node:http';
import * as k8s from '@kubernetes/client-node';
import { pino, type Logger } from 'pino';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { formatSocketAddress } from '../lib/config/address.js';
import { serverCredentials } from '../proto/tls.js';
import { ServerIdStore } from './allocation/store.js';
import { ConfigServer, InMemorySnapshotSource, type BoundAddress } from './config-server/index.js';
import { serveMetrics } from './config-server/metrics-http.js';
import { EventRecorder } from './kube/events.js';
import { keepRunning, makeInformers, objectKey, type Informers } from './kube/informers.js';
import { SecretStore } from './kube/secrets.js';
import { ObjectWriter } from './kube/writers.js';
import { OperatorMetrics } from './metrics.js';
import { WorkQueue } from './queue/work-queue.js';
import { SnapshotPublisher } from './reconcile/publisher.js';
import { Reconciler } from './reconcile/reconciler.js';

export interface OperatorOptions {
  readonly kubeconfig: k8s.KubeConfig;
  /** Where the config server listens (IP:PORT). */
  readonly configListen: string;
  readonly tlsDir: string;
  /** Watch one namespace only (null: every namespace). */
  readonly namespace: string | null;
  /** Port of /metrics on the --config-listen host (undefined: none). */
  readonly metricsPort?: number;
  readonly logger?: Logger;
  readonly logLevel?: string;
  /** Name of this replica in Events (POD_NAME in a cluster). */
  readonly instance?: string;
  /** Longest wait for the load balancers that exist at start before a partial set is published. Default 30 s. */
  readonly startupHoldMs?: number;
  readonly resyncMs?: number;
}

export interface RunningOperator {
  readonly configAddress: BoundAddress;
  readonly metricsAddress: string | null;
  readonly logger: Logger;
  readonly configServer: ConfigServer;
  stop(): Promise<void>;
}

const REDACT = ['key', '*.key', 'configs[*].key', '*.configs[*].key', 'data', '*.data'];

export function operatorLogger(level = 'info'): Logger {
  return pino({ level, name: 'quiclb-operator', redact: { paths: REDACT, censor: '[redacted]' } }, pino.destination({ fd: 1, sync: true }));
}

/** Keys of the load balancers a change of a namespaced object (Service, EndpointSlice, Pod) may concern. */
function keysInNamespace(inf: Informers, namespace: string | undefined, serviceName: string | undefined): string[] {
  if (namespace === undefined) return [];
  return inf.qlbs
    .list(namespace)
    .filter((q) => serviceName === undefined || (q.spec as { backend?: { serviceName?: string } } | undefined)?.backend?.serviceName === serviceName)
    .map(objectKey);
}

export async function runOperator(o: OperatorOptions): Promise<RunningOperator> {
  const logger = o.logger ?? operatorLogger(o.logLevel);
  const kc = o.kubeconfig;
  if (!kc.getCurrentCluster()) throw new Error('the kubeconfig names no cluster');
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });

  const informers = makeInformers(kc, o.namespace);
  const source = new InMemorySnapshotSource();
  const configServer = new ConfigServer({ source, credentials: serverCredentials(o.tlsDir), logger: logger.child({ component: 'config-server' }), registry });
  const core = kc.makeApiClient(k8s.CoreV1Api);
  let queue: WorkQueue<string> | null = null;
  const metrics = new OperatorMetrics(registry, {
    connectedDataPlanes: () => configServer.dataPlanes().filter((d) => d.connected).length,
    queueLength: () => queue?.length ?? 0,
  });

  // Informers first: the set of load balancers at start decides the publisher's start-up hold.
  const restarts = (what: string) => (e: unknown) => logger.warn({ informer: what, err: e instanceof Error ? e.message : String(e) }, 'watch failed: restarting');
  const keepers = [
    keepRunning(informers.qlbs, restarts('quicloadbalancers')),
    keepRunning(informers.services, restarts('services')),
    keepRunning(informers.slices, restarts('endpointslices')),
    keepRunning(informers.pods, restarts('pods')),
    keepRunning(informers.nodes, restarts('nodes')),
  ];
  await Promise.all([informers.qlbs.start(), informers.services.start(), informers.slices.start(), informers.pods.start(), informers.nodes.start()]);
  const initial = informers.qlbs.list().map(objectKey);
  const publisher = new SnapshotPublisher(source, logger.child({ component: 'publisher' }), initial);
  publisher.setNodes(informers.nodes.list().map((n) => n.metadata?.name ?? '').filter((n) => n !== ''));
  const hold = setTimeout(() => {
    if (publisher.isHeld) logger.warn({ waited: o.startupHoldMs ?? 30_000 }, 'not every load balancer reconciled in time: publishing what there is');
    publisher.releaseHold();
  }, o.startupHoldMs ?? 30_000);
  hold.unref();

  const reconciler = new Reconciler({
    informers,
    ids: new ServerIdStore(core),
    secrets: new SecretStore(core),
    writer: new ObjectWriter(kc),
    events: new EventRecorder(kc, o.instance ?? process.env.POD_NAME ?? 'local', logger),
    publisher,
    dataPlanes: () => configServer.dataPlanes(),
    metrics,
    logger: logger.child({ component: 'reconciler' }),
    ...(o.resyncMs !== undefined ? { resyncMs: o.resyncMs } : {}),
  });
  const q = new WorkQueue<string>({ process: (key) => reconciler.reconcile(key), logger });
  queue = q;
  const all = () => {
    for (const k of informers.qlbs.list().map(objectKey)) q.add(k);
  };

  for (const ev of [k8s.ADD, k8s.UPDATE, k8s.DELETE] as const) {
    informers.qlbs.on(ev, (obj) => q.add(objectKey(obj)));
    informers.services.on(ev, (s) => keysInNamespace(informers, s.metadata?.namespace, s.metadata?.name).forEach((k) => q.add(k)));
    informers.slices.on(ev, (s) => keysInNamespace(informers, s.metadata?.namespace, s.metadata?.labels?.['kubernetes.io/service-name'] ?? '\0').forEach((k) => q.add(k)));
    informers.nodes.on(ev, () => {
      publisher.setNodes(informers.nodes.list().map((n) => n.metadata?.name ?? '').filter((n) => n !== ''));
      all();
    });
  }
  // A new pod may need its annotation (its slice entry usually changes too, but not always first).
  informers.pods.on(k8s.ADD, (p) => keysInNamespace(informers, p.metadata?.namespace, undefined).forEach((k) => q.add(k)));

  configServer.on('ack', ({ identity, version }) => {
    metrics.acks.inc();
    logger.info({ identity, version, correlationIds: publisher.correlationIdsOf(version) }, 'data plane ACKed');
    all();
  });
  configServer.on('nack', ({ identity, nack }) => {
    metrics.nacks.inc();
    logger.warn({ identity, version: nack.version, field: nack.field, err: nack.message, correlationIds: publisher.correlationIdsOf(nack.version) }, 'data plane rejected a snapshot');
    all();
  });
  configServer.on('connected', all);
  configServer.on('disconnected', all);
  configServer.on('health', all);

  let metricsServer: HttpServer | null = null;
  try {
    const configAddress = await configServer.listen(o.configListen);
    let metricsAddress: string | null = null;
    if (o.metricsPort !== undefined) {
      const m = await serveMetrics(registry, configAddress.host, o.metricsPort);
      metricsServer = m.server;
      metricsAddress = formatSocketAddress({ host: configAddress.host, port: m.address.port });
    }
    for (const k of initial) q.add(k);
    q.start();
    logger.info({ configAddress: configAddress.address, metricsAddress, namespace: o.namespace ?? '(all)', loadBalancers: initial.length }, 'operator running');
    return {
      configAddress,
      metricsAddress,
      logger,
      configServer,
      async stop() {
        clearTimeout(hold);
        await q.stop();
        await Promise.all(keepers.map((k) => k.stop()));
        await configServer.close();
        if (metricsServer) {
          metricsServer.closeAllConnections();
          await new Promise<void>((r) => metricsServer!.close(() => r()));
        }
      },
    };
  } catch (e) {
    clearTimeout(hold);
    await Promise.all(keepers.map((k) => k.stop()));
    await configServer.close(0);
    metricsServer?.close();
    throw e;
  }
}
