// The Helm chart, offline: helm lint, and helm template for each documented values combination, checked for the
// security properties the chart promises (docs: README "Install on Kubernetes").
import { describe, expect, it } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadAll } from 'js-yaml';
import { repoRoot } from '../helpers/run-cli.js';
import { CHART, find, helm, render, type Manifest } from './helm.js';

const NS = 'quiclb-system';
const COMBINATIONS: Array<[string, Record<string, string | number | boolean>]> = [
  ['defaults', {}],
  ['certManager.enabled', { 'certManager.enabled': true }],
  ['certManager.csiDriver.enabled', { 'certManager.enabled': true, 'certManager.csiDriver.enabled': true }],
  ['metrics.serviceMonitor.enabled', { 'metrics.serviceMonitor.enabled': true }],
  ['dashboards.enabled', { 'dashboards.enabled': true }],
  ['crds.enabled=false', { 'crds.enabled': false }],
  ['dataplane.bindPrivilegedPorts', { 'dataplane.bindPrivilegedPorts': true }],
  ['dataplane.stateDir.type=emptyDir', { 'dataplane.stateDir.type': 'emptyDir' }],
  ['dataplane.busyPollMicroseconds', { 'dataplane.busyPollMicroseconds': 50 }],
  ['dataplane.holdLoop=false', { 'dataplane.holdLoop': false }],
  ['dataplane.enabled=false', { 'dataplane.enabled': false }],
  ['operator.otlpEndpoint', { 'operator.otlpEndpoint': 'http://otel-collector.observability:4318' }],
  ['operator.dataPlaneAuth=none', { 'operator.dataPlaneAuth': 'none' }],
  ['operator.replicas=1 without PDB', { 'operator.replicas': 1, 'operator.podDisruptionBudget.enabled': false }],
  [
    'custom image and resources',
    { 'image.repository': 'registry.example/quiclb', 'image.tag': '9.9.9', 'operator.resources.limits.memory': '1Gi', 'dataplane.resources.requests.cpu': '250m' },
  ],
];

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

function podSpec(d: Manifest): Any {
  return d.spec.template.spec;
}

function workloads(docs: Manifest[]): Manifest[] {
  return docs.filter((d) => d.kind === 'Deployment' || d.kind === 'DaemonSet');
}

function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

