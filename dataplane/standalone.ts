/**
 * Standalone mode: runs the data plane from the YAML file (docs/standalone-config.md). Loads and validates the
 * config (refusing to start on an invalid file), starts the data plane in-process (workers: 1) or as worker
 * processes, the health probes, the monitoring HTTP server, reloads on file change or SIGHUP (keeping the last
 * good config on errors), and runs config rotation when enabled.
 */
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import { Counter, Gauge, Registry } from 'prom-client';
import { formatSocketAddress } from '../lib/config/address.js';
import {
  describeConfig,
  loadStandaloneConfig,
  loadStandaloneText,
  toSnapshot,
  type LoadedStandalone,
  type LogLevel,
} from '../lib/config/standalone.js';
import { snapshotToJson, type DataplaneSnapshot, type SocketAddress } from '../lib/config/snapshot.js';
import { KeyFileError } from '../lib/config/keys.js';
import { ConfigError } from '../lib/quiclb/config.js';
import { Dataplane } from './dataplane.js';
import { HealthChecker } from './health.js';
import { createLogger, type Logger } from './logging.js';
import { MonitoringServer, type Readiness } from '../lib/monitoring.js';
import { raiseNofileLimit } from './resources.js';
import { ListenLocks } from './listen-lock.js';
import { ConfigWatcher } from './reload.js';
import { Rotator } from './rotation.js';
import { startAdminServer, type AdminServer } from './admin/server.js';
import type { HealthState } from './router.js';
import { aggregateMetrics, WorkerPool } from './workers.js';
import type { IoChoice } from './io/types.js';
import { loadOrCreateSeed } from './upstream-ports.js';
import { collectProcessMetrics } from './metrics.js';

export interface StandaloneOptions {
  configPath: string;
  /** Logger to use (default: pino on stdout at the config's or `logLevel`'s level). */
  logger?: Logger;
  /** Overrides logging.level of the file. */
  logLevel?: LogLevel;
  /** Reload on SIGHUP (default true). */
  handleSignals?: boolean;
  /** Reload when the config, key or state files change (default true). */
  watch?: boolean;
  /** Directory of the listen-address lock files (default: dataplane/listen-lock.ts). */
  listenLockDir?: string;
  /** Serve the admin API (LoadBalancerConfig) over mTLS (`--admin ADDR --tls-dir DIR`). */
  admin?: { address: SocketAddress; tlsDir: string };
  /** Datagram I/O path (`--io`): overrides the file's `io:` (default: QUICLB_IO, else auto). */
  io?: IoChoice;
}

/** A config checked exactly as a reload checks it, ready to apply. Holds keys: never log it. */
export interface ConfigCandidate {
  readonly loaded: LoadedStandalone;
  readonly snapshot: DataplaneSnapshot;
}

/** The config could be validated but not applied (e.g. a listen address in use); the last good one stays. */
export class ApplyError extends Error {}

/** What the admin API uses of a running standalone load balancer. */
export interface StandaloneControl {
  /** Absolute path of the config file. */
  readonly configPath: string;
  /** Version of the config in force (1 at start, +1 per applied change). */
  version(): number;
  /** The config in force (the YAML as last loaded, with the rotation state overlay). */
  loaded(): LoadedStandalone;
  snapshot(): DataplaneSnapshot;
  /** When the config in force was applied. */
  loadedAt(): Date;
  addresses(): SocketAddress[];
  health(): Map<string, HealthState>;
  /** Runs fn after every pending reload and before any later one: admin changes and reloads never interleave. */
  exclusive<T>(fn: () => Promise<T>): Promise<T>;
  /** Validates YAML text exactly as a reload of the config file would: throws ConfigError naming the field. Call inside exclusive(). */
  validate(text: string): ConfigCandidate;
  /** Applies a candidate through the reload path (throws ApplyError, keeping the last good config). Call inside exclusive(). */
  apply(candidate: ConfigCandidate, why: string): Promise<void>;
  /** Re-reads the files and applies them (false: the last good config stayed). Call inside exclusive(). */
  reloadNow(why: string): Promise<boolean>;
  /** The rotator (null when rotation is disabled). */
  rotator(): Rotator | null;
}

