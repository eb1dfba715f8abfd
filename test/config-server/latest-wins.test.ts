/**
 * Latest wins: a data plane that stops reading while 50 versions are published delays no one (the others
 * acknowledge every version promptly), and when it resumes it receives the newest version, not a backlog: with a
 * paused grpc-js stream (its unanswered first push holds the others back), and with a frozen process (SIGSTOP: it
 * stops reading at the socket) and snapshots larger than the HTTP/2 window, past the answer timeout (the push stuck
 * in the transport holds the others back).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { repoRoot } from '../helpers/run-cli.js';
import { snapshotToWire } from '../../proto/convert.js';
import { Snapshot } from '../../proto/gen/quiclb/v1/distribution.js';
import { dataPlaneIdentity } from '../../operator/config-server/identity.js';
import { InMemorySnapshotSource } from '../../operator/config-server/source.js';
import { TestCa, type TlsDir } from '../helpers/tls.js';
import { makeLoadBalancer, sleep, startServer, TestDataPlane, type LoadBalancerOptions, type StartedServer } from './helpers.js';

const NORMAL = ['dp-0', 'dp-1', 'dp-2', 'dp-3', 'dp-4'];
/** The identity of the data plane with certificate `cn`: each Hello names its CN as node, the separate process 'separate-process'. */
const id = (cn: string) => dataPlaneIdentity(cn, cn === 'frozen' ? 'separate-process' : cn);

let ca: TestCa;
let serverTls: TlsDir;
let tls: Record<string, TlsDir>;
const open: TestDataPlane[] = [];
const servers: StartedServer[] = [];

beforeAll(() => {
  ca = new TestCa();
  serverTls = ca.issue({ cn: 'quiclb-operator', usage: 'server' });
  tls = Object.fromEntries([...NORMAL, 'stalled', 'frozen'].map((cn) => [cn, ca.issue({ cn, usage: 'client' })]));
});

const children: ChildProcess[] = [];

afterAll(async () => {
  for (const c of children) {
    if (c.exitCode === null && c.pid) {
      process.kill(c.pid, 'SIGCONT');
      process.kill(c.pid, 'SIGKILL');
    }
  }
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
  await started.server.waitForAck(v1, 5000, NORMAL.map(id));
  const stalled = TestDataPlane.withTls(started.address, tls.stalled);
  open.push(stalled);
  stalled.pause();
  stalled.hello('stalled');
  // The stalled data plane's Hello is in, and its first push is written (its bytes wait in buffers).
  const deadline = Date.now() + 5000;
  while (started.server.dataPlane(id('stalled'))?.lastSent?.version !== v1 && Date.now() < deadline) await sleep(20);
  expect(started.server.dataPlane(id('stalled'))?.lastSent?.version).toBe(v1);

  let slowest = 0;
  let last = v1;
  for (let i = 1; i < versions; i++) {
    last = publish(i);
    const t0 = Date.now();
    await started.server.waitForAck(last, 2000, NORMAL.map(id));
    slowest = Math.max(slowest, Date.now() - t0);
    await sleep(10);
  }
  expect(normal.every((dp) => dp.last!.version === BigInt(last))).toBe(true);
  // Let the stall outlast the answer timeout (when it is short) before the data plane reads again.
  if (answerTimeoutMs < 5000) await sleep(answerTimeoutMs * 3);
  const pushedDuringStall = started.server.dataPlane(id('stalled'))!.lastSent!.version;

  stalled.autoAck = true;
  stalled.resume();
  await stalled.waitForVersion(last, 10_000);
  await started.server.waitForAck(last, 5000, [id('stalled')]);
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


  it('a frozen data-plane process (SIGSTOP) with snapshots larger than the HTTP/2 window: one push in the pipe, then the newest', async () => {
    const lb = { servers: 3000, namePadding: 60 };
    const size = Snapshot.encode(snapshotToWire(1, 'n', [makeLoadBalancer('web', lb)])).finish().length;
    expect(size).toBeGreaterThan(256 * 1024);
    const answerTimeoutMs = 200;
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
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/config-server/data-plane-client.script.ts', started.address, tls.frozen.dir], {
      cwd: repoRoot,
      env: { ...process.env, NODE_OPTIONS: '' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(child);
    const received: number[] = [];
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const l of lines) received.push(Number((JSON.parse(l) as { version: string }).version));
    });
    await started.server.waitForAck(v1, 20_000, [...NORMAL, 'frozen'].map(id));
    process.kill(child.pid!, 'SIGSTOP');

    const v2 = publish(1);
    let last = v2;
    let slowest = 0;
    for (let i = 2; i < 20; i++) {
      await sleep(answerTimeoutMs / 2);
      last = publish(i);
      const t0 = Date.now();
      await started.server.waitForAck(last, 5000, NORMAL.map(id));
      slowest = Math.max(slowest, Date.now() - t0);
    }
    await sleep(answerTimeoutMs * 3);
    // Every answer timeout has passed, yet nothing followed v2: its write is still held by HTTP/2 flow control.
    expect(started.server.dataPlane(id('frozen'))!.lastSent!.version).toBe(v2);
    expect(slowest).toBeLessThan(3000);
    expect(normal.every((dp) => dp.last!.version === BigInt(last))).toBe(true);

    process.kill(child.pid!, 'SIGCONT');
    await started.server.waitForAck(last, 20_000, [id('frozen')]);
    expect(received).toEqual([v1, v2, last]);
  }, 90_000);
});
