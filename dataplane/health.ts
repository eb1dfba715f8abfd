/**
 * QUIC-native health probes (RFC 9000 §6, QUIC-PEERS.md §5): a 1200-byte long-header packet with a reserved
 * version (0x?a?a?a?a), type bits 00 and random 8-byte DCID/SCID must draw a Version Negotiation packet
 * (version 0) whose DCID is our SCID and whose SCID is our DCID, with a non-empty version list.
 *
 * Each server is probed every `interval`; no valid reply within `timeout` is a failure. `failuresThreshold`
 * consecutive failures make a server unhealthy, `successesThreshold` consecutive successes healthy again.
 * Until its first result a server is 'unknown', which counts as healthy.
 */
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import { Counter, Gauge, type Registry } from 'prom-client';
import { formatSocketAddress } from '../lib/config/address.js';
import type { HealthCheckSettings, SocketAddress } from '../lib/config/snapshot.js';
import { ipBytes } from './fallback.js';
import type { HealthState } from './router.js';
import type { Logger } from './logging.js';

export const PROBE_SIZE = 1200;
const CID_LEN = 8;

/** Builds a probe; `dcid` and `scid` are 8 bytes. */
export function buildProbe(dcid: Uint8Array, scid: Uint8Array, random: Buffer = randomBytes(5)): Buffer {
  const p = Buffer.alloc(PROBE_SIZE);
  p[0] = 0xc0 | (random[0] & 0x0f); // long header, fixed bit, type bits 00 (quiche answers VN only for Initial-looking types)
  const version = ((random.readUInt32BE(1) & 0xf0f0f0f0) | 0x0a0a0a0a) >>> 0;
  p.writeUInt32BE(version, 1);
  p[5] = dcid.length;
  p.set(dcid, 6);
  p[6 + dcid.length] = scid.length;
  p.set(scid, 7 + dcid.length);
  return p;
}

/** True when `reply` is a Version Negotiation answering the probe with these CIDs. */
export function isProbeReply(reply: Uint8Array, dcid: Uint8Array, scid: Uint8Array): boolean {
  if (reply.length < 7 || (reply[0] & 0x80) === 0) return false; // VN: only the top bit is meaningful
  if (reply[1] !== 0 || reply[2] !== 0 || reply[3] !== 0 || reply[4] !== 0) return false;
  let p = 5;
  const dl = reply[p++];
  if (dl !== scid.length || p + dl > reply.length) return false;
  for (let i = 0; i < dl; i++) if (reply[p + i] !== scid[i]) return false;
  p += dl;
  if (p >= reply.length) return false;
  const sl = reply[p++];
  if (sl !== dcid.length || p + sl > reply.length) return false;
  for (let i = 0; i < sl; i++) if (reply[p + i] !== dcid[i]) return false;
  p += sl;
  const rest = reply.length - p;
  return rest >= 4 && rest % 4 === 0;
}

export interface HealthTarget {
  readonly name: string;
  readonly address: SocketAddress;
}

interface Pending {
  readonly target: TargetState;
  readonly dcid: Buffer;
  readonly scid: Buffer;
  readonly sentAt: number;
  timer: NodeJS.Timeout;
}

export interface TargetState {
  name: string;
  address: SocketAddress;
  state: HealthState;
  failures: number;
  successes: number;
  interval: NodeJS.Timeout | null;
  start: NodeJS.Timeout | null;
  checks: { success: number; failure: number };
  transitions: number;
  lastRttMs: number;
  lastError: string | null;
  /** When the last probe finished (ms since the epoch; 0 = none yet). */
  lastProbeAt: number;
}

export interface HealthChange {
  name: string;
  state: HealthState;
  previous: HealthState;
  reason: string;
}

class HealthMetrics {
  readonly checkers = new Set<HealthChecker>();
  constructor(registry: Registry) {
    const checkers = this.checkers;
    new Counter({
      name: 'quiclb_health_checks_total',
      help: 'QUIC Version Negotiation health probes, by server and result.',
      labelNames: ['lb', 'server', 'result'],
      registers: [registry],
      collect() {
        this.reset();
        for (const c of checkers) {
          for (const t of c.targetStates()) {
            this.inc({ lb: c.lbName, server: t.name, result: 'success' }, t.checks.success);
            this.inc({ lb: c.lbName, server: t.name, result: 'failure' }, t.checks.failure);
          }
        }
      },
    });
    new Counter({
      name: 'quiclb_health_transitions_total',
      help: 'Health state changes of a server (to healthy or unhealthy).',
      labelNames: ['lb', 'server'],
      registers: [registry],
      collect() {
        this.reset();
        for (const c of checkers) for (const t of c.targetStates()) this.inc({ lb: c.lbName, server: t.name }, t.transitions);
      },
    });
    new Gauge({
      name: 'quiclb_health_check_rtt_seconds',
      help: 'Round-trip time of the last successful probe.',
      labelNames: ['lb', 'server'],
      registers: [registry],
      aggregator: 'max',
      collect() {
        this.reset();
        for (const c of checkers) for (const t of c.targetStates()) if (t.lastRttMs >= 0) this.set({ lb: c.lbName, server: t.name }, t.lastRttMs / 1000);
      },
    });
  }
}
const metricsByRegistry = new WeakMap<Registry, HealthMetrics>();

