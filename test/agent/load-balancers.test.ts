/**
 * LoadBalancerSet (the agent's all-or-nothing apply): the health map an engine reads for (re)started worker
 * processes holds only the servers of the snapshot in force. In Kubernetes servers are pods, so a map that kept
 * every server ever seen would grow with every rollout and ride along to every restarted worker.
 */
import { afterAll, describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { InProcessEngine } from '../../dataplane/agent/engines.js';
import { LoadBalancerSet } from '../../dataplane/agent/load-balancers.js';
import type { HealthState } from '../../dataplane/router.js';
import { config, server, snapshot } from '../dataplane/helpers.js';
import { freeUdpPort } from './fake-operator.js';
import { repoRoot } from '../helpers/run-cli.js';
import { runPortSwap, type SwapResult } from './port-swap.js';

const logger = pino({ level: 'silent' });
const registry = new Registry();
const given = new Map<string, ReadonlyMap<string, HealthState>>();
/** An engine whose stop() fails after stopping (a worker pool that cannot reap a process, say). */
class FailingStop extends InProcessEngine {
  override async stop() {
    await super.stop();
    throw new Error('stop failed');
  }
}
const lbs = new LoadBalancerSet({
  makeEngine: (name, health) => {
    given.set(name, health);
    return name === 'beta' ? new FailingStop(logger, registry) : new InProcessEngine(logger, registry);
  },
  logger,
  registry,
  followVerdicts: () => true,
});
afterAll(() => lbs.stopAll());

describe('LoadBalancerSet', () => {
  it("gives each engine the health of its snapshot's servers only, servers that left dropped", async () => {
    const port = await freeUdpPort();
    const lb = (...names: string[]) =>
      snapshot(
        names.map((n, i) => server(n, (i + 1).toString(16).padStart(4, '0'), '127.0.0.1', 9, { verdict: 'unhealthy' })),
        { name: 'alpha', listen: [{ host: '127.0.0.1', port, family: 4 }], configs: [{ config: config(), state: 'active' }] },
      );
    expect(await lbs.apply([lb('pod-1', 'pod-2')])).toBeNull();
    expect(Object.fromEntries(given.get('alpha')!)).toEqual({ 'pod-1': 'unhealthy', 'pod-2': 'unhealthy' });
    expect(await lbs.apply([lb('pod-2', 'pod-3')])).toBeNull();
    expect([...given.get('alpha')!.keys()].sort()).toEqual(['pod-2', 'pod-3']);
  });

  it('a removed load balancer whose stop fails is still removed, and the snapshot is in force', async () => {
    const port = await freeUdpPort();
    const beta = snapshot([server('b', '0002', '127.0.0.1', 9)], { name: 'beta', listen: [{ host: '127.0.0.1', port, family: 4 }], configs: [{ config: config(), state: 'active' }] });
    const alpha = lbs.get('alpha')!.snapshot;
    expect(await lbs.apply([alpha, beta])).toBeNull();
    expect(lbs.list().map((l) => l.name)).toEqual(['alpha', 'beta']);
    expect(await lbs.apply([alpha])).toBeNull();
    expect(lbs.list().map((l) => l.name)).toEqual(['alpha']);
  });
});

/** Both engines: the swap is accepted; a refused swap-back leaves each load balancer serving the ports it had. */
function expectSwap(r: SwapResult): void {
  expect(r.initial).toBeNull();
  expect(r.swap).toBeNull();
  expect(r.afterSwap).toEqual({ P: ['y'], Q: ['x'] });
  expect(r.failed?.field).toBe('load_balancers[2].listen[1]');
  expect(r.failed?.message).toMatch(/cannot listen on 127\.0\.0\.1:\d+: /);
  expect(r.afterFailure).toEqual({ x: [2], y: [1], P: ['y'], Q: ['x'] }); // 1 = P, 2 = Q
  expect(r.again).toBeNull();
  expect(r.afterAgain).toEqual({ P: ['x'], Q: ['y'] });
  // X released P, then its own apply failed: its restore() alone brings P back.
  expect(r.releaserFails).toEqual({ field: 'load_balancers[0].listen[0]', P: ['x'], Q: ['y'] });
}

describe('LoadBalancerSet: ports moved between running load balancers', () => {
  it('in process: two load balancers swap ports; a swap whose later step fails is rolled back, each serving its ports again', async () => {
    const set = new LoadBalancerSet({ makeEngine: () => new InProcessEngine(logger, new Registry()), logger, registry: new Registry(), followVerdicts: () => true });
    try {
      expectSwap(await runPortSwap(set));
    } finally {
      await set.stopAll();
    }
  }, 30_000);

  it('with worker processes: the same', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/agent/port-swap-workers.script.ts'], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 90_000,
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    let out: SwapResult;
    try {
      out = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '') as SwapResult;
    } catch {
      throw new Error(`script failed (status ${r.status}, signal ${r.signal}):\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-3000)}`);
    }
    expectSwap(out);
  }, 100_000);
});
