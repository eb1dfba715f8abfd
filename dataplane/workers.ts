/**
 * `workers: N|auto`: N worker processes (node:cluster), each running a Dataplane whose listening sockets bind
 * the same address:port with SO_REUSEPORT, so the kernel keeps every client 4-tuple on one worker. The primary
 * loads the config, probes health, serves /metrics (aggregating the workers' metrics with prom-client's
 * AggregatorRegistry), and sends snapshots and health states to the workers over IPC.
 *
 * A port 0 (ephemeral) listen address is resolved once by the primary: it binds a SO_REUSEPORT socket to learn
 * a free port, the workers join that port, then the primary's placeholder closes.
 *
 * A snapshot is put in force on all workers or on none (apply()): if one worker fails, exits or does not answer,
 * the workers that applied it return to the previous snapshot, and a worker whose state is then unknown or not
 * the previous snapshot (its rollback failed, it did not answer) is killed, so its restart (the crash recovery
 * below) starts it with the previous snapshot. A client 4-tuple hashes to one worker: workers on different
 * configs would treat flows differently.
 */
import cluster, { type Worker } from 'node:cluster';
import { createSocket, type Socket } from 'node:dgram';
import { fileURLToPath } from 'node:url';
import { AggregatorRegistry, Counter, Registry } from 'prom-client';
import { formatSocketAddress } from '../lib/config/address.js';
import { snapshotFromJson, snapshotToJson, type DataplaneSnapshot, type SnapshotJson, type SocketAddress } from '../lib/config/snapshot.js';
import { Dataplane } from './dataplane.js';
import { createLogger, type Logger } from './logging.js';
import { carryCounters, type MetricsJson } from './metrics-carry.js';
import { collectProcessMetrics } from './metrics.js';
import type { HealthState } from './router.js';
import type { IoChoice } from './io/types.js';
import { withDataplaneV8Flags } from './v8-flags.js';

type ToWorker =
  // `released`: listen addresses of the snapshot to leave unbound (the pool released them)
  | { t: 'start'; snapshot: SnapshotJson; released: SocketAddress[]; health: [string, HealthState][]; logLevel: string; upstreamPortSeed: string | null }
  | { t: 'apply'; id: number; snapshot: SnapshotJson; released: SocketAddress[]; logLevel: string }
  | { t: 'release'; id: number; listen: SocketAddress[] }
  | { t: 'restore'; id: number; released: SocketAddress[] }
  | { t: 'health'; name: string; state: HealthState }
  | { t: 'metrics'; id: number }
  | { t: 'ping'; id: number }
  | { t: 'stop' };

type FromWorker =
  | { t: 'ready'; addresses: SocketAddress[] }
  | { t: 'start-error'; message: string }
  | { t: 'applied'; id: number; error: string | null }
  | { t: 'metrics'; id: number; metrics: MetricsJson }
  | { t: 'pong'; id: number };

function isMessage(m: unknown): m is { t: string } {
  return typeof m === 'object' && m !== null && typeof (m as { t?: unknown }).t === 'string';
}

