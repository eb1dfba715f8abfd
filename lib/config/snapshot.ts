/**
 * The runtime snapshot the data plane consumes: one load balancer's listen addresses, live QUIC-LB configs,
 * server table, flow and health settings. Transport-neutral: the standalone YAML is converted into it, and
 * so will be the operator's gRPC config. Validated as a whole before it replaces the previous one.
 */
import { parseHex, toHex } from '../hex.js';
import { ConfigError, cidLength, makeConfig, MAX_CONFIG_ID, type QuicLbConfig } from '../quiclb/config.js';
import { configFromJson } from '../quiclb/json.js';
import { formatSocketAddress, parseSocketAddress, type SocketAddress } from './address.js';
import { describe } from './fields.js';

export type { SocketAddress } from './address.js';

/** active: servers mint with it; accepting: LBs decode it, servers not yet; draining: LBs decode it for old connections. */
export type ConfigState = 'active' | 'accepting' | 'draining';
export const CONFIG_STATES: readonly ConfigState[] = ['active', 'accepting', 'draining'];

export interface LiveConfig {
  readonly config: QuicLbConfig;
  readonly state: ConfigState;
}

/** active: in the fallback pool when healthy; draining: keeps CID and table traffic, gets no new connections. */
export type ServerState = 'active' | 'draining';
export const SERVER_STATES: readonly ServerState[] = ['active', 'draining'];

export interface SnapshotServer {
  /** Stable identity: standalone servers[].id; the operator's endpoint name. */
  readonly name: string;
  /** QUIC-LB server ID, used with every live config whose server_id_length equals its length. */
  readonly serverId: Uint8Array;
  /** Per-config server IDs overriding `serverId` (config id -> ID); the standalone YAML never sets it. */
  readonly serverIdByConfig?: Readonly<Record<number, Uint8Array>>;
  readonly address: SocketAddress;
  /** Relative share of new connections through the fallback; 0 = none. */
  readonly weight: number;
  readonly state: ServerState;
  /**
   * Health verdict decided centrally (the operator, from every data plane's probe reports), so every data plane's
   * fallback pool is the same for the same version. Absent: this data plane's own probes decide. The Dataplane
   * itself ignores it; the node agent (dataplane/agent) applies it while the operator is reachable.
   */
  readonly verdict?: HealthVerdict;
}

export type HealthVerdict = 'healthy' | 'unhealthy';

/**
 * How the data plane routes client datagrams:
 * - 'quic-lb': draft-21 §4.2: the server ID in the DCID, then the 4-tuple‖SCID, DCID and 4-tuple tables, then
 *   the fallback hash;
 * - '4-tuple': connection IDs are ignored (never parsed): the 4-tuple table, else the fallback hash (the
 *   draft's baseline, §4.3.1), for backends that do not mint QUIC-LB CIDs or as a comparison baseline. A client
 *   that migrates or is NAT-rebound is a new 4-tuple and goes wherever the hash sends it.
 */
export type RoutingMode = 'quic-lb' | '4-tuple';
export const ROUTING_MODES: readonly RoutingMode[] = ['quic-lb', '4-tuple'];
export const DEFAULT_ROUTING: RoutingMode = 'quic-lb';

export interface FlowSettings {
  /** Bound of the confirmed (established) flows and, separately, of the confirmed DCID entries. */
  readonly maxFlows: number;
  readonly idleTimeoutMs: number;
  /** Bound of unconfirmed (new) flows and, separately, of unconfirmed DCID entries (default: ceil(maxFlows / 4)). */
  readonly maxUnconfirmed?: number;
  /** Idle timeout of unconfirmed entries (default: the smaller of idleTimeoutMs and 5 s). */
  readonly unconfirmedTimeoutMs?: number;
  /** Unconfirmed flows per client address (default 256). */
  readonly maxUnconfirmedPerSource?: number;
  /** New flows per second per process (token bucket, burst of one second's worth; default 1000; 0 = no limit). */
  readonly newFlowRate?: number;
}

