/**
 * Watches config files through their directories (editors' rename-on-save and Kubernetes' `..data` symlink
 * swaps are seen), debouncing bursts of events into one callback. Optionally reloads on SIGHUP.
 */
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';

export type WatchWarning = (message: string, fields: Record<string, unknown>) => void;

export class FileWatcher {
  private watchers: FSWatcher[] = [];
  private timer: NodeJS.Timeout | null = null;
  private files: string[] = [];
  private onSighup: (() => void) | null = null;

  constructor(
    private readonly onChange: (why: string) => void,
    private readonly warn: WatchWarning = () => {},
    private readonly debounceMs = 150,
  ) {}

  /** (Re)starts watching these files' directories; a no-op when the list is unchanged. */
  watchFiles(files: readonly string[]): void {
    const same = files.length === this.files.length && files.every((f, i) => f === this.files[i]);
    if (same && this.watchers.length > 0) return;
    this.closeWatchers();
    this.files = [...files];
    const byDir = new Map<string, Set<string>>();
    for (const f of files) {
      const d = dirname(f);
      if (!byDir.has(d)) byDir.set(d, new Set());
      byDir.get(d)!.add(basename(f));
    }
    for (const [dir, names] of byDir) {
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

  /** Also reload on SIGHUP. */
  handleSighup(): void {
    if (this.onSighup) return;
    this.onSighup = () => this.trigger('SIGHUP');
    process.on('SIGHUP', this.onSighup);
  }

  trigger(why: string): void {
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
  }

  close(): void {
    this.closeWatchers();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.onSighup) process.off('SIGHUP', this.onSighup);
    this.onSighup = null;
  }
}
