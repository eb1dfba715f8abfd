import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { generateKey } from '../../operator/rotation/keys.js';
import { keyFingerprint } from '../../lib/config/key-fingerprint.js';
import {
  backendConfigsState,
  INITIAL_STATE,
  liveConfigs,
  MAX_LIVE_CONFIGS,
  pickConfigId,
  stepRotation,
  type DataPlaneAcks,
  type Encoding,
  type LiveConfigRecord,
  type MachineState,
  type RotationInput,
  type RotationResult,
} from '../../operator/rotation/machine.js';

const T0 = Date.parse('2026-12-04T12:00:00Z');
const MIN = 60_000;
const ENC: Encoding = { serverIdLength: 2, nonceLength: 6, lengthSelfEncoded: false, encrypted: true };
const SETTINGS = { intervalMs: 24 * 60 * MIN, drainMs: 60 * MIN, quietMs: 2 * MIN };

/** Deterministic distinct keys. */
let keySeq = 0;
function freshKey(): { key: Uint8Array; keyFingerprint: string } {
  const key = Buffer.alloc(16, 0);
  key.writeUInt32BE(++keySeq, 0);
  return { key, keyFingerprint: keyFingerprint(key) };
}

function input(state: MachineState, over: Partial<RotationInput> = {}): RotationInput {
  return {
    state,
    desired: ENC,
    userKeyFingerprint: null,
    newKey: freshKey(),
    dataPlanes: [],
    traffic: new Map(),
    settings: SETTINGS,
    triggers: {},
    now: T0,
    ...over,
  };
}

/** Every data plane ACKed exactly the live configs of `s`. */
function allAcked(s: MachineState, names = ['node-a', 'node-b']): DataPlaneAcks[] {
  return names.map((name) => ({ name, ackedConfigs: s.configs.map((c) => ({ configId: c.configId, fingerprint: c.fingerprint })) }));
}

const states = (r: RotationResult): string => r.state.configs.map((c) => `${c.configId}:${c.state}`).join(' ');

/** A stable state with config 0 active, created at T0. */
function stable(): MachineState {
  return stepRotation(input(INITIAL_STATE)).state;
}

