/**
 * A rollback step that fails in the middle of a port swap (dataplane/agent/load-balancers.ts): X (port P) and Y
 * (port Q) swap ports, Z's step fails; in the rollback, X's apply of its previous snapshot fails too. Before, X's
 * snapshot was set to the previous one anyway and the undo of its release (restore()) bound every unbound address
 * of what X ran ([Q], whose release was the rollback's): Q taken twice (in process: EADDRINUSE), P dark, and the
 * set believed X served P. Now X's engine is restarted from its previous snapshot and restore() binds only what
 * its release closed; if the restart fails too, X is dropped and the set is inconsistent until an apply succeeds.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { InProcessEngine } from '../../dataplane/agent/engines.js';
import { LoadBalancerSet } from '../../dataplane/agent/load-balancers.js';
import type { DataplaneSnapshot, SocketAddress } from '../../lib/config/snapshot.js';
import { mintUnroutableCid } from '../../lib/quiclb/encoder.js';
import { Client, config, server, shortPacket, snapshot, TaggingBackend } from '../dataplane/helpers.js';
import { freeUdpPort } from './fake-operator.js';

const logger = pino({ level: 'silent' });
const addr = (port: number): SocketAddress => ({ host: '127.0.0.1', port, family: 4 });
/** Armed per load balancer name: its next apply() of a snapshot listing this port fails; its next start() fails. */
const failApplyWith = new Map<string, number>();
const failStart = new Set<string>();
class Flaky extends InProcessEngine {
  constructor(private readonly name: string) {
    super(logger, new Registry());
  }
  override async apply(s: DataplaneSnapshot) {
    const port = failApplyWith.get(this.name);
    if (port !== undefined && s.listen.some((a) => a.port === port)) {
      failApplyWith.delete(this.name);
      throw new Error('apply failed (test)');
    }
    return super.apply(s);
  }
  override async start(s: DataplaneSnapshot) {
    if (failStart.delete(this.name)) throw new Error('start failed (test)');
    return super.start(s);
  }
}

let backends: TaggingBackend[] = [];
const foreign = createSocket('udp4');
beforeAll(async () => {
  backends = await Promise.all(['x', 'y', 'z'].map((n) => TaggingBackend.start(n)));
  foreign.bind({ port: 0, address: '127.0.0.1', exclusive: true });
  await once(foreign, 'listening');
});
afterAll(async () => {
  await new Promise<void>((r) => foreign.close(() => r()));
  for (const b of backends) await b.close();
});

const answers = async (port: number): Promise<string[]> => {
  const names = new Set<string>();
  for (let i = 0; i < 6; i++) {
    const c = await Client.open();
    names.add((await c.request(shortPacket(mintUnroutableCid(8)), port, '127.0.0.1', 1000)) ?? 'none');
    await c.close();
  }
  return [...names].sort();
};

describe('LoadBalancerSet: a rollback step that fails during a port swap', () => {
  it("restarts the load balancer whose rollback apply failed, from its previous snapshot; restore() binds only what its release closed; a failed restart leaves the set inconsistent until an apply succeeds", async () => {
    const set = new LoadBalancerSet({ makeEngine: (name) => new Flaky(name), logger, registry: new Registry(), followVerdicts: () => true });
    try {
      const [P, Q, R] = [await freeUdpPort(), await freeUdpPort(), await freeUdpPort()];
      const lb = (name: string, i: number, ports: number[]): DataplaneSnapshot =>
        snapshot([server(`${name}-server`, `000${i + 1}`, '127.0.0.1', backends[i].port)], { name, listen: ports.map(addr), configs: [{ config: config(), state: 'active' }] });
      const initial = () => [lb('x', 0, [P]), lb('y', 1, [Q]), lb('z', 2, [R])];
      const failingSwap = () => [lb('x', 0, [Q]), lb('y', 1, [P]), lb('z', 2, [R, foreign.address().port])];
      const ports = (name: string) => set.get(name)?.snapshot.listen.map((a) => a.port) ?? null;
      expect(await set.apply(initial())).toBeNull();

      failApplyWith.set('x', P); // X's rollback to [P] fails
      expect(await set.apply(failingSwap())).not.toBeNull();
      expect(failApplyWith.has('x')).toBe(false);
      expect(ports('x')).toEqual([P]);
      expect(ports('y')).toEqual([Q]);
      expect(await answers(P)).toEqual(['x']);
      expect(await answers(Q)).toEqual(['y']);
      expect(set.consistent).toBe(true);

      // The restart fails too: X is dropped, and the set asks for the next snapshot even if it is the same.
      failApplyWith.set('x', P);
      failStart.add('x');
      expect(await set.apply(failingSwap())).not.toBeNull();
      expect(set.consistent).toBe(false);
      expect(set.get('x')).toBeUndefined();
      expect(await answers(Q)).toEqual(['y']);
      expect(await set.apply(initial())).toBeNull();
      expect(set.consistent).toBe(true);
      expect(ports('x')).toEqual([P]);
      expect(await answers(P)).toEqual(['x']);
      expect(await answers(Q)).toEqual(['y']);
    } finally {
      await set.stopAll();
    }
  }, 60_000);
});
