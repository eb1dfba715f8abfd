// charts/quiclb against a real API server (tier 1 or 2): every object the chart renders is accepted (server-side
// validation of the CRD, RBAC, PDB, DaemonSet, ...), `helm upgrade` keeps the generated config-channel
// certificates (lookup), and `helm uninstall` removes the cluster-scoped RBAC. The CRD is installed by other suites
// with kubectl, so it is checked with a server-side dry run and the release runs with crds.enabled=false.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { createNamespace, deleteNamespace, helm, kubectl, kubectlOk } from './cluster.js';

const CHART = join(process.cwd(), 'charts', 'quiclb');

describe('helm install of charts/quiclb', () => {
  let ns: string;
  const release = `chart-${randomBytes(3).toString('hex')}`;
  const full = `${release}-quiclb`;
  const base = () => ['--namespace', ns, '--set', 'crds.enabled=false'];

  beforeAll(async () => {
    ns = await createNamespace('chart');
  });

  afterAll(async () => {
    await helm(['uninstall', release, '-n', ns, '--timeout', '60s'], { timeoutMs: 90_000 });
    await deleteNamespace(ns);
  });

  it('the API server accepts the CRD the chart renders (server-side dry run)', async () => {
    const t = await helm(['template', release, CHART, '--namespace', 'quiclb-system', '--show-only', 'templates/crds.yaml']);
    expect(t.code).toBe(0);
    const r = await kubectl(['apply', '--server-side', '--force-conflicts', '--dry-run=server', '-f', '-'], { input: t.stdout });
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('customresourcedefinition.apiextensions.k8s.io/quicloadbalancers.quiclb.io serverside-applied (server dry run)');
  });

  it('installs, and the API server accepts every object', async () => {
    const r = await helm(['install', release, CHART, ...base()], { timeoutMs: 90_000 });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('STATUS: deployed');
    const kinds = (await kubectlOk(['get', 'deployment,daemonset,service,poddisruptionbudget,secret,serviceaccount,role,rolebinding', '-n', ns, '-l', `app.kubernetes.io/instance=${release}`, '-o', 'name'])).split('\n').filter(Boolean).sort();
    expect(kinds).toEqual([
      `daemonset.apps/${full}-dataplane`,
      `deployment.apps/${full}-operator`,
      `poddisruptionbudget.policy/${full}-operator`,
      `role.rbac.authorization.k8s.io/${full}-operator-leader-election`,
      `rolebinding.rbac.authorization.k8s.io/${full}-operator-leader-election`,
      `secret/${full}-dataplane-tls`,
      `secret/${full}-operator-tls`,
      `service/${full}-dataplane-metrics`,
      `service/${full}-operator`,
      `service/${full}-operator-metrics`,
      `serviceaccount/${full}-dataplane`,
      `serviceaccount/${full}-operator`,
    ]);
    expect(await kubectlOk(['get', 'clusterrole', `${full}-operator`, '-o', 'name'])).toContain(`${full}-operator`);
  }, 120_000);

  it('the data plane ServiceAccount can do nothing in the API; the operator can what docs/operator.md says', async () => {
    const can = async (sa: string, verb: string, resource: string, namespace = ns) =>
      (await kubectl(['auth', 'can-i', verb, resource, '-n', namespace, `--as=system:serviceaccount:${ns}:${sa}`])).stdout.trim();
    for (const [verb, resource] of [['get', 'secrets'], ['list', 'pods'], ['get', 'quicloadbalancers.quiclb.io'], ['get', 'leases.coordination.k8s.io'], ['list', 'nodes']]) {
      expect(`${verb} ${resource}: ${await can(`${full}-dataplane`, verb, resource)}`).toBe(`${verb} ${resource}: no`);
    }
    expect(await can(`${full}-operator`, 'patch', 'pods', 'default')).toBe('yes');
    // The user key Secret informer: RBAC cannot narrow list/watch by label; the operator selects quiclb.io/key=true.
    expect(await can(`${full}-operator`, 'watch', 'secrets', 'default')).toBe('yes');
    expect(await can(`${full}-operator`, 'patch', 'secrets', 'default')).toBe('no');
    expect(await can(`${full}-operator`, 'update', `leases.coordination.k8s.io/${full}-operator`)).toBe('yes');
    expect(await can(`${full}-operator`, 'update', 'leases.coordination.k8s.io/another-lease')).toBe('no');
  });

  it('helm upgrade with changed values keeps the generated certificates', async () => {
    const secrets = async () => kubectlOk(['get', 'secret', `${full}-operator-tls`, `${full}-dataplane-tls`, '-n', ns, '-o', 'jsonpath={range .items[*]}{.data}{"\\n"}{end}']);
    const before = await secrets();
    expect(before).toContain('tls.key');
    const r = await helm(['upgrade', release, CHART, ...base(), '--set', 'operator.logLevel=debug'], { timeoutMs: 90_000 });
    expect(r.code).toBe(0);
    expect(await secrets()).toBe(before);
    expect(await kubectlOk(['get', 'deployment', `${full}-operator`, '-n', ns, '-o', 'jsonpath={.spec.template.spec.containers[0].args}'])).toContain('--log-level=debug');
  }, 120_000);

  it('helm uninstall removes the cluster-scoped RBAC it created', async () => {
    const r = await helm(['uninstall', release, '-n', ns, '--timeout', '60s'], { timeoutMs: 90_000 });
    expect(r.code).toBe(0);
    const left = await kubectl(['get', 'clusterrole', `${full}-operator`]);
    expect(left.stderr).toContain('NotFound');
  }, 120_000);
});