describe('stepRotation: table', () => {
  it('creates config 0 active on first use, returns its key, and records the trigger as handled', () => {
    const k = freshKey();
    const r = stepRotation(input(INITIAL_STATE, { newKey: k, triggers: { spec: 'x' } }));
    expect(states(r)).toBe('0:active');
    expect(r.phase).toBe('Stable');
    expect(r.actions).toEqual([{ kind: 'created', configId: 0, keyFingerprint: k.keyFingerprint }]);
    expect(r.newKeys.get(0)).toBe(k.key);
    expect(r.state.lastTriggers).toEqual({ spec: 'x' });
    expect(r.state.lastRotationAt).toBe(T0);
    expect(r.nextCheckAt).toBe(T0 + SETTINGS.intervalMs);
    expect(JSON.stringify(r.state)).not.toContain(Buffer.from(k.key).toString('hex'));
  });

  it('creates a plaintext config without a key', () => {
    const r = stepRotation(input(INITIAL_STATE, { desired: { ...ENC, encrypted: false }, newKey: { key: null, keyFingerprint: null }, settings: { ...SETTINGS, intervalMs: null } }));
    expect(r.state.configs[0]).toMatchObject({ configId: 0, state: 'active', keyFingerprint: null });
    expect(r.newKeys.size).toBe(0);
    expect(r.nextCheckAt).toBeNull();
  });

  it('is blocked, not thrown, when encrypted and there is no key yet (user Secret missing)', () => {
    const r = stepRotation(input(INITIAL_STATE, { newKey: { key: null, keyFingerprint: null } }));
    expect(r.actions).toEqual([expect.objectContaining({ kind: 'blocked', reason: 'no-key' })]);
    expect(r.state).toBe(INITIAL_STATE);
    expect(r.changed).toBe(false);
  });

  it('while a serving node may still be reconnecting its data plane (operator restarted), no promotion', () => {
    const started = stepRotation(input(stable(), { now: T0 + SETTINGS.intervalMs }));
    const s = started.state; // config 1 accepting, e.g. made by the previous operator
    const until = T0 + SETTINGS.intervalMs + 40_000;
    // No data plane connected yet: "all connected ones have it" holds vacuously, but some may still reconnect.
    const early = stepRotation(input(s, { reconnectingUntil: until, now: until - 100 }));
    expect(states(early)).toBe('0:active 1:accepting');
    expect(early.actions).toEqual([{ kind: 'waiting-for-reconnects', configId: 1, until }]);
    expect(early.changed).toBe(false);
    expect(early.nextCheckAt).toBe(until);
    // A connected data plane without config 1 is missing, as always.
    const partial = [{ name: 'node-b', ackedConfigs: [{ configId: 0, fingerprint: s.configs[0].fingerprint }] }];
    expect(stepRotation(input(s, { reconnectingUntil: until, dataPlanes: partial, now: until - 50 })).actions).toEqual([{ kind: 'waiting-for-acks', configId: 1, missing: ['node-b'] }]);
    // Once the window has passed, the connected data planes' acks decide again.
    expect(states(stepRotation(input(s, { reconnectingUntil: until, now: until })))).toBe('0:draining 1:active');
  });

  it('runs a full interval rotation: accepting, waiting for ACKs, active, draining, retired when quiet', () => {
    let s = stable();
    expect(stepRotation(input(s, { now: T0 + SETTINGS.intervalMs - 1 })).changed).toBe(false);
    const started = stepRotation(input(s, { now: T0 + SETTINGS.intervalMs }));
    expect(states(started)).toBe('0:active 1:accepting');
    expect(started.phase).toBe('Accepting');
    expect(started.actions).toEqual([expect.objectContaining({ kind: 'started', configId: 1, activeConfigId: 0, reason: 'interval' })]);
    expect([...started.newKeys.keys()]).toEqual([1]);
    s = started.state;
    let now = T0 + SETTINGS.intervalMs + 1000;
    // node-b has only the old snapshot (config 0): not yet
    const partial = [allAcked(s, ['node-a'])[0], { name: 'node-b', ackedConfigs: [{ configId: 0, fingerprint: s.configs[0].fingerprint }] }];
    const waiting = stepRotation(input(s, { dataPlanes: partial, now }));
    expect(waiting.actions).toEqual([{ kind: 'waiting-for-acks', configId: 1, missing: ['node-b'] }]);
    expect(waiting.changed).toBe(false);
    // an ACK of another config under id 1 (an older fingerprint) does not count
    const wrong = [{ name: 'node-b', ackedConfigs: [{ configId: 1, fingerprint: 'sha256:0000000000000000' }] }];
    expect(stepRotation(input(s, { dataPlanes: wrong, now })).actions[0]).toMatchObject({ kind: 'waiting-for-acks', missing: ['node-b'] });
    const promoted = stepRotation(input(s, { dataPlanes: allAcked(s), now, traffic: new Map([[0, 500]]) }));
    expect(states(promoted)).toBe('0:draining 1:active');
    expect(promoted.phase).toBe('Draining');
    expect(promoted.actions).toEqual([{ kind: 'promoted', configId: 1, demotedConfigId: 0 }]);
    s = promoted.state;
    // traffic keeps moving: stays
    now += 3 * MIN;
    let r = stepRotation(input(s, { now, traffic: new Map([[0, 600]]) }));
    expect(states(r)).toBe('0:draining 1:active');
    s = r.state;
    // quiet, but not long enough
    now += SETTINGS.quietMs - 1;
    r = stepRotation(input(s, { now, traffic: new Map([[0, 600]]) }));
    expect(states(r)).toBe('0:draining 1:active');
    s = r.state;
    now += 1;
    r = stepRotation(input(s, { now, traffic: new Map([[0, 600]]) }));
    expect(states(r)).toBe('1:active');
    expect(r.actions).toEqual([{ kind: 'retired', configId: 0, why: 'quiet' }]);
    expect(r.phase).toBe('Stable');
  });

  it('retires a draining config at the end of the drain period even with traffic', () => {
    let s = stepRotation(input(stable(), { triggers: { spec: 'now' } })).state;
    s = stepRotation(input(s, { now: T0 + 1 })).state; // no data planes connected: nothing to wait for
    expect(s.configs.map((c) => c.state)).toEqual(['draining', 'active']);
    let t = 0;
    for (let now = T0 + 1 + MIN; now < T0 + 1 + SETTINGS.drainMs; now += MIN) s = stepRotation(input(s, { now, traffic: new Map([[0, ++t]]) })).state;
    expect(s.configs).toHaveLength(2);
    const r = stepRotation(input(s, { now: T0 + 1 + SETTINGS.drainMs, traffic: new Map([[0, t + 1]]) }));
    expect(r.actions).toEqual([{ kind: 'retired', configId: 0, why: 'drain-period-ended' }]);
  });

  it('rotates on a new trigger value only', () => {
    const s = stepRotation(input(INITIAL_STATE, { triggers: { spec: 'a' } })).state;
    expect(stepRotation(input(s, { triggers: { spec: 'a' } })).changed).toBe(false);
    const r = stepRotation(input(s, { triggers: { spec: 'b' } }));
    expect(r.actions[0]).toMatchObject({ kind: 'started', reason: 'on-demand' });
    expect(r.state.lastTriggers).toEqual({ spec: 'b' });
  });

  it('tracks trigger sources separately: a new annotation value rotates, clearing it does not', () => {
    const s = stepRotation(input(INITIAL_STATE, { triggers: { spec: 'a' } })).state;
    const r = stepRotation(input(s, { triggers: { spec: 'a', annotation: '1' } }));
    expect(r.actions[0]).toMatchObject({ kind: 'started', reason: 'on-demand' });
    expect(r.state.lastTriggers).toEqual({ spec: 'a', annotation: '1' });
    const settled = stepRotation(input(r.state, { now: T0 + 1 })).state; // promoted (no data planes)
    expect(stepRotation(input(settled, { triggers: { spec: 'a', annotation: '' }, now: T0 + 2 })).actions.some((a) => a.kind === 'started')).toBe(false);
    expect(stepRotation(input(settled, { triggers: { spec: 'a' }, now: T0 + 2 })).actions.some((a) => a.kind === 'started')).toBe(false);
    expect(stepRotation(input(settled, { triggers: { spec: 'a', annotation: '2' }, now: T0 + 2 })).actions[0]).toMatchObject({ kind: 'started' });
  });

  it('a spec change of the encoding rotates; a second change abandons the accepting config and starts again', () => {
    const s = stable();
    const r = stepRotation(input(s, { desired: { ...ENC, nonceLength: 8 } }));
    expect(r.actions[0]).toMatchObject({ kind: 'started', configId: 1, reason: 'spec-change' });
    expect(r.state.configs[1].encoding.nonceLength).toBe(8);
    const again = stepRotation(input(r.state, { desired: { ...ENC, nonceLength: 10 }, now: T0 + 1 }));
    expect(again.actions.map((a) => a.kind)).toEqual(['abandoned', 'started']);
    expect(states(again)).toBe('0:active 1:accepting');
    expect(again.state.configs[1].encoding.nonceLength).toBe(10);
    // the new config's data planes must ACK it again: its fingerprint differs
    expect(again.state.configs[1].fingerprint).not.toBe(r.state.configs[1].fingerprint);
  });

  it('refuses to change the server-ID length or encryption on/off in place (defence behind the CRD rules)', () => {
    const s = stable();
    for (const desired of [{ ...ENC, serverIdLength: 3 }, { ...ENC, encrypted: false }]) {
      const r = stepRotation(input(s, { desired, newKey: desired.encrypted ? freshKey() : { key: null, keyFingerprint: null } }));
      expect(r.actions).toEqual([expect.objectContaining({ kind: 'blocked', reason: 'immutable-change' })]);
      expect(r.state.configs).toEqual(s.configs);
    }
  });

  it('with a user key: a changed key rotates; on-demand with the same key is blocked (no shared keys)', () => {
    const k1 = freshKey();
    const s = stepRotation(input(INITIAL_STATE, { newKey: k1, userKeyFingerprint: k1.keyFingerprint })).state;
    expect(stepRotation(input(s, { newKey: k1, userKeyFingerprint: k1.keyFingerprint })).changed).toBe(false);
    const same = stepRotation(input(s, { newKey: k1, userKeyFingerprint: k1.keyFingerprint, triggers: { spec: 'go' } }));
    expect(same.actions).toEqual([expect.objectContaining({ kind: 'blocked', reason: 'same-key' })]);
    expect((same.actions[0] as { message: string }).message).toContain('put a new key in the Secret');
    const k2 = freshKey();
    const changed = stepRotation(input(s, { newKey: k2, userKeyFingerprint: k2.keyFingerprint }));
    expect(changed.actions[0]).toMatchObject({ kind: 'started', reason: 'key-changed', keyFingerprint: k2.keyFingerprint });
  });

  it('starts another rotation while one drains, and is blocked when all seven ids are live', () => {
    let s = stable();
    let now = T0;
    for (let i = 1; i <= 6; i++) {
      s = stepRotation(input(s, { triggers: { spec: `t${i}` }, now: ++now })).state;
      s = stepRotation(input(s, { now: ++now, traffic: new Map(s.configs.map((c) => [c.configId, now])) })).state;
    }
    expect(s.configs).toHaveLength(MAX_LIVE_CONFIGS);
    expect(s.configs.filter((c) => c.state === 'draining')).toHaveLength(6);
    const r = stepRotation(input(s, { triggers: { spec: 't7' }, now: ++now, traffic: new Map(s.configs.map((c) => [c.configId, now])) }));
    expect(r.actions).toEqual([expect.objectContaining({ kind: 'blocked', reason: 'no-free-config-id' })]);
    expect(r.state.configs).toHaveLength(MAX_LIVE_CONFIGS);
  });

  it('reports an inconsistent recorded state instead of acting on it', () => {
    const s = stable();
    const twoActive: MachineState = { ...s, configs: [s.configs[0], { ...s.configs[0], configId: 3 }] };
    const r = stepRotation(input(twoActive));
    expect(r.actions).toEqual([expect.objectContaining({ kind: 'blocked', reason: 'invalid-state' })]);
    expect((r.actions[0] as { message: string }).message).toContain('2 active configs');
  });

  it('picks the next free id after the active one, cyclically', () => {
    const rec = (configId: number): LiveConfigRecord => ({ ...stable().configs[0], configId });
    expect(pickConfigId([rec(0)], 0)).toBe(1);
    expect(pickConfigId([rec(6)], 6)).toBe(0);
    expect(pickConfigId([rec(2), rec(3), rec(4)], 2)).toBe(5);
    expect(pickConfigId([0, 1, 2, 3, 4, 5, 6].map(rec), 3)).toBeNull();
  });

  it('turns the state and its keys into live configs and the backends state; refuses a wrong key', () => {
    const k = freshKey();
    const r = stepRotation(input(INITIAL_STATE, { newKey: k }));
    const live = liveConfigs(r.state, r.newKeys);
    expect(live).toHaveLength(1);
    expect(live[0]).toMatchObject({ state: 'active', config: { configId: 0, serverIdLength: 2, nonceLength: 6 } });
    expect(Buffer.from(live[0].config.key!).equals(Buffer.from(k.key))).toBe(true);
    const b = backendConfigsState(r.state, r.newKeys);
    expect(b).toMatchObject({ serverIdLength: 2, lastRotationAt: T0, configs: [{ state: 'active', since: T0 }] });
    expect(() => liveConfigs(r.state, new Map())).toThrow('config 0: its key is missing');
    expect(() => liveConfigs(r.state, new Map([[0, generateKey()]]))).toThrow('config 0: its key does not match fingerprint');
  });
});

