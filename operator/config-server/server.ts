/**
 * The config server: serves DistributionService over mTLS to the data planes and pushes them the snapshots of a
 * SnapshotSource (stream.ts: one stream per data plane, latest wins). What it learns about each data plane is kept
 * in a DataPlaneCache (cache.ts) and exposed as plain views, events and quiclb_ metrics. No Kubernetes here.
 *
 * Every stream is checked before anything is read: the TLS handshake already required a certificate chaining to
 * the CA; checkClientCertificate() also requires the clientAuth key usage and a CN. A data plane's identity is that
 * CN and the node its Hello names (identity.ts): data planes sharing a certificate on different nodes coexist, and
 * a second stream of the same identity (a reconnect) replaces the first (after its Hello).
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { Server, status as GrpcStatus, type ServerCredentials, type ServiceDefinition } from '@grpc/grpc-js';
import { pino, type Logger } from 'pino';
import { Registry } from 'prom-client';
import { formatSocketAddress, parseSocketAddress } from '../../lib/config/address.js';
import { DistributionServiceService } from '../../proto/gen/quiclb/v1/distribution.js';
import { checkClientCertificate } from '../../proto/tls.js';
import { DataPlaneCache, type BackendHealthView, type CountersView, type DataPlaneCacheOptions, type DataPlaneView, type NackInfo } from './cache.js';
import { serializeResponse } from './encoding.js';
import { ConfigServerMetrics } from './metrics.js';
import { NODE_TOKEN_METADATA, NodeAuthenticator, type AuthenticateNode, type NodeAuthOptions } from './node-auth.js';
import { decodeRequest, DEFAULT_REQUEST_LIMITS, type RequestLimits } from './request-limits.js';
import type { SnapshotSource } from './source.js';
import { DataPlaneStream, type ConfigCall, type StreamEvents, type StreamHost } from './stream.js';

export interface KeepaliveOptions {
  /** Ping an idle connection this often (grpc.keepalive_time_ms). */
  readonly timeMs: number;
  /** Close it when a ping is not answered within this time (grpc.keepalive_timeout_ms). */
  readonly timeoutMs: number;
}

export const DEFAULT_KEEPALIVE: KeepaliveOptions = Object.freeze({ timeMs: 30_000, timeoutMs: 10_000 });

export interface ConfigServerOptions {
  readonly source: SnapshotSource;
  /** mTLS server credentials (proto/tls.ts serverCredentials(dir)). */
  readonly credentials: ServerCredentials;
  readonly logger?: Logger;
  /** Where the quiclb_config_server_* metrics go (default: a registry of its own). */
  readonly registry?: Registry;
  readonly limits?: Partial<RequestLimits>;
  /** A stream that sends no Hello within this time is closed (default 10 s). */
  readonly helloTimeoutMs?: number;
  /** A push not answered (Ack/Nack) within this time no longer holds back newer versions (default 30 s). */
  readonly answerTimeoutMs?: number;
  readonly keepalive?: KeepaliveOptions;
  readonly cache?: DataPlaneCacheOptions;
  /** Correlation ids of the reconciles that made a version (the operator's publisher); push spans link to them. */
  readonly correlationIdsOf?: (version: number) => readonly string[];
  /**
   * Set: every stream must carry a node token (metadata x-quiclb-node-token) that confirms the node its Hello
   * names, or it is closed before anything is sent (node-auth.ts; docs/config-channel.md, Trust).
   */
  readonly authenticateNode?: AuthenticateNode;
  readonly nodeAuth?: NodeAuthOptions;
}

export interface ConfigServerEvents {
  /** A data plane said Hello. */
  connected: [DataPlaneView];
  /** Its stream ended (replaced, closed, lost). */
  disconnected: [DataPlaneView];
  ack: [{ identity: string; version: number; nonce: string }];
  nack: [{ identity: string; nack: NackInfo }];
  /** A health report: the entries it changed (servers of the snapshot last sent). */
  health: [{ identity: string; backends: readonly BackendHealthView[] }];
  counters: [{ identity: string; counters: CountersView }];
}

/**
 * grpc-js service definition whose deserializer never throws (a malformed message reaches the stream as such) and
 * whose serializer passes pre-encoded pushes through (encoding.ts).
 */
const SERVICE = {
  streamConfig: { ...DistributionServiceService.streamConfig, requestDeserialize: decodeRequest, responseSerialize: serializeResponse },
} as unknown as ServiceDefinition;