/** Entry of a worker process (dataplane/worker-entry.ts). */
export async function runWorker(): Promise<void> {
  const registry = new Registry();
  collectProcessMetrics(registry);
  const index = process.env.QUICLB_WORKER_INDEX ?? String(cluster.worker?.id ?? 0);
  const logger: Logger = createLogger({ level: process.env.QUICLB_LOG_LEVEL ?? 'info', base: { worker: Number(index) } });
  const processes = Number(process.env.QUICLB_WORKER_COUNT ?? 1) || 1;
  const dp = new Dataplane({ logger, registry, healthChecks: false, reusePort: true, workerLabel: index, processes });
  let chain: Promise<void> = Promise.resolve();
  const send = (m: FromWorker) => process.send?.(m);
  const handle = async (m: ToWorker): Promise<void> => {
    switch (m.t) {
      case 'start':
        try {
          logger.level = m.logLevel;
          if (m.upstreamPortSeed !== null) dp.setUpstreamPortSeed(Buffer.from(m.upstreamPortSeed, 'hex'));
          await dp.start(snapshotFromJson(m.snapshot), m.released);
          for (const [name, state] of m.health) dp.setServerHealth(name, state);
          send({ t: 'ready', addresses: dp.addresses() });
        } catch (e) {
          send({ t: 'start-error', message: (e as Error).message });
        }
        return;
      case 'apply':
        try {
          logger.level = m.logLevel;
          await dp.apply(snapshotFromJson(m.snapshot), m.released);
          send({ t: 'applied', id: m.id, error: null });
        } catch (e) {
          send({ t: 'applied', id: m.id, error: (e as Error).message });
        }
        return;
      case 'release':
      case 'restore':
        try {
          if (m.t === 'release') await dp.releaseListeners(m.listen);
          else await dp.restoreListeners(m.released);
          send({ t: 'applied', id: m.id, error: null });
        } catch (e) {
          send({ t: 'applied', id: m.id, error: (e as Error).message });
        }
        return;
      case 'health':
        dp.setServerHealth(m.name, m.state);
        return;
      case 'metrics':
        send({ t: 'metrics', id: m.id, metrics: await registry.getMetricsAsJSON() });
        return;
      case 'stop':
        await dp.stop();
        process.disconnect?.();
        return;
    }
  };
  process.on('message', (m: unknown) => {
    if (!isMessage(m)) return;
    // Liveness: answered at once, not behind a reload in progress.
    if (m.t === 'ping') {
      send({ t: 'pong', id: (m as unknown as { id: number }).id });
      return;
    }
    chain = chain.then(() => handle(m as ToWorker)).catch((e: Error) => logger.error({ err: e.message }, 'worker message failed'));
  });
  // The primary stops us with a message; a signal (e.g. Ctrl-C to the process group) is left to it.
  process.on('SIGINT', () => {});
  process.on('SIGHUP', () => {}); // reloads are the primary's job
  process.on('SIGTERM', () => {
    void dp.stop().then(() => process.exit(0));
  });
  process.on('disconnect', () => {
    void dp.stop().then(() => process.exit(0));
  });
}

function workerEntry(): string {
  const self = fileURLToPath(import.meta.url);
  return self.replace(/workers\.(ts|js)$/, 'worker-entry.$1');
}

export interface WorkerPoolOptions {
  count: number;
  logger: Logger;
  logLevel: () => string;
  /** Current health of every server, sent to (re)started workers. */
  health: () => Map<string, HealthState>;
  /** How often the primary pings each ready worker over IPC (default 1000 ms). */
  heartbeatIntervalMs?: number;
  /** A worker that has not answered a ping for this long is hung: not ready, killed and replaced (default 3000 ms). */
  heartbeatTimeoutMs?: number;
  /** A worker that lived this long before it exited restarts after the first, shortest delay again (default 60 s). */
  restartBackoffResetMs?: number;
  /** Datagram I/O path of the workers (default: the QUICLB_IO they inherit, else auto). */
  io?: IoChoice;
  /** Stable upstream ports: the seed every worker derives its upstream ports from (sent over IPC, never in env). */
  upstreamPortSeed?: Uint8Array;
  /**
   * How long apply() waits for every worker's answer, and again for the rollback's; also release(), restore() and a
   * restarted worker's catch-up (default 10 s).
   */
  applyTimeoutMs?: number;
  /**
   * How long a worker may take from its 'online' to its 'ready' (loading the code, the addon, binding) before it is
   * judged stuck (default 60 s: a boot under a tight CPU limit, or many workers starting at once, takes seconds).
   */
  startTimeoutMs?: number;
}

/** Why a worker was killed to be replaced (label `reason` of quiclb_worker_replacements_total). */
export type ReplacementReason = 'hung' | 'start_timeout' | 'apply_unanswered' | 'release_unanswered' | 'rollback_failed' | 'resync_failed';
const REPLACEMENT_REASONS: readonly ReplacementReason[] = ['hung', 'start_timeout', 'apply_unanswered', 'release_unanswered', 'rollback_failed', 'resync_failed'];

/** The answers to one request to some workers: by worker, those that exited first, and those still silent at the timeout. */
interface Answers {
  readonly answers: Map<Worker, unknown>;
  readonly exited: Set<Worker>;
  readonly silent: Set<Worker>;
}

