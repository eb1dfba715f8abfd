/**
 * One reconcile of one QuicLoadBalancer key (namespace/name), run from the work queue:
 *
 *   gone           -> drop it from the snapshots
 *   being deleted  -> teardown (snapshots, records, configs Secret, pod annotations), then remove the finalizer
 *   otherwise      -> add the finalizer; read the durable records; observe; computeDesired(); write only what
 *                     differs, in the order that keeps every step safe to repeat: server-ID records, configs Secret
 *                     (keys durable before any data plane or backend uses them), pod annotations, snapshot, status,
 *                     then the Events and audit lines of what was recorded.
 *
 * A 409 on a records or Secret write (another writer, a stale cache) requeues at once: the next run re-reads. Every
 * run has a correlation id that the publisher and the ACK log lines repeat.
 *
 * Backend pods shared with another load balancer's backend (port-claims.ts podOwnership): when the other load
 * balancers that want pods this one owns change (it gained or lost pods), those that came or went are enqueued, so
 * one that waits takes a pod as soon as its holder stops selecting it, and one that held it before gives it up at once.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { ConfigError } from '../../lib/quiclb/config.js';
import type { DataPlaneView } from '../config-server/cache.js';
import { serverIdCapacity } from '../allocation/server-ids.js';
import type { Owner, ServerIdStore } from '../allocation/store.js';
import type { EventRecorder } from '../kube/events.js';
import { isConflict, type Informers, type QuicLoadBalancerObject } from '../kube/informers.js';
import type { SecretStore } from '../kube/secrets.js';
import { podReplaced, type ObjectWriter } from '../kube/writers.js';
import type { OperatorMetrics } from '../metrics.js';
import type { Verdict } from '../queue/work-queue.js';
import { generateKey } from '../rotation/keys.js';
import { withReconcileSpan } from '../tracing.js';
import type { Condition } from '../status/conditions.js';
import { DEGRADED } from '../status/degraded.js';
import { buildStatus } from '../status/status.js';
import { computeDesired, statusFacts, type Desired } from './desired.js';
import { addFinalizer, hasFinalizer, isDeleting, isStale, removeFinalizer } from './finalizer.js';
import { backendClaimsOf, created, observe, otherObjects } from './observe.js';
import { LastGoodSpecs } from './last-good-specs.js';
import { backendHolder, claimFor, claimsOf } from './port-claims.js';
import type { SnapshotPublisher } from './publisher.js';
import { GROUP, KIND, previousServerIdValue, readSpec, SERVER_ID_ANNOTATION, SERVER_ID_CHANGED_AT_ANNOTATION, SERVER_ID_PROPAGATION_MS, VERSION } from './spec.js';

export interface ReconcilerDeps {
  readonly informers: Informers;
  readonly ids: ServerIdStore;
  readonly secrets: SecretStore;
  readonly writer: ObjectWriter;
  readonly events: EventRecorder;
  readonly publisher: SnapshotPublisher;
  readonly dataPlanes: () => readonly DataPlaneView[];
  readonly metrics: OperatorMetrics;
  readonly logger: Logger;
  readonly now?: () => number;
  readonly freshKey?: () => Uint8Array;
  /** Reconcile every load balancer at least this often (health verdicts, rotation clocks). Default 30 s. */
  readonly resyncMs?: number;
  /** Until when data planes may still be reconnecting to this operator process (ms; it began acting recently). */
  readonly reconnectUntil?: number;
  /** How long a pod whose server ID changed may still mint with the previous one. Default SERVER_ID_PROPAGATION_MS. */
  readonly serverIdPropagationMs?: number;
  /** Reconciles another load balancer soon (the work queue's add). */
  readonly enqueue?: (key: string) => void;
  /** The last readable spec of every load balancer, for the claims others see (shared with main.ts). */
  readonly lastGoodSpecs?: LastGoodSpecs;
}

class Stage extends Error {
  constructor(
    readonly stage: string,
    override readonly cause: unknown,
  ) {
    super(`${stage}: ${cause instanceof Error ? cause.message : String(cause)}`);
  }
}

async function step<T>(stage: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw new Stage(stage, e);
  }
}

