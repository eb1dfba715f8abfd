/**
 * Node authentication on the config channel: with `authenticateNode` set, a stream's Hello node must be confirmed
 * by the token in its x-quiclb-node-token metadata before anything is sent; without it, streams are served as
 * before. Real grpc-js streams over mTLS on loopback; the verifier is a table of token -> node (the operator's
 * TokenReview is tested against a real API server in test/integration/operator-node-auth.test.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { status } from '@grpc/grpc-js';
import { InMemorySnapshotSource } from '../../operator/config-server/source.js';
import { MAX_NODE_TOKEN_BYTES, NodeAuthenticator, type AuthenticateNode } from '../../operator/config-server/node-auth.js';
import { TestCa, type TlsDir } from '../helpers/tls.js';
import { makeLoadBalancer, sleep, startServer, TestDataPlane, type StartedServer } from './helpers.js';

const TOKEN_A = 'token-of-a-pod-on-node-a.' + 'x'.repeat(900);

let ca: TestCa;
let serverTls: TlsDir;
let client: TlsDir;
const open: TestDataPlane[] = [];
const servers: StartedServer[] = [];

beforeAll(() => {
  ca = new TestCa();
  serverTls = ca.issue({ cn: 'quiclb-operator', usage: 'server' });
  client = ca.issue({ cn: 'quiclb-dataplane', usage: 'client' });
});

afterAll(async () => {
  for (const c of open) c.close();
  for (const s of servers) await s.server.close(200);
  ca.remove();
});

/** Confirms TOKEN_A for node-a only; records every call. */
function tableVerifier(): { verify: AuthenticateNode; calls: Array<[string, string]> } {
  const calls: Array<[string, string]> = [];
  const verify: AuthenticateNode = async (token, node) => {
    calls.push([token, node]);
    if (token !== TOKEN_A) return { ok: false, reason: 'token not valid' };
    return node === 'node-a' ? { ok: true } : { ok: false, reason: `token is bound to node "node-a", not ${JSON.stringify(node)}` };
  };
  return { verify, calls };
}

