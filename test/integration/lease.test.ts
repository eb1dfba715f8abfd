// Leader election on a real Lease (tier 1): operator/kube/lease.ts against kube-apiserver, each elector running as
// a ServiceAccount bound to exactly the least-privilege Role documented in lease.ts (leases: create; get/update on
// the named Lease). Proves: exactly one of several candidates leads and the Lease names it; a stopped leader
// releases the Lease and a standby leads within retrySeconds; a leader that vanishes without releasing is replaced
// only after the Lease expires, and soon after; a leader whose renewals fail (its RBAC revoked, or the API server
// unreachable with requests hanging) stops leading before the Lease can expire, and the standby starts only after.
// Leadership intervals of all electors of one Lease never overlap (same process, one monotonic clock).
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import * as k8s from '@kubernetes/client-node';
import { LeaderElector, registerLeaderMetrics } from '../../operator/kube/lease.js';
import { Registry } from 'prom-client';
import { adminKubeConfig, createNamespace, deleteNamespace, serviceAccountKubeConfig, waitFor } from './cluster.js';

const LEASE_SECONDS = 5;
const RENEW_DEADLINE_SECONDS = 3;
const RETRY_SECONDS = 0.5;
const LEASES = ['race', 'release', 'crash', 'taken', 'rbac', 'unreachable'];

interface Interval {
  who: string;
  start: number;
  end?: number;
  /** wall clock (ms) of start/end, to compare with the Lease's renewTime */
  startWall: number;
  endWall?: number;
}

/** Leadership intervals per Lease name, across all electors. */
const intervals = new Map<string, Interval[]>();
const electors: LeaderElector[] = [];
const figures: string[] = [];

function candidate(kc: k8s.KubeConfig, namespace: string, lease: string, identity: string): LeaderElector {
  const list = intervals.get(lease) ?? [];
  intervals.set(lease, list);
  let current: Interval | undefined;
  const e = new LeaderElector({
    kc,
    namespace,
    name: lease,
    identity,
    leaseSeconds: LEASE_SECONDS,
    renewDeadlineSeconds: RENEW_DEADLINE_SECONDS,
    retrySeconds: RETRY_SECONDS,
    onStartedLeading: () => {
      current = { who: identity, start: performance.now(), startWall: Date.now() };
      list.push(current);
    },
    onStoppedLeading: () => {
      if (current) {
        current.end = performance.now();
        current.endWall = Date.now();
      }
      current = undefined;
    },
  });
  electors.push(e);
  return e;
}

function expectNoOverlap(lease: string): void {
  const list = [...(intervals.get(lease) ?? [])].sort((a, b) => a.start - b.start);
  for (let i = 1; i < list.length; i++) {
    const prev = list[i - 1];
    expect({ lease, prev: prev.who, next: list[i].who, overlap: prev.end === undefined || prev.end > list[i].start }).toEqual({
      lease,
      prev: prev.who,
      next: list[i].who,
      overlap: false,
    });
  }
}

const leaders = (es: LeaderElector[]) => es.filter((e) => e.isLeader);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A TCP relay to the API server that can freeze: bytes stop flowing both ways and connections hang open. */
class FreezableRelay {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private frozen = false;
  constructor(private readonly target: URL) {}

  async listen(): Promise<number> {
    this.server = createServer((client) => {
      this.sockets.add(client);
      client.on('close', () => this.sockets.delete(client));
      client.on('error', () => client.destroy());
      if (this.frozen) return; // accepted, never answered
      const upstream = connect(Number(this.target.port), this.target.hostname);
      this.sockets.add(upstream);
      upstream.on('close', () => this.sockets.delete(upstream));
      upstream.on('error', () => client.destroy());
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    const addr = this.server.address();
    if (!addr || typeof addr === 'string') throw new Error('relay has no port');
    return addr.port;
  }

  freeze(): void {
    this.frozen = true;
    for (const s of this.sockets) {
      s.unpipe();
      s.pause();
    }
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

describe('LeaderElector on a real Lease', () => {
  let ns: string;
  let admin: k8s.KubeConfig;
  let coord: k8s.CoordinationV1Api;
  let rbac: k8s.RbacAuthorizationV1Api;
  /** One ServiceAccount (and RoleBinding) per elector role, so one can lose its rights alone. */
  const kcs = new Map<string, k8s.KubeConfig>();

  async function serviceAccount(name: string): Promise<k8s.KubeConfig> {
    const core = admin.makeApiClient(k8s.CoreV1Api);
    await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name } } });
    await rbac.createNamespacedRoleBinding({
      namespace: ns,
      body: {
        metadata: { name },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'leader-election' },
        subjects: [{ kind: 'ServiceAccount', name, namespace: ns }],
      },
    });
    return serviceAccountKubeConfig(ns, name);
  }

