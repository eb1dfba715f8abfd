/**
 * The node agent against the real config server (operator/config-server) over mTLS, in this process: a config
 * server that has nothing for this data plane yet still counts as reached once it accepted the Hello (the agent
 * is connected and sends its health reports, which the server keeps until its first push).
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
let agent: AgentHandle | undefined;
const source = new InMemorySnapshotSource();

beforeAll(async () => {
  ca = new TestCa();
  started = await startServer(source, ca.issue({ cn: 'quiclb-operator', usage: 'server' }));
});

afterAll(async () => {
  await agent?.stop();
  await started?.server.close(200);
  ca?.remove();
});

describe('quiclb dataplane agent and the config server', () => {
  it('is connected as soon as the server accepted its Hello, before any snapshot', async () => {
    agent = await runAgent({
      operator: started.address,
      tlsDir: ca.issue({ cn: 'node-a', usage: 'client' }).dir,
      metricsPort: null,
      logger: pino({ level: 'silent' }),
      backoff: { initialMs: 50, maxMs: 300 },
    });
    expect(await waitFor(() => started.server.dataPlane('node-a')?.connected === true, 10_000)).toBe(true);
    expect(await waitFor(() => agent!.operator.connected, 5_000)).toBe(true);
    expect(agent.readiness().detail.join('\n')).toMatch(/connected for \d+s/);
    expect(agent.operator.attempts).toBe(1);
  });
});
