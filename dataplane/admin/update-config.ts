/**
 * UpdateConfig: replace the config file with new YAML. Runs inside the runner's exclusive section, so it never
 * interleaves with a reload (a file change, SIGHUP or a rotation step): the version check, the validation, the
 * write and the apply see one config in force. The text is validated exactly as a reload of the file would
 * validate it; only then is the file replaced (atomically) and the same candidate applied through the reload path.
 * If applying fails (e.g. a new listen address is in use), the previous file content is written back, so the file
 * and the config in force agree again. A concurrent edit of the file by someone else is not merged: whichever
 * write lands last is what the file watcher reloads.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { status } from '@grpc/grpc-js';
import { writeFileAtomic } from '../../lib/atomic-write.js';
import { describeConfig, type LoadedStandalone } from '../../lib/config/standalone.js';
import { ConfigError } from '../../lib/quiclb/config.js';
import { MAX_CONFIG_YAML_BYTES } from '../../proto/admin-limits.js';
import type { UpdateConfigRequest } from '../../proto/gen/quiclb/v1/admin.js';
import { ApplyError, type StandaloneControl } from '../standalone.js';
import { AdminCallError } from './errors.js';

export interface UpdateOutcome {
  readonly version: number;
  readonly changed: boolean;
}

/** SHA-256 of the YAML (for the audit line: which document, never its content). */
export function yamlDigest(text: string): string {
  return `sha256:${createHash('sha256').update(text, 'utf8').digest('hex')}`;
}

/** What the config in force means, key-free: to tell whether an update changed anything beyond the snapshot. */
function meaning(l: LoadedStandalone): string {
  return JSON.stringify({ summary: describeConfig(l), admin: l.config.admin, follow: l.config.rotation.follow });
}

export function updateConfig(control: StandaloneControl, req: UpdateConfigRequest, caller: string): Promise<UpdateOutcome> {
  const size = Buffer.byteLength(req.configYaml, 'utf8');
  if (size > MAX_CONFIG_YAML_BYTES) {
    return Promise.reject(new AdminCallError(status.INVALID_ARGUMENT, `config_yaml: at most ${MAX_CONFIG_YAML_BYTES} bytes, got ${size}`));
  }
  return control.exclusive(async () => {
    const before = control.version();
    if (req.expectedVersion !== 0n && req.expectedVersion !== BigInt(before)) {
      throw new AdminCallError(status.ABORTED, `the version in force is ${before}, not the expected ${req.expectedVersion}: read the config again (GetConfig) and retry`);
    }
    let candidate;
    try {
      candidate = control.validate(req.configYaml);
    } catch (e) {
      if (e instanceof ConfigError) throw new AdminCallError(status.INVALID_ARGUMENT, e.message);
      throw e;
    }
    // The rotation state file is written by this process: a path from the network would let a writer overwrite any
    // file the process may write. It changes only by an edit of the config file.
    const stateFile = control.loaded().config.stateFile;
    if (candidate.loaded.config.stateFile !== stateFile) {
      throw new AdminCallError(
        status.INVALID_ARGUMENT,
        `loadbalancer.state_file: cannot be changed through the admin API (this process writes that file); it must stay ${stateFile === null ? 'unset' : JSON.stringify(stateFile)}: edit the config file to move it`,
      );
    }
    if (req.dryRun) return { version: before, changed: false };
    const meaningBefore = meaning(control.loaded());
    const path = control.configPath;
    let previous: string | null = null;
    try {
      previous = readFileSync(path, 'utf8');
    } catch {
      // the file is gone: nothing to restore if applying fails
    }
    if (previous !== req.configYaml) {
      try {
        writeFileAtomic(path, req.configYaml);
      } catch (e) {
        const why = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
        throw new AdminCallError(status.FAILED_PRECONDITION, `cannot write the config file ${path}: ${why}; nothing changed`);
      }
    }
    try {
      await control.apply(candidate, `admin UpdateConfig by ${caller}`);
    } catch (e) {
      if (!(e instanceof ApplyError)) throw e;
      if (previous !== null && previous !== req.configYaml) writeFileAtomic(path, previous);
      throw new AdminCallError(status.FAILED_PRECONDITION, `the config is valid but could not be applied (${e.message}); the config in force and the file are unchanged`);
    }
    const after = control.version();
    return { version: after, changed: after !== before || meaning(control.loaded()) !== meaningBefore };
  });
}