/** Default FlowSettings.newFlowRate: new flows per second per process. */
export const DEFAULT_NEW_FLOW_RATE = 1000;

/** FlowSettings with the defaults of the optional bounds filled in. */
export function effectiveFlowSettings(f: FlowSettings): Required<FlowSettings> {
  return {
    maxFlows: f.maxFlows,
    idleTimeoutMs: f.idleTimeoutMs,
    maxUnconfirmed: f.maxUnconfirmed ?? Math.ceil(f.maxFlows / 4),
    unconfirmedTimeoutMs: f.unconfirmedTimeoutMs ?? Math.min(f.idleTimeoutMs, 5000),
    maxUnconfirmedPerSource: f.maxUnconfirmedPerSource ?? 256,
    newFlowRate: f.newFlowRate ?? DEFAULT_NEW_FLOW_RATE,
  };
}

export interface HealthCheckSettings {
  readonly enabled: boolean;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly failuresThreshold: number;
  readonly successesThreshold: number;
}

export interface DataplaneSnapshot {
  /** Increases with every snapshot the source produces (metric quiclb_config_version). */
  readonly version: number;
  /** Load balancer name: label `lb` on metrics, field in logs. */
  readonly name: string;
  readonly listen: readonly SocketAddress[];
  readonly configs: readonly LiveConfig[];
  readonly servers: readonly SnapshotServer[];
  readonly flows: FlowSettings;
  readonly health: HealthCheckSettings;
  /** DCID length assumed for short headers whose first octet names no live config (and is not 0b111). */
  readonly shortDcidLength: number;
  /**
   * Routing mode (default 'quic-lb'). The live configs and server IDs are required in both modes: servers mint
   * with them, and a server's ID seeds its fallback-hash score.
   */
  readonly routing?: RoutingMode;
}

export const DEFAULT_FLOWS: FlowSettings = Object.freeze({ maxFlows: 100_000, idleTimeoutMs: 30_000 });
export const DEFAULT_HEALTH: HealthCheckSettings = Object.freeze({
  enabled: true,
  intervalMs: 10_000,
  timeoutMs: 2_000,
  failuresThreshold: 3,
  successesThreshold: 2,
});
export const MAX_WEIGHT = 1_000_000;

/** The server ID a server uses under `config` (null when it has none of that length). */
export function serverIdFor(server: SnapshotServer, config: QuicLbConfig): Uint8Array | null {
  const id = server.serverIdByConfig?.[config.configId] ?? server.serverId;
  return id.length === config.serverIdLength ? id : null;
}

export function activeConfig(snapshot: Pick<DataplaneSnapshot, 'configs'>): LiveConfig | undefined {
  return snapshot.configs.find((c) => c.state === 'active');
}

/** Default short-header DCID length: the CID length of the active config (else of the first live config, else 8). */
export function defaultShortDcidLength(configs: readonly LiveConfig[]): number {
  const c = activeConfig({ configs }) ?? configs[0];
  return c ? cidLength(c.config) : 8;
}

function intIn(field: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ConfigError(field, `must be an integer ${min}..${max}, got ${describe(v)}`);
  }
  return v;
}

/**
 * Checks a snapshot as a whole: lengths, unique config ids, exactly one active config, unique server names,
 * unique server IDs per config, sane flow/health settings, the routing mode. Returns it unchanged; throws
 * ConfigError naming the field (paths as in the snapshot, e.g. `servers[2].serverId`).
 */