// ---- properties: random histories of time, ACKs, traffic, triggers, spec and key changes

type Event =
  | { kind: 'tick'; ms: number }
  | { kind: 'ack-all' }
  | { kind: 'ack-some' }
  | { kind: 'traffic'; configId: number }
  | { kind: 'trigger' }
  | { kind: 'nonce'; nonceLength: number }
  | { kind: 'user-key' }
  | { kind: 'generated-key' };

const eventArb: fc.Arbitrary<Event> = fc.oneof(
  fc.record({ kind: fc.constant('tick' as const), ms: fc.integer({ min: 0, max: 3 * 60 * MIN }) }),
  fc.constant({ kind: 'ack-all' as const }),
  fc.constant({ kind: 'ack-some' as const }),
  fc.record({ kind: fc.constant('traffic' as const), configId: fc.integer({ min: 0, max: 6 }) }),
  fc.constant({ kind: 'trigger' as const }),
  fc.record({ kind: fc.constant('nonce' as const), nonceLength: fc.integer({ min: 4, max: 17 }) }),
  fc.constant({ kind: 'user-key' as const }),
  fc.constant({ kind: 'generated-key' as const }),
);

describe('stepRotation: properties', () => {
  it('never more than 7 live configs, never two active, never retires the active one, never reuses a live id or a live key', () => {
    const seen = new Map<string, number>();
    fc.assert(
      fc.property(fc.array(eventArb, { minLength: 1, maxLength: 80 }), fc.boolean(), (events, zeroDataPlanes) => {
        let s: MachineState = INITIAL_STATE;
        let now = T0;
        let desired = ENC;
        let userKey: { key: Uint8Array; keyFingerprint: string } | null = null;
        let trigger = '';
        let triggers = 0;
        const traffic = new Map<number, number>();
        let acks: DataPlaneAcks[] = [];
        for (const e of events) {
          switch (e.kind) {
            case 'tick':
              now += e.ms;
              break;
            case 'ack-all':
              acks = zeroDataPlanes ? [] : allAcked(s);
              break;
            case 'ack-some':
              acks = zeroDataPlanes ? [] : [...allAcked(s, ['node-a']), { name: 'node-b', ackedConfigs: [] }];
              break;
            case 'traffic':
              traffic.set(e.configId, (traffic.get(e.configId) ?? 0) + 1);
              break;
            case 'trigger':
              trigger = `t${++triggers}`;
              break;
            case 'nonce':
              desired = { ...desired, nonceLength: e.nonceLength };
              break;
            case 'user-key':
              userKey = freshKey();
              break;
            case 'generated-key':
              userKey = null;
              break;
          }
          const r = stepRotation({
            state: s,
            desired,
            userKeyFingerprint: userKey?.keyFingerprint ?? null,
            newKey: userKey ?? freshKey(),
            dataPlanes: acks,
            traffic,
            settings: { ...SETTINGS, intervalMs: userKey ? null : SETTINGS.intervalMs },
            triggers: { spec: trigger },
            now,
          });
          const next = r.state.configs;
          expect(next.length).toBeLessThanOrEqual(MAX_LIVE_CONFIGS);
          if (s.configs.length > 0) expect(next.filter((c) => c.state === 'active')).toHaveLength(1);
          expect(next.filter((c) => c.state === 'accepting').length).toBeLessThanOrEqual(1);
          expect(new Set(next.map((c) => c.configId)).size).toBe(next.length);
          const keys = next.map((c) => c.keyFingerprint);
          expect(new Set(keys).size).toBe(keys.length);
          for (const a of r.actions) {
            if (a.kind === 'retired') expect(s.configs.find((c) => c.configId === a.configId)?.state).toBe('draining');
            if (a.kind === 'started') {
              const prev = s.configs.find((c) => c.configId === a.configId);
              // a new config never takes the id of a config that is still live (an abandoned accepting one excepted)
              if (prev) expect(prev.state).toBe('accepting');
              expect(r.actions.some((x) => x.kind === 'abandoned' && x.configId === a.configId) || !prev).toBe(true);
            }
          }
          // the previous active config is still live (active, or draining after a promotion)
          const prevActive = s.configs.find((c) => c.state === 'active');
          if (prevActive) expect(next.some((c) => c.configId === prevActive.configId)).toBe(true);
          expect(r.phase).toBe(next.some((c) => c.state === 'accepting') ? 'Accepting' : next.some((c) => c.state === 'draining') ? 'Draining' : 'Stable');
          expect(JSON.stringify(r.actions)).not.toMatch(/"key":/);
          for (const a of r.actions) seen.set(a.kind, (seen.get(a.kind) ?? 0) + 1);
          s = r.state;
        }
      }),
      { numRuns: 300 },
    );
    // the histories reach every transition, not only the first config
    for (const kind of ['created', 'started', 'promoted', 'retired', 'abandoned', 'waiting-for-acks', 'blocked']) expect(seen.get(kind) ?? 0).toBeGreaterThan(0);
  });
});
