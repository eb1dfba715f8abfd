// The QuicLoadBalancer CRD (crds/quiclb.io_quicloadbalancers.yaml) against the real kube-apiserver (tier 1): it is
// accepted (so every CEL rule compiles within the cost budget) and becomes Established; valid objects are accepted
// with the documented defaults; every validation rule rejects its invalid case with its own message; the status
// subresource and the printer columns answer "is it working".
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import { INITIAL_STATE } from '../../operator/rotation/machine.js';
import { computeDesired, statusFacts } from '../../operator/reconcile/desired.js';
import { buildStatus } from '../../operator/status/status.js';
import { adminKubeConfig, createNamespace, deleteNamespace, kubectl, kubectlOk, statusMessage } from './cluster.js';

const CRD_FILE = fileURLToPath(new URL('../../crds/quiclb.io_quicloadbalancers.yaml', import.meta.url));
const GROUP = 'quiclb.io';
const VERSION = 'v1alpha1';
const QLB = { group: GROUP, version: VERSION, plural: 'quicloadbalancers' };
const CRD = `quicloadbalancers.${GROUP}`;
const MERGE_PATCH = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);
const APPLY_PATCH = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.ServerSideApply);

type Spec = Record<string, unknown>;
interface Qlb {
  apiVersion: string;
  kind: string;
  metadata: k8s.V1ObjectMeta;
  spec: Spec;
  status?: Record<string, unknown>;
}

const MINIMAL: Spec = { backend: { serviceName: 'web', port: 443 }, listen: { ports: [443] } };

/** A spec with `patch` merged in one level below the top (e.g. { rotation: { interval: '5m' } }). */
function specWith(patch: Spec, base: Spec = MINIMAL): Spec {
  const out: Spec = { ...base };
  for (const [k, v] of Object.entries(patch)) {
    out[k] = v !== null && typeof v === 'object' && !Array.isArray(v) ? { ...(base[k] as object | undefined), ...v } : v;
  }
  return out;
}

async function rejection(p: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await p;
  } catch (err) {
    if (err instanceof k8s.ApiException) return { code: err.code, message: statusMessage(err) };
    throw err;
  }
  throw new Error('the API server accepted an object it should have rejected');
}

