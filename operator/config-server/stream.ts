/**
 * One data plane's StreamConfig stream: waits for its Hello, pushes the latest snapshot and every newer one, and
 * books its Acks, Nacks and reports.
 *
 * Latest wins, at two levels, so a data plane never has to work through stale versions and a stalled one costs one
 * snapshot of memory and delays nobody:
 * - one push at a time in the transport: while a push has not been taken by HTTP/2 (grpc-js calls the write
 *   callback once flow control let it out; a data plane that stops reading holds it back), nothing else is
 *   written. This is stricter than waiting for 'drain' after write() returns false, which grpc-js reports only
 *   after 16 queued messages;
 * - one unanswered push at a time: the next version is pushed once the data plane has answered (Ack or Nack) the
 *   previous push, or `answerTimeoutMs` after it (a data plane that does not answer still converges). Otherwise a
 *   data plane that stops reading would find a backlog of versions in its HTTP/2 and TCP buffers when it resumes.
 * Meanwhile new versions only wake the stream; when it may push, it pushes the newest and every version in
 * between is skipped. Changes published together are coalesced: a push is scheduled once per event-loop turn.
 *
 * A rejected version is offered again to the same data-plane process only after a delay that doubles with each
 * rejection (DataPlaneCache rejectedRetryMs; a newer version goes out at once as usual): a failure of that host's
 * (a port held for a moment, a descriptor limit) heals without a new version, a snapshot it can never take costs a
 * Nack every 16 min at most.
 * Acks and Nacks whose nonce is not the latest push's answer a push that a newer one replaced, and are ignored.
 *
 * Snapshot.retained (load balancers the data plane keeps as it has them) goes only to a data plane whose Hello
 * announces RETAINED_CAPABILITY. An older one would ignore the field and close those listeners, so while the source
 * retains anything for its node it is sent nothing and keeps forwarding with what it has (as during the operator's
 * start-up hold), unless its Hello said it forwards with nothing (version 0): then it gets the load balancers
 * without the retained ones, since it has nothing of theirs to lose.
 */
import { Metadata, status as GrpcStatus, type ServerDuplexStream } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { StreamConfigRequest, StreamConfigResponse } from '../../proto/gen/quiclb/v1/distribution.js';
import { helloInfo, type BackendHealthView, type DataPlaneCache, type PushInfo } from './cache.js';
import { dataPlaneIdentity } from './identity.js';
import { encodePush, prepareSnapshot, type EncodedParts, type EncodedResponse } from './encoding.js';
import { RETAINED_CAPABILITY } from '../../proto/convert.js';
import type { ConfigServerMetrics } from './metrics.js';
import type { NodeAuthenticator } from './node-auth.js';
import { checkRequest, isMalformed, RequestError, type MalformedRequest, type RequestLimits } from './request-limits.js';
import type { DataPlaneKey, SnapshotSource, SourceSnapshot } from './source.js';
import { startPushSpan, type PushOutcome, type PushSpan } from '../tracing.js';

export type IncomingRequest = StreamConfigRequest | MalformedRequest;
export type ConfigCall = ServerDuplexStream<IncomingRequest, EncodedResponse | StreamConfigResponse>;

/** Why the server closed a stream (metric label quiclb_config_server_streams_refused_total{reason}). */
export type RefusalReason = 'unauthenticated' | 'node_unauthenticated' | 'node_unverifiable' | 'hello_timeout' | 'protocol' | 'invalid_message' | 'replaced' | 'shutdown';

/** What a stream needs from its server. */
export interface StreamHost {
  readonly source: SnapshotSource;
  readonly cache: DataPlaneCache;
  readonly metrics: ConfigServerMetrics;
  readonly logger: Logger;
  readonly limits: RequestLimits;
  readonly helloTimeoutMs: number;
  /** After this long without an answer to a push, a newer version is pushed anyway. */
  readonly answerTimeoutMs: number;
  /** Set: the node of every Hello must be confirmed by the stream's node token before the stream is adopted. */
  readonly nodeAuth: NodeAuthenticator | null;
  nextNonce(): string;
  /** Correlation ids of the reconciles that made `version` (tracing: push spans link to them). */
  correlationIdsOf(version: number): readonly string[];
  /** The stream said Hello: it becomes the stream of its identity (an older one of the same identity is closed). */
  adopt(stream: DataPlaneStream): void;
  /** The stream ended (whatever the reason). */
  release(stream: DataPlaneStream, reason: string): void;
  readonly events: StreamEvents;
}

