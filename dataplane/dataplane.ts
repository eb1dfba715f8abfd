/**
 * The data plane: listening sockets on the snapshot's addresses, a Router that decides every datagram's
 * server, and one upstream socket per (client flow, server) so replies come back here and leave from the
 * listening socket to the client (full proxy). apply() swaps the snapshot in place and keeps the flows, so
 * the standalone runner and the future operator-driven process use it unchanged.
 */
import { EventEmitter } from 'node:events';
import { Registry } from 'prom-client';
import { formatSocketAddress } from '../lib/config/address.js';
import { validateSnapshot, type DataplaneSnapshot, type SocketAddress } from '../lib/config/snapshot.js';
import { HealthChecker, type HealthChange } from './health.js';
import { silentLogger, type Logger } from './logging.js';
import { createIo } from './io/select.js';
import { BatchedIo } from './io/batched-io.js';
import type { DatagramIo, DatagramSink, IoCallCounts, IoChoice, IoErrorCounts, IoListener, IoPath, IoUpstream, PortChoiceCounts } from './io/types.js';
import { attachMetrics, routingLatencySampler } from './metrics.js';
import type { Flow } from './flow-table.js';
import { currentSocketBudget, readCpuQuota, readPortRange, readReservedPorts, type SocketBudget } from './resources.js';
import { DEFAULT_PORT_RANGE, UpstreamPortPicker, type PortRange } from './upstream-ports.js';
import { DROP_INTERNAL, DROP_UPSTREAM_NOT_READY, DROP_UPSTREAM_SOCKET_LIMIT, Router, type HealthState, type RouterServer, type RouterStats } from './router.js';

export interface DataplaneOptions {
  /** pino logger (default: silent). */
  logger?: Logger;
  /** prom-client registry for the quiclb_* metrics (default: a new Registry). */
  registry?: Registry;
  /** Run QUIC VN probes in-process (default true); false: the caller reports health with setServerHealth(). */
  healthChecks?: boolean;
  /** Bind listeners with SO_REUSEPORT (worker processes sharing a port). */
  reusePort?: boolean;
  /** Worker index in worker mode: adds per-worker metric series. */
  workerLabel?: string;
  /** SO_RCVBUF/SO_SNDBUF of the listening sockets (default 4 MiB; 0 = system default). */
  socketBufferBytes?: number;
  /**
   * Upper bound of open upstream sockets (default: from the descriptor limit and the local port range at start,
   * dataplane/resources.ts; Infinity = no cap). Flows are capped to fit.
   */
  maxUpstreamSockets?: number;
  /** Processes sharing the local port range (worker mode), for the default cap (default 1). */
  processes?: number;
  /**
   * Datagram I/O path (dataplane/io/): batched (the native recvmmsg/sendmmsg addon), dgram (node:dgram), or auto
   * (batched when the addon loads). Default: the QUICLB_IO environment variable, else auto.
   */
  io?: IoChoice;
  /**
   * Stable upstream ports (dataplane/upstream-ports.ts): the secret the local ports of upstream sockets are derived
   * from, so a restarted data plane with the same seed uses the same ports (default: none, the kernel chooses).
   */
  upstreamPortSeed?: Uint8Array;
  /** Where stable upstream ports are taken from (default: the kernel's ip_local_port_range). */
  upstreamPortRange?: PortRange;
}

export interface DataplaneStats extends RouterStats {
  upstreamSockets: number;
  sendErrors: { upstream: number; reply: number };
  servers: Record<string, { packets: number; bytes: number; replyPackets: number; replyBytes: number; health: HealthState; accepting: boolean }>;
}

class Listener {
  closed = false;
  /** Set once bound. */
  io: IoListener | null = null;
  constructor(
    readonly slot: number,
    readonly key: string,
    readonly address: SocketAddress,
  ) {}

  get bound(): SocketAddress {
    return this.io?.bound ?? this.address;
  }
}

class Upstream {
  next: Upstream | null = null;
  closed = false;
  /** Set right after the socket opened. */
  io: IoUpstream = null!;
  constructor(
    readonly server: RouterServer,
    readonly flow: Flow<RouterServer>,
    readonly listener: Listener,
    readonly address: SocketAddress,
  ) {}
}

function listenerKey(a: SocketAddress): string {
  return formatSocketAddress(a);
}

/** Whether this process has said that busy-poll runs under too small a CPU quota (see start()). */
let busyPollQuotaWarned = false;

