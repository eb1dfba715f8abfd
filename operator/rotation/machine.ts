/**
 * The config (key) rotation of one QuicLoadBalancer as a pure state machine (DESIGN.md "Keys and config rotation";
 * draft-21 §3.1, digest §11). One call per reconcile:
 *
 *   (state, desired encoding, a key for a new config, the connected data planes' ACKs, their per-config traffic
 *    counters, settings, on-demand trigger, now) -> next state + actions (for events and audit lines).
 *
 * Steps, in this order:
 * 1. No config yet: config 0 is created active (no backend mints and no data plane decodes anything yet).
 * 2. Draining configs are retired when their traffic counter has not moved for `quietMs` (counted from the demotion
 *    at the earliest) or `drainMs` after the demotion, whichever comes first.
 * 3. An accepting config that no longer matches the spec (encoding or user key changed) is abandoned: nobody
 *    minted with it, so dropping it is safe. Otherwise, once every connected data plane has ACKed a snapshot
 *    holding exactly this config (id and fingerprint), it becomes active and the active one draining.
 * 4. With no accepting config, a rotation starts when the encoding differs from the spec (spec-change), the user's
 *    key changed (key-changed), a trigger has a new non-empty value (on-demand) or the interval has passed
 *    (interval): a free config id (the next after the active one, skipping live ids, so a retired id is reused as
 *    late as possible) joins as accepting. Promotion is never in the same call: each phase is pushed and visible on
 *    its own. A change of the server-ID length or of encryption on/off is refused (blocked): every server ID would
 *    change, and plaintext and encrypted configs must not share an allocation (§9.7); the CRD forbids both.
 *
 * Invariants (test/operator/rotation-machine.test.ts checks them on random histories): at most 7 live configs,
 * exactly one active, the active one is never retired, a new config never takes the id of a live one, two live
 * configs never share a key.
 *
 * Keys never enter the state or the actions: the state holds fingerprints; a key for a new config is passed in and
 * handed back in `newKeys`.
 */
import { MAX_CONFIG_ID, makeConfig, type QuicLbConfig } from '../../lib/quiclb/config.js';
import type { ConfigState, LiveConfig } from '../../lib/config/snapshot.js';
import type { RotationState as BackendConfigsState } from '../../lib/config/state-file.js';
import { configFingerprint } from './keys.js';

export type RotationPhase = 'Stable' | 'Accepting' | 'Draining';
export type RotationReason = 'initial' | 'spec-change' | 'key-changed' | 'on-demand' | 'interval';

export interface Encoding {
  readonly serverIdLength: number;
  readonly nonceLength: number;
  readonly lengthSelfEncoded: boolean;
  readonly encrypted: boolean;
}

export interface LiveConfigRecord {
  readonly configId: number;
  readonly state: ConfigState;
  /** When the config entered its state (ms). */
  readonly since: number;
  readonly encoding: Encoding;
  /** configFingerprint(): id, lengths, flags and key. */
  readonly fingerprint: string;
  /** keyFingerprint() of its key; null in plaintext mode. */
  readonly keyFingerprint: string | null;
  /** Why it was created (accepting and later). */
  readonly reason: RotationReason;
  /** Draining only: the traffic counter last seen and since when it has not moved. */
  readonly lastTraffic?: number;
  readonly quietSince?: number;
}

export interface MachineState {
  readonly configs: readonly LiveConfigRecord[];
  /** When the last rotation started (ms), null before the first config. */
  readonly lastRotationAt: number | null;
  /** Per trigger source (e.g. spec, annotation): the value last acted on. */
  readonly lastTriggers: Readonly<Record<string, string>>;
}

export const INITIAL_STATE: MachineState = Object.freeze({ configs: [], lastRotationAt: null, lastTriggers: {} });

export interface DataPlaneAcks {
  readonly name: string;
  /** The configs of the latest snapshot this data plane ACKed. */
  readonly ackedConfigs: readonly { readonly configId: number; readonly fingerprint: string }[];
}