describe('helm lint', () => {
  it('is clean with --strict', async () => {
    const r = await helm(['lint', '--strict', CHART]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
    expect(r.stdout).not.toMatch(/\[(WARNING|ERROR)\]/);
    expect(r.code).toBe(0);
  });

  it.each(COMBINATIONS.slice(1))('is clean with %s', async (_name, set) => {
    const args = ['lint', '--strict', CHART];
    for (const [k, v] of Object.entries(set)) args.push('--set', `${k}=${String(v)}`);
    const r = await helm(args);
    expect(r.stdout).not.toMatch(/\[(WARNING|ERROR)\]/);
    expect(r.code).toBe(0);
  });
});

describe.each(COMBINATIONS)('helm template with %s', (_name, set) => {
  let docs: Manifest[];
  const load = async () => (docs ??= await render(set));

  it('labels every object it creates with the standard app.kubernetes.io labels', async () => {
    for (const d of await load()) {
      if (d.kind === 'CustomResourceDefinition') continue; // a verbatim copy of crds/ (its own labels)
      expect({ obj: `${d.kind}/${d.metadata.name}`, labels: d.metadata.labels }).toMatchObject({
        labels: { 'app.kubernetes.io/name': 'quiclb', 'app.kubernetes.io/instance': 'quiclb', 'app.kubernetes.io/managed-by': 'Helm', 'app.kubernetes.io/part-of': 'quiclb' },
      });
      expect(d.metadata.labels?.['helm.sh/chart']).toBe('quiclb-0.1.0');
    }
  });

  it('runs every container with a read-only root filesystem, no privilege escalation and no capability but NET_BIND_SERVICE/CHOWN where documented', async () => {
    for (const w of workloads(await load())) {
      const spec = podSpec(w);
      for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
        const sc = c.securityContext;
        const where = `${w.kind}/${w.metadata.name} ${c.name}`;
        expect({ where, ro: sc.readOnlyRootFilesystem, esc: sc.allowPrivilegeEscalation, drop: sc.capabilities.drop }).toEqual({ where, ro: true, esc: false, drop: ['ALL'] });
        const added: string[] = sc.capabilities.add ?? [];
        if (c.name === 'state-dir-owner') expect(added).toEqual(['CHOWN']);
        else if (c.name === 'dataplane' && set['dataplane.bindPrivilegedPorts'] === true) expect(added).toEqual(['NET_BIND_SERVICE']);
        else {
          expect(added).toEqual([]);
          expect({ where, nonRoot: sc.runAsNonRoot, uid: sc.runAsUser }).toEqual({ where, nonRoot: true, uid: 65532 });
        }
        expect(c.securityContext.privileged).toBeUndefined();
        expect(c.resources.requests).toBeDefined();
        expect(c.resources.limits.memory).toBeDefined();
      }
    }
  });

  it('gives the data plane no Kubernetes API access: no token, no RBAC binding', async () => {
    const all = await load();
    if (set['dataplane.enabled'] === false) {
      expect(all.filter((d) => d.kind === 'DaemonSet')).toEqual([]);
      return;
    }
    const ds = find(all, 'DaemonSet', 'quiclb-dataplane');
    const spec = podSpec(ds);
    expect(spec.automountServiceAccountToken).toBe(false);
    const sa = find(all, 'ServiceAccount', spec.serviceAccountName);
    expect(sa.automountServiceAccountToken).toBe(false);
    for (const b of all.filter((d) => d.kind === 'RoleBinding' || d.kind === 'ClusterRoleBinding')) {
      for (const s of b.subjects as Any[]) expect(`${s.kind}/${s.namespace}/${s.name}`).not.toBe(`ServiceAccount/${NS}/${spec.serviceAccountName}`);
    }
    for (const c of spec.containers) expect(c.volumeMounts.map((m: Any) => m.mountPath)).not.toContain('/var/run/secrets/kubernetes.io/serviceaccount');
  });

  it('authenticates each data plane\'s node with a projected pod-bound token for the operator\'s audience (dataPlaneAuth token, the default)', async () => {
    const all = await load();
    const op = podSpec(find(all, 'Deployment', 'quiclb-operator')).containers[0];
    const token = set['operator.dataPlaneAuth'] !== 'none';
    const opFlags = op.args.filter((a: string) => a.startsWith('--data-plane-'));
    expect(opFlags).toEqual(token ? ['--data-plane-auth=token', `--data-plane-service-account=${NS}/quiclb-dataplane`] : []);
    const role = find(all, 'ClusterRole', 'quiclb-operator');
    expect(role.rules).toContainEqual({ apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] });
    if (set['dataplane.enabled'] === false) return;
    const spec = podSpec(find(all, 'DaemonSet', 'quiclb-dataplane'));
    expect(spec.serviceAccountName).toBe('quiclb-dataplane');
    const c = spec.containers[0];
    const vol = spec.volumes.find((v: Any) => v.name === 'node-token');
    if (!token) {
      expect(vol).toBeUndefined();
      expect(c.args.filter((a: string) => a.startsWith('--node-token-file'))).toEqual([]);
      return;
    }
    expect(spec.automountServiceAccountToken).toBe(false);
    expect(vol.projected.sources).toEqual([{ serviceAccountToken: { audience: 'quiclb-operator', expirationSeconds: 3600, path: 'token' } }]);
    const mount = c.volumeMounts.find((m: Any) => m.name === 'node-token');
    expect(mount.readOnly).toBe(true);
    expect(c.args).toContain(`--node-token-file=${mount.mountPath}/token`);
  });

  it('runs the data plane on the host network with cluster DNS, a state dir, tolerations and a one-node-at-a-time update', async () => {
    if (set['dataplane.enabled'] === false) return;
    const ds = find(await load(), 'DaemonSet', 'quiclb-dataplane');
    const spec = podSpec(ds);
    expect(spec.hostNetwork).toBe(true);
    expect(spec.dnsPolicy).toBe('ClusterFirstWithHostNet');
    expect(spec.priorityClassName).toBe('system-node-critical');
    expect(spec.tolerations).toEqual([{ operator: 'Exists' }]);
    expect(ds.spec.updateStrategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } });
    const c = spec.containers[0];
    expect(c.args).toContain('--state-dir=/var/lib/quiclb');
    expect(c.env).toContainEqual({ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    const busyPoll = c.env.find((e: Any) => e.name === 'QUICLB_IO_BUSY_POLL_US');
    expect(busyPoll).toEqual(set['dataplane.busyPollMicroseconds'] ? { name: 'QUICLB_IO_BUSY_POLL_US', value: '50' } : undefined);
    const hold = c.env.find((e: Any) => e.name === 'QUICLB_IO_HOLD_LOOP');
    expect(hold).toEqual(set['dataplane.holdLoop'] === false ? { name: 'QUICLB_IO_HOLD_LOOP', value: '0' } : undefined);
    const state = spec.volumes.find((v: Any) => v.name === 'state');
    if (set['dataplane.stateDir.type'] === 'emptyDir') {
      expect(state.emptyDir).toBeDefined();
      expect(spec.initContainers).toBeUndefined();
    } else {
      expect(state.hostPath).toEqual({ path: '/var/lib/quiclb', type: 'DirectoryOrCreate' });
      expect(spec.initContainers.map((i: Any) => i.name)).toEqual(['state-dir-owner']);
    }
    expect(c.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
    expect(c.ports).toEqual([{ name: 'metrics', containerPort: 9190, protocol: 'TCP' }]);
  });

  it('points the data planes at the operator Service, which selects the operator pods on the config port', async () => {
    const all = await load();
    const op = find(all, 'Deployment', 'quiclb-operator');
    const svc = find(all, 'Service', 'quiclb-operator');
    expect(selects(svc.spec.selector, op.spec.template.metadata.labels)).toBe(true);
    expect(svc.spec.ports).toEqual([{ name: 'config', port: 9443, targetPort: 'config', protocol: 'TCP', appProtocol: 'grpc' }]);
    expect(podSpec(op).containers[0].args).toContain('--config-listen=0.0.0.0:9443');
    if (set['dataplane.enabled'] === false) return;
    const ds = find(all, 'DaemonSet', 'quiclb-dataplane');
    expect(podSpec(ds).containers[0].args).toContain(`--operator=quiclb-operator.${NS}.svc:9443`);
  });

  it('runs the operator with leader election (from 2 replicas), anti-affinity and probes on its metrics port', async () => {
    const op = find(await load(), 'Deployment', 'quiclb-operator');
    const spec = podSpec(op);
    const c = spec.containers[0];
    const replicas = Number(set['operator.replicas'] ?? 2);
    expect(op.spec.replicas).toBe(replicas);
    if (replicas > 1) {
      expect(c.args).toEqual(expect.arrayContaining(['--leader-elect', `--lease-namespace=${NS}`, '--lease-name=quiclb-operator', '--lease-duration=15', '--renew-deadline=10', '--retry-period=2']));
    } else {
      expect(c.args).not.toContain('--leader-elect');
    }
    expect(spec.serviceAccountName).toBe('quiclb-operator');
    expect(spec.securityContext.runAsNonRoot).toBe(true);
    expect(spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.topologyKey).toBe('kubernetes.io/hostname');
    for (const p of ['livenessProbe', 'readinessProbe', 'startupProbe']) expect(c[p].httpGet.port).toBe('metrics');
    expect(c.ports).toContainEqual({ name: 'metrics', containerPort: 9090, protocol: 'TCP' });
    expect(c.args).toContain('--metrics-port=9090');
    if (set['operator.otlpEndpoint']) expect(c.args).toContain(`--otlp-endpoint=${String(set['operator.otlpEndpoint'])}`);
    else expect(c.args.filter((a: string) => a.startsWith('--otlp-endpoint'))).toEqual([]);
  });

  it('mounts the certificates the chart or cert-manager provide as TLS directories', async () => {
    const all = await load();
    const names = new Set(all.filter((d) => d.kind === 'Secret').map((d) => d.metadata.name));
    for (const d of all.filter((x) => x.kind === 'Certificate')) names.add(d.spec.secretName);
    const op = podSpec(find(all, 'Deployment', 'quiclb-operator'));
    expect(names).toContain(op.volumes.find((v: Any) => v.name === 'tls').secret.secretName);
    expect(op.containers[0].args).toContain('--tls-dir=/etc/quiclb/tls');
    if (set['dataplane.enabled'] === false) return;
    const tls = podSpec(find(all, 'DaemonSet', 'quiclb-dataplane')).volumes.find((v: Any) => v.name === 'tls');
    if (set['certManager.csiDriver.enabled'] === true) {
      expect(tls.csi.driver).toBe('csi.cert-manager.io');
      expect(tls.csi.volumeAttributes['csi.cert-manager.io/common-name']).toBe('${POD_NAME}');
      expect(tls.csi.volumeAttributes['csi.cert-manager.io/key-usages']).toContain('client auth');
    } else {
      expect(names).toContain(tls.secret.secretName);
    }
  });
});