export interface StandaloneHandle {
  /** Bound listen addresses (ephemeral ports resolved). */
  addresses(): SocketAddress[];
  /** The monitoring HTTP server's address, or null when disabled. */
  monitoringAddress(): AddressInfo | null;
  /** Re-reads the config now; resolves true when the config in force is the file's (applied or unchanged). */
  reload(why?: string): Promise<boolean>;
  /** Prometheus text of all metrics (aggregated over workers). */
  metrics(): Promise<string>;
  /** The snapshot in force. */
  snapshot(): DataplaneSnapshot;
  /** The in-process data plane (null with worker processes). */
  readonly dataplane: Dataplane | null;
  readonly control: StandaloneControl;
  /** The admin API's address, or null when not served. */
  adminAddress(): SocketAddress | null;
  readonly logger: Logger;
  stop(): Promise<void>;
}

interface Engine {
  start(s: DataplaneSnapshot): Promise<void>;
  apply(s: DataplaneSnapshot): Promise<void>;
  addresses(): SocketAddress[];
  health(): Map<string, HealthState>;
  metrics(): Promise<{ contentType: string; body: string }>;
  readyWorkers(): { ready: number; total: number };
  stop(): Promise<void>;
}

class InProcessEngine implements Engine {
  readonly dp: Dataplane;
  constructor(
    logger: Logger,
    private readonly registry: Registry,
    io: IoChoice | undefined,
    upstreamPortSeed: Uint8Array | undefined,
  ) {
    this.dp = new Dataplane({ logger, registry, io, ...(upstreamPortSeed ? { upstreamPortSeed } : {}) });
  }
  start(s: DataplaneSnapshot) {
    return this.dp.start(s);
  }
  apply(s: DataplaneSnapshot) {
    return this.dp.apply(s);
  }
  addresses() {
    return this.dp.addresses();
  }
  health() {
    return this.dp.serverHealth();
  }
  async metrics() {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
  readyWorkers() {
    return { ready: 1, total: 1 };
  }
  stop() {
    return this.dp.stop();
  }
}

class WorkerEngine implements Engine {
  private readonly pool: WorkerPool;
  private readonly checker: HealthChecker;
  constructor(
    count: number,
    logger: Logger,
    private readonly registry: Registry,
    logLevel: () => string,
    initial: DataplaneSnapshot,
    io: IoChoice | undefined,
    upstreamPortSeed: Uint8Array | undefined,
  ) {
    this.pool = new WorkerPool({ count, logger, logLevel, health: () => this.checker.states(), io, ...(upstreamPortSeed ? { upstreamPortSeed } : {}) });
    this.checker = new HealthChecker(initial.health, logger, initial.name, registry);
    this.checker.on('change', (c) => this.pool.broadcastHealth(c.name, c.state));
  }
  async start(s: DataplaneSnapshot) {
    this.checker.update(s.servers, s.health);
    await this.pool.start(s);
    this.checker.start();
  }
  async apply(s: DataplaneSnapshot) {
    await this.pool.apply(s);
    this.checker.update(s.servers, s.health);
  }
  addresses() {
    return this.pool.addresses();
  }
  health() {
    return this.checker.states();
  }
  async metrics() {
    return aggregateMetrics(this.registry, await this.pool.workerMetrics());
  }
  readyWorkers() {
    return { ready: this.pool.readyCount, total: this.pool.count };
  }
  async stop() {
    await this.checker.stop();
    await this.pool.stop();
  }
}

/** Identity of a snapshot's content (to skip no-op reloads). It holds the keys (hex): compare it, never log it. */
function fingerprint(s: DataplaneSnapshot): string {
  return JSON.stringify(snapshotToJson({ ...s, version: 0 }));
}

export async function runStandalone(options: StandaloneOptions): Promise<StandaloneHandle> {
  // Throws ConfigError (field named) on an invalid file: the process refuses to start.
  let loaded = loadStandaloneConfig(options.configPath);
  const cfg0 = loaded.config;
  const level = options.logLevel ?? cfg0.logging.level;
  const logger = options.logger ?? createLogger({ level, base: { lb: cfg0.name } });
  let version = 1;
  let snapshot = toSnapshot(loaded, version);
  const registry = new Registry();
  collectProcessMetrics(registry);
  const reloads = new Counter({ name: 'quiclb_config_reloads_total', help: 'Config reloads, by result (failure: the last good config stayed in force).', labelNames: ['result'], registers: [registry] });
  reloads.inc({ result: 'success' }, 0);
  reloads.inc({ result: 'failure' }, 0);
  const lastOk = new Gauge({ name: 'quiclb_config_last_reload_successful', help: '1 when the last reload attempt succeeded, 0 after an invalid config.', registers: [registry], aggregator: 'max' });
  lastOk.set(1);
  const lastTime = new Gauge({ name: 'quiclb_config_last_reload_timestamp_seconds', help: 'Time the config in force was loaded.', registers: [registry], aggregator: 'max' });
  lastTime.set(Date.now() / 1000);
  const rotationsMetric = new Counter({ name: 'quiclb_config_rotations_total', help: 'Config rotations started by this process.', registers: [registry] });
  const workersGauge = new Gauge({ name: 'quiclb_workers', help: 'Data-plane processes: configured and ready.', labelNames: ['state'], registers: [registry], aggregator: 'max' });

  logger.info({ config: options.configPath, summary: describeConfig(loaded) }, 'config loaded');
  // Every flow holds a descriptor: take the hard limit (worker processes inherit it).
  const nofile = raiseNofileLimit();
  if (nofile.problem !== null) logger.warn({ nofile: nofile.after ?? nofile.before, problem: nofile.problem }, 'cannot raise the open-file limit to its hard limit');
  else if (nofile.before !== null && nofile.after !== null && nofile.after.soft !== nofile.before.soft) {
    logger.info({ from: nofile.before.soft, to: nofile.after.soft }, 'open-file limit raised to the hard limit');
  }
  if (loaded.stateFileWarning) logger.warn(loaded.stateFileWarning);
  if (snapshot.configs.some((l) => l.config.key === null)) {
    logger.warn('plaintext QUIC-LB config: server IDs in connection IDs are visible to anyone on the path (no privacy); set encryption_key');
  }

  const workers = cfg0.workers;
  const io = options.io ?? cfg0.io ?? undefined;
  // An explicit seed file that cannot be kept is a config error: the user asked for ports that survive restarts.
  let seed: Buffer | undefined;
  try {
    seed = cfg0.upstreamPortSeedFile !== null ? loadOrCreateSeed(cfg0.upstreamPortSeedFile) : undefined;
  } catch (e) {
    throw new ConfigError('upstream_ports.seed_file', (e as Error).message);
  }
  const engine: Engine =
    workers > 1 ? new WorkerEngine(workers, logger, registry, () => String(logger.level), snapshot, io, seed) : new InProcessEngine(logger, registry, io, seed);
  workersGauge.set({ state: 'configured' }, workers);
  // Exclusive ownership of the listen addresses across instances (worker processes bind with SO_REUSEPORT, which
  // would let a second instance join silently); released whenever the engine stops.
  const locks = new ListenLocks(options.listenLockDir);
  locks.acquire(snapshot.listen);
  const stopEngine = engine.stop.bind(engine);
  engine.stop = async () => {
    await stopEngine();
    locks.releaseAll();
  };
  try {
    await engine.start(snapshot);
  } catch (e) {
    locks.releaseAll();
    throw e;
  }

  let monitoring: MonitoringServer | null = null;
  let loadedAt = new Date();
  let watcher: ConfigWatcher | null = null;
  let rotator: Rotator | null = null;
  const readiness = (): Readiness => {
    const health = engine.health();
    const accepting = snapshot.servers.filter((s) => s.state === 'active' && s.weight > 0 && health.get(s.name) !== 'unhealthy');
    const { ready, total } = engine.readyWorkers();
    const detail = [
      `config version ${version}`,
      `listening on ${engine.addresses().map(formatSocketAddress).join(', ')}`,
      `data-plane processes ready: ${ready}/${total}`,
      `servers accepting new connections: ${accepting.length}/${snapshot.servers.length}`,
    ];
    return { ready: ready === total && accepting.length > 0, detail };
  };
  const metrics = async () => {
    workersGauge.set({ state: 'ready' }, engine.readyWorkers().ready);
    rotationsMetric.reset();
    rotationsMetric.inc(rotator?.rotations ?? 0);
    return engine.metrics();
  };
  try {
    if (cfg0.monitoring.port !== null) {
      monitoring = new MonitoringServer({ metrics, readiness, logger });
      const a = await monitoring.listen(cfg0.monitoring.port, cfg0.monitoring.address);
      logger.info({ address: formatSocketAddress({ host: a.address, port: a.port }) }, 'monitoring: /metrics /healthz /readyz');
    }
  } catch (e) {
    await engine.stop();
    throw new Error(`cannot start the monitoring server on ${cfg0.monitoring.address}:${cfg0.monitoring.port}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, {
      cause: e,
    });
  }

  /** Starts, updates or stops the rotator to match a (re)loaded config: after every successful reload, changed or not. */
  const syncRotator = (l: LoadedStandalone): void => {
    if (!l.config.rotation.enabled) {
      rotator?.stop();
      rotator = null;
    } else if (rotator) rotator.update(l);
    else {
      rotator = new Rotator(l, { logger, onChange: (w) => void reload(`rotation: ${w}`) });
      rotator.start();
    }
  };
  /** Everything a reload checks, on the file or on given text (UpdateConfig). Throws ConfigError naming the field. */
  const validate = (text?: string): ConfigCandidate => {
    const next = text === undefined ? loadStandaloneConfig(options.configPath) : loadStandaloneText(text, options.configPath);
    const nextSnapshot = toSnapshot(next, version + 1);
    // the name labels every metric and log line of every process: changing it in flight would split series
    return { loaded: next, snapshot: next.config.name === cfg0.name ? nextSnapshot : { ...nextSnapshot, name: cfg0.name } };
  };
  const reloadFailed = (why: string, e: unknown): void => {
    reloads.inc({ result: 'failure' });
    lastOk.set(0);
    logger.error({ config: options.configPath, why, error: (e as Error).message }, 'config reload failed; keeping the last good config');
  };
  const apply = async ({ loaded: next, snapshot: nextSnapshot }: ConfigCandidate, why: string): Promise<void> => {
    const c = next.config;
    if (c.workers !== cfg0.workers) logger.warn({ workers: c.workersSetting }, 'changing workers needs a restart; keeping the running workers');
    if (c.io !== cfg0.io) logger.warn({ io: c.io }, 'changing io needs a restart; keeping the running I/O path');
    if (c.upstreamPortSeedFile !== cfg0.upstreamPortSeedFile) logger.warn('changing upstream_ports needs a restart; keeping the running upstream ports');
    if (c.name !== cfg0.name) logger.warn({ name: c.name }, `changing name needs a restart; keeping ${JSON.stringify(cfg0.name)}`);
    if (c.monitoring.port !== cfg0.monitoring.port || c.monitoring.address !== cfg0.monitoring.address) {
      logger.warn('changing monitoring address or port needs a restart');
    }
    if (!options.logLevel && c.logging.level !== logger.level) logger.level = c.logging.level;
    if (next.stateFileWarning) logger.warn(next.stateFileWarning);
    watcher?.watchFiles(c.watchedFiles);
    if (fingerprint(nextSnapshot) === fingerprint(snapshot)) {
      loaded = next;
      syncRotator(next);
      lastOk.set(1);
      logger.debug({ why }, 'config unchanged');
      return;
    }
    try {
      locks.acquire(nextSnapshot.listen);
      await engine.apply(nextSnapshot);
      locks.retain(nextSnapshot.listen);
    } catch (e) {
      locks.retain(snapshot.listen);
      reloads.inc({ result: 'failure' });
      lastOk.set(0);
      logger.error({ why, error: (e as Error).message }, 'config could not be applied; keeping the last good config');
      throw new ApplyError((e as Error).message, { cause: e });
    }
    version++;
    snapshot = nextSnapshot;
    loaded = next;
    loadedAt = new Date();
    reloads.inc({ result: 'success' });
    lastOk.set(1);
    lastTime.set(loadedAt.getTime() / 1000);
    logger.info({ why, version, summary: describeConfig(next) }, 'config reloaded');
    syncRotator(next);
  };
  const doReload = async (why: string): Promise<boolean> => {
    let candidate: ConfigCandidate;
    try {
      candidate = validate();
    } catch (e) {
      reloadFailed(why, e);
      // A key file the new config names but that is missing or invalid: reload when it appears or changes.
      if (e instanceof KeyFileError) watcher?.watchFiles([...new Set([...loaded.config.watchedFiles, e.file])]);
      return false;
    }
    try {
      await apply(candidate, why);
      return true;
    } catch (e) {
      if (e instanceof ApplyError) return false;
      throw e;
    }
  };
  let queue: Promise<unknown> = Promise.resolve();
  const exclusive = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = queue.then(fn);
    queue = run.catch(() => {});
    return run;
  };
  const reload = (why = 'requested'): Promise<boolean> =>
    // An unexpected failure (e.g. the rotator cannot write its state file) fails this reload only: a rejected
    // link would reject every later reload and surface as an unhandled rejection from the file watcher.
    exclusive(() => doReload(why)).catch((e: unknown) => {
      reloads.inc({ result: 'failure' });
      lastOk.set(0);
      logger.error({ config: options.configPath, why, error: (e as Error).message }, 'config reload failed');
      return false;
    });
  const control: StandaloneControl = {
    configPath: resolve(options.configPath),
    version: () => version,
    loaded: () => loaded,
    snapshot: () => snapshot,
    loadedAt: () => loadedAt,
    addresses: () => engine.addresses(),
    health: () => engine.health(),
    exclusive,
    validate: (text) => validate(text),
    apply,
    reloadNow: doReload,
    rotator: () => rotator,
  };

  try {
    if (options.watch !== false) {
      watcher = new ConfigWatcher((why) => void reload(why), logger);
      watcher.watchFiles(cfg0.watchedFiles);
    }
    if (options.handleSignals !== false) {
      watcher ??= new ConfigWatcher((why) => void reload(why), logger);
      watcher.handleSighup();
    }
    if (cfg0.rotation.enabled) {
      try {
        syncRotator(loaded);
      } catch (e) {
        throw new Error(`cannot start config rotation: cannot write the state file ${cfg0.stateFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
      }
      // The state file may now hold what the YAML gave: reload to pick it up (no-op when identical).
      await reload('rotation state');
    }
  } catch (e) {
    // Refuse to start rather than run half set up (no rotation, no graceful shutdown): release everything.
    (rotator as Rotator | null)?.stop();
    watcher?.close();
    await monitoring?.close();
    await engine.stop();
    throw e;
  }
  let admin: AdminServer | null = null;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    rotator?.stop();
    watcher?.close();
    await admin?.close();
    await queue;
    await monitoring?.close();
    await engine.stop();
    logger.info('quiclb standalone stopped');
    logger.flush?.();
  };
  if (options.admin) {
    try {
      admin = await startAdminServer({ control, logger, ...options.admin });
    } catch (e) {
      await stop();
      throw e;
    }
  }
  logger.info(
    { listen: engine.addresses().map(formatSocketAddress), workers, servers: snapshot.servers.map((s) => `${s.name}=${formatSocketAddress(s.address)}`) },
    'quiclb standalone running',
  );

  return {
    addresses: () => engine.addresses(),
    monitoringAddress: () => monitoring?.address() ?? null,
    reload,
    metrics: async () => (await metrics()).body,
    snapshot: () => snapshot,
    dataplane: engine instanceof InProcessEngine ? engine.dp : null,
    control,
    adminAddress: () => admin?.address() ?? null,
    logger,
    stop,
  };
}