export class Reconciler {
  private readonly now: () => number;
  private readonly freshKey: () => Uint8Array;
  private readonly resyncMs: number;
  /** The last spec problem reported per key and generation (one Event per generation, not per run). */
  private readonly specProblems = new Map<string, string>();
  /**
   * Per key, the texts (reason and message) of the state Events of its last run, while Degraded has been True: one
   * whose text is the same is not recorded again when the condition's message changes (e.g. a count of pods). Only
   * the last run's are kept (bounded by what one run reports); forgotten when Degraded clears; after a restart each
   * is recorded once more.
   */
  private readonly stateEvents = new Map<string, Set<string>>();
  /** Per key, the other load balancers that wanted pods it held at its last reconcile, and those pods (Desired.waiting). */
  private readonly waiting = new Map<string, ReadonlyMap<string, readonly string[]>>();

  private readonly lastGood: LastGoodSpecs;

  constructor(private readonly d: ReconcilerDeps) {
    this.now = d.now ?? Date.now;
    this.freshKey = d.freshKey ?? generateKey;
    this.resyncMs = d.resyncMs ?? 30_000;
    this.lastGood = d.lastGoodSpecs ?? new LastGoodSpecs();
  }

  reconcile(key: string): Promise<Verdict> {
    const correlationId = randomBytes(6).toString('hex');
    return withReconcileSpan(key, correlationId, () => this.traced(key, correlationId));
  }

  private async traced(key: string, correlationId: string): Promise<Verdict> {
    const log = this.d.logger.child({ qlb: key, correlationId });
    const started = performance.now();
    try {
      const v = await this.run(key, correlationId, log);
      this.d.metrics.reconciles.inc({ result: v.kind === 'done' ? 'success' : 'requeue' });
      return v;
    } catch (e) {
      const stage = e instanceof Stage ? e.stage : 'internal';
      const cause = e instanceof Stage ? e.cause : e;
      if (isConflict(cause) || isStale(cause)) {
        this.d.metrics.reconciles.inc({ result: 'conflict' });
        log.info({ stage }, 'write lost to a newer version: re-reading');
        return { kind: 'requeue-after', ms: 50 };
      }
      this.d.metrics.reconciles.inc({ result: 'error' });
      this.d.metrics.errors.inc({ stage });
      log.warn({ stage, err: cause instanceof Error ? cause.message : String(cause) }, 'reconcile failed');
      return { kind: 'retry', error: cause };
    } finally {
      // A retained load balancer (publisher.ts) cannot be reconciled: where it is kept follows its spec and the nodes.
      this.d.publisher.refreshRetained();
      this.d.metrics.reconcileSeconds.set((performance.now() - started) / 1000);
    }
  }

