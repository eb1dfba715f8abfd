/**
 * docs/backends.md stays true: its TypeScript backend runs as printed (against a kubelet-laid-out volume) and mints
 * CIDs that decode to the pod's server ID, and the conformance check it gives (`quiclb cid decode`) decodes them.
 */
import { describe, it, expect, afterAll } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CidDecoder } from '../../lib/quiclb/decoder.js';
import { runCli, repoRoot } from '../helpers/run-cli.js';
import { KubeletVolume } from './kubelet-volume.js';
import { keyFor, liveConfig, secretFiles, tempDir, type ConfigSpec } from './fixtures.js';

const tmp = tempDir('backend-docs');
afterAll(() => tmp.remove());

const ACTIVE: ConfigSpec = { id: 2, state: 'active' };
const DRAINING: ConfigSpec = { id: 1, state: 'draining' };

function docSnippet(): string {
  const doc = readFileSync(join(repoRoot, 'docs/backends.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## A TypeScript backend'));
  const m = /```ts\n([\s\S]*?)```/.exec(section);
  if (!m) throw new Error('no ts block in "A TypeScript backend"');
  return m[1];
}

describe('docs/backends.md', () => {
  const vol = new KubeletVolume(join(tmp.dir, 'etc-quiclb'));
  vol.write({ ...secretFiles([ACTIVE, DRAINING]), 'server-id': '00a7' });
  let cid = '';

  it('the TypeScript backend is at most 10 lines and runs as printed', () => {
    const snippet = docSnippet();
    expect(snippet.split('\n').filter((l) => l.trim() !== '' && !l.trim().startsWith('//')).length).toBeLessThanOrEqual(10);
    const program = snippet
      .replace("from 'quiclb'", `from ${JSON.stringify(join(repoRoot, 'lib/index.ts'))}`)
      .replace("'/etc/quiclb'", JSON.stringify(vol.dir))
      .concat("console.log('CID', newConnectionId().toString('hex'));\ngen.close();\n");
    expect(program).toContain(vol.dir);
    const file = join(tmp.dir, 'backend.ts');
    writeFileSync(file, program);
    const r = spawnSync(process.execPath, ['--import', 'tsx', file], { cwd: repoRoot, encoding: 'utf8', timeout: 20_000, env: { ...process.env, NODE_OPTIONS: '' } });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    cid = /^CID ([0-9a-f]+)$/m.exec(r.stdout)![1];
    const d = new CidDecoder([liveConfig(ACTIVE), liveConfig(DRAINING)]).decode(Buffer.from(cid, 'hex'));
    expect(d).toEqual({ configId: 2, serverId: Buffer.from('00a7', 'hex'), reason: null });
  });

  it('the conformance check with `quiclb cid decode` decodes it', () => {
    const keyHex = keyFor(ACTIVE.id).toString('hex');
    const r = runCli(['cid', 'decode', '--config', `2:2:6:${keyHex}`, cid]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/00a7/);
  });
});
