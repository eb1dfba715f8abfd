// Bad input to the operator's decoders (stored records, the configs Secret, a spec stored under an older schema)
// gets a ConfigError naming a field, never another exception.
import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { ConfigError } from '../../lib/quiclb/config.js';
import { decodeRecords } from '../../operator/allocation/records-codec.js';
import { decodeConfigsSecret, decodeMachineState } from '../../operator/rotation/secret-codec.js';
import { readSpec } from '../../operator/reconcile/spec.js';

function onlyConfigErrors(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    expect(e.field.length).toBeGreaterThan(0);
  }
}

/** JSON values shaped a bit like the real thing, so the fuzzing gets past the first check. */
const fieldish = fc.constantFrom('format', 'server_id_length', 'assigned', 'released', 'id', 'pod_uid', 'pod', 'at', 'configs', 'config_id', 'state', 'since', 'last_triggers', 'last_rotation_at', 'fingerprint', 'key_fingerprint', 'reason', 'nonce_length', 'backend', 'listen', 'ports', 'addresses', 'serviceName', 'port', 'portName', 'connectionIds', 'rotation', 'encryption', 'mode', 'nodeSelector', 'healthCheck', 'fallback');
const json = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    fc.constantFrom('quiclb-server-ids/1', 'quiclb-rotation-machine/1', 'active', '2026-12-04T12:00:00Z', '00', 'sha256:0123456789abcdef', 'Encrypted', '10s'),
    fc.integer({ min: -2, max: 70000 }),
    fc.boolean(),
    fc.constant(null),
    fc.string({ maxLength: 8 }),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(fieldish, tie('value'), { maxKeys: 6 }),
  ),
})).value;

describe('decoders never throw anything but ConfigError', () => {
  it('decodeRecords', () => {
    fc.assert(fc.property(json, (v) => onlyConfigErrors(() => decodeRecords(JSON.stringify(v) ?? ''))), { numRuns: 2000 });
    fc.assert(fc.property(fc.string({ maxLength: 50 }), (t) => onlyConfigErrors(() => decodeRecords(t))), { numRuns: 500 });
  });

  it('decodeMachineState and decodeConfigsSecret', () => {
    fc.assert(fc.property(json, (v) => onlyConfigErrors(() => decodeMachineState(JSON.stringify(v) ?? ''))), { numRuns: 2000 });
    fc.assert(
      fc.property(json, json, (a, b) =>
        onlyConfigErrors(() =>
          decodeConfigsSecret({ 'state.json': Buffer.from(JSON.stringify(a) ?? '').toString('base64'), 'configs.json': Buffer.from(JSON.stringify(b) ?? '').toString('base64') }),
        ),
      ),
      { numRuns: 1000 },
    );
    onlyConfigErrors(() => decodeConfigsSecret(undefined));
    onlyConfigErrors(() => decodeConfigsSecret({ 'state.json': Buffer.from('{"format":"quiclb-rotation-machine/1","last_rotation_at":null,"configs":[]}').toString('base64') }));
  });

  it('readSpec', () => {
    fc.assert(fc.property(json, (v) => onlyConfigErrors(() => readSpec(v))), { numRuns: 2000 });
  });
});
