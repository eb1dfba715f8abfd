/**
 * Tracing exported to a real OTLP/HTTP receiver (a node:http server on 127.0.0.1 taking POST /v1/traces as JSON, as
 * a collector does): reconcile spans from withReconcileSpan, and the push spans of a real config server over mTLS
 * with real grpc-js data-plane streams, ended by an ACK, a NACK (status error with the field), the answer timeout and
 * the stream's end, each linked to the reconcile span of its version through the correlation id.
 */
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { InMemorySnapshotSource } from '../../operator/config-server/source.js';
import { PUSH_SPAN, RECONCILE_SPAN, setupTracing, withReconcileSpan, type Tracing } from '../../operator/tracing.js';
import { captureLogger, keyForms, makeLoadBalancer, startServer, TEST_KEYS, TestDataPlane, type StartedServer } from '../config-server/helpers.js';
import { TestCa, type TlsDir } from '../helpers/tls.js';

/** The parts of OTLP/JSON (ExportTraceServiceRequest) the test reads. */
interface AnyValue {
  stringValue?: string;
  intValue?: number | string;
  boolValue?: boolean;
  arrayValue?: { values?: AnyValue[] };
}
interface KeyValue {
  key: string;
  value: AnyValue;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  name: string;
  kind: number;
  attributes?: KeyValue[];
  links?: Array<{ traceId: string; spanId: string; attributes?: KeyValue[] }>;
  status?: { code?: number; message?: string };
  startTimeUnixNano: string | number;
  endTimeUnixNano: string | number;
}
interface ExportRequest {
  resourceSpans?: Array<{ resource?: { attributes?: KeyValue[] }; scopeSpans?: Array<{ scope?: { name?: string }; spans?: OtlpSpan[] }> }>;
}

function plain(v: AnyValue): unknown {
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.arrayValue !== undefined) return (v.arrayValue.values ?? []).map(plain);
  return undefined;
}

function attrs(kvs: KeyValue[] | undefined): Record<string, unknown> {
  return Object.fromEntries((kvs ?? []).map((kv) => [kv.key, plain(kv.value)]));
}

/** A minimal OTLP/HTTP JSON receiver. */
class Receiver {
  readonly bodies: string[] = [];
  readonly contentTypes: string[] = [];
  readonly server: Server;

  constructor() {
    this.server = createServer((req, res) => {
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        res.writeHead(404).end();
        return;
      }
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        this.bodies.push(Buffer.concat(chunks).toString('utf8'));
        this.contentTypes.push(String(req.headers['content-type']));
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
  }

  listen(): Promise<number> {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => resolve((this.server.address() as { port: number }).port)));
  }

  requests(): ExportRequest[] {
    return this.bodies.map((b) => JSON.parse(b) as ExportRequest);
  }

  spans(): OtlpSpan[] {
    return this.requests().flatMap((r) => (r.resourceSpans ?? []).flatMap((rs) => (rs.scopeSpans ?? []).flatMap((ss) => ss.spans ?? [])));
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }
}

let ca: TestCa;
let serverTls: TlsDir;
const clients: Record<string, TlsDir> = {};

beforeAll(() => {
  ca = new TestCa();
  serverTls = ca.issue({ cn: 'config-server', usage: 'server' });
  for (const cn of ['dp-ack', 'dp-silent', 'dp-gone']) clients[cn] = ca.issue({ cn, usage: 'client' });
});

afterAll(() => ca.remove());