  async function readLease(name: string): Promise<k8s.V1Lease> {
    return coord.readNamespacedLease({ name, namespace: ns });
  }

  const wallMs = (t: unknown) => new Date(String(t)).getTime();

  beforeAll(async () => {
    admin = adminKubeConfig();
    coord = admin.makeApiClient(k8s.CoordinationV1Api);
    rbac = admin.makeApiClient(k8s.RbacAuthorizationV1Api);
    ns = await createNamespace('lease');
    // The Role documented in operator/kube/lease.ts, with this suite's Lease names.
    await rbac.createNamespacedRole({
      namespace: ns,
      body: {
        metadata: { name: 'leader-election' },
        rules: [
          { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
          { apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: LEASES, verbs: ['get', 'update'] },
        ],
      },
    });
    for (const sa of ['elector-a', 'elector-b', 'elector-c']) kcs.set(sa, await serviceAccount(sa));
  });

  afterEach(async () => {
    await Promise.all(electors.splice(0).map((e) => e.stop({ release: false })));
  });

  afterAll(async () => {
    for (const lease of intervals.keys()) expectNoOverlap(lease);
    await deleteNamespace(ns);
    if (figures.length > 0) console.log(`lease takeover figures (lease ${LEASE_SECONDS} s, renew deadline ${RENEW_DEADLINE_SECONDS} s, retry ${RETRY_SECONDS} s):\n  ${figures.join('\n  ')}`);
  });

  it('of three candidates started together exactly one leads, the Lease names it, and it keeps renewing', async () => {
    const es = ['a', 'b', 'c'].map((x) => candidate(kcs.get(`elector-${x}`)!, ns, 'race', `replica-${x}`));
    const registry = new Registry();
    registerLeaderMetrics(registry, es[0]);
    for (const e of es) e.start();
    const leader = await waitFor('a leader', async () => leaders(es)[0], 10000, 20);
    for (let i = 0; i < 60; i++) {
      expect(leaders(es).map((e) => e.identity)).toEqual([leader.identity]);
      await sleep(50);
    }
    const before = await readLease('race');
    expect(before.spec?.holderIdentity).toBe(leader.identity);
    expect(before.spec?.leaseDurationSeconds).toBe(LEASE_SECONDS);
    expect(before.spec?.leaseTransitions).toBe(0); // created by the winner
    await sleep(1200);
    const after = await readLease('race');
    expect(after.spec?.holderIdentity).toBe(leader.identity);
    expect(wallMs(after.spec?.renewTime)).toBeGreaterThan(wallMs(before.spec?.renewTime));
    expect(String(after.spec?.renewTime)).toMatch(/\.\d{6}Z$/); // MicroTime
    for (const e of es) expect(e.observedHolder).toBe(leader.identity);
    const text = await registry.metrics();
    expect(text).toContain(`quiclb_operator_leader ${leader === es[0] ? 1 : 0}`);
    expect(text).toContain(`quiclb_operator_leadership_changes_total{change="started"} ${leader === es[0] ? 1 : 0}`);
    expectNoOverlap('race');
  });

  it('a stopped leader stops acting, releases the Lease, and the standby leads within retrySeconds', async () => {
    const a = candidate(kcs.get('elector-a')!, ns, 'release', 'replica-a');
    a.start();
    await waitFor('a leads', async () => (a.isLeader ? true : undefined), 10000, 20);
    const b = candidate(kcs.get('elector-b')!, ns, 'release', 'replica-b');
    b.start();
    await sleep(1500);
    expect(b.isLeader).toBe(false);
    const t0 = performance.now();
    await a.stop();
    const released = performance.now();
    expect(a.isLeader).toBe(false);
    const lease = await readLease('release');
    expect(lease.spec?.holderIdentity ?? '').toMatch(/^(|replica-b)$/);
    await waitFor('b leads', async () => (b.isLeader ? true : undefined), 5000, 10);
    const takeover = performance.now() - released;
    figures.push(`release: standby led ${takeover.toFixed(0)} ms after stop() returned (stop() itself took ${(released - t0).toFixed(0)} ms)`);
    expect(takeover).toBeLessThan(RETRY_SECONDS * 1.2 * 1000 + 500);
    const [ia, ib] = intervals.get('release')!;
    expect(ia.end).toBeLessThan(ib.start);
    const after = await readLease('release');
    expect(after.spec?.holderIdentity).toBe('replica-b');
    expect(after.spec?.leaseTransitions).toBe(1);
  });

  it('a leader that vanishes without releasing is replaced after the Lease expires, not before', async () => {
    const a = candidate(kcs.get('elector-a')!, ns, 'crash', 'replica-a');
    a.start();
    await waitFor('a leads', async () => (a.isLeader ? true : undefined), 10000, 20);
    const b = candidate(kcs.get('elector-b')!, ns, 'crash', 'replica-b');
    b.start();
    await sleep(1500);
    await a.stop({ release: false }); // as after kill -9: renewals stop, the Lease still names a
    const stoppedWall = Date.now();
    const stopped = performance.now();
    const last = await readLease('crash');
    expect(last.spec?.holderIdentity).toBe('replica-a');
    const lastRenew = wallMs(last.spec?.renewTime);
    await waitFor('b leads', async () => (b.isLeader ? true : undefined), (LEASE_SECONDS + 3) * 1000, 10);
    const bStart = intervals.get('crash')![1];
    figures.push(
      `no release: standby led ${(bStart.start - stopped).toFixed(0)} ms after the leader vanished, ${(bStart.startWall - lastRenew).toFixed(0)} ms after its last renewTime`,
    );
    expect(bStart.startWall - stoppedWall).toBeGreaterThan(0);
    // Never before expiry (same machine, same wall clock), and within one jittered retry (+ latency) after it.
    expect(bStart.startWall).toBeGreaterThanOrEqual(lastRenew + LEASE_SECONDS * 1000);
    expect(bStart.startWall).toBeLessThan(lastRenew + (LEASE_SECONDS + RETRY_SECONDS * 1.2 * 2) * 1000 + 500);
    const after = await readLease('crash');
    expect(after.spec?.holderIdentity).toBe('replica-b');
    expect(after.spec?.leaseTransitions).toBe(1);
  });

  it('a leader whose Lease another holder wrote (its renewal gets 409) stops leading at its next renewal', async () => {
    const a = candidate(kcs.get('elector-a')!, ns, 'taken', 'replica-a');
    a.start();
    await waitFor('a leads', async () => (a.isLeader ? true : undefined), 10000, 20);
    const lease = await readLease('taken');
    const now = new k8s.V1MicroTime();
    await coord.replaceNamespacedLease({
      name: 'taken',
      namespace: ns,
      body: { ...lease, spec: { ...lease.spec, holderIdentity: 'intruder', renewTime: now, acquireTime: now } },
    });
    const written = performance.now();
    await waitFor('a steps down', async () => (a.isLeader ? undefined : true), 5000, 10);
    const lostAfter = intervals.get('taken')![0].end! - written;
    figures.push(`Lease taken by another holder: leader stopped ${lostAfter.toFixed(0)} ms after the foreign write`);
    expect(lostAfter).toBeLessThan(RETRY_SECONDS * 1000 + 500); // at its next renewal, long before its renew deadline
    expect(a.observedHolder).toBe('intruder');
    await sleep(1000);
    expect(a.isLeader).toBe(false); // the intruder's Lease has not expired: a waits as a candidate
    expect((await readLease('taken')).spec?.holderIdentity).toBe('intruder');
  });

  it('a leader whose renewals are refused (RBAC revoked) stops leading before the Lease expires; the standby starts after expiry', async () => {
    const a = candidate(kcs.get('elector-c')!, ns, 'rbac', 'replica-c');
    a.start();
    await waitFor('c leads', async () => (a.isLeader ? true : undefined), 10000, 20);
    const b = candidate(kcs.get('elector-b')!, ns, 'rbac', 'replica-b');
    b.start();
    await sleep(1500);
    await rbac.deleteNamespacedRoleBinding({ name: 'elector-c', namespace: ns });
    await waitFor('c steps down', async () => (a.isLeader ? undefined : true), (LEASE_SECONDS + 2) * 1000, 10);
    const [ia] = intervals.get('rbac')!;
    const last = await readLease('rbac');
    const lastRenew = wallMs(last.spec?.renewTime);
    expect(last.spec?.holderIdentity).toBe('replica-c'); // it still names c: c stopped on its own deadline
    expect(b.isLeader).toBe(false);
    const downAfter = ia.endWall! - lastRenew;
    expect(downAfter).toBeGreaterThan(RENEW_DEADLINE_SECONDS * 1000 - 200);
    expect(downAfter).toBeLessThan(LEASE_SECONDS * 1000 - 1000);
    await waitFor('b leads', async () => (b.isLeader ? true : undefined), (LEASE_SECONDS + 3) * 1000, 10);
    const ib = intervals.get('rbac')![1];
    figures.push(
      `renewals refused (403): leader stopped ${downAfter} ms after its last renewTime (deadline ${RENEW_DEADLINE_SECONDS * 1000}, lease ${LEASE_SECONDS * 1000}); standby led ${ib.startWall - lastRenew} ms after it`,
    );
    expect(ib.startWall).toBeGreaterThanOrEqual(lastRenew + LEASE_SECONDS * 1000);
    expect(ia.end).toBeLessThan(ib.start);
  });

  it('a leader cut off from the API server (requests hang) stops leading before the Lease expires', async () => {
    const direct = kcs.get('elector-a')!;
    const relay = new FreezableRelay(new URL(direct.getCurrentCluster()!.server));
    try {
      const port = await relay.listen();
      const cluster = direct.getCurrentCluster()!;
      const user = direct.getCurrentUser()!;
      const viaRelay = new k8s.KubeConfig();
      viaRelay.loadFromOptions({
        clusters: [{ name: 'relay', server: `https://127.0.0.1:${port}`, caData: cluster.caData, skipTLSVerify: false }],
        users: [{ name: user.name, token: user.token }],
        contexts: [{ name: 'ctx', cluster: 'relay', user: user.name }],
        currentContext: 'ctx',
      });
      const a = candidate(viaRelay, ns, 'unreachable', 'replica-a');
      a.start();
      await waitFor('a leads', async () => (a.isLeader ? true : undefined), 10000, 20);
      const b = candidate(kcs.get('elector-b')!, ns, 'unreachable', 'replica-b');
      b.start();
      await sleep(1500);
      relay.freeze();
      await waitFor('a steps down', async () => (a.isLeader ? undefined : true), (LEASE_SECONDS + 2) * 1000, 10);
      const [ia] = intervals.get('unreachable')!;
      const last = await readLease('unreachable');
      const lastRenew = wallMs(last.spec?.renewTime);
      expect(last.spec?.holderIdentity).toBe('replica-a');
      const downAfter = ia.endWall! - lastRenew;
      expect(downAfter).toBeGreaterThan(RENEW_DEADLINE_SECONDS * 1000 - 200);
      expect(downAfter).toBeLessThan(LEASE_SECONDS * 1000 - 1000);
      await waitFor('b leads', async () => (b.isLeader ? true : undefined), (LEASE_SECONDS + 3) * 1000, 10);
      const ib = intervals.get('unreachable')![1];
      figures.push(`API unreachable (hung requests): leader stopped ${downAfter} ms after its last renewTime; standby led ${ib.startWall - lastRenew} ms after it`);
      expect(ib.startWall).toBeGreaterThanOrEqual(lastRenew + LEASE_SECONDS * 1000);
      expect(ia.end).toBeLessThan(ib.start);
      // stop() returns promptly although requests hang (they are aborted)
      const t = performance.now();
      await a.stop();
      expect(performance.now() - t).toBeLessThan(RENEW_DEADLINE_SECONDS * 1000);
    } finally {
      await relay.close();
    }
  });

  it('refuses timings that could let a leader act after its Lease expired', () => {
    const base = { kc: admin, namespace: ns, name: 'x', identity: 'i', onStartedLeading: () => {}, onStoppedLeading: () => {} };
    expect(() => new LeaderElector({ ...base, leaseSeconds: 10, renewDeadlineSeconds: 10 })).toThrow(RangeError);
    expect(() => new LeaderElector({ ...base, leaseSeconds: 2.5 })).toThrow(RangeError);
    expect(() => new LeaderElector({ ...base, renewDeadlineSeconds: 2, retrySeconds: 2 })).toThrow(RangeError);
    expect(() => new LeaderElector({ ...base, identity: '' })).toThrow(RangeError);
  });
});
