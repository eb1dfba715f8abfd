/**
 * Server-ID allocation (DESIGN.md "Server IDs"; draft-21 §5.1): pure. From the durable records (what the API server
 * holds), the current endpoints of the backend Service, the ID length, the quarantine period and `now`, it computes
 * the new records and one assignment per endpoint.
 *
 * Rules:
 * - An endpoint is a pod (its UID); a pod in several EndpointSlices (IPv4 and IPv6) is one backend with one ID.
 * - A pod keeps its ID for as long as it appears; one that reappears within the quarantine period gets its old ID back.
 * - A pod that is gone releases its ID, which no other pod gets for `quarantineMs` (its connections' packets must
 *   never reach a stranger); then the released record is dropped.
 * - New IDs: the lowest value that is neither assigned nor quarantined. Deterministic on purpose: two operator
 *   replicas looking at the same records compute the same answer (the API write with a resourceVersion
 *   precondition catches the rest), exhaustion is exact, tests are reproducible, and the records stay dense. With
 *   encryption the value is hidden from observers anyway; the draft reserves no server-ID value (only config id
 *   0b111, which is not part of the server ID).
 * - Terminating endpoints keep their ID and are 'draining' (no new connections); a terminating endpoint without an
 *   ID gets none (it will take no new connections). Not-ready endpoints get an ID (a starting pod needs it before it
 *   mints connection IDs) but are 'draining' until ready.
 * - Running out of IDs is a result (`exhausted`), never a throw: as many endpoints as fit get IDs, ready ones first.
 * - Records that break the rules (wrong length, bad hex, an ID held twice, a pod twice) are repaired and reported.
 * - Assigned plus quarantined IDs stay within what the records object holds (MAX_RECORDS records, MAX_RECORDS_BYTES of
 *   text: long pod names reach the second first): beyond it is exhaustion too.
 */
import { MAX_RECORDS, MAX_RECORDS_BYTES, RECORDS_ENVELOPE_LENGTH, recordTextLength } from './records-codec.js';

export interface AssignedServerId {
  /** Lower-case hex, 2 * length digits. */
  readonly id: string;
  readonly podUid: string;
  readonly podName: string;
  /** ms since the epoch */
  readonly assignedAt: number;
}

export interface ReleasedServerId {
  readonly id: string;
  readonly podUid: string;
  readonly podName: string;
  readonly releasedAt: number;
}

/** The durable record (stored in the API server by operator/allocation/store.ts). */
export interface ServerIdRecords {
  readonly assigned: readonly AssignedServerId[];
  readonly released: readonly ReleasedServerId[];
}

export const EMPTY_RECORDS: ServerIdRecords = Object.freeze({ assigned: [], released: [] });

/** One EndpointSlice endpoint (discovery.k8s.io/v1), reduced to what allocation needs. */
export interface EndpointObservation {
  /** targetRef.uid of the pod; for an endpoint without a pod, a stable stand-in such as `address:198.51.100.7`. */
  readonly podUid: string;
  readonly podName: string;
  readonly addresses: readonly string[];
  /** EndpointSlice conditions (absent ready/serving mean true, absent terminating means false, as in the API). */
  readonly ready?: boolean;
  readonly serving?: boolean;
  readonly terminating?: boolean;
  readonly nodeName?: string;
}

export type BackendState = 'active' | 'draining';
export type BackendPhase = 'ready' | 'not-ready' | 'terminating';

export interface Assignment {
  readonly podUid: string;
  readonly podName: string;
  readonly serverId: string;
  readonly addresses: readonly string[];
  readonly nodeName?: string;
  /** active: in the fallback pool (when healthy); draining: keeps its connections, gets no new ones. */
  readonly state: BackendState;
  readonly phase: BackendPhase;
  /** true when allocated by this call */
  readonly isNew: boolean;
}

