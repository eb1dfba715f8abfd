/**
 * Wire <-> runtime: the one file that knows both the config channel's messages (proto/gen, generated) and the
 * data plane's transport-neutral DataplaneSnapshot (lib/config/snapshot.ts). The operator builds wire snapshots
 * with snapshotToWire(); the node agent reads them with snapshotFromWire(), which validates every load balancer
 * exactly like a standalone reload (validateSnapshot) and reports errors with the wire message's field paths
 * (e.g. `load_balancers[0].servers[2].server_id`), the form a Nack carries.
 */
import { formatSocketAddress, parseSocketAddress } from '../lib/config/address.js';
import {
  DEFAULT_FLOWS,
  DEFAULT_HEALTH,
  defaultShortDcidLength,
  validateSnapshot,
  type ConfigState,
  type DataplaneSnapshot,
  type HealthVerdict as RuntimeVerdict,
  type LiveConfig,
  type RoutingMode as RuntimeRouting,
  type SnapshotServer,
  type SocketAddress as RuntimeAddress,
} from '../lib/config/snapshot.js';
import { ConfigError, makeConfig } from '../lib/quiclb/config.js';
import type { Duration } from './gen/google/protobuf/duration.js';
import {
  ConfigState as WireConfigState,
  FallbackAlgorithm,
  HealthVerdict,
  RoutingMode,
  ServerState,
  type LoadBalancer,
  type QuicLbConfig as WireConfig,
  type Server,
  type Snapshot,
  type SocketAddress,
} from './gen/quiclb/v1/distribution.js';

/**
 * Hello.capabilities entry of a data plane that applies Snapshot.retained. The server sends `retained` only to
 * those (operator/config-server/stream.ts).
 */
export const RETAINED_CAPABILITY = 'retained-load-balancers';

/** Bounds of what a data plane accepts from the wire (its cost is bounded before anything is built). */
export const WIRE_LIMITS = Object.freeze({ loadBalancers: 256, listen: 64, servers: 100_000, nameLength: 253 });

export interface WireSnapshotContent {
  /** Snapshot.version as a number (exact up to 2^53). */
  readonly version: number;
  readonly loadBalancers: readonly DataplaneSnapshot[];
  /** Snapshot.retained: load balancers to keep as they are in force (unique, none also in loadBalancers). */
  readonly retained: readonly string[];
}

// ---- runtime -> wire (operator side)

export function durationFromMs(ms: number): Duration {
  return { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 };
}

export function durationToMs(d: Duration | undefined): number | undefined {
  if (d === undefined) return undefined;
  return Number(d.seconds) * 1000 + Math.round(d.nanos / 1_000_000);
}

const CONFIG_STATE_TO_WIRE: Record<ConfigState, WireConfigState> = {
  active: WireConfigState.CONFIG_STATE_ACTIVE,
  accepting: WireConfigState.CONFIG_STATE_ACCEPTING,
  draining: WireConfigState.CONFIG_STATE_DRAINING,
};

function addressToWire(a: RuntimeAddress): SocketAddress {
  return { ip: a.host, port: a.port };
}

function serverToWire(s: SnapshotServer): Server {
  return {
    name: s.name,
    serverId: Buffer.from(s.serverId),
    serverIdByConfig: Object.fromEntries(Object.entries(s.serverIdByConfig ?? {}).map(([k, v]) => [Number(k), Buffer.from(v)])),
    address: addressToWire(s.address),
    weight: s.weight,
    state: s.state === 'draining' ? ServerState.SERVER_STATE_DRAINING : ServerState.SERVER_STATE_ACTIVE,
    health:
      s.verdict === 'healthy'
        ? HealthVerdict.HEALTH_VERDICT_HEALTHY
        : s.verdict === 'unhealthy'
          ? HealthVerdict.HEALTH_VERDICT_UNHEALTHY
          : HealthVerdict.HEALTH_VERDICT_UNSPECIFIED,
  };
}

