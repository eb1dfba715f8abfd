// The server-ID records' contract with the API server (tier 1): the pure allocator (operator/allocation/server-ids.ts)
// plus its durable form (records-codec.ts) written with the read resourceVersion as precondition. This drives the
// real optimistic concurrency from the test (operator/allocation/store.ts will do the same in the product):
// racing writers never hand out one ID twice, a writer killed between compute and write loses nothing, and a
// restarted one keeps every assigned ID.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import * as k8s from '@kubernetes/client-node';
import { allocateServerIds, EMPTY_RECORDS, type AllocationResult, type EndpointObservation } from '../../operator/allocation/server-ids.js';
import { decodeRecords, encodeRecords } from '../../operator/allocation/records-codec.js';
import { adminKubeConfig, createNamespace, deleteNamespace } from './cluster.js';

const DATA_KEY = 'server-ids.json';
const LENGTH = 1; // 256 IDs: 200 pods fit, exhaustion is reachable
const QUARANTINE = 60_000;

function endpoints(from: number, to: number): EndpointObservation[] {
  return Array.from({ length: to - from }, (_, i) => ({ podUid: `uid-${from + i}`, podName: `web-${from + i}`, addresses: [`198.51.100.${(from + i) % 250}`] }));
}

describe('server-ID records in the API server, written with preconditions', () => {
  let ns: string;
  let core: k8s.CoreV1Api;
  let conflicts = 0;

  beforeAll(async () => {
    ns = await createNamespace('ids');
    core = adminKubeConfig().makeApiClient(k8s.CoreV1Api);
  });
  afterAll(async () => {
    await deleteNamespace(ns);
  });

  /** One reconcile of one allocator: read, compute, write if changed; a 409 re-reads (bounded). */
  async function allocate(name: string, eps: EndpointObservation[], now: number, write = true): Promise<AllocationResult> {
    for (let attempt = 0; attempt < 50; attempt++) {
      let cm: k8s.V1ConfigMap | null = null;
      try {
        cm = await core.readNamespacedConfigMap({ name, namespace: ns });
      } catch (e) {
        if (!(e instanceof k8s.ApiException && e.code === 404)) throw e;
      }
      const stored = cm?.data?.[DATA_KEY] ? decodeRecords(cm.data[DATA_KEY]) : { serverIdLength: LENGTH, records: EMPTY_RECORDS };
      const r = allocateServerIds({ records: stored.records, endpoints: eps, length: LENGTH, quarantineMs: QUARANTINE, now });
      if (!r.changed || !write) return r;
      const data = { [DATA_KEY]: encodeRecords({ serverIdLength: LENGTH, records: r.records }) };
      try {
        if (cm === null) await core.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name, namespace: ns }, data } });
        else await core.replaceNamespacedConfigMap({ name, namespace: ns, body: { ...cm, data } });
        return r;
      } catch (e) {
        if (e instanceof k8s.ApiException && e.code === 409) {
          conflicts++;
          continue; // someone wrote first (or created it): re-read
        }
        throw e;
      }
    }
    throw new Error('no write succeeded in 50 attempts');
  }

  async function stored(name: string) {
    const cm = await core.readNamespacedConfigMap({ name, namespace: ns });
    return decodeRecords(cm.data![DATA_KEY]).records;
  }

  it('200 endpoints at once, two writers racing with the same view: 200 distinct IDs, one write wins', async () => {
    const t = Date.now();
    conflicts = 0;
    const eps = endpoints(0, 200);
    const [a, b] = await Promise.all([allocate('race', eps, t), allocate('race', eps, t)]);
    const rec = await stored('race');
    expect(rec.assigned).toHaveLength(200);
    expect(new Set(rec.assigned.map((r) => r.id)).size).toBe(200);
    // deterministic: both computed the same assignment, whoever won
    expect(a.assignments.map((x) => x.serverId)).toEqual(b.assignments.map((x) => x.serverId));
  });

  it('writers racing with different (stale) views never give one ID to two pods', async () => {
    const t = Date.now();
    const views = [endpoints(0, 120), endpoints(60, 200), endpoints(30, 170), endpoints(0, 200)];
    const firstId = new Map<string, string>();
    for (let round = 0; round < 3; round++) {
      await Promise.all(views.map((v, i) => allocate('stale', v, t + round * 1000 + i)));
      const rec = await stored('stale');
      const ids = [...rec.assigned.map((r) => r.id), ...rec.released.map((r) => r.id)];
      expect(new Set(ids).size).toBe(ids.length); // assigned and quarantined IDs are all distinct
      expect(new Set(rec.assigned.map((r) => r.podUid)).size).toBe(rec.assigned.length);
      // a pod a stale writer released comes back to its own ID (its quarantine is kept for it)
      for (const r of [...rec.assigned, ...rec.released]) {
        if (!firstId.has(r.podUid)) firstId.set(r.podUid, r.id);
        expect({ pod: r.podName, id: r.id }).toEqual({ pod: r.podName, id: firstId.get(r.podUid) });
      }
    }
    // a writer with the full view gives every pod its ID
    await allocate('stale', endpoints(0, 200), t + 10_000);
    expect((await stored('stale')).assigned).toHaveLength(200);
    expect(conflicts).toBeGreaterThan(0); // the preconditions did their work
  });

  it('a writer killed between compute and write loses nothing; the next one keeps every assigned ID', async () => {
    const t = Date.now();
    await allocate('restart', endpoints(0, 100), t);
    const before = await stored('restart');
    // the "killed" operator computed an allocation for 100 more pods but never wrote it
    await allocate('restart', endpoints(0, 200), t + 1000, false);
    expect(await stored('restart')).toEqual(before);
    // its successor sees the same API state and the full endpoint list
    const r = await allocate('restart', endpoints(0, 200), t + 2000);
    const after = await stored('restart');
    for (const old of before.assigned) expect(after.assigned.find((x) => x.podUid === old.podUid)?.id).toBe(old.id);
    expect(r.allocated).toHaveLength(100);
  });

  it('exhaustion is a result, and the quarantined IDs free up after their period', async () => {
    const t = Date.now();
    await allocate('full', endpoints(0, 256), t);
    await allocate('full', endpoints(10, 256), t + 1000); // 10 pods gone: their IDs quarantined
    const full = await allocate('full', [...endpoints(10, 256), ...endpoints(300, 305)], t + 2000);
    expect(full.exhausted?.unassigned).toHaveLength(5);
    expect(full.exhausted?.message).toContain('all 256 IDs of 1 octet(s) are assigned (246) or quarantined (10)');
    const later = await allocate('full', [...endpoints(10, 256), ...endpoints(300, 305)], t + 1000 + QUARANTINE);
    expect(later.exhausted).toBeNull();
    const rec = await stored('full');
    expect(rec.assigned).toHaveLength(251);
    expect(new Set(rec.assigned.map((r) => r.id)).size).toBe(251);
  });
});
