import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { allocateServerIds, EMPTY_RECORDS } from '../../operator/allocation/server-ids.js';
import { decodeRecords, encodeRecords, MAX_RECORDS } from '../../operator/allocation/records-codec.js';
import { makeConfig } from '../../lib/quiclb/config.js';
import { BACKEND_CONFIGS_KEY, encodeBackendSecret } from '../../operator/rotation/keys.js';
import { keyFingerprint } from '../../lib/config/key-fingerprint.js';
import { backendConfigsState, INITIAL_STATE, stepRotation, type MachineState } from '../../operator/rotation/machine.js';
import { decodeConfigsSecret, decodeMachineState, encodeConfigsSecret, encodeMachineState, MACHINE_STATE_KEY } from '../../operator/rotation/secret-codec.js';

const T0 = Date.parse('2026-12-04T12:00:00Z');
const KEY = Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex');
const KEY2 = Buffer.from('f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff', 'hex');

describe('server-ID records codec', () => {
  it('round-trips what the allocator produces', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 30 }), { maxLength: 30 }), fc.array(fc.integer({ min: 0, max: 30 }), { maxLength: 30 }), (a, b) => {
        const ep = (i: number) => ({ podUid: `u${i}`, podName: `p${i}`, addresses: ['198.51.100.1'] });
        const r1 = allocateServerIds({ records: EMPTY_RECORDS, endpoints: a.map(ep), length: 2, quarantineMs: 60_000, now: T0 });
        const r2 = allocateServerIds({ records: r1.records, endpoints: b.map(ep), length: 2, quarantineMs: 60_000, now: T0 + 1234 });
        const text = encodeRecords({ serverIdLength: 2, records: r2.records });
        expect(decodeRecords(text)).toEqual({ serverIdLength: 2, records: r2.records });
      }),
      { numRuns: 50 },
    );
  });

  it.each([
    ['not JSON', '{', 'server_ids: not valid JSON'],
    ['another format', '{"format":"x"}', 'server_ids.format: must be "quiclb-server-ids/1"'],
    ['an unknown field', '{"format":"quiclb-server-ids/1","server_id_length":1,"asigned":[]}', 'server_ids.asigned: unknown field (did you mean assigned?)'],
    ['a bad length', '{"format":"quiclb-server-ids/1","server_id_length":16}', 'server_ids.server_id_length'],
    ['an ID of the wrong length', '{"format":"quiclb-server-ids/1","server_id_length":1,"assigned":[{"id":"0001","pod_uid":"u","pod":"p","at":"2026-12-04T12:00:00Z"}]}', 'server_ids.assigned[0].id: must be 2 lower-case hex digits'],
    ['a bad time', '{"format":"quiclb-server-ids/1","server_id_length":1,"released":[{"id":"01","pod_uid":"u","pod":"p","at":"yesterday"}]}', 'server_ids.released[0].at: must be an RFC 3339 time'],
  ])('refuses %s, naming the field', (_what, text, message) => {
    expect(() => decodeRecords(text)).toThrow(message);
  });

  it('is bounded both ways', () => {
    const many = Array.from({ length: MAX_RECORDS + 1 }, (_, i) => ({ id: i.toString(16).padStart(4, '0'), podUid: `u${i}`, podName: `p${i}`, assignedAt: T0 }));
    expect(() => encodeRecords({ serverIdLength: 2, records: { assigned: many, released: [] } })).toThrow(`records exceed the bound of ${MAX_RECORDS}`);
    expect(() => decodeRecords(' '.repeat(1024 * 1024))).toThrow('bytes exceed the bound');
  });
});

