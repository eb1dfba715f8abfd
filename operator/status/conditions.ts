/**
 * metav1.Condition semantics for QuicLoadBalancer status (TOOLCHAIN.md §2.5, §5): one entry per type, CamelCase
 * reason, `observedGeneration` of the spec the verdict was computed from, and a `lastTransitionTime` that moves only
 * when the status flips (a new reason or message alone keeps it). Pure: `now` is injected; times are RFC 3339 in
 * whole seconds, as metav1.Time serialises them.
 */

export type ConditionStatus = 'True' | 'False' | 'Unknown';

export interface Condition {
  readonly type: string;
  readonly status: ConditionStatus;
  readonly observedGeneration: number;
  readonly lastTransitionTime: string;
  readonly reason: string;
  readonly message: string;
}

/** What a condition function decides; conditions.ts adds the bookkeeping. */
export interface Verdict {
  readonly status: ConditionStatus;
  readonly reason: string;
  readonly message: string;
}

/** The CRD's bound on condition messages. */
export const MAX_MESSAGE = 32768;
const REASON = /^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/;

export function metaTime(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

export function findCondition(list: readonly Condition[] | undefined, type: string): Condition | undefined {
  return list?.find((c) => c.type === type);
}

/** The condition `type` with `verdict` for `generation`, keeping the previous transition time unless the status flips. */
export function makeCondition(previous: readonly Condition[] | undefined, type: string, verdict: Verdict, generation: number, now: number): Condition {
  if (!REASON.test(verdict.reason)) throw new Error(`condition ${type}: reason ${JSON.stringify(verdict.reason)} is not a CamelCase identifier`);
  const old = findCondition(previous, type);
  const message = verdict.message.length > MAX_MESSAGE ? `${verdict.message.slice(0, MAX_MESSAGE - 1)}…` : verdict.message;
  return {
    type,
    status: verdict.status,
    observedGeneration: generation,
    lastTransitionTime: old && old.status === verdict.status ? old.lastTransitionTime : metaTime(now),
    reason: verdict.reason,
    message,
  };
}

/** `list` with the condition `type` set (replaced in place, or appended), other types untouched. */
export function setCondition(list: readonly Condition[] | undefined, type: string, verdict: Verdict, generation: number, now: number): Condition[] {
  const next = makeCondition(list, type, verdict, generation, now);
  const out = [...(list ?? [])];
  const i = out.findIndex((c) => c.type === type);
  if (i >= 0) out[i] = next;
  else out.push(next);
  return out;
}

/** What `kubectl wait --for=condition=TYPE` checks: True, and computed for the current generation. */
export function isTrueFor(list: readonly Condition[] | undefined, type: string, generation: number): boolean {
  const c = findCondition(list, type);
  return c !== undefined && c.status === 'True' && c.observedGeneration >= generation;
}

/** Whether writing `next` would change anything the API server holds (so an unchanged status is not re-applied). */
export function sameConditions(a: readonly Condition[] | undefined, b: readonly Condition[] | undefined): boolean {
  const key = (l: readonly Condition[] | undefined): string =>
    JSON.stringify([...(l ?? [])].sort((x, y) => (x.type < y.type ? -1 : 1)).map((c) => [c.type, c.status, c.observedGeneration, c.lastTransitionTime, c.reason, c.message]));
  return key(a) === key(b);
}
