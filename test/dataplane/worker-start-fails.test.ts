/**
 * Workers that never become ready (dataplane/workers.ts, WorkerPool.fork): a restarted worker that exits before
 * 'ready' is restarted again (it used to leave its slot empty for good); one stuck in its start is replaced after
 * startTimeoutMs (start_timeout), and the pool's initial start() fails with that timeout instead of hanging.
 */
import { describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { repoRoot } from '../helpers/run-cli.js';

describe('worker pool: workers that never become ready', () => {
  it('restarts a restarted worker that exits before ready; replaces one stuck in its start; fails the initial start on a stuck worker', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/dataplane/worker-start-fails.script.ts'], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 80_000,
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    let out: {
      crashVictim: boolean;
      crashRecovered: boolean;
      stuckVictim: boolean;
      stuckRecovered: boolean;
      replacements: Record<string, number>;
      initialError: string | null;
      initialMs: number;
      initialGone: boolean;
    };
    try {
      out = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '') as typeof out;
    } catch {
      throw new Error(`script failed (status ${r.status}, signal ${r.signal}):\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-3000)}`);
    }
    expect(out.crashVictim).toBe(true);
    expect(out.crashRecovered).toBe(true);
    expect(out.stuckVictim).toBe(true);
    expect(out.stuckRecovered).toBe(true);
    expect(out.replacements.start_timeout).toBe(1);
    expect(out.initialError).toBe('worker 0 did not become ready within 1500 ms of starting');
    expect(out.initialGone).toBe(true);
  }, 90_000);
});
