// Tier 2 proof that the controllers, the scheduler and kwok's fake nodes really run: a Deployment gets Ready pods
// on kwok nodes, the EndpointSlice controller publishes them, and scaling is reflected in the EndpointSlice.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import * as k8s from '@kubernetes/client-node';
import { adminKubeConfig, cluster, createNamespace, deleteNamespace, kubectlOk, onTier2, waitFor } from './cluster.js';

const APP = 'backend';

/** Endpoints of the Service's EndpointSlices: how many in total and how many ready. */
async function endpointCounts(disc: k8s.DiscoveryV1Api, ns: string): Promise<{ total: number; ready: number; nodes: string[]; addresses: string[] }> {
  const slices = await disc.listNamespacedEndpointSlice({ namespace: ns, labelSelector: `kubernetes.io/service-name=${APP}` });
  const eps = slices.items.flatMap((s) => s.endpoints ?? []);
  const ready = eps.filter((e) => e.conditions?.ready === true);
  return {
    total: eps.length,
    ready: ready.length,
    nodes: ready.map((e) => e.nodeName ?? ''),
    addresses: ready.flatMap((e) => e.addresses),
  };
}

(onTier2() ? describe : describe.skip)('controllers, scheduler and kwok nodes', () => {
  let ns: string;
  let disc: k8s.DiscoveryV1Api;

  beforeAll(async () => {
    ns = await createNamespace('work');
    disc = adminKubeConfig().makeApiClient(k8s.DiscoveryV1Api);
  });

  afterAll(async () => {
    await deleteNamespace(ns);
  });

  it('has Ready kwok nodes', async () => {
    const out = await kubectlOk(['get', 'nodes', '-l', 'type=kwok', '-o', 'jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}']);
    const lines = out.trim().split('\n');
    expect(lines).toHaveLength(cluster().nodes);
    for (const l of lines) expect(l).toMatch(/^kwok-node-\d+=True$/);
  });

  it('turns a 3-replica Deployment into an EndpointSlice with 3 ready endpoints, and follows scaling to 5 then 2', async () => {
    const manifest = {
      apiVersion: 'v1',
      kind: 'List',
      items: [
        {
          apiVersion: 'apps/v1',
          kind: 'Deployment',
          metadata: { name: APP, namespace: ns },
          spec: {
            replicas: 3,
            selector: { matchLabels: { app: APP } },
            template: {
              metadata: { labels: { app: APP } },
              spec: { containers: [{ name: APP, image: 'registry.invalid/backend:1', ports: [{ name: 'quic', containerPort: 4433, protocol: 'UDP' }] }] },
            },
          },
        },
        {
          apiVersion: 'v1',
          kind: 'Service',
          metadata: { name: APP, namespace: ns },
          spec: { selector: { app: APP }, ports: [{ name: 'quic', port: 443, targetPort: 'quic', protocol: 'UDP' }] },
        },
      ],
    };
    await kubectlOk(['apply', '-f', '-'], { input: JSON.stringify(manifest) });
    const avail = await kubectlOk(['wait', '--for=condition=Available', `deployment/${APP}`, '-n', ns, '--timeout=90s'], { timeoutMs: 100000 });
    expect(avail).toContain('condition met');

    const three = await waitFor('3 ready endpoints', async () => {
      const c = await endpointCounts(disc, ns);
      return c.ready === 3 && c.total === 3 ? c : undefined;
    });
    // the scheduler placed the pods on kwok nodes, and kwok gave them IPs from its fake pod CIDR
    for (const n of three.nodes) expect(n).toMatch(/^kwok-node-\d+$/);
    for (const a of three.addresses) expect(a).toMatch(/^198\.51\.100\.\d+$/);

    await kubectlOk(['scale', `deployment/${APP}`, '-n', ns, '--replicas=5']);
    await waitFor('5 ready endpoints', async () => {
      const c = await endpointCounts(disc, ns);
      return c.ready === 5 && c.total === 5 ? c : undefined;
    });
    const pods = await kubectlOk(['get', 'pods', '-n', ns, '-l', `app=${APP}`, '-o', 'wide', '--no-headers']);
    const running = pods.trim().split('\n').filter((l) => /\s1\/1\s+Running\s/.test(l));
    expect(running).toHaveLength(5);

    await kubectlOk(['scale', `deployment/${APP}`, '-n', ns, '--replicas=2']);
    await waitFor('2 endpoints, all ready', async () => {
      const c = await endpointCounts(disc, ns);
      return c.ready === 2 && c.total === 2 ? c : undefined;
    });
    const rs = await kubectlOk(['get', 'deployment', APP, '-n', ns, '-o', 'jsonpath={.status.readyReplicas}/{.status.replicas}']);
    expect(rs).toBe('2/2');
  });

  it('gives each new namespace its default ServiceAccount and root CA ConfigMap (controller-manager)', async () => {
    await waitFor('default ServiceAccount', async () => (await kubectlOk(['get', 'serviceaccount', 'default', '-n', ns, '-o', 'name'])).trim() || undefined);
    const ca = await waitFor('kube-root-ca.crt', async () => {
      const out = await kubectlOk(['get', 'configmap', 'kube-root-ca.crt', '-n', ns, '-o', 'jsonpath={.data.ca\\.crt}']);
      return out.includes('BEGIN CERTIFICATE') ? out : undefined;
    });
    expect(ca).toContain('END CERTIFICATE');
  });
});
