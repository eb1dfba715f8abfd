// Tier 1 proof that the test cluster is a real API server: CRD schema + CEL validation, the status subresource,
// printer columns through kubectl, kubectl wait on conditions, and RBAC for ServiceAccount tokens.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import {
  adminKubeConfig,
  cluster,
  createNamespace,
  deleteNamespace,
  kubectl,
  kubectlOk,
  run,
  serviceAccountKubeConfig,
  statusMessage,
} from './cluster.js';
import { CLUSTER_SCRIPTS, FIXTURES } from './fixtures.js';

const GROUP = 'fixtures.quiclb.io';
const VERSION = 'v1alpha1';
const PLURAL = 'widgets';
const CRD = `${PLURAL}.${GROUP}`;
/** Where widgets live, for every CustomObjectsApi call (plus `namespace`). */
const WIDGETS = { group: GROUP, version: VERSION, plural: PLURAL };
const MERGE_PATCH = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);
const APPLY_PATCH = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.ServerSideApply);

interface Widget {
  apiVersion: string;
  kind: string;
  metadata: k8s.V1ObjectMeta;
  spec: { minServers: number; maxServers: number; mode: string };
  status?: { observedGeneration?: number; servers?: number; conditions?: k8s.V1Condition[] };
}

function widget(namespace: string, name: string, spec: Widget['spec']): Widget {
  return { apiVersion: `${GROUP}/${VERSION}`, kind: 'Widget', metadata: { name, namespace }, spec };
}

async function expectRejected(p: Promise<unknown>): Promise<k8s.ApiException<unknown>> {
  try {
    await p;
  } catch (err) {
    if (err instanceof k8s.ApiException) return err;
    throw err;
  }
  throw new Error('the API server accepted an object it should have rejected');
}

