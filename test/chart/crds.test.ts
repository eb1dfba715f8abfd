// The chart's CRD is the repository's crds/ (the source of truth): a byte-for-byte copy in files/crds/, rendered
// with only the keep annotation added. Run charts/sync-crds.sh after changing crds/.
import { describe, expect, it } from '@jest/globals';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { load } from 'js-yaml';
import { repoRoot } from '../helpers/run-cli.js';
import { CHART, render, type Manifest } from './helm.js';

const SOURCE = join(repoRoot, 'crds');
const COPY = join(CHART, 'files', 'crds');

describe('the chart CRD copy', () => {
  it('has exactly the files of crds/, byte for byte (fix: sh charts/sync-crds.sh)', () => {
    const yaml = (dir: string) => readdirSync(dir).filter((f) => f.endsWith('.yaml')).sort();
    expect(yaml(COPY)).toEqual(yaml(SOURCE));
    for (const f of yaml(SOURCE)) expect({ f, text: readFileSync(join(COPY, f), 'utf8') }).toEqual({ f, text: readFileSync(join(SOURCE, f), 'utf8') });
  });

  it('renders as the same object plus helm.sh/resource-policy: keep (kept on uninstall)', async () => {
    const docs = (await render()).filter((d) => d.kind === 'CustomResourceDefinition');
    const source = load(readFileSync(join(SOURCE, 'quiclb.io_quicloadbalancers.yaml'), 'utf8')) as Manifest;
    expect(docs).toHaveLength(1);
    const got = structuredClone(docs[0]);
    expect(got.metadata.annotations).toEqual({ ...(source.metadata.annotations ?? {}), 'helm.sh/resource-policy': 'keep' });
    delete got.metadata.annotations;
    const want = structuredClone(source);
    delete want.metadata.annotations;
    expect(got).toEqual(want);
  });

  it('crds.keep=false renders it without the keep annotation; crds.enabled=false not at all', async () => {
    const unkept = (await render({ 'crds.keep': false })).find((d) => d.kind === 'CustomResourceDefinition');
    expect(unkept?.metadata.annotations?.['helm.sh/resource-policy']).toBeUndefined();
    expect((await render({ 'crds.enabled': false })).filter((d) => d.kind === 'CustomResourceDefinition')).toEqual([]);
  });
});
