/**
 * Busy-poll under a CPU quota: the data plane reads its cgroup's quota (readCpuQuota) and warns at start when it
 * would spin under one. The reader against files given by the test (cgroup v1 and v2 layouts), then the real thing:
 * `quiclb standalone` started inside a cgroup this test creates with a quota of half a CPU (root, a cgroup hierarchy
 * with the cpu controller; skipped otherwise).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { readCpuQuota } from '../../dataplane/resources.js';
import { loadIoAddon } from '../../dataplane/io/addon.js';
import { repoRoot } from '../helpers/run-cli.js';
import { standaloneYaml, TaggingBackend } from './helpers.js';

const files = (map: Record<string, string>) => (path: string) => map[path] ?? null;

describe('readCpuQuota', () => {
  it('cgroup v2: the smallest cpu.max quota from the process cgroup up to the root; "max" is none', () => {
    const cgroup = { '/proc/self/cgroup': '0::/kubepods/pod1/ctr\n' };
    expect(readCpuQuota(files(cgroup))).toBeNull();
    expect(readCpuQuota(files({ ...cgroup, '/sys/fs/cgroup/kubepods/pod1/ctr/cpu.max': 'max 100000\n' }))).toBeNull();
    expect(readCpuQuota(files({ ...cgroup, '/sys/fs/cgroup/kubepods/pod1/ctr/cpu.max': '150000 100000\n' }))).toBe(1.5);
    expect(
      readCpuQuota(files({ ...cgroup, '/sys/fs/cgroup/kubepods/pod1/ctr/cpu.max': 'max 100000\n', '/sys/fs/cgroup/kubepods/pod1/cpu.max': '50000 100000\n', '/sys/fs/cgroup/kubepods/cpu.max': '400000 100000\n' })),
    ).toBe(0.5);
    expect(readCpuQuota(files({ '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/cpu.max': '200000 100000' }))).toBe(2);
  });

  it('cgroup v1: cpu.cfs_quota_us / cpu.cfs_period_us of the cpu controller (-1: none), the smallest on the path', () => {
    const cgroup = { '/proc/self/cgroup': '12:memory:/x\n4:cpu,cpuacct:/kubepods/pod1\n1:name=systemd:/y\n0::/z\n' };
    const at = (dir: string, quota: string, period = '100000') => ({ [`/sys/fs/cgroup/cpu,cpuacct/${dir}cpu.cfs_quota_us`]: quota, [`/sys/fs/cgroup/cpu,cpuacct/${dir}cpu.cfs_period_us`]: period });
    expect(readCpuQuota(files({ ...cgroup, ...at('kubepods/pod1/', '-1'), ...at('', '-1') }))).toBeNull();
    expect(readCpuQuota(files({ ...cgroup, ...at('kubepods/pod1/', '25000') }))).toBe(0.25);
    expect(readCpuQuota(files({ ...cgroup, ...at('kubepods/pod1/', '300000'), ...at('kubepods/', '100000') }))).toBe(1);
  });

  it('nothing to read, or nonsense: none', () => {
    expect(readCpuQuota(files({}))).toBeNull();
    expect(readCpuQuota(files({ '/proc/self/cgroup': 'garbage' }))).toBeNull();
    expect(readCpuQuota(files({ '/proc/self/cgroup': '0::/a\n', '/sys/fs/cgroup/a/cpu.max': '100000 0' }))).toBeNull();
    expect(readCpuQuota(files({ '/proc/self/cgroup': '0::/a\n', '/sys/fs/cgroup/a/cpu.max': 'lots' }))).toBeNull();
  });
});

/** A cgroup with a quota of half a CPU, made by this test (v1 cpu controller or v2 cpu.max), or why not. */
function makeHalfCpuCgroup(): { procs: string; remove: () => void } | string {
  if (process.getuid?.() !== 0) return 'not root';
  const name = `quiclb-test-${process.pid}`;
  const v1 = '/sys/fs/cgroup/cpu';
  const v2 = '/sys/fs/cgroup';
  try {
    if (existsSync(join(v1, 'cpu.cfs_quota_us'))) {
      const dir = join(v1, name);
      mkdirSync(dir);
      writeFileSync(join(dir, 'cpu.cfs_quota_us'), '50000');
      writeFileSync(join(dir, 'cpu.cfs_period_us'), '100000');
      return { procs: join(dir, 'cgroup.procs'), remove: () => rmdirSync(dir) };
    }
    if (existsSync(join(v2, 'cgroup.controllers')) && readFileSync(join(v2, 'cgroup.subtree_control'), 'utf8').split(/\s+/).includes('cpu')) {
      const dir = join(v2, name);
      mkdirSync(dir);
      writeFileSync(join(dir, 'cpu.max'), '50000 100000');
      return { procs: join(dir, 'cgroup.procs'), remove: () => rmdirSync(dir) };
    }
  } catch (e) {
    return `cannot make a cgroup: ${(e as Error).message}`;
  }
  return 'no cgroup hierarchy with the cpu controller';
}