export interface NewKey {
  /** null in plaintext mode, or when the user's Secret has no usable key */
  readonly key: Uint8Array | null;
  readonly keyFingerprint: string | null;
}

export interface RotationSettings {
  /** null: no rotation on a timer */
  readonly intervalMs: number | null;
  readonly drainMs: number;
  readonly quietMs: number;
}

export interface RotationInput {
  readonly state: MachineState;
  readonly desired: Encoding;
  /** The user's key fingerprint when the key comes from a Secret (a difference starts a rotation); null otherwise. */
  readonly userKeyFingerprint: string | null;
  /** The key a config created now gets: a fresh random key, or the user's. */
  readonly newKey: NewKey;
  /** Data planes connected now. */
  readonly dataPlanes: readonly DataPlaneAcks[];
  /**
   * Set while a node that serves this load balancer has no connected data plane and this operator began acting so
   * recently that it may still be reconnecting (a restart or a new leader): no promotion before then, as the acks
   * of the connected data planes alone may leave out one that the previous operator was waiting for.
   */
  readonly reconnectingUntil?: number;
  /** Per config id: the sum of the connected data planes' packet counters for it (any change counts as traffic). */
  readonly traffic: ReadonlyMap<number, number>;
  readonly settings: RotationSettings;
  /**
   * On-demand triggers by source (spec.rotation.trigger, the quiclb.io/rotate annotation): a source whose value is
   * not empty and differs from the one last acted on starts a rotation. Clearing a value never does.
   */
  readonly triggers: Readonly<Record<string, string>>;
  readonly now: number;
}

export type RotationAction =
  | { readonly kind: 'created'; readonly configId: number; readonly keyFingerprint: string | null }
  | { readonly kind: 'started'; readonly configId: number; readonly activeConfigId: number; readonly reason: RotationReason; readonly keyFingerprint: string | null }
  | { readonly kind: 'abandoned'; readonly configId: number; readonly why: string }
  | { readonly kind: 'promoted'; readonly configId: number; readonly demotedConfigId: number }
  | { readonly kind: 'retired'; readonly configId: number; readonly why: 'quiet' | 'drain-period-ended' }
  | { readonly kind: 'waiting-for-acks'; readonly configId: number; readonly missing: readonly string[] }
  | { readonly kind: 'waiting-for-reconnects'; readonly configId: number; readonly until: number }
  | {
      readonly kind: 'blocked';
      readonly reason: 'no-key' | 'no-free-config-id' | 'same-key' | 'invalid-state' | 'immutable-change';
      readonly message: string;
    };

export interface RotationResult {
  readonly state: MachineState;
  readonly phase: RotationPhase;
  readonly actions: readonly RotationAction[];
  /** Keys of configs created by this call (store them before pushing the state anywhere). */
  readonly newKeys: ReadonlyMap<number, Uint8Array>;
  /** When to look again at the latest, without any event (ms), or null. */
  readonly nextCheckAt: number | null;
  /** The live configs changed (push a snapshot, rewrite the backends' Secret). */
  readonly changed: boolean;
}

export const MAX_LIVE_CONFIGS = MAX_CONFIG_ID + 1;

export function phaseOf(configs: readonly LiveConfigRecord[]): RotationPhase {
  if (configs.some((c) => c.state === 'accepting')) return 'Accepting';
  if (configs.some((c) => c.state === 'draining')) return 'Draining';
  return 'Stable';
}

export function activeRecord(state: MachineState): LiveConfigRecord | undefined {
  return state.configs.find((c) => c.state === 'active');
}

function sameEncoding(a: Encoding, b: Encoding): boolean {
  return a.serverIdLength === b.serverIdLength && a.nonceLength === b.nonceLength && a.lengthSelfEncoded === b.lengthSelfEncoded && a.encrypted === b.encrypted;
}