async function setup(verify?: AuthenticateNode, timeoutMs = 5000) {
  const source = new InMemorySnapshotSource();
  const version = source.publish({ byNode: new Map([['node-a', [makeLoadBalancer('web-a')]], ['node-b', [makeLoadBalancer('web-b', { port: 4434 })]]]) });
  const started = await startServer(source, serverTls, verify ? { authenticateNode: verify, nodeAuth: { timeoutMs } } : {});
  servers.push(started);
  const refused = async (reason: string) => {
    const text = await started.registry.getSingleMetricAsString('quiclb_config_server_streams_refused_total');
    return Number(new RegExp(`^quiclb_config_server_streams_refused_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
  };
  const connect = (node: string, token?: string) => {
    const dp = token === undefined ? TestDataPlane.withTls(started.address, client) : TestDataPlane.withNodeToken(started.address, client, token);
    open.push(dp);
    dp.hello(node);
    return dp;
  };
  return { ...started, version, refused, connect };
}

describe('config server with authenticateNode', () => {
  it("serves a data plane whose token confirms its Hello's node, that node's load balancers only", async () => {
    const { verify, calls } = tableVerifier();
    const { connect, version, server } = await setup(verify);
    const dp = connect('node-a', TOKEN_A);
    const snap = await dp.waitForVersion(version);
    expect(snap.loadBalancers.map((lb) => lb.name)).toEqual(['web-a']);
    expect(calls).toEqual([[TOKEN_A, 'node-a']]);
    expect(server.dataPlanes().map((d) => d.identity)).toEqual(['quiclb-dataplane@node-a']);
  });

  it('refuses PERMISSION_DENIED, sending nothing, a Hello naming another node than the token', async () => {
    const { verify } = tableVerifier();
    const { connect, refused, server, lines } = await setup(verify);
    const dp = connect('node-b', TOKEN_A);
    const end = await dp.waitForEnd();
    expect(end.code).toBe(status.PERMISSION_DENIED);
    expect(end.details).toContain('node "node-b" not confirmed');
    await sleep(100);
    expect(dp.snapshots).toEqual([]);
    expect(server.dataPlanes()).toEqual([]);
    expect(await refused('node_unauthenticated')).toBe(1);
    expect(lines.join('\n')).not.toContain(TOKEN_A.slice(0, 24));
  });

  it('refuses UNAUTHENTICATED, without asking the verifier, a stream that sends no token', async () => {
    const { verify, calls } = tableVerifier();
    const { connect, refused } = await setup(verify);
    const dp = connect('node-a');
    const end = await dp.waitForEnd();
    expect(end.code).toBe(status.UNAUTHENTICATED);
    expect(end.details).toContain('no node token');
    expect(dp.snapshots).toEqual([]);
    expect(calls).toEqual([]);
    expect(await refused('node_unauthenticated')).toBe(1);
  });

  it('closes UNAVAILABLE, sending nothing, when the verifier does not answer in time or fails', async () => {
    const hanging: AuthenticateNode = () => new Promise(() => {});
    const a = await setup(hanging, 300);
    const t0 = Date.now();
    const dp = a.connect('node-a', TOKEN_A);
    const end = await dp.waitForEnd(3000);
    expect(end.code).toBe(status.UNAVAILABLE);
    expect(end.details).toContain('not verified within 300 ms');
    expect(Date.now() - t0).toBeLessThan(2500);
    expect(dp.snapshots).toEqual([]);
    expect(await a.refused('node_unverifiable')).toBe(1);

    const b = await setup(async () => {
      throw new Error('TokenReview: connect ECONNREFUSED');
    });
    const dp2 = b.connect('node-a', TOKEN_A);
    expect(await dp2.waitForEnd()).toEqual({ code: status.UNAVAILABLE, details: expect.stringContaining('ECONNREFUSED') });
    expect(dp2.snapshots).toEqual([]);
  });

  it('verifies a token once for many streams (cached) and serves the reports sent after the Hello', async () => {
    const { verify, calls } = tableVerifier();
    const { connect, version } = await setup(verify);
    const first = connect('node-a', TOKEN_A);
    first.autoAck = true;
    await first.waitForVersion(version);
    first.close();
    const again = connect('node-a', TOKEN_A);
    again.autoAck = true;
    await again.waitForVersion(version);
    expect(calls.length).toBe(1);
  });
});

describe('config server without authenticateNode', () => {
  it('serves a stream with or without a token, as before', async () => {
    const { connect, version } = await setup();
    const plain = connect('node-b');
    const withToken = connect('node-a', 'anything');
    expect((await plain.waitForVersion(version)).loadBalancers.map((lb) => lb.name)).toEqual(['web-b']);
    expect((await withToken.waitForVersion(version)).loadBalancers.map((lb) => lb.name)).toEqual(['web-a']);
  });
});

describe('NodeAuthenticator bounds', () => {
  it('refuses an oversized token and an empty node without calling the verifier', async () => {
    const { verify, calls } = tableVerifier();
    const auth = new NodeAuthenticator(verify);
    expect(await auth.check('t'.repeat(MAX_NODE_TOKEN_BYTES + 1), 'node-a')).toEqual({ kind: 'refused', reason: expect.stringContaining('larger than') });
    expect(await auth.check(TOKEN_A, '')).toEqual({ kind: 'refused', reason: 'the hello names no node' });
    expect(calls).toEqual([]);
  });

  it('caches a success until the token expires or a minute passes, a refusal briefly, a failure not at all', async () => {
    let now = 1_000_000;
    let fail = false;
    const calls: string[] = [];
    const auth = new NodeAuthenticator(
      async (token, node) => {
        calls.push(`${token}@${node}`);
        if (fail) throw new Error('down');
        return token === 'short' ? { ok: true, expiresAt: now + 10_000 } : token === 'bad' ? { ok: false, reason: 'no' } : { ok: true };
      },
      { now: () => now, refusalCacheMs: 5000 },
    );
    expect(await auth.check('long', 'n')).toEqual({ kind: 'ok' });
    expect(await auth.check('short', 'n')).toEqual({ kind: 'ok' });
    expect(await auth.check('bad', 'n')).toEqual({ kind: 'refused', reason: 'no' });
    // Per token AND node: the same token for another node is verified again.
    expect(await auth.check('long', 'm')).toEqual({ kind: 'ok' });
    expect(calls.length).toBe(4);
    now += 4000;
    await Promise.all([auth.check('long', 'n'), auth.check('short', 'n'), auth.check('bad', 'n')]);
    expect(calls.length).toBe(4);
    now += 7000; // 11 s: 'short' expired, the refusal too
    await Promise.all([auth.check('long', 'n'), auth.check('short', 'n'), auth.check('bad', 'n')]);
    expect(calls.slice(4).sort()).toEqual(['bad@n', 'short@n']);
    now += 60_000;
    fail = true;
    expect((await auth.check('long', 'n')).kind).toBe('unverifiable');
    fail = false;
    expect(await auth.check('long', 'n')).toEqual({ kind: 'ok' });
    expect(calls.filter((c) => c === 'long@n').length).toBe(3);
  });

  it('shares one verification among concurrent streams of the same token', async () => {
    let calls = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const auth = new NodeAuthenticator(async () => {
      calls++;
      await gate;
      return { ok: true };
    });
    const all = Promise.all(Array.from({ length: 20 }, () => auth.check('t', 'n')));
    release();
    expect((await all).every((r) => r.kind === 'ok')).toBe(true);
    expect(calls).toBe(1);
  });
});
