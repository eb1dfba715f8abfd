/**
 * The QuicLoadBalancer spec (crds/quiclb.io_quicloadbalancers.yaml) as the operator uses it: durations in ms,
 * defaults applied, enums mapped to the snapshot's words. The API server has already validated the object against
 * the CRD; this re-checks what the operator relies on, so an object stored under an older schema gives a precise
 * error (field path under `spec.`) instead of a wrong config.
 */
import { ConfigError } from '../../lib/quiclb/config.js';
import { parseDuration } from '../../lib/config/duration.js';
import type { RoutingMode } from '../../lib/config/snapshot.js';

export const GROUP = 'quiclb.io';
export const VERSION = 'v1alpha1';
export const KIND = 'QuicLoadBalancer';
export const PLURAL = 'quicloadbalancers';
/** Annotation: set to a new value to rotate now (like spec.rotation.trigger). */
export const ROTATE_ANNOTATION = 'quiclb.io/rotate';
/** Annotation on backend pods: the pod's server ID in hex (defined once, beside the reader of its file). */
export { SERVER_ID_ANNOTATION } from '../../lib/backend/server-id-file.js';
/**
 * Annotation on backend pods, written by the operator in the same patch as a change of quiclb.io/server-id from one
 * value to another or to none (a hand-over between load balancers sharing the pod, a release, a teardown): when
 * (RFC 3339). Until SERVER_ID_PROPAGATION_MS after it the pod may still mint with its previous ID.
 */
export const SERVER_ID_CHANGED_AT_ANNOTATION = 'quiclb.io/server-id-changed-at';
/**
 * Annotation on backend pods, written with quiclb.io/server-id-changed-at when a load balancer that goes on existing
 * takes a released ID off a pod: `<load balancer UID>/<the ID, hex>`. A pod given that same ID again by that same
 * load balancer (same UID: the same keys) is not drained, whatever it still mints. Removed whenever changed-at is
 * written otherwise (a hand-over, a teardown). readPreviousServerId parses it.
 */
export const SERVER_ID_PREVIOUS_ANNOTATION = 'quiclb.io/server-id-previous';

/** The value of quiclb.io/server-id-previous for `serverId` (hex) taken off by the load balancer of UID `qlbUid`. */
export function previousServerIdValue(qlbUid: string, serverId: string): string {
  return `${qlbUid}/${serverId}`;
}

/** quiclb.io/server-id-previous as written by previousServerIdValue, or null (absent or malformed: treated as absent). */
export function readPreviousServerId(value: string | undefined): string | null {
  return value !== undefined && value.length <= 128 && /^[A-Za-z0-9-]{1,64}\/(?:[0-9a-f]{2}){1,20}$/.test(value) ? value : null;
}
/**
 * How long after its annotation changes a pod may still mint with the previous server ID: the kubelet rewrites a
 * downward-API volume at its next pod sync (syncFrequency, 1 min by default) plus its cache TTL, and the backend
 * notices the file within seconds. A pod whose ID changed is 'draining' (no new connections) for that long.
 */
export const SERVER_ID_PROPAGATION_MS = 120_000;

export interface QuicLoadBalancerSpec {
  readonly backend: { readonly serviceName: string; readonly port?: number; readonly portName?: string };
  readonly listen: { readonly ports: readonly number[]; readonly addresses: readonly string[] };
  readonly connectionIds: { readonly serverIdLength: number; readonly nonceLength: number; readonly lengthSelfEncoded: boolean; readonly serverIdQuarantineMs: number };
  readonly encryption: { readonly encrypted: boolean; readonly keySecretRef: { readonly name: string; readonly key: string } | null };
  readonly rotation: { readonly intervalMs: number | null; readonly drainMs: number; readonly quietMs: number; readonly trigger: string };
  readonly routing: RoutingMode;
  readonly fallback: { readonly maxFlows: number; readonly flowIdleTimeoutMs: number };
  readonly healthCheck: {
    readonly enabled: boolean;
    readonly intervalMs: number;
    readonly timeoutMs: number;
    readonly failureThreshold: number;
    readonly successThreshold: number;
  };
  readonly nodeSelector: Readonly<Record<string, string>>;
}

type Obj = Record<string, unknown>;

