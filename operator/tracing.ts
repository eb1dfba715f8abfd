/**
 * OpenTelemetry tracing of the operator: a span per reconcile and a span per snapshot push per data plane, exported
 * over OTLP/HTTP (JSON) only when an endpoint is configured.
 *
 * Disabled (the default) it costs a boolean test per reconcile and per push: only @opentelemetry/api is loaded, no
 * global tracer provider is registered, and the helpers below create no span at all. setupTracing() loads the SDK
 * and the exporter with dynamic imports only when there is an endpoint.
 *
 * Push spans are linked to the reconcile spans that caused their version through the correlation ids: the reconcile
 * span remembers its span context under its correlation id (a bounded map), and the push span, told the correlation
 * ids of its version, links to each one still remembered (and lists them all in an attribute).
 */
import { diag, DiagLogLevel, SpanKind, SpanStatusCode, trace, type Attributes, type DiagLogger, type Link, type Span, type SpanContext } from '@opentelemetry/api';
import type { Logger } from 'pino';

export const TRACER_NAME = 'quiclb-operator';
export const RECONCILE_SPAN = 'quiclb.reconcile';
export const PUSH_SPAN = 'quiclb.snapshot.push';
/** Correlation ids whose reconcile span context is remembered for links (oldest forgotten first). */
const REMEMBERED_RECONCILES = 4096;
/** At most this many links per push span (a version may carry many reconciles). */
const MAX_LINKS = 32;

let enabled = false;
const reconcileContexts = new Map<string, SpanContext>();

export interface TracingOptions {
  /** --otlp-endpoint: the collector's base URL (…/v1/traces is appended unless present). Null: the environment decides. */
  readonly endpoint?: string | null;
  /** service.name (default $OTEL_SERVICE_NAME, else quiclb-operator). */
  readonly serviceName?: string;
  readonly logger: Logger;
  /** Default process.env. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Longest delay before a finished span is exported (default 5000 ms). */
  readonly exportDelayMs?: number;
  /** shutdown() gives up on exporting the last spans after this long (default 5000 ms): a dead collector never holds up an exit. */
  readonly shutdownTimeoutMs?: number;
}

export interface Tracing {
  readonly enabled: boolean;
  /** Where spans go (null when disabled). */
  readonly url: string | null;
  /** Exports what is buffered, then stops tracing. */
  shutdown(): Promise<void>;
}

/**
 * The OTLP/HTTP traces URL: the flag (a base URL, or one ending in /v1/traces), else OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
 * (used as is), else OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces), else null. OTEL_SDK_DISABLED=true or
 * OTEL_TRACES_EXPORTER=none turn environment-configured tracing off. Throws on a URL that is not http(s).
 */
