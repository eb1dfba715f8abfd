/**
 * `quiclb dataplane --operator ADDR`: the node agent. Holds one stream to the operator (operator-stream.ts),
 * applies every snapshot all-or-nothing to the load balancers it describes (load-balancers.ts) and answers with
 * an Ack or a Nack, probes the backends and reports their health, reports traffic counters every few seconds,
 * keeps forwarding on the last good snapshot while the operator is away, and (with a state directory) restores
 * that snapshot at start so forwarding does not wait for the operator.
 */
import { mkdirSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { hostname } from 'node:os';
import { AggregatorRegistry, Registry } from 'prom-client';
import { formatSocketAddress } from '../../lib/config/address.js';
import type { SocketAddress } from '../../lib/config/snapshot.js';
import { ConfigError } from '../../lib/quiclb/config.js';
import { RETAINED_CAPABILITY, snapshotFromWire } from '../../proto/convert.js';
import { Snapshot, type Hello } from '../../proto/gen/quiclb/v1/distribution.js';
import { clientCredentials } from '../../proto/tls.js';
import { ListenLocks } from '../listen-lock.js';
import { createLogger, type Logger } from '../logging.js';
import { MonitoringServer, type Readiness } from '../../lib/monitoring.js';
import type { HealthState } from '../router.js';
import { agentMetrics } from './agent-metrics.js';
import { collectProcessMetrics } from '../metrics.js';
import type { BackoffOptions } from './backoff.js';
import { InProcessEngine, WorkerEngine, type LbEngine } from './engines.js';
import { LoadBalancerSet, type ApplyFailure } from './load-balancers.js';
import { readNodeToken } from './node-token.js';
import { OperatorStream } from './operator-stream.js';
import { mergeRetained, type MergedSnapshot } from './retained.js';
import { backendHealth, countersFromMetrics, HealthReporter } from './reports.js';
import { SnapshotStore, StateFileError } from './state-store.js';
import { softwareVersion } from './version.js';
import { loadOrCreateSeed, UPSTREAM_PORT_SEED_FILE } from '../upstream-ports.js';

export interface AgentOptions {
  /** HOST:PORT of the operator's config server. */
  readonly operator: string;
  /** TLS directory: ca.crt, tls.crt, tls.key (proto/tls.ts). */
  readonly tlsDir: string;
  /** Name the operator's certificate must carry (default: the host part of `operator`). */
  readonly serverName?: string;
  /** Where the last good snapshot is kept (none: not ready until the operator sends one). */
  readonly stateDir?: string;
  readonly nodeName?: string;
  readonly podName?: string;
  /** Monitoring port (/metrics /healthz /readyz); null = no monitoring server. */
  readonly metricsPort?: number | null;
  readonly metricsAddress?: string;
  /** Worker processes per load balancer (1 = in this process). */
  readonly workers?: number;
  readonly logger?: Logger;
  readonly logLevel?: string;
  /** Counters on the stream every this many ms (default 5000). */
  readonly reportIntervalMs?: number;
  /** Health changes are looked for this often (default 1000 ms). */
  readonly healthReportIntervalMs?: number;
  readonly backoff?: BackoffOptions;
  readonly maxReceiveBytes?: number;
  /** Directory of the listen-address lock files (default: dataplane/listen-lock.ts); null = no locks. */
  readonly listenLockDir?: string | null;
  /** File holding the node token sent on every stream (re-read each attempt: the kubelet rotates it). */
  readonly nodeTokenFile?: string;
}

export interface AgentHandle {
  readonly logger: Logger;
  readonly operator: OperatorStream;
  readonly loadBalancers: LoadBalancerSet;
  /** Version of the snapshot in force (null: none yet). */
  versionInForce(): number | null;
  /** Bound listen addresses of a load balancer ([] when it is not running). */
  addresses(lb: string): SocketAddress[];
  monitoringAddress(): AddressInfo | null;
  /** Prometheus text (aggregated over worker processes). */
  metrics(): Promise<string>;
  readiness(): Readiness;
  stop(): Promise<void>;
}

export const CAPABILITIES = ['health-reports', 'counters', 'workers', 'state-dir', RETAINED_CAPABILITY];

/** Entries per HealthReport message. */
const HEALTH_REPORT_CHUNK = 1000;

const clip = (text: string, max: number) => (text.length <= max ? text : `${text.slice(0, max - 1)}…`);

interface InForce {
  readonly wire: Snapshot;
  readonly version: number;
  /** Encoded snapshot without nonce and creation time: equal content, equal bytes. Holds keys: compare only. */
  readonly content: Buffer;
  readonly source: 'operator' | 'state-dir';
}

function contentOf(s: Snapshot): Buffer {
  return Buffer.from(Snapshot.encode({ ...s, nonce: '', created: undefined }).finish());
}

/**
 * Stable upstream ports (dataplane/upstream-ports.ts) from the seed in the state directory, so a restarted agent
 * reaches every backend from the ports it used before. A seed that cannot be kept leaves the kernel choosing ports
 * (forwarding goes on; restarts then look like path changes to the backends).
 */
function stateDirPortSeed(dir: string, logger: Logger): Uint8Array | undefined {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return loadOrCreateSeed(join(dir, UPSTREAM_PORT_SEED_FILE));
  } catch (e) {
    logger.warn({ err: (e as Error).message }, 'stable upstream ports off: cannot keep the seed in the state directory');
    return undefined;
  }
}

