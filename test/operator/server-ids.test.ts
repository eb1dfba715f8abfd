import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { encodeRecords, MAX_RECORDS, MAX_RECORDS_BYTES } from '../../operator/allocation/records-codec.js';
import {
  allocateServerIds,
  EMPTY_RECORDS,
  idSpaceSize,
  serverIdCapacity,
  type EndpointObservation,
  type ServerIdRecords,
} from '../../operator/allocation/server-ids.js';

const T0 = Date.parse('2026-12-04T12:00:00Z');
const Q = 10 * 60_000;

function ep(name: string, extra: Partial<EndpointObservation> = {}): EndpointObservation {
  return { podUid: `uid-${name}`, podName: name, addresses: [`198.51.100.${name.length}`], ...extra };
}

function run(records: ServerIdRecords, endpoints: EndpointObservation[], now = T0, length = 1, quarantineMs = Q) {
  return allocateServerIds({ records, endpoints, length, quarantineMs, now });
}

const idsOf = (r: ReturnType<typeof run>): Record<string, string> => Object.fromEntries(r.assignments.map((a) => [a.podName, a.serverId]));

describe('allocateServerIds: table', () => {
  it('assigns the lowest free IDs, ready endpoints first, then by name', () => {
    const r = run(EMPTY_RECORDS, [ep('c'), ep('b', { ready: false }), ep('a')]);
    expect(idsOf(r)).toEqual({ a: '00', c: '01', b: '02' });
    expect(r.allocated).toEqual(['00', '01', '02']);
    expect(r.changed).toBe(true);
    expect(r.exhausted).toBeNull();
    expect(r.assignments.find((a) => a.podName === 'b')).toMatchObject({ state: 'draining', phase: 'not-ready', isNew: true });
    expect(r.assignments.find((a) => a.podName === 'a')).toMatchObject({ state: 'active', phase: 'ready' });
  });

  it('pads IDs to the configured length in hex', () => {
    const r = run(EMPTY_RECORDS, [ep('a')], T0, 3);
    expect(r.assignments[0].serverId).toBe('000000');
  });

  it('is a no-op on unchanged input (nothing to write)', () => {
    const first = run(EMPTY_RECORDS, [ep('a'), ep('b')]);
    const again = run(first.records, [ep('a'), ep('b')], T0 + 1000);
    expect(again.changed).toBe(false);
    expect(again.allocated).toEqual([]);
    expect(idsOf(again)).toEqual(idsOf(first));
  });

  it('keeps a terminating endpoint on its ID as draining, and gives a new terminating endpoint no ID', () => {
    const first = run(EMPTY_RECORDS, [ep('a'), ep('b')]);
    const r = run(first.records, [ep('a', { ready: false, serving: true, terminating: true }), ep('b'), ep('z', { terminating: true, ready: false })]);
    expect(idsOf(r)).toEqual({ a: '00', b: '01' });
    expect(r.assignments[0]).toMatchObject({ podName: 'a', state: 'draining', phase: 'terminating' });
    expect(r.exhausted).toBeNull();
  });

  it('merges a pod listed in two slices (IPv4 and IPv6) into one backend with one ID', () => {
    const r = run(EMPTY_RECORDS, [
      { podUid: 'u1', podName: 'p', addresses: ['198.51.100.1'], ready: false },
      { podUid: 'u1', podName: 'p', addresses: ['2001:db8::1'], ready: true, nodeName: 'n1' },
    ]);
    expect(r.assignments).toHaveLength(1);
    expect(r.assignments[0]).toMatchObject({ serverId: '00', addresses: ['198.51.100.1', '2001:db8::1'], state: 'active', nodeName: 'n1' });
  });

  it('quarantines the ID of a gone pod, skips it for newcomers, frees it after the period', () => {
    const first = run(EMPTY_RECORDS, [ep('a'), ep('b')]);
    const gone = run(first.records, [ep('b'), ep('c')], T0 + 1000);
    expect(gone.releasedNow).toEqual(['00']);
    expect(idsOf(gone)).toEqual({ b: '01', c: '02' });
    expect(gone.records.released).toEqual([{ id: '00', podUid: 'uid-a', podName: 'a', releasedAt: T0 + 1000 }]);
    // one ms before the end of the quarantine the ID is still held
    const almost = run(gone.records, [ep('b'), ep('c'), ep('d')], T0 + 1000 + Q - 1);
    expect(idsOf(almost).d).toBe('03');
    const after = run(almost.records, [ep('b'), ep('c'), ep('d'), ep('e')], T0 + 1000 + Q);
    expect(after.expired).toEqual(['00']);
    expect(idsOf(after).e).toBe('00');
    expect(after.records.released).toEqual([]);
  });

  it('gives a pod that reappears within its quarantine its old ID back', () => {
    const first = run(EMPTY_RECORDS, [ep('a'), ep('b')]);
    const gone = run(first.records, [ep('b')], T0 + 1000);
    const back = run(gone.records, [ep('x'), ep('a'), ep('b')], T0 + 2000);
    expect(idsOf(back)).toEqual({ a: '00', b: '01', x: '02' });
    expect(back.records.released).toEqual([]);
  });

  it('releases immediately with a zero quarantine', () => {
    const first = run(EMPTY_RECORDS, [ep('a')], T0, 1, 0);
    const r = run(first.records, [ep('b')], T0 + 1, 1, 0);
    expect(idsOf(r)).toEqual({ b: '00' });
    expect(r.records.released).toEqual([]);
  });

  it('reports exhaustion with counts, the waiting endpoints and when an ID frees, and recovers', () => {
    // 1 octet = 256 IDs; 255 pods plus one quarantined ID fill the space
    const many = Array.from({ length: 256 }, (_, i) => ep(`p${String(i).padStart(3, '0')}`));
    const full = run(EMPTY_RECORDS, many);
    expect(full.exhausted).toBeNull();
    const withGone = run(full.records, many.slice(1), T0 + 1000); // p000 gone: 00 quarantined
    const r = run(withGone.records, [...many.slice(1), ep('new1'), ep('new2', { ready: false })], T0 + 2000);
    expect(r.exhausted).not.toBeNull();
    expect(r.exhausted!.unassigned.map((u) => u.podName)).toEqual(['new1', 'new2']);
    expect(r.exhausted!.capacity).toBe(256n);
    expect(r.exhausted!.assigned).toBe(255);
    expect(r.exhausted!.quarantined).toBe(1);
    expect(r.exhausted!.nextReleaseAt).toBe(T0 + 1000 + Q);
    expect(r.exhausted!.message).toMatch(/^2 endpoint\(s\) have no server ID: all 256 IDs of 1 octet\(s\) are assigned \(255\) or quarantined \(1\); the next quarantined ID frees at 2026-12-04T12:10:01.000Z/);
    expect(r.assignments).toHaveLength(255);
    // after the quarantine, the ready endpoint gets the freed ID first
    const later = run(r.records, [...many.slice(1), ep('new1'), ep('new2', { ready: false })], T0 + 1000 + Q);
    expect(idsOf(later).new1).toBe('00');
    expect(later.exhausted!.unassigned.map((u) => u.podName)).toEqual(['new2']);
    expect(later.exhausted!.nextReleaseAt).toBeNull();
  });

  it('stays within what the records object holds: past MAX_RECORDS assigned plus quarantined, endpoints wait (exhaustion)', () => {
    expect(serverIdCapacity(1)).toBe(256n);
    expect(serverIdCapacity(2)).toBe(BigInt(MAX_RECORDS));
    // 2 octets: 65536 IDs, but MAX_RECORDS - 1 pods and one quarantined ID fill the records.
    const many = Array.from({ length: MAX_RECORDS }, (_, i) => ep(`p${String(i).padStart(4, '0')}`));
    const full = run(EMPTY_RECORDS, many, T0, 2);
    expect(full.exhausted).toBeNull();
    const withGone = run(full.records, many.slice(1), T0 + 1000, 2); // p0000 gone: 0000 quarantined
    const r = run(withGone.records, [...many.slice(1), ep('new1'), ep('new2')], T0 + 2000, 2);
    expect(r.assignments).toHaveLength(MAX_RECORDS - 1);
    expect(r.exhausted!.unassigned.map((u) => u.podName)).toEqual(['new1', 'new2']);
    expect(r.exhausted!.capacity).toBe(BigInt(MAX_RECORDS));
    expect(r.exhausted!.message).toMatch(
      new RegExp(`^2 endpoint\\(s\\) have no server ID: the IDs assigned \\(${MAX_RECORDS - 1}\\) and quarantined \\(1\\) are at the bound of ${MAX_RECORDS} records .*shorten connectionIds\\.serverIdQuarantine`),
    );
    expect(() => encodeRecords({ serverIdLength: 2, records: r.records })).not.toThrow(); // the records stay writable: other changes go on
    // after the quarantine, new1 gets a free ID (records: MAX_RECORDS - 1 assigned, 1 new)
    const later = run(r.records, [...many.slice(1), ep('new1'), ep('new2')], T0 + 1000 + Q, 2);
    expect(later.exhausted!.unassigned.map((u) => u.podName)).toEqual(['new2']);
    expect(later.records.assigned.length + later.records.released.length).toBe(MAX_RECORDS);
  });

  it('stays within the records object\'s bytes too: with pod names of 253 characters, endpoints wait before the text outgrows MAX_RECORDS_BYTES', () => {
    const long = (i: number): EndpointObservation => {
      const name = `p${String(i).padStart(4, '0')}-`.padEnd(253, 'x');
      return { podUid: `0000${String(i).padStart(4, '0')}-1111-2222-3333-444444444444`, podName: name, addresses: ['198.51.100.1'] };
    };
    const many = Array.from({ length: 3500 }, (_, i) => long(i));
    const r = run(EMPTY_RECORDS, many, T0, 2);
    const text = encodeRecords({ serverIdLength: 2, records: r.records }); // must not throw: the records stay writable
    expect(text.length).toBeLessThanOrEqual(MAX_RECORDS_BYTES);
    expect(r.assignments.length).toBeGreaterThan(2500);
    expect(r.assignments.length).toBeLessThan(3500);
    expect(r.exhausted!.unassigned).toHaveLength(3500 - r.assignments.length);
    expect(r.exhausted!.message).toMatch(new RegExp(`are at the bound of ${MAX_RECORDS_BYTES} bytes of records per load balancer.*split them over several QuicLoadBalancers`));
    // one more record would not have fitted
    const extra = run(r.records, many.slice(0, r.assignments.length + 1), T0 + 1, 2);
    expect(extra.assignments).toHaveLength(r.assignments.length);
    // a pod leaving (quarantined) keeps its record: the bytes stay the same and nothing is assigned in its place
    const gone = run(r.records, [...many.slice(1)], T0 + 2, 2);
    expect(() => encodeRecords({ serverIdLength: 2, records: gone.records })).not.toThrow();
    expect(gone.assignments).toHaveLength(r.assignments.length - 1);
  });

  it('repairs broken records: wrong length, bad hex, an ID held twice, a pod twice', () => {
    const records: ServerIdRecords = {
      assigned: [
        { id: '01', podUid: 'uid-a', podName: 'a', assignedAt: T0 - 10 },
        { id: '01', podUid: 'uid-b', podName: 'b', assignedAt: T0 - 5 }, // later holder of 01: loses it
        { id: '02', podUid: 'uid-a', podName: 'a', assignedAt: T0 - 1 }, // a second ID for a
        { id: '0003', podUid: 'uid-c', podName: 'c', assignedAt: T0 - 1 },
        { id: 'zz', podUid: 'uid-d', podName: 'd', assignedAt: T0 - 1 },
      ],
      released: [{ id: '01', podUid: 'uid-old', podName: 'old', releasedAt: T0 - 1 }],
    };
    const r = run(records, [ep('a'), ep('b'), ep('c'), ep('d')]);
    expect(r.repairs).toHaveLength(5);
    expect(idsOf(r)).toEqual({ a: '01', b: '00', c: '02', d: '03' });
    const ids = r.assignments.map((a) => a.serverId);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('rejects an impossible length (a programming error, not an input)', () => {
    expect(() => run(EMPTY_RECORDS, [], T0, 16)).toThrow(RangeError);
  });
});

// ---- properties

/** A random history of endpoint sets, applied in time order. */
const podNames = fc.constantFrom(...Array.from({ length: 40 }, (_, i) => `pod-${i}`));
const endpointArb = fc.record({
  name: podNames,
  ready: fc.boolean(),
  terminating: fc.boolean(),
});
const stepArb = fc.record({ endpoints: fc.array(endpointArb, { maxLength: 40 }), advanceMs: fc.integer({ min: 0, max: 2 * Q }) });

function toEndpoints(step: { endpoints: { name: string; ready: boolean; terminating: boolean }[] }): EndpointObservation[] {
  return step.endpoints.map((e) => ep(e.name, { ready: e.ready && !e.terminating, terminating: e.terminating }));
}

describe('allocateServerIds: properties', () => {
  it('IDs are unique, stable while a pod lives, and never reused within the quarantine', () => {
    fc.assert(
      fc.property(fc.array(stepArb, { minLength: 1, maxLength: 25 }), fc.integer({ min: 1, max: 2 }), (steps, length) => {
        let records = EMPTY_RECORDS;
        let now = T0;
        const current = new Map<string, string>(); // podUid -> id while present
        const lastOwner = new Map<string, { uid: string; goneAt: number | null }>(); // id -> last holder
        for (const step of steps) {
          now += step.advanceMs;
          const endpoints = toEndpoints(step);
          const r = allocateServerIds({ records, endpoints, length, quarantineMs: Q, now });
          const ids = r.assignments.map((a) => a.serverId);
          expect(new Set(ids).size).toBe(ids.length);
          expect(r.exhausted).toBeNull(); // 40 pods always fit
          const present = new Set(endpoints.map((e) => e.podUid));
          for (const a of r.assignments) {
            const had = current.get(a.podUid);
            if (had !== undefined) expect(a.serverId).toBe(had); // stable
            const prev = lastOwner.get(a.serverId);
            if (prev && prev.uid !== a.podUid && prev.goneAt !== null) expect(now - prev.goneAt).toBeGreaterThanOrEqual(Q); // quarantined
            lastOwner.set(a.serverId, { uid: a.podUid, goneAt: null });
          }
          // every present, non-terminating pod has an ID
          for (const e of endpoints) if (!e.terminating) expect(r.assignments.some((a) => a.podUid === e.podUid)).toBe(true);
          for (const [uid, id] of [...current]) {
            if (!present.has(uid)) {
              current.delete(uid);
              const o = lastOwner.get(id);
              if (o && o.uid === uid && o.goneAt === null) o.goneAt = now;
            }
          }
          for (const a of r.assignments) current.set(a.podUid, a.serverId);
          // idempotent: the same input again changes nothing
          const again = allocateServerIds({ records: r.records, endpoints, length, quarantineMs: Q, now });
          expect(again.changed).toBe(false);
          records = r.records;
        }
      }),
      { numRuns: 200 },
    );
  });

  it('exhaustion is exact: n endpoints fit iff n <= capacity - quarantined', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 200, max: 300 }), (quarantined, n) => {
        const gone = Array.from({ length: quarantined }, (_, i) => ep(`gone-${i}`));
        const a = allocateServerIds({ records: EMPTY_RECORDS, endpoints: gone, length: 1, quarantineMs: Q, now: T0 });
        const fresh = Array.from({ length: n }, (_, i) => ep(`p-${i}`));
        const r = allocateServerIds({ records: a.records, endpoints: fresh, length: 1, quarantineMs: Q, now: T0 + 1 });
        const room = 256 - quarantined;
        expect(r.assignments).toHaveLength(Math.min(n, room));
        expect(r.exhausted === null).toBe(n <= room);
        if (r.exhausted) expect(r.exhausted.unassigned).toHaveLength(n - room);
        expect(r.assignments.every((x) => !a.records.assigned.some((g) => g.id === x.serverId))).toBe(true);
      }),
      { numRuns: 100 },
    );
  });

  it('200 endpoints at once get 200 distinct IDs in one pass, in any input order', () => {
    fc.assert(
      fc.property(fc.shuffledSubarray(Array.from({ length: 200 }, (_, i) => i), { minLength: 200, maxLength: 200 }), (order) => {
        const endpoints = order.map((i) => ep(`pod-${String(i).padStart(3, '0')}`));
        const r = allocateServerIds({ records: EMPTY_RECORDS, endpoints, length: 2, quarantineMs: Q, now: T0 });
        expect(r.assignments).toHaveLength(200);
        expect(new Set(r.assignments.map((a) => a.serverId)).size).toBe(200);
        // deterministic: the order of the endpoints does not matter
        expect(r.assignments.find((a) => a.podName === 'pod-000')!.serverId).toBe('0000');
        expect(r.assignments.find((a) => a.podName === 'pod-199')!.serverId).toBe('00c7');
      }),
      { numRuns: 20 },
    );
  });

  it('the ID space size is 256^length', () => {
    expect(idSpaceSize(1)).toBe(256n);
    expect(idSpaceSize(15)).toBe(1n << 120n);
  });
});