export function tracesUrl(endpoint: string | null | undefined, env: Readonly<Record<string, string | undefined>> = process.env): string | null {
  const nonEmpty = (s: string | undefined) => (s !== undefined && s.trim() !== '' ? s.trim() : undefined);
  let url: string | undefined;
  let source: string;
  if (nonEmpty(endpoint ?? undefined) !== undefined) {
    url = withTracesPath(endpoint!.trim());
    source = '--otlp-endpoint';
  } else {
    if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true' || env.OTEL_TRACES_EXPORTER?.trim().toLowerCase() === 'none') return null;
    const signal = nonEmpty(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
    const base = nonEmpty(env.OTEL_EXPORTER_OTLP_ENDPOINT);
    url = signal ?? (base !== undefined ? withTracesPath(base) : undefined);
    source = signal !== undefined ? 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT' : 'OTEL_EXPORTER_OTLP_ENDPOINT';
    if (url === undefined) return null;
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`${source}: not a URL: ${JSON.stringify(url)}`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new Error(`${source}: OTLP/HTTP needs an http:// or https:// URL, got ${parsed.protocol}`);
  return parsed.href;
}

function withTracesPath(base: string): string {
  const trimmed = base.replace(/\/+$/, '');
  return trimmed.endsWith('/v1/traces') ? trimmed : `${trimmed}/v1/traces`;
}

/** Starts exporting spans when an endpoint is configured; otherwise changes nothing and loads nothing. */
export async function setupTracing(o: TracingOptions): Promise<Tracing> {
  const env = o.env ?? process.env;
  const url = tracesUrl(o.endpoint, env);
  if (url === null) return { enabled: false, url: null, shutdown: async () => undefined };
  const [{ TracerProvider, BatchSpanProcessor }, { OTLPTraceExporter }, { resourceFromAttributes }] = await Promise.all([
    import('@opentelemetry/sdk-trace'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/resources'),
  ]);
  const serviceName = o.serviceName ?? (env.OTEL_SERVICE_NAME?.trim() || TRACER_NAME);
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ 'service.name': serviceName, ...(env.POD_NAME ? { 'service.instance.id': env.POD_NAME } : {}) }),
    // Bounded: at most 4096 finished spans wait for export (more are dropped), two export requests in flight.
    spanProcessors: [
      new BatchSpanProcessor({
        exporter: new OTLPTraceExporter({ url, timeoutMillis: 10_000, concurrencyLimit: 2 }),
        scheduledDelayMillis: o.exportDelayMs ?? 5000,
        maxQueueSize: 4096,
        maxExportBatchSize: 512,
        exportTimeoutMillis: 10_000,
      }),
    ],
  });
  // Export failures are reported through the OTel diagnostics logger: send them to pino (warnings and errors only).
  diag.setLogger(diagToPino(o.logger), DiagLogLevel.WARN);
  if (!trace.setGlobalTracerProvider(provider)) {
    await provider.shutdown();
    throw new Error('a global OpenTelemetry tracer provider is already registered');
  }
  enabled = true;
  o.logger.info({ url, serviceName }, 'tracing: exporting spans over OTLP/HTTP');
  let done: Promise<void> | null = null;
  return {
    enabled: true,
    url,
    shutdown() {
      done ??= (async () => {
        enabled = false;
        reconcileContexts.clear();
        const limitMs = o.shutdownTimeoutMs ?? 5000;
        let timer: NodeJS.Timeout | undefined;
        const timedOut = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), limitMs)));
        try {
          if ((await Promise.race([provider.shutdown(), timedOut])) === 'timeout') o.logger.warn({ url, timeoutMs: limitMs }, 'tracing: gave up exporting the last spans');
        } catch (e) {
          o.logger.warn({ err: (e as Error).message }, 'tracing: could not export the last spans');
        } finally {
          clearTimeout(timer);
        }
        trace.disable();
        diag.disable();
      })();
      return done;
    },
  };
}

function diagToPino(logger: Logger): DiagLogger {
  const log = logger.child({ component: 'otel' });
  const line = (level: 'warn' | 'error' | 'info' | 'debug') => (message: string, ...args: unknown[]) => {
    const details = args.map((a) => (a instanceof Error ? a.message : String(a))).join(' ');
    const e = encodedError(message);
    if (e && typeof e.message === 'string') log[level]({ code: e.code, data: typeof e.data === 'string' ? e.data.slice(0, 500) : undefined, details }, `tracing: ${e.message}`);
    else log[level]({ details }, `tracing: ${message}`);
  };
  return { error: line('error'), warn: line('warn'), info: line('info'), debug: line('debug'), verbose: line('debug') };
}

/** Export errors arrive as a JSON-encoded error (stack, message, code, data): what a reader needs of it, or null. */
function encodedError(message: string): { message?: unknown; code?: unknown; data?: unknown } | null {
  if (!message.startsWith('{')) return null;
  try {
    const parsed: unknown = JSON.parse(message);
    return typeof parsed === 'object' && parsed !== null ? parsed : null;
  } catch {
    return null;
  }
}

/** True while spans are exported (setupTracing found an endpoint and shutdown() has not been called). */
export function tracingEnabled(): boolean {
  return enabled;
}

function tracer() {
  return trace.getTracer(TRACER_NAME);
}

/** What a reconcile returned, as the `quiclb.result` attribute (the work queue's Verdict kinds). */
export interface HasKind {
  readonly kind: string;
}

/**
 * Runs one reconcile of `key` (namespace/name) in a span `quiclb.reconcile` with the correlation id; `fn`'s result
 * kind becomes `quiclb.result`; a throw is recorded (status ERROR, `quiclb.result` error, the error's `stage` if it
 * has one) and rethrown. Disabled: just `fn()`.
 */