export class Dataplane extends EventEmitter<{ health: [string, boolean]; error: [Error] }> implements DatagramSink<Listener, Upstream> {
  readonly registry: Registry;
  private readonly logger: Logger;
  private readonly options: DataplaneOptions;
  private routerInstance: Router | null = null;
  private snapshot: DataplaneSnapshot | null = null;
  private sockets: (Listener | null)[] = [];
  private health: HealthChecker | null = null;
  private tickTimer: NodeJS.Timeout | null = null;
  private detachMetrics: (() => void) | null = null;
  private stopped = false;
  private io: DatagramIo<Listener, Upstream> | null = null;
  /** Send errors logged so far per direction (the first 10, then every 10000th). */
  private readonly errorsLogged = { upstream: 0, reply: 0 };
  private batchedErrorsSeen = 0;
  private batchedErrorLogs = 0;
  upstreamSockets = 0;
  /** Cap of upstreamSockets (see DataplaneOptions.maxUpstreamSockets). */
  upstreamSocketLimit = Infinity;
  /** How the cap was computed (null when given as an option). */
  socketBudget: SocketBudget | null = null;
  readonly workerLabel: string | null;
  private internalErrorsLogged = 0;
  /** Stable upstream ports (null: the kernel chooses every upstream socket's port). */
  private portPicker: UpstreamPortPicker | null = null;

  constructor(options: DataplaneOptions = {}) {
    super();
    this.options = options;
    this.logger = options.logger ?? silentLogger;
    this.registry = options.registry ?? new Registry();
    this.workerLabel = options.workerLabel ?? null;
    if (options.upstreamPortSeed !== undefined) this.setUpstreamPortSeed(options.upstreamPortSeed);
  }

  get router(): Router {
    if (this.routerInstance === null) throw new Error('Dataplane not started');
    return this.routerInstance;
  }

  /** The datagram I/O path in use (after start). */
  get ioPath(): IoPath | null {
    return this.io?.path ?? null;
  }

  /** Datagrams the kernel refused to send (or reported refused), by direction. */
  get sendErrors(): { upstream: number; reply: number } {
    const e = this.ioErrors();
    return { upstream: e.toServer.refused + e.toServer.full + e.toServer.other, reply: e.toClient.refused + e.toClient.full + e.toClient.other + e.receive };
  }

  /** Upstream sockets by how their local port was chosen (null: stable upstream ports off, or before start). */
  upstreamPortChoices(): PortChoiceCounts | null {
    return this.portPicker !== null && this.io !== null ? this.io.portChoices() : null;
  }

  /** Turns stable upstream ports on for sockets opened from now on (worker processes get their seed after start). */
  setUpstreamPortSeed(seed: Uint8Array): void {
    const range = this.options.upstreamPortRange ?? readPortRange() ?? DEFAULT_PORT_RANGE;
    this.portPicker = new UpstreamPortPicker(seed, range, readReservedPorts());
  }

  /** Batched path: batches, system calls, GSO messages (null on the dgram path or before start). */
  ioCalls(): IoCallCounts | null {
    return this.io?.calls() ?? null;
  }

  /** Send and receive errors by direction and reason. */
  ioErrors(): IoErrorCounts {
    return this.io?.errors() ?? { toServer: { refused: 0, full: 0, other: 0 }, toClient: { refused: 0, full: 0, other: 0 }, truncated: 0, receive: 0, stray: 0 };
  }

  get lbName(): string {
    return this.snapshot?.name ?? 'standalone';
  }

  get currentSnapshot(): DataplaneSnapshot | null {
    return this.snapshot;
  }

  liveConfigs(): { configId: number; state: string }[] {
    return (this.snapshot?.configs ?? []).map((l) => ({ configId: l.config.configId, state: l.state }));
  }

