/**
 * native/build.mjs, the build of the batched I/O addon run by `npm install`: warning-free under -Werror with the
 * hardening flags, not rebuilt when up to date, and a failing compiler leaves install successful (exit 0) with no
 * stale addon behind. Builds into a temporary folder (--out), never over native/build/.
 */
import { afterAll, describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = mkdtempSync(join(tmpdir(), 'quiclb-native-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const out = join(dir, 'quiclb_io.node');
const hasCompiler = process.platform === 'linux' && spawnSync('cc', ['--version']).status === 0;
const describeCc = hasCompiler ? describe : describe.skip;

function build(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, ['native/build.mjs', '--out', out, ...args], {
    env: { ...process.env, CFLAGS: '', NODE_OPTIONS: '', ...env },
    encoding: 'utf8',
    timeout: 60000,
  });
  return { status: r.status, text: `${r.stdout}${r.stderr}` };
}

describeCc('native/build.mjs', () => {
  it('builds warning-free under -Werror (--strict) with stack protector, _FORTIFY_SOURCE and full RELRO, and the result loads', () => {
    const r = build(['--strict', '--force']);
    expect(r).toEqual({ status: 0, text: expect.stringContaining(`built ${out}`) });
    expect(r.text).not.toMatch(/warning/i);
    const addon = createRequire(import.meta.url)(out) as { create: unknown; COUNTERS: number };
    expect(typeof addon.create).toBe('function');
    const dyn = spawnSync('readelf', ['-d', '-s', '--wide', out], { encoding: 'utf8' });
    if (dyn.status === 0) {
      expect(dyn.stdout).toMatch(/BIND_NOW/);
      expect(dyn.stdout).toMatch(/GNU_RELRO|RELRO|FLAGS.*NOW/);
      expect(dyn.stdout).toMatch(/__stack_chk_fail|__sendmmsg_chk|_chk@/);
    }
  });

  it('does not rebuild an up-to-date addon (npm install runs it every time); a flag change rebuilds it', () => {
    build([]);
    const mtime = statSync(out).mtimeMs;
    const again = build([]);
    expect(again).toEqual({ status: 0, text: expect.stringContaining('is up to date') });
    expect(statSync(out).mtimeMs).toBe(mtime);
    const other = build([], { CFLAGS: '-DQUICLB_TEST_FLAG=1' });
    expect(other.text).toContain(`built ${out}`);
  });

  it('a failing compiler (CC=false) still exits 0, says the dgram path runs, and removes the older build; --strict exits 1', () => {
    build([]);
    expect(existsSync(out)).toBe(true);
    const failed = build([], { CC: 'false' });
    expect(failed.status).toBe(0);
    expect(failed.text).toMatch(/batched I\/O addon not built \(false exited 1\); the data plane will use node:dgram/);
    expect(existsSync(out)).toBe(false);
    expect(existsSync(`${out}.stamp`)).toBe(false);
    expect(build(['--strict'], { CC: 'false' }).status).toBe(1);
    expect(build([], { CC: '/nonexistent/cc' }).status).toBe(0);
  });
});
