/**
 * Snapshot.retained on the config server's streams: sent to a data plane that announced RETAINED_CAPABILITY; a data
 * plane without it is sent nothing while its node retains anything (it would close those listeners), unless it
 * forwards with nothing yet.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { RETAINED_CAPABILITY } from '../../proto/convert.js';
import { InMemorySnapshotSource } from '../../operator/config-server/source.js';
import { TestCa, type TlsDir } from '../helpers/tls.js';
import { makeLoadBalancer, sleep, startServer, TestDataPlane, type StartedServer } from './helpers.js';

let ca: TestCa;
let serverTls: TlsDir;
let clients: Record<string, TlsDir>;
const open: TestDataPlane[] = [];
const servers: StartedServer[] = [];

beforeAll(() => {
  ca = new TestCa();
  serverTls = ca.issue({ cn: 'quiclb-operator', usage: 'server' });
  clients = Object.fromEntries(['new', 'old', 'fresh'].map((cn) => [cn, ca.issue({ cn, usage: 'client' })]));
});

afterAll(async () => {
  for (const c of open) c.close();
  for (const s of servers) await s.server.close(200);
  ca.remove();
});

function connect(address: string, cn: string, capabilities: string[], currentVersion: bigint): TestDataPlane {
  const dp = TestDataPlane.withTls(address, clients[cn]);
  dp.autoAck = true;
  open.push(dp);
  dp.send({ message: { $case: 'hello', hello: { nodeName: 'n1', podName: cn, softwareVersion: '0.1.0', capabilities, currentVersion, processStartTime: new Date() } } });
  return dp;
}

describe('Snapshot.retained and the data plane\'s capability', () => {
  it('goes to a data plane with the capability; one without it gets nothing until the retention ends, unless it forwards with nothing', async () => {
    const source = new InMemorySnapshotSource();
    const started = await startServer(source, serverTls);
    const lines = started.lines;
    servers.push(started);
    const web = makeLoadBalancer('ns/web');
    const v1 = source.publish({ byNode: new Map([['n1', [web]]]), retainedByNode: new Map([['n1', ['ns/stuck']]]) });

    const capable = connect(started.address, 'new', ['counters', RETAINED_CAPABILITY], 7n);
    const old = connect(started.address, 'old', ['counters'], 7n);
    const fresh = connect(started.address, 'fresh', ['counters'], 0n);
    const s1 = await capable.waitForVersion(v1);
    expect(s1.retained).toEqual(['ns/stuck']);
    expect(s1.loadBalancers.map((l) => l.name)).toEqual(['ns/web']);
    const f1 = await fresh.waitForVersion(v1);
    expect(f1.retained).toEqual([]);
    expect(f1.loadBalancers.map((l) => l.name)).toEqual(['ns/web']);
    await sleep(300);
    expect(old.snapshots).toHaveLength(0);
    // Still retained in a newer version: still nothing, and the warning was logged once.
    const v2 = source.publish({ byNode: new Map([['n1', [makeLoadBalancer('ns/web', { weight: 7 })]]]), retainedByNode: new Map([['n1', ['ns/stuck']]]) });
    await capable.waitForVersion(v2);
    await sleep(200);
    expect(old.snapshots).toHaveLength(0);
    expect(lines.filter((l) => l.includes('cannot keep load balancers')).length).toBe(1);
    const withheld = async () => (await started.registry.getSingleMetric('quiclb_config_server_withheld_data_planes')!.get()).values[0]?.value;
    expect(await withheld()).toBe(1);

    // The retention ends (the load balancer was reconciled): everyone gets the full set.
    const stuck = makeLoadBalancer('ns/stuck', { port: 4434 });
    const v3 = source.publish({ byNode: new Map([['n1', [web, stuck]]]) });
    for (const dp of [capable, old, fresh]) {
      const s = await dp.waitForVersion(v3);
      expect(s.retained).toEqual([]);
      expect(s.loadBalancers.map((l) => l.name)).toEqual(['ns/web', 'ns/stuck']);
    }
    expect(await withheld()).toBe(0);
  });
});
