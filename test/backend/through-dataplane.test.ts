/**
 * The backend SDK end to end with a real data plane: a pod's generator reads a kubelet-laid-out volume, its CIDs go
 * through a real Dataplane (real UDP sockets on loopback) holding the same configs, and reach that pod's backend by
 * CID, through a whole rotation; before the files are there its 0b111 CIDs are routed by the flow tables/fallback.
 */
import { describe, it, expect, afterAll } from '@jest/globals';
import { join } from 'node:path';
import { ServerCidGenerator } from '../../lib/backend/generator.js';
import type { LiveConfig } from '../../lib/config/snapshot.js';
import { Opened, server, shortPacket, snapshot } from '../dataplane/helpers.js';
import { KubeletVolume } from './kubelet-volume.js';
import { liveConfig, secretFiles, tempDir, waitFor, type ConfigSpec } from './fixtures.js';

const tmp = tempDir('backend-dp');
const opened = new Opened();
afterAll(async () => {
  await opened.closeAll();
  tmp.remove();
});

const live = (specs: readonly ConfigSpec[]): LiveConfig[] => specs.map((s) => ({ config: liveConfig(s), state: s.state }));

describe('a backend minting from the delivered files, through a real data plane', () => {
  it('routes every CID to that backend by CID, before, during and after a rotation', async () => {
    const backends = await Promise.all(['pod-a', 'pod-b', 'pod-c'].map((n) => opened.backend(n)));
    const servers = backends.map((b, i) => server(b.name, `000${i + 1}`, b.host, b.port));
    const step1: ConfigSpec[] = [{ id: 1, state: 'active' }];
    const { dp, port } = await opened.dataplane(snapshot(servers, { configs: live(step1) }));
    const vol = new KubeletVolume(join(tmp.dir, 'pod-b'));
    const gen = ServerCidGenerator.fromKubernetes({ dir: vol.dir }, { pollMs: 200 });
    try {
      // Not ready (no files yet): 0b111 CIDs, which the data plane routes without CID (fallback, then the tables).
      const early = await opened.client();
      const unroutable = gen.next();
      expect(unroutable[0] >> 5).toBe(7);
      expect(await early.request(shortPacket(unroutable), port)).not.toBeNull();
      expect(dp.stats().routedByConfig['cid/1'] ?? 0).toBe(0);

      vol.write({ ...secretFiles(step1), 'server-id': '0002' });
      expect(await waitFor(() => gen.activeConfigId === 1)).toBe(true);
      const old: Buffer[] = [];
      for (let i = 0; i < 5; i++) {
        const c = await opened.client(); // a new 4-tuple each time: only the CID can say where it goes
        const cid = gen.next();
        old.push(cid);
        expect(await c.request(shortPacket(cid), port)).toBe('pod-b');
      }
      expect(dp.stats().routedByConfig['cid/1']).toBe(5);

      // Rotation as the operator does it: accepting at the data planes first, then active in the Secret.
      const step2: ConfigSpec[] = [{ id: 1, state: 'active' }, { id: 2, state: 'accepting', nonce: 8 }];
      const step3: ConfigSpec[] = [{ id: 2, state: 'active', nonce: 8 }, { id: 1, state: 'draining' }];
      await dp.apply(snapshot(servers, { configs: live(step2) }));
      vol.write({ ...secretFiles(step2), 'server-id': '0002' });
      expect(await waitFor(() => gen.liveConfigs().length === 2)).toBe(true);
      expect(gen.activeConfigId).toBe(1);
      await dp.apply(snapshot(servers, { configs: live(step3) }));
      vol.write({ ...secretFiles(step3), 'server-id': '0002' });
      expect(await waitFor(() => gen.activeConfigId === 2)).toBe(true);
      for (let i = 0; i < 5; i++) {
        const c = await opened.client();
        expect(await c.request(shortPacket(gen.next()), port)).toBe('pod-b');
      }
      expect(dp.stats().routedByConfig['cid/2']).toBe(5);
      // Connections minted before the rotation still reach pod-b by CID (config 1 draining).
      for (const cid of old) {
        const c = await opened.client();
        expect(await c.request(shortPacket(cid), port)).toBe('pod-b');
      }
      expect(dp.stats().routedByConfig['cid/1']).toBe(10);
    } finally {
      gen.close();
    }
  });
});
