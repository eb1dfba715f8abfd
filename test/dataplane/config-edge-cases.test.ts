/** Standalone config edge cases found in review: documented settings, defaults, key hygiene, file watching. */
import { describe, expect, it, afterAll } from '@jest/globals';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { parseStandaloneConfig, loadStandaloneConfig, toSnapshot } from '../../lib/config/standalone.js';
import { parseRotationState } from '../../lib/config/state-file.js';
import { makeConfig, ServerCidGenerator, type RotationState } from '../../lib/index.js';
import { advance, Rotator } from '../../dataplane/rotation.js';
import { runStandalone, type StandaloneHandle } from '../../dataplane/standalone.js';
import { waitFor } from './helpers.js';

const KEY_B64 = Buffer.alloc(16, 0x42).toString('base64');
const dir = mkdtempSync(join(tmpdir(), 'quiclb-config-edge-'));
const handles: StandaloneHandle[] = [];
afterAll(async () => {
  for (const h of handles) await h.stop();
  rmSync(dir, { recursive: true, force: true });
});

const yaml = (lb: string, extra = '') => `listen: ["127.0.0.1:0"]
loadbalancer:
  server_id_length: 2
${lb}
servers:
  - { id: a, address: "127.0.0.1:5001" }
monitoring: { prometheus_port: null, health_check: { enabled: false } }
${extra}`;

/** A rotation state file with one active config (config id 1) and then draining ones, with these keys. */
const stateFile = (keys: (string | null)[]): string =>
  JSON.stringify({
    format: 'quiclb-rotation-state/1',
    server_id_length: 2,
    last_rotation_at: '2026-01-01T00:00:00Z',
    configs: keys.map((key, i) => ({ config_id: i + 1, nonce_length: 6, key, state: i === 0 ? 'active' : 'draining', since: '2026-01-01T00:00:00Z' })),
  });