interface Slot {
  index: number;
  worker: Worker | null;
  ready: boolean;
  restarts: number;
  /** The running worker's last metrics report. */
  lastMetrics: MetricsJson | null;
  /** Counters of this slot's exited workers, as of their last reports (see metrics-carry.ts). */
  carried: MetricsJson | null;
  /** The snapshot this slot's worker was last given ('start' or 'apply'), and the pool's releasedGeneration then. */
  given: DataplaneSnapshot | null;
  givenReleased: number;
  /** When the running worker became ready, and last answered a ping (ms). */
  readyAt: number;
  lastPong: number;
}

export class WorkerPool {
  private readonly slots: Slot[] = [];
  private snapshot: DataplaneSnapshot | null = null;
  /**
   * Listen addresses of the snapshot in force that release() closed, by formatSocketAddress: left unbound in all
   * that the pool sends (start, catch-up, rollback) until restore() or a successful apply(). Another load balancer
   * may bind them (SO_REUSEPORT would let both share the port without an error).
   */
  private readonly released = new Map<string, SocketAddress>();
  /** Bumped whenever `released` changes: a worker given an older generation catches up when it is ready. */
  private releasedGeneration = 0;
  private stopping = false;
  private nextId = 1;
  private readonly waiters = new Map<number, { pending: Set<Worker>; answers: Map<Worker, unknown>; exited: Set<Worker>; done: () => void }>();
  private addressesBound: SocketAddress[] = [];
  private placeholders: Socket[] = [];
  /** Resolved ports of port-0 listen entries, by `${host}#${n}`. */
  private readonly resolved = new Map<string, number>();
  private heartbeat: NodeJS.Timeout | null = null;
  /** Workers killed to be replaced, by reason (hung: stopped answering pings). */
  readonly replacements: Record<ReplacementReason, number> = { hung: 0, start_timeout: 0, apply_unanswered: 0, release_unanswered: 0, rollback_failed: 0, resync_failed: 0 };

  /** The primary's own metrics of this pool (quiclb_worker_replacements_total), reported with the workers'. */
  private readonly ownRegistry = new Registry();
  private readonly replacementsMetric = new Counter({
    name: 'quiclb_worker_replacements_total',
    help: 'Worker processes killed to be restarted with the snapshot in force, by reason.',
    labelNames: ['lb', 'reason'],
    registers: [this.ownRegistry],
  });

  /** Workers killed because they stopped answering pings. */
  get hungWorkers(): number {
    return this.replacements.hung;
  }

  constructor(private readonly options: WorkerPoolOptions) {}

  get readyCount(): number {
    return this.slots.filter((s) => s.ready).length;
  }

  get count(): number {
    return this.options.count;
  }

  /** The bound listen addresses (released ones left out). */
  addresses(): SocketAddress[] {
    return this.addressesBound.filter((a) => !this.released.has(formatSocketAddress(a)));
  }

  private setReleased(addresses: Iterable<SocketAddress>): void {
    this.released.clear();
    for (const a of addresses) this.released.set(formatSocketAddress(a), a);
    this.releasedGeneration++;
  }

  /** Forks the workers and waits until each one has bound every listen address. */
  async start(snapshot: DataplaneSnapshot): Promise<void> {
    const s = await this.resolvePorts(snapshot);
    this.snapshot = s;
    for (const reason of REPLACEMENT_REASONS) this.replacementsMetric.inc({ lb: s.name, reason }, 0);
    cluster.setupPrimary({ exec: workerEntry(), execArgv: withDataplaneV8Flags(), serialization: 'json', silent: false });
    const started: Promise<void>[] = [];
    for (let i = 0; i < this.options.count; i++) {
      const slot: Slot = { index: i, worker: null, ready: false, restarts: 0, lastMetrics: null, carried: null, given: null, givenReleased: 0, readyAt: 0, lastPong: 0 };
      this.slots.push(slot);
      started.push(this.fork(slot, true));
    }
    try {
      await Promise.all(started);
    } catch (e) {
      // All or none: the workers that did start (or are still starting) are stopped.
      await this.stop();
      throw e;
    } finally {
      await this.releasePlaceholders();
    }
    this.addressesBound = s.listen.map((a) => ({ ...a }));
    this.startHeartbeat();
  }