describe('operator RBAC', () => {
  it('is exactly deploy/rbac.yaml (same names for the release "quiclb" in quiclb-system)', async () => {
    const docs = await render();
    const deploy = (loadAll(readFileSync(join(repoRoot, 'deploy', 'rbac.yaml'), 'utf8')) as Manifest[]).filter(Boolean);
    expect(deploy.map((d) => d.kind).sort()).toEqual(['ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding', 'ServiceAccount']);
    for (const want of deploy) {
      const got = find(docs, want.kind, want.metadata.name);
      expect(got.metadata.namespace).toBe(want.metadata.namespace);
      if (want.rules) expect(got.rules).toEqual(want.rules);
      if (want.subjects) expect(got.subjects).toEqual(want.subjects);
      if (want.roleRef) expect(got.roleRef).toEqual(want.roleRef);
    }
  });

  it('binds nothing but the operator ServiceAccount, and grants no wildcard, no escalation verbs, and Secret list/watch only in a rule of its own', async () => {
    const docs = await render();
    for (const b of docs.filter((d) => d.kind.endsWith('Binding'))) expect(b.subjects).toEqual([{ kind: 'ServiceAccount', name: 'quiclb-operator', namespace: NS }]);
    for (const r of docs.filter((d) => d.kind === 'ClusterRole' || d.kind === 'Role')) {
      for (const rule of r.rules as Array<{ apiGroups: string[]; resources: string[]; verbs: string[] }>) {
        expect([...rule.apiGroups, ...rule.resources, ...rule.verbs]).not.toContain('*');
        expect(rule.verbs).not.toEqual(expect.arrayContaining(['escalate']));
        expect(rule.verbs).not.toEqual(expect.arrayContaining(['bind']));
        // Secret list/watch (for the user key Secret informer, which selects quiclb.io/key=true) sits in a rule of its own.
        if (rule.resources.includes('secrets') && rule.verbs.some((v) => v === 'list' || v === 'watch')) expect(rule).toEqual({ apiGroups: [''], resources: ['secrets'], verbs: ['list', 'watch'] });
      }
    }
  });
});

