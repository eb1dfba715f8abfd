/**
 * The node agent against the real config server (operator/config-server) over mTLS, in this process: a config
 * server that has nothing for this data plane yet still counts as reached once it accepted the Hello (the agent
 * is connected and sends its health reports, which the server keeps until its first push); agents sharing one
 * client certificate (as the Helm chart's DaemonSet does) on different nodes stay connected side by side.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { pino } from 'pino';
import { runAgent, type AgentHandle } from '../../dataplane/agent/agent.js';
import { InMemorySnapshotSource } from '../../operator/config-server/source.js';
import { TestCa } from '../helpers/tls.js';
import { startServer, type StartedServer } from '../config-server/helpers.js';
import { waitFor } from '../dataplane/helpers.js';

let ca: TestCa;
let started: StartedServer;
const agents: AgentHandle[] = [];
const source = new InMemorySnapshotSource();

beforeAll(async () => {
  ca = new TestCa();
  started = await startServer(source, ca.issue({ cn: 'quiclb-operator', usage: 'server' }));
});

afterAll(async () => {
  for (const a of agents) await a.stop();
  await started?.server.close(200);
  ca?.remove();
});

describe('quiclb dataplane agent and the config server', () => {
  it('is connected as soon as the server accepted its Hello, before any snapshot', async () => {
    const agent = await runAgent({
      operator: started.address,
      tlsDir: ca.issue({ cn: 'dp-first', usage: 'client' }).dir,
      nodeName: 'node-first',
      metricsPort: null,
      logger: pino({ level: 'silent' }),
      backoff: { initialMs: 50, maxMs: 300 },
    });
    agents.push(agent);
    expect(await waitFor(() => started.server.dataPlane('dp-first@node-first')?.connected === true, 10_000)).toBe(true);
    expect(await waitFor(() => agent!.operator.connected, 5_000)).toBe(true);
    expect(agent.readiness().detail.join('\n')).toMatch(/connected for \d+s/);
    expect(agent.operator.attempts).toBe(1);
  });

  it('agents sharing one certificate on different nodes both stay connected and apply every version, none replaced', async () => {
    const shared = ca.issue({ cn: 'quiclb-dataplane', usage: 'client' }).dir;
    const start = (nodeName: string) =>
      runAgent({ operator: started.address, tlsDir: shared, nodeName, metricsPort: null, logger: pino({ level: 'silent' }), backoff: { initialMs: 50, maxMs: 300 } });
    const pair = [await start('node-a'), await start('node-b')];
    agents.push(...pair);
    const ids = ['quiclb-dataplane@node-a', 'quiclb-dataplane@node-b'];
    const connects = () => started.lines.filter((l) => l.includes('"msg":"data plane connected"') && l.includes('"certificate":"quiclb-dataplane"')).length;
    const versions: number[] = [];
    const end = Date.now() + 3000;
    for (let i = 0; Date.now() < end; i++) {
      const v = source.publish({ all: [] }); // serve nothing: every version is applied without binding a port
      versions.push(v);
      expect(await waitFor(() => pair.every((a) => a.versionInForce() === v), 5000)).toBe(true);
      await sleep(250);
    }
    expect(versions.length).toBeGreaterThanOrEqual(8);
    // One connect each, no reconnect: before identities included the node, they replaced each other ~4 times a second.
    expect(connects()).toBe(2);
    await started.server.waitForAck(versions[versions.length - 1], 5000, ids);
    expect(pair.map((a) => [a.operator.connected, a.operator.attempts])).toEqual([
      [true, 1],
      [true, 1],
    ]);
    const views = started.server.dataPlanes().filter((d) => d.certificateName === 'quiclb-dataplane');
    expect(views.map((d) => [d.identity, d.connected]).sort()).toEqual([
      [ids[0], true],
      [ids[1], true],
    ]);
  });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
