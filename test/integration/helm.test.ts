// helm from the version-keyed cache: lint and template a fixture chart offline, and (tier 2) install it into
// the real cluster, where kubeVersion is checked against the stamped server version and --wait needs Ready pods.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { join } from 'node:path';
import { loadAll } from 'js-yaml';
import { cluster, createNamespace, deleteNamespace, helm, kubectlOk, onTier2 } from './cluster.js';
import { FIXTURES } from './fixtures.js';

const CHART = join(FIXTURES, 'chart');

interface Doc {
  kind: string;
  metadata: { name: string };
  spec?: { replicas?: number };
}

describe('helm', () => {
  it('lints the fixture chart', async () => {
    const r = await helm(['lint', '--strict', CHART]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
  });

  it('lint fails on values that break values.schema.json', async () => {
    const r = await helm(['lint', CHART, '--set', 'replicas=0']);
    expect(r.code).not.toBe(0);
    expect(`${r.stdout}${r.stderr}`).toMatch(/replicas.*minimum/s);
  });

  it('templates the chart with the given values', async () => {
    const r = await helm(['template', 'demo', CHART, '--set', 'replicas=4', '--kube-version', cluster().version]);
    expect(r.code).toBe(0);
    const docs = (loadAll(r.stdout) as Array<Doc | null>).filter((d): d is Doc => d !== null && d !== undefined);
    expect(docs.map((d) => `${d.kind}/${d.metadata.name}`).sort()).toEqual(['Deployment/demo-backend', 'Service/demo-backend']);
    expect(docs.find((d) => d.kind === 'Deployment')?.spec?.replicas).toBe(4);
  });
});

(onTier2() ? describe : describe.skip)('helm against the cluster', () => {
  let ns: string;

  beforeAll(async () => {
    ns = await createNamespace('helm');
  });

  afterAll(async () => {
    await helm(['uninstall', 'demo', '-n', ns, '--wait', '--timeout', '60s'], { timeoutMs: 90000 });
    await deleteNamespace(ns);
  });

  it('installs the chart with --wait (pods become Ready on kwok nodes)', async () => {
    const r = await helm(['install', 'demo', CHART, '-n', ns, '--wait', '--timeout', '90s'], { timeoutMs: 120000 });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('STATUS: deployed');
    const ready = await kubectlOk(['get', 'deployment', 'demo-backend', '-n', ns, '-o', 'jsonpath={.status.readyReplicas}']);
    expect(ready).toBe('2');
    const list = await helm(['list', '-n', ns, '-o', 'json']);
    expect((JSON.parse(list.stdout) as Array<{ name: string; status: string }>).map((x) => `${x.name}:${x.status}`)).toEqual(['demo:deployed']);
  });
});