  /** PIDs of the running workers, by slot. */
  workerPids(): (number | null)[] {
    return this.slots.map((s) => s.worker?.process.pid ?? null);
  }

  /**
   * Pings every ready worker; one that has not answered for heartbeatTimeoutMs (stopped, looping, swapped out)
   * no longer counts as ready (/readyz) and is killed, so its exit restarts it and the kernel stops hashing
   * flows to its sockets.
   */
  private startHeartbeat(): void {
    const every = this.options.heartbeatIntervalMs ?? 1000;
    const timeout = this.options.heartbeatTimeoutMs ?? 3000;
    let id = 0;
    let lastTick = Date.now();
    this.heartbeat = setInterval(() => {
      const now = Date.now();
      // A late tick means this process was stalled itself: the pongs wait unread in the IPC pipes, so silence
      // proves nothing this time (judging it would kill every worker at once).
      const stalled = now - lastTick > every + timeout / 2;
      lastTick = now;
      for (const slot of this.slots) {
        const w = slot.worker;
        if (!slot.ready || w === null || !w.isConnected()) continue;
        if (stalled) slot.lastPong = now;
        else if (now - slot.lastPong > timeout) {
          this.options.logger.error({ worker: slot.index, pid: w.process.pid, silent_ms: now - slot.lastPong }, 'worker stopped answering; killing it');
          this.replace(slot, 'hung');
          continue;
        }
        w.send({ t: 'ping', id: ++id } satisfies ToWorker);
      }
    }, every);
    this.heartbeat.unref();
  }

  private async resolvePorts(snapshot: DataplaneSnapshot): Promise<DataplaneSnapshot> {
    const counts = new Map<string, number>();
    const listen: SocketAddress[] = [];
    for (const a of snapshot.listen) {
      if (a.port !== 0) {
        listen.push(a);
        continue;
      }
      const n = counts.get(a.host) ?? 0;
      counts.set(a.host, n + 1);
      const key = `${a.host}#${n}`;
      let port = this.resolved.get(key);
      if (port === undefined) {
        const sock = createSocket({ type: a.family === 6 ? 'udp6' : 'udp4', reusePort: true, ipv6Only: a.family === 6 });
        await new Promise<void>((resolve, reject) => {
          sock.once('error', reject);
          sock.bind({ port: 0, address: a.host, exclusive: true }, () => resolve());
        });
        sock.on('message', () => {}); // datagrams that reach the placeholder before the workers join are lost
        port = sock.address().port;
        this.placeholders.push(sock);
        this.resolved.set(key, port);
      }
      listen.push({ ...a, port });
    }
    return { ...snapshot, listen };
  }