export class HealthChecker extends EventEmitter<{ change: [HealthChange] }> {
  private readonly targets = new Map<string, TargetState>();
  private readonly pending = new Map<string, Pending>();
  private sockets: { 4: Socket | null; 6: Socket | null } = { 4: null, 6: null };
  private settings: HealthCheckSettings;
  private running = false;
  private detach: (() => void) | null = null;

  constructor(
    settings: HealthCheckSettings,
    private readonly logger: Logger,
    readonly lbName = 'standalone',
    registry?: Registry,
  ) {
    super();
    this.settings = settings;
    if (registry) {
      let m = metricsByRegistry.get(registry);
      if (!m) {
        m = new HealthMetrics(registry);
        metricsByRegistry.set(registry, m);
      }
      m.checkers.add(this);
      this.detach = () => m.checkers.delete(this);
    }
  }

  targetStates(): readonly TargetState[] {
    return [...this.targets.values()];
  }

  states(): Map<string, HealthState> {
    return new Map([...this.targets].map(([k, t]) => [k, t.state]));
  }

  /** Sets the servers to probe and the settings; keeps the state of servers that stay (same address). */
  update(targets: readonly HealthTarget[], settings: HealthCheckSettings): void {
    const restart =
      settings.intervalMs !== this.settings.intervalMs || settings.timeoutMs !== this.settings.timeoutMs || settings.enabled !== this.settings.enabled;
    this.settings = settings;
    const names = new Set(targets.map((t) => t.name));
    for (const [name, t] of this.targets) {
      if (!names.has(name)) {
        this.stopTarget(t);
        this.targets.delete(name);
      }
    }
    for (const tg of targets) {
      const t = this.targets.get(tg.name);
      if (t === undefined) {
        const n: TargetState = {
          name: tg.name,
          address: tg.address,
          state: 'unknown',
          failures: 0,
          successes: 0,
          interval: null,
          start: null,
          checks: { success: 0, failure: 0 },
          transitions: 0,
          lastRttMs: -1,
          lastError: null,
          lastProbeAt: 0,
        };
        this.targets.set(tg.name, n);
        if (this.running) this.startTarget(n);
      } else if (t.address.host !== tg.address.host || t.address.port !== tg.address.port) {
        // A new address is a new backend: start over from 'unknown'.
        this.stopTarget(t);
        t.address = tg.address;
        t.failures = 0;
        t.successes = 0;
        if (t.state !== 'unknown') this.transition(t, 'unknown', 'address changed');
        if (this.running) this.startTarget(t);
      } else if (restart && this.running) {
        this.stopTarget(t);
        this.startTarget(t);
      }
    }
    if (!settings.enabled) for (const t of this.targets.values()) {
      this.stopTarget(t);
      t.failures = 0; // probing starts over when re-enabled
      t.successes = 0;
      if (t.state !== 'unknown') this.transition(t, 'unknown', 'health checks disabled');
    }
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    for (const t of this.targets.values()) this.startTarget(t);
  }

  async stop(): Promise<void> {
    this.running = false;
    for (const t of this.targets.values()) this.stopTarget(t);
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.pending.clear();
    const closing: Promise<void>[] = [];
    for (const fam of [4, 6] as const) {
      const s = this.sockets[fam];
      if (s) closing.push(new Promise((r) => s.close(() => r())));
      this.sockets[fam] = null;
    }
    await Promise.all(closing);
    this.detach?.();
    this.detach = null;
  }

  private startTarget(t: TargetState): void {
    if (!this.settings.enabled) return;
    const every = this.settings.intervalMs;
    // Spread the probes over the interval; the first one goes out soon so a dead server is found quickly.
    const first = Math.floor(Math.random() * Math.min(every, 1000));
    t.start = setTimeout(() => {
      t.start = null;
      this.probe(t);
      t.interval = setInterval(() => this.probe(t), every);
      t.interval.unref();
    }, first);
    t.start.unref();
  }