export function loadBalancerToWire(s: DataplaneSnapshot): LoadBalancer {
  return {
    name: s.name,
    listen: s.listen.map(addressToWire),
    routing: s.routing === '4-tuple' ? RoutingMode.ROUTING_MODE_FOUR_TUPLE : RoutingMode.ROUTING_MODE_QUIC_LB,
    configs: s.configs.map(
      (l): WireConfig => ({
        configId: l.config.configId,
        serverIdLength: l.config.serverIdLength,
        nonceLength: l.config.nonceLength,
        key: l.config.key ? Buffer.from(l.config.key) : Buffer.alloc(0),
        lengthSelfEncoded: l.config.lengthSelfEncoded,
        extraLength: l.config.extraLength,
        state: CONFIG_STATE_TO_WIRE[l.state],
      }),
    ),
    servers: s.servers.map(serverToWire),
    flows: { maxFlows: s.flows.maxFlows, idleTimeout: durationFromMs(s.flows.idleTimeoutMs) },
    healthCheck: {
      enabled: s.health.enabled,
      interval: durationFromMs(s.health.intervalMs),
      timeout: durationFromMs(s.health.timeoutMs),
      failuresThreshold: s.health.failuresThreshold,
      successesThreshold: s.health.successesThreshold,
    },
    fallback: { algorithm: FallbackAlgorithm.FALLBACK_ALGORITHM_WEIGHTED_RENDEZVOUS },
    shortHeaderDcidLength: s.shortDcidLength,
  };
}

/**
 * A wire snapshot of `loadBalancers` (their own `version` fields are ignored: the wire version applies to all), and
 * the names the data plane keeps as it has them (`retained`).
 */
export function snapshotToWire(version: number, nonce: string, loadBalancers: readonly DataplaneSnapshot[], created = new Date(), retained: readonly string[] = []): Snapshot {
  return { version: BigInt(version), nonce, loadBalancers: loadBalancers.map(loadBalancerToWire), created, retained: [...retained] };
}

// ---- wire -> runtime (data-plane side)

/** Snapshot paths of validateSnapshot() -> the wire message's field names. */
const FIELD_NAMES: Record<string, string> = {
  serverId: 'server_id',
  configId: 'config_id',
  serverIdLength: 'server_id_length',
  nonceLength: 'nonce_length',
  lengthSelfEncoded: 'length_self_encoded',
  extraLength: 'extra_length',
  maxFlows: 'max_flows',
  idleTimeoutMs: 'idle_timeout',
  health: 'health_check',
  intervalMs: 'interval',
  timeoutMs: 'timeout',
  failuresThreshold: 'failures_threshold',
  successesThreshold: 'successes_threshold',
  shortDcidLength: 'short_header_dcid_length',
  // lib/quiclb/config.ts names fields as the QUIC-LB test vectors do
  server_id_len: 'server_id_length',
  nonce_len: 'nonce_length',
  len_self_encoded: 'length_self_encoded',
  extra_len: 'extra_length',
};

/** `servers[2].serverId` -> `servers[2].server_id`; `health.intervalMs` -> `health_check.interval`. */
export function wireFieldPath(snapshotPath: string): string {
  return snapshotPath
    .split('.')
    .map((part) => {
      const m = /^([A-Za-z_]+)(.*)$/.exec(part);
      if (!m) return part;
      return (FIELD_NAMES[m[1]] ?? m[1].replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)) + m[2];
    })
    .join('.');
}

function fail(field: string, message: string): never {
  throw new ConfigError(field, message);
}

function int(field: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) fail(field, `must be ${min}..${max}, got ${v}`);
  return v;
}

function name(field: string, v: string): string {
  if (v.length === 0) fail(field, 'must not be empty');
  if (v.length > WIRE_LIMITS.nameLength) fail(field, `must be at most ${WIRE_LIMITS.nameLength} characters, got ${v.length}`);
  return v;
}

function addressFromWire(field: string, a: SocketAddress | undefined, allowPortZero = false): RuntimeAddress {
  if (a === undefined) fail(field, 'is required');
  if (a.ip.includes(':') && !a.ip.startsWith('[')) return parseSocketAddress(field, `[${a.ip}]:${a.port}`, { allowPortZero });
  return parseSocketAddress(field, `${a.ip}:${a.port}`, { allowPortZero });
}

