/**
 * A worker that applied a snapshot and died before the others answered: the primary's rollback skips it (it
 * restarts with the snapshot in force) instead of sending to its closed IPC channel, which crashed the primary
 * with an unhandled ERR_IPC_CHANNEL_CLOSED 'error' event (dataplane/workers.ts, WorkerPool.ask). A restarted
 * worker that does not answer its catch-up to the snapshot in force within applyTimeoutMs is replaced.
 */
import { describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { repoRoot } from '../helpers/run-cli.js';

describe('worker pool: workers that die or stall around an apply', () => {
  it('survives a worker that applied and then exited (both come back on the previous snapshot); replaces a restarted worker silent on its catch-up', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/dataplane/worker-rollback-exited.script.ts'], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    let out: {
      s1: number;
      s2: number;
      error: string | null;
      back: boolean;
      versions: number[];
      again: string | null;
      versionsAgain: number[];
      replacements: Record<string, number>;
      resync: { s3: number; apply: string | null; stopped: boolean; replaced: boolean; versions: number[]; replacements: Record<string, number> };
    };
    try {
      out = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '') as typeof out;
    } catch {
      throw new Error(`script failed (status ${r.status}, signal ${r.signal}):\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-3000)}`);
    }
    expect(out.error).toBe('worker 1 did not answer the apply within 1500 ms');
    expect(out.back).toBe(true);
    expect(out.versions).toEqual([out.s1, out.s1]);
    expect(out.again).toBeNull();
    expect(out.versionsAgain).toEqual([out.s2, out.s2]);
    expect(out.replacements.apply_unanswered).toBe(1);
    expect(out.replacements.rollback_failed).toBe(0);
    // A restarted worker that does not answer its catch-up is replaced.
    expect(out.resync.apply).toBeNull();
    expect(out.resync.stopped).toBe(true);
    expect(out.resync.replaced).toBe(true);
    expect(out.resync.versions).toEqual([out.resync.s3, out.resync.s3]);
    expect(out.resync.replacements.resync_failed).toBe(1);
  }, 70_000);
});