  /**
   * Validates the snapshot, binds every listen address and starts forwarding. `unbound`: listen addresses left
   * unbound, as if releaseListeners() had closed them (a worker started while its pool has released them).
   */
  async start(snapshot: DataplaneSnapshot, unbound: readonly SocketAddress[] = []): Promise<void> {
    if (this.routerInstance !== null) throw new Error('Dataplane already started');
    validateSnapshot(snapshot);
    const { io, fallbackReason } = createIo<Listener, Upstream>(this.options.io, this, routingLatencySampler(this.registry));
    this.io = io;
    this.routerInstance = new Router(snapshot, (flow) => this.closeFlow(flow), Date.now());
    try {
      const skip = new Set(unbound.map(listenerKey));
      for (const a of snapshot.listen) if (!skip.has(listenerKey(a))) await this.openListener(a);
    } catch (e) {
      await this.closeListeners();
      await io.close();
      this.io = null;
      this.routerInstance = null;
      throw e;
    }
    this.applySocketBudget(snapshot);
    this.snapshot = snapshot;
    this.startTicker(snapshot);
    this.detachMetrics = attachMetrics(this.registry, this);
    if (this.options.healthChecks !== false) {
      this.health = new HealthChecker(snapshot.health, this.logger, snapshot.name, this.registry);
      this.health.on('change', (c) => this.onHealthChange(c));
      this.health.update(this.healthTargets(snapshot), snapshot.health);
      this.health.start();
    }
    this.logger.info(
      {
        ...this.lbField(snapshot.name),
        version: snapshot.version,
        listen: this.addresses().map(formatSocketAddress),
        servers: snapshot.servers.length,
        configs: this.liveConfigs(),
        io: io.path,
        ...(fallbackReason !== null ? { io_fallback_reason: fallbackReason } : {}),
        ...(io instanceof BatchedIo ? { io_gro: io.gro, io_busy_poll_us: io.busyPollUs, io_hold_loop: io.holdLoop, ...(io.groError !== null ? { io_gro_error: io.groError } : {}) } : {}),
      },
      'data plane started',
    );
    if (fallbackReason !== null && process.platform === 'linux') {
      this.logger.warn({ ...this.lbField(snapshot.name), reason: fallbackReason }, 'batched datagram I/O not available: running node:dgram (more CPU per datagram)');
    }
    // each spinning process can keep a core busy: a quota below one core each plus one for the rest throttles them
    // (said once per process: the agent runs a data plane per load balancer in one process)
    const busyPollUs = io instanceof BatchedIo ? io.busyPollUs : 0;
    const spinning = this.options.processes ?? 1;
    const cpuQuota = busyPollUs > 0 && !busyPollQuotaWarned ? readCpuQuota() : null;
    if (cpuQuota !== null && cpuQuota < spinning + 1) {
      busyPollQuotaWarned = true;
      this.logger.warn(
        { ...this.lbField(snapshot.name), io_busy_poll_us: busyPollUs, cpu_quota: cpuQuota, processes: spinning },
        'busy-poll under a CPU quota: spinning spends the quota and the process gets throttled, which is slower than sleeping; raise the CPU limit (a core per data-plane process plus one) or turn busy-poll off (QUICLB_IO_BUSY_POLL_US=0)',
      );
    }
  }

  /**
   * Hot reload: validates, binds new listen addresses, swaps configs/servers, closes removed listeners. Keeps flows.
   * `unbound`: listen addresses of `next` left unbound (closed if bound), as releaseListeners() leaves them.
   */
  async apply(next: DataplaneSnapshot, unbound: readonly SocketAddress[] = []): Promise<void> {
    const router = this.router;
    validateSnapshot(next);
    const skip = new Set(unbound.map(listenerKey));
    const wanted = new Set(next.listen.map(listenerKey).filter((k) => !skip.has(k)));
    const opened: Listener[] = [];
    try {
      for (const a of next.listen) {
        if (wanted.has(listenerKey(a)) && !this.sockets.some((l) => l !== null && l.key === listenerKey(a))) opened.push(await this.openListener(a));
      }
    } catch (e) {
      for (const l of opened) await this.closeListener(l);
      throw e;
    }
    const prev = this.snapshot!;
    router.apply(next);
    this.warnIfOverBudget(next);
    if (this.serversLeftOrMoved(prev, next)) this.closeStaleUpstreams();
    for (const l of this.sockets) {
      if (l !== null && !wanted.has(l.key)) await this.closeListener(l);
    }
    this.snapshot = next;
    if (prev.flows.idleTimeoutMs !== next.flows.idleTimeoutMs) this.startTicker(next);
    this.health?.update(this.healthTargets(next), next.health);
    this.logger.info(
      { ...this.lbField(next.name), version: next.version, servers: next.servers.length, configs: this.liveConfigs(), listen: this.addresses().map(formatSocketAddress) },
      'config applied',
    );
  }