function configFromWire(field: string, c: WireConfig): LiveConfig {
  let state: ConfigState;
  switch (c.state) {
    case WireConfigState.CONFIG_STATE_ACTIVE:
      state = 'active';
      break;
    case WireConfigState.CONFIG_STATE_ACCEPTING:
      state = 'accepting';
      break;
    case WireConfigState.CONFIG_STATE_DRAINING:
      state = 'draining';
      break;
    default:
      fail(`${field}.state`, `must be ACTIVE, ACCEPTING or DRAINING, got ${String(c.state)}`);
  }
  if (c.key.length !== 0 && c.key.length !== 16) fail(`${field}.key`, `must be 16 octets (or empty for plaintext), got ${c.key.length}`);
  try {
    const config = makeConfig({
      configId: c.configId,
      serverIdLength: c.serverIdLength,
      nonceLength: c.nonceLength,
      key: c.key.length === 0 ? null : Buffer.from(c.key),
      lengthSelfEncoded: c.lengthSelfEncoded,
      extraLength: c.extraLength,
    });
    return { config, state };
  } catch (e) {
    if (e instanceof ConfigError) fail(`${field}.${wireFieldPath(e.field)}`, e.message.slice(e.field.length + 2));
    throw e;
  }
}

function verdictFromWire(field: string, v: HealthVerdict): RuntimeVerdict | undefined {
  switch (v) {
    case HealthVerdict.HEALTH_VERDICT_UNSPECIFIED:
      return undefined;
    case HealthVerdict.HEALTH_VERDICT_HEALTHY:
      return 'healthy';
    case HealthVerdict.HEALTH_VERDICT_UNHEALTHY:
      return 'unhealthy';
    default:
      fail(field, `unknown health verdict ${String(v)}`);
  }
}

function serverFromWire(field: string, s: Server): SnapshotServer {
  const byConfig = Object.entries(s.serverIdByConfig);
  let state: SnapshotServer['state'];
  if (s.state === ServerState.SERVER_STATE_UNSPECIFIED || s.state === ServerState.SERVER_STATE_ACTIVE) state = 'active';
  else if (s.state === ServerState.SERVER_STATE_DRAINING) state = 'draining';
  else fail(`${field}.state`, `unknown server state ${String(s.state)}`);
  const verdict = verdictFromWire(`${field}.health`, s.health);
  return {
    name: name(`${field}.name`, s.name),
    serverId: new Uint8Array(s.serverId),
    ...(byConfig.length > 0
      ? { serverIdByConfig: Object.fromEntries(byConfig.map(([k, v]) => [int(`${field}.server_id_by_config`, Number(k), 0, 6), new Uint8Array(v)])) }
      : {}),
    address: addressFromWire(`${field}.address`, s.address),
    weight: s.weight,
    state,
    ...(verdict ? { verdict } : {}),
  };
}

function loadBalancerFromWire(field: string, lb: LoadBalancer, version: number): DataplaneSnapshot {
  name(`${field}.name`, lb.name);
  if (lb.listen.length > WIRE_LIMITS.listen) fail(`${field}.listen`, `at most ${WIRE_LIMITS.listen} addresses, got ${lb.listen.length}`);
  if (lb.servers.length > WIRE_LIMITS.servers) fail(`${field}.servers`, `at most ${WIRE_LIMITS.servers} servers, got ${lb.servers.length}`);
  let routing: RuntimeRouting;
  if (lb.routing === RoutingMode.ROUTING_MODE_UNSPECIFIED || lb.routing === RoutingMode.ROUTING_MODE_QUIC_LB) routing = 'quic-lb';
  else if (lb.routing === RoutingMode.ROUTING_MODE_FOUR_TUPLE) routing = '4-tuple';
  else fail(`${field}.routing`, `unknown routing mode ${String(lb.routing)}`);
  const algorithm = lb.fallback?.algorithm ?? FallbackAlgorithm.FALLBACK_ALGORITHM_UNSPECIFIED;
  if (algorithm !== FallbackAlgorithm.FALLBACK_ALGORITHM_UNSPECIFIED && algorithm !== FallbackAlgorithm.FALLBACK_ALGORITHM_WEIGHTED_RENDEZVOUS) {
    fail(`${field}.fallback.algorithm`, `unknown fallback algorithm ${String(algorithm)}`);
  }
  const configs = lb.configs.map((c, i) => configFromWire(`${field}.configs[${i}]`, c));
  const f = lb.flows;
  const h = lb.healthCheck;
  const snapshot: DataplaneSnapshot = {
    version,
    name: lb.name,
    listen: lb.listen.map((a, i) => addressFromWire(`${field}.listen[${i}]`, a, true)),
    configs,
    servers: lb.servers.map((s, i) => serverFromWire(`${field}.servers[${i}]`, s)),
    flows: {
      maxFlows: f?.maxFlows || DEFAULT_FLOWS.maxFlows,
      idleTimeoutMs: durationToMs(f?.idleTimeout) ?? DEFAULT_FLOWS.idleTimeoutMs,
    },
    health: {
      enabled: h?.enabled ?? DEFAULT_HEALTH.enabled,
      intervalMs: durationToMs(h?.interval) ?? DEFAULT_HEALTH.intervalMs,
      timeoutMs: durationToMs(h?.timeout) ?? DEFAULT_HEALTH.timeoutMs,
      failuresThreshold: h?.failuresThreshold || DEFAULT_HEALTH.failuresThreshold,
      successesThreshold: h?.successesThreshold || DEFAULT_HEALTH.successesThreshold,
    },
    shortDcidLength: lb.shortHeaderDcidLength || defaultShortDcidLength(configs),
    routing,
  };
  try {
    return validateSnapshot(snapshot);
  } catch (e) {
    if (e instanceof ConfigError) fail(`${field}.${wireFieldPath(e.field)}`, e.message.slice(e.field.length + 2));
    throw e;
  }
}