const cgroup = loadIoAddon().addon !== null ? makeHalfCpuCgroup() : 'batched I/O addon not built';
const describeInCgroup = typeof cgroup === 'string' ? describe.skip : describe;
if (typeof cgroup === 'string') process.stderr.write(`busy-poll-quota: real cgroup test skipped (${cgroup})\n`);

describeInCgroup('quiclb standalone with busy-poll, started inside a cgroup with a CPU quota', () => {
  let dir: string;
  let backend: TaggingBackend;
  const children: ChildProcess[] = [];
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'quiclb-quota-'));
    backend = await TaggingBackend.start('a');
    writeFileSync(
      join(dir, 'lb.yaml'),
      standaloneYaml({ name: 'quota', servers: [`  - { id: a, address: "127.0.0.1:${backend.port}", server_id: "0001" }`], healthCheck: '{ enabled: false }' }),
    );
  });
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : null)));
    if (typeof cgroup !== 'string') cgroup.remove();
    await backend.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Starts the data plane (in the cgroup when `procs` is given) and returns its log lines up to 'data plane started' and a moment after. */
  async function startupLines(busyPollUs: string, procs: string | null): Promise<string[]> {
    const argv = [process.execPath, '--import', 'tsx', 'cli/main.ts', 'standalone', '--config', join(dir, 'lb.yaml'), '--io', 'batched'];
    // the shell joins the cgroup, then becomes the data plane (exec keeps the PID, so the data plane is in it too)
    const child = spawn('sh', ['-c', `${procs !== null ? `echo $$ > ${procs} && ` : ''}exec "$@"`, 'sh', ...argv], {
      cwd: repoRoot,
      env: { ...process.env, NODE_OPTIONS: '', QUICLB_IO_BUSY_POLL_US: busyPollUs },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    const lines: string[] = [];
    const started = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no 'data plane started' in 20 s: ${lines.join('\n')}`)), 20_000);
      createInterface({ input: child.stdout! }).on('line', (l) => {
        lines.push(l);
        if (l.includes('data plane started')) {
          clearTimeout(timer);
          setTimeout(resolve, 300); // the warning follows the started line
        }
      });
      child.once('exit', (code) => reject(new Error(`data plane exited (${code}): ${lines.join('\n')}`)));
    });
    await started;
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    return lines;
  }

  const warning = (lines: string[]) => lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((m) => String(m.msg).startsWith('busy-poll under a CPU quota'));

  it('warns with the quota when busy-poll is on; not with busy-poll off, nor outside the cgroup', async () => {
    const procs = (cgroup as { procs: string }).procs;
    const w = warning(await startupLines('20', procs));
    expect(w).toMatchObject({ level: 40, io_busy_poll_us: 20, cpu_quota: 0.5 });
    expect(warning(await startupLines('0', procs))).toBeUndefined();
    // outside it: as this process's own cgroup says (none on a machine without a CPU limit)
    expect(warning(await startupLines('20', null))?.cpu_quota).toBe(readCpuQuota() ?? undefined);
  }, 90_000);
});