export async function runAgent(options: AgentOptions): Promise<AgentHandle> {
  const logger = options.logger ?? createLogger({ level: options.logLevel ?? 'info', base: { component: 'dataplane-agent' } });
  const credentials = clientCredentials(options.tlsDir); // throws TlsDirError naming a missing file
  const processStart = new Date(Math.round(performance.timeOrigin));
  const workers = options.workers ?? 1;
  const registry = new Registry();
  collectProcessMetrics(registry);

  let inForce: InForce | null = null;
  let lastRejected: { version: number; field: string; message: string } | null = null;
  let connectedSince = 0;
  let stream: OperatorStream | null = null;
  const counters = agentMetrics(registry, () => stream, () => inForce?.version ?? null);

  const upstreamPortSeed = options.stateDir ? stateDirPortSeed(options.stateDir, logger) : undefined;
  const makeEngine = (_name: string, health: ReadonlyMap<string, HealthState>): LbEngine =>
    workers > 1 ? new WorkerEngine(workers, logger, () => String(logger.level), health, upstreamPortSeed) : new InProcessEngine(logger, registry, upstreamPortSeed);
  // The operator's verdicts rule only once the current stream has brought a snapshot that is now in force: the one
  // in force before may be as old as the outage (or days old, from --state-dir), and its verdicts with it.
  // While such a snapshot is being applied, its verdicts rule already (servers started or changed by it get them at
  // once); a rejected one is rolled back and the rule re-synced.
  let verdictsStream = -1;
  let applyingFrom = -1;
  // Load balancers the snapshot in force only retained (Snapshot.retained): their verdicts are as old as they are, so
  // this node's probes rule for them until the operator describes them again.
  let retainedInForce: ReadonlySet<string> = new Set();
  const setRetainedInForce = (kept: ReadonlySet<string>) => {
    if ([...kept].sort().join('\0') === [...retainedInForce].sort().join('\0')) return;
    retainedInForce = new Set(kept);
    lbs.syncAllHealth();
  };
  const lbs = new LoadBalancerSet({
    makeEngine,
    logger,
    registry,
    followVerdicts: (lb) =>
      !retainedInForce.has(lb) && stream?.connected === true && (verdictsStream === stream.currentStreamId || applyingFrom === stream.currentStreamId),
    listenLocks: openListenLocks(options.listenLockDir, logger),
  });
  const verdictsFrom = (streamId: number) => {
    if (verdictsStream === streamId || streamId !== stream?.currentStreamId) return;
    verdictsStream = streamId;
    lbs.syncAllHealth();
  };
  const store = options.stateDir ? new SnapshotStore(options.stateDir) : null;

  const configFailure = (e: unknown): ApplyFailure =>
    e instanceof ConfigError ? { field: e.field, message: e.message.slice(e.field.length + 2) } : { field: '', message: (e as Error).message };

  /** The snapshot `wire` asks for: with the load balancers it retains taken from the one in force (retained.ts). */
  const resolve = (wire: Snapshot): MergedSnapshot | ApplyFailure => {
    try {
      return mergeRetained(wire, inForce?.wire ?? null);
    } catch (e) {
      return configFailure(e);
    }
  };

  /** Missing retained names already logged (once each, until they are no longer missing). */
  const missingLogged = new Set<string>();
  const logMissing = (m: MergedSnapshot, version: number) => {
    for (const name of m.missing) {
      if (missingLogged.has(name)) continue;
      missingLogged.add(name);
      logger.warn({ version, lb: name }, 'the operator asks to keep a load balancer this data plane does not serve: left out');
    }
    for (const name of missingLogged) if (!m.missing.includes(name)) missingLogged.delete(name);
  };

  /** Validates and puts a snapshot in force; null on success, else why not (nothing changed then). */
  const putInForce = async (m: MergedSnapshot, source: InForce['source']): Promise<ApplyFailure | null> => {
    let content;
    try {
      content = snapshotFromWire(m.wire);
    } catch (e) {
      const f = configFailure(e);
      return { field: m.fieldOf(f.field), message: m.messageOf(f.field, f.message) };
    }
    // A retained load balancer is given the very snapshot it runs: LoadBalancerSet leaves it untouched.
    const next = content.loadBalancers.map((s) => (m.kept.has(s.name) ? (lbs.get(s.name)?.snapshot ?? s) : s));
    const failure = await lbs.apply(next);
    if (failure) return { field: m.fieldOf(failure.field), message: m.messageOf(failure.field, failure.message) };
    inForce = { wire: m.wire, version: content.version, content: contentOf(m.wire), source };
    return null;
  };

  // ---- restore from the state directory: forwarding starts before the operator answers
  if (store) {
    try {
      const saved = store.load();
      if (saved === null) logger.info({ state_dir: store.dir }, 'no saved snapshot; waiting for the operator');
      else {
        const merged = mergeRetained({ ...saved, retained: [] }, null);
        const failure = await putInForce(merged, 'state-dir');
        if (failure) {
          counters.stateFile.inc({ op: 'read', result: 'error' });
          logger.error({ file: store.path, field: failure.field, error: failure.message }, 'saved snapshot cannot be used; ignoring it and waiting for the operator');
        } else {
          counters.stateFile.inc({ op: 'read', result: 'success' });
          counters.snapshots.inc({ result: 'restored' });
          logger.info({ file: store.path, version: inForce!.version, load_balancers: lbs.list().map((l) => l.name) }, 'forwarding with the saved snapshot');
        }
      }
    } catch (e) {
      if (!(e instanceof StateFileError)) throw e;
      counters.stateFile.inc({ op: 'read', result: 'error' });
      logger.error({ error: e.message }, 'saved snapshot is unreadable; ignoring it and waiting for the operator');
    }
  }

  // ---- snapshots from the operator: one at a time, the newest waiting one next (older waiting ones are skipped)
  let waiting: { wire: Snapshot; streamId: number } | null = null;
  let applying: Promise<void> | null = null;
  const handle = async (wire: Snapshot, streamId: number): Promise<void> => {
    const s = stream!;
    const version = wire.version;
    const nonce = wire.nonce;
    const nack = (failure: ApplyFailure) => {
      counters.snapshots.inc({ result: 'rejected' });
      lastRejected = { version: Number(version), ...failure };
      logger.warn({ version: Number(version), nonce, field: failure.field, error: failure.message, in_force: inForce?.version ?? null }, 'snapshot rejected; keeping the last good one');
      s.send({ $case: 'nack', nack: { version, nonce, field: clip(failure.field, 1024), message: clip(failure.message, 2048) } }, streamId);
    };
    const merged = resolve(wire);
    if (!('wire' in merged)) return nack(merged);
    logMissing(merged, Number(version));
    // After a rollback that did not fully succeed, the load balancers may not run what inForce says: re-apply.
    if (inForce !== null && lbs.consistent && contentOf(merged.wire).equals(inForce.content)) {
      counters.snapshots.inc({ result: 'unchanged' });
      logger.debug({ version: Number(version), nonce }, 'snapshot already in force');
      // A snapshot restored from --state-dir is now confirmed by the operator (/readyz says so).
      inForce = { ...inForce, source: 'operator' };
      setRetainedInForce(merged.kept);
      verdictsFrom(streamId);
      s.send({ $case: 'ack', ack: { version, nonce } }, streamId);
      return;
    }
    applyingFrom = streamId;
    let failure;
    try {
      failure = await putInForce(merged, 'operator');
    } finally {
      applyingFrom = -1;
    }
    if (failure) {
      lbs.syncAllHealth(); // the rollback ran under the rejected snapshot's rule
      return nack(failure);
    }
    setRetainedInForce(merged.kept);
    counters.snapshots.inc({ result: 'applied' });
    logger.info({ version: Number(version), nonce, load_balancers: lbs.list().map((l) => l.name), retained: [...merged.kept] }, 'snapshot applied');
    if (store) {
      try {
        // What is in force: with the retained load balancers, so a restart without the operator keeps them too.
        store.save(merged.wire);
        counters.stateFile.inc({ op: 'write', result: 'success' });
      } catch (e) {
        counters.stateFile.inc({ op: 'write', result: 'error' });
        logger.error({ dir: store.dir, error: (e as NodeJS.ErrnoException).code ?? (e as Error).message }, 'cannot save the snapshot to the state directory');
      }
    }
    verdictsFrom(streamId);
    s.send({ $case: 'ack', ack: { version, nonce } }, streamId);
  };
  const drain = async () => {
    while (waiting !== null) {
      const w = waiting;
      waiting = null;
      try {
        await handle(w.wire, w.streamId);
      } catch (e) {
        logger.error({ error: (e as Error).message }, 'snapshot handling failed');
      }
    }
    applying = null;
  };

  const hello = (): Hello => ({
    nodeName: options.nodeName || process.env.NODE_NAME || hostname(),
    podName: options.podName || process.env.POD_NAME || '',
    softwareVersion: softwareVersion(),
    capabilities: CAPABILITIES,
    currentVersion: BigInt(inForce?.version ?? 0),
    processStartTime: processStart,
  });
  stream = new OperatorStream({
    address: options.operator,
    credentials,
    serverName: options.serverName,
    hello,
    logger,
    backoff: options.backoff,
    maxReceiveBytes: options.maxReceiveBytes,
    nodeToken: options.nodeTokenFile === undefined ? undefined : () => readNodeToken(options.nodeTokenFile!),
  });
  const operator = stream;
  const healthReporter = new HealthReporter();
  const reportHealth = () => {
    if (!operator.connected) return;
    const changes = healthReporter.changes(lbs.probeStates().map(({ lb, target }) => backendHealth(lb, target)));
    // In chunks: a server bounds the entries of one report (and the size of one message).
    for (let i = 0; i < changes.length; i += HEALTH_REPORT_CHUNK) {
      if (!operator.sendReport({ $case: 'health', health: { backends: changes.slice(i, i + HEALTH_REPORT_CHUNK) } })) {
        healthReporter.reset(); // not sent: everything again next time
        return;
      }
    }
  };
  operator.on('connected', () => {
    connectedSince = Date.now();
    healthReporter.reset();
    reportHealth(); // the operator's verdicts rule again once this stream brings a snapshot (verdictsFrom)
  });
  operator.on('disconnected', () => {
    connectedSince = 0;
    lbs.syncAllHealth(); // local probes rule until the operator is back
  });
  operator.on('snapshot', (wire, streamId) => {
    waiting = { wire, streamId };
    applying ??= drain();
  });

  // ---- metrics (the same numbers /metrics and the counters on the stream show)
  const collect = async (): Promise<Registry> => {
    if (workers <= 1) return registry;
    const fromWorkers = (await Promise.all(lbs.list().map((l) => l.engine.workerMetrics()))).flat();
    return AggregatorRegistry.aggregate([await registry.getMetricsAsJSON(), ...fromWorkers]);
  };
  const metricsText = async () => {
    const r = await collect();
    return { contentType: r.contentType, body: await r.metrics() };
  };
  let reportingCounters = false;
  const reportCounters = async () => {
    if (!operator.connected || reportingCounters) return;
    reportingCounters = true;
    try {
      const names = lbs.list().map((l) => l.name);
      const json = await (await collect()).getMetricsAsJSON();
      operator.sendReport({
        $case: 'counters',
        counters: { time: new Date(), processStartTime: processStart, loadBalancers: countersFromMetrics(json, names) },
      });
    } catch (e) {
      logger.warn({ error: (e as Error).message }, 'cannot read the counters');
    } finally {
      reportingCounters = false;
    }
  };

  const readiness = (): Readiness => {
    const detail: string[] = [];
    const now = Date.now();
    if (inForce === null) detail.push(`no snapshot yet: waiting for the operator at ${options.operator}`);
    else detail.push(`snapshot version ${inForce.version} in force (${inForce.source === 'operator' ? 'from the operator' : `restored from ${store!.path}`})`);
    if (operator.connected) detail.push(`operator ${options.operator}: connected for ${Math.round((now - connectedSince) / 1000)}s`);
    else {
      const since = operator.disconnectedSince;
      const contact = operator.lastContact ? `last contact ${new Date(operator.lastContact).toISOString()}` : 'never reached';
      detail.push(
        `operator ${options.operator}: unreachable${since ? ` for ${Math.round((now - since) / 1000)}s` : ''} (${contact}; ${operator.attempts} connect attempts${operator.lastError ? `; last error: ${operator.lastError}` : ''})`,
      );
    }
    if (lastRejected) detail.push(`last rejected snapshot: version ${lastRejected.version}: ${lastRejected.field ? `${lastRejected.field}: ` : ''}${lastRejected.message}`);
    let ready = inForce !== null;
    for (const lb of lbs.list()) {
      const r = lb.engine.readiness();
      if (r.ready < r.total) ready = false;
      const accepting = lb.snapshot.servers.filter((s) => s.state === 'active' && s.weight > 0 && lb.pushed.get(s.name) !== 'unhealthy').length;
      detail.push(
        `load balancer ${lb.name}: listening on ${lb.engine.addresses().map(formatSocketAddress).join(', ')}; data-plane processes ready ${r.ready}/${r.total}; servers accepting new connections ${accepting}/${lb.snapshot.servers.length}`,
      );
    }
    return { ready, detail };
  };

  let monitoring: MonitoringServer | null = null;
  if (options.metricsPort !== null && options.metricsPort !== undefined) {
    monitoring = new MonitoringServer({ metrics: metricsText, readiness, logger });
    const address = options.metricsAddress ?? '0.0.0.0';
    try {
      const a = await monitoring.listen(options.metricsPort, address);
      logger.info({ address: formatSocketAddress({ host: a.address, port: a.port }) }, 'monitoring: /metrics /healthz /readyz');
    } catch (e) {
      await lbs.stopAll();
      throw new Error(`cannot start the monitoring server on ${address}:${options.metricsPort}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
    }
  }

  operator.start();
  const countersTimer = setInterval(() => void reportCounters(), options.reportIntervalMs ?? 5000);
  const healthTimer = setInterval(reportHealth, options.healthReportIntervalMs ?? 1000);
  logger.info({ operator: options.operator, node: hello().nodeName, workers, state_dir: options.stateDir ?? null }, 'quiclb data-plane agent running');

  let stopped = false;
  return {
    logger,
    operator,
    loadBalancers: lbs,
    versionInForce: () => inForce?.version ?? null,
    addresses: (name) => lbs.get(name)?.engine.addresses() ?? [],
    monitoringAddress: () => monitoring?.address() ?? null,
    metrics: async () => (await metricsText()).body,
    readiness,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      clearInterval(countersTimer);
      clearInterval(healthTimer);
      operator.stop();
      await applying;
      await monitoring?.close();
      await lbs.stopAll();
      logger.info('quiclb data-plane agent stopped');
      logger.flush?.();
    },
  };
}

/**
 * The listen-address locks, or none (with a warning) where no lock directory can be made: e.g. a read-only root
 * filesystem. Locks only see instances in the same PID namespace (a lock names its owner by PID), so in a pod
 * they guard against a second instance in that pod, not on the node.
 */
function openListenLocks(dir: string | null | undefined, logger: Logger): ListenLocks | undefined {
  if (dir === null) return undefined;
  try {
    return new ListenLocks(dir);
  } catch (e) {
    logger.warn({ error: (e as Error).message }, 'no listen-address locks (cannot create their directory): another instance could share the listen ports');
    return undefined;
  }
}
