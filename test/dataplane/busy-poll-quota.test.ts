/**
 * Busy-poll under a CPU quota: the data plane reads its cgroup's quota (readCpuQuota) and warns at start when it
 * would spin under one. The reader against files given by the test (cgroup v1 and v2 layouts), then the real thing:
 * `quiclb standalone` started inside a cgroup this test creates with a quota of half a CPU (root, a cgroup hierarchy
 * with the cpu controller; skipped otherwise). The cgroup sits at the top of the hierarchy for the test's few seconds.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
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

  it('cgroup v1 listed as "cpuacct,cpu": found through the /sys/fs/cgroup/cpu link', () => {
    const map = { '/proc/self/cgroup': '3:cpuacct,cpu:/a\n', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000', '/sys/fs/cgroup/cpu/a/cpu.cfs_quota_us': '20000', '/sys/fs/cgroup/cpu/a/cpu.cfs_period_us': '100000' };
    expect(readCpuQuota(files(map))).toBe(0.2);
  });

  it('nothing to read, or nonsense: none', () => {
    expect(readCpuQuota(files({ '/proc/self/cgroup': '0::/../x\n', '/sys/fs/cgroup/cpu.max': '100000 100000' }))).toBeNull();
    expect(readCpuQuota(files({}))).toBeNull();
    expect(readCpuQuota(files({ '/proc/self/cgroup': 'garbage' }))).toBeNull();
    expect(readCpuQuota(files({ '/proc/self/cgroup': '0::/a\n', '/sys/fs/cgroup/a/cpu.max': '100000 0' }))).toBeNull();
    expect(readCpuQuota(files({ '/proc/self/cgroup': '0::/a\n', '/sys/fs/cgroup/a/cpu.max': 'lots' }))).toBeNull();
  });
});

/** Where this test can make a cgroup with a CPU quota (v1 cpu controller or v2 cpu.max), or why it cannot. */
function cgroupParent(): { dir: string; v1: boolean } | string {
  if (process.getuid?.() !== 0) return 'not root';
  if (loadIoAddon().addon === null) return 'batched I/O addon not built';
  if (existsSync('/sys/fs/cgroup/cpu/cpu.cfs_quota_us')) return { dir: '/sys/fs/cgroup/cpu', v1: true };
  try {
    if (readFileSync('/sys/fs/cgroup/cgroup.subtree_control', 'utf8').split(/\s+/).includes('cpu')) return { dir: '/sys/fs/cgroup', v1: false };
  } catch {
    // no v2 hierarchy
  }
  return 'no cgroup hierarchy with the cpu controller';
}

/**
 * Makes a cgroup with a quota of half a CPU under `parent` (at the top of the hierarchy, outside CI's own cgroup, for
 * the few seconds of this test). remove() kills what is left in it (the data plane's tsx helper can outlive it by a
 * second) and removes it.
 */
function makeHalfCpuCgroup(parent: { dir: string; v1: boolean }): { procs: string; remove: () => Promise<void> } {
  const dir = join(parent.dir, `quiclb-test-${process.pid}`);
  mkdirSync(dir);
  const remove = async (): Promise<void> => {
    for (let i = 0; i < 50; i++) {
      const pids = readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
      if (pids.length === 0) break;
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL'); // the data plane this test started, or its children
        } catch {
          // gone already
        }
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    rmdirSync(dir);
  };
  try {
    if (parent.v1) {
      writeFileSync(join(dir, 'cpu.cfs_period_us'), '100000');
      writeFileSync(join(dir, 'cpu.cfs_quota_us'), '50000');
    } else {
      writeFileSync(join(dir, 'cpu.max'), '50000 100000');
    }
  } catch (e) {
    rmdirSync(dir);
    throw e;
  }
  return { procs: join(dir, 'cgroup.procs'), remove };
}

const parent = cgroupParent();
const describeInCgroup = typeof parent === 'string' ? describe.skip : describe;
if (typeof parent === 'string') process.stderr.write(`busy-poll-quota: real cgroup test skipped (${parent})\n`);

describeInCgroup('quiclb standalone with busy-poll, started inside a cgroup with a CPU quota', () => {
  let dir: string;
  let backend: TaggingBackend;
  let cgroup: { procs: string; remove: () => Promise<void> } | null = null;
  const children: ChildProcess[] = [];
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'quiclb-quota-'));
    backend = await TaggingBackend.start('a');
    writeFileSync(
      join(dir, 'lb.yaml'),
      standaloneYaml({ name: 'quota', servers: [`  - { id: a, address: "127.0.0.1:${backend.port}", server_id: "0001" }`], healthCheck: '{ enabled: false }' }),
    );
    cgroup = makeHalfCpuCgroup(parent as { dir: string; v1: boolean });
  });
  afterAll(async () => {
    try {
      for (const c of children) if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) process.kill(-c.pid, 'SIGKILL');
      await cgroup?.remove();
    } finally {
      await backend.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  /** Starts the data plane (in the cgroup when `procs` is given) and returns its log lines up to 'data plane started' and a moment after. */
  async function startupLines(busyPollUs: string, procs: string | null): Promise<string[]> {
    const argv = [process.execPath, '--import', 'tsx', 'cli/main.ts', 'standalone', '--config', join(dir, 'lb.yaml'), '--io', 'batched'];
    // the shell joins the cgroup, then becomes the data plane (exec keeps the PID, so the data plane is in it too);
    // its own process group, so that it and its children go together
    const child = spawn('sh', ['-c', `${procs !== null ? `echo $$ > ${procs} && ` : ''}exec "$@"`, 'sh', ...argv], {
      cwd: repoRoot,
      env: { ...process.env, NODE_OPTIONS: '', QUICLB_IO_BUSY_POLL_US: busyPollUs },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    children.push(child);
    const exited = once(child, 'exit');
    const lines: string[] = [];
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no 'data plane started' in 20 s: ${lines.join('\n')}`)), 20_000);
        createInterface({ input: child.stdout! }).on('line', (l) => {
          lines.push(l);
          if (l.includes('data plane started')) {
            clearTimeout(timer);
            setTimeout(resolve, 300); // the warning follows the started line
          }
        });
        void exited.then(([code]) => reject(new Error(`data plane exited (${String(code)}): ${lines.join('\n')}`)));
      });
    } finally {
      if (child.exitCode === null && child.signalCode === null) process.kill(-child.pid!, 'SIGTERM');
      await exited;
    }
    return lines;
  }

  const warning = (lines: string[]) => lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((m) => String(m.msg).startsWith('busy-poll under a CPU quota'));

  it('warns with the quota when busy-poll is on; not with busy-poll off, nor outside the cgroup', async () => {
    const procs = cgroup!.procs;
    const w = warning(await startupLines('20', procs));
    expect(w).toMatchObject({ level: 40, io_busy_poll_us: 20, cpu_quota: 0.5, processes: 1 });
    expect(warning(await startupLines('0', procs))).toBeUndefined();
    // outside it: as this process's own cgroup says (no quota, or one of 2 CPUs or more: no warning)
    const own = readCpuQuota();
    expect(warning(await startupLines('20', null))?.cpu_quota).toBe(own !== null && own < 2 ? own : undefined);
  }, 90_000);
});