  /**
   * Closes the listeners of these addresses ahead of an apply() whose snapshot no longer lists them, so that
   * another data plane can bind them first (the agent moving ports between load balancers). The flows of a closed
   * listener end: their clients' datagrams reach whoever binds the port next. The snapshot in force is unchanged;
   * restoreListeners(), or apply() of a snapshot that lists them, binds them again. Addresses not bound are skipped.
   */
  async releaseListeners(addresses: readonly SocketAddress[]): Promise<void> {
    const keys = new Set(addresses.map(listenerKey));
    for (const l of this.sockets) if (l !== null && keys.has(l.key)) await this.closeListener(l);
    if (keys.size > 0) this.logger.info({ ...this.lbField(this.lbName), released: [...keys] }, 'listeners released');
  }

  /** Binds every listen address of the snapshot in force that is not bound (released), but `except`; all or none. */
  async restoreListeners(except: readonly SocketAddress[] = []): Promise<void> {
    const skip = new Set(except.map(listenerKey));
    const opened: Listener[] = [];
    try {
      for (const a of this.snapshot?.listen ?? []) {
        if (!skip.has(listenerKey(a)) && !this.sockets.some((l) => l !== null && l.key === listenerKey(a))) opened.push(await this.openListener(a));
      }
    } catch (e) {
      for (const l of opened) await this.closeListener(l);
      throw e;
    }
    if (opened.length > 0) this.logger.info({ ...this.lbField(this.lbName), restored: opened.map((l) => l.key) }, 'listeners bound again');
  }

  /** External health (worker processes get it from the primary). */
  setServerHealth(name: string, health: HealthState | boolean): void {
    const state: HealthState = typeof health === 'boolean' ? (health ? 'healthy' : 'unhealthy') : health;
    if (this.router.setHealth(name, state)) {
      this.logger.debug({ server: name, state, pool: this.router.poolMembers().map((s) => s.name) }, 'fallback pool changed');
    }
  }

  serverHealth(): Map<string, HealthState> {
    return new Map(this.router.serverList().map((s) => [s.name, s.health]));
  }

  /** The bound addresses, in the order of the snapshot's listen list (released ones left out). */
  addresses(): SocketAddress[] {
    if (!this.snapshot) return this.sockets.filter((l): l is Listener => l !== null).map((l) => l.bound);
    return this.snapshot.listen.flatMap((a) => this.sockets.find((l) => l !== null && l.key === listenerKey(a))?.bound ?? []);
  }

