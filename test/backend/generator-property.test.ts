/**
 * Property: whatever valid live configs and server ID the operator delivers, every CID the generator mints decodes
 * (CidDecoder, as a data plane holding the same configs) to this pod's server ID under the active config, before
 * and after a rotation, and no CID repeats.
 */
import { describe, it, expect, afterAll } from '@jest/globals';
import fc from 'fast-check';
import { join } from 'node:path';
import { ServerCidGenerator } from '../../lib/backend/generator.js';
import { CidDecoder } from '../../lib/quiclb/decoder.js';
import { cidLength, MAX_CID_LEN } from '../../lib/quiclb/config.js';
import { KubeletVolume } from './kubelet-volume.js';
import { liveConfig, secretFiles, tempDir, type ConfigSpec } from './fixtures.js';

const tmp = tempDir('backend-prop');
afterAll(() => tmp.remove());

/** One config's encoding for a given server-ID length (any valid nonce, extra length, key byte, flag). */
const encoding = (sidLen: number) =>
  fc
    .record({
      nonce: fc.integer({ min: 4, max: 19 - sidLen }),
      selfEncoded: fc.boolean(),
      keyByte: fc.integer({ min: 0, max: 255 }),
    })
    .chain((e) =>
      fc.integer({ min: 0, max: MAX_CID_LEN - 1 - sidLen - e.nonce }).map((extra) => ({ ...e, extra })),
    );

const scenario = fc.integer({ min: 1, max: 15 }).chain((sidLen) =>
  fc.record({
    sidLen: fc.constant(sidLen),
    // one mode for all live configs: plaintext and encrypted never mix (draft-21 §9.7; the CRD keeps the mode)
    encrypted: fc.boolean(),
    serverId: fc.uint8Array({ minLength: sidLen, maxLength: sidLen }),
    ids: fc.uniqueArray(fc.integer({ min: 0, max: 6 }), { minLength: 2, maxLength: 2 }),
    first: encoding(sidLen),
    second: encoding(sidLen),
  }),
);

let run = 0;

function keyOf(fill: number, configId: number): Buffer {
  const k = Buffer.alloc(16, fill);
  k[15] = configId;
  return k;
}

describe('every CID minted from the delivered files decodes to the pod\'s server ID', () => {
  it('for any valid configs and server ID, through a rotation', () => {
    fc.assert(
      fc.property(scenario, (s) => {
        const vol = new KubeletVolume(join(tmp.dir, `v${run++}`));
        const spec = (id: number, e: typeof s.first, state: ConfigSpec['state']): ConfigSpec => ({
          id,
          state,
          sidLen: s.sidLen,
          nonce: e.nonce,
          key: s.encrypted ? keyOf(e.keyByte, id) : null, // live configs never share a key (§9.6)
          selfEncoded: e.selfEncoded,
          extra: e.extra,
        });
        const [a, b] = s.ids;
        const sidHex = Buffer.from(s.serverId).toString('hex');
        const steps: ConfigSpec[][] = [
          [spec(a, s.first, 'active')],
          [spec(a, s.first, 'active'), spec(b, s.second, 'accepting')],
          [spec(b, s.second, 'active'), spec(a, s.first, 'draining')],
        ];
        vol.write({ ...secretFiles(steps[0]), 'server-id': sidHex });
        const gen = ServerCidGenerator.fromKubernetes({ dir: vol.dir }, { watch: false });
        try {
          const seen = new Set<string>();
          for (const [i, step] of steps.entries()) {
            if (i > 0) {
              vol.write({ ...secretFiles(step), 'server-id': sidHex });
              expect(gen.reload()).toBe(true);
            }
            const active = step.find((c) => c.state === 'active')!;
            const decoder = new CidDecoder(step.map(liveConfig));
            expect(gen.activeConfigId).toBe(active.id);
            for (let n = 0; n < 20; n++) {
              const cid = gen.next();
              expect(cid.length).toBe(cidLength(liveConfig(active)));
              const d = decoder.decode(cid);
              expect(d.configId).toBe(active.id);
              expect(d.serverId?.toString('hex')).toBe(sidHex);
              seen.add(cid.toString('hex'));
            }
          }
          // Random nonces of plaintext configs may repeat only with negligible odds at >= 4 octets.
          expect(seen.size).toBe(60);
        } finally {
          gen.close();
        }
      }),
      { numRuns: 150 },
    );
  });
});