describe('generated certificates (no cert-manager)', () => {
  it('a CA signs a server certificate for the Service name the data planes dial and a clientAuth certificate', async () => {
    const docs = await render();
    const pem = (name: string, key: string) => Buffer.from(find(docs, 'Secret', name).data[key] as string, 'base64').toString();
    const ca = new X509Certificate(pem('quiclb-operator-tls', 'ca.crt'));
    expect(pem('quiclb-dataplane-tls', 'ca.crt')).toBe(ca.toString());
    const server = new X509Certificate(pem('quiclb-operator-tls', 'tls.crt'));
    const client = new X509Certificate(pem('quiclb-dataplane-tls', 'tls.crt'));
    expect(ca.ca).toBe(true);
    expect(server.verify(ca.publicKey)).toBe(true);
    expect(client.verify(ca.publicKey)).toBe(true);
    expect(server.checkHost(`quiclb-operator.${NS}.svc`)).toBe(`quiclb-operator.${NS}.svc`);
    expect(server.keyUsage).toContain('1.3.6.1.5.5.7.3.1'); // serverAuth
    expect(client.keyUsage).toContain('1.3.6.1.5.5.7.3.2'); // clientAuth: the config server requires it
    expect(client.subject).toContain('CN=quiclb-dataplane');
    expect(find(docs, 'Secret', 'quiclb-dataplane-tls').type).toBe('kubernetes.io/tls');
    expect(pem('quiclb-dataplane-tls', 'tls.key')).toMatch(/^-----BEGIN (RSA |EC )?PRIVATE KEY-----/);
  });
});

