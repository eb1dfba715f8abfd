// The operator's core is pure (STYLE.md "Pure core, thin shell"): its folders import neither the Kubernetes client
// nor gRPC nor the data plane, and read no clock or randomness of their own (`now` and keys are injected), except
// generateKey() in rotation/keys.ts, which is what it is for.
import { describe, expect, it } from '@jest/globals';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../operator/', import.meta.url));
/** Whole folders, and the pure files of folders that also hold I/O adapters (allocation/store.ts, reconcile/reconciler.ts). */
const PURE_DIRS = ['rotation', 'status'];
const PURE_FILES = ['allocation/server-ids.ts', 'allocation/records-codec.ts', 'reconcile/desired.ts', 'reconcile/spec.ts', 'reconcile/health-verdict.ts', 'reconcile/port-claims.ts'];
const FORBIDDEN: [RegExp, string][] = [
  [/from '@kubernetes\/client-node'/, 'the Kubernetes client'],
  [/from '@grpc\//, 'gRPC'],
  [/from '(\.\.\/)+dataplane\//, 'the data plane'],
  [/from '(\.\.\/)+proto\//, 'the wire types'],
  [/Date\.now\(|new Date\(\)/, 'the clock'],
  [/Math\.random\(/, 'Math.random'],
];

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

describe('operator core purity', () => {
  const all = [...PURE_DIRS.flatMap((d) => files(join(ROOT, d))), ...PURE_FILES.map((f) => join(ROOT, f))];
  it('has files to check', () => {
    expect(all.length).toBeGreaterThanOrEqual(10);
  });
  it.each(all.map((f) => [f.slice(ROOT.length)]))('%s imports no I/O layer and reads no clock', (rel) => {
    const text = readFileSync(join(ROOT, rel), 'utf8');
    for (const [re, what] of FORBIDDEN) expect({ file: rel, uses: re.test(text) ? what : null }).toEqual({ file: rel, uses: null });
    const random = /randomBytes\(/.test(text);
    expect({ file: rel, random }).toEqual({ file: rel, random: rel === 'rotation/keys.ts' });
  });
});
