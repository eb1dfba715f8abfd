/**
 * Latest wins: a data plane that stops reading while 50 versions are published delays no one (the others
 * acknowledge every version promptly), and when it resumes it receives the newest version, not a backlog (its
 * unanswered first push holds the others back).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { InMemorySnapshotSource } from '../../operator/config-server/source.js';
import { TestCa, type TlsDir } from '../helpers/tls.js';
import { makeLoadBalancer, sleep, startServer, TestDataPlane, type LoadBalancerOptions, type StartedServer } from './helpers.js';

const NORMAL = ['dp-0', 'dp-1', 'dp-2', 'dp-3', 'dp-4'];

let ca: TestCa;
let serverTls: TlsDir;
let tls: Record<string, TlsDir>;
const open: TestDataPlane[] = [];
const servers: StartedServer[] = [];

beforeAll(() => {
  ca = new TestCa();
  serverTls = ca.issue({ cn: 'quiclb-operator', usage: 'server' });
  tls = Object.fromEntries([...NORMAL, 'stalled'].map((cn) => [cn, ca.issue({ cn, usage: 'client' })]));
});

afterAll(async () => {
  for (const c of open) c.close();
  for (const s of servers) await s.server.close(200);
  ca.remove();
});

async function scenario(versions: number, lb: LoadBalancerOptions, answerTimeoutMs: number) {
  const source = new InMemorySnapshotSource();
  const started = await startServer(source, serverTls, { answerTimeoutMs });
  servers.push(started);
  const publish = (i: number) => source.publish({ all: [makeLoadBalancer('web', { ...lb, weight: i + 1 })] });
  const v1 = publish(0);
  const normal = NORMAL.map((cn) => {
    const dp = TestDataPlane.withTls(started.address, tls[cn]);
    dp.autoAck = true;
    dp.hello(cn);
    open.push(dp);
    return dp;
  });
  await started.server.waitForAck(v1, 5000, NORMAL);
  const stalled = TestDataPlane.withTls(started.address, tls.stalled);
  open.push(stalled);
  stalled.pause();
  stalled.hello('stalled');
  // The stalled data plane's Hello is in, and its first push is written (its bytes wait in buffers).
  const deadline = Date.now() + 5000;
  while (started.server.dataPlane('stalled')?.lastSent?.version !== v1 && Date.now() < deadline) await sleep(20);
  expect(started.server.dataPlane('stalled')?.lastSent?.version).toBe(v1);

  let slowest = 0;
  let last = v1;
  for (let i = 1; i < versions; i++) {
    last = publish(i);
    const t0 = Date.now();
    await started.server.waitForAck(last, 2000, NORMAL);
    slowest = Math.max(slowest, Date.now() - t0);
    await sleep(10);
  }
  expect(normal.every((dp) => dp.last!.version === BigInt(last))).toBe(true);
  // Let the stall outlast the answer timeout (when it is short) before the data plane reads again.
  if (answerTimeoutMs < 5000) await sleep(answerTimeoutMs * 3);
  const pushedDuringStall = started.server.dataPlane('stalled')!.lastSent!.version;

  stalled.autoAck = true;
  stalled.resume();
  await stalled.waitForVersion(last, 10_000);
  await started.server.waitForAck(last, 5000, ['stalled']);
  return { slowest, received: stalled.snapshots.map((s) => Number(s.version)), v1, last, pushedDuringStall };
}

describe('config server latest-wins', () => {
  it('a data plane that stops reading gets the newest version when it resumes, and delays no one (small snapshots)', async () => {
    const r = await scenario(50, { servers: 3 }, 30_000);
    expect(r.slowest).toBeLessThan(1000);
    // Its unanswered first push held everything back: nothing else was pushed while it did not read.
    expect(r.pushedDuringStall).toBe(r.v1);
    expect(r.received).toEqual([r.v1, r.last]);
  }, 60_000);

});
