/**
 * Restarting the run's kube-apiserver in place (operator-restarts.test.ts, journey.test.ts): stopped by its recorded PID
 * and started again with the same binary and arguments (as test/cluster/up.sh started it: same port, certificates and
 * etcd, so later test files see the same cluster), its pid files rewritten for down.sh.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cluster, kubectl, waitFor } from './cluster.js';

/** Field 22 of /proc/PID/stat (start time in clock ticks), as test/cluster/lib.sh's proc_start records it. */
function procStart(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(') ') + 2).split(' ')[19];
}

/** Running, not a zombie: up.sh's daemons outlive their parent shell, and whoever inherits them may not reap them at once. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(') ') + 2, stat.lastIndexOf(') ') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/**
 * Stops the run's kube-apiserver by its recorded PID and starts the same binary with the same arguments, in its own
 * session, logging where up.sh logs; rewrites the pid files down.sh reads. Resolves with the ms from SIGTERM to its exit and to ready again,
 * and whether it had to be SIGKILLed after `graceMs`.
 */
export async function restartApiServer(opts: { graceMs?: number } = {}): Promise<{ exitedMs: number; readyMs: number; killed: boolean }> {
  const dir = cluster().dir;
  const pidFile = join(dir, 'pids', 'kube-apiserver.pid');
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  const bin = readFileSync(join(dir, 'pids', 'kube-apiserver.bin'), 'utf8').trim();
  if (readFileSync(join(dir, 'pids', 'kube-apiserver.start'), 'utf8').trim() !== procStart(pid)) throw new Error(`kube-apiserver pid ${pid} is not the recorded process`);
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a, i, all) => i < all.length - 1 || a !== '');
  if (argv[0] !== bin) throw new Error(`kube-apiserver pid ${pid} runs ${argv[0]}, not ${bin}`);
  const t0 = Date.now();
  process.kill(pid, 'SIGTERM');
  // Its graceful shutdown stops listening at once but may wait up to 60 s for open connections; with graceMs it is
  // SIGKILLed after that long, as a kubelet ends a static pod after its grace period.
  let killed = false;
  if (opts.graceMs !== undefined) {
    await waitFor('kube-apiserver exited', async () => (alive(pid) ? undefined : true), opts.graceMs, 50).catch(() => {
      killed = true;
      process.kill(pid, 'SIGKILL');
    });
  }
  await waitFor('kube-apiserver exited', async () => (alive(pid) ? undefined : true), 90_000, 50);
  const exitedMs = Date.now() - t0;
  const log = openSync(join(dir, 'logs', 'kube-apiserver.log'), 'a');
  const child = spawn(argv[0], argv.slice(1), { detached: true, stdio: ['ignore', log, log], env: { ...process.env, HOME: join(dir, 'run') } });
  closeSync(log);
  child.unref();
  writeFileSync(pidFile, `${child.pid}\n`);
  writeFileSync(join(dir, 'pids', 'kube-apiserver.start'), `${procStart(child.pid!)}\n`);
  await waitFor('kube-apiserver ready again', async () => ((await kubectl(['get', '--raw', '/readyz'])).code === 0 ? true : undefined), 90_000, 100);
  return { exitedMs, readyMs: Date.now() - t0, killed };
}