  private async releasePlaceholders(): Promise<void> {
    const p = this.placeholders;
    this.placeholders = [];
    await Promise.all(p.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }

  /**
   * Forks a slot's worker; resolves when it is ready. `initial` (the pool's start()): rejects if it fails to start,
   * exits or is not ready within startTimeoutMs of its 'online'. A restarted worker (not initial) that does so is
   * restarted again, with the restart backoff (the promise rejects too, which only logs).
   */
  private fork(slot: Slot, initial = false): Promise<void> {
    return new Promise((resolve, reject) => {
      const worker = cluster.fork({
        QUICLB_LOG_LEVEL: this.options.logLevel(),
        QUICLB_WORKER_INDEX: String(slot.index),
        QUICLB_WORKER_COUNT: String(this.options.count),
        ...(this.options.io !== undefined ? { QUICLB_IO: this.options.io } : {}),
      });
      slot.worker = worker;
      slot.ready = false;
      let settled = false;
      let startTimer: NodeJS.Timeout | null = null;
      const clearStartTimer = () => {
        if (startTimer !== null) clearTimeout(startTimer);
        startTimer = null;
      };
      // A send racing the worker's exit (its IPC channel closed) is reported here; unhandled, it would end the primary.
      worker.on('error', (e: Error) => this.options.logger.warn({ worker: slot.index, pid: worker.process.pid, err: e.message }, 'worker IPC error'));
      worker.on('online', () => {
        slot.given = this.snapshot;
        slot.givenReleased = this.releasedGeneration;
        const m: ToWorker = {
          t: 'start',
          snapshot: snapshotToJson(slot.given!),
          released: [...this.released.values()],
          health: [...this.options.health()],
          logLevel: this.options.logLevel(),
          upstreamPortSeed: this.options.upstreamPortSeed ? Buffer.from(this.options.upstreamPortSeed).toString('hex') : null,
        };
        worker.send(m);
        // A worker stuck in its start is never pinged (the heartbeat judges ready workers only): it is judged here.
        const timeoutMs = this.options.startTimeoutMs ?? 60_000;
        startTimer = setTimeout(() => {
          startTimer = null;
          if (slot.worker !== worker || slot.ready || this.stopping) return;
          const message = `worker ${slot.index} did not become ready within ${timeoutMs} ms of starting`;
          this.options.logger.error({ worker: slot.index, pid: worker.process.pid, timeout_ms: timeoutMs }, initial ? message : `${message}; replacing it`);
          if (!settled) {
            settled = true;
            reject(new Error(message));
          }
          if (initial) worker.process.kill('SIGKILL');
          else this.replace(slot, 'start_timeout');
        }, timeoutMs);
        startTimer.unref();
      });
      worker.on('message', (m: unknown) => {
        if (!isMessage(m)) return;
        const msg = m as FromWorker;
        if (msg.t === 'pong') {
          if (slot.worker === worker) slot.lastPong = Date.now();
          return;
        }
        if (msg.t === 'ready') {
          clearStartTimer();
          if (slot.worker !== worker || worker.process.killed) return; // judged already (start timeout)
          slot.ready = true;
          slot.readyAt = slot.lastPong = Date.now();
          // Started with a snapshot that a reload (or a release or restore) replaced while it was starting (it was
          // not asked): catch up.
          if (slot.given !== this.snapshot || slot.givenReleased !== this.releasedGeneration) this.resync(slot);
          // Likewise health changes broadcast between its 'start' message and now (broadcastHealth skipped it).
          for (const [name, state] of this.options.health()) worker.send({ t: 'health', name, state } satisfies ToWorker);
          if (!settled) {
            settled = true;
            resolve();
          }
        } else if (msg.t === 'start-error') {
          clearStartTimer();
          this.options.logger.error({ worker: slot.index, err: msg.message }, 'worker failed to start');
          if (!settled) {
            settled = true;
            reject(new Error(msg.message));
          }
          worker.kill();
        } else if (msg.t === 'applied' || msg.t === 'metrics') {
          if (msg.t === 'metrics' && slot.worker === worker) slot.lastMetrics = msg.metrics;
          const w = this.waiters.get(msg.id);
          if (w && w.pending.delete(worker)) {
            w.answers.set(worker, msg.t === 'applied' ? msg.error : msg.metrics);
            if (w.pending.size === 0) w.done();
          }
        }
      });
      worker.on('exit', (code, signal) => {
        clearStartTimer();
        slot.ready = false;
        if (slot.worker === worker && slot.lastMetrics !== null) {
          slot.carried = carryCounters(slot.carried ?? [], slot.lastMetrics);
          slot.lastMetrics = null;
        }
        for (const w of this.waiters.values()) {
          if (!w.pending.delete(worker)) continue;
          w.exited.add(worker);
          if (w.pending.size === 0) w.done();
        }
        if (!settled) {
          settled = true;
          reject(new Error(`worker ${slot.index} exited during start (code ${code}, signal ${signal})`));
          // The pool's start() fails; a restarted worker that never became ready is restarted again (below).
          if (initial) return;
        }
        if (this.stopping) return;
        // A worker that ran a while was not crash-looping: its replacement gets the first, shortest delay.
        if (slot.readyAt > 0 && Date.now() - slot.readyAt >= (this.options.restartBackoffResetMs ?? 60_000)) slot.restarts = 0;
        slot.readyAt = 0;
        slot.restarts++;
        const delay = Math.min(10_000, 250 * 2 ** Math.min(slot.restarts, 6));
        this.options.logger.error({ worker: slot.index, code, signal, restart_in_ms: delay }, 'worker exited; restarting');
        setTimeout(() => {
          if (!this.stopping) this.fork(slot).catch((e: Error) => this.options.logger.error({ worker: slot.index, err: e.message }, 'worker restart failed'));
        }, delay).unref();
      });
    });
  }

  private live(): Worker[] {
    return this.slots.filter((s) => s.ready && s.worker !== null && s.worker.isConnected()).map((s) => s.worker!);
  }

  /** Kills a slot's worker so that its exit restarts it (with the snapshot in force), counted by reason. */
  private replace(slot: Slot, reason: ReplacementReason): void {
    const w = slot.worker;
    slot.ready = false;
    if (w === null || w.isDead() || w.process.killed) return; // already being replaced
    this.replacements[reason]++;
    this.replacementsMetric.inc({ lb: this.snapshot?.name ?? 'standalone', reason });
    w.process.kill('SIGKILL');
  }

  /**
   * Sends a request to `workers` and collects their answers, for at most timeoutMs. A worker no longer connected
   * (it exited since it was listed, e.g. after answering an earlier request) counts as exited without being sent
   * anything: its restart starts it with the snapshot in force.
   */
  private ask(workers: readonly Worker[], make: (id: number) => ToWorker, timeoutMs: number): Promise<Answers> {
    const id = this.nextId++;
    const answers = new Map<Worker, unknown>();
    const exited = new Set(workers.filter((w) => !w.isConnected()));
    const pending = new Set(workers.filter((w) => !exited.has(w)));
    if (pending.size === 0) return Promise.resolve({ answers, exited, silent: new Set() });
    return new Promise((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        this.waiters.delete(id);
        resolve({ answers, exited, silent: new Set(pending) });
      };
      const timer = setTimeout(finish, timeoutMs);
      this.waiters.set(id, { pending, answers, exited, done: finish });
      for (const w of pending) w.send(make(id));
    });
  }