describe('cert-manager', () => {
  it('bootstraps a CA Issuer and issues the operator and data-plane certificates with the right usages', async () => {
    const docs = await render({ 'certManager.enabled': true });
    expect(docs.filter((d) => d.kind === 'Secret')).toEqual([]);
    expect(find(docs, 'Issuer', 'quiclb-selfsigned').spec).toEqual({ selfSigned: {} });
    expect(find(docs, 'Certificate', 'quiclb-ca').spec).toMatchObject({ isCA: true, secretName: 'quiclb-ca', issuerRef: { name: 'quiclb-selfsigned', kind: 'Issuer' } });
    expect(find(docs, 'Issuer', 'quiclb-ca').spec).toEqual({ ca: { secretName: 'quiclb-ca' } });
    const server = find(docs, 'Certificate', 'quiclb-operator-tls').spec;
    expect(server.dnsNames).toContain(`quiclb-operator.${NS}.svc`);
    expect(server.usages).toContain('server auth');
    expect(server.issuerRef.name).toBe('quiclb-ca');
    const client = find(docs, 'Certificate', 'quiclb-dataplane-tls').spec;
    expect(client.usages).toContain('client auth');
    expect(client.secretName).toBe('quiclb-dataplane-tls');
  });

  it('with the csi-driver issues no shared data-plane certificate', async () => {
    const docs = await render({ 'certManager.enabled': true, 'certManager.csiDriver.enabled': true });
    expect(docs.filter((d) => d.kind === 'Certificate').map((d) => d.metadata.name).sort()).toEqual(['quiclb-ca', 'quiclb-operator-tls']);
  });
});

