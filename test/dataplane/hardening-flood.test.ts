/**
 * Issue 10, item 1: spoofed sources must not exhaust descriptors or local ports. Each case runs the standalone
 * runner and a raw-socket flood from random 127.0.0.0/8 sources (bench/flood/spoof.py) inside a network namespace
 * created here (`unshare -n`, loopback only), with a small descriptor limit or a small local port range.
 */
import { describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { repoRoot } from '../helpers/run-cli.js';

const probe = spawnSync('unshare', ['-n', 'sh', '-c', 'ip link set lo up && python3 -c "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)"'], { encoding: 'utf8' });
const skip = probe.status !== 0 ? `network namespaces or raw sockets unavailable: ${(probe.stderr || probe.error?.message || '').trim()}` : null;
if (skip) process.stderr.write(`hardening-flood: skipped (${skip})\n`);
const maybe = skip ? it.skip : it;

interface FloodResult {
  established: string;
  fresh: string;
  metrics: number;
  healthz: number;
  bindFailures: number;
  nofile: { soft: number; hard: number };
  fds: number;
  stats: { upstreamSockets: number; upstreamSocketLimit: number; flowsEvictedUnconfirmed: number; flowsConfirmed: number };
  warnings: string[];
}

function runInNamespace(setup: string, nofile: string, spoofed: number): FloodResult {
  const r = spawnSync(
    'unshare',
    ['-n', 'sh', '-c', `ip link set lo up && ${setup} exec prlimit --nofile=${nofile} "${process.execPath}" --import tsx test/dataplane/hardening-flood.script.ts ${spoofed} 20000`],
    { cwd: repoRoot, encoding: 'utf8', timeout: 60_000, env: { ...process.env, NODE_OPTIONS: '' } },
  );
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as FloodResult;
  } catch {
    throw new Error(`flood scenario failed (status ${r.status}):\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`);
  }
}

describe('spoofed-source floods (network namespace)', () => {
  maybe('with nofile 512 (hard 1024): the limit is raised, 3000 spoofed sources leave established flows, new connections and /metrics working', () => {
    const r = runInNamespace('', '512:1024', 3000);
    expect(r.nofile.soft).toBe(1024);
    expect(r.established).toBe('20/20');
    expect(r.fresh).toBe('10/10');
    expect(r.metrics).toBe(200);
    expect(r.healthz).toBe(200);
    expect(r.fds).toBeLessThan(1024 - 100);
    expect(r.stats.upstreamSockets).toBeLessThanOrEqual(r.stats.upstreamSocketLimit);
    expect(r.stats.flowsEvictedUnconfirmed).toBeGreaterThan(2000);
    expect(r.warnings.some((w) => /more upstream sockets than this process can hold/.test(w))).toBe(true);
  }, 70_000);

  maybe('with a 1000-port local range: 2000 spoofed sources leave ports for other sockets, and connections work', () => {
    const r = runInNamespace('echo "40000 40999" > /proc/sys/net/ipv4/ip_local_port_range &&', '8192:8192', 2000);
    expect(r.bindFailures).toBe(0);
    expect(r.established).toBe('20/20');
    expect(r.fresh).toBe('10/10');
    expect(r.stats.upstreamSocketLimit).toBe(750);
    expect(r.stats.upstreamSockets).toBeLessThanOrEqual(750);
  }, 70_000);
});