export interface Exhaustion {
  /** Endpoints without an ID, in the order they would get one. */
  readonly unassigned: readonly { readonly podUid: string; readonly podName: string }[];
  readonly capacity: bigint;
  readonly assigned: number;
  readonly quarantined: number;
  /** When the first quarantined ID becomes free (ms), or null when none is quarantined. */
  readonly nextReleaseAt: number | null;
  /** For the Degraded/ServerIDsExhausted condition. */
  readonly message: string;
}

export interface AllocationInput {
  readonly records: ServerIdRecords;
  readonly endpoints: readonly EndpointObservation[];
  /** Server-ID length in octets, 1..15. */
  readonly length: number;
  readonly quarantineMs: number;
  readonly now: number;
}

export interface AllocationResult {
  readonly records: ServerIdRecords;
  /** One per endpoint that has an ID, sorted by server ID. */
  readonly assignments: readonly Assignment[];
  readonly exhausted: Exhaustion | null;
  /** The records differ from the input: write them (with the read resourceVersion as precondition). */
  readonly changed: boolean;
  readonly allocated: readonly string[];
  readonly releasedNow: readonly string[];
  /** Quarantine ended: these IDs are free again. */
  readonly expired: readonly string[];
  /** Records that broke the rules and were dropped, with why. */
  readonly repairs: readonly string[];
}

/** 256^length. */
export function idSpaceSize(length: number): bigint {
  return 1n << BigInt(8 * length);
}

/**
 * How many IDs can be assigned or quarantined at once: the ID space, bounded by the records object
 * (records-codec.ts, MAX_RECORDS), which must stay writable for any other change to be made.
 */
export function serverIdCapacity(length: number): bigint {
  const size = idSpaceSize(length);
  return size < BigInt(MAX_RECORDS) ? size : BigInt(MAX_RECORDS);
}

export function formatServerId(value: bigint, length: number): string {
  return value.toString(16).padStart(2 * length, '0');
}

function parseServerId(id: string, length: number): bigint | null {
  if (typeof id !== 'string' || id.length !== 2 * length || !/^[0-9a-f]+$/.test(id)) return null;
  return BigInt(`0x${id}`);
}

interface Backend {
  podUid: string;
  podName: string;
  addresses: string[];
  nodeName?: string;
  phase: BackendPhase;
}

function phaseOf(e: EndpointObservation): BackendPhase {
  if (e.terminating === true) return 'terminating';
  return e.ready === false ? 'not-ready' : 'ready';
}

const PHASE_RANK: Record<BackendPhase, number> = { ready: 0, 'not-ready': 1, terminating: 2 };

/** One backend per pod UID: addresses merged; the pod counts as ready when any of its endpoints is. */
function mergeEndpoints(endpoints: readonly EndpointObservation[]): Map<string, Backend> {
  const byUid = new Map<string, Backend>();
  for (const e of endpoints) {
    const phase = phaseOf(e);
    const prev = byUid.get(e.podUid);
    if (!prev) {
      byUid.set(e.podUid, { podUid: e.podUid, podName: e.podName, addresses: [...e.addresses], nodeName: e.nodeName, phase });
      continue;
    }
    for (const a of e.addresses) if (!prev.addresses.includes(a)) prev.addresses.push(a);
    if (PHASE_RANK[phase] < PHASE_RANK[prev.phase]) prev.phase = phase;
    prev.nodeName ??= e.nodeName;
  }
  return byUid;
}

function byName(a: { podName: string; podUid: string }, b: { podName: string; podUid: string }): number {
  return a.podName < b.podName ? -1 : a.podName > b.podName ? 1 : a.podUid < b.podUid ? -1 : a.podUid > b.podUid ? 1 : 0;
}

/** Yields the values 0.. that are not in `taken` (sorted ascending), lowest first. */
function* freeValues(taken: readonly bigint[], size: bigint): Generator<bigint> {
  let next = 0n;
  for (const t of taken) {
    for (; next < t; next++) yield next;
    if (next === t) next++;
  }
  for (; next < size; next++) yield next;
}

