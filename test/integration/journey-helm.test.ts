// The chart's life cycle as README "Install on Kubernetes" describes it, on the tier-2 cluster (controllers and kwok
// nodes, so Deployments and DaemonSets really roll): `helm install` over a CRD that is already there, user objects,
// `helm upgrade` with changed values (what changes in the API, which pods roll, what stays), values refused on
// upgrade, `helm rollback`, `helm uninstall` (what goes, what is kept) and a re-install over the kept CRD.
// kwok runs no containers: where the operator matters (its finalizer on the QuicLoadBalancer across an uninstall),
// `quiclb operator` runs as a local process with the Deployment's arguments, the release's ServiceAccount token and
// TLS Secret. chart.test.ts covers the objects and RBAC of one install; journey.test.ts the traffic.
//
// The CRD is shared with the other suites of the run: it is never deleted here, and its Helm ownership metadata is
// put back as found in afterAll, so a later suite's `helm install` sees the same CRD it would have seen without us.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnNode, type CliProc } from '../helpers/run-cli.js';
import { createNamespace, deleteNamespace, helm, kubectl, kubectlOk, onTier2, serviceAccountKubeConfig, waitFor } from './cluster.js';

const CHART = join(process.cwd(), 'charts', 'quiclb');
const CRD_DIR = join(process.cwd(), 'crds');
const CRD = 'quicloadbalancers.quiclb.io';
/** The CRD metadata Helm reads and writes for ownership, and the keep policy the chart adds. */
const HELM_ANNOTATIONS = ['meta.helm.sh/release-name', 'meta.helm.sh/release-namespace', 'helm.sh/resource-policy'];
const HELM_LABELS = ['app.kubernetes.io/managed-by'];
/** The Ready printer column's description: the field a "next chart release" changes in its copy of the CRD. */
const READY_DESCRIPTION = 'Whether every connected data plane routes the current configuration to the backends';
const NEXT_READY_DESCRIPTION = `${READY_DESCRIPTION} (next chart release)`;

interface Meta {
  name: string;
  finalizers?: string[];
  uid: string;
  resourceVersion: string;
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  deletionTimestamp?: string;
}
interface Obj {
  kind: string;
  metadata: Meta;
  spec?: unknown;
  data?: Record<string, string>;
}
interface Container {
  name: string;
  args?: string[];
  command?: string[];
  resources?: { limits?: Record<string, string> };
  securityContext?: { runAsUser?: number; runAsNonRoot?: boolean; capabilities?: { add?: string[]; drop?: string[] } };
}
interface Workload extends Obj {
  spec: { replicas?: number; template: { spec: { containers: Container[]; initContainers?: Container[] } } };
}
interface HistoryEntry {
  revision: number;
  status: string;
  description: string;
}

async function getJson<T>(args: string[]): Promise<T> {
  return JSON.parse(await kubectlOk(['get', ...args, '-o', 'json'])) as T;
}

async function readyDescription(): Promise<string> {
  return kubectlOk(['get', 'crd', CRD, '-o', 'jsonpath={.spec.versions[0].additionalPrinterColumns[?(@.name=="Ready")].description}']);
}

async function crdMeta(): Promise<Meta | undefined> {
  const r = await kubectl(['get', 'crd', CRD, '-o', 'json']);
  if (r.code !== 0) {
    if (r.stderr.includes('NotFound')) return undefined;
    throw new Error(`kubectl get crd ${CRD}: ${r.stderr}`);
  }
  return (JSON.parse(r.stdout) as Obj).metadata;
}

/** Sets (or removes, when absent in `want`) exactly the Helm ownership keys of the CRD. */
async function restoreCrdOwnership(want: Meta): Promise<void> {
  const ann = HELM_ANNOTATIONS.map((k) => (want.annotations?.[k] !== undefined ? `${k}=${want.annotations[k]}` : `${k}-`));
  const lab = HELM_LABELS.map((k) => (want.labels?.[k] !== undefined ? `${k}=${want.labels[k]}` : `${k}-`));
  await kubectlOk(['annotate', '--overwrite', 'crd', CRD, ...ann]);
  await kubectlOk(['label', '--overwrite', 'crd', CRD, ...lab]);
}