describe('tracing with an OTLP/HTTP endpoint', () => {
  let receiver: Receiver;
  let tracing: Tracing;
  let started: StartedServer;
  const planes: TestDataPlane[] = [];

  afterAll(async () => {
    for (const p of planes) p.close();
    await started?.server.close(0);
    await tracing?.shutdown();
    await receiver?.close();
  });

  it('exports reconcile spans and per-data-plane push spans ended by ACK, NACK, timeout and stream end', async () => {
    receiver = new Receiver();
    const port = await receiver.listen();
    const { logger, lines } = captureLogger('info');
    tracing = await setupTracing({ endpoint: `http://127.0.0.1:${port}`, serviceName: 'quiclb-operator-test', env: {}, logger, exportDelayMs: 100 });
    expect(tracing).toMatchObject({ enabled: true, url: `http://127.0.0.1:${port}/v1/traces` });

    // What the operator's publisher does: a version per reconcile, remembered with its correlation id.
    const source = new InMemorySnapshotSource();
    const correlation = new Map<number, string[]>();
    started = await startServer(source, serverTls, { correlationIdsOf: (v) => correlation.get(v) ?? [], answerTimeoutMs: 400 });
    const reconcile = (id: string, weight: number) =>
      withReconcileSpan('team-a/web', id, async () => {
        const v = source.publish({ all: [makeLoadBalancer('web', { weight })] });
        correlation.set(v, [id]);
        return { kind: 'done' as const, version: v };
      });

    const v1 = (await reconcile('corr-one', 100)).version;
    const ack = TestDataPlane.withTls(started.address, clients['dp-ack']);
    planes.push(ack);
    ack.hello('node-a');
    ack.ack(await ack.waitForVersion(v1));
    await started.server.waitForAck(v1, 5000, ['dp-ack@node-a']);

    const v2 = (await reconcile('corr-two', 50)).version;
    const nacked = new Promise((r) => started.server.once('nack', r));
    ack.nack(await ack.waitForVersion(v2), 'load_balancers[0].servers[1].server_id', 'duplicate server id');
    await nacked;

    // One that never answers (its push times out), one that leaves before answering.
    const silent = TestDataPlane.withTls(started.address, clients['dp-silent']);
    const gone = TestDataPlane.withTls(started.address, clients['dp-gone']);
    planes.push(silent, gone);
    silent.hello('node-b');
    gone.hello('node-c');
    await silent.waitForVersion(v2);
    await gone.waitForVersion(v2);
    const disconnected = new Promise((r) => started.server.once('disconnected', r));
    gone.close();
    await disconnected;
    await new Promise((r) => setTimeout(r, 600)); // past the 400 ms answer timeout

    const failure = Object.assign(new Error('records: the API server said 500'), { stage: 'records' });
    await expect(withReconcileSpan('team-a/web', 'corr-three', async () => Promise.reject(failure))).rejects.toBe(failure);

    await tracing.shutdown(); // flushes the batch
    const spans = receiver.spans();
    expect(receiver.contentTypes.every((t) => t.startsWith('application/json'))).toBe(true);
    const resource = attrs(receiver.requests()[0].resourceSpans?.[0].resource?.attributes);
    expect(resource['service.name']).toBe('quiclb-operator-test');

    const reconciles = spans.filter((s) => s.name === RECONCILE_SPAN);
    const byCorrelation = new Map(reconciles.map((s) => [attrs(s.attributes)['quiclb.correlation_id'], s]));
    expect([...byCorrelation.keys()].sort()).toEqual(['corr-one', 'corr-three', 'corr-two']);
    expect(attrs(byCorrelation.get('corr-one')!.attributes)).toEqual({
      'quiclb.qlb.namespace': 'team-a',
      'quiclb.qlb.name': 'web',
      'quiclb.correlation_id': 'corr-one',
      'quiclb.result': 'done',
    });
    const failed = byCorrelation.get('corr-three')!;
    expect(attrs(failed.attributes)).toMatchObject({ 'quiclb.result': 'error', 'quiclb.reconcile.stage': 'records' });
    expect(failed.status).toMatchObject({ code: 2, message: 'records: the API server said 500' }); // STATUS_CODE_ERROR

    const pushes = spans.filter((s) => s.name === PUSH_SPAN).map((s) => ({ span: s, a: attrs(s.attributes) }));
    const push = (identity: string, version: number) => {
      const found = pushes.filter((p) => p.a['quiclb.dataplane.identity'] === identity && p.a['quiclb.snapshot.version'] === version);
      expect(found).toHaveLength(1);
      return found[0];
    };
    const acked = push('dp-ack@node-a', v1);
    expect(acked.a).toMatchObject({ 'quiclb.dataplane.node': 'node-a', 'quiclb.snapshot.load_balancers': 1, 'quiclb.correlation_ids': ['corr-one'], 'quiclb.result': 'ack' });
    expect(acked.a['quiclb.snapshot.nonce']).toBe(ack.snapshots.find((s) => s.version === BigInt(v1))!.nonce);
    expect(acked.a['quiclb.snapshot.bytes']).toBeGreaterThan(50);
    expect(acked.span.status?.code).toBe(1); // STATUS_CODE_OK
    expect(acked.span.kind).toBe(4); // SPAN_KIND_PRODUCER
    // Linked to the reconcile that made the version.
    const one = byCorrelation.get('corr-one')!;
    expect(acked.span.links).toEqual([expect.objectContaining({ traceId: one.traceId, spanId: one.spanId })]);
    expect(BigInt(acked.span.endTimeUnixNano) - BigInt(acked.span.startTimeUnixNano)).toBeGreaterThan(0n);

    const rejected = push('dp-ack@node-a', v2);
    expect(rejected.a).toMatchObject({ 'quiclb.result': 'nack', 'quiclb.nack.field': 'load_balancers[0].servers[1].server_id', 'quiclb.correlation_ids': ['corr-two'] });
    expect(rejected.span.status).toEqual({ code: 2, message: 'rejected: load_balancers[0].servers[1].server_id: duplicate server id' });
    const two = byCorrelation.get('corr-two')!;
    expect(rejected.span.links?.map((l) => l.spanId)).toEqual([two.spanId]);

    const timedOut = push('dp-silent@node-b', v2);
    expect(timedOut.a).toMatchObject({ 'quiclb.result': 'timeout', 'quiclb.dataplane.node': 'node-b' });
    expect(timedOut.span.status).toEqual({ code: 2, message: 'no answer within 400 ms' });
    const left = push('dp-gone@node-c', v2);
    expect(left.a['quiclb.result']).toBe('closed');
    expect(left.span.status?.code).toBe(2);
    expect(pushes).toHaveLength(4);

    // Keys never leave in a span (nor in the operator's log lines about tracing).
    const exported = receiver.bodies.join('\n') + lines.join('\n');
    for (const form of TEST_KEYS.flatMap(keyForms)) expect(exported).not.toContain(form);
    expect(lines.some((l) => l.includes('tracing: exporting spans over OTLP/HTTP'))).toBe(true);
  });
});