/** Why the state cannot be worked with, or null. */
export function checkMachineState(s: MachineState): string | null {
  if (s.configs.length === 0) return null;
  if (s.configs.length > MAX_LIVE_CONFIGS) return `${s.configs.length} live configs (at most ${MAX_LIVE_CONFIGS})`;
  const ids = new Set(s.configs.map((c) => c.configId));
  if (ids.size !== s.configs.length) return 'a config id is live twice';
  if ([...ids].some((id) => !Number.isInteger(id) || id < 0 || id > MAX_CONFIG_ID)) return 'a config id is outside 0..6';
  const active = s.configs.filter((c) => c.state === 'active').length;
  if (active !== 1) return `${active} active configs (exactly one expected)`;
  if (s.configs.filter((c) => c.state === 'accepting').length > 1) return 'more than one accepting config';
  const keys = s.configs.map((c) => c.keyFingerprint).filter((k) => k !== null);
  if (new Set(keys).size !== keys.length) return 'two live configs share a key';
  return null;
}

/** The next free config id after `after` (cyclically), or null when all seven are live. */
export function pickConfigId(live: readonly LiveConfigRecord[], after: number): number | null {
  const used = new Set(live.map((c) => c.configId));
  for (let i = 1; i <= MAX_LIVE_CONFIGS; i++) {
    const id = (after + i) % MAX_LIVE_CONFIGS;
    if (!used.has(id)) return id;
  }
  return null;
}

function newRecord(configId: number, state: ConfigState, input: RotationInput, reason: RotationReason): LiveConfigRecord {
  const config = makeConfig({
    configId,
    serverIdLength: input.desired.serverIdLength,
    nonceLength: input.desired.nonceLength,
    lengthSelfEncoded: input.desired.lengthSelfEncoded,
    key: input.desired.encrypted ? input.newKey.key : null,
  });
  return {
    configId,
    state,
    since: input.now,
    encoding: input.desired,
    fingerprint: configFingerprint(config),
    keyFingerprint: input.desired.encrypted ? input.newKey.keyFingerprint : null,
    reason,
  };
}

/** Why the config a rotation would create now cannot be made, or null. */
function keyProblem(input: RotationInput, live: readonly LiveConfigRecord[]): RotationAction | null {
  if (!input.desired.encrypted) return null;
  if (input.newKey.key === null || input.newKey.keyFingerprint === null) {
    return { kind: 'blocked', reason: 'no-key', message: 'no key for a new config: check the Secret named in spec.encryption.keySecretRef' };
  }
  if (live.some((c) => c.keyFingerprint === input.newKey.keyFingerprint)) {
    return {
      kind: 'blocked',
      reason: 'same-key',
      message: `key ${input.newKey.keyFingerprint} is already in use by a live config; a new config needs a key of its own (a nonce must never repeat under one key): put a new key in the Secret`,
    };
  }
  return null;
}

function rotationReason(input: RotationInput, active: LiveConfigRecord, state: MachineState): RotationReason | null {
  if (!sameEncoding(active.encoding, input.desired)) return 'spec-change';
  if (input.desired.encrypted && input.userKeyFingerprint !== null && active.keyFingerprint !== input.userKeyFingerprint) return 'key-changed';
  if (Object.entries(input.triggers).some(([src, v]) => v !== '' && v !== (state.lastTriggers[src] ?? ''))) return 'on-demand';
  const { intervalMs } = input.settings;
  if (intervalMs !== null && state.lastRotationAt !== null && input.now >= state.lastRotationAt + intervalMs) return 'interval';
  return null;
}

/** The trigger values a rotation started now satisfies (empty values keep the last one acted on). */
function actedOn(last: Readonly<Record<string, string>>, triggers: Readonly<Record<string, string>>): Record<string, string> {
  const out = { ...last };
  for (const [src, v] of Object.entries(triggers)) if (v !== '') out[src] = v;
  return out;
}

