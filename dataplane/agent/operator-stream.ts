/**
 * The data plane's end of the config channel: one DistributionService.StreamConfig stream to the operator over
 * mTLS, re-opened with jittered exponential backoff whenever it ends. Each attempt uses a fresh channel, so this
 * backoff (not grpc-js's own reconnect backoff, which grows to minutes) decides when the next attempt happens.
 *
 * Every stream starts with a Hello. Snapshots are handed to the 'snapshot' listener with the id of the stream
 * they came on; answers (Ack/Nack) go back only on that stream (a reconnected server learns the version in force
 * from the next Hello).
 */
import { EventEmitter } from 'node:events';
import { Metadata, status as GrpcStatus, type ChannelCredentials, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import {
  DistributionServiceClient,
  type Hello,
  type Snapshot,
  type StreamConfigRequest,
  type StreamConfigResponse,
} from '../../proto/gen/quiclb/v1/distribution.js';
import { NODE_TOKEN_METADATA } from '../../proto/node-token.js';
import type { Logger } from '../logging.js';
import { Backoff, type BackoffOptions } from './backoff.js';

/** Largest message accepted from the operator (a snapshot of 256 load balancers with many servers fits). */
export const DEFAULT_MAX_RECEIVE_BYTES = 64 << 20;
/** Largest message this side sends (reports are small). */
const MAX_SEND_BYTES = 16 << 20;
/** Keepalive pings: a half-open connection to a dead operator is found within about PING + TIMEOUT. */
const KEEPALIVE_MS = 10_000;
const KEEPALIVE_TIMEOUT_MS = 5_000;

export interface OperatorStreamOptions {
  /** HOST:PORT of the operator's config server. */
  readonly address: string;
  readonly credentials: ChannelCredentials;
  /** Name the server certificate must carry (default: the host part of `address`). */
  readonly serverName?: string;
  /** Builds the Hello of each new stream. */
  readonly hello: () => Hello;
  readonly logger: Logger;
  readonly backoff?: BackoffOptions;
  readonly maxReceiveBytes?: number;
  /**
   * Called on every attempt: the node token to send as x-quiclb-node-token (null: none). It may throw (a file that
   * cannot be read): the attempt goes ahead without a token and the error is logged.
   */
  readonly nodeToken?: () => string | null;
}

export interface OperatorStreamEvents {
  /** The operator answered on a new stream (response headers or a first message). */
  connected: [];
  /** The stream ended (after 'connected'): the reason, for logs and /readyz. */
  disconnected: [string];
  snapshot: [Snapshot, number];
}

/** The host part of HOST:PORT, [IPv6]:PORT or a bare host. */
export function hostOf(address: string): string {
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(address);
  if (bracketed) return bracketed[1];
  const i = address.lastIndexOf(':');
  return i > 0 && address.indexOf(':') === i ? address.slice(0, i) : address;
}

export class OperatorStream extends EventEmitter<OperatorStreamEvents> {
  private readonly backoff: Backoff;
  private client: DistributionServiceClient | null = null;
  private stream: ClientDuplexStream<StreamConfigRequest, StreamConfigResponse> | null = null;
  private streamId = 0;
  private openedAt = 0;

  /** The id of the current stream (snapshot events carry the id of the stream they came on). */
  get currentStreamId(): number {
    return this.streamId;
  }
  private retryTimer: NodeJS.Timeout | null = null;
  private stopped = true;
  /** Writes refused by flow control until the next 'drain' (reports are skipped meanwhile). */
  private congested = false;
  /** The operator answered on the current stream. */
  connected = false;
  /** Streams opened so far (the first one included). */
  attempts = 0;
  /** When something last arrived from the operator (ms since the epoch; 0 = never). */
  lastContact = 0;
  /** When the last connected stream ended (ms since the epoch; 0 = never connected or connected now). */
  disconnectedSince = 0;
  /** Why the last stream ended or the last attempt failed. */
  lastError = '';

  constructor(private readonly options: OperatorStreamOptions) {
    super();
    this.backoff = new Backoff(options.backoff);
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.open();
  }

  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.streamId++; // the closing stream's events are ignored
    this.closeStream();
  }

  /** Writes on the stream `id` (the current one by default); false when it is gone. */
  send(message: StreamConfigRequest['message'], id = this.streamId): boolean {
    const s = this.stream;
    if (s === null || id !== this.streamId || !this.connected) return false;
    if (!s.write({ message })) this.congested = true;
    return true;
  }

  /** Like send() for periodic reports, which are skipped while earlier writes are still queued. */
  sendReport(message: StreamConfigRequest['message']): boolean {
    if (this.congested) return false;
    return this.send(message);
  }

  private open(): void {
    if (this.stopped) return;
    this.attempts++;
    const o = this.options;
    const serverName = o.serverName ?? hostOf(o.address);
    const client = new DistributionServiceClient(o.address, o.credentials, {
      'grpc.ssl_target_name_override': serverName,
      'grpc.default_authority': serverName,
      'grpc.keepalive_time_ms': KEEPALIVE_MS,
      'grpc.keepalive_timeout_ms': KEEPALIVE_TIMEOUT_MS,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.max_receive_message_length': o.maxReceiveBytes ?? DEFAULT_MAX_RECEIVE_BYTES,
      'grpc.max_send_message_length': MAX_SEND_BYTES,
      // One attempt per stream: retries are this class's job (with its backoff).
      'grpc.enable_retries': 0,
    });
    const stream = client.streamConfig(this.metadata());
    const id = ++this.streamId;
    this.client = client;
    this.stream = stream;
    this.openedAt = Date.now();
    this.congested = false;
    let ended = false;
    const answered = () => {
      this.lastContact = Date.now();
      if (this.connected || id !== this.streamId) return;
      this.connected = true;
      this.disconnectedSince = 0;
      this.lastError = '';
      o.logger.info({ operator: o.address, attempt: this.attempts }, 'connected to the operator');
      this.emit('connected');
    };
    const end = (reason: string) => {
      if (ended) return;
      ended = true;
      if (id !== this.streamId) return;
      const wasConnected = this.connected;
      this.connected = false;
      this.lastError = reason;
      this.closeStream();
      if (wasConnected) {
        this.disconnectedSince = Date.now();
        this.backoff.streamEnded(Date.now() - this.openedAt);
        o.logger.warn({ operator: o.address, reason }, 'lost the operator; forwarding with the last good snapshot');
        this.emit('disconnected', reason);
      } else {
        o.logger.debug({ operator: o.address, reason }, 'operator stream attempt failed');
      }
      this.scheduleRetry();
    };
    // Always handled: an unhandled 'error' of a grpc-js stream (UNAVAILABLE when the server goes away) kills the process.
    stream.on('error', (e: ServiceError) => end(`${GrpcStatus[e.code] ?? e.code}: ${e.details || e.message}`));
    stream.on('status', (s: { code: number; details: string }) => end(s.code === GrpcStatus.OK ? 'the operator closed the stream' : `${GrpcStatus[s.code] ?? s.code}: ${s.details}`));
    stream.on('end', () => end('the operator closed the stream'));
    stream.on('metadata', answered);
    stream.on('drain', () => {
      if (id === this.streamId) this.congested = false;
    });
    stream.on('data', (r: StreamConfigResponse) => {
      answered();
      if (r.message?.$case === 'snapshot') {
        this.backoff.reset();
        this.emit('snapshot', r.message.snapshot, id);
      }
    });
    stream.write({ message: { $case: 'hello', hello: o.hello() } });
  }

  private metadata(): Metadata {
    const md = new Metadata();
    if (!this.options.nodeToken) return md;
    try {
      const token = this.options.nodeToken();
      if (token !== null) md.set(NODE_TOKEN_METADATA, token);
    } catch (e) {
      this.options.logger.error({ operator: this.options.address, err: (e as Error).message }, 'no node token for this attempt');
    }
    return md;
  }

  private scheduleRetry(): void {
    if (this.stopped || this.retryTimer) return;
    const delay = this.backoff.next();
    this.options.logger.debug({ operator: this.options.address, delay_ms: delay }, 'reconnecting to the operator');
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.open();
    }, delay);
  }

  private closeStream(): void {
    const s = this.stream;
    const c = this.client;
    this.stream = null;
    this.client = null;
    this.connected = false;
    if (s) {
      s.removeAllListeners('data');
      s.on('error', () => {}); // a cancel reports CANCELLED as an error
      s.cancel();
    }
    c?.close();
  }
}