describe('a collector that fails', () => {
  const waitFor = async (pred: () => boolean, ms: number) => {
    const end = Date.now() + ms;
    while (!pred() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    return pred();
  };

  it('an export refused by the collector is logged (through OTel diagnostics, to pino), and tracing carries on', async () => {
    let requests = 0;
    const server = createServer((req, res) => {
      requests++;
      req.resume();
      req.on('end', () => res.writeHead(400, { 'content-type': 'application/json' }).end('{"message":"bad"}'));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const { logger, lines } = captureLogger('info');
    const t = await setupTracing({ endpoint: `http://127.0.0.1:${(server.address() as { port: number }).port}`, env: {}, logger, exportDelayMs: 50 });
    try {
      await withReconcileSpan('ns/lb', 'c1', async () => ({ kind: 'done' as const }));
      expect(await waitFor(() => requests > 0 && lines.some((l) => l.includes('"component":"otel"')), 5000)).toBe(true);
      const line = JSON.parse(lines.find((l) => l.includes('"component":"otel"'))!) as { level: number };
      expect(line.level).toBeGreaterThanOrEqual(40); // warn or error
      await expect(withReconcileSpan('ns/lb', 'c2', async () => ({ kind: 'done' as const }))).resolves.toEqual({ kind: 'done' });
    } finally {
      await t.shutdown();
      server.closeAllConnections();
      server.close();
    }
  });

  it('shutdown() gives up after its timeout when the collector never answers', async () => {
    const held: Array<() => void> = [];
    // Takes the request and answers only when the test ends (else the exporter's own 10 s timeout would outlive it).
    const server = createServer((req, res) => {
      req.resume();
      held.push(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const { logger, lines } = captureLogger('info');
    const t = await setupTracing({ endpoint: `http://127.0.0.1:${(server.address() as { port: number }).port}`, env: {}, logger, exportDelayMs: 60_000, shutdownTimeoutMs: 800 });
    try {
      await withReconcileSpan('ns/lb', 'c1', async () => ({ kind: 'done' as const }));
      const t0 = Date.now();
      await t.shutdown();
      const took = Date.now() - t0;
      expect(took).toBeGreaterThanOrEqual(700);
      expect(took).toBeLessThan(3000);
      expect(lines.some((l) => l.includes('tracing: gave up exporting the last spans'))).toBe(true);
      expect(held.length).toBeGreaterThan(0);
    } finally {
      for (const answer of held) answer();
      await new Promise((r) => setTimeout(r, 100));
      server.closeAllConnections();
      server.close();
    }
  });
});