  private async run(key: string, correlationId: string, log: Logger): Promise<Verdict> {
    const slash = key.indexOf('/');
    const namespace = key.slice(0, slash);
    const name = key.slice(slash + 1);
    const qlb = this.d.informers.qlbs.get(name, namespace);
    if (!qlb) {
      this.d.publisher.remove(key, correlationId);
      this.specProblems.delete(key);
      this.waiting.delete(key); // its deletion requeues every load balancer
      this.stateEvents.delete(key);
      return { kind: 'done' };
    }
    if (isDeleting(qlb)) return this.teardown(qlb, key, correlationId, log);
    if (!hasFinalizer(qlb)) {
      await step('finalizer', () => addFinalizer(this.d.writer, qlb));
      // The update event brings the object back with the finalizer.
      return { kind: 'done' };
    }
    const uid = qlb.metadata!.uid!;
    const owner: Owner = { apiVersion: `${GROUP}/${VERSION}`, kind: KIND, name, uid };
    const regarding = { namespace, name, uid };

    let spec;
    try {
      spec = readSpec(qlb.spec);
      this.specProblems.delete(key);
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      const note = `invalid spec, last good configuration kept: ${e.message}`;
      const marker = `${qlb.metadata?.generation ?? 0}:${note}`;
      if (this.specProblems.get(key) !== marker) {
        this.specProblems.set(key, marker);
        await this.d.events.record(regarding, 'Warning', 'InvalidSpec', note);
        log.warn({ err: e.message }, 'invalid spec');
      }
      this.d.metrics.errors.inc({ stage: 'spec' });
      this.d.publisher.settle(key);
      return { kind: 'requeue-after', ms: this.resyncMs };
    }

    const stored = await step('read', () => this.d.ids.read(namespace, name));
    const configs = await step('read', () => this.d.secrets.readConfigs(namespace, name));
    const userKey = spec.encryption.keySecretRef ? await step('read', () => this.d.secrets.readUserKey(namespace, spec.encryption.keySecretRef!)) : null;
    const now = this.now();
    const desired = computeDesired(
      observe({
        qlb,
        services: this.d.informers.services.list(namespace),
        slices: this.d.informers.slices.list(namespace),
        allQlbs: this.lastGood.resolve(this.d.informers.qlbs.list()),
        nodes: this.d.informers.nodes.list(),
        records: stored.records,
        rotation: configs.state,
        keys: configs.keys,
        userKey,
        freshKey: this.freshKey(),
        dataPlanes: this.d.dataPlanes(),
        configsAt: (v) => this.d.publisher.configsAt(v, key),
        ...(this.d.reconnectUntil !== undefined ? { reconnectUntil: this.d.reconnectUntil } : {}),
        now,
        pods: (pod) => this.d.informers.pods.get(pod, namespace),
        ...(this.d.serverIdPropagationMs !== undefined ? { serverIdPropagationMs: this.d.serverIdPropagationMs } : {}),
      }),
    );
    this.notifyWaiting(key, desired.waiting);

    // 1. Server-ID records.
    if (desired.allocation?.changed) {
      await step('records', () => this.d.ids.write(namespace, owner, spec.connectionIds.serverIdLength, desired.allocation!.records, stored.resourceVersion));
      this.d.metrics.allocations.inc({ kind: 'assigned' }, desired.allocation.allocated.length);
      this.d.metrics.allocations.inc({ kind: 'released' }, desired.allocation.releasedNow.length);
      log.info({ assigned: desired.allocation.allocated.length, released: desired.allocation.releasedNow.length, records: desired.allocation.records.assigned.length }, 'server-ID records written');
    }
    // 2. Configs Secret (keys stored before anyone uses them).
    if (desired.configsSecretData && !sameData(desired.configsSecretData, configs.data)) {
      await step('secret', () => this.d.secrets.writeConfigs(namespace, owner, { ...desired.configsSecretData! }, configs.resourceVersion));
      for (const a of desired.rotation.actions) if (a.kind !== 'waiting-for-acks' && a.kind !== 'waiting-for-reconnects' && a.kind !== 'blocked') this.d.metrics.rotations.inc({ phase: a.kind });
    }
    // 3. Pod annotations.
    await step('pods', () => this.annotatePods(namespace, uid, desired, now));
    // 4. Snapshot.
    if (desired.snapshot) this.d.publisher.set(key, desired.snapshot, desired.nodes, correlationId);
    else if (desired.facts.backendHolder !== null) this.d.publisher.remove(key, correlationId); // the Service's pods are another's
    else this.d.publisher.settle(key); // what was published stays (a missing key never closes a listener)
    const snapshotVersion = this.d.publisher.versionOf(key);
    // 5. Status.
    const serving = new Set(desired.nodes);
    const views = this.d.dataPlanes().filter((v) => v.connected && serving.has(v.hello?.nodeName ?? ''));
    const facts = statusFacts(desired, {
      snapshotVersion,
      dataPlanes: views.map((v) => ({
        identity: v.identity,
        ackedVersion: v.appliedVersion,
        rejection: v.lastNack ? { version: v.lastNack.version, error: `${v.lastNack.field ? `${v.lastNack.field}: ` : ''}${v.lastNack.message}` } : null,
      })),
    });
    const previous = (qlb.status?.conditions ?? []) as Condition[];
    const status = buildStatus({
      facts,
      previousConditions: previous,
      rotation: desired.rotation.state,
      ...(desired.allocation
        ? { serverIds: { assigned: desired.allocation.records.assigned.length, quarantined: desired.allocation.records.released.length, capacity: serverIdCapacity(spec.connectionIds.serverIdLength) } }
        : {}),
      now,
    });
    if (canonical(status) !== canonical(stripUnknown(qlb.status, status))) {
      await step('status', () => this.d.writer.applyStatus(namespace, name, status));
    }
    // 6. Events and audit lines for what was recorded.
    const before = previous.find((c) => c.type === DEGRADED);
    const after = status.conditions.find((c) => c.type === DEGRADED);
    const degradedChanged = after !== undefined && after.status === 'True' && (before?.status !== 'True' || before.reason !== after.reason || before.message !== after.message);
    const recorded = this.stateEvents.get(key) ?? new Set<string>();
    // this run's state Events that were recorded before or are recorded now (all of them when Degraded changed)
    const current = new Set(desired.events.filter((n) => n.kind === 'state').map((n) => `${n.reason}\n${n.message}`).filter((t) => degradedChanged || recorded.has(t)));
    if (after?.status === 'True') this.stateEvents.set(key, current);
    else this.stateEvents.delete(key);
    for (const n of desired.events) {
      if (n.kind === 'state' && (!degradedChanged || recorded.has(`${n.reason}\n${n.message}`))) continue;
      if (n.audit) log.info({ audit: true, reason: n.reason, message: n.message, trigger: desired.rotation.state.lastTriggers }, 'key lifecycle');
      await this.d.events.record(regarding, n.type, n.reason, n.message);
    }
    log.debug({ snapshotVersion, servers: desired.snapshot?.servers.length ?? 0, nodes: desired.nodes.length, requeueAfterMs: desired.requeueAfterMs }, 'reconciled');
    return { kind: 'requeue-after', ms: Math.min(this.resyncMs, desired.requeueAfterMs ?? Infinity) };
  }

