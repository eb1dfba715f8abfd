/**
 * 200 concurrent data-plane streams (in-process grpc-js clients, each with its own certificate and connection) all
 * acknowledge each new version, while one more data plane has stopped reading: it delays none of them. Bounded in
 * time: each version must be acknowledged by all 200 within 10 s (measured: well under a second).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { InMemorySnapshotSource } from '../../operator/config-server/source.js';
import { TestCa, type TlsDir } from '../helpers/tls.js';
import { issueClients, makeLoadBalancer, sleep, startServer, TestDataPlane, type StartedServer } from './helpers.js';

const STREAMS = 200;
const VERSIONS = 4;

let ca: TestCa;
let tls: TlsDir[];
let started: StartedServer;
const source = new InMemorySnapshotSource();
const open: TestDataPlane[] = [];

beforeAll(async () => {
  ca = new TestCa();
  tls = await issueClients(ca, [...Array.from({ length: STREAMS }, (_, i) => `dp-${i}`), 'stalled']);
  started = await startServer(source, ca.issue({ cn: 'quiclb-operator', usage: 'server' }));
}, 60_000);

afterAll(async () => {
  for (const c of open) c.close();
  await started.server.close(200);
  ca.remove();
});

describe('config server at scale', () => {
  it(`${STREAMS} streams all ACK each of ${VERSIONS} versions; a stalled one delays none`, async () => {
    const ids = Array.from({ length: STREAMS }, (_, i) => `dp-${i}`);
    const publish = (i: number) => source.publish({ all: [makeLoadBalancer('web', { servers: 20, weight: i + 1 }), makeLoadBalancer('api', { servers: 20, port: 5433, keyIndex: 1 })] });
    const v0 = publish(0);
    const stalled = TestDataPlane.withTls(started.address, tls[STREAMS]);
    open.push(stalled);
    stalled.pause();
    stalled.hello('stalled');
    for (let i = 0; i < STREAMS; i++) {
      const dp = TestDataPlane.withTls(started.address, tls[i]);
      dp.autoAck = true;
      dp.hello(`node-${i}`);
      open.push(dp);
    }
    await started.server.waitForAck(v0, 30_000, ids.map((cn, i) => `${cn}@node-${i}`));
    expect(started.server.dataPlanes().filter((d) => d.connected)).toHaveLength(STREAMS + 1);

    const latencies: number[] = [];
    for (let i = 1; i <= VERSIONS; i++) {
      const t0 = performance.now();
      const v = publish(i);
      await started.server.waitForAck(v, 10_000, ids.map((cn, i) => `${cn}@node-${i}`));
      latencies.push(Math.round(performance.now() - t0));
      await sleep(50);
    }
    expect(Math.max(...latencies)).toBeLessThan(10_000);
    // The stalled one still has only its first push, and nobody waited for it.
    expect(started.server.dataPlane('stalled@stalled')).toMatchObject({ connected: true, appliedVersion: null, lastSent: { version: v0 } });
    expect(open.filter((dp) => dp.ended !== null)).toHaveLength(0);
  }, 90_000);
});
