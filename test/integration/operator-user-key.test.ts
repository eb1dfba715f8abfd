/**
 * A user key Secret (spec.encryption.keySecretRef) labelled quiclb.io/key=true is watched: a new key in it starts a
 * rotation within seconds, not at the operator's 30 s resync. Real API server (tier 1), `quiclb operator` under its
 * own ServiceAccount with deploy/rbac.yaml. No data plane is connected on purpose: its health reports requeue the
 * load balancer every second and would hide a missing watch; the rotation's start does not depend on one.
 *
 * Proves: the first config uses the Secret's key; after the Secret's data is replaced, status.rotation leaves Stable
 * with a new config id and a RotationStarted Event (reason key-changed, the new key's fingerprint, no key bytes)
 * appears, well within the resync; the operator's logs never contain the key bytes.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import * as k8s from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';
import { keyFingerprint } from '../../lib/config/key-fingerprint.js';
import { adminKubeConfig } from './cluster.js';
import { json, OperatorWorld, waitFor, type Proc } from './operator-fixture.js';

type Rotation = { phase?: string; configs?: { id: number }[] };

describe('quiclb operator: the user key Secret is watched', () => {
  const w = new OperatorWorld();
  const events = adminKubeConfig().makeApiClient(k8s.EventsV1Api);
  const key1 = randomBytes(16);
  const key2 = randomBytes(16);
  let operator: Proc;

  const secretBody = (key: Buffer): k8s.V1Secret => ({
    metadata: { name: 'edge-key', labels: { 'quiclb.io/key': 'true' } },
    type: 'Opaque',
    data: { key: key.toString('base64') },
  });
  const rotation = async () => (await w.getQlb()).status?.rotation as Rotation | undefined;

  beforeAll(async () => {
    await w.setUp(['web-0', 'web-1']);
    operator = w.startOperator([]);
    await waitFor('operator running', async () => json(operator, 'operator running')[0], 30_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${operator.lines.join('\n')}`);
    });
  }, 120_000);

  afterAll(() => w.tearDown());

  it('a new key in the Secret starts a rotation within seconds: status and a RotationStarted Event show it', async () => {
    await w.core.createNamespacedSecret({ namespace: w.ns, body: secretBody(key1) });
    await w.createQlb({ encryption: { mode: 'Encrypted', keySecretRef: { name: 'edge-key', key: 'key' } } });
    await waitFor('first config from the user key', async () => ((await rotation())?.phase === 'Stable' ? true : undefined), 30_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${operator.lines.slice(-30).join('\n')}`);
    });
    expect(Buffer.from((await w.activeConfig()).key!)).toEqual(key1);
    const before = (await rotation())!.configs!.map((c) => c.id);
    // Let the reconciles of the creation settle, so that only the Secret's watch can explain a prompt rotation.
    await new Promise((r) => setTimeout(r, 2000));

    const cur = await w.core.readNamespacedSecret({ name: 'edge-key', namespace: w.ns });
    const t0 = Date.now();
    await w.core.replaceNamespacedSecret({
      name: 'edge-key',
      namespace: w.ns,
      body: { ...secretBody(key2), metadata: { ...secretBody(key2).metadata, resourceVersion: cur.metadata!.resourceVersion } },
    });
    const started = await waitFor(
      'rotation started',
      async () => {
        const r = await rotation();
        return r?.configs?.some((c) => !before.includes(c.id)) ? r : undefined;
      },
      10_000,
    );
    const ms = Date.now() - t0;
    process.stderr.write(`[operator] user key Secret changed -> rotation in status: ${ms} ms (phase ${started.phase})\n`);
    expect(ms).toBeLessThan(5000);

    const ev = await waitFor('RotationStarted Event', async () => {
      const list = (await events.listNamespacedEvent({ namespace: w.ns })).items;
      return list.find((e) => e.regarding?.name === w.qlbName && e.reason === 'RotationStarted');
    }, 10_000);
    expect(ev.type).toBe('Normal');
    expect(ev.note).toMatch(new RegExp(`^rotation \\(key-changed\\): config \\d accepting, key ${keyFingerprint(key2)}, config ${before[0]} still active$`));

    // No key bytes in the logs (raw base64, or hex).
    const logs = operator.lines.join('\n');
    for (const k of [key1, key2]) {
      expect(logs).not.toContain(k.toString('base64'));
      expect(logs).not.toContain(k.toString('hex'));
    }
  }, 90_000);
});
