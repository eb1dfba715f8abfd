/**
 * The generator's source in standalone mode: the same YAML the load balancer reads (plus its rotation state file
 * and key files); this server is found by its `name` in `servers`. A missing YAML is not an error (0b111 CIDs until
 * it appears); an invalid one throws ConfigError naming the field, and the whole file keeps its last good content.
 */
import { basename } from 'node:path';
import { KeyFileError } from '../config/keys.js';
import { loadStandaloneConfig } from '../config/standalone.js';
import { ConfigError } from '../quiclb/config.js';
import type { GeneratorSource, SourceReading } from './source.js';

export class StandaloneSource implements GeneratorSource {
  private files: string[];

  constructor(
    readonly path: string,
    readonly serverName: string,
  ) {
    this.files = this.ownFiles();
  }

  private ownFiles(): string[] {
    return [this.path, `${this.path}.state.json`];
  }

  watchedFiles(): readonly string[] {
    return this.files;
  }

  read(): SourceReading {
    let loaded;
    try {
      loaded = loadStandaloneConfig(this.path);
    } catch (e) {
      const missing = e instanceof ConfigError && e.field === basename(this.path) && /ENOENT/.test(e.message);
      if (!missing) {
        // A key file that does not exist yet: watch it too, so its appearance is seen.
        if (e instanceof KeyFileError) this.files = [...new Set([...this.ownFiles(), e.file])];
        throw e;
      }
      this.files = this.ownFiles();
      return { live: [], serverId: null, reason: `${this.path} does not exist`, problems: [] };
    }
    this.files = [...new Set([...loaded.config.watchedFiles, ...this.ownFiles()])];
    const me = loaded.config.servers.find((s) => s.name === this.serverName);
    return {
      live: [...loaded.liveConfigs],
      serverId: me === undefined ? null : Buffer.from(me.serverId),
      reason: me === undefined ? `server ${JSON.stringify(this.serverName)} is not in ${this.path}` : null,
      problems: [],
    };
  }
}
