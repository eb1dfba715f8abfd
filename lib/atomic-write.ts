/**
 * Replaces a file so that a reader or a crash sees either the old or the new content, never a mix: a temporary file
 * in the same directory, written and fsynced, renamed over the file, then the directory fsynced. A symbolic link is
 * followed: its target is replaced, the link stays.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fchmodSync, fsyncSync, openSync, realpathSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export interface AtomicWriteOptions {
  /** Mode of the new file (default: the mode of the file it replaces, 0600 when there is none). */
  readonly mode?: number;
}

function existing(path: string): { target: string; mode: number | null } {
  try {
    const target = realpathSync(path);
    return { target, mode: statSync(target).mode & 0o7777 };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { target: path, mode: null };
    throw e;
  }
}

/** Writes `data` to `path` atomically (see above); throws when the file could not be replaced. */
export function writeFileAtomic(path: string, data: string | Uint8Array, options: AtomicWriteOptions = {}): void {
  const { target, mode: oldMode } = existing(path);
  const mode = options.mode ?? oldMode ?? 0o600;
  const dir = dirname(target);
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const tmp = writeTempFile(target, bytes, mode);
  try {
    renameSync(tmp, target);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      // already renamed
    }
    throw e;
  }
  fsyncDir(dir); // the file is replaced now
}

/**
 * Writes `bytes` with `mode` to a new temporary file beside `path` (".name.pid.random.tmp"), fsynced: its path, for
 * the caller to rename or link into place (and remove when that fails). A failed write leaves nothing behind.
 */
export function writeTempFile(path: string, bytes: Uint8Array, mode: number): string {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fd = openSync(tmp, 'wx', mode & 0o777);
  try {
    try {
      for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off);
      fchmodSync(fd, mode); // openSync's mode is reduced by the umask
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      // never created
    }
    throw e;
  }
  return tmp;
}

/** Makes a rename or link in `dir` durable; a directory that cannot be fsynced (some file systems) is no failure. */
export function fsyncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // the rename or link stands; only its durability across a power loss is less certain
  }
}
