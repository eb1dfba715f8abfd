/**
 * A snapshot source made of standalone YAML files (docs/standalone-config.md), one load balancer per file, served
 * to every data plane: `quiclb config-server --load-balancer FILE ...`. Each file is reloaded when it (or a key or
 * state file it names) changes. Last-good semantics: a file that becomes invalid keeps its previous load balancer,
 * and a set the data planes would reject as a whole (two load balancers with one name or one listen address) keeps
 * the previous set. A reload that changes nothing publishes no new version.
 */
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import type { Logger } from 'pino';
import { loadStandaloneConfig, toSnapshot } from '../../lib/config/standalone.js';
import type { DataplaneSnapshot } from '../../lib/config/snapshot.js';
import { FileWatcher } from '../../lib/config/watch.js';
import { ConfigError } from '../../lib/quiclb/config.js';
import { snapshotFromWire, snapshotToWire } from '../../proto/convert.js';
import { Snapshot } from '../../proto/gen/quiclb/v1/distribution.js';
import { InMemorySnapshotSource, type DataPlaneKey, type SnapshotSource, type SourceSnapshot } from './source.js';

interface LoadedFile {
  readonly path: string;
  readonly snapshot: DataplaneSnapshot;
  readonly watchedFiles: readonly string[];
}

function loadFile(path: string): LoadedFile {
  const loaded = loadStandaloneConfig(path);
  return { path, snapshot: toSnapshot(loaded, 0), watchedFiles: loaded.config.watchedFiles };
}

/** Names the file in a ConfigError: `lb.yaml: servers[1].address: ...`. */
function inFile(path: string, e: unknown): never {
  if (e instanceof ConfigError) throw new ConfigError(`${path}: ${e.field}`, e.message.slice(e.field.length + 2), { cause: e });
  throw e;
}

/**
 * Checks the set as the data planes will (snapshotFromWire: unique names, no listen address twice) and returns a
 * digest of its wire form, so an unchanged set is recognised without comparing (or logging) its keys.
 */
function checkSet(snapshots: readonly DataplaneSnapshot[], files: readonly string[]): string {
  const wire = snapshotToWire(0, '', snapshots, new Date(0));
  try {
    snapshotFromWire(wire);
  } catch (e) {
    if (e instanceof ConfigError) {
      const m = /^load_balancers\[(\d+)\]\.?(.*)$/.exec(e.field);
      const field = m ? `${files[Number(m[1])]}: ${m[2] || '(load balancer)'}` : e.field;
      throw new ConfigError(field, e.message.slice(e.field.length + 2), { cause: e });
    }
    throw e;
  }
  return createHash('sha256').update(Snapshot.encode(wire).finish()).digest('hex');
}

export interface FileSourceOptions {
  readonly files: readonly string[];
  readonly logger: Logger;
  /** Watch the files (default true). */
  readonly watch?: boolean;
  /** FileWatcher debounce and stat() poll interval (tests shorten them). */
  readonly debounceMs?: number;
  readonly pollMs?: number;
  readonly clock?: () => number;
}

export class FileSnapshotSource implements SnapshotSource {
  private readonly memory: InMemorySnapshotSource;
  private readonly paths: string[];
  private loaded: LoadedFile[];
  private digest: string;
  private readonly watcher: FileWatcher | null;
  private readonly logger: Logger;

  /** Loads every file; throws ConfigError naming the file and field when one is invalid. */
  constructor(options: FileSourceOptions) {
    if (options.files.length === 0) throw new ConfigError('--load-balancer', 'at least one file is required');
    this.logger = options.logger;
    this.paths = options.files.map((f) => resolve(f));
    this.loaded = this.paths.map((p) => {
      try {
        return loadFile(p);
      } catch (e) {
        inFile(p, e);
      }
    });
    this.digest = checkSet(
      this.loaded.map((l) => l.snapshot),
      this.paths,
    );
    this.memory = new InMemorySnapshotSource(options.clock);
    this.publish();
    this.watcher =
      options.watch === false
        ? null
        : new FileWatcher(
            (why) => this.reload(why),
            (message, fields) => this.logger.warn(fields, message),
            options.debounceMs,
            options.pollMs,
          );
    this.watcher?.watchFiles(this.watchedFiles());
  }

  version(): number {
    return this.memory.version();
  }

  snapshotFor(dataPlane: DataPlaneKey): SourceSnapshot | null {
    return this.memory.snapshotFor(dataPlane);
  }

  subscribe(listener: (version: number) => void): () => void {
    return this.memory.subscribe(listener);
  }

  /** Re-reads every file; keeps the last good load balancer of a file that fails, and the last good set. */
  reload(why: string): void {
    const next = this.loaded.map((prev) => {
      try {
        return loadFile(prev.path);
      } catch (e) {
        const err = e instanceof ConfigError ? { field: e.field, err: e.message.slice(e.field.length + 2) } : { err: (e as Error).message };
        this.logger.warn({ file: prev.path, why, ...err }, 'invalid load balancer file: keeping its last good config');
        return prev;
      }
    });
    let digest: string;
    try {
      digest = checkSet(
        next.map((l) => l.snapshot),
        this.paths,
      );
    } catch (e) {
      this.logger.warn({ why, err: (e as Error).message }, 'load balancer files conflict: keeping the last good set');
      return;
    }
    this.loaded = next;
    this.watcher?.watchFiles(this.watchedFiles());
    if (digest === this.digest) {
      this.logger.debug({ why }, 'load balancer files reloaded: unchanged');
      return;
    }
    this.digest = digest;
    const version = this.publish();
    this.logger.info({ why, version, loadBalancers: next.map((l) => l.snapshot.name) }, 'load balancer files reloaded');
  }

  close(): void {
    this.watcher?.close();
  }

  private publish(): number {
    const snapshots = this.loaded.map((l) => l.snapshot);
    return this.memory.publish((version) => ({ all: snapshots.map((s) => ({ ...s, version })) }));
  }

  private watchedFiles(): string[] {
    return [...new Set(this.loaded.flatMap((l) => [l.path, ...l.watchedFiles]))];
  }
}
