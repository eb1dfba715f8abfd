import { describe, expect, it } from '@jest/globals';
import { makeConfig } from '../../lib/quiclb/config.js';
import { parseRotationState } from '../../lib/config/state-file.js';
import {
  BACKEND_CONFIGS_KEY,
  configFingerprint,
  decodeBackendSecret,
  encodeBackendSecret,
  generateKey,
  parseUserKey,
} from '../../operator/rotation/keys.js';
import { keyFingerprint } from '../../lib/config/key-fingerprint.js';

const KEY = Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex');
const T = Date.parse('2026-12-04T12:00:00Z');

describe('keys', () => {
  it('generates distinct 16-byte keys', () => {
    const a = generateKey();
    const b = generateKey();
    expect(a).toHaveLength(16);
    expect(a.equals(b)).toBe(false);
  });

  it('fingerprints a key (the one definition the data plane also uses) as sha256: and 16 hex digits, stable, never containing the key', () => {
    const f = keyFingerprint(KEY);
    expect(f).toMatch(/^sha256:[0-9a-f]{16}$/);
    expect(f).toBe(keyFingerprint(Buffer.from(KEY)));
    expect(f).not.toContain(KEY.toString('hex').slice(0, 8));
    expect(keyFingerprint(generateKey())).not.toBe(f);
  });

  it('fingerprints a whole config: any of id, lengths, flag or key changes it', () => {
    const base = { configId: 1, serverIdLength: 2, nonceLength: 6, key: KEY };
    const f = configFingerprint(makeConfig(base));
    const variants = [
      { ...base, configId: 2 },
      { ...base, serverIdLength: 3 },
      { ...base, nonceLength: 7 },
      { ...base, lengthSelfEncoded: true },
      { ...base, key: generateKey() },
      { ...base, key: null },
    ];
    const all = new Set([f, ...variants.map((v) => configFingerprint(makeConfig(v)))]);
    expect(all.size).toBe(variants.length + 1);
  });

  it('reads a user key as raw bytes, base64 or hex; errors describe the shape, never the value', () => {
    expect(parseUserKey('k', 'key', KEY).equals(KEY)).toBe(true);
    expect(parseUserKey('k', 'key', Buffer.from(KEY.toString('base64'))).equals(KEY)).toBe(true);
    expect(parseUserKey('k', 'key', Buffer.from(`${KEY.toString('hex')}\n`)).equals(KEY)).toBe(true);
    expect(() => parseUserKey('k', 'key', undefined)).toThrow('Secret k key "key": missing');
    const secret = 'not-a-key-but-a-secret-phrase';
    let message = '';
    try {
      parseUserKey('k', 'key', Buffer.from(secret));
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toContain(`it has ${secret.length} bytes`);
    expect(message).not.toContain(secret);
  });

  it('encodes the backends Secret in the rotation-state format that backends already read, and decodes it back', () => {
    const k2 = generateKey();
    const state = {
      serverIdLength: 2,
      lastRotationAt: T,
      configs: [
        { config: makeConfig({ configId: 0, serverIdLength: 2, nonceLength: 6, key: KEY }), state: 'draining' as const, since: T },
        { config: makeConfig({ configId: 1, serverIdLength: 2, nonceLength: 6, key: k2 }), state: 'active' as const, since: T + 1000 },
      ],
    };
    const data = encodeBackendSecret(state);
    expect(Object.keys(data)).toEqual([BACKEND_CONFIGS_KEY]);
    const text = Buffer.from(data[BACKEND_CONFIGS_KEY], 'base64').toString('utf8');
    const json = JSON.parse(text) as Record<string, unknown>;
    expect(json).toMatchObject({ format: 'quiclb-rotation-state/1', server_id_length: 2, last_rotation_at: '2026-12-04T12:00:00.000Z' });
    expect(parseRotationState(text)).toEqual(state);
    expect(decodeBackendSecret(data)).toEqual(state);
  });

  it('refuses a backends Secret without the data key or with broken content', () => {
    expect(() => decodeBackendSecret({})).toThrow(`${BACKEND_CONFIGS_KEY}: missing from the Secret`);
    expect(() => decodeBackendSecret({ [BACKEND_CONFIGS_KEY]: Buffer.from('{"format":"other"}').toString('base64') })).toThrow('state_file.format');
  });
});