function isStale(c: LiveConfigRecord, input: RotationInput): string | null {
  if (!sameEncoding(c.encoding, input.desired)) return 'the spec changed the encoding';
  if (input.desired.encrypted && input.userKeyFingerprint !== null && c.keyFingerprint !== input.userKeyFingerprint) return 'the key in the Secret changed';
  return null;
}

export function stepRotation(input: RotationInput): RotationResult {
  const { now, settings } = input;
  const actions: RotationAction[] = [];
  const newKeys = new Map<number, Uint8Array>();
  const before = input.state;
  const invalid = checkMachineState(before);
  if (invalid !== null) {
    return {
      state: before,
      phase: phaseOf(before.configs),
      actions: [{ kind: 'blocked', reason: 'invalid-state', message: `the recorded live configs are inconsistent (${invalid}); fix or delete the configs Secret` }],
      newKeys,
      nextCheckAt: null,
      changed: false,
    };
  }

  // 1. The first config.
  if (before.configs.length === 0) {
    const problem = keyProblem(input, []);
    if (problem) return { state: before, phase: 'Stable', actions: [problem], newKeys, nextCheckAt: null, changed: false };
    const rec = newRecord(0, 'active', input, 'initial');
    if (input.desired.encrypted) newKeys.set(0, input.newKey.key!);
    const state: MachineState = { configs: [rec], lastRotationAt: now, lastTriggers: actedOn(before.lastTriggers, input.triggers) };
    actions.push({ kind: 'created', configId: 0, keyFingerprint: rec.keyFingerprint });
    return { state, phase: 'Stable', actions, newKeys, nextCheckAt: nextCheck(state, settings), changed: true };
  }

  let configs = [...before.configs];
  let { lastRotationAt, lastTriggers } = before;
  let changed = false;

  // 2. Drain bookkeeping and retirement.
  configs = configs.flatMap((c): LiveConfigRecord[] => {
    if (c.state !== 'draining') return [c];
    const count = input.traffic.get(c.configId) ?? 0;
    const moved = c.lastTraffic === undefined || count !== c.lastTraffic;
    const quietSince = moved ? now : (c.quietSince ?? now);
    if (now - c.since >= settings.drainMs) {
      actions.push({ kind: 'retired', configId: c.configId, why: 'drain-period-ended' });
      changed = true;
      return [];
    }
    if (!moved && now - quietSince >= settings.quietMs) {
      actions.push({ kind: 'retired', configId: c.configId, why: 'quiet' });
      changed = true;
      return [];
    }
    return [{ ...c, lastTraffic: count, quietSince }];
  });

  // 3. The accepting config: abandon when stale, promote when every connected data plane has it.
  let waitUntil: number | null = null;
  const accepting = configs.find((c) => c.state === 'accepting');
  if (accepting) {
    const stale = isStale(accepting, input);
    if (stale !== null) {
      configs = configs.filter((c) => c !== accepting);
      actions.push({ kind: 'abandoned', configId: accepting.configId, why: stale });
      changed = true;
    } else {
      const missing = input.dataPlanes
        .filter((d) => !d.ackedConfigs.some((a) => a.configId === accepting.configId && a.fingerprint === accepting.fingerprint))
        .map((d) => d.name)
        .sort();
      const until = input.reconnectingUntil;
      if (missing.length === 0 && until !== undefined && input.now < until) {
        actions.push({ kind: 'waiting-for-reconnects', configId: accepting.configId, until });
        waitUntil = until;
      } else if (missing.length === 0) {
        const active = configs.find((c) => c.state === 'active')!;
        configs = configs.map((c) => {
          if (c === accepting) return { ...c, state: 'active', since: now };
          if (c === active) return { ...c, state: 'draining', since: now, lastTraffic: input.traffic.get(c.configId) ?? 0, quietSince: now };
          return c;
        });
        actions.push({ kind: 'promoted', configId: accepting.configId, demotedConfigId: active.configId });
        changed = true;
      } else {
        actions.push({ kind: 'waiting-for-acks', configId: accepting.configId, missing });
      }
    }
  }

  // 4. Start a rotation when one is due and none is under way.
  if (!configs.some((c) => c.state === 'accepting')) {
    const active = configs.find((c) => c.state === 'active')!;
    const current: MachineState = { configs, lastRotationAt, lastTriggers };
    const reason = rotationReason(input, active, current);
    if (reason !== null) {
      const id = pickConfigId(configs, active.configId);
      const immutable = active.encoding.serverIdLength !== input.desired.serverIdLength || active.encoding.encrypted !== input.desired.encrypted;
      const problem = immutable
        ? ({
            kind: 'blocked',
            reason: 'immutable-change',
            message: 'the server-ID length and encryption on/off cannot change on a live load balancer (every server ID would change; draft-21 §9.7): create a new QuicLoadBalancer',
          } as const)
        : id === null
          ? ({ kind: 'blocked', reason: 'no-free-config-id', message: `all ${MAX_LIVE_CONFIGS} config ids are live; the rotation starts when a draining config retires` } as const)
          : keyProblem(input, configs);
      if (problem) {
        actions.push(problem);
      } else {
        const rec = newRecord(id!, 'accepting', input, reason);
        configs.push(rec);
        if (input.desired.encrypted) newKeys.set(id!, input.newKey.key!);
        lastRotationAt = now;
        lastTriggers = actedOn(lastTriggers, input.triggers);
        actions.push({ kind: 'started', configId: id!, activeConfigId: active.configId, reason, keyFingerprint: rec.keyFingerprint });
        changed = true;
      }
    }
  }

  configs.sort((a, b) => a.configId - b.configId);
  const state: MachineState = { configs, lastRotationAt, lastTriggers };
  const next = nextCheck(state, settings);
  const nextCheckAt = waitUntil === null ? next : next === null ? waitUntil : Math.min(next, waitUntil);
  return { state, phase: phaseOf(configs), actions, newKeys, nextCheckAt, changed };
}