/** Snapshot.retained: bounded, each a valid name, unique, none also a load balancer of the snapshot. */
export function retainedFromWire(s: Snapshot): string[] {
  if (s.loadBalancers.length > WIRE_LIMITS.loadBalancers) fail('load_balancers', `at most ${WIRE_LIMITS.loadBalancers}, got ${s.loadBalancers.length}`);
  const total = s.loadBalancers.length + s.retained.length;
  if (total > WIRE_LIMITS.loadBalancers) fail('retained', `at most ${WIRE_LIMITS.loadBalancers} load balancers with load_balancers, got ${s.loadBalancers.length} + ${s.retained.length}`);
  const present = new Map(s.loadBalancers.map((lb, i) => [lb.name, i]));
  const seen = new Map<string, number>();
  return s.retained.map((n, i) => {
    const field = `retained[${i}]`;
    name(field, n);
    const prev = seen.get(n);
    if (prev !== undefined) fail(field, `${JSON.stringify(n)} is also retained[${prev}]`);
    const lb = present.get(n);
    if (lb !== undefined) fail(field, `${JSON.stringify(n)} is also the name of load_balancers[${lb}]`);
    seen.set(n, i);
    return n;
  });
}

/**
 * Converts and validates a wire snapshot as a whole: every load balancer (validateSnapshot), unique names, no
 * listen address served twice, the retained names. Throws ConfigError whose `field` is the wire path.
 */
export function snapshotFromWire(s: Snapshot): WireSnapshotContent {
  if (s.version > BigInt(Number.MAX_SAFE_INTEGER)) fail('version', `must be at most ${Number.MAX_SAFE_INTEGER}`);
  const version = Number(s.version);
  if (s.loadBalancers.length > WIRE_LIMITS.loadBalancers) fail('load_balancers', `at most ${WIRE_LIMITS.loadBalancers}, got ${s.loadBalancers.length}`);
  const retained = retainedFromWire(s);
  const names = new Map<string, number>();
  const listeners = new Map<string, string>();
  const loadBalancers = s.loadBalancers.map((lb, i) => {
    const field = `load_balancers[${i}]`;
    const prev = names.get(lb.name);
    if (prev !== undefined) fail(`${field}.name`, `${JSON.stringify(lb.name)} is also the name of load_balancers[${prev}]`);
    names.set(lb.name, i);
    const snapshot = loadBalancerFromWire(field, lb, version);
    snapshot.listen.forEach((a, j) => {
      if (a.port === 0) return;
      const key = formatSocketAddress(a);
      const owner = listeners.get(key);
      if (owner !== undefined) fail(`${field}.listen[${j}]`, `${key} is also a listen address of ${owner}`);
      listeners.set(key, JSON.stringify(lb.name));
    });
    return snapshot;
  });
  return { version, loadBalancers, retained };
}