export interface BoundAddress {
  readonly host: string;
  readonly port: number;
  /** host:port ([host]:port for IPv6). */
  readonly address: string;
}

export class ConfigServer extends EventEmitter<ConfigServerEvents> {
  private readonly grpc: Server;
  private readonly cache: DataPlaneCache;
  private readonly metrics: ConfigServerMetrics;
  private readonly logger: Logger;
  private readonly host: StreamHost;
  /** Every open stream (before and after Hello). */
  private readonly open = new Set<DataPlaneStream>();
  /** The adopted (post-Hello) stream of each identity (certificate CN and node). */
  private readonly byIdentity = new Map<string, DataPlaneStream>();
  private readonly unsubscribe: () => void;
  private readonly bootId = randomBytes(4).toString('hex');
  private pushes = 0;
  private closing = false;

  constructor(private readonly options: ConfigServerOptions) {
    super();
    this.logger = options.logger ?? pino({ level: 'silent' });
    const limits: RequestLimits = { ...DEFAULT_REQUEST_LIMITS, ...options.limits };
    this.cache = new DataPlaneCache({ maxHealthEntries: limits.maxHealthEntries, ...options.cache });
    this.metrics = new ConfigServerMetrics(options.registry ?? new Registry(), {
      connectedCount: () => this.byIdentity.size,
      version: () => options.source.version(),
      reportAges: () => this.cache.reportAges(Date.now()),
      withheldCount: () => [...this.byIdentity.values()].filter((s) => s.isWithheld).length,
    });
    const keepalive = options.keepalive ?? DEFAULT_KEEPALIVE;
    this.grpc = new Server({
      'grpc.max_receive_message_length': limits.maxMessageBytes,
      'grpc.keepalive_time_ms': keepalive.timeMs,
      'grpc.keepalive_timeout_ms': keepalive.timeoutMs,
      // Client-side settings in grpc-js (its server does not police pings); set for other gRPC stacks' benefit.
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.http2.min_ping_interval_without_data_ms': 5_000,
      // A data plane needs one stream; a few more allow a replacement while the old one ends.
      'grpc.max_concurrent_streams': 16,
    });
    const events: StreamEvents = {
      connected: (identity) => {
        const view = this.cache.dataPlane(identity);
        if (view) this.emitSafely('connected', view);
      },
      acked: (identity, version, nonce) => this.emitSafely('ack', { identity, version, nonce }),
      nacked: (identity) => {
        const nack = this.cache.dataPlane(identity)?.lastNack;
        if (nack) this.emitSafely('nack', { identity, nack });
      },
      health: (identity, backends) => this.emitSafely('health', { identity, backends }),
      counters: (identity) => {
        const counters = this.cache.dataPlane(identity)?.counters;
        if (counters) this.emitSafely('counters', { identity, counters });
      },
    };
    this.host = {
      source: options.source,
      cache: this.cache,
      metrics: this.metrics,
      logger: this.logger,
      limits,
      helloTimeoutMs: options.helloTimeoutMs ?? 10_000,
      answerTimeoutMs: options.answerTimeoutMs ?? 30_000,
      nodeAuth: options.authenticateNode ? new NodeAuthenticator(options.authenticateNode, options.nodeAuth) : null,
      nextNonce: () => `${this.bootId}-${(++this.pushes).toString(36)}`,
      correlationIdsOf: options.correlationIdsOf ?? (() => []),
      adopt: (s) => this.adopt(s),
      release: (s, reason) => this.release(s, reason),
      events,
    };
    this.grpc.addService(SERVICE, { streamConfig: (call: ConfigCall) => this.accept(call) });
    this.unsubscribe = options.source.subscribe(() => {
      for (const s of this.byIdentity.values()) s.wake();
    });
  }

  /** Binds `address` (IP:port, [IPv6]:port; port 0 picks one) and starts serving. */
  listen(address: string): Promise<BoundAddress> {
    const a = parseSocketAddress('--listen', address, { allowPortZero: true });
    return new Promise((resolve, reject) => {
      this.grpc.bindAsync(formatSocketAddress(a), this.options.credentials, (err, port) => {
        if (err) return reject(err);
        resolve({ host: a.host, port, address: formatSocketAddress({ host: a.host, port }) });
      });
    });
  }