export interface StreamEvents {
  connected(identity: string): void;
  acked(identity: string, version: number, nonce: string): void;
  nacked(identity: string, version: number): void;
  health(identity: string, changed: readonly BackendHealthView[]): void;
  counters(identity: string): void;
}

export class DataPlaneStream {
  private helloTimer: NodeJS.Timeout | null;
  private key: DataPlaneKey | null = null;
  private lastSent: PushInfo | null = null;
  /** The latest push was answered (a second answer to it is ignored). */
  private answered = false;
  private writing = false;
  /** Set while the latest push waits for its answer and the answer timeout has not passed. */
  private answerTimer: NodeJS.Timeout | null = null;
  /** The trace span of the latest push until it is answered, times out or the stream ends (null: tracing off). */
  private pushSpan: PushSpan | null = null;
  private scheduled = false;
  private closed = false;
  /** How the latest push was answered (null: not yet, or not at all within answerTimeoutMs). */
  private lastAnswer: 'ack' | 'nack' | null = null;
  /** Wakes the stream when a rejected version may be offered again (armRetry). */
  private retryTimer: NodeJS.Timeout | null = null;
  /** The Hello's node is being confirmed (node authentication). */
  private verifying = false;
  /** The data plane applies Snapshot.retained (its Hello announced RETAINED_CAPABILITY). */
  private retains = false;
  /** Its Hello said it forwards with nothing (current_version 0). */
  private startedEmpty = false;
  /** A push is withheld because the data plane cannot retain (logged once until the next push). */
  private withheld = false;

  /** True while pushes to this data plane are withheld (it cannot keep its node's retained load balancers). */
  get isWithheld(): boolean {
    return this.withheld;
  }
  readonly peer: string;

  constructor(
    private readonly host: StreamHost,
    private readonly call: ConfigCall,
    /** The client certificate's CN. */
    readonly certificateName: string,
    /** The x-quiclb-node-token metadata value, if any (never logged). */
    private readonly nodeToken?: string,
  ) {
    this.peer = call.getPeer();
    this.helloTimer = setTimeout(() => this.close(GrpcStatus.DEADLINE_EXCEEDED, `no hello within ${host.helloTimeoutMs} ms`, 'hello_timeout'), host.helloTimeoutMs);
    this.helloTimer.unref();
    call.on('data', (req: IncomingRequest) => this.receive(req));
    call.on('end', () => {
      // The data plane closed its side: finish ours with OK (unless the server already closed it with a status).
      if (this.closed) return;
      this.finish('data plane ended the stream');
      call.end();
    });
    call.on('cancelled', () => this.finish('cancelled by the data plane or the connection closed'));
    call.on('error', (e: Error) => this.finish(`stream error: ${e.message}`));
    call.on('close', () => this.finish('stream closed'));
  }

  get helloReceived(): boolean {
    return this.key !== null;
  }

  /** The data plane's identity (identity.ts): certificate CN and the node of its Hello; the CN alone before it. */
  get identity(): string {
    return this.key?.identity ?? this.certificateName;
  }

