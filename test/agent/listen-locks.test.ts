/**
 * The node agent takes the listen-address locks (dataplane/listen-lock.ts) as standalone does: a second instance
 * whose data plane binds with SO_REUSEPORT (worker processes) would otherwise join a port another instance serves
 * and silently take part of its flows. Two LoadBalancerSets in one process stand for two agents (locks of this
 * process exclude each other too); their engines bind with SO_REUSEPORT as WorkerEngine's processes do.
 */
import { afterAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { InProcessEngine } from '../../dataplane/agent/engines.js';
import { LoadBalancerSet } from '../../dataplane/agent/load-balancers.js';
import { Dataplane } from '../../dataplane/dataplane.js';
import { ListenLocks } from '../../dataplane/listen-lock.js';
import { config, server, snapshot } from '../dataplane/helpers.js';
import { freeUdpPort } from './fake-operator.js';

const logger = pino({ level: 'silent' });
const dir = mkdtempSync(join(tmpdir(), 'quiclb-agent-locks-'));

class ReusePortEngine extends InProcessEngine {
  override readonly dataplane = new Dataplane({ logger, registry: new Registry(), healthChecks: false, reusePort: true });
}

const agent = () =>
  new LoadBalancerSet({ makeEngine: () => new ReusePortEngine(logger, new Registry()), logger, registry: new Registry(), followVerdicts: () => false, listenLocks: new ListenLocks(dir) });
const first = agent();
const second = agent();
afterAll(async () => {
  await first.stopAll();
  await second.stopAll();
  rmSync(dir, { recursive: true, force: true });
});

const lb = (name: string, ...ports: number[]) =>
  snapshot([server('a', '0001', '127.0.0.1', 9)], { name, listen: ports.map((port) => ({ host: '127.0.0.1', port, family: 4 as const })), configs: [{ config: config(), state: 'active' }] });

describe('node agent: listen-address locks', () => {
  it('a second agent refuses a snapshot with an address the first serves (wire path of the listen entry), then gets it once freed', async () => {
    const [p, q, r] = [await freeUdpPort(), await freeUdpPort(), await freeUdpPort()];
    expect(await first.apply([lb('alpha', p)])).toBeNull();

    const refused = await second.apply([lb('other', r), lb('beta', q, p)]);
    expect(refused).toEqual({ field: 'load_balancers[1].listen[1]', message: expect.stringMatching(/^127\.0\.0\.1:\d+ is already served by another quiclb instance/) });
    expect(second.list()).toEqual([]);
    // the refused snapshot left no lock behind: a third address of it is free for the first agent
    expect(await first.apply([lb('alpha', p), lb('gamma', r)])).toBeNull();

    // the first agent moves off p: its lock goes with it, and the second agent may take p
    expect(await first.apply([lb('alpha', q)])).toBeNull();
    const refusedQ = await second.apply([lb('beta', p, q)]);
    expect(refusedQ?.field).toBe('load_balancers[0].listen[1]');
    expect(await second.apply([lb('beta', p)])).toBeNull();
    expect(second.get('beta')!.engine.addresses().map((a) => a.port)).toEqual([p]);

    // stopping releases every lock
    await first.stopAll();
    expect(await second.apply([lb('beta', p, q)])).toBeNull();
  });
});
