/**
 * The standalone YAML config (docs/standalone-config.md): parsing, validation with field-named errors, server
 * ID derivation, the rotation state-file overlay, and conversion into the data plane's runtime snapshot.
 */
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { isIP } from 'node:net';
import { basename, dirname, resolve } from 'node:path';
import { load, YAMLException } from 'js-yaml';
import { parseHex, toHex } from '../hex.js';
import { cidLength, ConfigError, makeConfig, MAX_CONFIG_ID, type QuicLbConfig } from '../quiclb/config.js';
import { formatSocketAddress, parseSocketAddress, type SocketAddress } from './address.js';
import { parseDuration } from './duration.js';
import { parseAdminSection, type AdminSettings } from './admin-clients.js';
import { checkKeys, describe, join, optBool, optEnum, optInt, optString, reqInt, requireObject, rethrowUnder, type Fields } from './fields.js';
import { checkLiveConfigKeys, looksLikeKey, parseBase64Key, readKeyFile } from './keys.js';
import { decodeUtf8, MAX_CONFIG_BYTES, quote, readErrorText, readRegularFile } from './safe-read.js';
import {
  CONFIG_STATES,
  DEFAULT_FLOWS,
  DEFAULT_HEALTH,
  DEFAULT_ROUTING,
  defaultShortDcidLength,
  effectiveFlowSettings,
  MAX_WEIGHT,
  ROUTING_MODES,
  SERVER_STATES,
  validateSnapshot,
  type DataplaneSnapshot,
  type FlowSettings,
  type HealthCheckSettings,
  type LiveConfig,
  type RoutingMode,
  type SnapshotServer,
} from './snapshot.js';
import { readRotationState, type RotationState } from './state-file.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface RotationSettings {
  /** This process rotates (writes the state file). */
  readonly enabled: boolean;
  /** This process only follows the state file another instance rotates (never writes it). */
  readonly follow: boolean;
  readonly intervalMs: number;
  readonly drainMs: number;
  readonly promoteAfterMs: number;
}

export interface StandaloneServer extends SnapshotServer {
  /** Whether `serverId` was given in the file or derived from the name. */
  readonly serverIdSource: 'given' | 'derived';
}

/** Datagram I/O path of the data plane (`io:`): batched (recvmmsg/sendmmsg addon), dgram (node:dgram), auto. */
export const IO_CHOICES = ['auto', 'batched', 'dgram'] as const;
export type IoChoice = (typeof IO_CHOICES)[number];

export interface StandaloneConfig {
  /** Absolute path of the YAML file (null when parsed from text without a path). */
  readonly path: string | null;
  readonly name: string;
  readonly listen: readonly SocketAddress[];
  /** Worker processes; 1 = the data plane runs in the main process. */
  readonly workers: number;
  readonly workersSetting: number | 'auto';
  /** 'quic-lb' (default) or '4-tuple' (connection IDs ignored: 4-tuple table, else the fallback hash). */
  readonly routing: RoutingMode;
  /** `io:` (null when absent: the QUICLB_IO environment variable, else auto). Read at start only. */
  readonly io: IoChoice | null;
  /**
   * `upstream_ports.seed_file:` absolute path of the seed of stable upstream ports (dataplane/upstream-ports.ts),
   * null when absent (the kernel chooses upstream ports). Read at start only.
   */
  readonly upstreamPortSeedFile: string | null;
  readonly serverIdLength: number;
  /** The live configs of the YAML itself (before any rotation state overlay). */
  readonly configs: readonly LiveConfig[];
  readonly rotation: RotationSettings;
  /** Absolute path of the rotation state file. */
  readonly stateFile: string | null;
  readonly shortDcidLength: number | null;
  readonly servers: readonly StandaloneServer[];
  readonly flows: FlowSettings;
  readonly monitoring: { readonly port: number | null; readonly address: string };
  readonly health: HealthCheckSettings;
  readonly logging: { readonly level: LogLevel };
  /** Who may call the admin API, and with which role (`admin:`). */
  readonly admin: AdminSettings;
  /** Files whose change should trigger a reload: the YAML, key files, the state file. */
  readonly watchedFiles: readonly string[];
}

export interface ParseOptions {
  /** Directory relative paths (key files, state file) are resolved against. */
  baseDir?: string;
  /** The YAML's own path (for the default state file name and messages). */
  path?: string;
}

