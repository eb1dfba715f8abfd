/**
 * The listen-address lock directory may be shared with other users (<tmpdir>/quiclb-locks): whatever is put in it
 * under a lock's name (a FIFO without a writer) must not block the instance that reads it.
 * Run in a child process: a read that blocks would block this one.
 */
import { afterAll, describe, expect, it } from '@jest/globals';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../helpers/run-cli.js';

const dir = mkdtempSync(join(tmpdir(), 'quiclb-lock-files-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Lock files are named per network namespace: "net<inode>-udp4-PORT-HOST.lock". */
const netns = /\d+/.exec(readlinkSync('/proc/self/ns/net'))![0];

function acquireInChild(port: number, inNewNetworkNamespace = false): { status: number | null; signal: string | null; out: string } {
  const code = `import { ListenLocks } from './dataplane/listen-lock.ts';
const l = new ListenLocks(${JSON.stringify(dir)});
l.acquire([{ host: '127.0.0.1', port: ${port}, family: 4 }]);
console.log('acquired');`;
  const node = [process.execPath, '--import', 'tsx', '--input-type=module', '-e', code];
  // unshare -rn: a user and network namespace of its own (loopback only), as a pod or a test's namespace has
  const [cmd, ...args] = inNewNetworkNamespace ? ['unshare', '-rn', ...node] : node;
  const r = spawnSync(cmd, args, { cwd: repoRoot, encoding: 'utf8', timeout: 15_000, env: { ...process.env, NODE_OPTIONS: '' } });
  return { status: r.status, signal: r.signal, out: r.stdout + r.stderr };
}

describe('listen-address lock files', () => {
  it('a FIFO in place of a lock neither blocks nor counts as a live owner', () => {
    execFileSync('mkfifo', [join(dir, `net${netns}-udp4-40001-127.0.0.1.lock`)]);
    const r = acquireInChild(40001);
    expect(r.signal).toBeNull(); // not killed by the timeout
    expect(r.out).toContain('acquired');
  }, 30_000);

  it('an address is locked per network namespace: another namespace may listen on it too, this one may not', () => {
    const held = spawnHolder(40002);
    try {
      expect(acquireInChild(40002).out).toContain('already served by another quiclb instance');
      const other = acquireInChild(40002, true);
      expect(other.out).toContain('acquired');
    } finally {
      held.kill('SIGKILL');
    }
  }, 30_000);
});

/** A child that holds the lock of 127.0.0.1:PORT in this network namespace until killed. */
function spawnHolder(port: number) {
  const code = `import { ListenLocks } from './dataplane/listen-lock.ts';
new ListenLocks(${JSON.stringify(dir)}).acquire([{ host: '127.0.0.1', port: ${port}, family: 4 }]);
console.log('holding'); setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: repoRoot, env: { ...process.env, NODE_OPTIONS: '' }, stdio: ['ignore', 'pipe', 'inherit'] });
  // wait synchronously-enough: the lock file appears before 'holding' is printed
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline && !readdirSync(dir).some((f) => f.includes(`udp4-${port}-`) && f.endsWith('.lock'))) execFileSync('sleep', ['0.1']);
  return child;
}
