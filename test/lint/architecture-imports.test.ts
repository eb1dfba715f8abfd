// The eslint rules that hold the architecture (STYLE.md): operator/ and dataplane/ never import each other, the data
// plane never imports the Kubernetes client, lib/quiclb and lib/quic import nothing else of the project. Each case
// lints a one-line file under the folder it would live in (eslint --stdin, the repository's own config).
import { describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function lint(filePath: string, code: string): string[] {
  const r = spawnSync(process.execPath, ['node_modules/eslint/bin/eslint.js', '--format', 'json', '--stdin', '--stdin-filename', filePath], { cwd: ROOT, input: code, encoding: 'utf8', timeout: 60_000 });
  const results = JSON.parse(r.stdout) as { messages: { ruleId: string | null; message: string }[] }[];
  return results.flatMap((f) => f.messages.filter((m) => m.ruleId === 'no-restricted-imports').map((m) => m.message));
}

describe('architecture import rules', () => {
  it.each([
    ['operator/reconcile/x.ts', "export { Router } from '../../dataplane/router.js';\n", /operator\/ never imports dataplane\//],
    ['operator/x.ts', "import { Dataplane } from '../dataplane/dataplane.js';\nexport const d = Dataplane;\n", /operator\/ never imports dataplane\//],
    ['dataplane/agent/x.ts', "import { runOperator } from '../../operator/main.js';\nexport const r = runOperator;\n", /dataplane\/ never imports operator\//],
    ['dataplane/x.ts', "import * as k8s from '@kubernetes/client-node';\nexport const k = k8s;\n", /never talks to the API server/],
    ['dataplane/x.ts', "import { runExample } from '../examples/example.js';\nexport const r = runExample;\n", /demos live in examples\//],
    ['lib/quiclb/x.ts', "import { parseHex } from '../hex.js';\nexport const p = parseHex;\n", /are leaves/],
    ['lib/quic/x.ts', "import { makeConfig } from '../quiclb/config.js';\nexport const m = makeConfig;\n", /are leaves/],
  ])('refuses in %s: %j', (file, code, message) => {
    const messages = lint(file, code);
    expect(messages).toHaveLength(1);
    expect(messages[0]).toMatch(message);
  });

  it.each([
    ['operator/x.ts', "import { validateSnapshot } from '../lib/config/snapshot.js';\nimport { snapshotFromWire } from '../proto/convert.js';\nexport const v = [validateSnapshot, snapshotFromWire];\n"],
    ['dataplane/x.ts', "import { validateSnapshot } from '../lib/config/snapshot.js';\nexport const v = validateSnapshot;\n"],
    ['examples/x.ts', "import { runStandalone } from '../dataplane/standalone.js';\nexport const r = runStandalone;\n"],
    ['lib/quiclb/x.ts', "import { makeConfig } from './config.js';\nexport const m = makeConfig;\n"],
  ])('allows in %s: %j', (file, code) => {
    expect(lint(file, code)).toEqual([]);
  });
});