  private stopTarget(t: TargetState): void {
    if (t.start) clearTimeout(t.start);
    if (t.interval) clearInterval(t.interval);
    t.start = null;
    t.interval = null;
    for (const [k, p] of this.pending) {
      if (p.target === t) {
        clearTimeout(p.timer);
        this.pending.delete(k);
      }
    }
  }

  private socket(family: 4 | 6): Socket {
    let s = this.sockets[family];
    if (s) return s;
    s = createSocket(family === 6 ? 'udp6' : 'udp4');
    s.on('message', (msg, rinfo) => this.onReply(msg, rinfo.address, rinfo.port));
    s.on('error', (e) => this.logger.warn({ err: e.message }, 'health probe socket error'));
    s.bind(0);
    s.unref();
    this.sockets[family] = s;
    return s;
  }

  /** Sends one probe now (also used by tests). */
  probe(t: TargetState): void {
    if (!this.running) return;
    const dcid = randomBytes(CID_LEN);
    const scid = randomBytes(CID_LEN);
    const key = scid.toString('hex');
    const p: Pending = {
      target: t,
      dcid,
      scid,
      sentAt: performance.now(),
      timer: setTimeout(() => {
        if (this.pending.get(key) === p) {
          this.pending.delete(key);
          this.result(t, false, 'timeout', -1);
        }
      }, this.settings.timeoutMs),
    };
    p.timer.unref();
    this.pending.set(key, p);
    this.socket(t.address.family).send(buildProbe(dcid, scid), t.address.port, t.address.host, (err) => {
      if (err && this.pending.get(key) === p) {
        clearTimeout(p.timer);
        this.pending.delete(key);
        this.result(t, false, `send: ${(err as NodeJS.ErrnoException).code ?? err.message}`, -1);
      }
    });
  }

  private onReply(msg: Buffer, address: string, port: number): void {
    // The VN's DCID is our SCID: find the probe by it.
    if (msg.length < 6 + CID_LEN || msg[5] !== CID_LEN) return;
    const key = msg.toString('hex', 6, 6 + CID_LEN);
    const p = this.pending.get(key);
    if (p === undefined) return;
    const a = p.target.address;
    if (port !== a.port || !sameHost(address, a.host)) return;
    if (!isProbeReply(msg, p.dcid, p.scid)) return;
    clearTimeout(p.timer);
    this.pending.delete(key);
    this.result(p.target, true, 'version negotiation', performance.now() - p.sentAt);
  }

  private result(t: TargetState, ok: boolean, detail: string, rttMs: number): void {
    if (!this.targets.has(t.name) || this.targets.get(t.name) !== t) return;
    t.lastProbeAt = Date.now();
    if (ok) {
      t.checks.success++;
      t.lastRttMs = rttMs;
      t.failures = 0;
      t.successes++;
      t.lastError = null;
      if (t.state === 'unknown') this.transition(t, 'healthy', 'first probe answered');
      else if (t.state === 'unhealthy' && t.successes >= this.settings.successesThreshold) {
        this.transition(t, 'healthy', `${t.successes} consecutive probes answered`);
      }
    } else {
      t.checks.failure++;
      t.successes = 0;
      t.failures++;
      t.lastError = detail;
      if (t.state !== 'unhealthy' && t.failures >= this.settings.failuresThreshold) {
        this.transition(t, 'unhealthy', `${t.failures} consecutive probes failed (last: ${detail})`);
      }
    }
  }

  private transition(t: TargetState, state: HealthState, reason: string): void {
    const previous = t.state;
    t.state = state;
    if (state !== 'unknown' && !(previous === 'unknown' && state === 'healthy')) t.transitions++;
    const log = { ...(this.logger.bindings().lb === undefined ? { lb: this.lbName } : {}), server: t.name, address: formatSocketAddress(t.address), state, previous, reason };
    if (state === 'unhealthy') this.logger.warn(log, 'server unhealthy');
    else this.logger.info(log, state === 'healthy' ? 'server healthy' : 'server health unknown');
    this.emit('change', { name: t.name, state, previous, reason });
  }
}

const hostA = new Uint8Array(16);
const hostB = new Uint8Array(16);

/**
 * Same IP, whatever the spelling: the configured literal may be non-canonical ("0:0:0:0:0:0:0:1", "FD00::1")
 * while the socket reports the canonical form, and a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
 * (ipBytes maps IPv4 to that form).
 */
function sameHost(a: string, b: string): boolean {
  if (a === b) return true;
  if (!ipBytes(a, hostA) || !ipBytes(b, hostB)) return false;
  for (let i = 0; i < 16; i++) if (hostA[i] !== hostB[i]) return false;
  return true;
}
