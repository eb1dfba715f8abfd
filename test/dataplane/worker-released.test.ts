/**
 * A worker pool never binds again a listen address it released (handed over to another load balancer) until
 * restore() or an apply that no longer lists it: not in a rollback of a failed apply, not in a restarted worker
 * (dataplane/workers.ts, WorkerPool.released). Workers bind with SO_REUSEPORT: a port bound again would be
 * shared, silently, with the load balancer that took it over.
 */
import { describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { repoRoot } from '../helpers/run-cli.js';

const hasPrlimit = process.platform === 'linux' && spawnSync('prlimit', ['--version']).status === 0;

interface Out {
  initial: { P: string[]; Q: string[] };
  swapStart: (string | null)[];
  restart: { restarted: boolean; restartHolds: number; P: string[] };
  rollback: { error: string | null; holds: number; holdsQ: number; P: string[] };
  restore: { steps: (string | null)[]; holds: number; P: string[]; Q: string[] };
  restoredRestart: { restarted: boolean; holds: number; P: string[] };
}

(hasPrlimit ? describe : describe.skip)('worker pool: released listen addresses', () => {
  it('stay unbound in restarted workers and in a rollback; restore() binds them again, in restarted workers too', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/dataplane/worker-released.script.ts'], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 90_000,
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    let out: Out;
    try {
      out = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '') as Out;
    } catch {
      throw new Error(`script failed (status ${r.status}, signal ${r.signal}):\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-3000)}`);
    }
    expect(out.initial).toEqual({ P: ['x'], Q: ['y'] });
    expect(out.swapStart).toEqual([null, null, null]);
    expect(out.restart).toEqual({ restarted: true, restartHolds: 0, P: ['y'] });
    expect(out.rollback.error).toMatch(/^worker 1: cannot listen on 127\.0\.0\.1:\d+: /);
    expect(out.rollback).toMatchObject({ holds: 0, holdsQ: 0, P: ['y'] });
    expect(out.restore).toEqual({ steps: [null, null, null], holds: 2, P: ['x'], Q: ['y'] });
    expect(out.restoredRestart).toEqual({ restarted: true, holds: 2, P: ['x'] });
  }, 100_000);
});
