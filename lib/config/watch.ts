/**
 * Watches config files through their directories (editors' rename-on-save and Kubernetes' `..data` symlink
 * swaps are seen), debouncing bursts of events into one callback. Optionally reloads on SIGHUP.
 *
 * inotify does not see writes made by another host to shared storage (NFS, CephFS: a rotation state file
 * that several instances follow), so the files' stat() is also checked every `pollMs`; asynchronously,
 * because a hung network file system must not stall the process (in single-process mode, the packet path).
 */
import { watch, type FSWatcher } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';

export type WatchWarning = (message: string, fields: Record<string, unknown>) => void;

/** How often the files are stat()ed besides inotify (ms). */
export const DEFAULT_POLL_MS = 2000;

async function signature(file: string): Promise<string> {
  try {
    const s = await stat(file);
    return `${s.ino}/${s.size}/${s.mtimeMs}/${s.ctimeMs}`;
  } catch (e) {
    return `missing:${(e as NodeJS.ErrnoException).code ?? 'error'}`;
  }
}

export class FileWatcher {
  private watchers: FSWatcher[] = [];
  private timer: NodeJS.Timeout | null = null;
  private files: string[] = [];
  private onSighup: (() => void) | null = null;
  private pollTimer: NodeJS.Timeout | null = null;
  private polling = false;
  /** An event (inotify or SIGHUP) triggered a reload since the last poll: that poll only records signatures. */
  private triggeredSincePoll = false;
  /** stat() signature of each watched file at the last poll (or when watching started). */
  private signatures = new Map<string, string>();
  /** Bumped whenever the file list changes, so a poll that started before does not compare stale lists. */
  private generation = 0;

  constructor(
    private readonly onChange: (why: string) => void,
    private readonly warn: WatchWarning = () => {},
    private readonly debounceMs = 150,
    private readonly pollMs = DEFAULT_POLL_MS,
    /** false: stat() polling only (tests, or file systems where inotify misbehaves). */
    private readonly inotify = true,
  ) {}

  /** (Re)starts watching these files' directories; a no-op when the list is unchanged. */
  watchFiles(files: readonly string[]): void {
    const same = files.length === this.files.length && files.every((f, i) => f === this.files[i]);
    if (same && (this.watchers.length > 0 || this.pollTimer !== null)) return;
    this.closeWatchers();
    this.files = [...files];
    this.startPolling();
    const byDir = new Map<string, Set<string>>();
    for (const f of files) {
      const d = dirname(f);
      if (!byDir.has(d)) byDir.set(d, new Set());
      byDir.get(d)!.add(basename(f));
    }
    for (const [dir, names] of byDir) {
      if (!this.inotify) break;
      try {
        const w = watch(dir, { persistent: false }, (_event, filename) => {
          const name = filename === null ? null : filename.toString();
          // null: the platform did not say which file; '..data' etc.: a Kubernetes volume swapped its symlink.
          if (name === null || names.has(name) || name.startsWith('..')) this.trigger(`file changed: ${name ?? dir}`);
        });
        w.on('error', (e) => this.warn('config watch error', { dir, err: e.message }));
        this.watchers.push(w);
      } catch (e) {
        this.warn('cannot watch config directory; reload with SIGHUP', { dir, err: (e as Error).message });
      }
    }
  }

  private startPolling(): void {
    const gen = ++this.generation;
    this.signatures = new Map();
    if (this.pollMs <= 0 || this.files.length === 0) return;
    const files = [...this.files];
    void Promise.all(files.map(async (f) => [f, await signature(f)] as const)).then((sigs) => {
      if (gen !== this.generation) return;
      this.signatures = new Map(sigs);
      this.pollTimer = setInterval(() => void this.poll(gen, files), this.pollMs);
      this.pollTimer.unref();
    });
  }

  private async poll(gen: number, files: string[]): Promise<void> {
    if (this.polling) return; // the previous poll still waits for the file system
    this.polling = true;
    const seen = this.triggeredSincePoll;
    this.triggeredSincePoll = false;
    try {
      for (const f of files) {
        const sig = await signature(f);
        if (gen !== this.generation) return;
        const before = this.signatures.get(f);
        this.signatures.set(f, sig);
        if (!seen && before !== undefined && before !== sig) this.trigger(`file changed (polled): ${basename(f)}`, true);
      }
    } finally {
      this.polling = false;
    }
  }

  /** Also reload on SIGHUP. */
  handleSighup(): void {
    if (this.onSighup) return;
    this.onSighup = () => this.trigger('SIGHUP');
    process.on('SIGHUP', this.onSighup);
  }

  trigger(why: string, polled = false): void {
    if (!polled) this.triggeredSincePoll = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.onChange(why);
    }, this.debounceMs);
    this.timer.unref();
  }

  private closeWatchers(): void {
    for (const w of this.watchers) w.close();
    this.watchers = [];
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = null;
    this.generation++;
  }

  close(): void {
    this.closeWatchers();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.onSighup) process.off('SIGHUP', this.onSighup);
    this.onSighup = null;
  }
}
