/**
 * The listen-address lock directory may be shared with other users (<tmpdir>/quiclb-locks): whatever is put in it
 * under a lock's name (a FIFO without a writer) must not block the instance that reads it.
 * Run in a child process: a read that blocks would block this one.
 */
import { afterAll, describe, expect, it } from '@jest/globals';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../helpers/run-cli.js';

const dir = mkdtempSync(join(tmpdir(), 'quiclb-lock-files-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function acquireInChild(port: number): { status: number | null; signal: string | null; out: string } {
  const code = `import { ListenLocks } from './dataplane/listen-lock.ts';
const l = new ListenLocks(${JSON.stringify(dir)});
l.acquire([{ host: '127.0.0.1', port: ${port}, family: 4 }]);
console.log('acquired');`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: repoRoot, encoding: 'utf8', timeout: 15_000, env: { ...process.env, NODE_OPTIONS: '' } });
  return { status: r.status, signal: r.signal, out: r.stdout + r.stderr };
}

describe('listen-address lock files', () => {
  it('a FIFO in place of a lock neither blocks nor counts as a live owner', () => {
    execFileSync('mkfifo', [join(dir, 'udp4-40001-127.0.0.1.lock')]);
    const r = acquireInChild(40001);
    expect(r.signal).toBeNull(); // not killed by the timeout
    expect(r.out).toContain('acquired');
  }, 30_000);

});