  private slotOf(worker: Worker): Slot | undefined {
    return this.slots.find((s) => s.worker === worker);
  }

  /**
   * The workers of `asked` that did what they were asked (answered null) and the reasons of those that did not
   * (their error first, then an exit or silence). A silent worker may still do it: it is replaced.
   */
  private outcome(asked: readonly Worker[], r: Answers, what: 'apply' | 'release' | 'restore', timeoutMs: number): { done: Worker[]; failures: string[] } {
    const failures: string[] = [];
    const done: Worker[] = [];
    for (const w of asked) {
      const answer = r.answers.get(w);
      if (answer === null) done.push(w);
      else if (typeof answer === 'string') failures.push(`worker ${this.slotOf(w)?.index ?? '?'}: ${answer}`);
    }
    for (const w of asked) {
      const slot = this.slotOf(w);
      if (r.exited.has(w)) failures.push(`worker ${slot?.index ?? '?'} exited during the ${what}`);
      else if (r.silent.has(w)) {
        failures.push(`worker ${slot?.index ?? '?'} did not answer the ${what} within ${timeoutMs} ms`);
        // its restart starts it with the snapshot in force
        if (slot !== undefined && slot.worker === w) {
          this.options.logger.error({ worker: slot.index, pid: w.process.pid, timeout_ms: timeoutMs }, `worker did not answer the ${what}; replacing it`);
          this.replace(slot, what === 'apply' ? 'apply_unanswered' : 'release_unanswered');
        }
      }
    }
    return { done, failures };
  }

