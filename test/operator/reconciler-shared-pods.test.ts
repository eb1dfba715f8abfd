// reconciler.ts with pods that the backends of two load balancers share: which annotations each one writes or takes
// off, and which other load balancers a reconcile enqueues. The API is faked; the caches are plain lists.
import { describe, expect, it } from '@jest/globals';
import * as k8s from '@kubernetes/client-node';
import pino from 'pino';
import { EMPTY_RECORDS, type ServerIdRecords } from '../../operator/allocation/server-ids.js';
import type { QuicLoadBalancerObject } from '../../operator/kube/informers.js';
import { Reconciler, type ReconcilerDeps } from '../../operator/reconcile/reconciler.js';
import { INITIAL_STATE } from '../../operator/rotation/machine.js';
import { SERVER_ID_ANNOTATION, SERVER_ID_CHANGED_AT_ANNOTATION, SERVER_ID_PREVIOUS_ANNOTATION } from '../../operator/reconcile/spec.js';
import type { DataplaneSnapshot } from '../../lib/config/snapshot.js';

const T0 = Date.parse('2026-12-04T12:00:00Z');

function cache<T extends k8s.KubernetesObject>(items: () => T[]) {
  return {
    list: (ns?: string) => items().filter((o) => ns === undefined || o.metadata?.namespace === ns),
    get: (name: string, ns?: string) => items().find((o) => o.metadata?.name === name && (ns === undefined || o.metadata?.namespace === ns)),
  };
}

/** Any method, any depth, does nothing (metrics). */
const noop: unknown = new Proxy(() => undefined, { get: () => noop });

function qlb(name: string, createdAt: number, serviceName: string, port: number, deleting = false): QuicLoadBalancerObject {
  return {
    metadata: {
      namespace: 'team',
      name,
      uid: `uid-${name}`,
      generation: 1,
      resourceVersion: '1',
      finalizers: ['quiclb.io/cleanup'],
      creationTimestamp: new Date(createdAt).toISOString() as unknown as Date,
      ...(deleting ? { deletionTimestamp: new Date(T0).toISOString() as unknown as Date } : {}),
    },
    spec: { backend: { serviceName, portName: 'quic' }, listen: { ports: [port] } },
  };
}

