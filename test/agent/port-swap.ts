/**
 * Ports moved between running load balancers (LoadBalancerSet.apply, LbEngine.release): shared by the in-process
 * test (load-balancers.test.ts) and the worker-process script (port-swap-workers.script.ts).
 * X listens on P, Y on Q, Z on R; then X and Y swap P and Q (accepted), then they swap back while Z also asks for a
 * port a foreign socket holds (refused: X and Y must serve their ports as before). Last X hands P to Y and moves to
 * the foreign socket's port (refused at X's own apply, after X released P: only X's restore() binds P again).
 */
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import type { DataplaneSnapshot, SocketAddress } from '../../lib/config/snapshot.js';
import { mintUnroutableCid } from '../../lib/quiclb/encoder.js';
import type { LoadBalancerSet } from '../../dataplane/agent/load-balancers.js';
import { Client, config, server, shortPacket, snapshot, TaggingBackend } from '../dataplane/helpers.js';
import { freeUdpPort } from './fake-operator.js';

export interface SwapResult {
  initial: string | null;
  swap: string | null;
  /** Backend names that answered on each port, after the swap. */
  afterSwap: { P: string[]; Q: string[] };
  failed: { field: string; message: string } | null;
  /** After the refused swap-back: the ports each load balancer has in force and the backends answering each port. */
  afterFailure: { x: number[]; y: number[]; P: string[]; Q: string[] };
  again: string | null;
  afterAgain: { P: string[]; Q: string[] };
  /** The refused move of X to the foreign port: the failure's field, then who answers on P and Q. */
  releaserFails: { field: string | null; P: string[]; Q: string[] };
}

const addr = (port: number): SocketAddress => ({ host: '127.0.0.1', port, family: 4 });

export async function runPortSwap(lbs: LoadBalancerSet, clientsPerPort = 6): Promise<SwapResult> {
  const backends = await Promise.all(['x', 'y', 'z'].map((n) => TaggingBackend.start(n)));
  const foreign = createSocket('udp4');
  foreign.bind({ port: 0, address: '127.0.0.1', exclusive: true });
  await once(foreign, 'listening');
  try {
    const [P, Q, R] = [await freeUdpPort(), await freeUdpPort(), await freeUdpPort()];
    const lb = (name: string, i: number, ports: number[]): DataplaneSnapshot =>
      snapshot([server(`${name}-server`, `000${i + 1}`, '127.0.0.1', backends[i].port)], { name, listen: ports.map(addr), configs: [{ config: config(), state: 'active' }] });
    const answers = async (port: number): Promise<string[]> => {
      const names = new Set<string>();
      for (let i = 0; i < clientsPerPort; i++) {
        const c = await Client.open();
        names.add((await c.request(shortPacket(mintUnroutableCid(8)), port, '127.0.0.1', 1000)) ?? 'none');
        await c.close();
      }
      return [...names].sort();
    };
    const msg = (f: { message: string } | null) => (f === null ? null : f.message);
    const initial = msg(await lbs.apply([lb('x', 0, [P]), lb('y', 1, [Q]), lb('z', 2, [R])]));
    const swap = msg(await lbs.apply([lb('x', 0, [Q]), lb('y', 1, [P]), lb('z', 2, [R])]));
    const afterSwap = { P: await answers(P), Q: await answers(Q) };
    const failed = await lbs.apply([lb('x', 0, [P]), lb('y', 1, [Q]), lb('z', 2, [R, foreign.address().port])]);
    const ports = (name: string) => lbs.get(name)!.snapshot.listen.map((a) => a.port);
    const afterFailure = { x: ports('x'), y: ports('y'), P: await answers(P), Q: await answers(Q) };
    const again = msg(await lbs.apply([lb('x', 0, [P]), lb('y', 1, [Q]), lb('z', 2, [R])]));
    const afterAgain = { P: await answers(P), Q: await answers(Q) };
    const moved = await lbs.apply([lb('x', 0, [foreign.address().port]), lb('y', 1, [Q, P]), lb('z', 2, [R])]);
    const releaserFails = { field: moved?.field ?? null, P: await answers(P), Q: await answers(Q) };
    return {
      initial,
      swap,
      afterSwap,
      failed: failed === null ? null : { field: failed.field, message: failed.message },
      afterFailure: { ...afterFailure, x: afterFailure.x.map((p) => (p === P ? 1 : p === Q ? 2 : p)), y: afterFailure.y.map((p) => (p === P ? 1 : p === Q ? 2 : p)) },
      again,
      afterAgain,
      releaserFails,
    };
  } finally {
    await new Promise<void>((r) => foreign.close(() => r()));
    for (const b of backends) await b.close();
  }
}
