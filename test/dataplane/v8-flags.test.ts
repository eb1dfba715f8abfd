import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DATAPLANE_V8_FLAGS, withDataplaneV8Flags } from '../../dataplane/v8-flags.js';
import { repoRoot } from '../helpers/run-cli.js';

describe('the data plane V8 flags', () => {
  it('are flags this node accepts', () => {
    // an unknown or misspelt V8 flag makes node exit with "bad option"
    const env = { ...process.env, NODE_OPTIONS: '' };
    const r = spawnSync(process.execPath, [...DATAPLANE_V8_FLAGS, '-e', 'process.stdout.write(JSON.stringify(process.execArgv))'], { encoding: 'utf8', env });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect((JSON.parse(r.stdout) as string[]).slice(0, DATAPLANE_V8_FLAGS.length)).toEqual(DATAPLANE_V8_FLAGS);
    expect(spawnSync(process.execPath, ['--initial-old-spaces-size=64', '-e', ''], { encoding: 'utf8', env }).status).not.toBe(0);
  });

  it('are added to the worker processes unless the process sized that setting itself', () => {
    expect(withDataplaneV8Flags([], '')).toEqual([...DATAPLANE_V8_FLAGS]);
    expect(withDataplaneV8Flags(['--enable-source-maps'], '')).toEqual(['--enable-source-maps', ...DATAPLANE_V8_FLAGS]);
    // a semi-space or old-space size of the process's own (any of min/max/initial, either spelling) wins
    expect(withDataplaneV8Flags(['--max-semi-space-size=4'], '')).toEqual(['--max-semi-space-size=4', '--initial-old-space-size=64']);
    expect(withDataplaneV8Flags(['--min_semi_space_size=2'], '')).toEqual(['--min_semi_space_size=2', '--initial-old-space-size=64']);
    expect(withDataplaneV8Flags(['--initial-old-space-size=16', '--max-semi-space-size=2'], '')).toEqual(['--initial-old-space-size=16', '--max-semi-space-size=2']);
    expect(withDataplaneV8Flags(['--initial_heap_size=32'], '')).toEqual(['--initial_heap_size=32', '--max-semi-space-size=1']);
    // a heap cap is another setting: the starting size still comes (V8 clamps it to half the cap)
    expect(withDataplaneV8Flags([], '--max-old-space-size=512 --trace-warnings')).toEqual([...DATAPLANE_V8_FLAGS]);
    // a flag that only shares a prefix is not the same setting
    expect(withDataplaneV8Flags(['--max-semi-space-size-x=1'], '')).toEqual(['--max-semi-space-size-x=1', ...DATAPLANE_V8_FLAGS]);
  });

  it('are the ones every launcher passes', () => {
    const read = (f: string): string => readFileSync(join(repoRoot, f), 'utf8');
    expect(read('bin/quiclb.js').split('\n')[0]).toBe(`#!/usr/bin/env -S node ${DATAPLANE_V8_FLAGS.join(' ')}`);
    const entrypoint = ['node', ...DATAPLANE_V8_FLAGS, '/app/bin/quiclb.js'].map((a) => JSON.stringify(a)).join(', ');
    expect(read('Dockerfile')).toContain(`ENTRYPOINT [${entrypoint}]`);
    const pkg = JSON.parse(read('package.json')) as { scripts: Record<string, string> };
    expect(pkg.scripts.start).toBe(`node ${DATAPLANE_V8_FLAGS.join(' ')} bin/quiclb.js standalone --example`);
    expect(read('bench/dataplane/run.ts')).toMatch(/^const QUICLB_NODE_ARGS = DATAPLANE_V8_FLAGS;$/m);
    expect(read('bench/dataplane/run.ts')).toMatch(/\[process\.execPath, \.\.\.QUICLB_NODE_ARGS, /);
    expect(read('bench/flood/run.ts')).toMatch(/spawn\(process\.execPath, \[\.\.\.DATAPLANE_V8_FLAGS, /);
    // the README's commands go through the launcher (`npx quiclb`), not around it
    expect(read('README.md')).not.toMatch(/node bin\/quiclb\.js/);
  });
});
