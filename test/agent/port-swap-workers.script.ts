/**
 * runPortSwap (port-swap.ts) with every load balancer in two worker processes (WorkerEngine), for
 * load-balancers.test.ts (run with `node --import tsx`): prints the SwapResult as one JSON line.
 */
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { WorkerEngine } from '../../dataplane/agent/engines.js';
import { LoadBalancerSet } from '../../dataplane/agent/load-balancers.js';
import { runPortSwap } from './port-swap.js';

const logger = pino({ level: process.env.PORT_SWAP_LOG_LEVEL ?? 'silent' });
const lbs = new LoadBalancerSet({
  makeEngine: (_name, health) => new WorkerEngine(2, logger, () => 'silent', health),
  logger,
  registry: new Registry(),
  followVerdicts: () => true,
});
try {
  console.log(JSON.stringify(await runPortSwap(lbs, 12)));
} finally {
  await lbs.stopAll();
}
process.exit(0);