  /**
   * Writes the pods' server IDs; a pod whose cached annotation is another ID (a hand-over) gets
   * quiclb.io/server-id-changed-at in the same patch (and loses quiclb.io/server-id-previous). Then takes the
   * annotation off the pods whose ID was released now, when the cache still shows that ID on that pod (the same
   * guard as the teardown), recording the ID taken off with our UID (quiclb.io/server-id-previous): a pod that gets
   * it back from us is not drained. Every patch carries the pod's UID (a pod re-created under the same name is
   * left alone: the next run sees it); the cached annotation counts only when the cached pod is that UID; a name
   * this run gives an ID is never cleared (its released ID was another pod's of that name).
   */
  private async annotatePods(namespace: string, qlbUid: string, desired: Desired, now: number): Promise<void> {
    for (const [pod, serverId] of desired.podServerIds) {
      const podUid = desired.podUids.get(pod)!;
      const cached = this.d.informers.pods.get(pod, namespace);
      const previous = cached?.metadata?.uid === podUid ? cached.metadata.annotations?.[SERVER_ID_ANNOTATION] : undefined;
      if (previous === serverId) continue;
      await this.d.writer
        .annotatePod(namespace, pod, serverId, previous ? { at: now, previous: null } : undefined, podUid)
        .catch((e: unknown) => (podReplaced(e) ? undefined : Promise.reject(e))); // a pod gone or replaced: a later run sees it
    }
    for (const c of desired.clearPods) {
      if (desired.podServerIds.has(c.podName)) continue;
      await this.clearAnnotation(namespace, c.podName, c.podUid, c.serverId, now, previousServerIdValue(qlbUid, c.serverId));
    }
  }

  /**
   * Removes a pod's server-ID annotation if the cached pod is `podUid` and still shows `serverId`, and the pod of that
   * name still is `podUid` when the patch arrives (the cache may lag), recording when
   * (quiclb.io/server-id-changed-at) and `previous` (quiclb.io/server-id-previous; null removes it: the teardown,
   * whose keys go with the load balancer).
   */
  private async clearAnnotation(namespace: string, podName: string, podUid: string, serverId: string, now: number, previous: string | null): Promise<void> {
    const pod = this.d.informers.pods.get(podName, namespace);
    if (pod?.metadata?.uid !== podUid || pod.metadata?.annotations?.[SERVER_ID_ANNOTATION] !== serverId) return;
    // While the pod's own last ID change may not have reached it yet, it may still mint the ID before `serverId`:
    // giving `serverId` back must then drain it as any change does, so nothing is recorded.
    const changedAt = Date.parse(pod.metadata?.annotations?.[SERVER_ID_CHANGED_AT_ANNOTATION] ?? '');
    if (Number.isFinite(changedAt) && changedAt > now - (this.d.serverIdPropagationMs ?? SERVER_ID_PROPAGATION_MS)) previous = null;
    await this.d.writer.annotatePod(namespace, podName, null, { at: now, previous }, podUid).catch((e: unknown) => (podReplaced(e) ? undefined : Promise.reject(e)));
  }