function nextCheck(s: MachineState, settings: RotationSettings): number | null {
  const times: number[] = [];
  for (const c of s.configs) {
    if (c.state !== 'draining') continue;
    times.push(c.since + settings.drainMs);
    times.push((c.quietSince ?? c.since) + settings.quietMs);
  }
  if (settings.intervalMs !== null && s.lastRotationAt !== null) times.push(s.lastRotationAt + settings.intervalMs);
  return times.length > 0 ? Math.min(...times) : null;
}

/**
 * The live configs as QUIC-LB configs (for snapshots), with their keys from `keys` (config id -> key). Throws when a
 * key is missing or does not match its fingerprint: never route with a config the data planes would decode wrongly.
 */
export function liveConfigs(s: MachineState, keys: ReadonlyMap<number, Uint8Array>): LiveConfig[] {
  return s.configs.map((c) => {
    const key = c.encoding.encrypted ? keys.get(c.configId) : null;
    if (key === undefined) throw new Error(`config ${c.configId}: its key is missing`);
    const config: QuicLbConfig = makeConfig({
      configId: c.configId,
      serverIdLength: c.encoding.serverIdLength,
      nonceLength: c.encoding.nonceLength,
      lengthSelfEncoded: c.encoding.lengthSelfEncoded,
      key,
    });
    if (configFingerprint(config) !== c.fingerprint) throw new Error(`config ${c.configId}: its key does not match fingerprint ${c.fingerprint}`);
    return { config, state: c.state };
  });
}

/** What the backends' Secret holds (operator/rotation/keys.ts encodeBackendSecret). */
export function backendConfigsState(s: MachineState, keys: ReadonlyMap<number, Uint8Array>): BackendConfigsState {
  const live = liveConfigs(s, keys);
  return {
    serverIdLength: live[0]?.config.serverIdLength ?? 0,
    lastRotationAt: s.lastRotationAt ?? 0,
    configs: live.map((l, i) => ({ config: l.config, state: l.state, since: s.configs[i].since })),
  };
}