(onTier2() ? describe : describe.skip)('helm upgrade, rollback and uninstall of charts/quiclb, as documented', () => {
  const release = `hj-${randomBytes(3).toString('hex')}`;
  const full = `${release}-quiclb`;
  const operator = `${full}-operator`;
  const dataplane = `${full}-dataplane`;
  let ns = '';
  let userNs = '';
  let crdBefore: Meta | undefined;
  const user: { qlb?: Meta; secret?: Obj } = {};
  let certificates = '';

  const h = (args: string[], timeoutMs = 60_000) => helm([...args, '-n', ns], { timeoutMs });
  const history = async (): Promise<HistoryEntry[]> => JSON.parse((await h(['history', release, '-o', 'json'])).stdout) as HistoryEntry[];
  const tlsData = () =>
    kubectlOk(['get', 'secret', `${operator}-tls`, `${dataplane}-tls`, '-n', ns, '-o', 'jsonpath={range .items[*]}{.data}{"\\n"}{end}']);
  const deployment = () => getJson<Workload>(['deployment', operator, '-n', ns]);
  const daemonSet = () => getJson<Workload>(['daemonset', dataplane, '-n', ns]);
  /** pod-template-hash of the operator's ReplicaSets that have replicas. */
  const replicaSets = async () =>
    (await getJson<{ items: Array<Obj & { spec: { replicas: number } }> }>(['replicaset', '-n', ns, '-l', 'app.kubernetes.io/component=operator']))
      .items.filter((rs) => rs.spec.replicas > 0)
      .map((rs) => rs.metadata.labels?.['pod-template-hash'])
      .sort();
  /** Revision numbers of the DaemonSet's ControllerRevisions (one per distinct pod template). */
  const revisions = async () =>
    (await getJson<{ items: Array<Obj & { revision: number }> }>(['controllerrevision', '-n', ns, '-l', 'app.kubernetes.io/component=dataplane']))
      .items.map((r) => r.revision)
      .sort();
  const podUids = async (component: string) =>
    (await getJson<{ items: Obj[] }>(['pod', '-n', ns, '-l', `app.kubernetes.io/instance=${release},app.kubernetes.io/component=${component}`]))
      .items.filter((p) => !p.metadata.deletionTimestamp)
      .map((p) => p.metadata.uid)
      .sort();
  /** Runs the `kubectl -n NS rollout status ...` lines that NOTES.txt prints, bounded. */
  const rolloutAsNotesSay = async (notes: string) => {
    const lines = notes.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('kubectl ') && l.includes(' rollout status '));
    expect(lines).toEqual([`kubectl -n ${ns} rollout status deployment/${operator}`, `kubectl -n ${ns} rollout status daemonset/${dataplane}`]);
    for (const line of lines) await kubectlOk([...line.split(/\s+/).slice(1), '--timeout=45s'], { timeoutMs: 50_000 });
  };
  /**
   * The user's objects are untouched: the same QuicLoadBalancer (uid) with the same spec (generation; the operator
   * writes only its finalizer and status), the same key Secret (uid, resourceVersion: nobody wrote to it).
   */
  const expectUserObjectsUntouched = async () => {
    const qlb = await getJson<Obj>(['quicloadbalancer', 'h3', '-n', userNs]);
    expect(qlb.metadata.uid).toBe(user.qlb?.uid);
    expect(qlb.metadata.generation).toBe(user.qlb?.generation);
    const secret = await getJson<Obj>(['secret', 'h3-key', '-n', userNs]);
    expect(secret.metadata.uid).toBe(user.secret?.metadata.uid);
    expect(secret.metadata.resourceVersion).toBe(user.secret?.metadata.resourceVersion);
  };
  /** Values every install and plain (not --reuse-values) upgrade repeats: the operator watches the user's namespace only. */
  const watchUserNs = () => ['--set', `operator.watchNamespace=${userNs}`];

  let operatorProc: CliProc | undefined;
  /** Folders holding a ServiceAccount token and TLS key: removed in afterAll. */
  const operatorDirs: string[] = [];
  /** `quiclb operator` as the chart deploys it: the Deployment's args, the release's ServiceAccount token and TLS Secret. */
  const startOperatorAsDeployed = async (): Promise<CliProc> => {
    const dir = mkdtempSync(join(tmpdir(), 'quiclb-hj-op-'));
    operatorDirs.push(dir);
    const kubeconfig = join(dir, 'kubeconfig');
    writeFileSync(kubeconfig, (await serviceAccountKubeConfig(ns, operator)).exportConfig(), { mode: 0o600 });
    const tlsDir = join(dir, 'tls');
    mkdirSync(tlsDir, { mode: 0o700 });
    const tls = await getJson<Obj>(['secret', `${operator}-tls`, '-n', ns]);
    for (const f of ['ca.crt', 'tls.crt', 'tls.key']) writeFileSync(join(tlsDir, f), Buffer.from(tls.data?.[f] ?? '', 'base64'), { mode: 0o600 });
    // Loopback and a free port instead of the pod's 0.0.0.0:9443 and 9090; everything else as rendered.
    const args = ((await deployment()).spec.template.spec.containers[0]!.args ?? []).map((a) =>
      a.startsWith('--config-listen=') ? '--config-listen=127.0.0.1:0'
        : a.startsWith('--metrics-port=') ? '--metrics-port=0'
          : a.startsWith('--tls-dir=') ? `--tls-dir=${tlsDir}`
            : a,
    );
    expect(args).toContain(`--namespace=${userNs}`);
    operatorProc = spawnNode(['--import', 'tsx', 'cli/main.ts', ...args, `--kubeconfig=${kubeconfig}`], { env: { POD_NAME: `${operator}-local`, POD_NAMESPACE: ns } });
    return operatorProc;
  };
  const stopOperator = async () => {
    const p = operatorProc;
    operatorProc = undefined;
    if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
    p.child.kill('SIGTERM');
    const killer = setTimeout(() => p.child.kill('SIGKILL'), 5_000);
    await p.exit;
    clearTimeout(killer);
  };
  const operatorOutput = () => (operatorProc ? `\noperator output:\n${operatorProc.out.slice(-20).join('\n')}\n${operatorProc.err.join('').slice(-2000)}` : '');

  beforeAll(async () => {
    // --take-ownership (below) needs Helm >= 3.17.
    const version = (await helm(['version', '--template', '{{.Version}}'])).stdout;
    const [major, minor] = (/^v(\d+)\.(\d+)\./.exec(version) ?? []).slice(1).map(Number);
    expect(`helm ${version}: ${major! > 3 || (major === 3 && minor! >= 17) ? 'has' : 'lacks'} --take-ownership`).toBe(`helm ${version}: has --take-ownership`);
    // Another suite may have just deleted the CRD (kubectl delete --wait=false): a user waits for it to go first.
    await waitFor('the CRD to finish deleting', async () => ((await crdMeta())?.deletionTimestamp ? undefined : true), 60_000, 250);
    crdBefore = await crdMeta();
    // docs/quicloadbalancer.md: "Apply it with kubectl apply --server-side -f crds/", as a platform team may have.
    await kubectlOk(['apply', '--server-side', '-f', CRD_DIR]);
    await kubectlOk(['wait', '--for=condition=Established', `crd/${CRD}`, '--timeout=30s'], { timeoutMs: 35_000 });
    ns = await createNamespace('helm-journey');
    userNs = await createNamespace('shop');
  }, 100_000);

  afterAll(async () => {
    await stopOperator();
    for (const dir of operatorDirs) rmSync(dir, { recursive: true, force: true });
    if (ns) await h(['uninstall', release, '--timeout', '30s'], 40_000);
    if (userNs) await kubectl(['patch', 'quicloadbalancer', 'h3', '-n', userNs, '--type=merge', '-p', '{"metadata":{"finalizers":null}}']);
    if (userNs) await deleteNamespace(userNs);
    if (ns) await deleteNamespace(ns);
    if ((await crdMeta()) !== undefined) {
      // The CRD's content as this checkout has it (a failed test may have left the "next release" copy in force).
      await kubectl(['apply', '--server-side', '--force-conflicts', '-f', CRD_DIR]);
      await restoreCrdOwnership(crdBefore ?? { name: CRD, uid: '', resourceVersion: '' });
    }
  }, 60_000);

  it('helm install over a CRD already in the cluster: refused with the reason, then adopted with --take-ownership', async () => {
    const refused = await h(['install', release, CHART, '--set', 'crds.enabled=true', ...watchUserNs()]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain(`CustomResourceDefinition "${CRD}" in namespace "" exists and cannot be imported into the current release: invalid ownership metadata`);
    expect((await h(['status', release])).stderr).toContain('release: not found');
    expect((await kubectlOk(['get', 'all,secret,serviceaccount', '-n', ns, '-l', `app.kubernetes.io/instance=${release}`, '-o', 'name'])).trim()).toBe('');

    const r = await h(['install', release, CHART, '--set', 'crds.enabled=true', ...watchUserNs(), '--take-ownership']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('STATUS: deployed');
    expect(r.stdout).toContain('REVISION: 1');
    const crd = await crdMeta();
    expect(crd?.annotations).toMatchObject({ 'meta.helm.sh/release-name': release, 'meta.helm.sh/release-namespace': ns, 'helm.sh/resource-policy': 'keep' });
    expect(crd?.labels?.['app.kubernetes.io/managed-by']).toBe('Helm');
    await rolloutAsNotesSay(r.stdout);
    expect(r.stdout).toContain('Wait for the operator (2 replicas, one leads)');
    expect(r.stdout).toContain('Uninstalling keeps the CRD and any QuicLoadBalancer still there.');
    expect((await podUids('operator')).length).toBe(2);
    certificates = await tlsData();
    expect(certificates).toContain('tls.key');
  });

  it('the user creates a QuicLoadBalancer and a labelled key Secret (docs/quicloadbalancer.md)', async () => {
    await kubectlOk(['create', 'secret', 'generic', 'h3-key', '-n', userNs, `--from-literal=key=${randomBytes(16).toString('hex')}`]);
    await kubectlOk(['label', 'secret', 'h3-key', '-n', userNs, 'quiclb.io/key=true']);
    const qlb = [
      'apiVersion: quiclb.io/v1alpha1',
      'kind: QuicLoadBalancer',
      `metadata: {name: h3, namespace: ${userNs}}`,
      'spec:',
      '  backend: {serviceName: h3-backend, portName: quic}',
      '  listen: {ports: [4433]}',
      '  encryption: {mode: Encrypted, keySecretRef: {name: h3-key, key: key}}',
    ].join('\n');
    await kubectlOk(['apply', '-f', '-'], { input: qlb });
    user.qlb = (await getJson<Obj>(['quicloadbalancer', 'h3', '-n', userNs])).metadata;
    user.secret = await getJson<Obj>(['secret', 'h3-key', '-n', userNs]);
    expect(user.secret.metadata.labels?.['quiclb.io/key']).toBe('true');
  });

  it('helm upgrade with changed operator values: the Deployment changes and rolls, the DaemonSet does not, a dashboard ConfigMap appears', async () => {
    const rsBefore = await replicaSets();
    const dpPods = await podUids('dataplane');
    const r = await h([
      'upgrade', release, CHART,
      ...watchUserNs(),
      '--set', 'operator.logLevel=debug',
      '--set', 'operator.replicas=3',
      '--set', 'operator.resources.limits.memory=256Mi',
      '--set', 'dashboards.enabled=true',
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('REVISION: 2');
    expect(r.stdout).toContain('Wait for the operator (3 replicas, one leads)');
    expect(r.stdout).toContain(`The Grafana dashboard "quiclb" is in ConfigMap ${full}-dashboard.`);
    await rolloutAsNotesSay(r.stdout);

    const d = await deployment();
    expect(d.spec.replicas).toBe(3);
    const c = d.spec.template.spec.containers[0]!;
    expect(c.args).toContain('--log-level=debug');
    expect(c.resources?.limits?.memory).toBe('256Mi');
    // A changed pod template: a new ReplicaSet took over, its 3 pods replaced the old ones.
    const rsAfter = await replicaSets();
    expect(rsAfter).toHaveLength(1);
    expect(rsBefore).not.toContain(rsAfter[0]);
    expect((await podUids('operator')).length).toBe(3);
    // The data plane's template did not change: same single ControllerRevision, same pods.
    expect(await revisions()).toEqual([1]);
    expect(await podUids('dataplane')).toEqual(dpPods);

    const cm = await getJson<Obj>(['configmap', `${full}-dashboard`, '-n', ns]);
    expect(cm.metadata.labels?.grafana_dashboard).toBe('1');
    expect((JSON.parse(cm.data?.['quiclb.json'] ?? '{}') as { title?: string }).title).toMatch(/quiclb/i);

    expect(await tlsData()).toBe(certificates);
    await expectUserObjectsUntouched();
  });

  it('helm upgrade --reuse-values: bindPrivilegedPorts and metricsPort roll the DaemonSet (root with NET_BIND_SERVICE only, new port), replicas alone scale the operator without a restart', async () => {
    const rsBefore = await replicaSets();
    const dpPods = await podUids('dataplane');
    const opPods = await podUids('operator');
    const r = await h(['upgrade', release, CHART, '--reuse-values', '--set', 'dataplane.bindPrivilegedPorts=true', '--set', 'dataplane.metricsPort=9191', '--set', 'operator.replicas=4']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('REVISION: 3');
    expect(r.stdout).not.toContain('can listen on UDP ports >= 1024 only');
    await rolloutAsNotesSay(r.stdout);

    const ds = await daemonSet();
    const c = ds.spec.template.spec.containers[0]!;
    expect(c.securityContext).toMatchObject({ runAsUser: 0, runAsNonRoot: false, capabilities: { drop: ['ALL'], add: ['NET_BIND_SERVICE'] } });
    expect(ds.spec.template.spec.initContainers?.[0]?.command?.join(' ')).toContain('chown 0:0 /var/lib/quiclb');
    expect(c.args).toContain('--metrics-port=9191');
    expect(await kubectlOk(['get', 'service', `${dataplane}-metrics`, '-n', ns, '-o', 'jsonpath={.spec.ports[0].port}'])).toBe('9191');
    expect(r.stdout).toContain("data planes on every node's port 9191");
    expect(await revisions()).toEqual([1, 2]);
    const dpAfter = await podUids('dataplane');
    expect(dpAfter).toHaveLength(3);
    expect(dpAfter.filter((u) => dpPods.includes(u))).toEqual([]);
    // --reuse-values kept revision 2's values; the operator's template is unchanged: one more pod, none replaced.
    const d = await deployment();
    expect(d.spec.replicas).toBe(4);
    expect(d.spec.template.spec.containers[0]!.args).toContain('--log-level=debug');
    expect(await replicaSets()).toEqual(rsBefore);
    const opAfter = await podUids('operator');
    expect(opAfter).toHaveLength(4);
    expect(opAfter.filter((u) => opPods.includes(u))).toEqual(opPods);

    expect(await tlsData()).toBe(certificates);
    await expectUserObjectsUntouched();
  });

  it('values the chart refuses on upgrade fail with a message naming them, and the release stays at its revision', async () => {
    const generation = (await deployment()).metadata.generation;
    const cases: Array<[string[], string]> = [
      [['--set', 'operator.replicas=0'], "at '/operator/replicas': minimum: got 0, want 1"],
      [['--set', 'dataplane.metricsPort=70000'], "at '/dataplane/metricsPort': maximum: got 70,000, want 65,535"],
      [['--set', 'operator.logLevel=verbose'], "at '/operator/logLevel': value must be one of 'fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'"],
      [['--set', 'operator.replica=3'], "additional properties 'replica' not allowed"],
      [['--set', 'operator.leaderElection.renewDeadline=20'], 'operator.leaderElection.renewDeadline (20) must be below leaseDuration (15)'],
      [['--set', 'operator.replicas=1'], 'operator.podDisruptionBudget.minAvailable (1) must be below operator.replicas (1)'],
      // values.yaml: ServiceMonitors need the Prometheus Operator's CRD, which this cluster does not have.
      [['--set', 'metrics.serviceMonitor.enabled=true'], 'no matches for kind "ServiceMonitor" in version "monitoring.coreos.com/v1"'],
    ];
    for (const [set, message] of cases) {
      const r = await h(['upgrade', release, CHART, '--reuse-values', ...set]);
      expect(`${set.join(' ')} -> ${r.code === 0 ? 'accepted' : 'refused'}`).toBe(`${set.join(' ')} -> refused`);
      expect(r.stderr).toContain('UPGRADE FAILED');
      expect(r.stderr).toContain(message);
    }
    const hist = await history();
    expect(hist.map((e) => `${e.revision} ${e.status}`)).toEqual(['1 superseded', '2 superseded', '3 deployed']);
    expect((await deployment()).metadata.generation).toBe(generation);
    expect(await revisions()).toEqual([1, 2]);
  });

  it('helm rollback to revision 2 restores its values: the DaemonSet rolls back to non-root, the certificates stay', async () => {
    const r = await h(['rollback', release, '2']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('Rollback was a success!');
    await kubectlOk(['rollout', 'status', `daemonset/${dataplane}`, '-n', ns, '--timeout=45s'], { timeoutMs: 50_000 });
    const hist = await history();
    expect(hist.at(-1)).toMatchObject({ revision: 4, status: 'deployed', description: 'Rollback to 2' });
    const c = (await daemonSet()).spec.template.spec.containers[0]!;
    expect(c.securityContext).toMatchObject({ runAsUser: 65532, runAsNonRoot: true, capabilities: { drop: ['ALL'] } });
    expect(c.securityContext?.capabilities?.add).toBeUndefined();
    expect(await kubectlOk(['get', 'service', `${dataplane}-metrics`, '-n', ns, '-o', 'jsonpath={.spec.ports[0].port}'])).toBe('9190');
    // The first template again: its ControllerRevision is reused with the next revision number.
    expect(await revisions()).toEqual([2, 3]);
    expect((await deployment()).spec.replicas).toBe(3);
    expect(await tlsData()).toBe(certificates);
    await expectUserObjectsUntouched();
  });

  it('a chart release whose CRD changed: while kubectl co-owns the CRD helm upgrade fails on it (after applying the rest), --force-conflicts completes it, objects kept', async () => {
    const next = mkdtempSync(join(tmpdir(), 'quiclb-chart-next-'));
    try {
      cpSync(CHART, next, { recursive: true });
      const chartYaml = join(next, 'Chart.yaml');
      writeFileSync(chartYaml, readFileSync(chartYaml, 'utf8').replace(/^version: .*$/m, 'version: 0.1.1-next'));
      const crdFile = join(next, 'files', 'crds', 'quiclb.io_quicloadbalancers.yaml');
      const original = readFileSync(crdFile, 'utf8');
      expect(original).toContain(READY_DESCRIPTION);
      writeFileSync(crdFile, original.replace(READY_DESCRIPTION, NEXT_READY_DESCRIPTION));

      // beforeAll applied crds/ with `kubectl apply --server-side`: kubectl's field manager owns .spec.versions too,
      // so Helm's server-side apply of the changed CRD conflicts and the release is marked failed, the CRD unchanged...
      const refused = await h(['upgrade', release, next, '--reuse-values']);
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toContain('Apply failed with 1 conflict: conflict with "kubectl": .spec.versions');
      expect(await readyDescription()).toBe(READY_DESCRIPTION);
      expect((await history()).at(-1)).toMatchObject({ revision: 5, status: 'failed' });
      // ...but Helm applied the new release's other objects all the same: they carry its chart label.
      expect((await deployment()).metadata.labels?.['helm.sh/chart']).toBe('quiclb-0.1.1-next');

      const forced = await h(['upgrade', release, next, '--reuse-values', '--force-conflicts']);
      expect(forced.stderr).toBe('');
      expect(forced.code).toBe(0);
      expect(await readyDescription()).toBe(NEXT_READY_DESCRIPTION);
      await expectUserObjectsUntouched();
      expect(await kubectlOk(['get', 'qlb', 'h3', '-n', userNs, '-o', 'name'])).toBe('quicloadbalancer.quiclb.io/h3\n');

      // Helm now owns .spec.versions alone: the next upgrade (back to this checkout's chart) needs no flag.
      const back = await h(['upgrade', release, CHART, '--reuse-values']);
      expect(back.stderr).toBe('');
      expect(back.code).toBe(0);
      expect(await readyDescription()).toBe(READY_DESCRIPTION);
      expect((await deployment()).metadata.labels?.['helm.sh/chart']).toBe('quiclb-0.1.0');
      expect((await history()).slice(-3).map((e) => `${e.revision} ${e.status}`)).toEqual(['5 failed', '6 superseded', '7 deployed']);
      expect(await tlsData()).toBe(certificates);
    } finally {
      rmSync(next, { recursive: true, force: true });
    }
  });

  it('values.yaml "tls": deleting both certificate Secrets and running helm upgrade issues new ones under one new CA; the next upgrade keeps them', async () => {
    await kubectlOk(['delete', 'secret', `${operator}-tls`, `${dataplane}-tls`, '-n', ns]);
    const r = await h(['upgrade', release, CHART, '--reuse-values']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const renewed = await tlsData();
    expect(renewed).not.toBe(certificates);
    const [op, dp] = renewed.trim().split('\n').map((l) => JSON.parse(l) as Record<string, string>);
    expect(op!['ca.crt']).toBe(dp!['ca.crt']);
    expect(op!['tls.crt']).not.toBe(dp!['tls.crt']);
    // ...and the next upgrade keeps them again; turning the dashboard off removes its ConfigMap.
    expect((await h(['upgrade', release, CHART, '--reuse-values', '--set', 'dashboards.enabled=false'])).code).toBe(0);
    expect(await tlsData()).toBe(renewed);
    expect((await kubectl(['get', 'configmap', `${full}-dashboard`, '-n', ns])).stderr).toContain('NotFound');
    certificates = renewed;
  });

  it('dataplane.enabled=false (the operator alone): upgrades keep its generated certificate too', async () => {
    const alone = `${release}-op`;
    const secret = () => kubectlOk(['get', 'secret', `${alone}-quiclb-operator-tls`, '-n', ns, '-o', 'jsonpath={.data}']);
    try {
      expect((await h(['install', alone, CHART, '--set', 'crds.enabled=false', '--set', 'dataplane.enabled=false'])).code).toBe(0);
      const first = await secret();
      expect(first).toContain('tls.key');
      expect((await h(['upgrade', alone, CHART, '--reuse-values', '--set', 'operator.logLevel=debug'])).code).toBe(0);
      expect(await secret()).toBe(first);
    } finally {
      await h(['uninstall', alone]);
    }
  });

  it('the operator, run as the chart deploys it, takes charge of the QuicLoadBalancer: finalizer, configs Secret, Lease', async () => {
    await startOperatorAsDeployed();
    const qlb = await waitFor('the operator to put its finalizer and write the configs Secret', async () => {
      const q = await getJson<Obj>(['quicloadbalancer', 'h3', '-n', userNs]);
      const configs = await kubectl(['get', 'secret', 'h3-quiclb-configs', '-n', userNs, '-o', 'name']);
      return q.metadata.finalizers?.includes('quiclb.io/cleanup') && configs.code === 0 ? q : undefined;
    }, 30_000).catch((err: Error) => {
      throw new Error(`${err.message}${operatorOutput()}`);
    });
    expect(qlb.metadata.finalizers).toEqual(['quiclb.io/cleanup']);
    expect(await kubectlOk(['get', 'lease', operator, '-n', ns, '-o', 'jsonpath={.spec.holderIdentity}'])).not.toBe('');
    await expectUserObjectsUntouched();
  });

  it('helm uninstall removes every object of the release, namespaced and cluster-scoped, and keeps the CRD, the user objects and what the operator wrote', async () => {
    // The release's pods get SIGTERM as it goes. In a cluster that usually comes after its Role is deleted, so the
    // leader cannot release its Lease and a re-install leads only once it expires (leaseDuration, 15 s; seen here when
    // stopped after the uninstall). Stopped first here, which spares the re-install below those 15 s.
    await stopOperator();
    const r = await h(['uninstall', release, '--timeout', '30s']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`These resources were kept due to the resource policy:\n[CustomResourceDefinition] ${CRD}`);
    const kinds = 'deployment,replicaset,daemonset,controllerrevision,pod,service,endpointslice,poddisruptionbudget,configmap,secret,serviceaccount,role,rolebinding';
    // The Deployment's and DaemonSet's pods go by garbage collection, after `helm uninstall` returns.
    await waitFor('no object of the release left in its namespace', async () => {
      const left = (await kubectlOk(['get', kinds, '-n', ns, '-l', `app.kubernetes.io/instance=${release}`, '-o', 'name'])).trim();
      return left === '' ? true : undefined;
    }, 30_000);
    // Helm's own release records go too (no --keep-history).
    expect((await kubectlOk(['get', 'secret', '-n', ns, '-l', `owner=helm,name=${release}`, '-o', 'name'])).trim()).toBe('');
    for (const kind of ['clusterrole', 'clusterrolebinding']) {
      expect((await kubectl(['get', kind, operator])).stderr).toContain('NotFound');
    }
    const crd = await crdMeta();
    expect(crd?.deletionTimestamp).toBeUndefined();
    expect(crd?.annotations?.['helm.sh/resource-policy']).toBe('keep');
    await expectUserObjectsUntouched();
    expect(await kubectlOk(['get', 'qlb', '-n', userNs, '-o', 'name'])).toBe('quicloadbalancer.quiclb.io/h3\n');
    // README: the operator's Lease stays in the release namespace, and so does the load balancer's configs Secret.
    expect(await kubectlOk(['get', 'lease', operator, '-n', ns, '-o', 'name'])).toBe(`lease.coordination.k8s.io/${operator}\n`);
    expect(await kubectlOk(['get', 'secret', 'h3-quiclb-configs', '-n', userNs, '-o', 'name'])).toBe('secret/h3-quiclb-configs\n');

    // A QuicLoadBalancer not deleted before the uninstall keeps its finalizer: deleting it now waits for an operator.
    await kubectlOk(['delete', 'quicloadbalancer', 'h3', '-n', userNs, '--wait=false']);
    await new Promise((res) => setTimeout(res, 2_000));
    const stuck = await getJson<Obj>(['quicloadbalancer', 'h3', '-n', userNs]);
    expect(stuck.metadata.deletionTimestamp).toBeDefined();
    expect(stuck.metadata.finalizers).toEqual(['quiclb.io/cleanup']);
  });

  it('a re-install over the kept CRD: under another name it is refused (the CRD names the old release), under the same name it is adopted as is, and its operator finishes the pending deletion', async () => {
    const other = await h(['install', `${release}-b`, CHART]);
    expect(other.code).not.toBe(0);
    expect(other.stderr).toContain(`annotation validation error: key "meta.helm.sh/release-name" must equal "${release}-b": current value is "${release}"`);

    const r = await h(['install', release, CHART, ...watchUserNs()]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('REVISION: 1');
    await rolloutAsNotesSay(r.stdout);
    // A fresh install: new certificates, default values.
    expect(await tlsData()).not.toBe(certificates);
    expect((await deployment()).spec.replicas).toBe(2);

    await startOperatorAsDeployed();
    await waitFor('the new operator to finish deleting the QuicLoadBalancer and its records', async () => {
      const left = await kubectl(['get', 'quicloadbalancer/h3', 'secret/h3-quiclb-configs', '-n', userNs, '-o', 'name', '--ignore-not-found']);
      return left.code === 0 && left.stdout.trim() === '' ? true : undefined;
    }, 30_000).catch((err: Error) => {
      throw new Error(`${err.message}${operatorOutput()}`);
    });
    // The user's key Secret is theirs: never written, never deleted.
    const secret = await getJson<Obj>(['secret', 'h3-key', '-n', userNs]);
    expect(secret.metadata.resourceVersion).toBe(user.secret?.metadata.resourceVersion);
    await stopOperator();
  });
});