  /** Closes every stream (UNAVAILABLE: the data planes reconnect elsewhere or later) and the listener. */
  async close(graceMs = 1000): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.unsubscribe();
    for (const s of [...this.open]) s.close(GrpcStatus.UNAVAILABLE, 'config server shutting down', 'shutdown');
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.grpc.forceShutdown();
        resolve();
      }, graceMs);
      this.grpc.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** What is known about every data plane (connected, or disconnected recently). */
  dataPlanes(): DataPlaneView[] {
    return this.cache.dataPlanes();
  }

  dataPlane(identity: string): DataPlaneView | null {
    return this.cache.dataPlane(identity);
  }

  /**
   * Resolves when every data plane in `identities` (default: those connected now) has applied `version` or a newer
   * one; rejects after `timeoutMs` naming those that have not. A data plane that disconnects meanwhile no longer
   * counts unless it is named.
   */
  waitForAck(version: number, timeoutMs: number, identities?: readonly string[]): Promise<void> {
    const lagging = () => (identities ?? this.cache.connectedIdentities()).filter((id) => (this.cache.dataPlane(id)?.appliedVersion ?? 0) < version);
    return new Promise((resolve, reject) => {
      const check = () => {
        if (lagging().length > 0) return;
        done();
        resolve();
      };
      const timer = setTimeout(() => {
        done();
        const l = lagging();
        reject(new Error(`version ${version} not applied within ${timeoutMs} ms by ${l.length} data plane(s): ${l.slice(0, 10).join(', ')}${l.length > 10 ? ', ...' : ''}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.off('ack', check);
        this.off('disconnected', check);
      };
      this.on('ack', check);
      this.on('disconnected', check);
      check();
    });
  }

  private accept(call: ConfigCall): void {
    if (this.closing) {
      call.emit('error', Object.assign(new Error('config server shutting down'), { code: GrpcStatus.UNAVAILABLE, details: 'config server shutting down' }));
      return;
    }
    const who = checkClientCertificate(call);
    if ('error' in who) {
      const code = who.error === 'no client certificate' ? GrpcStatus.UNAUTHENTICATED : GrpcStatus.PERMISSION_DENIED;
      this.metrics.streamsRefused.inc({ reason: 'unauthenticated' });
      this.logger.warn({ peer: call.getPeer(), err: who.error }, 'config stream refused');
      call.emit('error', Object.assign(new Error(who.error), { code, details: who.error }));
      return;
    }
    let token: string | undefined;
    if (this.host.nodeAuth !== null) {
      const values = call.metadata.get(NODE_TOKEN_METADATA);
      const refusal =
        values.length > 1 ? `more than one ${NODE_TOKEN_METADATA}` : typeof values[0] === 'object' ? `${NODE_TOKEN_METADATA} must be text` : null;
      token = typeof values[0] === 'string' ? values[0] : undefined;
      if (refusal !== null) {
        this.metrics.streamsRefused.inc({ reason: 'node_unauthenticated' });
        this.logger.warn({ peer: call.getPeer(), certificate: who.name, err: refusal }, 'config stream refused');
        call.emit('error', Object.assign(new Error(refusal), { code: GrpcStatus.UNAUTHENTICATED, details: refusal }));
        return;
      }
    }
    this.open.add(new DataPlaneStream(this.host, call, who.name, token));
  }

  private adopt(s: DataPlaneStream): void {
    const old = this.byIdentity.get(s.identity);
    if (old && old !== s) old.close(GrpcStatus.ABORTED, 'replaced by a newer stream of the same data plane', 'replaced');
    this.byIdentity.set(s.identity, s);
  }

  private release(s: DataPlaneStream, reason: string): void {
    this.open.delete(s);
    if (this.byIdentity.get(s.identity) !== s) return;
    this.byIdentity.delete(s.identity);
    this.cache.disconnected(s.identity, reason, new Date());
    const view = this.cache.dataPlane(s.identity);
    this.logger.info({ identity: s.identity, peer: s.peer, reason, appliedVersion: view?.appliedVersion ?? null }, 'data plane disconnected');
    if (view) this.emitSafely('disconnected', view);
  }

  /** Listeners run inside stream handlers: one that throws must not take the stream (or the process) down. */
  private emitSafely<K extends keyof ConfigServerEvents>(event: K, ...args: ConfigServerEvents[K]): void {
    try {
      (this.emit as (e: K, ...a: ConfigServerEvents[K]) => boolean)(event, ...args);
    } catch (e) {
      this.logger.error({ event, err: (e as Error).message }, 'config server event listener failed');
    }
  }
}
