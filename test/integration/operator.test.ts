/**
 * `quiclb operator` against the real API server (tier 1 is enough), under its own ServiceAccount token with the
 * RBAC of deploy/rbac.yaml (never admin), with a real `quiclb dataplane` process connected over mTLS and real UDP
 * backends (operator-fixture.ts: the data plane and the pods' sockets live in a private network namespace).
 *
 * Proves: finalizer added; server IDs assigned, stored in the ConfigMap, written on the pods, stable across
 * changes; the configs Secret written; the snapshot ACKed by the data plane; Ready and ConfigSynced true and
 * `kubectl wait --for=condition=Ready` succeeds; Events recorded; a datagram with a CID minted from the Secret's
 * active config for a pod's server ID reaches that pod's socket and no other; scaling the slices changes what the
 * data plane routes (timed); an on-demand key rotation while connections minted under the old and the new config
 * send steadily: no datagram misrouted or lost, status goes Accepting -> Draining -> Stable (seen through a watch),
 * the old config retires; a second load balancer on the same port and node is Degraded/PortConflict while the first
 * keeps routing and the pods keep its IDs; a second load balancer on another port but the same Service is
 * Degraded/BackendConflict, writes no pod annotations and is not served until the first is deleted, then takes over
 * at once; a second load balancer whose different Service shares pods with the first's is Degraded/BackendPodConflict,
 * leaves those pods' annotations and routing to the first, and takes them once the first stops selecting them or is
 * deleted; the correlation id of a reconcile appears in the publish and ACK log lines;
 * quiclb_operator_* metrics; no key bytes in the logs; deleting the QuicLoadBalancer closes its listener, deletes its
 * records and Secret, takes the annotations off the pods and removes the finalizer.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import * as k8s from '@kubernetes/client-node';
import type { QuicLbConfig } from '../../lib/quiclb/config.js';
import { CidEncoder } from '../../lib/quiclb/encoder.js';
import { adminKubeConfig, kubectl } from './cluster.js';
import { json, OperatorWorld, POD_IPS, QLB, waitFor, type Proc, type StreamCounts } from './operator-fixture.js';

const adminEvents = () => adminKubeConfig().makeApiClient(k8s.EventsV1Api);

describe('quiclb operator on a real API server', () => {
  const w = new OperatorWorld();
  let operator: Proc;

  beforeAll(async () => {
    await w.setUp(['web-0', 'web-1']);
    operator = w.startOperator([]);
    const running = await waitFor('operator running', async () => json(operator, 'operator running')[0], 30_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${operator.lines.join('\n')}`);
    });
    await w.startDataPlane(Number(String(running.configAddress).split(':').pop()));
  }, 120_000);

  afterAll(() => w.tearDown());

  it('makes a QuicLoadBalancer Ready: finalizer, IDs, Secret, annotations, ACKed snapshot, kubectl wait', async () => {
    await w.createQlb();
    const t0 = Date.now();
    const r = await kubectl(['wait', '--for=condition=Ready', `qlb/${w.qlbName}`, '-n', w.ns, '--timeout=60s']);
    if (r.code !== 0) throw new Error(`kubectl wait failed: ${r.stderr}\n${operator.lines.slice(-40).join('\n')}\n${w.peer!.dataplaneLines.slice(-20).join('\n')}`);
    process.stderr.write(`[operator] create -> Ready: ${Date.now() - t0} ms\n`);

    const q = await w.getQlb();
    expect(q.metadata.finalizers).toContain('quiclb.io/cleanup');
    expect((await w.condition('ConfigSynced'))?.status).toBe('True');
    expect((await w.condition('Degraded'))?.status).toBe('False');
    expect(q.status).toMatchObject({ backends: { total: 2 }, dataPlanes: { connected: 1, inSync: 1 } });
    expect(q.metadata.managedFields?.some((f) => f.manager === 'quiclb-operator' && f.subresource === 'status')).toBe(true);

    const ids = await w.podIds();
    expect(ids['web-0']).toMatch(/^[0-9a-f]{4}$/);
    expect(ids['web-1']).toMatch(/^[0-9a-f]{4}$/);
    expect(ids['web-0']).not.toBe(ids['web-1']);
    expect(ids['web-2']).toBeUndefined();
    const cm = await w.core.readNamespacedConfigMap({ name: `${w.qlbName}-quiclb-server-ids`, namespace: w.ns });
    expect(cm.data?.['server-ids.json']).toContain(w.pods.get('web-0')!.uid);
    const config = await w.activeConfig();
    expect(config.key).not.toBeNull();

    // A CID minted with the Secret's config for web-1's ID reaches web-1's socket (and not web-0's).
    expect(await w.reaches(ids['web-1']!, POD_IPS[1], 10_000)).toBeGreaterThanOrEqual(0);
    expect(await w.reaches(ids['web-0']!, POD_IPS[0], 10_000)).toBeGreaterThanOrEqual(0);
    // web-0's ID never reaches web-1.
    expect(await w.reaches(ids['web-0']!, POD_IPS[1], 300)).toBe(-1);

    // Events (events.k8s.io) for the transitions, about the QuicLoadBalancer, with a fingerprint and never the key.
    const events = (await adminEvents().listNamespacedEvent({ namespace: w.ns })).items;
    const reasons = events.filter((e) => e.regarding?.kind === 'QuicLoadBalancer' && e.regarding.name === w.qlbName).map((e) => e.reason);
    expect(reasons).toEqual(expect.arrayContaining(['ConfigCreated', 'ServerIDsAssigned']));
    expect(events.find((e) => e.reason === 'ConfigCreated')?.note).toMatch(/key sha256:[0-9a-f]{16}/);

    // No key bytes in any log line of the operator, in the status or in an Event.
    const keyHex = Buffer.from(config.key!).toString('hex');
    const keyB64 = Buffer.from(config.key!).toString('base64');
    expect(operator.lines.filter((l) => l.includes(keyHex) || l.includes(keyB64))).toEqual([]);
    const published = JSON.stringify([(await w.getQlb()).status, events]);
    expect([published.toLowerCase().includes(keyHex), published.includes(keyB64)]).toEqual([false, false]);
  });

  it('follows scaling: a new pod gets an ID and traffic, IDs of the others stay; a removed pod releases its ID', async () => {
    const before = await w.podIds();
    const t0 = Date.now();
    await w.setSlice(['web-0', 'web-1', 'web-2']);
    const id2 = await waitFor('web-2 annotated', async () => (await w.podIds())['web-2'], 20_000, 50);
    const ms = await w.reaches(id2, POD_IPS[2], 20_000);
    expect(ms).toBeGreaterThanOrEqual(0);
    process.stderr.write(`[operator] slice change -> new pod's CID routed: ${Date.now() - t0} ms\n`);
    const after = await w.podIds();
    expect(after['web-0']).toBe(before['web-0']);
    expect(after['web-1']).toBe(before['web-1']);
    expect(new Set(Object.values(after)).size).toBe(3);

    await w.setSlice(['web-1', 'web-2']);
    await waitFor('web-0 released', async () => {
      const cm = await w.core.readNamespacedConfigMap({ name: `${w.qlbName}-quiclb-server-ids`, namespace: w.ns });
      const r = JSON.parse(cm.data!['server-ids.json']) as { released: { pod: string; id: string }[] };
      return r.released.find((x) => x.pod === 'web-0' && x.id === before['web-0']);
    }, 20_000);
    await waitFor('status shows 2 backends', async () => ((await w.getQlb()).status as { backends?: { total: number } } | undefined)?.backends?.total === 2 || undefined, 20_000);
    expect((await w.podIds())['web-1']).toBe(before['web-1']);
  });

  it('a terminating pod keeps its ID and its connections, and counts as draining', async () => {
    const ids = await w.podIds();
    await w.setSlice(['web-1', 'web-2'], [], ['web-2']);
    await waitFor('status shows one draining backend', async () => ((await w.getQlb()).status as { backends?: { draining: number } } | undefined)?.backends?.draining === 1 || undefined, 20_000);
    expect(await w.reaches(ids['web-2']!, POD_IPS[2], 5000)).toBeGreaterThanOrEqual(0);
    expect((await w.podIds())['web-2']).toBe(ids['web-2']);
    await w.setSlice(['web-1', 'web-2']);
    await waitFor('no backend draining', async () => ((await w.getQlb()).status as { backends?: { draining: number } } | undefined)?.backends?.draining === 0 || undefined, 20_000);
  });

  it('rotates the key on demand while connections under the old and the new config send: none misrouted or lost, every phase in status, the old config retired', async () => {
    const ids = await w.podIds();
    const old = await w.activeConfig();
    await kubectl(['patch', 'qlb', w.qlbName, '-n', w.ns, '--type=merge', '-p', JSON.stringify({ spec: { rotation: { drainPeriod: '30s', quietPeriod: '3s' } } })]);
    // Every status write the API server stores, in order (a watch, not polling: the Accepting phase can be short).
    const phases: string[] = [];
    const watch = await new k8s.Watch(adminKubeConfig()).watch(
      `/apis/${QLB.group}/${QLB.version}/namespaces/${w.ns}/${QLB.plural}`,
      { fieldSelector: `metadata.name=${w.qlbName}` },
      (_type, obj: { status?: { rotation?: { phase?: string } } }) => {
        const phase = obj.status?.rotation?.phase;
        if (phase !== undefined && phases[phases.length - 1] !== phase) phases.push(phase);
      },
      () => undefined,
    );
    const flows = (config: QuicLbConfig) => [1, 2].map((i) => ({ dcid: new CidEncoder(config, Buffer.from(ids[`web-${i}`]!, 'hex')).next(), ip: POD_IPS[i] }));
    // Connections minted under the old config send throughout the rotation, until a while after the promotion.
    const oldTraffic = w.peer!.stream(flows(old), 20, 60_000);
    let newTraffic: { stop: () => Promise<StreamCounts[]> } | null = null;
    let fresh: QuicLbConfig;
    try {
      await kubectl(['annotate', 'qlb', w.qlbName, '-n', w.ns, 'quiclb.io/rotate=first']);
      fresh = await waitFor('a new active config', async () => {
        const c = await w.activeConfig();
        return c.configId !== old.configId ? c : undefined;
      }, 20_000, 50);
      expect(Buffer.from(fresh.key!).equals(Buffer.from(old.key!))).toBe(false);
      // Connections minted under the new config from its promotion to the end.
      newTraffic = w.peer!.stream(flows(fresh), 20, 60_000);
      await new Promise((r) => setTimeout(r, 1500));
      const oldCounts = await oldTraffic.stop();
      await waitFor('old config retired (no traffic for the quiet period)', async () => {
        const q = await w.getQlb();
        const r = (q.status as { rotation?: { phase: string; configs: { id: number }[] } }).rotation;
        return r?.phase === 'Stable' && r.configs.length === 1 && r.configs[0].id === fresh!.configId ? true : undefined;
      }, 30_000, 100);
      const newCounts = await newTraffic.stop();
      process.stderr.write(`[operator] rotation under traffic: old config ${JSON.stringify(oldCounts)}, new config ${JSON.stringify(newCounts)}\n`);
      for (const c of [...oldCounts, ...newCounts]) {
        expect(c.sent).toBeGreaterThan(50);
        expect({ misrouted: c.misrouted, lost: c.lost }).toEqual({ misrouted: 0, lost: 0 });
      }
    } finally {
      watch.abort();
      await Promise.all([oldTraffic.stop(), newTraffic?.stop()]);
    }
    // Stable (before), Accepting (pushed, waiting for ACKs), Draining (new active, old draining), Stable (retired).
    const from = phases.indexOf('Accepting');
    expect(from).toBeGreaterThan(-1);
    expect(phases.slice(from)).toEqual(['Accepting', 'Draining', 'Stable']);
    // Events and audit lines follow the status write of the same reconcile.
    const wanted = ['RotationStarted', 'ConfigPromoted', 'ConfigRetired'];
    await waitFor('rotation Events', async () => {
      const reasons = (await adminEvents().listNamespacedEvent({ namespace: w.ns })).items.filter((e) => e.regarding?.name === w.qlbName).map((e) => e.reason);
      return wanted.every((r) => reasons.includes(r)) ? true : undefined;
    }, 10_000);
    const auditLines = json(operator, 'key lifecycle');
    expect(auditLines.map((l) => l.reason)).toEqual(expect.arrayContaining(['ConfigCreated', ...wanted]));
    // The audit line says what triggered the rotation, the config ids and the new key's fingerprint.
    const started = auditLines.find((l) => l.reason === 'RotationStarted')!;
    expect(started).toMatchObject({ audit: true, trigger: { annotation: 'first' } });
    expect(started.message).toMatch(new RegExp(`^rotation \\(on-demand\\): config ${fresh!.configId} accepting, key sha256:[0-9a-f]{16}, config ${old.configId} still active$`));
    expect(auditLines.find((l) => l.reason === 'ConfigPromoted')?.message).toBe(`config ${fresh!.configId} active for backends, config ${old.configId} draining`);
    expect(await w.reaches(ids['web-1']!, POD_IPS[1], 5000, fresh)).toBeGreaterThanOrEqual(0);
    // Ready is False (ConfigNotSynced) for the moment between the retirement's snapshot and its ACK.
    await waitFor('Ready again', async () => ((await w.condition('Ready'))?.status === 'True' ? true : undefined), 10_000);
  });

  it('logs a correlation id from reconcile to published version to the data plane ACK, and exports metrics', async () => {
    const published = json(operator, 'snapshot published').filter((l) => Array.isArray(l.correlationIds) && (l.correlationIds as string[]).length > 0);
    expect(published.length).toBeGreaterThan(0);
    const last = published[published.length - 1];
    const cid = (last.correlationIds as string[])[0];
    await waitFor('ACK log with the correlation id', async () => json(operator, 'data plane ACKed').find((l) => (l.correlationIds as string[]).includes(cid)), 10_000);
    // The reconcile that published it logs under the same id (it may still be writing status when the ACK lands).
    await waitFor('reconcile log with the correlation id', async () => (operator.lines.some((l) => l.includes(cid) && l.includes('"component":"reconciler"')) ? true : undefined), 10_000);

    const metricsAddress = String(json(operator, 'operator running')[0].metricsAddress);
    const text = await (await fetch(`http://${metricsAddress}/metrics`)).text();
    const value = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
    expect(value(/^quiclb_operator_reconciles_total\{result="success"\} (\d+)/m)).toBeGreaterThan(0);
    expect(value(/^quiclb_operator_connected_data_planes (\d+)/m)).toBe(1);
    expect(value(/^quiclb_operator_snapshot_versions_acked_total (\d+)/m)).toBeGreaterThan(0);
    expect(value(/^quiclb_operator_server_id_allocations_total\{kind="assigned"\} (\d+)/m)).toBe(3);
    expect(value(/^quiclb_operator_rotations_total\{phase="created"\} (\d+)/m)).toBe(1);
    expect(value(/^quiclb_operator_rotations_total\{phase="started"\} (\d+)/m)).toBe(1);
    expect(value(/^quiclb_operator_rotations_total\{phase="promoted"\} (\d+)/m)).toBe(1);
    expect(value(/^quiclb_operator_rotations_total\{phase="retired"\} (\d+)/m)).toBe(1);
    // Every metric name starts with quiclb_ (DESIGN), the process and Node.js defaults included.
    expect(value(/^quiclb_process_resident_memory_bytes (\d+)/m)).toBeGreaterThan(0);
    expect(text.split('\n').filter((l) => l !== '' && !/^(# (HELP|TYPE) )?quiclb_/.test(l))).toEqual([]);
  });

  it('a second QuicLoadBalancer on the same port and node is Degraded/PortConflict; the first keeps routing', async () => {
    const ids = await w.podIds();
    const config = await w.activeConfig();
    const second = `${w.qlbName}-late`;
    await w.createQlb({}, second);
    try {
      const degraded = await waitFor('the later one Degraded', async () => {
        const c = await w.condition('Degraded', second);
        return c?.status === 'True' ? c : undefined;
      }, 20_000);
      expect(degraded.reason).toBe('PortConflict');
      expect((degraded as { message?: string }).message).toContain(`${w.ns}/${w.qlbName}`);
      expect((await w.condition('Ready', second))?.status).toBe('False');
      expect((await w.condition('Degraded'))?.status).toBe('False');
      expect((await w.condition('Ready'))?.status).toBe('True');
      expect(await w.reaches(ids['web-1']!, POD_IPS[1], 5000, config)).toBeGreaterThanOrEqual(0);
      // Same backend Service too: the later one writes no IDs into the pods' quiclb.io/server-id annotations.
      expect((degraded as { message?: string }).message).toContain('(also: BackendConflict)');
      expect(await w.podIds()).toEqual(ids);
      await expect(w.core.readNamespacedConfigMap({ name: `${second}-quiclb-server-ids`, namespace: w.ns })).rejects.toMatchObject({ code: 404 });
    } finally {
      await w.co.deleteNamespacedCustomObject({ ...QLB, namespace: w.ns, name: second });
      await waitFor('the later one gone', async () => ((await kubectl(['get', 'qlb', second, '-n', w.ns])).code !== 0 ? true : undefined), 30_000);
    }
  });

  it('deleting the QuicLoadBalancer closes its listener, removes its records and Secret, then the finalizer', async () => {
    const ids = await w.podIds();
    const config = await w.activeConfig();
    expect(await w.reaches(ids['web-1']!, POD_IPS[1], 5000, config)).toBeGreaterThanOrEqual(0);
    await w.co.deleteNamespacedCustomObject({ ...QLB, namespace: w.ns, name: w.qlbName });
    await waitFor('QuicLoadBalancer gone', async () => ((await kubectl(['get', 'qlb', w.qlbName, '-n', w.ns])).code !== 0 ? true : undefined), 30_000);
    await waitFor('listener closed', async () => ((await w.reaches(ids['web-1']!, POD_IPS[1], 300, config)) < 0 ? true : undefined), 15_000, 100);
    await expect(w.core.readNamespacedConfigMap({ name: `${w.qlbName}-quiclb-server-ids`, namespace: w.ns })).rejects.toMatchObject({ code: 404 });
    await expect(w.core.readNamespacedSecret({ name: `${w.qlbName}-quiclb-configs`, namespace: w.ns })).rejects.toMatchObject({ code: 404 });
    expect((await w.podIds())['web-1']).toBeUndefined();
  });
  it('a second QuicLoadBalancer on another port but the same Service is Degraded/BackendConflict until the first is deleted, then takes over', async () => {
    // The holder sorts first by name too (creationTimestamp has 1 s resolution: a tie is broken by namespace/name).
    const first = 'backend-first';
    await w.setSlice(['web-0', 'web-1']);
    await w.createQlb({ listen: { ports: [8446], addresses: ['127.0.0.1'] } }, first);
    await waitFor('the first Ready', async () => ((await w.condition('Ready', first))?.status === 'True' ? true : undefined), 30_000, 100);
    const ids = await waitFor('pods annotated', async () => {
      const x = await w.podIds();
      return x['web-0'] && x['web-1'] ? x : undefined;
    }, 20_000, 100);
    await w.createQlb({}, w.qlbName); // LISTEN_PORT, Service web
    try {
      const degraded = await waitFor('the later one Degraded', async () => {
        const c = await w.condition('Degraded');
        return c?.status === 'True' ? c : undefined;
      }, 20_000);
      expect(degraded.reason).toBe('BackendConflict');
      expect((degraded as { message?: string }).message).toContain(`QuicLoadBalancer ${w.ns}/${first}`);
      expect((degraded as { message?: string }).message).toContain('one QuicLoadBalancer per backend Service, or a separate Service');
      expect((await w.condition('Ready'))?.status).toBe('False');
      expect(await w.podIds()).toEqual(ids);
      expect((await w.condition('Ready', first))?.status).toBe('True');
      expect((await w.condition('Degraded', first))?.status).toBe('False');
      // Not served: a CID for web-1 sent to the later one's port reaches nobody.
      expect(await w.reaches(ids['web-1']!, POD_IPS[1], 500)).toBe(-1);
      expect(await w.podIds()).toEqual(ids);

      const t0 = Date.now();
      await w.co.deleteNamespacedCustomObject({ ...QLB, namespace: w.ns, name: first });
      await waitFor('the later one Ready', async () => ((await w.condition('Ready'))?.status === 'True' ? true : undefined), 20_000, 100);
      process.stderr.write(`[operator] holder deleted -> the other Ready: ${Date.now() - t0} ms\n`);
      expect((await w.condition('Degraded'))?.status).toBe('False');
      const mine = await w.storedIds();
      const now = await w.podIds();
      expect(now['web-0']).toBe(mine.assigned.get(w.pods.get('web-0')!.uid));
      expect(now['web-1']).toBe(mine.assigned.get(w.pods.get('web-1')!.uid));
      expect(await w.reaches(now['web-1']!, POD_IPS[1], 10_000)).toBeGreaterThanOrEqual(0);
    } finally {
      for (const name of [first, w.qlbName]) {
        await w.co.deleteNamespacedCustomObject({ ...QLB, namespace: w.ns, name }).catch(() => undefined);
        await waitFor(`${name} gone`, async () => ((await kubectl(['get', 'qlb', name, '-n', w.ns])).code !== 0 ? true : undefined), 30_000);
      }
    }
  });

  it('two QuicLoadBalancers whose different Services share pods: the earlier keeps them, the later is Degraded/BackendPodConflict for them, takes them once the holder stops selecting them or is gone', async () => {
    // alpha-pods (earlier; sorts first by name too, as creationTimestamp has 1 s resolution) on Service web (web-0,
    // web-1); edge (w.qlbName, LISTEN_PORT) on Service all (web-0, web-1, web-2), a superset.
    const first = 'alpha-pods';
    await w.setSlice(['web-0', 'web-1']);
    await w.core.createNamespacedService({ namespace: w.ns, body: { metadata: { name: 'all' }, spec: { clusterIP: 'None', ports: [{ name: 'quic', port: 443, protocol: 'UDP', targetPort: 9000 }] } } });
    const all = w.slice(['web-0', 'web-1', 'web-2']);
    await w.disc.createNamespacedEndpointSlice({ namespace: w.ns, body: { ...all, metadata: { ...all.metadata, name: 'all-slice', labels: { 'kubernetes.io/service-name': 'all' } } } });
    await w.createQlb({ listen: { ports: [8447], addresses: ['127.0.0.1'] } }, first);
    try {
      await waitFor('the first Ready', async () => ((await w.condition('Ready', first))?.status === 'True' ? true : undefined), 30_000, 100);
      const held = await waitFor('pods annotated by the first', async () => {
        const x = await w.podIds();
        return x['web-0'] && x['web-1'] ? x : undefined;
      }, 20_000, 100);
      await w.createQlb({ backend: { serviceName: 'all', port: 443 } });
      const degraded = await waitFor('the later one Degraded', async () => {
        const c = await w.condition('Degraded');
        return c?.status === 'True' ? c : undefined;
      }, 20_000);
      expect(degraded.reason).toBe('BackendPodConflict');
      expect((degraded as { message?: string }).message).toContain(`2 pod(s) of Service all (web-0, web-1) are also backends of QuicLoadBalancer ${w.ns}/${first}`);
      const web2 = await waitFor('web-2 annotated by the later one', async () => (await w.podIds())['web-2'], 20_000, 100);
      const mine = await w.storedIds();
      expect([...mine.assigned.keys()]).toEqual([w.pods.get('web-2')!.uid]);
      expect(mine.assigned.get(w.pods.get('web-2')!.uid)).toBe(web2);
      // The shared pods keep the first's IDs through several reconciles of both (no flapping).
      for (let i = 0; i < 5; i++) {
        const now = await w.podIds();
        expect([now['web-0'], now['web-1']]).toEqual([held['web-0'], held['web-1']]);
        await new Promise((r) => setTimeout(r, 300));
      }
      expect((await w.condition('Degraded', first))?.status).toBe('False');
      // The later one routes to its own pod, never to the first's.
      expect(await w.reaches(web2, POD_IPS[2], 10_000)).toBeGreaterThanOrEqual(0);
      expect(await w.reaches(held['web-1']!, POD_IPS[1], 500)).toBe(-1);
      const events = (await adminEvents().listNamespacedEvent({ namespace: w.ns })).items;
      expect(events.some((e) => e.regarding?.name === w.qlbName && e.reason === 'BackendPodConflict' && e.type === 'Warning')).toBe(true);

      // The first's Service stops selecting web-1: the later one takes it at once (not at the 30 s resync).
      const t0 = Date.now();
      await w.setSlice(['web-0']);
      const web1 = await waitFor('web-1 annotated by the later one', async () => {
        const id = (await w.storedIds()).assigned.get(w.pods.get('web-1')!.uid);
        return id !== undefined && (await w.podIds())['web-1'] === id ? id : undefined;
      }, 10_000, 100);
      process.stderr.write(`[operator] holder's Service stopped selecting a pod -> the other annotated it: ${Date.now() - t0} ms\n`);
      expect(await w.reaches(web1, POD_IPS[1], 10_000)).toBeGreaterThanOrEqual(0);
      expect((await w.podIds())['web-0']).toBe(held['web-0']);
      await waitFor('Degraded names 1 pod', async () => ((await w.condition('Degraded')) as { message?: string } | undefined)?.message?.startsWith('1 pod(s)') || undefined, 10_000, 100);

      // The holder deleted: its teardown leaves web-0's annotation (the later one's backend has it), the later one
      // writes its own ID over it, with the time of the change (draining that long after it: 0 s in these tests).
      const deletedAt = Date.now();
      await w.co.deleteNamespacedCustomObject({ ...QLB, namespace: w.ns, name: first });
      await waitFor('the later one no longer Degraded', async () => ((await w.condition('Degraded'))?.status === 'False' ? true : undefined), 20_000, 100);
      const after = await w.storedIds();
      expect(after.assigned.size).toBe(3);
      await waitFor('web-0 annotated by the later one', async () => ((await w.podIds())['web-0'] === after.assigned.get(w.pods.get('web-0')!.uid) ? true : undefined), 10_000, 100);
      expect((await w.podIds())['web-2']).toBe(web2);
      expect(after.assigned.get(w.pods.get('web-0')!.uid)).not.toBe(held['web-0']);
      const changedAt = (await w.core.readNamespacedPod({ name: 'web-0', namespace: w.ns })).metadata?.annotations?.['quiclb.io/server-id-changed-at'];
      expect(Date.parse(changedAt ?? '')).toBeGreaterThanOrEqual(deletedAt - 1000);
    } finally {
      for (const name of [first, w.qlbName]) {
        await w.co.deleteNamespacedCustomObject({ ...QLB, namespace: w.ns, name }).catch(() => undefined);
        await waitFor(`${name} gone`, async () => ((await kubectl(['get', 'qlb', name, '-n', w.ns])).code !== 0 ? true : undefined), 30_000);
      }
      await w.disc.deleteNamespacedEndpointSlice({ name: 'all-slice', namespace: w.ns }).catch(() => undefined);
      await w.core.deleteNamespacedService({ name: 'all', namespace: w.ns }).catch(() => undefined);
    }
  });

  it('running out of server IDs is Degraded/ServerIDsExhausted, and recovers when quarantined IDs free up', async () => {
    const extra = Array.from({ length: 256 }, (_, i) => `198.18.${1 + (i >> 7)}.${(i & 127) + 1}`);
    await w.setSlice(['web-1'], extra);
    await w.createQlb({ connectionIds: { serverIdLength: 1, nonceLength: 6, serverIdQuarantine: '2s' }, listen: { ports: [8444], addresses: ['127.0.0.1'] } }, 'tiny');
    const degraded = await waitFor('Degraded/ServerIDsExhausted', async () => {
      const c = await w.condition('Degraded', 'tiny');
      return c?.status === 'True' && c.reason === 'ServerIDsExhausted' ? c : undefined;
    }, 30_000);
    expect((degraded as { message?: string }).message).toMatch(/256/);
    expect((await w.storedIds('tiny')).assigned.size).toBe(256);
    // 250 endpoints remain: the IDs of those that left are quarantined for 2 s, then the last one waiting gets one.
    await w.setSlice(['web-1'], extra.slice(0, 249));
    await waitFor('Degraded cleared', async () => ((await w.condition('Degraded', 'tiny'))?.status === 'False' ? true : undefined), 30_000, 200);
    const after = await w.storedIds('tiny');
    expect(after.assigned.size).toBe(250);
    expect(new Set(after.assigned.values()).size).toBe(250);
  });
});
