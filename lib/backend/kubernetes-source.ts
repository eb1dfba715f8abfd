/**
 * The generator's source in Kubernetes: the two files the operator delivers to a backend pod.
 * - `configs.json`: the Secret `<name>-quiclb-configs` mounted as a volume (the `quiclb-rotation-state/1` format of
 *   lib/config/state-file.ts: live configs with keys and states);
 * - `server-id`: the pod's `quiclb.io/server-id` annotation through a downward-API volume (server-id-file.ts).
 * The kubelet updates both in place by swapping the `..data` symlink of the volume directory, so a read sees the old
 * or the new content, never a mix. Each file keeps its last good content when it turns invalid (the other is still
 * followed); a missing file or an empty server ID is "not yet", not an error.
 */
import { join } from 'node:path';
import { decodeUtf8, MAX_STATE_BYTES, readErrorText, readRegularFile } from '../config/safe-read.js';
import { parseRotationState, type RotationState } from '../config/state-file.js';
import { ConfigError } from '../quiclb/config.js';
import { MAX_SERVER_ID_FILE_BYTES, parseServerIdText, SERVER_ID_ANNOTATION } from './server-id-file.js';
import type { GeneratorSource, SourceReading } from './source.js';

/** Default names inside the volume(s): the Secret's data key and the downward-API item path. */
export const CONFIGS_FILE_NAME = 'configs.json';
export const SERVER_ID_FILE_NAME = 'server-id';

/**
 * Where the files are: `dir` for one projected volume holding both under their default names, or each file's path
 * (a Secret volume and a downward-API volume mounted apart).
 */
export type KubernetesFiles = { readonly dir: string } | { readonly configsFile: string; readonly serverIdFile: string };

export function resolveKubernetesFiles(files: KubernetesFiles): { configsFile: string; serverIdFile: string } {
  if ('dir' in files) return { configsFile: join(files.dir, CONFIGS_FILE_NAME), serverIdFile: join(files.dir, SERVER_ID_FILE_NAME) };
  return { configsFile: files.configsFile, serverIdFile: files.serverIdFile };
}

/** A delivered file that is present but cannot be used; `file` is its path. The message quotes none of its content. */
export class BackendFileError extends Error {
  constructor(
    readonly file: string,
    problem: string,
  ) {
    super(`${file}: ${problem}`);
  }
}

/** What is known of one file: never read successfully (absent), missing on disk, or its last good value. */
type Known<T> = { readonly kind: 'unknown' } | { readonly kind: 'missing' } | { readonly kind: 'ok'; readonly value: T };

/** Reads a delivered file: its text, or null when it does not exist. Throws BackendFileError for anything unsafe. */
function readText(file: string, maxBytes: number): string | null {
  let bytes: Buffer;
  try {
    bytes = readRegularFile(file, maxBytes);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new BackendFileError(file, `cannot read: ${readErrorText(e)}`);
  }
  try {
    return decodeUtf8(bytes);
  } catch (e) {
    throw new BackendFileError(file, readErrorText(e));
  }
}

export class KubernetesSource implements GeneratorSource {
  readonly configsFile: string;
  readonly serverIdFile: string;
  private configs: Known<RotationState> = { kind: 'unknown' };
  private serverId: Known<Buffer | null> = { kind: 'unknown' };

  constructor(files: KubernetesFiles) {
    const f = resolveKubernetesFiles(files);
    this.configsFile = f.configsFile;
    this.serverIdFile = f.serverIdFile;
  }

  watchedFiles(): readonly string[] {
    return [this.configsFile, this.serverIdFile];
  }

  private readConfigs(): Known<RotationState> {
    const text = readText(this.configsFile, MAX_STATE_BYTES);
    if (text === null) return { kind: 'missing' };
    try {
      return { kind: 'ok', value: parseRotationState(text) };
    } catch (e) {
      // parseRotationState's errors name fields (state_file.configs[0].key ...), never key bytes.
      if (e instanceof ConfigError) throw new BackendFileError(this.configsFile, e.message);
      throw e;
    }
  }

  private readServerId(): Known<Buffer | null> {
    const text = readText(this.serverIdFile, MAX_SERVER_ID_FILE_BYTES);
    if (text === null) return { kind: 'missing' };
    try {
      return { kind: 'ok', value: parseServerIdText(text) };
    } catch (e) {
      throw new BackendFileError(this.serverIdFile, (e as Error).message);
    }
  }

  read(): SourceReading {
    const problems: Error[] = [];
    try {
      this.configs = this.readConfigs();
    } catch (e) {
      problems.push(e as Error);
    }
    try {
      this.serverId = this.readServerId();
    } catch (e) {
      problems.push(e as Error);
    }
    const live = this.configs.kind === 'ok' ? this.configs.value.configs.map((c) => ({ config: c.config, state: c.state })) : [];
    const serverId = this.serverId.kind === 'ok' ? this.serverId.value : null;
    return { live, serverId, reason: this.reason(), problems };
  }

  /** Why the files do not give a server ID and configs yet (the generator adds config-level reasons). */
  private reason(): string | null {
    const c = this.configs;
    const s = this.serverId;
    if (c.kind === 'unknown') return `${this.configsFile} is invalid (no good version read yet)`;
    if (c.kind === 'missing') return `${this.configsFile} does not exist (mount the Secret <name>-quiclb-configs)`;
    if (s.kind === 'unknown') return `${this.serverIdFile} is invalid (no good version read yet)`;
    if (s.kind === 'missing') return `${this.serverIdFile} does not exist (mount the pod annotation ${SERVER_ID_ANNOTATION} with the downward API)`;
    if (s.value === null) return `${this.serverIdFile} is empty: the operator has not annotated this pod with ${SERVER_ID_ANNOTATION} yet`;
    return null;
  }
}
