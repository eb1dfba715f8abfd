/** lib/atomic-write.ts: whole-file replacement with a chosen or kept mode, links followed, nothing left behind. */
import { afterAll, describe, expect, it } from '@jest/globals';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../lib/atomic-write.js';

const dir = mkdtempSync(join(tmpdir(), 'quiclb-atomic-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const mode = (p: string) => statSync(p).mode & 0o7777;

describe('writeFileAtomic', () => {
  it('creates a new file with mode 0600 by default, or the mode asked for', () => {
    writeFileAtomic(join(dir, 'new'), 'hello');
    expect(readFileSync(join(dir, 'new'), 'utf8')).toBe('hello');
    expect(mode(join(dir, 'new'))).toBe(0o600);
    writeFileAtomic(join(dir, 'bytes'), Buffer.from([0, 1, 2]), { mode: 0o640 });
    expect([...readFileSync(join(dir, 'bytes'))]).toEqual([0, 1, 2]);
    expect(mode(join(dir, 'bytes'))).toBe(0o640);
  });

  it('keeps the mode of the file it replaces (not reduced by the umask), unless a mode is given', () => {
    const p = join(dir, 'kept');
    writeFileSync(p, 'old');
    chmodSync(p, 0o666);
    writeFileAtomic(p, 'new');
    expect(readFileSync(p, 'utf8')).toBe('new');
    expect(mode(p)).toBe(0o666);
    writeFileAtomic(p, 'newer', { mode: 0o600 });
    expect(mode(p)).toBe(0o600);
  });

  it('follows a symbolic link: the target is replaced, the link stays', () => {
    const target = join(dir, 'target');
    writeFileSync(target, 'old', { mode: 0o644 });
    symlinkSync(target, join(dir, 'link'));
    writeFileAtomic(join(dir, 'link'), 'via link');
    expect(lstatSync(join(dir, 'link')).isSymbolicLink()).toBe(true);
    expect(readFileSync(target, 'utf8')).toBe('via link');
    expect(mode(target)).toBe(0o644);
  });

  it('a failed replacement throws and leaves no temporary file', () => {
    const sub = join(dir, 'sub');
    mkdirSync(join(sub, 'a-directory'), { recursive: true });
    expect(() => writeFileAtomic(join(sub, 'a-directory'), 'x')).toThrow();
    expect(readdirSync(sub)).toEqual(['a-directory']);
  });
});