describe('standalone config edge cases', () => {
  it('the follower setting docs/standalone-config.md gives ("the others set `config_rotation: {...}`") is accepted', () => {
    const doc = readFileSync(new URL('../../docs/standalone-config.md', import.meta.url), 'utf8');
    const snippet = /the others set `([^`]+)`/.exec(doc)![1].replace(/\s+/g, ' ').replace('...', '/shared/lb.state.json');
    const c = parseStandaloneConfig(yaml(`  nonce_length: 6\n  encryption_key: "${KEY_B64}"\n  ${snippet}`), { path: join(dir, 'f.yaml') });
    expect(c.rotation.follow).toBe(true);
  });

  it('a config_rotation section without enabled does not silently start rotating (the documented default is false)', () => {
    const c = parseStandaloneConfig(yaml(`  nonce_length: 6\n  encryption_key: "${KEY_B64}"\n  config_rotation: { interval: "1h" }`));
    expect(c.rotation.enabled).toBe(false);
  });

  it('a health-check interval above 24h is reported under the YAML field name', () => {
    const text = yaml(`  nonce_length: 6`, '').replace('health_check: { enabled: false }', 'health_check: { interval: "48h" }');
    const path = join(dir, 'health.yaml');
    writeFileSync(path, text);
    expect(() => toSnapshot(loadStandaloneConfig(path), 1)).toThrow(/^monitoring\.health_check\.interval: /);
  });

  it('a malformed state file does not put key characters into the error message', () => {
    const key = 'AAECAwQFBgcICQoLDA0ODw==';
    const text = `{"format":"quiclb-rotation-state/1","server_id_length":2,"last_rotation_at":"2026-01-01T00:00:00Z","configs":[{"config_id":1,"nonce_length":6,"key":'${key}',"state":"active","since":"2026-01-01T00:00:00Z"}]}`;
    let msg = '';
    try {
      parseRotationState(text);
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(/^state_file: not valid JSON/);
    expect(msg).not.toContain(key.slice(0, 6));
  });

  it('a state file that mixes plaintext and encrypted configs is rejected like the YAML', () => {
    expect(() => parseRotationState(stateFile([KEY_B64, null]))).toThrow(/^state_file\.configs: .*plaintext/);
  });

  it('a state file whose configs share a key is rejected (nonces could repeat under it)', () => {
    expect(() => parseRotationState(stateFile([KEY_B64, KEY_B64]))).toThrow(/^state_file\.configs\[1\]: has the same key as state_file\.configs\[0\]/);
  });

  it('a reload that changes name keeps the running name (it labels every series and log line) and applies the rest', async () => {
    const path = join(dir, 'rename.yaml');
    writeFileSync(path, `name: one\n${yaml(`  nonce_length: 6\n  encryption_key: "${KEY_B64}"`)}`);
    const h = await runStandalone({ configPath: path, logger: pino({ level: 'silent' }), handleSignals: false });
    handles.push(h);
    const v = h.snapshot().version;
    const renamed = `name: two\n${yaml(`  nonce_length: 6\n  encryption_key: "${KEY_B64}"`)}`.replace('127.0.0.1:5001" }', '127.0.0.1:5001" }\n  - { id: b, address: "127.0.0.1:5002" }');
    writeFileSync(`${path}.tmp`, renamed);
    renameSync(`${path}.tmp`, path);
    expect(await waitFor(() => h.snapshot().version > v, 3000)).toBe(true);
    expect(h.snapshot().servers.map((x) => x.name)).toEqual(['a', 'b']);
    expect(h.snapshot().name).toBe('one');
  });

  it('the rotator never schedules a step in the past when nothing is due (no busy loop when interval < promote_after)', () => {
    const s = { enabled: true, follow: false, intervalMs: 1000, drainMs: 300_000, promoteAfterMs: 60_000 };
    const k = Buffer.alloc(16, 1);
    const c0 = makeConfig({ configId: 0, serverIdLength: 2, nonceLength: 6, key: k });
    const st0: RotationState = { serverIdLength: 2, lastRotationAt: 0, configs: [{ config: c0, state: 'active', since: 0 }] };
    const st1 = advance(st0, s, 1000)!.state; // config 1 accepting since 1000
    const now = 5000; // interval elapsed again, promotion due only at 61000
    expect(advance(st1, s, now)).toBeNull();
    const r = new Rotator({ config: { rotation: s } } as never, { logger: pino({ level: 'silent' }), onChange: () => {}, now: () => now });
    expect(r.nextDue(st1)).toBeGreaterThan(now);
  });

  it('after a reload failed on a missing key file, creating that key file reloads', async () => {
    const path = join(dir, 'keyfile.yaml');
    writeFileSync(path, yaml(`  nonce_length: 6\n  encryption_key: "${KEY_B64}"`));
    const h = await runStandalone({ configPath: path, logger: pino({ level: 'silent' }), handleSignals: false });
    handles.push(h);
    const v = h.snapshot().version;
    writeFileSync(`${path}.tmp`, yaml(`  nonce_length: 6\n  encryption_key_file: new.key`));
    renameSync(`${path}.tmp`, path);
    await new Promise((r) => setTimeout(r, 600)); // the reload runs and fails: new.key does not exist yet
    expect(h.snapshot().version).toBe(v);
    writeFileSync(join(dir, 'new.key'), Buffer.alloc(16, 7).toString('base64') + '\n');
    expect(await waitFor(() => h.snapshot().version > v, 3000)).toBe(true);
  });

  it('the same for ServerCidGenerator: it switches to the new config once the missing key file appears', async () => {
    const path = join(dir, 'gen-keyfile.yaml');
    writeFileSync(path, yaml(`  nonce_length: 6\n  encryption_key: "${KEY_B64}"`));
    const gen = ServerCidGenerator.fromFile(path, 'a');
    try {
      expect(gen.activeConfigId).toBe(0);
      writeFileSync(`${path}.tmp`, yaml(`  nonce_length: 6\n  config_id: 3\n  encryption_key_file: gen-new.key`));
      renameSync(`${path}.tmp`, path);
      expect(await waitFor(() => gen.lastError !== null, 3000)).toBe(true);
      writeFileSync(join(dir, 'gen-new.key'), Buffer.alloc(16, 8).toString('base64') + '\n');
      expect(await waitFor(() => gen.activeConfigId === 3, 3000)).toBe(true);
    } finally {
      gen.close();
    }
  });
});