  /** A new version may exist: push the newest on the next turn of the event loop (coalescing bursts). */
  wake(): void {
    if (this.closed || this.key === null || this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.pushLatest();
    });
  }

  /** Closes the stream with a status (the data plane receives it after any snapshot already in the stream). */
  close(code: GrpcStatus, details: string, reason: RefusalReason): void {
    if (this.closed) return;
    this.host.metrics.streamsRefused.inc({ reason });
    const level = reason === 'shutdown' || reason === 'replaced' ? 'info' : 'warn';
    this.host.logger[level]({ identity: this.identity, peer: this.peer, code: GrpcStatus[code], reason: details }, 'closing config stream');
    this.finish(details);
    this.call.emit('error', Object.assign(new Error(details), { code, details }));
  }

  private finish(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    if (this.helloTimer) clearTimeout(this.helloTimer);
    this.helloTimer = null;
    this.stopAnswerTimer();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.endPushSpan({ kind: 'closed', reason });
    this.host.release(this, reason);
  }

  private receive(req: IncomingRequest): void {
    if (this.closed) return;
    if (isMalformed(req)) return this.close(GrpcStatus.INVALID_ARGUMENT, `malformed StreamConfigRequest: ${req.malformed}`, 'invalid_message');
    try {
      checkRequest(req, this.host.limits);
    } catch (e) {
      if (e instanceof RequestError) return this.close(GrpcStatus.INVALID_ARGUMENT, e.message, 'invalid_message');
      throw e;
    }
    const m = req.message!;
    if (m.$case === 'hello') {
      if (this.key !== null || this.verifying) return this.close(GrpcStatus.FAILED_PRECONDITION, 'hello was already sent on this stream', 'protocol');
      const hello = helloInfo(m.hello);
      clearTimeout(this.helloTimer!);
      this.helloTimer = null;
      if (this.host.nodeAuth === null) return this.adoptHello(hello);
      // Nothing else is read until the node is confirmed (the Hello timeout no longer applies: the verification has its own).
      this.verifying = true;
      this.call.pause();
      void this.host.nodeAuth.check(this.nodeToken, hello.nodeName).then((r) => {
        this.verifying = false;
        if (this.closed) return;
        if (r.kind === 'refused') return this.close(this.nodeToken ? GrpcStatus.PERMISSION_DENIED : GrpcStatus.UNAUTHENTICATED, `node ${JSON.stringify(hello.nodeName)} not confirmed: ${r.reason}`, 'node_unauthenticated');
        if (r.kind === 'unverifiable') return this.close(GrpcStatus.UNAVAILABLE, r.reason, 'node_unverifiable');
        this.adoptHello(hello);
        this.call.resume();
      });
      return;
    }
    if (this.key === null) return this.close(GrpcStatus.FAILED_PRECONDITION, `the first message must be hello, got ${m.$case}`, 'protocol');
    const now = new Date();
    switch (m.$case) {
      case 'ack':
        return this.onAnswer(m.ack.version, m.ack.nonce, () => {
          this.endPushSpan({ kind: 'ack' });
          const version = Number(m.ack.version);
          this.lastAnswer = 'ack';
          this.host.cache.acked(this.identity, version, now);
          this.host.metrics.acked.inc();
          this.host.logger.info({ identity: this.identity, version, nonce: m.ack.nonce }, 'snapshot acknowledged');
          this.host.events.acked(this.identity, version, m.ack.nonce);
        });
      case 'nack':
        return this.onAnswer(m.nack.version, m.nack.nonce, () => {
          const n = m.nack;
          this.endPushSpan({ kind: 'nack', field: n.field, message: n.message });
          const version = Number(n.version);
          this.lastAnswer = 'nack';
          this.host.cache.nacked(this.identity, { version, nonce: n.nonce, field: n.field, message: n.message, at: now });
          this.armRetry();
          this.host.metrics.nacked.inc();
          this.host.logger.warn({ identity: this.identity, version, nonce: n.nonce, field: n.field, err: n.message }, 'snapshot rejected by data plane');
          this.host.events.nacked(this.identity, version);
        });
      case 'health': {
        const { applied, ignored } = this.host.cache.health(this.identity, m.health.backends, now);
        if (ignored > 0) this.host.logger.debug({ identity: this.identity, ignored }, 'health entries for servers not in the last snapshot ignored');
        this.host.events.health(this.identity, applied);
        return;
      }
      case 'counters':
        this.host.cache.counters(this.identity, m.counters, now);
        this.host.events.counters(this.identity);
        return;
    }
  }

  private adoptHello(hello: ReturnType<typeof helloInfo>): void {
    this.key = { identity: dataPlaneIdentity(this.certificateName, hello.nodeName), nodeName: hello.nodeName };
    this.retains = hello.capabilities.includes(RETAINED_CAPABILITY);
    this.startedEmpty = hello.currentVersion === 0;
    this.host.adopt(this);
    this.host.cache.connected(this.identity, this.certificateName, hello, this.peer, new Date());
    this.host.logger.info(
      { identity: this.identity, certificate: this.certificateName, peer: this.peer, node: hello.nodeName, pod: hello.podName, softwareVersion: hello.softwareVersion, currentVersion: hello.currentVersion, nodeAuthenticated: this.host.nodeAuth !== null },
      'data plane connected',
    );
    this.host.events.connected(this.identity);
    // Response headers now: the data plane counts as connected (and reports) even before the source has a
    // snapshot for it; grpc-js would otherwise send them only with the first push.
    this.call.sendMetadata(new Metadata());
    this.pushLatest();
    this.armRetry(); // a version this process rejected on an earlier stream
  }

  /** Wakes the stream when the version its data plane rejected may be offered again (nothing else may happen). */
  private armRetry(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const at = this.host.cache.retryAt(this.identity);
    if (at === null || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      // Due by the wall clock the retry time is kept in; a clock stepped back meanwhile makes it later: wait again.
      if (at.getTime() > Date.now()) this.armRetry();
      else this.wake();
    }, Math.max(0, at.getTime() - Date.now()) + 1);
    this.retryTimer.unref();
  }

  private onAnswer(version: bigint, nonce: string, book: () => void): void {
    const sent = this.lastSent;
    if (sent === null || nonce !== sent.nonce || this.answered) {
      this.host.logger.debug({ identity: this.identity, version: Number(version), nonce }, 'answer to an earlier push ignored');
      return;
    }
    if (Number(version) !== sent.version) {
      this.host.logger.warn({ identity: this.identity, version: Number(version), nonce, sentVersion: sent.version }, 'answer names another version than its push: ignored');
      return;
    }
    this.answered = true;
    this.stopAnswerTimer();
    book();
    this.wake(); // a newer version may have been published meanwhile
  }

  private endPushSpan(outcome: PushOutcome): void {
    this.pushSpan?.end(outcome);
    this.pushSpan = null;
  }

  private stopAnswerTimer(): void {
    if (this.answerTimer) clearTimeout(this.answerTimer);
    this.answerTimer = null;
  }

  private pushLatest(): void {
    if (this.closed || this.key === null || this.writing || this.answerTimer !== null) return;
    let snap: SourceSnapshot | null;
    let encoded: EncodedParts;
    let retained: readonly string[];
    try {
      snap = this.host.source.snapshotFor(this.key);
      if (snap === null) return;
      retained = snap.retained ?? [];
      if (retained.length > 0 && !this.retains) {
        if (!this.startedEmpty) {
          if (!this.withheld) {
            this.host.logger.warn(
              { identity: this.identity, version: snap.version, retained: retained.length, capability: RETAINED_CAPABILITY },
              'data plane cannot keep load balancers the operator could not reconcile yet: nothing is sent to it until they are',
            );
          }
          this.withheld = true;
          return;
        }
        retained = [];
      }
      // The version last pushed goes again only when it was rejected and its retry is due (next line).
      if (this.lastSent !== null && (snap.version < this.lastSent.version || (snap.version === this.lastSent.version && this.lastAnswer !== 'nack'))) return;
      if (snap.version <= this.host.cache.rejectedVersion(this.identity)) return;
      const nack = this.host.cache.unappliedNack(this.identity);
      if (nack?.version === snap.version) {
        this.host.logger.info({ identity: this.identity, version: snap.version, rejectedAt: nack.at.toISOString() }, 'offering a rejected snapshot again');
      }
      encoded = prepareSnapshot(snap.version, snap.loadBalancers, retained);
    } catch (e) {
      // A source bug must not take the server down; the stream keeps its last push and retries on the next change.
      this.host.logger.error({ identity: this.identity, err: (e as Error).message }, 'cannot build the snapshot for a data plane');
      return;
    }
    this.withheld = false;
    const nonce = this.host.nextNonce();
    const push: PushInfo = { version: snap.version, nonce, at: new Date() };
    this.lastSent = push;
    this.answered = false;
    this.lastAnswer = null;
    this.host.cache.sent(this.identity, push, snap.loadBalancers);
    this.host.metrics.sent.inc();
    this.host.logger.debug({ identity: this.identity, version: snap.version, nonce }, 'pushing snapshot');
    const response = encodePush(encoded, nonce);
    this.pushSpan = startPushSpan({
      identity: this.identity,
      node: this.key.nodeName,
      version: snap.version,
      nonce,
      bytes: response.bytes.length,
      loadBalancers: snap.loadBalancers.length,
      correlationIds: () => this.host.correlationIdsOf(push.version),
    });
    this.writing = true;
    this.answerTimer = setTimeout(() => {
      this.answerTimer = null;
      this.endPushSpan({ kind: 'timeout', timeoutMs: this.host.answerTimeoutMs });
      this.host.logger.warn({ identity: this.identity, version: push.version, nonce, timeoutMs: this.host.answerTimeoutMs }, 'no answer to a snapshot push');
      this.pushLatest();
    }, this.host.answerTimeoutMs);
    this.answerTimer.unref();
    this.call.write(response, () => {
      this.writing = false;
      this.pushLatest();
    });
  }
}