  /**
   * Puts a snapshot in force on every worker, or on none: rejects with the reason of the first worker that failed
   * (its error, its exit, or its silence past applyTimeoutMs), after the workers that applied it went back to the
   * previous snapshot. A worker whose state is not the previous snapshot afterwards (it did not answer, or its
   * rollback failed or did not answer in time) is killed and restarted with the previous snapshot.
   */
  async apply(snapshot: DataplaneSnapshot): Promise<void> {
    const prev = this.snapshot;
    if (prev === null) throw new Error('worker pool not started');
    const timeoutMs = this.options.applyTimeoutMs ?? 10_000;
    const s = await this.resolvePorts(snapshot);
    try {
      const asked = this.live();
      const r = await this.ask(asked, (id) => ({ t: 'apply', id, snapshot: snapshotToJson(s), released: [], logLevel: this.options.logLevel() }), timeoutMs);
      const { done, failures } = this.outcome(asked, r, 'apply', timeoutMs);
      if (failures.length > 0) {
        this.options.logger.error({ version: s.version, failures, rolling_back: done.length }, 'a worker could not apply the snapshot; rolling the others back');
        const released = [...this.released.values()];
        await this.undo(done, (id) => ({ t: 'apply', id, snapshot: snapshotToJson(prev), released, logLevel: this.options.logLevel() }), 'roll back to the previous snapshot', timeoutMs);
        throw new Error(failures[0]);
      }
      this.snapshot = s;
      this.addressesBound = s.listen.map((a) => ({ ...a }));
      // Every address of `s` is bound now; a released one it no longer lists is no longer ours.
      if (this.released.size > 0) this.setReleased([]);
      // Workers that became ready while we asked the others were started with the previous snapshot; workers
      // still starting catch up when they report ready.
      const askedSet = new Set(asked);
      for (const slot of this.slots) {
        if (slot.worker !== null && askedSet.has(slot.worker)) {
          slot.given = s;
          slot.givenReleased = this.releasedGeneration;
        } else if (slot.ready && (slot.given !== s || slot.givenReleased !== this.releasedGeneration)) this.resync(slot);
      }
    } finally {
      await this.releasePlaceholders();
    }
  }

  /**
   * Closes the listeners of these addresses in every worker ahead of an apply() that drops them (the flows on them
   * end; see Dataplane.releaseListeners), all or none: if a worker fails, those that released bind them again.
   * Until restore() (after a later failure) or a successful apply(), they stay unbound: a worker restarted or
   * rolled back meanwhile leaves them unbound.
   */
  async release(addresses: readonly SocketAddress[]): Promise<void> {
    const timeoutMs = this.options.applyTimeoutMs ?? 10_000;
    const before = [...this.released.values()];
    this.setReleased([...before, ...addresses]);
    const asked = this.live();
    const r = await this.ask(asked, (id) => ({ t: 'release', id, listen: [...addresses] }), timeoutMs);
    const { done, failures } = this.outcome(asked, r, 'release', timeoutMs);
    if (failures.length > 0) {
      this.setReleased(before);
      // A worker that answered with an error may have closed some of them: it binds them again too (idempotent).
      const partial = asked.filter((w) => typeof r.answers.get(w) === 'string');
      this.options.logger.error({ failures, restoring: done.length + partial.length }, 'a worker could not release listeners; binding them again in the others');
      await this.undo([...done, ...partial], (id) => ({ t: 'restore', id, released: before }), 'bind released listeners again', timeoutMs, 'release_unanswered');
      throw new Error(failures[0]);
    }
  }

  /**
   * Binds again, in every worker, these listen addresses (by default every one) of the snapshot in force that
   * release() closed. Only those: another released address may be served by another load balancer by now (an undo
   * of a release must not re-bind an address released by a later step, e.g. a rollback's).
   */
  async restore(addresses?: readonly SocketAddress[]): Promise<void> {
    const timeoutMs = this.options.applyTimeoutMs ?? 10_000;
    const keys = addresses === undefined ? null : new Set(addresses.map(formatSocketAddress));
    const remaining = keys === null ? [] : [...this.released.values()].filter((a) => !keys.has(formatSocketAddress(a)));
    this.setReleased(remaining);
    const asked = this.live();
    const r = await this.ask(asked, (id) => ({ t: 'restore', id, released: remaining }), timeoutMs);
    const { failures } = this.outcome(asked, r, 'restore', timeoutMs);
    for (const w of asked) {
      const slot = this.slotOf(w);
      const answer = r.answers.get(w);
      if (typeof answer === 'string' && slot !== undefined && slot.worker === w) {
        this.options.logger.error({ worker: slot.index, pid: w.process.pid, err: answer }, 'worker could not bind released listeners again; replacing it');
        this.replace(slot, 'rollback_failed');
      }
    }
    if (failures.length > 0) throw new Error(failures[0]);
  }