export function validateSnapshot(s: DataplaneSnapshot): DataplaneSnapshot {
  intIn('version', s.version, 0, Number.MAX_SAFE_INTEGER);
  if (typeof s.name !== 'string' || s.name.length === 0) throw new ConfigError('name', 'must be a non-empty string');
  if (!Array.isArray(s.listen) || s.listen.length === 0) throw new ConfigError('listen', 'must list at least one address');
  const seenListen = new Set<string>();
  s.listen.forEach((a, i) => {
    const text = formatSocketAddress(a);
    parseSocketAddress(`listen[${i}]`, text, { allowPortZero: true });
    if (a.port !== 0 && seenListen.has(text)) throw new ConfigError(`listen[${i}]`, `${text} is listed twice`);
    seenListen.add(text);
  });
  if (!Array.isArray(s.configs) || s.configs.length === 0) throw new ConfigError('configs', 'must hold at least one QUIC-LB config');
  if (s.configs.length > MAX_CONFIG_ID + 1) throw new ConfigError('configs', `at most ${MAX_CONFIG_ID + 1} configs (config ids 0..6)`);
  const ids = new Set<number>();
  let active = 0;
  s.configs.forEach((l, i) => {
    const c = l.config;
    try {
      makeConfig({ ...c });
    } catch (e) {
      if (e instanceof ConfigError) throw new ConfigError(`configs[${i}].${e.field}`, e.message.slice(e.field.length + 2));
      throw e;
    }
    if (ids.has(c.configId)) throw new ConfigError(`configs[${i}].configId`, `config id ${c.configId} is used twice`);
    ids.add(c.configId);
    if (!CONFIG_STATES.includes(l.state)) throw new ConfigError(`configs[${i}].state`, `must be one of ${CONFIG_STATES.join(', ')}, got ${describe(l.state)}`);
    if (l.state === 'active') active++;
  });
  if (active !== 1) throw new ConfigError('configs', `exactly one config must be active, got ${active}`);
  const names = new Map<string, number>();
  const sidOwners = new Map<string, number>(); // `${configId}/${hex}` -> server index
  s.servers.forEach((srv, i) => {
    const f = `servers[${i}]`;
    if (typeof srv.name !== 'string' || srv.name.length === 0) throw new ConfigError(`${f}.name`, 'must be a non-empty string');
    const prev = names.get(srv.name);
    if (prev !== undefined) throw new ConfigError(`${f}.name`, `${describe(srv.name)} is also the name of servers[${prev}]`);
    names.set(srv.name, i);
    if (!(srv.serverId instanceof Uint8Array) || srv.serverId.length < 1) throw new ConfigError(`${f}.serverId`, 'must be at least one octet');
    parseSocketAddress(`${f}.address`, formatSocketAddress(srv.address));
    if (typeof srv.weight !== 'number' || !Number.isFinite(srv.weight) || srv.weight < 0 || srv.weight > MAX_WEIGHT) {
      throw new ConfigError(`${f}.weight`, `must be a number 0..${MAX_WEIGHT}, got ${describe(srv.weight)}`);
    }
    if (!SERVER_STATES.includes(srv.state)) throw new ConfigError(`${f}.state`, `must be one of ${SERVER_STATES.join(', ')}, got ${describe(srv.state)}`);
    for (const l of s.configs) {
      const sid = serverIdFor(srv, l.config);
      if (sid === null) continue;
      const key = `${l.config.configId}/${toHex(sid)}`;
      const owner = sidOwners.get(key);
      if (owner !== undefined) {
        throw new ConfigError(
          `${f}.serverId`,
          `${toHex(sid)} is also the server ID of servers[${owner}] (${s.servers[owner].name}) in config ${l.config.configId}`,
        );
      }
      sidOwners.set(key, i);
    }
  });
  intIn('flows.maxFlows', s.flows.maxFlows, 1, 100_000_000);
  intIn('flows.idleTimeoutMs', s.flows.idleTimeoutMs, 10, 86_400_000);
  if (s.flows.maxUnconfirmed !== undefined) intIn('flows.maxUnconfirmed', s.flows.maxUnconfirmed, 1, 100_000_000);
  if (s.flows.unconfirmedTimeoutMs !== undefined) intIn('flows.unconfirmedTimeoutMs', s.flows.unconfirmedTimeoutMs, 10, s.flows.idleTimeoutMs);
  if (s.flows.maxUnconfirmedPerSource !== undefined) intIn('flows.maxUnconfirmedPerSource', s.flows.maxUnconfirmedPerSource, 1, 100_000_000);
  if (s.flows.newFlowRate !== undefined) intIn('flows.newFlowRate', s.flows.newFlowRate, 0, 100_000_000);
  const h = s.health;
  if (typeof h.enabled !== 'boolean') throw new ConfigError('health.enabled', 'must be true or false');
  intIn('health.intervalMs', h.intervalMs, 10, 86_400_000);
  intIn('health.timeoutMs', h.timeoutMs, 1, 86_400_000);
  intIn('health.failuresThreshold', h.failuresThreshold, 1, 1000);
  intIn('health.successesThreshold', h.successesThreshold, 1, 1000);
  intIn('shortDcidLength', s.shortDcidLength, 1, 20);
  if (s.routing !== undefined && !ROUTING_MODES.includes(s.routing)) {
    throw new ConfigError('routing', `must be one of ${ROUTING_MODES.join(', ')}, got ${describe(s.routing)}`);
  }
  return s;
}

