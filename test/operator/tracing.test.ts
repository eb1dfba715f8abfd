/**
 * operator/tracing.ts without a collector: where spans go (flag and OTEL_* variables), and that without an endpoint
 * nothing is registered or loaded (the global tracer provider stays the no-op one; no SDK or exporter module is
 * resolved, checked in a child process with a module resolve hook).
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from '@jest/globals';
import { trace } from '@opentelemetry/api';
import { pino } from 'pino';
import { setupTracing, startPushSpan, tracesUrl, tracingEnabled, withReconcileSpan } from '../../operator/tracing.js';
import { repoRoot } from '../helpers/run-cli.js';

const silent = pino({ level: 'silent' });

describe('tracesUrl', () => {
  it('appends /v1/traces to the flag unless it is there, and the flag wins over the environment', () => {
    expect(tracesUrl('http://collector:4318', {})).toBe('http://collector:4318/v1/traces');
    expect(tracesUrl('http://collector:4318/', {})).toBe('http://collector:4318/v1/traces');
    expect(tracesUrl('https://otel.example/prefix/v1/traces', {})).toBe('https://otel.example/prefix/v1/traces');
    expect(tracesUrl('http://flag:4318', { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://env:1/x', OTEL_SDK_DISABLED: 'true' })).toBe('http://flag:4318/v1/traces');
  });

  it('reads OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is, else OTEL_EXPORTER_OTLP_ENDPOINT plus /v1/traces', () => {
    expect(tracesUrl(null, { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://a:4318/custom', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://b:4318' })).toBe('http://a:4318/custom');
    expect(tracesUrl(undefined, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://b:4318' })).toBe('http://b:4318/v1/traces');
    expect(tracesUrl('', { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://b:4318' })).toBe('http://b:4318/v1/traces');
  });

  it('is null with nothing configured, or with OTEL_SDK_DISABLED=true / OTEL_TRACES_EXPORTER=none', () => {
    expect(tracesUrl(null, {})).toBeNull();
    expect(tracesUrl(null, { OTEL_EXPORTER_OTLP_ENDPOINT: '  ' })).toBeNull();
    expect(tracesUrl(null, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://b:4318', OTEL_SDK_DISABLED: 'TRUE' })).toBeNull();
    expect(tracesUrl(null, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://b:4318', OTEL_TRACES_EXPORTER: 'none' })).toBeNull();
  });

  it('refuses what is not an http(s) URL, naming where it came from', () => {
    expect(() => tracesUrl('collector:4318', {})).toThrow(/--otlp-endpoint: OTLP\/HTTP needs an http:\/\/ or https:\/\/ URL/);
    expect(() => tracesUrl('not a url', {})).toThrow(/--otlp-endpoint: not a URL/);
    expect(() => tracesUrl(null, { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'grpc://x:4317' })).toThrow(/OTEL_EXPORTER_OTLP_TRACES_ENDPOINT/);
  });
});

describe('tracing disabled (no endpoint)', () => {
  it('registers no tracer provider; the helpers run their function and create no span', async () => {
    const t = await setupTracing({ endpoint: null, env: {}, logger: silent });
    expect(t).toMatchObject({ enabled: false, url: null });
    expect(tracingEnabled()).toBe(false);
    // The global provider is still the API's proxy over the no-op provider: its spans record nothing.
    const probe = trace.getTracer('probe').startSpan('probe');
    expect(probe.isRecording()).toBe(false);
    expect(probe.spanContext().traceId).toBe('0'.repeat(32));
    probe.end();
    let asked = 0;
    await expect(withReconcileSpan('ns/lb', 'c1', async () => ({ kind: 'done' as const }))).resolves.toEqual({ kind: 'done' });
    await expect(withReconcileSpan('ns/lb', 'c2', async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(startPushSpan({ identity: 'dp', node: 'n', version: 1, nonce: 'x', bytes: 1, loadBalancers: 1, correlationIds: () => [String(++asked)] })).toBeNull();
    expect(asked).toBe(0); // the correlation ids are not even looked up
    await t.shutdown();
  });

  it('loads no OpenTelemetry module but the API; with an endpoint it loads the SDK and the exporter', () => {
    const run = (args: string[]) => {
      const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/operator/tracing-imports.script.ts', ...args], {
        cwd: repoRoot,
        encoding: 'utf8',
        timeout: 20_000,
        env: { ...process.env, NODE_OPTIONS: '', OTEL_EXPORTER_OTLP_ENDPOINT: '', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: '' },
      });
      expect(r.status).toBe(0);
      return JSON.parse(r.stdout.trim().split('\n').pop()!) as { enabled: boolean; specifiers: string[] };
    };
    const otelPackages = (specifiers: string[]) => [...new Set(specifiers.filter((s) => s.startsWith('@opentelemetry/')))].sort();

    const off = run([]);
    expect(off.enabled).toBe(false);
    expect(off.specifiers).toContain('@opentelemetry/api'); // the hook saw the imports
    expect(otelPackages(off.specifiers)).toEqual(['@opentelemetry/api']);

    // Positive control: the same hook sees the SDK when an endpoint is configured (port 9, discard: nothing listens).
    const on = run(['http://127.0.0.1:9']);
    expect(on.enabled).toBe(true);
    expect(otelPackages(on.specifiers)).toEqual(expect.arrayContaining(['@opentelemetry/sdk-trace', '@opentelemetry/exporter-trace-otlp-http', '@opentelemetry/resources']));
  });
});