function obj(field: string, v: unknown, required = false): Obj {
  if (v === undefined || v === null) {
    if (required) throw new ConfigError(field, 'is required');
    return {};
  }
  if (typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(field, 'must be an object');
  return v as Obj;
}

function int(field: string, v: unknown, min: number, max: number, dflt?: number): number {
  if (v === undefined && dflt !== undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new ConfigError(field, `must be an integer ${min}..${max}, got ${JSON.stringify(v)}`);
  return v;
}

function str(field: string, v: unknown, dflt?: string): string {
  if (v === undefined && dflt !== undefined) return dflt;
  if (typeof v !== 'string' || v.length === 0) throw new ConfigError(field, 'must be a non-empty string');
  return v;
}

function bool(field: string, v: unknown, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw new ConfigError(field, 'must be true or false');
  return v;
}

function dur(field: string, v: unknown, dflt: string): number {
  return parseDuration(field, v ?? dflt);
}

export function readSpec(raw: unknown): QuicLoadBalancerSpec {
  const s = obj('spec', raw, true);
  const backend = obj('spec.backend', s.backend, true);
  const hasPort = backend.port !== undefined;
  const hasName = backend.portName !== undefined;
  if (hasPort === hasName) throw new ConfigError('spec.backend', 'set exactly one of port or portName');
  const listen = obj('spec.listen', s.listen, true);
  if (!Array.isArray(listen.ports) || listen.ports.length === 0) throw new ConfigError('spec.listen.ports', 'must list at least one port');
  const ports = listen.ports.map((p, i) => int(`spec.listen.ports[${i}]`, p, 1, 65535));
  if (listen.addresses !== undefined && !Array.isArray(listen.addresses)) throw new ConfigError('spec.listen.addresses', 'must be a list of IP addresses');
  const addresses = ((listen.addresses ?? []) as unknown[]).map((a, i) => str(`spec.listen.addresses[${i}]`, a));
  const cid = obj('spec.connectionIds', s.connectionIds);
  const serverIdLength = int('spec.connectionIds.serverIdLength', cid.serverIdLength, 1, 15, 2);
  const nonceLength = int('spec.connectionIds.nonceLength', cid.nonceLength, 4, 18, 6);
  if (serverIdLength + nonceLength > 19) throw new ConfigError('spec.connectionIds', `serverIdLength + nonceLength must be at most 19, got ${serverIdLength + nonceLength}`);
  const enc = obj('spec.encryption', s.encryption);
  const mode = enc.mode ?? 'Encrypted';
  if (mode !== 'Encrypted' && mode !== 'Plaintext') throw new ConfigError('spec.encryption.mode', `must be Encrypted or Plaintext, got ${JSON.stringify(mode)}`);
  const ref = enc.keySecretRef === undefined ? null : obj('spec.encryption.keySecretRef', enc.keySecretRef);
  const rot = obj('spec.rotation', s.rotation);
  const routing = obj('spec.routing', s.routing).mode ?? 'QuicLB';
  if (routing !== 'QuicLB' && routing !== 'FourTuple') throw new ConfigError('spec.routing.mode', `must be QuicLB or FourTuple, got ${JSON.stringify(routing)}`);
  const fb = obj('spec.fallback', s.fallback);
  const hc = obj('spec.healthCheck', s.healthCheck);
  const sel = obj('spec.nodeSelector', s.nodeSelector);
  const nodeSelector: Record<string, string> = {};
  for (const [k, v] of Object.entries(sel)) {
    if (typeof v !== 'string') throw new ConfigError(`spec.nodeSelector.${k}`, 'must be a string');
    nodeSelector[k] = v;
  }
  return {
    backend: {
      serviceName: str('spec.backend.serviceName', backend.serviceName),
      ...(hasPort ? { port: int('spec.backend.port', backend.port, 1, 65535) } : { portName: str('spec.backend.portName', backend.portName) }),
    },
    listen: { ports, addresses },
    connectionIds: {
      serverIdLength,
      nonceLength,
      lengthSelfEncoded: bool('spec.connectionIds.lengthSelfEncoded', cid.lengthSelfEncoded, false),
      serverIdQuarantineMs: dur('spec.connectionIds.serverIdQuarantine', cid.serverIdQuarantine, '10m'),
    },
    encryption: {
      encrypted: mode === 'Encrypted',
      keySecretRef: ref === null ? null : { name: str('spec.encryption.keySecretRef.name', ref.name), key: str('spec.encryption.keySecretRef.key', ref.key, 'key') },
    },
    rotation: {
      intervalMs: rot.interval === undefined ? null : dur('spec.rotation.interval', rot.interval, '24h'),
      drainMs: dur('spec.rotation.drainPeriod', rot.drainPeriod, '1h'),
      quietMs: dur('spec.rotation.quietPeriod', rot.quietPeriod, '2m'),
      trigger: typeof rot.trigger === 'string' ? rot.trigger : '',
    },
    routing: routing === 'QuicLB' ? 'quic-lb' : '4-tuple',
    fallback: {
      maxFlows: int('spec.fallback.maxFlows', fb.maxFlows, 1, 100_000_000, 100_000),
      flowIdleTimeoutMs: dur('spec.fallback.flowIdleTimeout', fb.flowIdleTimeout, '30s'),
    },
    healthCheck: {
      enabled: bool('spec.healthCheck.enabled', hc.enabled, true),
      intervalMs: dur('spec.healthCheck.interval', hc.interval, '10s'),
      timeoutMs: dur('spec.healthCheck.timeout', hc.timeout, '2s'),
      failureThreshold: int('spec.healthCheck.failureThreshold', hc.failureThreshold, 1, 100, 3),
      successThreshold: int('spec.healthCheck.successThreshold', hc.successThreshold, 1, 100, 2),
    },
    nodeSelector,
  };
}

/** Whether a node with `labels` is selected by `selector` (every key present with the same value). */
export function selectsNode(selector: Readonly<Record<string, string>>, labels: Readonly<Record<string, string>> | undefined): boolean {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}
