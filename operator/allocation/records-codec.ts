/**
 * The durable form of the server-ID records (what operator/allocation/store.ts keeps in the API server, one object
 * per QuicLoadBalancer, written with a resourceVersion precondition):
 *
 *   {"format": "quiclb-server-ids/1", "server_id_length": 2,
 *    "assigned": [{"id": "0001", "pod_uid": "…", "pod": "web-0", "at": "2026-…Z"}],
 *    "released": [{"id": "0002", "pod_uid": "…", "pod": "web-1", "at": "2026-…Z"}]}
 *
 * Pure. Decoding checks everything and names the field of the first problem (the text is the operator's own, but
 * anyone with write access to the object can change it). Both directions are bounded: at most MAX_RECORDS entries
 * and MAX_RECORDS_BYTES of text (the allocator keeps within both: recordTextLength), well inside the API server's 1 MiB object limit.
 */
import { ConfigError } from '../../lib/quiclb/config.js';
import { checkKeys, reqInt, requireObject } from '../../lib/config/fields.js';
import type { AssignedServerId, ReleasedServerId, ServerIdRecords } from './server-ids.js';

export const RECORDS_FORMAT = 'quiclb-server-ids/1';
export const MAX_RECORDS = 4000;
export const MAX_RECORDS_BYTES = 900 * 1024;

export interface StoredRecords {
  readonly serverIdLength: number;
  readonly records: ServerIdRecords;
}

export function encodeRecords(s: StoredRecords): string {
  const n = s.records.assigned.length + s.records.released.length;
  if (n > MAX_RECORDS) throw new ConfigError('server_ids', `${n} records exceed the bound of ${MAX_RECORDS}: shorten connectionIds.serverIdQuarantine`);
  const text = JSON.stringify({
    format: RECORDS_FORMAT,
    server_id_length: s.serverIdLength,
    assigned: s.records.assigned.map((r) => ({ id: r.id, pod_uid: r.podUid, pod: r.podName, at: new Date(r.assignedAt).toISOString() })),
    released: s.records.released.map((r) => ({ id: r.id, pod_uid: r.podUid, pod: r.podName, at: new Date(r.releasedAt).toISOString() })),
  });
  if (text.length > MAX_RECORDS_BYTES) throw new ConfigError('server_ids', `${text.length} bytes exceed the bound of ${MAX_RECORDS_BYTES}`);
  return text;
}

// toISOString() is 24 characters for every year the operator will see.
const AT_SAMPLE = new Date(0).toISOString();

/** The characters one record adds to encodeRecords' text (its entry and the comma before the next one). */
export function recordTextLength(r: { readonly id: string; readonly podUid: string; readonly podName: string }): number {
  return JSON.stringify({ id: r.id, pod_uid: r.podUid, pod: r.podName, at: AT_SAMPLE }).length + 1;
}

/** The characters of encodeRecords' text around the records (the longest server_id_length). */
export const RECORDS_ENVELOPE_LENGTH = JSON.stringify({ format: RECORDS_FORMAT, server_id_length: 15, assigned: [], released: [] }).length;

function time(path: string, v: unknown): number {
  const t = typeof v === 'string' && v.length <= 40 ? Date.parse(v) : NaN;
  if (!Number.isFinite(t)) throw new ConfigError(path, 'must be an RFC 3339 time');
  return t;
}

function text(path: string, v: unknown, max: number): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > max) throw new ConfigError(path, `must be a string of 1..${max} characters`);
  return v;
}

function entries(path: string, v: unknown, length: number): { id: string; podUid: string; podName: string; at: number }[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new ConfigError(path, 'must be a list');
  if (v.length > MAX_RECORDS) throw new ConfigError(path, `holds ${v.length} entries, more than ${MAX_RECORDS}`);
  const idRe = new RegExp(`^[0-9a-f]{${2 * length}}$`);
  return v.map((e, i) => {
    const p = `${path}[${i}]`;
    const o = requireObject(p, e);
    checkKeys(p, o, ['id', 'pod_uid', 'pod', 'at']);
    if (typeof o.id !== 'string' || !idRe.test(o.id)) throw new ConfigError(`${p}.id`, `must be ${2 * length} lower-case hex digits (a ${length}-octet server ID)`);
    return { id: o.id, podUid: text(`${p}.pod_uid`, o.pod_uid, 300), podName: text(`${p}.pod`, o.pod, 300), at: time(`${p}.at`, o.at) };
  });
}

/** Parses the stored text; throws ConfigError with `server_ids.` paths. */
export function decodeRecords(input: string): StoredRecords {
  if (input.length > MAX_RECORDS_BYTES) throw new ConfigError('server_ids', `${input.length} bytes exceed the bound of ${MAX_RECORDS_BYTES}`);
  let raw: unknown;
  try {
    raw = JSON.parse(input);
  } catch {
    throw new ConfigError('server_ids', 'not valid JSON');
  }
  const o = requireObject('server_ids', raw);
  checkKeys('server_ids', o, ['format', 'server_id_length', 'assigned', 'released']);
  if (o.format !== RECORDS_FORMAT) throw new ConfigError('server_ids.format', `must be ${JSON.stringify(RECORDS_FORMAT)}`);
  const serverIdLength = reqInt('server_ids.server_id_length', o.server_id_length, 1, 15);
  const assigned: AssignedServerId[] = entries('server_ids.assigned', o.assigned, serverIdLength).map((e) => ({ id: e.id, podUid: e.podUid, podName: e.podName, assignedAt: e.at }));
  const released: ReleasedServerId[] = entries('server_ids.released', o.released, serverIdLength).map((e) => ({ id: e.id, podUid: e.podUid, podName: e.podName, releasedAt: e.at }));
  if (assigned.length + released.length > MAX_RECORDS) throw new ConfigError('server_ids', `more than ${MAX_RECORDS} records`);
  return { serverIdLength, records: { assigned, released } };
}