function slice(service: string, pods: string[]): k8s.V1EndpointSlice {
  return {
    metadata: { namespace: 'team', name: `${service}-slice`, labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    ports: [{ name: 'quic', port: 8443, protocol: 'UDP' }],
    endpoints: pods.map((p) => ({ addresses: [`198.51.100.${10 + Number(p.slice(4))}`], conditions: { ready: true }, targetRef: { kind: 'Pod', name: p, uid: `uid-${p}` } })),
  };
}

class World {
  qlbs: QuicLoadBalancerObject[] = [];
  slices: k8s.V1EndpointSlice[] = [];
  services: k8s.V1Service[] = ['web', 'all'].map((name) => ({ metadata: { namespace: 'team', name }, spec: { ports: [{ name: 'quic', port: 443, protocol: 'UDP' }] } }));
  readonly pods = new Map<string, string | undefined>(['web-0', 'web-1', 'web-2'].map((p) => [p, undefined]));
  /** quiclb.io/server-id-changed-at per pod (ms), as the writer set it. */
  readonly changedAt = new Map<string, number>();
  /** quiclb.io/server-id-previous per pod, as the writer set it. */
  readonly previous = new Map<string, string>();
  /** The UID the pod cache shows per pod name when it lags (default uid-<name>, the API's). */
  readonly cachedUids = new Map<string, string>();
  /** The server-id annotation the pod cache shows per pod name when it lags (default: the API's, `pods`). */
  readonly cachedIds = new Map<string, string>();
  /** The last snapshot published per load balancer key. */
  readonly snapshots = new Map<string, DataplaneSnapshot>();
  /** The configs Secret each pod mounts (a secret volume). */
  readonly mounts = new Map<string, string>();
  readonly records = new Map<string, ServerIdRecords>();
  readonly enqueued: string[] = [];
  readonly events: string[] = [];
  readonly reconciler: Reconciler;

  constructor() {
    const podObjects = () =>
      [...this.pods].map(([name, id]): k8s.V1Pod => ({
        metadata: {
          namespace: 'team',
          name,
          uid: this.cachedUids.get(name) ?? `uid-${name}`,
          annotations: {
            ...((this.cachedIds.get(name) ?? id) === undefined ? {} : { [SERVER_ID_ANNOTATION]: this.cachedIds.get(name) ?? id }),
            ...(this.changedAt.has(name) ? { [SERVER_ID_CHANGED_AT_ANNOTATION]: new Date(this.changedAt.get(name)!).toISOString() } : {}),
            ...(this.previous.has(name) ? { [SERVER_ID_PREVIOUS_ANNOTATION]: this.previous.get(name)! } : {}),
          },
        },
        spec: { containers: [], volumes: this.mounts.has(name) ? [{ name: 'quiclb', secret: { secretName: this.mounts.get(name) } }] : [] },
      }));
    const deps = {
      informers: { qlbs: cache(() => this.qlbs), services: cache(() => this.services), slices: cache(() => this.slices), pods: cache(podObjects), nodes: cache(() => [{ metadata: { name: 'n1' } }]) },
      ids: {
        read: (_ns: string, name: string) => Promise.resolve({ records: this.records.get(name) ?? EMPTY_RECORDS, resourceVersion: this.records.has(name) ? '1' : null }),
        write: (_ns: string, owner: { name: string }, _len: number, records: ServerIdRecords) => Promise.resolve(void this.records.set(owner.name, records)),
        remove: (_ns: string, name: string) => Promise.resolve(void this.records.delete(name)),
      },
      secrets: {
        readConfigs: () => Promise.resolve({ state: INITIAL_STATE, keys: new Map(), data: null, resourceVersion: null }),
        writeConfigs: () => Promise.resolve(),
        removeConfigs: () => Promise.resolve(),
      },
      writer: {
        annotatePod: (_ns: string, pod: string, id: string | null, change?: { at: number; previous: string | null }, uid?: string) => {
          // the API's pod of that name is uid-<name>: a patch carrying another metadata.uid is refused (a failed uid precondition: 409)
          if (uid !== undefined && uid !== `uid-${pod}`) return Promise.reject(new k8s.ApiException(409, 'Precondition failed: UID in precondition', {}, {}));
          this.pods.set(pod, id ?? undefined);
          if (change !== undefined) {
            this.changedAt.set(pod, change.at);
            if (change.previous === null) this.previous.delete(pod);
            else this.previous.set(pod, change.previous);
          }
          return Promise.resolve();
        },
        setFinalizers: () => Promise.resolve(),
        applyStatus: () => Promise.resolve(),
      },
      events: { record: (_on: unknown, type: string, reason: string, message: string) => Promise.resolve(void this.events.push(`${type} ${reason}: ${message}`)) },
      publisher: { remove: () => 1, set: (key: string, s: DataplaneSnapshot) => (this.snapshots.set(key, s), 1), settle: () => undefined, refreshRetained: () => undefined, versionOf: () => null, configsAt: () => null },
      dataPlanes: () => [],
      metrics: noop,
      logger: pino({ level: 'silent' }),
      now: () => T0,
      freshKey: () => Buffer.alloc(16, 1),
      enqueue: (k: string) => this.enqueued.push(k),
    };
    this.reconciler = new Reconciler(deps as unknown as ReconcilerDeps);
  }
}

// alpha (earlier) names Service web, beta (later) Service all; both select web-0 and web-1.
const ALPHA = qlb('alpha', T0 - 7_200_000, 'web', 443);
const BETA = qlb('beta', T0 - 3_600_000, 'all', 444);

describe('reconciler: pods shared by two load balancers', () => {
  it('each annotates only the pods it holds, whatever the order of the reconciles', async () => {
    const w = new World();
    w.qlbs = [ALPHA, BETA];
    w.slices = [slice('web', ['web-0', 'web-1']), slice('all', ['web-0', 'web-1', 'web-2'])];
    await w.reconciler.reconcile('team/beta');
    await w.reconciler.reconcile('team/alpha');
    await w.reconciler.reconcile('team/beta');
    const alpha = new Map(w.records.get('alpha')!.assigned.map((a) => [a.podName, a.id]));
    const beta = new Map(w.records.get('beta')!.assigned.map((a) => [a.podName, a.id]));
    expect([...alpha.keys()]).toEqual(['web-0', 'web-1']);
    expect([...beta.keys()]).toEqual(['web-2']);
    expect(Object.fromEntries(w.pods)).toEqual({ 'web-0': alpha.get('web-0'), 'web-1': alpha.get('web-1'), 'web-2': beta.get('web-2') });
  });

  it('the holder enqueues the later one when it starts or stops holding pods the later one wants, not on every run', async () => {
    const w = new World();
    w.qlbs = [ALPHA, BETA];
    w.slices = [slice('web', ['web-0', 'web-1']), slice('all', ['web-0', 'web-1', 'web-2'])];
    await w.reconciler.reconcile('team/alpha');
    expect(w.enqueued).toEqual(['team/beta']);
    await w.reconciler.reconcile('team/alpha');
    await w.reconciler.reconcile('team/beta');
    expect(w.enqueued).toEqual(['team/beta']);
    // alpha's Service stops selecting one shared pod, then the other: each time beta is told at once and takes it
    w.slices = [slice('web', ['web-0']), slice('all', ['web-0', 'web-1', 'web-2'])];
    await w.reconciler.reconcile('team/alpha');
    expect(w.enqueued).toEqual(['team/beta', 'team/beta']);
    await w.reconciler.reconcile('team/beta');
    expect(w.records.get('beta')!.assigned.map((a) => a.podName).sort()).toEqual(['web-1', 'web-2']);
    w.slices = [slice('web', ['web-9']), slice('all', ['web-0', 'web-1', 'web-2'])];
    await w.reconciler.reconcile('team/alpha');
    expect(w.enqueued).toEqual(['team/beta', 'team/beta', 'team/beta']);
    await w.reconciler.reconcile('team/beta');
    expect(w.records.get('beta')!.assigned.map((a) => a.podName).sort()).toEqual(['web-0', 'web-1', 'web-2']);
  });

  it("the later one's teardown leaves the holder's annotations, even when its stale records give a pod the same ID", async () => {
    const w = new World();
    w.qlbs = [ALPHA, qlb('beta', T0 - 3_600_000, 'all', 444, true)];
    w.slices = [slice('web', ['web-0']), slice('all', ['web-0', 'web-2'])];
    // beta held web-0 before alpha's Service selected it; alpha gave web-0 the same value
    w.records.set('beta', {
      assigned: [
        { id: '0000', podUid: 'uid-web-0', podName: 'web-0', assignedAt: T0 - 5000 },
        { id: '0001', podUid: 'uid-web-2', podName: 'web-2', assignedAt: T0 - 5000 },
      ],
      released: [],
    });
    w.pods.set('web-0', '0000');
    w.pods.set('web-2', '0001');
    await w.reconciler.reconcile('team/beta');
    expect(w.records.has('beta')).toBe(false); // torn down
    expect(Object.fromEntries(w.pods)).toEqual({ 'web-0': '0000', 'web-1': undefined, 'web-2': undefined });
  });

  it("a teardown leaves the annotation of a pod any other load balancer's backend has, even a later one's with the same value", async () => {
    // alpha's Service is gone (its records kept, as the guard wants); beta gave web-0 the value alpha's records hold
    const w = new World();
    w.qlbs = [qlb('alpha', T0 - 7_200_000, 'web', 443, true), BETA];
    w.services = w.services.filter((s) => s.metadata?.name !== 'web');
    w.slices = [slice('all', ['web-0', 'web-2'])];
    w.records.set('alpha', { assigned: [{ id: '0000', podUid: 'uid-web-0', podName: 'web-0', assignedAt: T0 - 9000 }, { id: '0001', podUid: 'uid-web-1', podName: 'web-1', assignedAt: T0 - 9000 }], released: [] });
    w.pods.set('web-0', '0000');
    w.pods.set('web-1', '0001');
    await w.reconciler.reconcile('team/alpha');
    expect(w.records.has('alpha')).toBe(false); // torn down
    expect(w.pods.get('web-0')).toBe('0000'); // beta's
    expect(w.pods.get('web-1')).toBeUndefined(); // nobody else's: alpha's taken off
  });

  it('a pod whose ID is released while it still exists loses the annotation (with the time), unless another load balancer has it: that one writes its own, with the time', async () => {
    const w = new World();
    w.qlbs = [ALPHA, BETA];
    w.slices = [slice('web', ['web-0', 'web-1']), slice('all', ['web-2'])];
    await w.reconciler.reconcile('team/alpha');
    await w.reconciler.reconcile('team/beta');
    const alpha = new Map(w.records.get('alpha')!.assigned.map((a) => [a.podName, a.id]));
    expect(w.pods.get('web-0')).toBe(alpha.get('web-0'));
    expect(w.changedAt.size).toBe(0); // first annotations: no previous ID
    // web-1 leaves alpha's endpoints and nobody's backend has it: it mints 0b111 CIDs again, not a stale ID
    w.slices = [slice('web', ['web-0']), slice('all', ['web-2'])];
    await w.reconciler.reconcile('team/alpha');
    expect(w.pods.get('web-1')).toBeUndefined();
    expect(w.changedAt.get('web-1')).toBe(T0);
    // web-0 goes over to beta (alpha's Service stops selecting it, beta's does): alpha leaves it to beta, which
    // writes its own ID with the time of the change
    w.slices = [slice('web', []), slice('all', ['web-0', 'web-2'])];
    await w.reconciler.reconcile('team/alpha');
    expect(w.pods.get('web-0')).toBe(alpha.get('web-0'));
    expect(w.changedAt.has('web-0')).toBe(false);
    await w.reconciler.reconcile('team/beta');
    const beta = new Map(w.records.get('beta')!.assigned.map((a) => [a.podName, a.id]));
    expect(beta.get('web-0')).not.toBe(alpha.get('web-0'));
    expect(w.pods.get('web-0')).toBe(beta.get('web-0'));
    expect(w.changedAt.get('web-0')).toBe(T0);
  });

  it('a shared pod belongs to the load balancer whose configs Secret it mounts, even a later one; to the earliest when it mounts none of theirs', async () => {
    const w = new World();
    w.qlbs = [ALPHA, BETA];
    w.slices = [slice('web', ['web-0', 'web-1']), slice('all', ['web-0', 'web-1', 'web-2'])];
    w.mounts.set('web-0', 'beta-quiclb-configs');
    w.mounts.set('web-1', 'other-quiclb-configs');
    await w.reconciler.reconcile('team/alpha');
    expect(w.enqueued).toEqual(['team/beta']); // beta waits for web-1
    await w.reconciler.reconcile('team/beta');
    expect(w.records.get('alpha')!.assigned.map((a) => a.podName)).toEqual(['web-1']);
    expect(w.records.get('beta')!.assigned.map((a) => a.podName).sort()).toEqual(['web-0', 'web-2']);
    expect(w.enqueued).toEqual(['team/beta', 'team/alpha']); // alpha waits for web-0
    await w.reconciler.reconcile('team/alpha');
    await w.reconciler.reconcile('team/beta');
    expect(w.records.get('alpha')!.assigned.map((a) => a.podName)).toEqual(['web-1']);
    expect(w.records.get('beta')!.assigned.map((a) => a.podName).sort()).toEqual(['web-0', 'web-2']);
  });

  it('the BackendPodConflict Event is recorded once while the holders stay the same, however the shared pods change', async () => {
    const w = new World();
    w.qlbs = [ALPHA, BETA];
    w.slices = [slice('web', ['web-0', 'web-1']), slice('all', ['web-0', 'web-1', 'web-2'])];
    await w.reconciler.reconcile('team/beta');
    w.slices = [slice('web', ['web-0']), slice('all', ['web-0', 'web-1', 'web-2'])];
    await w.reconciler.reconcile('team/beta');
    await w.reconciler.reconcile('team/beta');
    expect(w.events.filter((e) => e.includes('BackendPodConflict'))).toEqual(['Warning BackendPodConflict: pods of Service all belong to QuicLoadBalancer team/alpha: no server IDs assigned to them, not routed to']);
    // the conflict ends, then comes back: recorded again
    w.slices = [slice('web', []), slice('all', ['web-0', 'web-1', 'web-2'])];
    await w.reconciler.reconcile('team/beta');
    w.slices = [slice('web', ['web-1']), slice('all', ['web-0', 'web-1', 'web-2'])];
    await w.reconciler.reconcile('team/beta');
    expect(w.events.filter((e) => e.includes('BackendPodConflict'))).toHaveLength(2);
  });

  it('a load balancer whose spec cannot be read holds the Service it names: a later one naming it leaves the pods to the owners the others see', async () => {
    // gamma (Service web, earliest), then u (invalid spec, Service all), then beta (Service all); web-0 is an
    // endpoint of both Services and mounts beta's configs Secret. Everyone but beta sees web-0 as gamma's or u's.
    const w = new World();
    const u = qlb('u', T0 - 5_000_000, 'all', 445);
    w.qlbs = [qlb('gamma', T0 - 7_200_000, 'web', 443), { ...u, spec: { backend: { serviceName: 'all', portName: 'quic' }, listen: { ports: ['x'] } } }, BETA];
    w.slices = [slice('web', ['web-0']), slice('all', ['web-0', 'web-1'])];
    w.mounts.set('web-0', 'beta-quiclb-configs');
    await w.reconciler.reconcile('team/beta');
    await w.reconciler.reconcile('team/gamma');
    await w.reconciler.reconcile('team/beta');
    expect(w.records.get('beta')?.assigned ?? []).toEqual([]);
    expect(w.events.filter((e) => e.includes('BackendConflict'))).toEqual(['Warning BackendConflict: Service all belongs to QuicLoadBalancer team/u: no server IDs assigned, not served']);
    const gamma = new Map(w.records.get('gamma')!.assigned.map((a) => [a.podName, a.id]));
    expect([...gamma.keys()]).toEqual(['web-0']);
    expect(Object.fromEntries(w.pods)).toEqual({ 'web-0': gamma.get('web-0'), 'web-1': undefined, 'web-2': undefined });
  });

  it('a load balancer edited into an invalid spec keeps the claims of its last good one: a typo naming another Service takes nothing from it', async () => {
    // alpha (Service web, earliest) and beta (Service all) both serve; alpha is then edited into an invalid spec that
    // names beta's Service: alpha still serves web with its last good snapshot, beta keeps its pods.
    const w = new World();
    w.qlbs = [ALPHA, BETA];
    w.slices = [slice('web', ['web-0']), slice('all', ['web-1'])];
    await w.reconciler.reconcile('team/alpha');
    await w.reconciler.reconcile('team/beta');
    const betaIds = w.records.get('beta')!.assigned.map((a) => a.podName);
    expect(betaIds).toEqual(['web-1']);
    w.qlbs = [{ ...ALPHA, spec: { backend: { serviceName: 'all', portName: 'quic' }, listen: { ports: ['x'] } } }, BETA];
    await w.reconciler.reconcile('team/alpha'); // invalid: settles, its last snapshot stays
    await w.reconciler.reconcile('team/beta');
    expect(w.events.filter((e) => e.includes('BackendConflict'))).toEqual([]);
    expect(w.records.get('beta')!.assigned.map((a) => a.podName)).toEqual(['web-1']);
    expect(w.snapshots.get('team/beta')!.servers.map((x) => x.name)).toEqual(['web-1']);
  });

  it('a pod whose released ID comes back from the same load balancer is not drained; after a teardown, the re-created one drains it', async () => {
    const w = new World();
    w.qlbs = [ALPHA];
    w.slices = [slice('web', ['web-0', 'web-1'])];
    const states = () => Object.fromEntries(w.snapshots.get('team/alpha')!.servers.map((s) => [s.name, s.state]));
    await w.reconciler.reconcile('team/alpha');
    const id = w.pods.get('web-1')!;
    expect(states()).toEqual({ 'web-0': 'active', 'web-1': 'active' });
    // web-1 leaves the endpoints (a slice moved, a selector edited): its ID comes off, recorded as ours
    w.slices = [slice('web', ['web-0'])];
    await w.reconciler.reconcile('team/alpha');
    expect(w.pods.get('web-1')).toBeUndefined();
    expect([w.changedAt.get('web-1'), w.previous.get('web-1')]).toEqual([T0, `uid-alpha/${id}`]);
    // back within the quarantine with the same ID: routed as before, no drain
    w.slices = [slice('web', ['web-0', 'web-1'])];
    await w.reconciler.reconcile('team/alpha');
    expect(w.pods.get('web-1')).toBe(id);
    expect(states()).toEqual({ 'web-0': 'active', 'web-1': 'active' });
    await w.reconciler.reconcile('team/alpha');
    expect(states()).toEqual({ 'web-0': 'active', 'web-1': 'active' });
    // web-1 leaves again; alpha is deleted (teardown: web-0's ID off, no previous ID recorded, its keys go) and
    // re-created: the same IDs, new keys: both pods drain (web-1's recorded ID names the old UID)
    w.slices = [slice('web', ['web-0'])];
    await w.reconciler.reconcile('team/alpha');
    w.qlbs = [qlb('alpha', T0 - 7_200_000, 'web', 443, true)];
    await w.reconciler.reconcile('team/alpha');
    expect(w.records.has('alpha')).toBe(false);
    expect([w.pods.get('web-0'), w.changedAt.get('web-0'), w.previous.has('web-0')]).toEqual([undefined, T0, false]);
    w.qlbs = [{ ...ALPHA, metadata: { ...ALPHA.metadata, uid: 'uid-alpha-2' } }];
    w.slices = [slice('web', ['web-0', 'web-1'])];
    await w.reconciler.reconcile('team/alpha');
    expect(w.pods.get('web-1')).toBe(id);
    expect(states()).toEqual({ 'web-0': 'draining', 'web-1': 'draining' });
  });

  it('a pod released while its own ID change is still propagating records no previous ID: given it back, it still drains', async () => {
    const w = new World();
    w.qlbs = [ALPHA];
    w.slices = [slice('web', ['web-0', 'web-1'])];
    await w.reconciler.reconcile('team/alpha');
    const id = w.pods.get('web-1')!;
    // web-1's ID was written 10 s ago (a hand-over): it may still mint the one before
    w.changedAt.set('web-1', T0 - 10_000);
    w.slices = [slice('web', ['web-0'])];
    await w.reconciler.reconcile('team/alpha');
    expect(w.pods.get('web-1')).toBeUndefined();
    expect(w.previous.has('web-1')).toBe(false);
    w.slices = [slice('web', ['web-0', 'web-1'])];
    await w.reconciler.reconcile('team/alpha');
    expect(w.pods.get('web-1')).toBe(id);
    expect(Object.fromEntries(w.snapshots.get('team/alpha')!.servers.map((s) => [s.name, s.state]))).toEqual({ 'web-0': 'active', 'web-1': 'draining' });
  });

  it('a pod re-created under the same name keeps the ID given it, however late the pod cache is; a clear meant for the old pod is refused by UID', async () => {
    const w = new World();
    w.qlbs = [ALPHA];
    // web-0 was re-created (StatefulSet): the slice has the new UID, the cache still the old pod with its ID
    w.slices = [slice('web', ['web-0', 'web-1'])];
    w.records.set('alpha', {
      assigned: [
        { id: '0007', podUid: 'uid-web-0-old', podName: 'web-0', assignedAt: T0 - 9000 },
        { id: '0008', podUid: 'uid-web-1-old', podName: 'web-1', assignedAt: T0 - 9000 },
      ],
      released: [],
    });
    w.cachedUids.set('web-0', 'uid-web-0-old');
    w.cachedIds.set('web-0', '0007');
    await w.reconciler.reconcile('team/alpha');
    const ids = new Map(w.records.get('alpha')!.assigned.map((a) => [a.podUid, a.id]));
    expect(ids.has('uid-web-0-old')).toBe(false);
    expect(w.pods.get('web-0')).toBe(ids.get('uid-web-0')); // not stripped by the clear of 0007
    expect(w.changedAt.has('web-0')).toBe(false); // the cached 0007 was another pod's: no hand-over
    // web-2 was re-created and is not an endpoint yet; the cache still shows the old one with alpha's ID: the clear is refused
    const w2 = new World();
    w2.qlbs = [ALPHA];
    w2.slices = [slice('web', [])];
    w2.records.set('alpha', { assigned: [{ id: '0007', podUid: 'uid-web-2-old', podName: 'web-2', assignedAt: T0 - 9000 }], released: [] });
    w2.cachedUids.set('web-2', 'uid-web-2-old');
    w2.cachedIds.set('web-2', '0007');
    w2.pods.set('web-2', '0003'); // the new pod's, from another load balancer
    expect(await w2.reconciler.reconcile('team/alpha')).toMatchObject({ kind: 'requeue-after' });
    expect(w2.records.get('alpha')!.released.map((r) => r.id)).toEqual(['0007']);
    expect(w2.pods.get('web-2')).toBe('0003');
    expect(w2.changedAt.has('web-2')).toBe(false);
  });

  it('remembers only the state Events of the last run while Degraded stays True (not every text since)', async () => {
    const w = new World();
    w.slices = [slice('web', ['web-0', 'web-1']), slice('all', ['web-0', 'web-1', 'web-2'])];
    const remembered = () => (w.reconciler as unknown as { stateEvents: Map<string, Set<string>> }).stateEvents.get('team/beta');
    for (const holder of ['alpha', 'gamma', 'delta']) {
      w.qlbs = [qlb(holder, T0 - 7_200_000, 'web', 443), BETA];
      await w.reconciler.reconcile('team/beta');
    }
    expect([...remembered()!]).toEqual(['BackendPodConflict\npods of Service all belong to QuicLoadBalancer team/delta: no server IDs assigned to them, not routed to']);
  });
});
