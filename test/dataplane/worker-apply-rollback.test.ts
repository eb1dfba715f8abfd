/**
 * Worker mode puts a snapshot in force on every worker or on none (dataplane/workers.ts, WorkerPool.apply): a
 * worker that cannot bind a new port, that fails to roll back, or that does not answer leaves the pool on the
 * previous snapshot everywhere, and the apply fails with that worker's reason.
 */
import { describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { repoRoot } from '../helpers/run-cli.js';

const hasPrlimit = process.platform === 'linux' && spawnSync('prlimit', ['--version']).status === 0;

interface Out {
  versions: { s1: number; s2: number; s3: number };
  bind: { error: string | null; portB: number; versions: number[]; bFree: boolean; answeredA: number };
  retry: { error: string | null; versions: number[]; answeredB: number };
  rollbackFails: { error: string | null; back: boolean; w1Kept: boolean; versions: number[]; cFree: boolean; answeredB: number; replacements: Record<string, number>; rollbackLogged: boolean };
  silent: { error: string | null; back: boolean; versions: number[]; replacements: Record<string, number> };
  final: { error: string | null; versions: number[]; s4: number; metric: string[] };
}

(hasPrlimit ? describe : describe.skip)('worker pool: all-or-nothing apply', () => {
  it('rolls back the workers that applied when one fails; replaces a worker whose rollback fails or that does not answer; a later apply succeeds on all', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/dataplane/worker-apply-rollback.script.ts'], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 90_000,
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    const line = r.stdout.trim().split('\n').at(-1) ?? '';
    let out: Out;
    try {
      out = JSON.parse(line) as Out;
    } catch {
      throw new Error(`script failed (status ${r.status}, signal ${r.signal}):\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-3000)}`);
    }
    const { s1, s2 } = out.versions;
    // A bind error on worker 1 only: the apply fails with its reason, worker 0 is back on s1, nobody holds B.
    expect(out.bind.error).toMatch(new RegExp(`^worker 1: cannot listen on 127\\.0\\.0\\.1:${out.bind.portB}: `));
    expect(out.bind.versions).toEqual([s1, s1]);
    expect(out.bind.bFree).toBe(true);
    expect(out.bind.answeredA).toBe(20);
    // The same snapshot once the worker can bind: in force on both.
    expect(out.retry).toEqual({ error: null, versions: [s2, s2], answeredB: 20 });
    // Worker 0 applied s3 and could not roll back (stopped): replaced, back with s2 like worker 1.
    expect(out.rollbackFails.error).toMatch(/^worker 1: cannot listen on 127\.0\.0\.1:\d+: /);
    expect(out.rollbackFails.back).toBe(true);
    expect(out.rollbackFails.w1Kept).toBe(true);
    expect(out.rollbackFails.versions).toEqual([s2, s2]);
    expect(out.rollbackFails.cFree).toBe(true);
    expect(out.rollbackFails.answeredB).toBe(20);
    expect(out.rollbackFails.replacements).toEqual({ hung: 0, start_timeout: 0, apply_unanswered: 0, release_unanswered: 0, rollback_failed: 1, resync_failed: 0 });
    expect(out.rollbackFails.rollbackLogged).toBe(true);
    // A worker that does not answer within applyTimeoutMs: failure, replaced, both on s2.
    expect(out.silent.error).toBe('worker 1 did not answer the apply within 1500 ms');
    expect(out.silent.back).toBe(true);
    expect(out.silent.versions).toEqual([s2, s2]);
    expect(out.silent.replacements.apply_unanswered).toBe(1);
    expect(out.final.error).toBeNull();
    expect(out.final.versions).toEqual([out.final.s4, out.final.s4]);
    expect(out.final.metric).toEqual(
      expect.arrayContaining(['quiclb_worker_replacements_total{lb="test",reason="rollback_failed"} 1', 'quiclb_worker_replacements_total{lb="test",reason="apply_unanswered"} 1']),
    );
  }, 100_000);
});
