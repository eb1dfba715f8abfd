/**
 * `quiclb operator`: the composition root. Informers (QuicLoadBalancers, Services, EndpointSlices, Pods, Nodes, user key Secrets) feed
 * a de-duplicating work queue; the reconciler writes records, Secrets, annotations and status, and publishes
 * per-node snapshots into an in-memory source that the config server (mTLS gRPC) streams to the data planes. The
 * data planes' ACKs, NACKs, health reports and connections requeue the load balancers so status follows them.
 *
 * With leader election only the Lease holder acts (reconciles, serves snapshots on --config-listen); standbys keep
 * their informers warm and serve /metrics. A leader that loses the Lease stops acting and the run ends (`lost`).
 */
import { randomBytes } from 'node:crypto';
import type { MonitoringServer } from '../lib/monitoring.js';
import { hostname } from 'node:os';
import * as k8s from '@kubernetes/client-node';
import { pino, type Logger } from 'pino';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { formatSocketAddress, parseSocketAddress } from '../lib/config/address.js';
import { serverCredentials } from '../proto/tls.js';
import { ServerIdStore } from './allocation/store.js';
import { ConfigServer, InMemorySnapshotSource, type BoundAddress } from './config-server/index.js';
import { tokenReviewAuthenticator, type ServiceAccountRef } from './kube/token-review.js';
import { EventRecorder } from './kube/events.js';
import { informersByName, keepRunning, listedOnce, makeInformers, objectKey, type Informers } from './kube/informers.js';
import { loadBalancersUsingSecret } from './kube/key-secrets.js';
import { LeaderElector, registerLeaderMetrics } from './kube/lease.js';
import { SecretStore } from './kube/secrets.js';
import { ObjectWriter } from './kube/writers.js';
import { OperatorMetrics, serveMonitoring } from './metrics.js';
import { WorkQueue } from './queue/work-queue.js';
import { LastGoodSpecs } from './reconcile/last-good-specs.js';
import { servingNodesOf } from './reconcile/observe.js';
import { SnapshotPublisher } from './reconcile/publisher.js';
import { setupTracing } from './tracing.js';
import { Reconciler } from './reconcile/reconciler.js';

export interface LeaderElectionOptions {
  /** Namespace of the Lease (the operator's own). */
  readonly namespace: string;
  /** Lease name. Default quiclb-operator (deploy/rbac.yaml grants exactly that one). */
  readonly name?: string;
  /** Unique per process: default POD_NAME (or the host name) plus a random suffix. */
  readonly identity?: string;
  readonly leaseSeconds?: number;
  readonly renewDeadlineSeconds?: number;
  readonly retrySeconds?: number;
}

export interface OperatorOptions {
  readonly kubeconfig: k8s.KubeConfig;
  /** Where the config server listens (IP:PORT) while this replica acts. */
  readonly configListen: string;
  readonly tlsDir: string;
  /** Watch one namespace only (null: every namespace). */
  readonly namespace: string | null;
  /**
   * Act only while holding this Lease (informers stay warm meanwhile). Losing it ends the run (`lost` resolves):
   * as with client-go, a replica that lost its lease exits and starts again as a candidate.
   */
  readonly leaderElection?: LeaderElectionOptions;
  /** Port of /metrics, /healthz and /readyz (200 only while acting) on the --config-listen host (undefined: none); served by standbys too. */
  readonly metricsPort?: number;
  readonly logger?: Logger;
  readonly logLevel?: string;
  /** Name of this replica in Events (POD_NAME in a cluster). */
  readonly instance?: string;
  /** Longest wait for the load balancers that exist at start before a partial set is published. Default 30 s. */
  readonly startupHoldMs?: number;
  readonly resyncMs?: number;
  /** How long a pod whose server ID changed may still mint with the previous one (--server-id-propagation). */
  readonly serverIdPropagationMs?: number;
  /** OTLP/HTTP collector for reconcile and push spans (operator/tracing.ts); null or absent: the environment decides, else none. */
  readonly otlpEndpoint?: string | null;
  /**
   * Set (--data-plane-auth token): a data plane's Hello node must be confirmed by a TokenReview of the pod-bound
   * token it sends, issued to this ServiceAccount (kube/token-review.ts). Absent: the Hello's node is trusted.
   */
  readonly dataPlaneServiceAccount?: ServiceAccountRef;
}