export function allocateServerIds(input: AllocationInput): AllocationResult {
  const { length, quarantineMs, now } = input;
  if (!Number.isInteger(length) || length < 1 || length > 15) throw new RangeError(`server ID length must be 1..15, got ${length}`);
  const size = idSpaceSize(length);
  const repairs: string[] = [];
  const backends = mergeEndpoints(input.endpoints);

  // 1. Valid assigned records: one per pod, one per ID; the earliest assignment wins a conflict.
  const assigned = new Map<string, AssignedServerId>(); // podUid -> record
  const holder = new Map<string, string>(); // id -> podUid
  const sortedAssigned = [...input.records.assigned].sort((a, b) => a.assignedAt - b.assignedAt || byName(a, b));
  for (const r of sortedAssigned) {
    if (parseServerId(r.id, length) === null) {
      repairs.push(`dropped ${JSON.stringify(r.id)} of ${r.podName}: not a ${length}-octet server ID`);
    } else if (assigned.has(r.podUid)) {
      repairs.push(`dropped ${r.id} of ${r.podName}: the pod also holds ${assigned.get(r.podUid)!.id}`);
    } else if (holder.has(r.id)) {
      repairs.push(`dropped ${r.id} of ${r.podName}: also assigned to an earlier pod`);
    } else {
      assigned.set(r.podUid, r);
      holder.set(r.id, r.podUid);
    }
  }

  // 2. Quarantine: released records still within the period, at most one per ID (the latest release counts).
  const quarantine = new Map<string, ReleasedServerId>(); // id -> record
  const expired: string[] = [];
  for (const r of input.records.released) {
    if (parseServerId(r.id, length) === null) {
      repairs.push(`dropped released ${JSON.stringify(r.id)} of ${r.podName}: not a ${length}-octet server ID`);
      continue;
    }
    if (holder.has(r.id) && holder.get(r.id) !== r.podUid) {
      // Assigned to someone else while quarantined: the assignment stands (it may already mint), the release is moot.
      repairs.push(`dropped release of ${r.id} (${r.podName}): the ID is assigned to another pod`);
      continue;
    }
    if (holder.has(r.id)) continue; // released and assigned to the same pod: the assignment wins
    if (now - r.releasedAt >= quarantineMs) {
      expired.push(r.id);
      continue;
    }
    const prev = quarantine.get(r.id);
    if (!prev || r.releasedAt > prev.releasedAt) quarantine.set(r.id, r);
  }

  // 3. Pods that are gone release their ID now.
  const releasedNow: string[] = [];
  for (const [uid, r] of [...assigned]) {
    if (backends.has(uid)) continue;
    assigned.delete(uid);
    holder.delete(r.id);
    releasedNow.push(r.id);
    if (quarantineMs > 0) quarantine.set(r.id, { id: r.id, podUid: r.podUid, podName: r.podName, releasedAt: now });
    else expired.push(r.id);
  }

  // 4. A pod back within its quarantine gets its old ID again.
  for (const [id, q] of [...quarantine]) {
    const b = backends.get(q.podUid);
    if (!b || assigned.has(q.podUid)) continue;
    quarantine.delete(id);
    const r = { id, podUid: b.podUid, podName: b.podName, assignedAt: now };
    assigned.set(b.podUid, r);
    holder.set(id, b.podUid);
  }

  // 5. New IDs for the rest (terminating endpoints never get one), ready first, then by name.
  const waiting = [...backends.values()]
    .filter((b) => !assigned.has(b.podUid) && b.phase !== 'terminating')
    .sort((a, b) => PHASE_RANK[a.phase] - PHASE_RANK[b.phase] || byName(a, b));
  const taken = [...holder.keys(), ...quarantine.keys()].map((id) => parseServerId(id, length)!).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const free = freeValues(taken, size);
  const allocated: string[] = [];
  const unassigned: { podUid: string; podName: string }[] = [];
  // Past the records' bound nothing could be stored: not this change, nor any later one of this load balancer.
  const room = MAX_RECORDS - assigned.size - quarantine.size;
  let textLength = RECORDS_ENVELOPE_LENGTH;
  for (const r of [...assigned.values(), ...quarantine.values()]) textLength += recordTextLength(r);
  // What first left an endpoint without an ID: the ID space, the records' count, or their text's length.
  let limit: 'space' | 'records' | 'bytes' | null = null;
  const idOfLength = formatServerId(0n, length);
  for (const b of waiting) {
    const need = recordTextLength({ id: idOfLength, podUid: b.podUid, podName: b.podName });
    const refused = allocated.length >= room ? 'records' : textLength + need > MAX_RECORDS_BYTES ? 'bytes' : null;
    const v = refused === null ? free.next() : null;
    if (v === null || v.done) {
      limit ??= refused ?? 'space';
      unassigned.push({ podUid: b.podUid, podName: b.podName });
      continue;
    }
    const id = formatServerId(v.value, length);
    assigned.set(b.podUid, { id, podUid: b.podUid, podName: b.podName, assignedAt: now });
    holder.set(id, b.podUid);
    allocated.push(id);
    textLength += need;
  }

  const recordsOut: ServerIdRecords = {
    assigned: [...assigned.values()].sort((a, b) => (a.id < b.id ? -1 : 1)),
    released: [...quarantine.values()].sort((a, b) => (a.id < b.id ? -1 : 1)),
  };
  const newIds = new Set(allocated);
  const assignments: Assignment[] = recordsOut.assigned.map((r) => {
    const b = backends.get(r.podUid)!;
    return {
      podUid: r.podUid,
      podName: b.podName,
      serverId: r.id,
      addresses: b.addresses,
      ...(b.nodeName !== undefined ? { nodeName: b.nodeName } : {}),
      state: b.phase === 'ready' ? 'active' : 'draining',
      phase: b.phase,
      isNew: newIds.has(r.id),
    };
  });
  let exhausted: Exhaustion | null = null;
  if (unassigned.length > 0) {
    const releases = [...quarantine.values()].map((q) => q.releasedAt + quarantineMs);
    const nextReleaseAt = releases.length > 0 ? Math.min(...releases) : null;
    const held = `the IDs assigned (${assigned.size}) and quarantined (${quarantine.size})`;
    exhausted = {
      unassigned,
      capacity: serverIdCapacity(length),
      assigned: assigned.size,
      quarantined: quarantine.size,
      nextReleaseAt,
      message:
        `${unassigned.length} endpoint(s) have no server ID: ` +
        (limit === 'space'
          ? `all ${size} IDs of ${length} octet(s) are assigned (${assigned.size}) or quarantined (${quarantine.size})`
          : limit === 'records'
            ? `${held} are at the bound of ${MAX_RECORDS} records per load balancer`
            : `${held} are at the bound of ${MAX_RECORDS_BYTES} bytes of records per load balancer (long pod names)`) +
        (nextReleaseAt !== null ? `; the next quarantined ID frees at ${new Date(nextReleaseAt).toISOString()}` : '') +
        (limit === 'space'
          ? '. Scale the backends down, or use a QuicLoadBalancer with a longer connectionIds.serverIdLength'
          : '. Scale the backends down, shorten connectionIds.serverIdQuarantine, or split them over several QuicLoadBalancers'),
    };
  }
  return {
    records: recordsOut,
    assignments,
    exhausted,
    changed: !sameRecords(input.records, recordsOut),
    allocated,
    releasedNow,
    expired,
    repairs,
  };
}

function sameRecords(a: ServerIdRecords, b: ServerIdRecords): boolean {
  const key = (r: ServerIdRecords): string =>
    JSON.stringify([
      [...r.assigned].map((x) => [x.id, x.podUid, x.podName, x.assignedAt]).sort(),
      [...r.released].map((x) => [x.id, x.podUid, x.podName, x.releasedAt]).sort(),
    ]);
  return key(a) === key(b);
}
