/** Rotator.rotateNow (RotateKeys): starts a rotation whatever the interval, or refuses without writing anything. */
import { describe, expect, it, afterAll } from '@jest/globals';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { makeConfig } from '../../lib/index.js';
import { loadStandaloneConfig } from '../../lib/config/standalone.js';
import { writeRotationState } from '../../lib/config/state-file.js';
import { Rotator, RotationRefused } from '../../dataplane/rotation.js';

const dir = mkdtempSync(join(tmpdir(), 'quiclb-rotate-now-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const logger = pino({ level: 'silent' });
const key = (b: number) => Buffer.alloc(16, b);

function setup(name: string, enabled = true) {
  const path = join(dir, `${name}.yaml`);
  writeFileSync(
    path,
    `loadbalancer:
  server_id_length: 2
  nonce_length: 6
  encryption_key: "${key(1).toString('base64')}"
  config_rotation: { enabled: ${enabled}, interval: 24h, promote_after: 10s, drain: 1m }
servers: [ { id: a, address: "127.0.0.1:4000" } ]
`,
  );
  return path;
}

describe('Rotator.rotateNow', () => {
  it('starts a rotation before the interval is due; refuses a second one while the new config is accepting', () => {
    const path = setup('due');
    let now = 1_000_000;
    const changes: string[] = [];
    const r = new Rotator(loadStandaloneConfig(path), { logger, onChange: (w) => changes.push(w), now: () => now });
    r.start();
    now += 1000;
    const st = r.rotateNow();
    expect(st.configs.map((e) => [e.config.configId, e.state, e.since])).toEqual([
      [0, 'active', 1_000_000],
      [1, 'accepting', 1_001_000],
    ]);
    expect(st.lastRotationAt).toBe(1_001_000);
    expect(r.rotations).toBe(1);
    expect(changes).toEqual(['rotation started: new config accepting']);
    const written = readFileSync(`${path}.state.json`, 'utf8');
    expect(() => r.rotateNow()).toThrow(new RotationRefused('config 1 is still accepting (it becomes active at 1970-01-01T00:16:51.000Z); rotate after that'));
    expect(readFileSync(`${path}.state.json`, 'utf8')).toBe(written);
    r.stop();
  });

  it('refuses when all 7 config ids are live, and when rotation is disabled or stopped', () => {
    const path = setup('full');
    const configs = [0, 1, 2, 3, 4, 5, 6].map((id) => ({
      config: makeConfig({ configId: id, serverIdLength: 2, nonceLength: 6, key: key(10 + id) }),
      state: id === 6 ? ('active' as const) : ('draining' as const),
      since: Date.now(),
    }));
    writeRotationState(`${path}.state.json`, { serverIdLength: 2, lastRotationAt: Date.now(), configs });
    const r = new Rotator(loadStandaloneConfig(path), { logger, onChange: () => {} });
    r.start();
    expect(() => r.rotateNow()).toThrow(/^no free config id: all 7 are live/);
    r.stop();
    expect(() => r.rotateNow()).toThrow(/^key rotation is disabled/);

    const off = setup('off', false);
    const r2 = new Rotator(loadStandaloneConfig(off), { logger, onChange: () => {} });
    expect(() => r2.rotateNow()).toThrow(/^key rotation is disabled/);
    expect(existsSync(`${off}.state.json`)).toBe(false);
  });
});