  private async teardown(qlb: QuicLoadBalancerObject, key: string, correlationId: string, log: Logger): Promise<Verdict> {
    const namespace = qlb.metadata!.namespace!;
    const name = qlb.metadata!.name!;
    const version = this.d.publisher.remove(key, correlationId);
    this.specProblems.delete(key);
    if (!hasFinalizer(qlb)) return { kind: 'done' };
    const stored = await step('read', () => this.d.ids.read(namespace, name)).catch(() => null);
    // While an earlier load balancer holds the backend Service, the pods' annotations are its IDs, not ours. A pod
    // any other load balancer's backend has is left alone too, earlier or later: our records may still name it and
    // its ID can equal ours; if that one's value differs, it writes its own.
    const podsAreAnother = this.backendHeldByAnother(qlb, key);
    const assigned = podsAreAnother ? [] : (stored?.records.assigned ?? []);
    const claimed = this.podsClaimedByOthers(qlb, key, new Set(assigned.map((a) => a.podUid)));
    const now = this.now();
    for (const a of assigned) if (!claimed.has(a.podUid)) await step('pods', () => this.clearAnnotation(namespace, a.podName, a.podUid, a.id, now, null));
    await step('records', () => this.d.ids.remove(namespace, name));
    await step('secret', () => this.d.secrets.removeConfigs(namespace, name));
    await step('finalizer', () => removeFinalizer(this.d.writer, qlb));
    log.info({ version }, 'torn down, finalizer removed');
    return { kind: 'done' };
  }

  /** Those of `pods` (UIDs) that another load balancer's backend has (observe.ts backendClaimsOf). */
  private podsClaimedByOthers(qlb: QuicLoadBalancerObject, key: string, pods: ReadonlySet<string>): ReadonlySet<string> {
    if (pods.size === 0) return new Set();
    const namespace = qlb.metadata!.namespace!;
    const i = this.d.informers;
    const others = backendClaimsOf(namespace, this.lastGood.resolve(i.qlbs.list(namespace)), i.services.list(namespace), i.slices.list(namespace)).filter((c) => c.key !== key);
    return new Set([...pods].filter((p) => others.some((c) => c.pods.has(p))));
  }

  /** Enqueues the other load balancers whose set of wanted pods that `key` owns changed (came, went, grew, shrank). */
  private notifyWaiting(key: string, now: ReadonlyMap<string, readonly string[]>): void {
    const before = this.waiting.get(key) ?? new Map<string, readonly string[]>();
    if (now.size > 0) this.waiting.set(key, now);
    else this.waiting.delete(key);
    for (const k of new Set([...before.keys(), ...now.keys()])) if (before.get(k)?.join() !== now.get(k)?.join()) this.d.enqueue?.(k);
  }

  private backendHeldByAnother(qlb: QuicLoadBalancerObject, key: string): boolean {
    let spec;
    try {
      spec = readSpec(qlb.spec);
    } catch {
      return false;
    }
    const others = otherObjects(this.lastGood.resolve(this.d.informers.qlbs.list()), qlb.metadata?.namespace ?? '', qlb.metadata?.name ?? '');
    return backendHolder(claimFor(key, created(qlb), spec, []), claimsOf(others, [])) !== null;
  }
}

function sameData(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>> | null): boolean {
  if (b === null) return false;
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

/** The stored status restricted to the fields the operator writes (so fields it does not own never force a write). */
function stripUnknown(stored: unknown, written: object): unknown {
  if (stored === null || typeof stored !== 'object') return stored;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(written)) if (k in (stored as Record<string, unknown>)) out[k] = (stored as Record<string, unknown>)[k];
  return out;
}

/** JSON with object keys sorted (the API server may return fields in another order than written). */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x !== null && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : x,
  );
}