describe('optional objects', () => {
  it('PodDisruptionBudget keeps one operator replica and selects the operator pods', async () => {
    const docs = await render();
    const pdb = find(docs, 'PodDisruptionBudget', 'quiclb-operator');
    expect(pdb.spec.minAvailable).toBe(1);
    expect(selects(pdb.spec.selector.matchLabels, find(docs, 'Deployment', 'quiclb-operator').spec.template.metadata.labels)).toBe(true);
  });

  it('metrics Services (data plane: headless) and ServiceMonitors that select them by their metrics port', async () => {
    const docs = await render({ 'metrics.serviceMonitor.enabled': true, 'metrics.serviceMonitor.labels.release': 'prom' });
    expect(find(docs, 'Service', 'quiclb-dataplane-metrics').spec.clusterIP).toBe('None');
    const monitors = docs.filter((d) => d.kind === 'ServiceMonitor');
    expect(monitors.map((m) => m.metadata.name).sort()).toEqual(['quiclb-dataplane', 'quiclb-operator']);
    for (const m of monitors) {
      expect(m.metadata.labels?.release).toBe('prom');
      const svcs = docs.filter((d) => d.kind === 'Service' && selects(m.spec.selector.matchLabels, d.metadata.labels ?? {}));
      expect(svcs.map((s) => s.metadata.name)).toEqual([`${m.metadata.name}-metrics`]);
      expect(svcs[0].spec.ports.map((p: Any) => p.name)).toContain(m.spec.endpoints[0].port);
    }
    expect((await render()).filter((d) => d.kind === 'ServiceMonitor')).toEqual([]);
  });

  it('the dashboard ConfigMap carries the Grafana sidecar label and the dashboard file', async () => {
    const docs = await render({ 'dashboards.enabled': true });
    const cm = find(docs, 'ConfigMap', 'quiclb-dashboard');
    expect(cm.metadata.labels?.grafana_dashboard).toBe('1');
    expect(JSON.parse(cm.data['quiclb.json'] as string)).toEqual(JSON.parse(readFileSync(join(CHART, 'dashboards', 'quiclb.json'), 'utf8')));
    expect((await render()).filter((d) => d.kind === 'ConfigMap')).toEqual([]);
  });

  it('custom image (tag or digest) and resources reach both workloads', async () => {
    const docs = await render({ 'image.repository': 'registry.example/quiclb', 'image.tag': '9.9.9', 'operator.resources.limits.memory': '1Gi', 'dataplane.resources.requests.cpu': '250m' });
    for (const w of workloads(docs)) for (const c of podSpec(w).containers) expect(c.image).toBe('registry.example/quiclb:9.9.9');
    expect(podSpec(find(docs, 'Deployment', 'quiclb-operator')).containers[0].resources.limits.memory).toBe('1Gi');
    expect(podSpec(find(docs, 'DaemonSet', 'quiclb-dataplane')).containers[0].resources.requests.cpu).toBe('250m');
    const digest = `sha256:${'a'.repeat(64)}`;
    const pinned = await render({ 'image.digest': digest });
    expect(podSpec(find(pinned, 'DaemonSet', 'quiclb-dataplane')).containers[0].image).toBe(`quiclb/quiclb@${digest}`);
    expect(podSpec(find(docs, 'DaemonSet', 'quiclb-dataplane')).initContainers[0].image).toBe('registry.example/quiclb:9.9.9');
  });

  it('defaults to the chart appVersion as image tag', async () => {
    const docs = await render();
    expect(podSpec(find(docs, 'Deployment', 'quiclb-operator')).containers[0].image).toBe('quiclb/quiclb:0.1.0');
  });
});

describe('NOTES.txt', () => {
  it('tells the next commands (rollout status, apply and wait for a QuicLoadBalancer) and the shared-certificate caveat', async () => {
    const r = await helm(['install', 'quiclb', CHART, '-n', NS, '--dry-run=client']);
    expect(r.code).toBe(0);
    const notes = r.stdout.slice(r.stdout.indexOf('NOTES:'));
    expect(notes).toContain(`kubectl -n ${NS} rollout status deployment/quiclb-operator`);
    expect(notes).toContain('kubectl wait --for=condition=Ready qlb/NAME');
    expect(notes).toContain('share one client certificate');
    expect(notes).toContain('tells them apart by\n   the node each names (quiclb-dataplane@NODE)');
    expect(notes).toContain('Each node name is confirmed by the data plane\'s pod-bound');
    const none = await helm(['install', 'quiclb', CHART, '-n', NS, '--dry-run=client', '--set', 'operator.dataPlaneAuth=none']);
    expect(none.stdout).toContain('The node name is not authenticated (operator.dataPlaneAuth=none)');
    const csi = await helm(['install', 'quiclb', CHART, '-n', NS, '--dry-run=client', '--set', 'certManager.enabled=true', '--set', 'certManager.csiDriver.enabled=true']);
    expect(csi.stdout).not.toContain('share one client certificate');
  });
});
