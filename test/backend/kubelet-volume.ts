/**
 * A volume directory laid out and updated exactly as the kubelet's AtomicWriter does for Secret, ConfigMap,
 * downward-API and projected volumes (pkg/volume/util/atomic_writer.go):
 *
 *   dir/..2026_12_04_19_13_00.123456789/   the payload (a fresh timestamped directory per update)
 *   dir/..data -> ..2026_12_04_19_13_00.123456789
 *   dir/configs.json -> ..data/configs.json   (one user-visible symlink per file)
 *
 * An update writes a new timestamped directory, points `..data_tmp` at it, renames `..data_tmp` over `..data` (the
 * one atomic step), adds symlinks for new files, removes those of files gone, and deletes the old directory.
 */
import { mkdirSync, readlinkSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync, lstatSync } from 'node:fs';
import { join } from 'node:path';

let seq = 0;

function tsDirName(): string {
  const d = new Date();
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  const stamp = `${d.getUTCFullYear()}_${p(d.getUTCMonth() + 1)}_${p(d.getUTCDate())}_${p(d.getUTCHours())}_${p(d.getUTCMinutes())}_${p(d.getUTCSeconds())}`;
  return `..${stamp}.${p(process.pid, 6)}${p(++seq, 6)}`;
}

function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

export class KubeletVolume {
  private names = new Set<string>();

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  /** Replaces the volume's whole payload atomically (what the kubelet does on every Secret or annotation change). */
  write(files: Readonly<Record<string, string | Buffer>>): void {
    const ts = tsDirName();
    const tsPath = join(this.dir, ts);
    mkdirSync(tsPath, { mode: 0o755 });
    for (const [name, content] of Object.entries(files)) writeFileSync(join(tsPath, name), content, { mode: 0o644 });
    const dataLink = join(this.dir, '..data');
    const old = exists(dataLink) ? readlinkSync(dataLink) : null;
    const tmpLink = join(this.dir, '..data_tmp');
    symlinkSync(ts, tmpLink);
    renameSync(tmpLink, dataLink);
    for (const name of Object.keys(files)) {
      const visible = join(this.dir, name);
      if (!exists(visible)) symlinkSync(join('..data', name), visible);
    }
    for (const name of this.names) {
      if (!(name in files)) unlinkSync(join(this.dir, name));
    }
    this.names = new Set(Object.keys(files));
    if (old !== null) rmSync(join(this.dir, old), { recursive: true, force: true });
  }

  /** The payload directory `..data` points at now (to put an unusual file in place of one, as a test). */
  payloadDir(): string {
    return join(this.dir, readlinkSync(join(this.dir, '..data')));
  }
}