describe('real kube-apiserver', () => {
  let ns: string;
  let co: k8s.CustomObjectsApi;

  beforeAll(async () => {
    ns = await createNamespace('api');
    co = adminKubeConfig().makeApiClient(k8s.CustomObjectsApi);
    await kubectlOk(['apply', '--server-side', '-f', join(FIXTURES, 'widgets-crd.yaml')]);
    await kubectlOk(['wait', '--for=condition=Established', `crd/${CRD}`, '--timeout=60s']);
  });

  afterAll(async () => {
    await deleteNamespace(ns);
    await kubectl(['delete', 'crd', CRD, '--wait=false']);
  });

  /** Creates a widget in `ns` through `api` (admin unless given). */
  const createWidget = async (name: string, spec: Widget['spec'], api = co, extra: Partial<Widget> = {}): Promise<Widget> =>
    (await api.createNamespacedCustomObject({ ...WIDGETS, namespace: ns, body: { ...widget(ns, name, spec), ...extra } })) as Widget;

  /** Writes a widget's status through the status subresource (server-side apply). */
  const applyStatus = async (name: string, status: NonNullable<Widget['status']>): Promise<Widget> =>
    (await co.patchNamespacedCustomObjectStatus(
      {
        ...WIDGETS,
        namespace: ns,
        name,
        fieldManager: 'integration-test',
        force: true,
        body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'Widget', metadata: { name, namespace: ns }, status },
      },
      APPLY_PATCH,
    )) as Widget;

  it('reports the version the binaries were stamped with', async () => {
    const out = JSON.parse(await kubectlOk(['version', '-o', 'json'])) as {
      clientVersion: { gitVersion: string };
      serverVersion: { gitVersion: string; major: string; minor: string };
    };
    expect(out.serverVersion.gitVersion).toBe(cluster().version);
    expect(out.clientVersion.gitVersion).toBe(cluster().version);
    expect(out.serverVersion.major).toBe('1');
  });

  it('rejects an object that breaks the CRD CEL rule, with the rule message (client-node)', async () => {
    const err = await expectRejected(createWidget('bad', { minServers: 5, maxServers: 2, mode: 'plaintext' }));
    expect(err.code).toBe(422);
    expect(statusMessage(err)).toContain('minServers must not exceed maxServers');
  });

  it('rejects the same object through kubectl apply, and OpenAPI schema violations too', async () => {
    const bad = JSON.stringify(widget(ns, 'bad-kubectl', { minServers: 3, maxServers: 1, mode: 'plaintext' }));
    const r = await kubectl(['apply', '-f', '-'], { input: bad });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('minServers must not exceed maxServers');

    const badEnum = JSON.stringify(widget(ns, 'bad-enum', { minServers: 1, maxServers: 2, mode: 'carrier-pigeon' }));
    const r2 = await kubectl(['apply', '-f', '-'], { input: badEnum });
    expect(r2.code).not.toBe(0);
    expect(r2.stderr).toMatch(/spec\.mode: Unsupported value: "carrier-pigeon"/);
  });

  it('enforces a transition rule (oldSelf): an immutable field cannot change', async () => {
    await createWidget('immutable', { minServers: 1, maxServers: 2, mode: 'plaintext' });
    const err = await expectRejected(
      co.patchNamespacedCustomObject({ ...WIDGETS, namespace: ns, name: 'immutable', body: { spec: { mode: 'encrypted' } } }, MERGE_PATCH),
    );
    expect(err.code).toBe(422);
    expect(statusMessage(err)).toContain('mode is immutable');
  });

  it('updates status only through the status subresource, and kubectl get/wait see it', async () => {
    const name = 'status';
    const created = await createWidget(name, { minServers: 1, maxServers: 3, mode: 'encrypted' }, co, { status: { servers: 99 } });
    // status in a create/update of the main resource is dropped when the subresource is on
    expect(created.status?.servers).toBeUndefined();
    expect(created.metadata.generation).toBe(1);

    const ready: k8s.V1Condition = {
      type: 'Ready',
      status: 'True',
      observedGeneration: 1,
      lastTransitionTime: new Date(),
      reason: 'ServersAssigned',
      message: '3 servers',
    };
    const patched = await applyStatus(name, { observedGeneration: 1, servers: 3, conditions: [ready] });
    expect(patched.status?.servers).toBe(3);
    // a status write does not bump the generation; a spec write does
    expect(patched.metadata.generation).toBe(1);

    // a status change sent to the main resource is ignored
    const mainPatch = (await co.patchNamespacedCustomObject(
      { ...WIDGETS, namespace: ns, name, body: { spec: { maxServers: 4 }, status: { servers: 7 } } },
      MERGE_PATCH,
    )) as Widget;
    expect(mainPatch.status?.servers).toBe(3);
    expect(mainPatch.spec.maxServers).toBe(4);
    expect(mainPatch.metadata.generation).toBe(2);

    // kubectl get shows the printer columns, kubectl wait reads the condition
    const table = await kubectlOk(['get', 'widgets', name, '-n', ns]);
    expect(table).toMatch(/^NAME\s+READY\s+MIN\s+MAX\s+AGE/);
    expect(table).toMatch(new RegExp(`^${name}\\s+True\\s+1\\s+4\\s+`, 'm'));
    // kubectl wait honours observedGeneration: the Ready condition was written for generation 1, the object is
    // now at generation 2, so the condition is stale and the wait must not be satisfied...
    const stale = await kubectl(['wait', '--for=condition=Ready', `widget/${name}`, '-n', ns, '--timeout=2s']);
    expect(stale.code).not.toBe(0);
    expect(stale.stderr).toContain('timed out waiting for the condition');
    // ...until the status is reconciled for generation 2.
    await applyStatus(name, { observedGeneration: 2, servers: 4, conditions: [{ ...ready, observedGeneration: 2, message: '4 servers' }] });
    const waited = await kubectlOk(['wait', '--for=condition=Ready', `widget/${name}`, '-n', ns, '--timeout=30s']);
    expect(waited).toContain('condition met');
    const jp = await kubectlOk(['get', 'wdg', name, '-n', ns, '-o', 'jsonpath={.status.conditions[0].reason}']);
    expect(jp).toBe('ServersAssigned');
  });

  it('gives ServiceAccount tokens exactly their RBAC, not admin rights', async () => {
    const core = adminKubeConfig().makeApiClient(k8s.CoreV1Api);
    const rbac = adminKubeConfig().makeApiClient(k8s.RbacAuthorizationV1Api);
    await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: 'reader' } } });
    await rbac.createNamespacedRole({
      namespace: ns,
      body: {
        metadata: { name: 'widget-reader' },
        rules: [{ apiGroups: [GROUP], resources: [PLURAL], verbs: ['get', 'list', 'watch'] }],
      },
    });
    await rbac.createNamespacedRoleBinding({
      namespace: ns,
      body: {
        metadata: { name: 'widget-reader' },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'widget-reader' },
        subjects: [{ kind: 'ServiceAccount', name: 'reader', namespace: ns }],
      },
    });

    const saCo = (await serviceAccountKubeConfig(ns, 'reader')).makeApiClient(k8s.CustomObjectsApi);
    const list = (await saCo.listNamespacedCustomObject({ ...WIDGETS, namespace: ns })) as {
      items: Widget[];
    };
    expect(list.items.map((w) => w.metadata.name)).toEqual(expect.arrayContaining(['immutable', 'status']));

    const denied = await expectRejected(createWidget('by-reader', { minServers: 1, maxServers: 1, mode: 'plaintext' }, saCo));
    expect(denied.code).toBe(403);
    expect(statusMessage(denied)).toContain(`"system:serviceaccount:${ns}:reader" cannot create resource "widgets"`);

    const otherNs = await expectRejected(
      saCo.listNamespacedCustomObject({ ...WIDGETS, namespace: 'default' }),
    );
    expect(otherNs.code).toBe(403);
  });

  it('rejects loopback addresses in EndpointSlices (so tests cannot publish 127.x backends)', async () => {
    const disc = adminKubeConfig().makeApiClient(k8s.DiscoveryV1Api);
    const slice = (name: string, ip: string): k8s.V1EndpointSlice => ({
      metadata: { name, namespace: ns, labels: { 'kubernetes.io/service-name': 'probe' } },
      addressType: 'IPv4',
      endpoints: [{ addresses: [ip], conditions: { ready: true } }],
      ports: [{ name: 'quic', port: 4433, protocol: 'UDP' }],
    });
    const err = await expectRejected(disc.createNamespacedEndpointSlice({ namespace: ns, body: slice('loopback', '127.0.0.2') }));
    expect(err.code).toBe(422);
    expect(statusMessage(err)).toContain('may not be in the loopback range');
    const ok = await disc.createNamespacedEndpointSlice({ namespace: ns, body: slice('doc-range', '198.51.100.7') });
    expect(ok.endpoints?.[0]?.addresses).toEqual(['198.51.100.7']);
  });

  it('token.sh hands out a ServiceAccount kubeconfig that kubectl uses with that account identity', async () => {
    const out = join(cluster().dir, 'run', `token-${ns}.kubeconfig`);
    const r = await run('bash', [join(CLUSTER_SCRIPTS, 'token.sh'), '--name', cluster().name, '--create', '--kubeconfig', out, ns, 'cli-user']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const who = await kubectlOk(['auth', 'whoami', '-o', 'jsonpath={.status.userInfo.username}'], { env: { KUBECONFIG: out } });
    expect(who).toBe(`system:serviceaccount:${ns}:cli-user`);
    const can = await kubectl(['auth', 'can-i', 'list', 'secrets', '-n', ns], { env: { KUBECONFIG: out } });
    expect(can.stdout.trim()).toBe('no');
  });
});