  stats(): DataplaneStats {
    const r = this.router;
    const servers: DataplaneStats['servers'] = {};
    for (const s of r.serverList()) {
      servers[s.name] = { packets: s.packets, bytes: s.bytes, replyPackets: s.replyPackets, replyBytes: s.replyBytes, health: s.health, accepting: s.acceptsNew };
    }
    return { ...r.stats(), upstreamSockets: this.upstreamSockets, sendErrors: { ...this.sendErrors }, servers };
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.tickTimer) clearInterval(this.tickTimer);
    this.tickTimer = null;
    await this.health?.stop();
    this.health = null;
    await this.closeListeners();
    this.routerInstance?.clear();
    await this.io?.close();
    this.detachMetrics?.();
    this.detachMetrics = null;
    this.logger.info(this.lbField(this.lbName), 'data plane stopped');
  }

  // ---- internals

  /** `{lb}` for a log line, unless the logger already carries `lb` in its bindings (one key per line). */
  private lbField(name: string): { lb?: string } {
    return this.logger.bindings().lb === undefined ? { lb: name } : {};
  }

  /** Caps upstream sockets (and with them the flows) at what the process can hold. */
  private applySocketBudget(s: DataplaneSnapshot): void {
    if (this.options.maxUpstreamSockets !== undefined) this.upstreamSocketLimit = this.options.maxUpstreamSockets;
    else {
      this.socketBudget = currentSocketBudget(this.options.processes ?? 1);
      this.upstreamSocketLimit = this.socketBudget.cap;
    }
    this.router.setFlowCap(this.upstreamSocketLimit);
    this.warnIfOverBudget(s);
  }

  /** Warns when the flow settings ask for more upstream sockets than the cap allows (the cap wins). */
  private warnIfOverBudget(s: DataplaneSnapshot): void {
    if (!Number.isFinite(this.upstreamSocketLimit)) return;
    const l = this.router.flowLimits();
    const wanted = s.flows.maxFlows + (s.flows.maxUnconfirmed ?? Math.ceil(s.flows.maxFlows / 4));
    if (wanted <= this.upstreamSocketLimit) return;
    this.logger.warn(
      {
        ...this.lbField(s.name),
        flows_max: s.flows.maxFlows,
        upstream_socket_limit: this.upstreamSocketLimit,
        limited_by: this.socketBudget?.limitedBy ?? 'maxUpstreamSockets option',
        effective: { confirmed: l.max, unconfirmed: l.maxUnconfirmed },
      },
      'the flow settings ask for more upstream sockets than this process can hold; flows are capped (raise the nofile limit or the port range, or lower flows.max)',
    );
  }

  private serversLeftOrMoved(prev: DataplaneSnapshot, next: DataplaneSnapshot): boolean {
    const now = new Map(next.servers.map((s) => [s.name, s.address]));
    return prev.servers.some((s) => {
      const a = now.get(s.name);
      return a === undefined || a.host !== s.address.host || a.port !== s.address.port;
    });
  }

  /**
   * After a reload that removed or moved servers: closes the upstream sockets of servers that left the config
   * (route() never sends to them again, and their datagrams must not reach clients any more) or whose address
   * changed (a new backend). Without this they live, and relay, as long as their flow does.
   */
  private closeStaleUpstreams(): void {
    for (const f of this.router.flows) {
      let up = f.upstream as Upstream | null;
      while (up !== null) {
        const next = up.next;
        if (up.server.removed || up.address !== up.server.address) this.closeUpstream(up);
        up = next;
      }
    }
  }

  private healthTargets(s: DataplaneSnapshot) {
    return s.servers.map((srv) => ({ name: srv.name, address: srv.address }));
  }

  private onHealthChange(c: HealthChange): void {
    if (this.routerInstance === null) return;
    this.router.setHealth(c.name, c.state);
    this.emit('health', c.name, c.state !== 'unhealthy');
  }

  private startTicker(s: DataplaneSnapshot): void {
    if (this.tickTimer) clearInterval(this.tickTimer);
    const every = Math.min(1000, Math.max(10, Math.floor(s.flows.idleTimeoutMs / 10)));
    this.tickTimer = setInterval(() => {
      this.routerInstance?.tick(Date.now());
      this.logBatchedErrors();
    }, every);
    this.tickTimer.unref();
  }

  private async openListener(a: SocketAddress): Promise<Listener> {
    let slot = this.sockets.indexOf(null);
    if (slot < 0) slot = this.sockets.length;
    if (slot > 0x7fff) throw new Error('too many listening sockets');
    const l = new Listener(slot, listenerKey(a), a);
    l.io = await this.io!.openListener(a, { reusePort: this.options.reusePort === true, bufferBytes: this.options.socketBufferBytes ?? 4 << 20 }, l);
    this.sockets[slot] = l;
    return l;
  }

  /**
   * The batched path counts socket errors in the addon without a call per error: log new ones from the ticker,
   * at most once per tick (the first 10 times, then every 100th).
   */
  private logBatchedErrors(): void {
    if (this.io === null || this.io.path !== 'batched') return;
    const e = this.io.errors();
    const total = e.toServer.refused + e.toServer.full + e.toServer.other + e.toClient.refused + e.toClient.full + e.toClient.other + e.receive + e.truncated;
    if (total <= this.batchedErrorsSeen) return;
    const n = ++this.batchedErrorLogs;
    if (n <= 10 || n % 100 === 0) this.logger.warn({ ...this.lbField(this.lbName), new: total - this.batchedErrorsSeen, errors: e }, 'datagram I/O errors (batched path)');
    this.batchedErrorsSeen = total;
  }

  /** A socket error reported by the I/O layer (already counted there): logged, the first 10 then every 10000th. */
  onError(direction: 'to_server' | 'to_client', e: Error | string, up: Upstream | null, fatal: boolean): void {
    const err = typeof e === 'string' ? e : ((e as NodeJS.ErrnoException).code ?? e.message);
    if (direction === 'to_client') {
      const n = ++this.errorsLogged.reply;
      if (n <= 10 || n % 10000 === 0) this.logger.warn({ err, count: n }, 'send to client failed');
    } else {
      const n = ++this.errorsLogged.upstream;
      if (n <= 10 || n % 10000 === 0) this.logger.warn({ server: up?.server.name, err, count: n }, 'upstream socket error');
    }
    if (fatal && up !== null) this.closeUpstream(up); // connect failed: the next datagram retries with a new socket
  }

  private async closeListener(l: Listener): Promise<void> {
    if (l.closed) return;
    l.closed = true;
    if (this.sockets[l.slot] === l) this.sockets[l.slot] = null;
    if (this.routerInstance) {
      for (const f of [...this.routerInstance.flows]) if (f.listener === l.slot) this.routerInstance.flows.remove(f, 'cleared');
    }
    if (l.io !== null) await this.io!.closeListener(l.io);
  }

  private async closeListeners(): Promise<void> {
    for (const l of this.sockets) if (l !== null) await this.closeListener(l);
    this.sockets = [];
  }

  /** The packet path: client -> server (the datagram is buf[off, off + len)). */
  onClient(l: Listener, buf: Buffer, off: number, len: number, address: string, port: number): void {
    const router = this.routerInstance!;
    let server: RouterServer | null = null;
    try {
      server = router.route(buf, address, port, l.slot, off, len);
      if (server === null) return;
      const flow = router.flow!;
      let up = flow.upstream as Upstream | null;
      while (up !== null && up.server !== server) up = up.next;
      if (up === null || up.address !== server.address) {
        up = this.openUpstream(flow, server, l, up);
        if (up === null) {
          router.undoRoute(server, len, DROP_UPSTREAM_SOCKET_LIMIT);
          return;
        }
      }
      if (!this.io!.sendToServer(up.io, buf, off, len)) router.undoRoute(server, len, DROP_UPSTREAM_NOT_READY);
    } catch (e) {
      if (server !== null) router.undoRoute(server, len, DROP_INTERNAL);
      else router.drop(DROP_INTERNAL, len);
      if (this.internalErrorsLogged++ < 10) this.logger.error({ err: (e as Error).stack }, 'internal error on the packet path');
    }
  }

  /** Opens an upstream socket for the flow, within the socket cap (evicting an unconfirmed flow); null: none left. */
  private openUpstream(flow: Flow<RouterServer>, server: RouterServer, l: Listener, stale: Upstream | null): Upstream | null {
    if (stale !== null) this.closeUpstream(stale);
    if (this.upstreamSockets >= this.upstreamSocketLimit) {
      const flows = this.router.flows;
      while (this.upstreamSockets >= this.upstreamSocketLimit && flows.evictOneUnconfirmed()) {
        // evicting frees the evicted flow's sockets (closeFlow)
      }
      if (this.upstreamSockets >= this.upstreamSocketLimit || !flow.alive) return null;
    }
    const a = server.address;
    const up = new Upstream(server, flow, l, a);
    const ports = this.portPicker === null ? null : this.portPicker.portsFor(l.key, flow.address, flow.port, a);
    const handle = this.io!.openUpstream(l.io!, a, flow.address, flow.port, up, ports);
    if (handle === null) return null;
    up.io = handle;
    up.next = flow.upstream as Upstream | null;
    flow.upstream = up;
    this.upstreamSockets++;
    return up;
  }

  /** The packet path: server -> client (the datagram is buf[off, off + len)). */
  onReply(up: Upstream, buf: Buffer, off: number, len: number): void {
    const flow = up.flow;
    if (up.closed || !flow.alive || up.listener.closed) return;
    const server = up.server;
    server.replyPackets++;
    server.replyBytes += len;
    const router = this.routerInstance!;
    router.learnReply(buf, server, flow, off, len); // returns at once for short headers
    // Only confirmed flows are kept alive by replies: a backend answering a spoofed source must not hold its flow.
    if (flow.confirmed && flow.lastSeen !== router.now) router.flows.touch(flow, router.now);
    this.io!.sendToClient(up.io, buf, off, len);
  }

  private closeUpstream(up: Upstream): void {
    if (up.closed) return;
    up.closed = true;
    const flow = up.flow;
    let p = flow.upstream as Upstream | null;
    if (p === up) flow.upstream = up.next;
    else {
      while (p !== null && p.next !== up) p = p.next;
      if (p !== null) p.next = up.next;
    }
    this.upstreamSockets--;
    this.io!.closeUpstream(up.io);
  }

  private closeFlow(flow: Flow<RouterServer>): void {
    let up = flow.upstream as Upstream | null;
    while (up !== null) {
      const next = up.next;
      this.closeUpstream(up);
      up = next;
    }
    flow.upstream = null;
  }
}