export async function withReconcileSpan<T extends HasKind>(key: string, correlationId: string, fn: () => Promise<T>): Promise<T> {
  if (!enabled) return fn();
  const slash = key.indexOf('/');
  const span = tracer().startSpan(RECONCILE_SPAN, {
    kind: SpanKind.INTERNAL,
    attributes: {
      'quiclb.qlb.namespace': slash >= 0 ? key.slice(0, slash) : '',
      'quiclb.qlb.name': slash >= 0 ? key.slice(slash + 1) : key,
      'quiclb.correlation_id': correlationId,
    },
  });
  remember(correlationId, span.spanContext());
  try {
    const result = await fn();
    span.setAttribute('quiclb.result', result.kind);
    if (result.kind === 'retry') span.setStatus({ code: SpanStatusCode.ERROR, message: describe((result as { error?: unknown }).error) });
    return result;
  } catch (e) {
    span.setAttribute('quiclb.result', 'error');
    const stage = (e as { stage?: unknown } | null)?.stage;
    if (typeof stage === 'string') span.setAttribute('quiclb.reconcile.stage', stage);
    if (e instanceof Error) span.recordException(e);
    span.setStatus({ code: SpanStatusCode.ERROR, message: describe(e) });
    throw e;
  } finally {
    span.end();
  }
}

function remember(correlationId: string, ctx: SpanContext): void {
  reconcileContexts.delete(correlationId);
  reconcileContexts.set(correlationId, ctx);
  if (reconcileContexts.size > REMEMBERED_RECONCILES) reconcileContexts.delete(reconcileContexts.keys().next().value!);
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export interface PushFacts {
  readonly identity: string;
  readonly node: string;
  readonly version: number;
  readonly nonce: string;
  readonly bytes: number;
  readonly loadBalancers: number;
  /** Correlation ids of the reconciles that made this version (empty when the source does not know them); asked only when tracing. */
  readonly correlationIds: () => readonly string[];
}

/** How a push ended. */
export type PushOutcome =
  | { readonly kind: 'ack' }
  | { readonly kind: 'nack'; readonly field: string; readonly message: string }
  | { readonly kind: 'timeout'; readonly timeoutMs: number }
  | { readonly kind: 'closed'; readonly reason: string };

/** A push's span, ended once by its outcome. */
export interface PushSpan {
  end(outcome: PushOutcome): void;
}

/** Starts the span of one snapshot push to one data plane (null when tracing is disabled). */
export function startPushSpan(f: PushFacts): PushSpan | null {
  if (!enabled) return null;
  let correlationIds: readonly string[];
  try {
    correlationIds = f.correlationIds();
  } catch {
    correlationIds = []; // a tracing attribute is never worth a failed push
  }
  const links: Link[] = [];
  for (const id of correlationIds) {
    const ctx = reconcileContexts.get(id);
    if (ctx && links.length < MAX_LINKS) links.push({ context: ctx, attributes: { 'quiclb.correlation_id': id } });
  }
  const attributes: Attributes = {
    'quiclb.dataplane.identity': f.identity,
    'quiclb.dataplane.node': f.node,
    'quiclb.snapshot.version': f.version,
    'quiclb.snapshot.nonce': f.nonce,
    'quiclb.snapshot.bytes': f.bytes,
    'quiclb.snapshot.load_balancers': f.loadBalancers,
    'quiclb.correlation_ids': [...correlationIds],
  };
  const span: Span = tracer().startSpan(PUSH_SPAN, { kind: SpanKind.PRODUCER, attributes, links });
  let ended = false;
  return {
    end(outcome) {
      if (ended) return;
      ended = true;
      span.setAttribute('quiclb.result', outcome.kind);
      switch (outcome.kind) {
        case 'ack':
          span.setStatus({ code: SpanStatusCode.OK });
          break;
        case 'nack':
          span.setAttributes({ 'quiclb.nack.field': outcome.field, 'quiclb.nack.message': outcome.message });
          span.setStatus({ code: SpanStatusCode.ERROR, message: `rejected: ${outcome.field}: ${outcome.message}` });
          break;
        case 'timeout':
          span.setStatus({ code: SpanStatusCode.ERROR, message: `no answer within ${outcome.timeoutMs} ms` });
          break;
        case 'closed':
          span.setStatus({ code: SpanStatusCode.ERROR, message: `stream ended before an answer: ${outcome.reason}` });
          break;
      }
      span.end();
    },
  };
}