/** Longest `name` (it labels every metric series). */
export const MAX_NAME_LENGTH = 63;
/** Where the monitoring server listens unless `monitoring.address` says otherwise: this host only. */
export const DEFAULT_MONITORING_ADDRESS = '127.0.0.1';
/** Aliases (`*ref`) allowed in one YAML document. */
export const MAX_YAML_ALIASES = 100;

const TOP_KEYS = ['name', 'listen', 'workers', 'io', 'upstream_ports', 'routing', 'loadbalancer', 'servers', 'flows', 'monitoring', 'logging', 'admin'];
const LB_SINGLE_KEYS = ['nonce_length', 'encryption_key', 'encryption_key_file', 'config_id', 'length_self_encoded', 'extra_length'];
const LB_KEYS = ['server_id_length', ...LB_SINGLE_KEYS, 'configs', 'config_rotation', 'state_file', 'short_header_dcid_length'];
const CONFIG_KEYS = ['config_id', 'nonce_length', 'encryption_key', 'encryption_key_file', 'state', 'length_self_encoded', 'extra_length'];
const SERVER_KEYS = ['id', 'address', 'weight', 'server_id', 'state'];

/** The first `length` octets of SHA-256(name): the server ID of a server that does not give one. */
export function deriveServerId(name: string, length: number): Buffer {
  return createHash('sha256').update(name, 'utf8').digest().subarray(0, length);
}

function parseKey(path: string, o: Fields, baseDir: string, keyFiles: string[]): Buffer | null {
  if (o.encryption_key !== undefined && o.encryption_key_file !== undefined) {
    throw new ConfigError(join(path, 'encryption_key_file'), 'give either encryption_key or encryption_key_file, not both');
  }
  if (o.encryption_key !== undefined && o.encryption_key !== null) return parseBase64Key(join(path, 'encryption_key'), o.encryption_key);
  const file = optString(join(path, 'encryption_key_file'), o.encryption_key_file);
  if (file === undefined) return null;
  if (looksLikeKey(file)) {
    throw new ConfigError(join(path, 'encryption_key_file'), 'looks like a key, not a file name (not shown): put the key in encryption_key, or in a file whose path goes here');
  }
  const abs = resolve(baseDir, file);
  keyFiles.push(abs);
  return readKeyFile(join(path, 'encryption_key_file'), abs);
}

function parseOneConfig(path: string, o: Fields, serverIdLength: number, configId: number, baseDir: string, keyFiles: string[]): QuicLbConfig {
  const nonceLength = reqInt(join(path, 'nonce_length'), o.nonce_length, 4, 18);
  const key = parseKey(path, o, baseDir, keyFiles);
  try {
    return makeConfig({
      configId,
      serverIdLength,
      nonceLength,
      key,
      lengthSelfEncoded: optBool(join(path, 'length_self_encoded'), o.length_self_encoded, false),
      extraLength: optInt(join(path, 'extra_length'), o.extra_length, 0, 14, 0),
    });
  } catch (e) {
    return rethrowUnder(path, e);
  }
}

function parseWorkers(v: unknown): { workers: number; setting: number | 'auto' } {
  if (v === undefined) return { workers: 1, setting: 1 };
  if (v === 'auto') return { workers: Math.max(1, availableParallelism()), setting: 'auto' };
  if (typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 256) return { workers: v, setting: v };
  throw new ConfigError('workers', `must be an integer 1..256 or "auto", got ${describe(v)}`);
}