describe('QuicLoadBalancer CRD on a real kube-apiserver', () => {
  let ns: string;
  let co: k8s.CustomObjectsApi;
  let seq = 0;

  const qlb = (name: string, spec: Spec): Qlb => ({ apiVersion: `${GROUP}/${VERSION}`, kind: 'QuicLoadBalancer', metadata: { name, namespace: ns }, spec });
  const create = async (spec: Spec, name = `q${++seq}`): Promise<Qlb> =>
    (await co.createNamespacedCustomObject({ ...QLB, namespace: ns, body: qlb(name, spec) })) as Qlb;

  beforeAll(async () => {
    ns = await createNamespace('crd');
    co = adminKubeConfig().makeApiClient(k8s.CustomObjectsApi);
    await kubectlOk(['apply', '--server-side', '-f', CRD_FILE]);
    await kubectlOk(['wait', '--for=condition=Established', `crd/${CRD}`, '--timeout=60s']);
  });

  afterAll(async () => {
    await deleteNamespace(ns);
    await kubectl(['delete', 'crd', CRD, '--wait=false']);
  });

  it('is Established with its names, short name and categories', async () => {
    const ext = adminKubeConfig().makeApiClient(k8s.ApiextensionsV1Api);
    const crd = await ext.readCustomResourceDefinition({ name: CRD });
    expect(crd.status?.conditions?.find((c) => c.type === 'Established')?.status).toBe('True');
    expect(crd.spec.scope).toBe('Namespaced');
    expect(crd.spec.names).toMatchObject({ kind: 'QuicLoadBalancer', shortNames: ['qlb'], categories: ['quiclb', 'networking'] });
    const version = crd.spec.versions.find((v) => v.name === VERSION)!;
    expect(version.storage).toBe(true);
    expect(version.subresources?.status).toEqual({});
    expect(version.additionalPrinterColumns?.map((c) => c.name)).toEqual(['Ready', 'Backends', 'DataPlanes', 'Config', 'Rotation', 'Reason', 'Age']);
    // the short name and the category reach discovery: kubectl finds the kind by them
    expect((await kubectl(['get', 'qlb', '-n', ns])).code).toBe(0);
    expect((await kubectl(['get', 'quiclb', '-n', ns])).code).toBe(0);
  });

  it('accepts a minimal object and fills in the documented defaults (encrypted, quic-lb routing)', async () => {
    const o = await create(MINIMAL, 'minimal');
    expect(o.spec).toEqual({
      backend: { serviceName: 'web', port: 443 },
      listen: { ports: [443] },
      connectionIds: { serverIdLength: 2, nonceLength: 6, lengthSelfEncoded: false, serverIdQuarantine: '10m' },
      encryption: { mode: 'Encrypted' },
      rotation: { drainPeriod: '1h', quietPeriod: '2m' },
      routing: { mode: 'QuicLB' },
      fallback: { maxFlows: 100000, flowIdleTimeout: '30s' },
      healthCheck: { enabled: true, interval: '10s', timeout: '2s', failureThreshold: 3, successThreshold: 2 },
    });
  });

  it('accepts a full object: port by name, bind addresses, a user key, the limits at their boundary', async () => {
    const spec: Spec = {
      backend: { serviceName: 'h3-backend', portName: 'quic' },
      listen: { ports: [443, 8443], addresses: ['192.0.2.10', '2001:db8::1'] },
      connectionIds: { serverIdLength: 15, nonceLength: 4, lengthSelfEncoded: true, serverIdQuarantine: '720h' },
      encryption: { mode: 'Encrypted', keySecretRef: { name: 'qlb-key' } },
      rotation: { drainPeriod: '168h', quietPeriod: '168h', trigger: '2026-12-04T12:00:00Z' },
      routing: { mode: 'FourTuple' },
      fallback: { maxFlows: 1, flowIdleTimeout: '24h' },
      healthCheck: { enabled: false, interval: '1h', timeout: '1h', failureThreshold: 100, successThreshold: 1 },
      nodeSelector: { 'node-role.kubernetes.io/edge': '', 'topology.kubernetes.io/zone': 'a' },
    };
    const o = await create(spec);
    expect(o.spec).toEqual({ ...spec, encryption: { mode: 'Encrypted', keySecretRef: { name: 'qlb-key', key: 'key' } } });
    // plaintext, chosen explicitly, with a generated-key interval elsewhere: both fine on their own
    await create(specWith({ encryption: { mode: 'Plaintext' } }));
    await create(specWith({ rotation: { interval: '24h' } }));
    await create(specWith({ connectionIds: { serverIdLength: 1, nonceLength: 18 } }));
  });

  // One invalid case per rule: [what, spec patch, expected message].
  const invalid: [string, Spec, string][] = [
    ['both port and portName', { backend: { serviceName: 'web', port: 443, portName: 'quic' } }, 'set exactly one of backend.port (the Service port number) or backend.portName'],
    ['neither port nor portName', { backend: { serviceName: 'web', port: undefined } }, 'set exactly one of backend.port'],
    ['server ID + nonce > 19', { connectionIds: { serverIdLength: 4, nonceLength: 16 } }, 'connectionIds.serverIdLength + connectionIds.nonceLength must be at most 19'],
    ['a key Secret in plaintext mode', { encryption: { mode: 'Plaintext', keySecretRef: { name: 'k' } } }, 'encryption.keySecretRef is set but encryption.mode is Plaintext'],
    ['an interval with a user key', { encryption: { keySecretRef: { name: 'k' } }, rotation: { interval: '24h' } }, 'rotation.interval cannot be used with encryption.keySecretRef'],
    ['an interval in plaintext mode', { encryption: { mode: 'Plaintext' }, rotation: { interval: '24h' } }, 'rotation.interval is set but encryption.mode is Plaintext'],
    ['an interval not longer than the drain period', { rotation: { interval: '1h' } }, 'rotation.interval must be longer than rotation.drainPeriod'],
    ['a quiet period longer than the drain period', { rotation: { drainPeriod: '1m', quietPeriod: '2m' } }, 'rotation.quietPeriod must not exceed rotation.drainPeriod'],
    ['an interval under 10m', { rotation: { interval: '9m', drainPeriod: '1m', quietPeriod: '1m' } }, 'rotation.interval must be at least 10m'],
    ['a drain period under 10s', { rotation: { drainPeriod: '9s', quietPeriod: '1s' } }, 'rotation.drainPeriod must be between 10s and 168h'],
    ['a quiet period under 1s', { rotation: { quietPeriod: '500ms' } }, 'rotation.quietPeriod must be at least 1s'],
    ['a quarantine over 720h', { connectionIds: { serverIdQuarantine: '721h' } }, 'connectionIds.serverIdQuarantine must be at most 720h'],
    ['a flow idle timeout over 24h', { fallback: { flowIdleTimeout: '25h' } }, 'fallback.flowIdleTimeout must be between 1s and 24h'],
    ['a probe timeout over the interval', { healthCheck: { interval: '1s', timeout: '2s' } }, 'healthCheck.timeout must not exceed healthCheck.interval'],
    ['a probe interval over 1h', { healthCheck: { interval: '2h', timeout: '1s' } }, 'healthCheck.interval must be between 1s and 1h'],
    ['a probe timeout under 100ms', { healthCheck: { timeout: '50ms' } }, 'healthCheck.timeout must be at least 100ms'],
    ['a host name as bind address', { listen: { ports: [443], addresses: ['lb.example.com'] } }, 'listen.addresses must hold IP addresses'],
    ['a node selector key over 317 characters', { nodeSelector: { ['k'.repeat(318)]: 'v' } }, 'nodeSelector keys must be at most 317 characters'],
    ['a node selector key that is no label key', { nodeSelector: { 'edge node': 'true' } }, 'nodeSelector keys must be label keys such as topology.kubernetes.io/zone'],
    ['a node selector value that is no label value', { nodeSelector: { edge: 'yes please' } }, 'spec.nodeSelector.edge in body should match'],
    // OpenAPI schema (no CEL): enums, patterns, bounds, lists
    ['an unknown encryption mode', { encryption: { mode: 'Rot13' } }, 'spec.encryption.mode: Unsupported value: "Rot13"'],
    ['an unknown routing mode', { routing: { mode: 'Random' } }, 'spec.routing.mode: Unsupported value: "Random"'],
    ['a duration without a unit', { rotation: { drainPeriod: '3600' } }, 'spec.rotation.drainPeriod in body should match'],
    ['a Service name that is no DNS label', { backend: { serviceName: 'Web_1', port: 443 } }, 'spec.backend.serviceName in body should match'],
    ['no listen port', { listen: { ports: [] } }, 'spec.listen.ports: Invalid value: 0: spec.listen.ports in body should have at least 1 items'],
    ['a listen port twice', { listen: { ports: [443, 443] } }, 'spec.listen.ports[1]: Duplicate value: 443'],
    ['port 0', { listen: { ports: [0] } }, 'spec.listen.ports[0] in body should be greater than or equal to 1'],
    ['a 16-octet server ID', { connectionIds: { serverIdLength: 16, nonceLength: 4 } }, 'spec.connectionIds.serverIdLength: Invalid value: 16: spec.connectionIds.serverIdLength in body should be less than or equal to 15'],
    ['a 3-octet nonce', { connectionIds: { nonceLength: 3 } }, 'spec.connectionIds.nonceLength in body should be greater than or equal to 4'],
    ['a trigger over 63 characters', { rotation: { trigger: 'x'.repeat(64) } }, 'spec.rotation.trigger: Too long: may not be more than 63'],
  ];

  it.each(invalid)('rejects %s with a message that says what to fix', async (_what, patch, message) => {
    const r = await rejection(create(specWith(patch)));
    expect(r.code).toBe(422);
    expect(r.message).toContain(message);
  });

  it('rejects a name over 63 characters (it names the backends Secret and labels metrics)', async () => {
    const r = await rejection(create(MINIMAL, 'n'.repeat(64)));
    expect(r.code).toBe(422);
    expect(r.message).toContain('a QuicLoadBalancer name must be at most 63 characters');
    await create(MINIMAL, 'n'.repeat(63));
  });

  it('rejects a missing backend or listen block', async () => {
    const r = await rejection(create({ listen: { ports: [443] } }));
    expect(r.message).toContain('spec.backend: Required value');
    const r2 = await rejection(create({ backend: { serviceName: 'web', port: 443 } }));
    expect(r2.message).toContain('spec.listen: Required value');
  });

  it('refuses in-place changes of serverIdLength and encryption.mode, and accepts a nonce change (a rotation)', async () => {
    await create(specWith({ connectionIds: { serverIdLength: 3 } }), 'immutable');
    const patch = (spec: Spec) => co.patchNamespacedCustomObject({ ...QLB, namespace: ns, name: 'immutable', body: { spec } }, MERGE_PATCH);
    const sid = await rejection(patch({ connectionIds: { serverIdLength: 4 } }));
    expect(sid.code).toBe(422);
    expect(sid.message).toContain('connectionIds.serverIdLength cannot change in place');
    // dropping the field is a change too (the default, 2, would apply)
    const dropped = await rejection(patch({ connectionIds: null }));
    expect(dropped.message).toContain('connectionIds.serverIdLength cannot change in place');
    const mode = await rejection(patch({ encryption: { mode: 'Plaintext' } }));
    expect(mode.message).toContain('encryption.mode cannot change in place');
    const ok = (await patch({ connectionIds: { nonceLength: 8 }, rotation: { trigger: 'now' } })) as Qlb;
    expect(ok.spec.connectionIds).toMatchObject({ serverIdLength: 3, nonceLength: 8 });
    expect(ok.metadata.generation).toBe(2);
  });

  it('takes status only through the subresource; kubectl get shows Ready, Backends, DataPlanes, Config', async () => {
    const name = 'working';
    await co.createNamespacedCustomObject({ ...QLB, namespace: ns, body: { ...qlb(name, MINIMAL), status: { activeConfigId: 3 } } });
    const created = (await co.getNamespacedCustomObject({ ...QLB, namespace: ns, name })) as Qlb;
    expect(created.status).toBeUndefined();
    const t = '2026-12-04T12:00:00Z';
    const status = {
      observedGeneration: 1,
      conditions: [
        { type: 'Ready', status: 'True', reason: 'Routing', message: '3 of 4 backends in the fallback pool', lastTransitionTime: t, observedGeneration: 1 },
        { type: 'KeyRotation', status: 'False', reason: 'Stable', message: 'config 1 active', lastTransitionTime: t, observedGeneration: 1 },
      ],
      backends: { total: 4, healthy: 3, draining: 1, unassigned: 0, summary: '3/4' },
      dataPlanes: { connected: 2, inSync: 2, summary: '2/2' },
      activeConfigId: 1,
      lastRotationTime: t,
      snapshotVersion: 7,
      rotation: { phase: 'Stable', lastTrigger: '', configs: [{ id: 1, state: 'Active', since: t, keyFingerprint: 'sha256:0123456789abcdef' }] },
      serverIds: { assigned: 4, quarantined: 1, capacity: 65536 },
    };
    await co.patchNamespacedCustomObjectStatus(
      { ...QLB, namespace: ns, name, fieldManager: 'quiclb-operator', force: true, body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'QuicLoadBalancer', metadata: { name, namespace: ns }, status } },
      APPLY_PATCH,
    );
    const table = await kubectlOk(['get', 'qlb', name, '-n', ns]);
    expect(table).toMatch(/^NAME\s+READY\s+BACKENDS\s+DATAPLANES\s+CONFIG\s+AGE\n/);
    expect(table).toMatch(new RegExp(`^${name}\\s+True\\s+3/4\\s+2/2\\s+1\\s+\\S+\\n$`, 'm'));
    const wide = await kubectlOk(['get', 'qlb', name, '-n', ns, '-o', 'wide']);
    expect(wide).toMatch(/ROTATION\s+REASON\s+AGE/);
    expect(wide).toMatch(new RegExp(`^${name}\\s+True\\s+3/4\\s+2/2\\s+1\\s+Stable\\s+Routing\\s+`, 'm'));
    await kubectlOk(['wait', '--for=condition=Ready', `qlb/${name}`, '-n', ns, '--timeout=10s']);

    // the status schema refuses what it should
    const bad = await rejection(
      co.patchNamespacedCustomObjectStatus({ ...QLB, namespace: ns, name, body: { status: { activeConfigId: 7 } } }, MERGE_PATCH),
    );
    expect(bad.message).toContain('status.activeConfigId: Invalid value: 7: activeConfigId in body should be less than or equal to 6');
    const badCondition = await rejection(
      co.patchNamespacedCustomObjectStatus(
        { ...QLB, namespace: ns, name, body: { status: { conditions: [{ type: 'Ready', status: 'Maybe', reason: 'X', message: '', lastTransitionTime: t }] } } },
        MERGE_PATCH,
      ),
    );
    expect(badCondition.message).toContain('Unsupported value: "Maybe"');
  });

  it('accepts the status the operator builds (operator/status/status.ts), and kubectl get and wait read it', async () => {
    const name = 'built';
    const created = await create(MINIMAL, name);
    const now = Date.now();
    const d = computeDesired({
      namespace: ns,
      name,
      generation: created.metadata.generation!,
      createdAt: now,
      annotations: {},
      spec: created.spec,
      service: { ports: [{ name: 'quic', port: 443, protocol: 'UDP' }] },
      endpointSlices: [
        {
          addressType: 'IPv4',
          ports: [{ name: 'quic', port: 8443, protocol: 'UDP' }],
          endpoints: [{ addresses: ['198.51.100.7'], conditions: { ready: true }, targetRef: { kind: 'Pod', name: 'web-0', uid: 'u0' } }],
        },
      ],
      records: { assigned: [], released: [] },
      rotation: INITIAL_STATE,
      keys: new Map(),
      userKey: null,
      freshKey: Buffer.alloc(16, 7),
      nodes: [{ name: 'n1' }],
      otherClaims: [],
      otherBackends: [],
      dataPlanes: [],
      now,
    });
    const facts = statusFacts(d, { snapshotVersion: 1, dataPlanes: [{ identity: 'dp-n1', ackedVersion: 1, rejection: null }] });
    const status = buildStatus({ facts, previousConditions: undefined, rotation: d.rotation.state, serverIds: { assigned: 1, quarantined: 0, capacity: 65536n }, now });
    await co.patchNamespacedCustomObjectStatus(
      { ...QLB, namespace: ns, name, fieldManager: 'quiclb-operator', force: true, body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'QuicLoadBalancer', metadata: { name, namespace: ns }, status } },
      APPLY_PATCH,
    );
    const stored = (await co.getNamespacedCustomObject({ ...QLB, namespace: ns, name })) as Qlb;
    expect(stored.status).toEqual(JSON.parse(JSON.stringify(status)));
    const table = await kubectlOk(['get', 'qlb', name, '-n', ns, '-o', 'wide']);
    expect(table).toMatch(new RegExp(`^${name}\\s+True\\s+1/1\\s+1/1\\s+0\\s+Stable\\s+Routing\\s+`, 'm'));
    await kubectlOk(['wait', '--for=condition=Ready', `qlb/${name}`, '-n', ns, '--timeout=10s']);
  });
});
