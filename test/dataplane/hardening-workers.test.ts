/**
 * Issue 10, item 5 (a hung worker is detected, marked not ready and replaced) and item 6 (the restart backoff
 * resets after a worker lived a while; a second instance on the same address refuses, also with workers).
 */
import { afterAll, describe, expect, it } from '@jest/globals';
import { spawn, spawnSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../helpers/run-cli.js';
import { standaloneYaml, waitFor } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'quiclb-hardening-workers-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('worker liveness (issue 10 item 5) and restart backoff (item 6)', () => {
  it('a SIGSTOPped worker is not ready within seconds, killed and replaced; new flows are all answered; the backoff resets', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/dataplane/hardening-workers.script.ts'], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    const line = r.stdout.trim().split('\n').at(-1) ?? '';
    let out: { hung: { notReadyMs: number; replacedMs: number; answered: number }; backoff: { delays: number[] }; hungWorkers: number };
    try {
      out = JSON.parse(line);
    } catch {
      throw new Error(`script failed (status ${r.status}, signal ${r.signal}):\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`);
    }
    expect(out.hung.notReadyMs).toBeGreaterThanOrEqual(0);
    expect(out.hung.notReadyMs).toBeLessThan(2500); // timeout 1 s, pings every 200 ms
    expect(out.hung.replacedMs).toBeGreaterThan(0);
    expect(out.hung.replacedMs).toBeLessThan(8000);
    expect(out.hung.answered).toBe(40);
    expect(out.hungWorkers).toBe(1);
    expect(out.backoff.delays).toEqual([500, 500]);
  }, 70_000);

  it("does not take the primary's own stall for hung workers (their pongs wait behind the late tick)", () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/dataplane/hardening-workers-stall.script.ts'], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 40_000,
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    const line = r.stdout.trim().split('\n').at(-1) ?? '';
    let out: { hungWorkers: number; samePids: boolean; ready: number };
    try {
      out = JSON.parse(line);
    } catch {
      throw new Error(`script failed (status ${r.status}, signal ${r.signal}):\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`);
    }
    expect(out).toEqual({ hungWorkers: 0, samePids: true, ready: 2 });
  }, 50_000);
});

/** `quiclb standalone` from source in a child process, its stdout lines and exit. */
function spawnStandalone(config: string, env: Record<string, string>) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'cli/main.ts', 'standalone', '--config', config], {
    cwd: repoRoot,
    env: { ...process.env, NODE_OPTIONS: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out: string[] = [];
  let err = '';
  child.stdout.on('data', (d: Buffer) => out.push(...d.toString().split('\n').filter(Boolean)));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, out, stderr: () => err, exit };
}

describe('exclusive listen addresses (issue 10 item 6)', () => {
  it('a second instance with workers: 2 on the same address refuses with a clear error (exit 1)', async () => {
    const s = createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
    const port = s.address().port;
    await new Promise<void>((r) => s.close(() => r()));
    const yaml = standaloneYaml({ name: 'excl', servers: ['  - { id: a, address: "127.0.0.1:9", server_id: "0001" }'], healthCheck: '{ enabled: false }', extra: 'workers: 2\n' })
      .replace('listen: ["127.0.0.1:0"]', `listen: ["127.0.0.1:${port}"]`)
      .replace('prometheus_port: 0', 'prometheus_port: null');
    const path = join(dir, 'excl.yaml');
    writeFileSync(path, yaml);
    const env = { XDG_RUNTIME_DIR: join(dir, 'run') };
    const first = spawnStandalone(path, env);
    try {
      expect(await waitFor(() => first.out.some((l) => l.includes('quiclb standalone running')), 30_000)).toBe(true);
      const second = spawnStandalone(path, env);
      const code = await Promise.race([second.exit, new Promise<string>((r) => setTimeout(() => r('still running'), 20_000))]);
      if (code === 'still running') second.child.kill('SIGKILL');
      expect(code).toBe(1);
      expect(second.stderr()).toMatch(new RegExp(`127\\.0\\.0\\.1:${port} is already served by another quiclb instance \\(pid ${first.child.pid}`));
    } finally {
      first.child.kill('SIGTERM');
      await first.exit;
    }
  }, 90_000);
});
