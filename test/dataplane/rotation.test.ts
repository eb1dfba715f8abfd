/** Config rotation in standalone mode: accepting -> active -> draining -> retired, LB and generator in step. */
import { describe, expect, it, afterAll } from '@jest/globals';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { ServerCidGenerator, makeConfig, type RotationState } from '../../lib/index.js';
import { runStandalone } from '../../dataplane/standalone.js';
import { advance } from '../../dataplane/rotation.js';
import { REDACT_PATHS } from '../../dataplane/logging.js';
import { Client, shortPacket, TaggingBackend, waitFor } from './helpers.js';

const KEY_B64 = Buffer.alloc(16, 0x42).toString('base64');
const cleanup: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const f of cleanup.reverse()) await f();
});

describe('rotation', () => {
  it('advance(): rotate, promote, retire, with the next free config id', () => {
    const k = Buffer.alloc(16, 1);
    const c0 = makeConfig({ configId: 0, serverIdLength: 2, nonceLength: 6, key: k });
    const s = { enabled: true, follow: false, intervalMs: 1000, drainMs: 300, promoteAfterMs: 100 };
    let st: RotationState = { serverIdLength: 2, lastRotationAt: 0, configs: [{ config: c0, state: 'active', since: 0 }] };
    expect(advance(st, s, 999)).toBeNull();
    const a1 = advance(st, s, 1000)!;
    expect(a1.rotated).toBe(true);
    expect(a1.state.configs.map((e) => [e.config.configId, e.state])).toEqual([
      [0, 'active'],
      [1, 'accepting'],
    ]);
    expect(Buffer.compare(a1.state.configs[1].config.key!, k)).not.toBe(0);
    expect(advance(a1.state, s, 1099)).toBeNull();
    const a2 = advance(a1.state, s, 1100)!;
    expect(a2.state.configs.map((e) => [e.config.configId, e.state])).toEqual([
      [0, 'draining'],
      [1, 'active'],
    ]);
    const a3 = advance(a2.state, s, 1400)!;
    expect(a3.state.configs.map((e) => [e.config.configId, e.state])).toEqual([[1, 'active']]);
    // Config ids wrap around 0..6 skipping live ones.
    st = { ...a3.state, configs: [{ ...a3.state.configs[0], config: makeConfig({ configId: 6, serverIdLength: 2, nonceLength: 6, key: k }) }] };
    expect(advance(st, s, 5000)!.state.configs[1].config.configId).toBe(0);
  });

  it('rotates keys while traffic flows: old CIDs route during the drain, new CIDs after promotion, old config retired', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'quiclb-rot-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const backends = await Promise.all(['a', 'b'].map((n) => TaggingBackend.start(n)));
    cleanup.push(async () => {
      for (const b of backends) await b.close();
    });
    const path = join(dir, 'rot.yaml');
    writeFileSync(
      path,
      `listen: ["127.0.0.1:0"]
loadbalancer:
  server_id_length: 2
  nonce_length: 6
  encryption_key: "${KEY_B64}"
  config_rotation: { enabled: true, interval: 1500ms, promote_after: 300ms, drain: 1500ms }
servers:
  - { id: a, address: "127.0.0.1:${backends[0].port}" }
  - { id: b, address: "127.0.0.1:${backends[1].port}" }
monitoring: { prometheus_port: null, health_check: { enabled: false } }
`,
    );
    const logs: string[] = [];
    const logger = pino({ level: 'debug', redact: { paths: REDACT_PATHS } }, new Writable({ write: (c, _e, cb) => (logs.push(String(c)), cb()) }));
    const h = await runStandalone({ configPath: path, logger, handleSignals: false });
    cleanup.push(() => h.stop());
    // A second instance follows the same state file without rotating itself.
    const followerPath = join(dir, 'follower.yaml');
    writeFileSync(
      followerPath,
      readFileSync(path, 'utf8').replace(
        /config_rotation: .*/,
        `config_rotation: { enabled: false, follow: true }\n  state_file: rot.yaml.state.json`,
      ),
    );
    const follower = await runStandalone({ configPath: followerPath, logger: pino({ level: 'silent' }), handleSignals: false });
    cleanup.push(() => follower.stop());
    const gen = ServerCidGenerator.fromFile(path, 'a');
    cleanup.push(() => gen.close());
    const c = await Client.open();
    cleanup.push(() => c.close());
    const port = h.addresses()[0].port;
    const dp = h.dataplane!;

    expect(statSync(`${path}.state.json`).mode & 0o777).toBe(0o600);
    expect(gen.activeConfigId).toBe(0);
    const old = gen.next();
    expect(await c.request(shortPacket(old), port)).toBe('a');

    // Rotation: config 1 is accepting at the LB before the generator switches to it.
    expect(await waitFor(() => h.snapshot().configs.some((l) => l.config.configId === 1 && l.state === 'accepting'), 4000)).toBe(true);
    expect(gen.activeConfigId).toBe(0);
    expect(await waitFor(() => gen.activeConfigId === 1, 4000)).toBe(true);
    const fresh = gen.next();
    expect(fresh[0] >> 5).toBe(1);
    expect(await c.request(shortPacket(fresh), port)).toBe('a');
    // The follower loaded the same phases from the state file.
    expect(await waitFor(() => follower.snapshot().configs.some((l) => l.config.configId === 1 && l.state === 'active'), 4000)).toBe(true);
    const fc = await Client.open();
    cleanup.push(() => fc.close());
    expect(await fc.request(shortPacket(fresh), follower.addresses()[0].port)).toBe('a');
    expect(follower.dataplane!.stats().routedByConfig['cid/1']).toBe(1);
    // Draining: the old CID still routes by CID.
    expect(h.snapshot().configs.find((l) => l.config.configId === 0)?.state).toBe('draining');
    expect(await c.request(shortPacket(old), port)).toBe('a');
    expect(dp.stats().routedByConfig['cid/0']).toBe(2);
    expect(dp.stats().routedByConfig['cid/1']).toBe(1);

    // Retired: config 0's CIDs are no longer decoded (they go through the tables/fallback).
    expect(await waitFor(() => !h.snapshot().configs.some((l) => l.config.configId === 0), 4000)).toBe(true);
    const c2 = await Client.open();
    cleanup.push(() => c2.close());
    expect(await c2.request(shortPacket(old), port)).not.toBeNull();
    expect(dp.stats().unroutable.unknown_config).toBe(1);
    expect(await c2.request(shortPacket(gen.next()), port)).toBe('a');

    const metrics = await h.metrics();
    expect(metrics).toMatch(/quiclb_config_rotations_total [1-9]/);
    expect(metrics).toMatch(/quiclb_config_live\{lb="standalone",config_id="[12]",state="active"\} 1/);
    // The state file holds keys; the logs never do.
    const state = JSON.parse(readFileSync(`${path}.state.json`, 'utf8'));
    const keys: string[] = state.configs.map((e: { key: string }) => e.key);
    const all = logs.join('');
    for (const k of [...keys, KEY_B64]) expect(all).not.toContain(k);
    expect(all).toContain('config promoted to active');
  }, 20_000);
});