/** Parses and validates YAML text. Reads key files (relative to `baseDir`). Throws ConfigError naming the field. */
export function parseStandaloneConfig(text: string, options: ParseOptions = {}): StandaloneConfig {
  const path = options.path ? resolve(options.path) : null;
  const baseDir = options.baseDir ?? (path ? dirname(path) : process.cwd());
  if (text.trim() === '') throw new ConfigError('(top level)', 'the file is empty');
  let doc: unknown;
  try {
    // Aliases are bounded: a few nested anchors ("billion laughs") would otherwise make any traversal of the
    // document (an error message, a fingerprint) exponential.
    doc = load(text, { maxAliases: MAX_YAML_ALIASES });
  } catch (e) {
    if (e instanceof YAMLException) {
      const m = e.mark;
      throw new ConfigError('yaml', `${m ? `line ${m.line + 1}, column ${m.column + 1}: ` : ''}${e.reason}`);
    }
    throw e;
  }
  if (doc === undefined || doc === null) throw new ConfigError('(top level)', 'the file is empty');
  const top = requireObject('', doc);
  checkKeys('', top, TOP_KEYS);
  const keyFiles: string[] = [];

  const name = optString('name', top.name) ?? 'standalone';
  // `lb` labels every metric series and log line: a long name multiplies the size of every scrape.
  // eslint-disable-next-line no-control-regex
  if (name.length > MAX_NAME_LENGTH || /[\x00-\x1f\x7f]/.test(name)) {
    throw new ConfigError('name', `must be 1..${MAX_NAME_LENGTH} characters without control characters, got ${quote(name)}`);
  }

  let listen: SocketAddress[];
  if (top.listen === undefined) listen = [parseSocketAddress('listen', '0.0.0.0:443')];
  else {
    const raw = typeof top.listen === 'string' ? [top.listen] : top.listen;
    if (!Array.isArray(raw) || raw.length === 0) throw new ConfigError('listen', `must be a list of "host:port", got ${describe(top.listen)}`);
    listen = raw.map((a, i) => {
      const addr = parseSocketAddress(`listen[${i}]`, a, { allowPortZero: true });
      // IPv6 listening sockets are IPv6-only, and an IPv4-mapped address never binds there.
      const mapped = addr.family === 6 ? /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(addr.host) : null;
      if (mapped) throw new ConfigError(`listen[${i}]`, `an IPv4-mapped IPv6 address cannot be bound (IPv6 sockets are IPv6-only): listen on "${mapped[1]}:${addr.port}"`);
      return addr;
    });
    const seen = new Map<string, number>();
    listen.forEach((a, i) => {
      const k = `${a.host}|${a.port}`;
      if (a.port !== 0 && seen.has(k)) throw new ConfigError(`listen[${i}]`, `same address as listen[${seen.get(k)}]`);
      seen.set(k, i);
    });
  }
  const { workers, setting: workersSetting } = parseWorkers(top.workers);
  const routing = optEnum('routing', top.routing, ROUTING_MODES, DEFAULT_ROUTING);
  const io = top.io === undefined ? null : optEnum('io', top.io, IO_CHOICES, 'auto');
  let upstreamPortSeedFile: string | null = null;
  if (top.upstream_ports !== undefined) {
    const up = requireObject('upstream_ports', top.upstream_ports);
    checkKeys('upstream_ports', up, ['seed_file']);
    const f = optString('upstream_ports.seed_file', up.seed_file);
    if (!f) throw new ConfigError('upstream_ports.seed_file', 'is required (a file the data plane keeps its port seed in)');
    upstreamPortSeedFile = resolve(baseDir, f);
  }

  // ---- loadbalancer
  if (top.loadbalancer === undefined) throw new ConfigError('loadbalancer', 'is required (server_id_length, nonce_length, ...)');
  const lb = requireObject('loadbalancer', top.loadbalancer);
  if (lb.routing !== undefined) throw new ConfigError('loadbalancer.routing', 'unknown field (routing is a top-level field: move it out of loadbalancer)');
  checkKeys('loadbalancer', lb, LB_KEYS);
  const serverIdLength = reqInt('loadbalancer.server_id_length', lb.server_id_length, 1, 15);
  let configs: LiveConfig[];
  if (lb.configs !== undefined) {
    for (const k of LB_SINGLE_KEYS) {
      if (lb[k] !== undefined) throw new ConfigError(`loadbalancer.${k}`, 'cannot be combined with loadbalancer.configs: set it per config');
    }
    if (!Array.isArray(lb.configs) || lb.configs.length === 0) throw new ConfigError('loadbalancer.configs', `must be a non-empty list, got ${describe(lb.configs)}`);
    if (lb.configs.length > MAX_CONFIG_ID + 1) throw new ConfigError('loadbalancer.configs', `at most ${MAX_CONFIG_ID + 1} configs (config ids 0..6)`);
    const ids = new Map<number, number>();
    configs = lb.configs.map((c, i) => {
      const p = `loadbalancer.configs[${i}]`;
      const o = requireObject(p, c);
      checkKeys(p, o, CONFIG_KEYS);
      if (o.config_id === 7) throw new ConfigError(`${p}.config_id`, '7 (0b111) is reserved for unroutable connection IDs');
      const configId = reqInt(`${p}.config_id`, o.config_id, 0, MAX_CONFIG_ID);
      if (ids.has(configId)) throw new ConfigError(`${p}.config_id`, `${configId} is also the config_id of loadbalancer.configs[${ids.get(configId)}]`);
      ids.set(configId, i);
      if (o.state === undefined) throw new ConfigError(`${p}.state`, `is required (${CONFIG_STATES.join(', ')})`);
      const state = optEnum(`${p}.state`, o.state, CONFIG_STATES, 'active');
      return { config: parseOneConfig(p, o, serverIdLength, configId, baseDir, keyFiles), state };
    });
    const active = configs.filter((c) => c.state === 'active').length;
    if (active !== 1) throw new ConfigError('loadbalancer.configs', `exactly one config must have state: active, got ${active}`);
  } else {
    if (lb.config_id === 7) throw new ConfigError('loadbalancer.config_id', '7 (0b111) is reserved for unroutable connection IDs');
    const configId = optInt('loadbalancer.config_id', lb.config_id, 0, MAX_CONFIG_ID, 0);
    configs = [{ config: parseOneConfig('loadbalancer', lb, serverIdLength, configId, baseDir, keyFiles), state: 'active' }];
  }
  checkLiveConfigKeys('loadbalancer.configs', configs);

  let rotation: RotationSettings = { enabled: false, follow: false, intervalMs: 86_400_000, drainMs: 300_000, promoteAfterMs: 5_000 };
  if (lb.config_rotation !== undefined) {
    const r = requireObject('loadbalancer.config_rotation', lb.config_rotation);
    checkKeys('loadbalancer.config_rotation', r, ['enabled', 'follow', 'interval', 'drain', 'promote_after']);
    rotation = {
      enabled: optBool('loadbalancer.config_rotation.enabled', r.enabled, false),
      follow: optBool('loadbalancer.config_rotation.follow', r.follow, false),
      intervalMs: r.interval === undefined ? rotation.intervalMs : parseDuration('loadbalancer.config_rotation.interval', r.interval),
      drainMs: r.drain === undefined ? rotation.drainMs : parseDuration('loadbalancer.config_rotation.drain', r.drain),
      promoteAfterMs: r.promote_after === undefined ? rotation.promoteAfterMs : parseDuration('loadbalancer.config_rotation.promote_after', r.promote_after),
    };
    if (rotation.enabled && rotation.follow) {
      throw new ConfigError('loadbalancer.config_rotation.follow', 'follow: true is for instances that do not rotate themselves: set enabled: false');
    }
    if (rotation.enabled) {
      if (rotation.intervalMs < 1000) throw new ConfigError('loadbalancer.config_rotation.interval', 'must be at least 1s');
      if (configs[0].config.key === null) { // all keyed or none (checkLiveConfigKeys)
        throw new ConfigError(
          'loadbalancer.config_rotation.enabled',
          'rotation generates encrypted configs, so the current config must be encrypted too (draft-21 §9.7: plaintext and encrypted configs need different server-ID allocations)',
        );
      }
      if (configs.length >= MAX_CONFIG_ID + 1) throw new ConfigError('loadbalancer.configs', 'rotation needs a free config id (at most 6 configs with rotation)');
    }
  }
  const stateFileSetting = optString('loadbalancer.state_file', lb.state_file);
  const stateFile = stateFileSetting ? resolve(baseDir, stateFileSetting) : path ? `${path}.state.json` : null;
  const shortDcidLength = optInt('loadbalancer.short_header_dcid_length', lb.short_header_dcid_length, 1, 20) ?? null;

  // ---- servers
  if (top.servers === undefined) throw new ConfigError('servers', 'is required (a list of {id, address})');
  if (!Array.isArray(top.servers)) throw new ConfigError('servers', `must be a list, got ${describe(top.servers)}`);
  const names = new Map<string, number>();
  const sids = new Map<string, number>();
  const servers: StandaloneServer[] = [];
  top.servers.forEach((s, i) => {
    const p = `servers[${i}]`;
    const o = requireObject(p, s);
    checkKeys(p, o, SERVER_KEYS);
    if (o.id === undefined) throw new ConfigError(`${p}.id`, 'is required (a unique name)');
    // a number is refused rather than converted: YAML reads `id: 01` as 1, and backends look their id up as text
    if (typeof o.id === 'number') throw new ConfigError(`${p}.id`, `must be a string: quote it, e.g. id: "${String(o.id)}" (YAML reads unquoted digits as a number, here ${String(o.id)}, so id: 01 would become 1)`);
    const id = optString(`${p}.id`, o.id)!;
    if (names.has(id)) throw new ConfigError(`${p}.id`, `${quote(id)} is also the id of servers[${names.get(id)}]`);
    names.set(id, i);
    if (o.address === undefined) throw new ConfigError(`${p}.address`, 'is required ("host:port")');
    const address = parseSocketAddress(`${p}.address`, o.address);
    let weight = 100;
    if (o.weight !== undefined) {
      if (typeof o.weight !== 'number' || !Number.isFinite(o.weight) || o.weight < 0 || o.weight > MAX_WEIGHT) {
        throw new ConfigError(`${p}.weight`, `must be a number 0..${MAX_WEIGHT}, got ${describe(o.weight)}`);
      }
      weight = o.weight;
    }
    let serverId: Buffer;
    let serverIdSource: 'given' | 'derived';
    if (o.server_id !== undefined) {
      if (typeof o.server_id !== 'string') throw new ConfigError(`${p}.server_id`, `must be a hex string of ${serverIdLength} bytes, got ${describe(o.server_id)} (quote it in YAML)`);
      try {
        serverId = parseHex(o.server_id, `${p}.server_id`);
      } catch (e) {
        throw new ConfigError(`${p}.server_id`, (e as Error).message.replace(`${p}.server_id: `, ''));
      }
      if (serverId.length !== serverIdLength) {
        throw new ConfigError(`${p}.server_id`, `must be exactly server_id_length = ${serverIdLength} bytes (${2 * serverIdLength} hex digits), got ${serverId.length}`);
      }
      serverIdSource = 'given';
    } else {
      serverId = deriveServerId(id, serverIdLength);
      serverIdSource = 'derived';
    }
    const hex = toHex(serverId);
    const other = sids.get(hex);
    if (other !== undefined) {
      const o2 = servers[other];
      throw new ConfigError(
        `${p}.server_id`,
        `server ID ${hex} (${serverIdSource === 'derived' ? `derived from id ${quote(id)}` : 'given'}) is also the server ID of servers[${other}] (${quote(o2.name)}, ${o2.serverIdSource}); give one of them an explicit server_id`,
      );
    }
    sids.set(hex, i);
    const srv: StandaloneServer = {
      name: id,
      serverId,
      address,
      weight,
      state: optEnum(`${p}.state`, o.state, SERVER_STATES, 'active'),
      serverIdSource,
    };
    servers.push(srv);
  });

  // ---- flows
  let flows: FlowSettings = DEFAULT_FLOWS;
  if (top.flows !== undefined) {
    const f = requireObject('flows', top.flows);
    checkKeys('flows', f, ['max', 'idle_timeout', 'unconfirmed']);
    const idle = f.idle_timeout === undefined ? DEFAULT_FLOWS.idleTimeoutMs : parseDuration('flows.idle_timeout', f.idle_timeout);
    if (idle < 10 || idle > 86_400_000) throw new ConfigError('flows.idle_timeout', 'must be between 10ms and 24h');
    flows = { maxFlows: optInt('flows.max', f.max, 1, 100_000_000, DEFAULT_FLOWS.maxFlows), idleTimeoutMs: idle };
    if (f.unconfirmed !== undefined) {
      const u = requireObject('flows.unconfirmed', f.unconfirmed);
      checkKeys('flows.unconfirmed', u, ['max', 'timeout', 'per_source', 'rate']);
      const timeout = u.timeout === undefined ? undefined : parseDuration('flows.unconfirmed.timeout', u.timeout);
      if (timeout !== undefined && (timeout < 10 || timeout > idle)) throw new ConfigError('flows.unconfirmed.timeout', `must be between 10ms and flows.idle_timeout (${idle}ms)`);
      flows = {
        ...flows,
        ...(u.max !== undefined ? { maxUnconfirmed: optInt('flows.unconfirmed.max', u.max, 1, 100_000_000) } : {}),
        ...(timeout !== undefined ? { unconfirmedTimeoutMs: timeout } : {}),
        ...(u.per_source !== undefined ? { maxUnconfirmedPerSource: optInt('flows.unconfirmed.per_source', u.per_source, 1, 100_000_000) } : {}),
        ...(u.rate !== undefined ? { newFlowRate: optInt('flows.unconfirmed.rate', u.rate, 0, 100_000_000) } : {}),
      };
    }
  }

  // ---- monitoring
  let monitoring: { port: number | null; address: string } = { port: 9090, address: DEFAULT_MONITORING_ADDRESS };
  let health: HealthCheckSettings = DEFAULT_HEALTH;
  if (top.monitoring !== undefined) {
    const m = requireObject('monitoring', top.monitoring);
    checkKeys('monitoring', m, ['prometheus_port', 'address', 'health_check']);
    const port = m.prometheus_port === null ? null : optInt('monitoring.prometheus_port', m.prometheus_port, 0, 65535, 9090);
    let address = DEFAULT_MONITORING_ADDRESS;
    if (m.address !== undefined) {
      if (typeof m.address !== 'string' || isIP(m.address) === 0) throw new ConfigError('monitoring.address', `must be an IP address, got ${describe(m.address)}`);
      address = m.address;
    }
    monitoring = { port, address };
    if (m.health_check !== undefined) {
      const h = requireObject('monitoring.health_check', m.health_check);
      checkKeys('monitoring.health_check', h, ['enabled', 'interval', 'timeout', 'failures_threshold', 'successes_threshold']);
      const p = 'monitoring.health_check';
      health = {
        enabled: optBool(`${p}.enabled`, h.enabled, true),
        intervalMs: h.interval === undefined ? DEFAULT_HEALTH.intervalMs : parseDuration(`${p}.interval`, h.interval),
        timeoutMs: h.timeout === undefined ? DEFAULT_HEALTH.timeoutMs : parseDuration(`${p}.timeout`, h.timeout),
        failuresThreshold: optInt(`${p}.failures_threshold`, h.failures_threshold, 1, 1000, DEFAULT_HEALTH.failuresThreshold),
        successesThreshold: optInt(`${p}.successes_threshold`, h.successes_threshold, 1, 1000, DEFAULT_HEALTH.successesThreshold),
      };
      if (health.intervalMs < 10) throw new ConfigError(`${p}.interval`, 'must be at least 10ms');
      if (health.intervalMs > 86_400_000) throw new ConfigError(`${p}.interval`, 'must be at most 24h');
      if (health.timeoutMs < 1) throw new ConfigError(`${p}.timeout`, 'must be at least 1ms');
      if (health.timeoutMs > health.intervalMs) throw new ConfigError(`${p}.timeout`, `must not exceed interval (${health.intervalMs}ms)`);
    }
  }

  let logging: { level: LogLevel } = { level: 'info' };
  if (top.logging !== undefined) {
    const l = requireObject('logging', top.logging);
    checkKeys('logging', l, ['level']);
    logging = { level: optEnum('logging.level', l.level, LOG_LEVELS, 'info') };
  }
  const admin = parseAdminSection(top.admin);

  const watchedFiles = [...(path ? [path] : []), ...keyFiles, ...((rotation.enabled || rotation.follow) && stateFile ? [stateFile] : [])];
  return {
    path,
    name,
    listen,
    workers,
    workersSetting,
    routing,
    io,
    upstreamPortSeedFile,
    serverIdLength,
    configs,
    rotation,
    stateFile,
    shortDcidLength,
    servers,
    flows,
    monitoring,
    health,
    logging,
    admin,
    watchedFiles,
  };
}
export interface LoadedStandalone {
  readonly config: StandaloneConfig;
  /** The live configs in force: the rotation state file's when rotation is enabled (or followed) and it fits, else the YAML's. */
  readonly liveConfigs: readonly LiveConfig[];
  readonly rotationState: RotationState | null;
  /** Why an existing state file was not used (it does not fit the YAML), if so. */
  readonly stateFileWarning: string | null;
}

