import { afterAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileWatcher } from '../../lib/config/watch.js';
import { sleep, waitFor } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'quiclb-watch-'));
const watchers: FileWatcher[] = [];
afterAll(() => {
  for (const w of watchers) w.close();
  rmSync(dir, { recursive: true, force: true });
});

function watcher(files: string[], pollMs: number, inotify: boolean): string[] {
  const calls: string[] = [];
  const w = new FileWatcher((why) => calls.push(why), () => {}, 20, pollMs, inotify);
  watchers.push(w);
  w.watchFiles(files);
  return calls;
}

describe('FileWatcher', () => {
  it('sees a change that inotify does not report (e.g. written by another host on shared storage) by polling stat()', async () => {
    const f = join(dir, 'shared.state.json');
    writeFileSync(f, '{"v":1}');
    const calls = watcher([f], 50, false);
    await sleep(200);
    expect(calls).toEqual([]);
    writeFileSync(f, '{"v":22}');
    expect(await waitFor(() => calls.length > 0, 3000)).toBe(true);
    expect(calls).toEqual(['file changed (polled): shared.state.json']);
  });

  it('sees a file that appears later (a key file that was missing)', async () => {
    const f = join(dir, 'later.key');
    const calls = watcher([f], 50, false);
    await sleep(150);
    writeFileSync(f, 'AAECAwQFBgcICQoLDA0ODw==');
    expect(await waitFor(() => calls.length > 0, 3000)).toBe(true);
  });

  it('with inotify and polling together, one write reloads once', async () => {
    const f = join(dir, 'both.yaml');
    writeFileSync(f, 'a: 1\n');
    const calls = watcher([f], 100, true);
    await sleep(250);
    writeFileSync(f, 'a: 2\n');
    expect(await waitFor(() => calls.length > 0, 3000)).toBe(true);
    await sleep(500); // several polls later
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatch(/^file changed: both\.yaml$/);
  });
});
