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
});
