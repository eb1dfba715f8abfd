/**
 * What a data plane sends is bounded: undecodable bytes, a message above the size limit, too long strings, too many
 * entries, a second Hello. Each closes only the offending stream with a precise status; the server keeps serving
 * the others (which keep receiving new versions).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Client, status, type ServiceError } from '@grpc/grpc-js';
import { HealthVerdict, ProbeResult, StreamConfigRequest } from '../../proto/gen/quiclb/v1/distribution.js';
import { clientCredentials } from '../../proto/tls.js';
import { InMemorySnapshotSource } from '../../operator/config-server/source.js';
import { TestCa, type TlsDir } from '../helpers/tls.js';
import { makeLoadBalancer, startServer, TestDataPlane, type StartedServer, type StreamEnd } from './helpers.js';

let ca: TestCa;
let started: StartedServer;
let source: InMemorySnapshotSource;
let bystander: TestDataPlane;
let tls: Record<string, TlsDir>;
const open: TestDataPlane[] = [];
const rawClients: Client[] = [];

const MAX_MESSAGE = 64 * 1024;

beforeAll(async () => {
  ca = new TestCa();
  tls = Object.fromEntries(['bystander', 'raw', 'big', 'long', 'many', 'twice'].map((cn) => [cn, ca.issue({ cn, usage: 'client' })]));
  source = new InMemorySnapshotSource();
  source.publish({ all: [makeLoadBalancer('web')] });
  started = await startServer(source, ca.issue({ cn: 'quiclb-operator', usage: 'server' }), { limits: { maxMessageBytes: MAX_MESSAGE, maxHealthEntries: 10 } });
  bystander = TestDataPlane.withTls(started.address, tls.bystander);
  bystander.autoAck = true;
  bystander.hello();
  await bystander.waitFor(() => bystander.snapshots.length === 1);
});

afterAll(async () => {
  bystander.close();
  for (const c of open) c.close();
  for (const c of rawClients) c.close();
  await started.server.close(200);
  ca.remove();
});

/** Sends raw bytes as one gRPC message of StreamConfig (after a valid Hello) and returns how the stream ended. */
function sendRaw(cn: string, payloads: Buffer[]): Promise<StreamEnd & { received: number }> {
  const client = new Client(started.address, clientCredentials(tls[cn].dir));
  rawClients.push(client);
  const call = client.makeBidiStreamRequest('/quiclb.v1.DistributionService/StreamConfig', (b: Buffer) => b, (b: Buffer) => b);
  let received = 0;
  call.on('data', () => received++);
  for (const p of payloads) call.write(p);
  return new Promise((resolve) => {
    call.on('error', (e: ServiceError) => resolve({ code: e.code, details: e.details, received }));
    call.on('status', (s) => resolve({ code: s.code, details: s.details, received }));
  });
}

const hello = Buffer.from(
  StreamConfigRequest.encode({ message: { $case: 'hello', hello: { nodeName: 'n', podName: '', softwareVersion: '', capabilities: [], currentVersion: 0n, processStartTime: undefined } } }).finish(),
);

/** The bystander still receives (and acknowledges) the next version. */
async function bystanderStillServed() {
  const v = source.publish({ all: [makeLoadBalancer('web', { weight: Math.floor(Math.random() * 1000) })] });
  await started.server.waitForAck(v, 3000, ['bystander@node-a']);
}

describe('config server bad input', () => {
  it('undecodable bytes: INVALID_ARGUMENT naming the decode error', async () => {
    // Field 1 (hello), length-delimited, with a length far beyond the message.
    const end = await sendRaw('raw', [hello, Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01])]);
    expect(end.code).toBe(status.INVALID_ARGUMENT);
    expect(end.details).toMatch(/^malformed StreamConfigRequest: /);
    await bystanderStillServed();
  });

  it('a message above the size limit: RESOURCE_EXHAUSTED from grpc-js', async () => {
    const big = Buffer.from(
      StreamConfigRequest.encode({ message: { $case: 'nack', nack: { version: 1n, nonce: 'n', field: '', message: 'x'.repeat(MAX_MESSAGE + 10) } } }).finish(),
    );
    const end = await sendRaw('big', [hello, big]);
    expect(end.code).toBe(status.RESOURCE_EXHAUSTED);
    await bystanderStillServed();
  });

  it('a too long Hello field: INVALID_ARGUMENT naming the field and the bound', async () => {
    const dp = TestDataPlane.withTls(started.address, tls.long);
    open.push(dp);
    dp.hello('n'.repeat(300));
    expect(await dp.waitForEnd()).toEqual({ code: status.INVALID_ARGUMENT, details: 'hello.node_name: at most 253 characters, got 300' });
    expect(dp.snapshots).toHaveLength(0);
    await bystanderStillServed();
  });

  it('too many health entries: INVALID_ARGUMENT, nothing recorded', async () => {
    const dp = TestDataPlane.withTls(started.address, tls.many);
    open.push(dp);
    dp.hello();
    await dp.waitFor(() => dp.snapshots.length === 1);
    const entry = { loadBalancer: 'web', server: 'web-server-0', state: HealthVerdict.HEALTH_VERDICT_HEALTHY, lastResult: ProbeResult.PROBE_RESULT_SUCCESS, lastProbeTime: undefined, consecutiveFailures: 0, lastRtt: undefined, lastError: '' };
    dp.send({ message: { $case: 'health', health: { backends: Array.from({ length: 11 }, () => entry) } } });
    expect(await dp.waitForEnd()).toEqual({ code: status.INVALID_ARGUMENT, details: 'health.backends: at most 10 entries, got 11' });
    expect(started.server.dataPlane('many@node-a')).toMatchObject({ connected: false, health: [] });
    await bystanderStillServed();
  });

  it('an empty message or a second Hello closes the stream', async () => {
    const empty = await sendRaw('raw', [hello, Buffer.alloc(0)]);
    expect(empty).toMatchObject({ code: status.INVALID_ARGUMENT, details: 'message: no message set (expected hello, ack, nack, health or counters)' });
    const dp = TestDataPlane.withTls(started.address, tls.twice);
    open.push(dp);
    dp.hello();
    dp.hello();
    expect(await dp.waitForEnd()).toEqual({ code: status.FAILED_PRECONDITION, details: 'hello was already sent on this stream' });
    await bystanderStillServed();
    expect(bystander.ended).toBeNull();
    const refused = await started.registry.getSingleMetricAsString('quiclb_config_server_streams_refused_total');
    expect(refused).toMatch(/reason="invalid_message"\} [4-9]/);
  });
});