  /**
   * Asks `workers` to undo a step (`what`); one that fails (rollback_failed) or does not answer in time (`silent`:
   * rollback_failed for an apply's rollback, release_unanswered for binding released listeners again, as restore()
   * counts it) is replaced.
   */
  private async undo(workers: readonly Worker[], make: (id: number) => ToWorker, what: string, timeoutMs: number, silent: ReplacementReason = 'rollback_failed'): Promise<void> {
    const r = await this.ask(workers, make, timeoutMs);
    for (const w of workers) {
      const answer = r.answers.get(w);
      if (answer === null || r.exited.has(w)) continue; // undone, or restarting with the snapshot in force
      const slot = this.slotOf(w);
      if (slot === undefined || slot.worker !== w) continue;
      const err = typeof answer === 'string' ? answer : `no answer within ${timeoutMs} ms`;
      this.options.logger.error({ worker: slot.index, pid: w.process.pid, version: this.snapshot?.version, err }, `worker could not ${what}; replacing it`);
      this.replace(slot, typeof answer === 'string' ? 'rollback_failed' : silent);
    }
  }

  /**
   * Sends the current snapshot to one worker (not awaited): one that answers with an error, or not within
   * applyTimeoutMs (it may answer pings while its requests are stuck), is replaced.
   */
  private resync(slot: Slot): void {
    const w = slot.worker;
    if (w === null || !w.isConnected() || this.snapshot === null) return;
    slot.given = this.snapshot;
    slot.givenReleased = this.releasedGeneration;
    const timeoutMs = this.options.applyTimeoutMs ?? 10_000;
    const snapshot = snapshotToJson(this.snapshot);
    const released = [...this.released.values()];
    void this.ask([w], (id) => ({ t: 'apply', id, snapshot, released, logLevel: this.options.logLevel() }), timeoutMs).then((r) => {
      const answer = r.answers.get(w);
      if (answer === null || r.exited.has(w) || slot.worker !== w) return;
      const err = typeof answer === 'string' ? answer : `no answer within ${timeoutMs} ms`;
      this.options.logger.error({ worker: slot.index, pid: w.process.pid, err }, 'worker could not catch up with the snapshot in force; replacing it');
      this.replace(slot, 'resync_failed');
    });
  }

  broadcastHealth(name: string, state: HealthState): void {
    for (const w of this.live()) w.send({ t: 'health', name, state } satisfies ToWorker);
  }

  /** Every worker's metrics, as prom-client JSON, and the counters carried over from workers that exited. */
  async workerMetrics(): Promise<MetricsJson[]> {
    // Every answer also lands in its slot's lastMetrics; a live worker that did not answer in time (busy, stopped)
    // counts with its previous report, so the sums never go down (Prometheus would read a counter reset).
    await this.ask(this.live(), (id) => ({ t: 'metrics', id }), 2000);
    const own = await this.ownRegistry.getMetricsAsJSON();
    return [own, ...this.slots.flatMap((s) => [...(s.lastMetrics !== null ? [s.lastMetrics] : []), ...(s.carried !== null ? [s.carried] : [])])];
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
    const exits = this.slots
      .filter((s) => s.worker !== null && !s.worker.isDead())
      .map(
        (s) =>
          new Promise<void>((resolve) => {
            const w = s.worker!;
            const t = setTimeout(() => {
              w.process.kill('SIGKILL');
              resolve();
            }, 3000);
            w.once('exit', () => {
              clearTimeout(t);
              resolve();
            });
            if (w.isConnected()) w.send({ t: 'stop' } satisfies ToWorker);
            else w.process.kill('SIGTERM');
          }),
      );
    await Promise.all(exits);
    await this.releasePlaceholders();
  }
}

/** Aggregates the primary's and the workers' metrics into Prometheus text. */
export async function aggregateMetrics(primary: Registry, workers: MetricsJson[]): Promise<{ contentType: string; body: string }> {
  const all = [await primary.getMetricsAsJSON(), ...workers];
  const reg = AggregatorRegistry.aggregate(all);
  return { contentType: reg.contentType, body: await reg.metrics() };
}
