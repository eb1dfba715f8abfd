/**
 * The node agent (in this process) with --state-dir against a real mTLS DistributionService server: a snapshot
 * restored from the state directory that the operator then sends again unchanged is, from then on, the operator's
 * (as /readyz says), not "restored".
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { makeConfig } from '../../lib/quiclb/config.js';
import { snapshotToWire } from '../../proto/convert.js';
import { runAgent, type AgentHandle } from '../../dataplane/agent/agent.js';
import { SnapshotStore } from '../../dataplane/agent/state-store.js';
import { TestCa } from '../helpers/tls.js';
import { KEY, server, snapshot, waitFor } from '../dataplane/helpers.js';
import { FakeOperator, freeUdpPort } from './fake-operator.js';

let ca: TestCa;
let op: FakeOperator;
let agent: AgentHandle | undefined;
let dir: string;

beforeAll(async () => {
  ca = new TestCa();
  dir = mkdtempSync(join(tmpdir(), 'quiclb-state-dir-'));
  op = await FakeOperator.start(ca.issue({ cn: 'quiclb-operator', usage: 'server' }).dir);
});

afterAll(async () => {
  await agent?.stop();
  op?.stop();
  ca?.remove();
  rmSync(dir, { recursive: true, force: true });
});

describe('quiclb dataplane agent with --state-dir', () => {
  it('a restored snapshot that the operator sends again unchanged is then shown as the operator\'s', async () => {
    const port = await freeUdpPort();
    const lbs = [
      snapshot([server('a', '0001', '127.0.0.1', 9)], {
        name: 'alpha',
        listen: [{ host: '127.0.0.1', port, family: 4 }],
        configs: [{ config: makeConfig({ configId: 0, serverIdLength: 2, nonceLength: 6, key: KEY }), state: 'active' }],
      }),
    ];
    new SnapshotStore(dir).save(snapshotToWire(7, 'saved', lbs));
    op.pushWire(snapshotToWire(7, 'again', lbs)); // what the operator sends on connect
    agent = await runAgent({
      operator: `localhost:${op.port}`,
      tlsDir: ca.issue({ cn: 'node-a', usage: 'client' }).dir,
      stateDir: dir,
      metricsPort: null,
      logger: pino({ level: 'silent' }),
      backoff: { initialMs: 50, maxMs: 300 },
    });
    expect(agent.versionInForce()).toBe(7);
    expect(await waitFor(() => op.acks().some((x) => x.nonce === 'again'), 10_000)).toBe(true);
    const detail = agent.readiness().detail.join('\n');
    expect(detail).toMatch(/snapshot version 7 in force \(from the operator\)/);
    expect(detail).not.toMatch(/restored/);
  });

  it('saves the snapshot put in force: the load balancers sent plus the retained ones (a restart keeps them too)', async () => {
    const [p1, p2] = [await freeUdpPort(), await freeUdpPort()];
    const cfg = [{ config: makeConfig({ configId: 0, serverIdLength: 2, nonceLength: 6, key: KEY }), state: 'active' as const }];
    const alpha = snapshot([server('a', '0001', '127.0.0.1', 9)], { name: 'alpha', listen: [{ host: '127.0.0.1', port: p1, family: 4 }], configs: cfg });
    const beta = snapshot([server('b', '0002', '127.0.0.1', 9)], { name: 'beta', listen: [{ host: '127.0.0.1', port: p2, family: 4 }], configs: cfg });
    op.pushWire(snapshotToWire(8, 'both', [alpha, beta]));
    expect(await waitFor(() => op.acks().some((x) => x.nonce === 'both'), 10_000)).toBe(true);
    op.pushWire(snapshotToWire(9, 'retaining', [beta], new Date(), ['alpha']));
    expect(await waitFor(() => op.acks().some((x) => x.nonce === 'retaining'), 10_000)).toBe(true);
    const saved = new SnapshotStore(dir).load()!;
    expect(saved.version).toBe(9n);
    expect(saved.retained).toEqual([]);
    expect(saved.loadBalancers.map((l) => l.name).sort()).toEqual(['alpha', 'beta']);
    // A restart from it serves both.
    await agent!.stop();
    op.stop();
    agent = await runAgent({
      operator: '127.0.0.1:1',
      tlsDir: ca.issue({ cn: 'node-a', usage: 'client' }).dir,
      stateDir: dir,
      metricsPort: null,
      logger: pino({ level: 'silent' }),
      backoff: { initialMs: 50, maxMs: 300 },
    });
    expect(agent.versionInForce()).toBe(9);
    expect(agent.loadBalancers.list().map((l) => l.name).sort()).toEqual(['alpha', 'beta']);
  });
});