// ---- JSON form (IPC between the primary and worker processes, tests). Keys travel as hex: only over local pipes.

export interface SnapshotJson {
  version: number;
  name: string;
  listen: string[];
  configs: { config_id: number; server_id_len: number; nonce_len: number; key: string | null; len_self_encoded: boolean; extra_len: number; state: ConfigState }[];
  servers: { name: string; server_id: string; server_id_by_config?: Record<string, string>; address: string; weight: number; state: ServerState }[];
  flows: FlowSettings;
  health: HealthCheckSettings;
  shortDcidLength: number;
  routing: RoutingMode;
}

export function snapshotToJson(s: DataplaneSnapshot): SnapshotJson {
  return {
    version: s.version,
    name: s.name,
    listen: s.listen.map(formatSocketAddress),
    configs: s.configs.map((l) => ({
      config_id: l.config.configId,
      server_id_len: l.config.serverIdLength,
      nonce_len: l.config.nonceLength,
      key: l.config.key ? toHex(l.config.key) : null,
      len_self_encoded: l.config.lengthSelfEncoded,
      extra_len: l.config.extraLength,
      state: l.state,
    })),
    servers: s.servers.map((srv) => ({
      name: srv.name,
      server_id: toHex(srv.serverId),
      ...(srv.serverIdByConfig
        ? { server_id_by_config: Object.fromEntries(Object.entries(srv.serverIdByConfig).map(([k, v]) => [k, toHex(v)])) }
        : {}),
      address: formatSocketAddress(srv.address),
      weight: srv.weight,
      state: srv.state,
    })),
    flows: { ...s.flows },
    health: { ...s.health },
    shortDcidLength: s.shortDcidLength,
    routing: s.routing ?? DEFAULT_ROUTING,
  };
}

export function snapshotFromJson(j: SnapshotJson): DataplaneSnapshot {
  return validateSnapshot({
    version: j.version,
    name: j.name,
    listen: j.listen.map((a, i) => parseSocketAddress(`listen[${i}]`, a, { allowPortZero: true })),
    // The config entries are lib/quiclb/json.ts's config JSON (plus `state`).
    configs: j.configs.map((c, i) => ({ state: c.state, config: configFromJson(c, `configs[${i}]`) })),
    servers: j.servers.map((srv, i) => ({
      name: srv.name,
      serverId: parseHex(srv.server_id, `servers[${i}].server_id`),
      ...(srv.server_id_by_config
        ? {
            serverIdByConfig: Object.fromEntries(
              Object.entries(srv.server_id_by_config).map(([k, v]) => [Number(k), parseHex(v, `servers[${i}].server_id_by_config.${k}`)]),
            ),
          }
        : {}),
      address: parseSocketAddress(`servers[${i}].address`, srv.address),
      weight: srv.weight,
      state: srv.state,
    })),
    flows: { ...j.flows },
    health: { ...j.health },
    shortDcidLength: j.shortDcidLength,
    routing: j.routing,
  });
}