describe('configs Secret codec (rotation state + keys)', () => {
  function rotated(): { state: MachineState; keys: Map<number, Uint8Array> } {
    const base = { desired: { serverIdLength: 2, nonceLength: 6, lengthSelfEncoded: false, encrypted: true }, userKeyFingerprint: null, dataPlanes: [], traffic: new Map([[0, 5]]), settings: { intervalMs: null, drainMs: 3_600_000, quietMs: 60_000 } };
    const a = stepRotation({ ...base, state: INITIAL_STATE, newKey: { key: KEY, keyFingerprint: keyFingerprint(KEY) }, triggers: {}, now: T0 });
    const b = stepRotation({ ...base, state: a.state, newKey: { key: KEY2, keyFingerprint: keyFingerprint(KEY2) }, triggers: { spec: 'go' }, now: T0 + 1 });
    const c = stepRotation({ ...base, state: b.state, newKey: { key: null, keyFingerprint: null }, triggers: { spec: 'go' }, now: T0 + 2 });
    return { state: c.state, keys: new Map([[0, KEY], [1, KEY2]]) };
  }

  it('round-trips the machine state (draining bookkeeping included) and the keys', () => {
    const { state, keys } = rotated();
    expect(state.configs.map((c) => c.state)).toEqual(['draining', 'active']);
    const data = encodeConfigsSecret(state, keys);
    expect(Object.keys(data).sort()).toEqual([BACKEND_CONFIGS_KEY, MACHINE_STATE_KEY]);
    const back = decodeConfigsSecret(data);
    expect(back.state).toEqual(state);
    expect([...back.keys].map(([id, k]) => [id, Buffer.from(k).toString('hex')])).toEqual([[0, KEY.toString('hex')], [1, KEY2.toString('hex')]]);
    // the state part never holds a key
    const stateText = Buffer.from(data[MACHINE_STATE_KEY], 'base64').toString('utf8');
    expect(stateText).not.toContain(KEY.toString('base64'));
    expect(stateText).not.toContain(KEY.toString('hex'));
    expect(decodeMachineState(encodeMachineState(INITIAL_STATE))).toEqual(INITIAL_STATE);
  });

  it('refuses a Secret whose two parts disagree, or whose key does not match the recorded fingerprint', () => {
    const { state, keys } = rotated();
    const data = encodeConfigsSecret(state, keys);
    const other = encodeConfigsSecret({ ...state, configs: state.configs.filter((c) => c.state === 'active') }, keys);
    expect(() => decodeConfigsSecret({ ...data, [MACHINE_STATE_KEY]: other[MACHINE_STATE_KEY] })).toThrow('configs.json: holds configs 0,1 but state.json names 1');
    expect(() => decodeConfigsSecret({ [BACKEND_CONFIGS_KEY]: data[BACKEND_CONFIGS_KEY] })).toThrow('state.json: missing from the Secret');
    // configs.json with the two keys swapped (as a hand edit would): the fingerprints catch it
    const swapped = backendConfigsState(state, keys);
    const tampered = encodeBackendSecret({
      ...swapped,
      configs: swapped.configs.map((c) => ({ ...c, config: makeConfig({ ...c.config, key: c.config.configId === 0 ? KEY2 : KEY }) })),
    });
    expect(() => decodeConfigsSecret({ ...data, ...tampered })).toThrow('configs.json: config 0: its key does not match fingerprint');
    // and the encoder refuses to write keys that do not match the state
    expect(() => encodeConfigsSecret(state, new Map([[0, KEY2], [1, KEY]]))).toThrow('does not match fingerprint');
  });

  it.each([
    ['not JSON', 'nope', 'state: not valid JSON'],
    ['two active configs', JSON.stringify({ format: 'quiclb-rotation-machine/1', last_rotation_at: null, configs: [0, 1].map((id) => ({ config_id: id, state: 'active', since: '2026-12-04T12:00:00Z', server_id_length: 2, nonce_length: 6, fingerprint: 'sha256:0123456789abcdef', key_fingerprint: null, reason: 'initial' })) }), 'state.configs: 2 active configs'],
    ['a bad reason', JSON.stringify({ format: 'quiclb-rotation-machine/1', last_rotation_at: null, configs: [{ config_id: 0, state: 'active', since: '2026-12-04T12:00:00Z', server_id_length: 2, nonce_length: 6, fingerprint: 'sha256:0123456789abcdef', key_fingerprint: null, reason: 'whim' }] }), 'state.configs[0].reason: must be one of'],
  ])('refuses a state with %s', (_what, text, message) => {
    expect(() => decodeMachineState(text)).toThrow(message);
  });
});