/** Reads the YAML (and, with rotation enabled, the state file). Throws ConfigError naming the field. */
export function loadStandaloneConfig(path: string): LoadedStandalone {
  let text: string;
  try {
    text = decodeUtf8(readRegularFile(path, MAX_CONFIG_BYTES));
  } catch (e) {
    throw new ConfigError(basename(path), `cannot read ${path}: ${readErrorText(e)}`);
  }
  return loadStandaloneText(text, path);
}

/** What loadStandaloneConfig() makes of `text` as the content of the file at `path` (key files relative to it). */
export function loadStandaloneText(text: string, path: string): LoadedStandalone {
  return overlayRotationState(parseStandaloneConfig(text, { path }));
}

/** Applies the rotation state file (when rotation is enabled or followed, and the file exists and fits). */
export function overlayRotationState(config: StandaloneConfig, state?: RotationState | null): LoadedStandalone {
  const yamlOnly = (stateFileWarning: string | null = null): LoadedStandalone => ({ config, liveConfigs: config.configs, rotationState: null, stateFileWarning });
  if (!(config.rotation.enabled || config.rotation.follow) || !config.stateFile) return yamlOnly();
  const s = state === undefined ? readRotationState(config.stateFile) : state;
  if (s === null) return yamlOnly();
  if (s.serverIdLength !== config.serverIdLength) {
    return yamlOnly(`state file ${config.stateFile} has server_id_length ${s.serverIdLength}, the config ${config.serverIdLength}: ignored`);
  }
  if (s.configs.filter((c) => c.state === 'active').length !== 1) return yamlOnly(`state file ${config.stateFile} has no single active config: ignored`);
  return { config, liveConfigs: s.configs.map((c) => ({ config: c.config, state: c.state })), rotationState: s, stateFileWarning: null };
}

