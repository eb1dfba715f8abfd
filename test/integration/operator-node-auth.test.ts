/**
 * `quiclb operator --data-plane-auth token` on a real API server (tier 1): a data plane's node is the node of the
 * pod its ServiceAccount token is bound to (TokenReview, user.extra authentication.kubernetes.io/node-name), not
 * what its Hello says. The tokens are made as the kubelet would project them: `kubectl create token quiclb-dataplane
 * --audience quiclb-operator --bound-object-kind Pod --bound-object-name POD` for a Pod whose spec.nodeName is set.
 *
 * - a real `quiclb dataplane --node-token-file` (in its network namespace) with a token bound to a pod on node A
 *   gets node A's load balancer and routes by it;
 * - the same token claiming node B (which the load balancer also selects: without the check it would get the load
 *   balancer and its key) is refused PERMISSION_DENIED and receives nothing; so are a stream without a token
 *   (UNAUTHENTICATED), a token bound to no pod and a token of another ServiceAccount;
 * - no token appears in the operator's logs.
 * The operator runs as its ServiceAccount with deploy/rbac.yaml (tokenreviews create).
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { status } from '@grpc/grpc-js';
import { TestDataPlane } from '../config-server/helpers.js';
import { kubectlOk } from './cluster.js';
import { json, NODE, OperatorWorld, POD_IPS, waitFor, type Proc } from './operator-fixture.js';

const SYSTEM_NS = 'quiclb-system';
const DATAPLANE_SA = 'quiclb-dataplane';
const NODE_B = `${NODE}-b`;
const DP_POD = `dp-${randomBytes(3).toString('hex')}`;

describe('quiclb operator --data-plane-auth token', () => {
  const w = new OperatorWorld();
  let operator: Proc;
  let address = '';
  let token = '';
  const clients: TestDataPlane[] = [];

  const createToken = (sa: string, boundPod?: string) =>
    kubectlOk([
      'create', 'token', sa, '-n', SYSTEM_NS, '--audience', 'quiclb-operator', '--duration', '10m',
      ...(boundPod ? ['--bound-object-kind', 'Pod', '--bound-object-name', boundPod] : []),
    ]).then((s) => s.trim());

  const claim = (node: string, tok?: string) => {
    const dp = tok === undefined ? TestDataPlane.withTls(address, w.clientTls) : TestDataPlane.withNodeToken(address, w.clientTls, tok);
    clients.push(dp);
    dp.hello(node);
    return dp;
  };

  beforeAll(async () => {
    await w.setUp(['web-0', 'web-1']);
    // Node B is selected by the load balancer too: a false claim to it would get the load balancer's key.
    await w.core.createNode({ body: { metadata: { name: NODE_B, labels: { 'quiclb.io/test-node': NODE } } } }).catch(() => undefined);
    await w.core.createNamespacedServiceAccount({ namespace: SYSTEM_NS, body: { metadata: { name: DATAPLANE_SA } } }).catch(() => undefined);
    // The data-plane pod on node A (tier 1 runs no kubelet: the pod only has to exist, bound to the node).
    await w.core.createNamespacedPod({
      namespace: SYSTEM_NS,
      body: {
        metadata: { name: DP_POD },
        spec: { nodeName: NODE, serviceAccountName: DATAPLANE_SA, automountServiceAccountToken: false, containers: [{ name: 'dp', image: 'example.invalid/quiclb:1' }] },
      },
    });
    token = await createToken(DATAPLANE_SA, DP_POD);
    operator = w.startOperator(['--data-plane-auth', 'token', '--data-plane-service-account', `${SYSTEM_NS}/${DATAPLANE_SA}`]);
    const running = await waitFor('operator running', async () => json(operator, 'operator running')[0], 30_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${operator.lines.join('\n')}`);
    });
    const port = Number(String(running.configAddress).split(':').pop());
    address = `localhost:${port}`;
    const tokenFile = join(w.dir, 'node-token');
    writeFileSync(tokenFile, token + '\n', { mode: 0o600 });
    await w.createQlb();
    await w.startDataPlane(port, ['--node-token-file', tokenFile]);
  }, 120_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    await w.core.deleteNamespacedPod({ name: DP_POD, namespace: SYSTEM_NS, gracePeriodSeconds: 0 }).catch(() => undefined);
    await w.core.deleteNode({ name: NODE_B }).catch(() => undefined);
    await w.tearDown();
  });

  it("a data plane with a token bound to a pod on node A gets node A's load balancer and routes by it", async () => {
    const ids = await waitFor('server IDs on the pods', async () => {
      const i = await w.podIds();
      return i['web-0'] && i['web-1'] ? i : undefined;
    }, 60_000);
    const ms = await w.reaches(ids['web-1']!, POD_IPS[1], 30_000);
    if (ms < 0) throw new Error(`not routed\n${operator.lines.slice(-40).join('\n')}\n${w.peer!.dataplaneLines.slice(-20).join('\n')}`);
    const connected = json(operator, 'data plane connected');
    expect(connected.map((l) => [l.node, l.nodeAuthenticated])).toContainEqual([NODE, true]);

    // The same token from an in-process client, claiming node A: served the load balancer.
    const a = claim(NODE, token);
    await a.waitFor(() => a.snapshots.length > 0, 10_000, 'a snapshot');
    expect(a.last!.loadBalancers.map((lb) => lb.name)).toEqual([`${w.ns}/${w.qlbName}`]);
  }, 90_000);

  it('the same token claiming node B is refused PERMISSION_DENIED and receives nothing', async () => {
    const b = claim(NODE_B, token);
    const end = await b.waitForEnd(10_000);
    expect(end.code).toBe(status.PERMISSION_DENIED);
    expect(end.details).toContain(`bound to a pod on node "${NODE}", not "${NODE_B}"`);
    expect(b.snapshots).toEqual([]);
  });

  it('refuses a stream without a token, a token bound to no pod, and a token of another ServiceAccount', async () => {
    const none = claim(NODE);
    expect((await none.waitForEnd(10_000)).code).toBe(status.UNAUTHENTICATED);
    const unbound = claim(NODE, await createToken(DATAPLANE_SA));
    const u = await unbound.waitForEnd(10_000);
    expect([u.code, u.details]).toEqual([status.PERMISSION_DENIED, expect.stringContaining('carries no node')]);
    const other = claim(NODE, await createToken('quiclb-operator'));
    const o = await other.waitForEnd(10_000);
    expect([o.code, o.details]).toEqual([status.PERMISSION_DENIED, expect.stringContaining("not of the data planes' ServiceAccount")]);
    for (const c of [none, unbound, other]) expect(c.snapshots).toEqual([]);
  });

  it('logs no token', () => {
    const logs = operator.lines.join('\n') + w.peer!.dataplaneLines.join('\n');
    expect(logs).not.toContain(token.split('.')[1]);
    expect(logs).not.toContain(token.split('.')[2]);
  });
});