export interface RunningOperator {
  /** The config server's address while this replica acts, else null. */
  configAddress(): BoundAddress | null;
  readonly metricsAddress: string | null;
  readonly logger: Logger;
  /** Resolves when this replica lost its leadership (never without leader election). */
  readonly lost: Promise<void>;
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

/**
 * How long after this process starts acting the data planes of a previous operator may still be reconnecting: they
 * retry their stream at most 30 s apart (4 s after a recent contact; docs/dataplane-agent.md), plus a margin. While
 * a node serving a load balancer has no data plane connected, its accepting config is not promoted before then.
 */
export const DATA_PLANE_RECONNECT_MS = 35_000;

/** What exists only while this replica acts: the snapshots, the config server, the queue. */
interface Term {
  readonly publisher: SnapshotPublisher;
  readonly configServer: ConfigServer;
  readonly queue: WorkQueue<string>;
  readonly address: BoundAddress;
  readonly hold: ReturnType<typeof setTimeout>;
}

export async function runOperator(o: OperatorOptions): Promise<RunningOperator> {
  const logger = o.logger ?? operatorLogger(o.logLevel);
  const kc = o.kubeconfig;
  if (!kc.getCurrentCluster()) throw new Error('the kubeconfig names no cluster');
  // Before anything connects: a bad TLS directory is a usage error, not a failure at the first leadership.
  const credentials = serverCredentials(o.tlsDir);
  const tracing = await setupTracing({ endpoint: o.otlpEndpoint ?? null, logger });
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'quiclb_' });
  const informers = makeInformers(kc, o.namespace);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  let term: Term | null = null;
  const metrics = new OperatorMetrics(registry, {
    connectedDataPlanes: () => term?.configServer.dataPlanes().filter((d) => d.connected).length ?? 0,
    queueLength: () => term?.queue.length ?? 0,
    retainedLoadBalancers: () => term?.publisher.retainedCount ?? 0,
  });
  const nodeNames = () => informers.nodes.list().map((n) => n.metadata?.name ?? '').filter((n) => n !== '');
  const all = () => {
    if (term) for (const k of informers.qlbs.list().map(objectKey)) term.queue.add(k);
  };
  const add = (k: string) => term?.queue.add(k);

  const restarts = (what: string) => (e: unknown) => logger.warn({ informer: what, err: e instanceof Error ? e.message : String(e) }, 'watch failed: restarting');
  // The last readable spec of every load balancer, for the claims the others see (reconcile/last-good-specs.ts).
  const lastGoodSpecs = new LastGoodSpecs();
  const keepers = Object.entries(informersByName(informers)).map(([name, inf]) => keepRunning(inf, restarts(name)));
  for (const ev of [k8s.ADD, k8s.UPDATE, k8s.DELETE] as const) {
    informers.qlbs.on(ev, (obj) => add(objectKey(obj)));
    informers.services.on(ev, (s) => keysInNamespace(informers, s.metadata?.namespace, s.metadata?.name).forEach(add));
    informers.slices.on(ev, (s) => keysInNamespace(informers, s.metadata?.namespace, s.metadata?.labels?.['kubernetes.io/service-name'] ?? '\0').forEach(add));
    // A user key changed (or its Secret appeared, or went): the load balancers using it rotate now, not at the resync.
    informers.keySecrets.on(ev, (s) => loadBalancersUsingSecret(informers.qlbs.list(s.metadata?.namespace), s.metadata?.namespace, s.metadata?.name).forEach(add));
  }
  // Nodes are updated often (status heartbeats): only a new, gone or relabelled node changes what is served where.
  const nodeLabels = new Map<string, string>();
  const nodeChanged = (n: k8s.V1Node, gone: boolean) => {
    const name = n.metadata?.name ?? '';
    const labels = gone ? undefined : JSON.stringify(Object.entries(n.metadata?.labels ?? {}).sort());
    if (nodeLabels.get(name) === labels) return;
    if (labels === undefined) nodeLabels.delete(name);
    else nodeLabels.set(name, labels);
    term?.publisher.setNodes(nodeNames());
    all();
  };
  // A load balancer gone frees its ports and its backend Service: the later ones that conflicted with it take over now.
  informers.qlbs.on(k8s.DELETE, (o) => {
    lastGoodSpecs.forget(o.metadata?.uid);
    all();
  });
  informers.nodes.on(k8s.ADD, (n) => nodeChanged(n, false));
  informers.nodes.on(k8s.UPDATE, (n) => nodeChanged(n, false));
  informers.nodes.on(k8s.DELETE, (n) => nodeChanged(n, true));
  // A new pod may need its annotation (its slice entry usually changes too, but not always first).
  informers.pods.on(k8s.ADD, (p) => keysInNamespace(informers, p.metadata?.namespace, undefined).forEach(add));

  /** Starts acting: snapshots held until every existing load balancer is reconciled, config server, queue. */
  async function act(): Promise<Term> {
    const source = new InMemorySnapshotSource();
    const initial = informers.qlbs.list().map(objectKey);
    const retainNodesOf = (key: string): readonly string[] | null => {
      const slash = key.indexOf('/');
      const qlb = informers.qlbs.get(key.slice(slash + 1), key.slice(0, slash));
      if (!qlb) return [];
      const [self] = lastGoodSpecs.resolve([qlb]);
      return servingNodesOf(self, lastGoodSpecs.resolve(informers.qlbs.list()), informers.nodes.list());
    };
    const publisher = new SnapshotPublisher(source, logger.child({ component: 'publisher' }), initial, retainNodesOf);
    publisher.setNodes(nodeNames());
    const configServer = new ConfigServer({
      source,
      credentials,
      logger: logger.child({ component: 'config-server' }),
      registry,
      correlationIdsOf: (v) => publisher.correlationIdsOf(v),
      ...(o.dataPlaneServiceAccount ? { authenticateNode: tokenReviewAuthenticator(kc.makeApiClient(k8s.AuthenticationV1Api), o.dataPlaneServiceAccount) } : {}),
    });
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
      ...(o.serverIdPropagationMs !== undefined ? { serverIdPropagationMs: o.serverIdPropagationMs } : {}),
      reconnectUntil: Date.now() + DATA_PLANE_RECONNECT_MS,
      enqueue: (k) => queue.add(k),
      lastGoodSpecs,
    });
    const queue = new WorkQueue<string>({ process: (key) => reconciler.reconcile(key), logger });
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
    // Health reports come every few seconds per data plane: coalesce them to one reconcile per second per load balancer.
    configServer.on('health', ({ backends }) => {
      for (const k of new Set(backends.map((b) => b.loadBalancer))) queue.addAfter(k, 1000);
    });
    let address: BoundAddress;
    try {
      address = await configServer.listen(o.configListen);
    } catch (e) {
      await configServer.close(0);
      throw e;
    }
    const hold = setTimeout(() => {
      if (publisher.isHeld) logger.warn({ waitedMs: o.startupHoldMs ?? 30_000 }, 'not every load balancer reconciled in time: publishing what there is');
      publisher.releaseHold();
    }, o.startupHoldMs ?? 30_000);
    hold.unref();
    for (const k of initial) queue.add(k);
    queue.start();
    return { publisher, configServer, queue, address, hold };
  }

  async function standDown(t: Term): Promise<void> {
    clearTimeout(t.hold);
    await t.queue.stop();
    await t.configServer.close();
  }

  await Promise.all(Object.values(informersByName(informers)).map((inf) => inf.start()));
  let metricsServer: MonitoringServer | null = null;
  let metricsAddress: string | null = null;
  let elector: LeaderElector | null = null;
  let stopping = false;
  let signalLost: () => void = () => undefined;
  const lost = new Promise<void>((r) => (signalLost = r));
  try {
    if (o.metricsPort !== undefined) {
      const host = parseSocketAddress('--config-listen', o.configListen, { allowPortZero: true }).host;
      const m = await serveMonitoring(registry, host, o.metricsPort, () => term !== null, logger);
      metricsServer = m.server;
      metricsAddress = formatSocketAddress({ host, port: m.address.port });
    }
    await listedOnce(informersByName(informers), (unlisted) => logger.warn({ informers: unlisted }, 'waiting for the first list of every watch: not acting on empty caches'));
    const le = o.leaderElection;
    if (le) {
      const identity = le.identity ?? `${process.env.POD_NAME ?? hostname()}-${randomBytes(3).toString('hex')}`;
      let starting: Promise<void> = Promise.resolve();
      elector = new LeaderElector({
        kc,
        namespace: le.namespace,
        name: le.name ?? 'quiclb-operator',
        identity,
        ...(le.leaseSeconds !== undefined ? { leaseSeconds: le.leaseSeconds } : {}),
        ...(le.renewDeadlineSeconds !== undefined ? { renewDeadlineSeconds: le.renewDeadlineSeconds } : {}),
        ...(le.retrySeconds !== undefined ? { retrySeconds: le.retrySeconds } : {}),
        logger,
        onStartedLeading: () => {
          starting = act().then(
            (t) => {
              term = t;
              logger.info({ identity, configAddress: t.address.address }, 'leading: acting and serving snapshots');
            },
            (e: unknown) => {
              logger.error({ err: (e as Error).message }, 'could not start acting');
              signalLost();
            },
          );
        },
        onStoppedLeading: async () => {
          await starting;
          const t = term;
          term = null;
          if (t) await standDown(t);
          if (!stopping) {
            logger.warn({ identity }, 'leadership lost: stopped acting');
            signalLost();
          }
        },
      });
      registerLeaderMetrics(registry, elector);
      elector.start();
      logger.info({ identity, lease: `${le.namespace}/${le.name ?? 'quiclb-operator'}`, metricsAddress, namespace: o.namespace ?? '(all)' }, 'operator running: candidate for leadership');
    } else {
      term = await act();
      logger.info({ configAddress: term.address.address, metricsAddress, namespace: o.namespace ?? '(all)' }, 'operator running');
    }
  } catch (e) {
    await Promise.all(keepers.map((k) => k.stop()));
    await metricsServer?.close();
    await tracing.shutdown();
    throw e;
  }
  return {
    configAddress: () => term?.address ?? null,
    metricsAddress,
    logger,
    lost,
    async stop() {
      stopping = true;
      if (elector) await elector.stop();
      const t = term;
      term = null;
      if (t) await standDown(t);
      await Promise.all(keepers.map((k) => k.stop()));
      await metricsServer?.close();
      await tracing.shutdown();
    },
  };
}