/** Converts a loaded config into the data plane's snapshot (validated). */
export function toSnapshot(loaded: LoadedStandalone, version: number): DataplaneSnapshot {
  const { config } = loaded;
  return validateSnapshot({
    version,
    name: config.name,
    listen: config.listen,
    configs: loaded.liveConfigs,
    servers: config.servers.map(({ serverIdSource: _s, ...srv }) => srv),
    flows: config.flows,
    health: config.health,
    shortDcidLength: config.shortDcidLength ?? defaultShortDcidLength(loaded.liveConfigs),
    routing: config.routing,
  });
}

/** A key-free, human-readable summary (for --check and start-up logs). */
export function describeConfig(loaded: LoadedStandalone): Record<string, unknown> {
  const { config } = loaded;
  return {
    name: config.name,
    listen: config.listen.map(formatSocketAddress),
    workers: config.workersSetting,
    ...(config.io !== null ? { io: config.io } : {}),
    routing: config.routing,
    configs: loaded.liveConfigs.map((l) => ({
      config_id: l.config.configId,
      state: l.state,
      server_id_length: l.config.serverIdLength,
      nonce_length: l.config.nonceLength,
      encrypted: l.config.key !== null,
      cid_length: cidLength(l.config),
    })),
    rotation: config.rotation.enabled
      ? { interval_ms: config.rotation.intervalMs, promote_after_ms: config.rotation.promoteAfterMs, drain_ms: config.rotation.drainMs, state_file: config.stateFile }
      : config.rotation.follow
        ? { follow: true, state_file: config.stateFile }
        : false,
    servers: config.servers.map((s) => ({
      id: s.name,
      address: formatSocketAddress(s.address),
      server_id: toHex(s.serverId),
      server_id_source: s.serverIdSource,
      weight: s.weight,
      state: s.state,
    })),
    flows: (() => {
      const f = effectiveFlowSettings(config.flows);
      return {
        max: f.maxFlows,
        idle_timeout_ms: f.idleTimeoutMs,
        unconfirmed: { max: f.maxUnconfirmed, timeout_ms: f.unconfirmedTimeoutMs, per_source: f.maxUnconfirmedPerSource, rate: f.newFlowRate },
      };
    })(),
    monitoring: config.monitoring,
    health_check: {
      enabled: config.health.enabled,
      interval_ms: config.health.intervalMs,
      timeout_ms: config.health.timeoutMs,
      failures_threshold: config.health.failuresThreshold,
      successes_threshold: config.health.successesThreshold,
    },
  };
}
