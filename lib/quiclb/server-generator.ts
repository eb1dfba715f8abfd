/**
 * Server-side connection-ID generator for Node QUIC backends, reading the same standalone YAML as the load
 * balancer (plus its rotation state file): it finds its server by `id`, mints CIDs with the `active` config
 * through CidEncoder, and follows file changes. Without a config (no file yet, server not listed, every nonce
 * used) it mints 0b111 CIDs with a self-encoded length (draft-21 §3.2).
 *
 *   const gen = ServerCidGenerator.fromFile('/etc/quiclb/standalone.yaml', 'server1');
 *   const cid = gen.next();
 */
import { EventEmitter } from 'node:events';
import { basename, resolve } from 'node:path';
import { loadStandaloneConfig } from '../config/standalone.js';
import { KeyFileError } from '../config/keys.js';
import { activeConfig, type LiveConfig } from '../config/snapshot.js';
import { FileWatcher } from '../config/watch.js';
import { toHex } from '../hex.js';
import { cidLength, ConfigError, MAX_CID_LEN, type QuicLbConfig } from './config.js';
import { CidEncoder, mintUnroutableCid, NonceExhaustedError, type RandomSource } from './encoder.js';

export interface ServerCidGeneratorOptions {
  /** Follow changes of the config file, key files and rotation state file (default true). */
  watch?: boolean;
  /** Length of 0b111 CIDs when there is no config (default: the CID length of the live configs, at least 8). */
  unroutableLength?: number;
  /** Random source (tests). */
  random?: RandomSource;
}

export interface GeneratorInfo {
  /** The active config id used by next(), or null (0b111 CIDs). */
  activeConfigId: number | null;
  serverId: string | null;
  cidLength: number;
  /** Why there is no active config, when there is none. */
  reason: string | null;
}

function sameConfig(a: QuicLbConfig, b: QuicLbConfig): boolean {
  return (
    a.configId === b.configId &&
    a.serverIdLength === b.serverIdLength &&
    a.nonceLength === b.nonceLength &&
    a.extraLength === b.extraLength &&
    a.lengthSelfEncoded === b.lengthSelfEncoded &&
    (a.key === null ? b.key === null : b.key !== null && Buffer.compare(a.key, b.key) === 0)
  );
}

export class ServerCidGenerator extends EventEmitter<{ change: [GeneratorInfo]; error: [Error] }> {
  private encoder: CidEncoder | null = null;
  private live: LiveConfig[] = [];
  private sid: Buffer | null = null;
  private reason: string | null = 'not loaded';
  private watcher: FileWatcher | null = null;
  private exhausted = false;
  /** The last problem reading the file (kept while the last good config stays in force). */
  lastError: Error | null = null;

  private constructor(
    readonly path: string,
    readonly serverName: string,
    private readonly options: ServerCidGeneratorOptions,
  ) {
    super();
  }

  /**
   * Opens the config. A missing file is not an error (0b111 CIDs until it appears); an invalid file throws
   * ConfigError naming the field.
   */
  static fromFile(path: string, serverName: string, options: ServerCidGeneratorOptions = {}): ServerCidGenerator {
    const g = new ServerCidGenerator(resolve(path), serverName, options);
    g.load(true);
    if (options.watch !== false) {
      g.watcher = new FileWatcher(() => g.reload());
      g.watcher.watchFiles(g.watched());
    }
    return g;
  }

  private watched(): string[] {
    return [this.path, `${this.path}.state.json`];
  }

  /** Re-reads the files; returns false (keeping the last good config, emitting 'error') when they are invalid. */
  reload(): boolean {
    return this.load(false);
  }

  private load(initial: boolean): boolean {
    const before = this.info();
    let live: LiveConfig[] = [];
    let sid: Buffer | null = null;
    let reason: string | null = null;
    try {
      const loaded = loadStandaloneConfig(this.path);
      this.watcher?.watchFiles([...new Set([...loaded.config.watchedFiles, ...this.watched()])]);
      live = [...loaded.liveConfigs];
      const me = loaded.config.servers.find((s) => s.name === this.serverName);
      if (me === undefined) reason = `server ${JSON.stringify(this.serverName)} is not in ${this.path}`;
      else sid = Buffer.from(me.serverId);
    } catch (e) {
      const missing = e instanceof ConfigError && e.field === basename(this.path) && /ENOENT/.test(e.message);
      if (!missing) {
        const err = e as Error;
        if (initial) throw err;
        if (e instanceof KeyFileError) this.watcher?.watchFiles([...new Set([...this.watched(), e.file])]);
        this.lastError = err;
        if (this.listenerCount('error') > 0) this.emit('error', err);
        return false;
      }
      reason = `${this.path} does not exist`;
    }
    this.lastError = null;
    this.live = live;
    this.sid = sid;
    const active = activeConfig({ configs: live });
    if (sid === null || active === undefined) {
      this.encoder = null;
      this.reason = reason ?? 'no active config';
    } else if (this.encoder === null || !sameConfig(this.encoder.config, active.config) || Buffer.compare(this.encoder.serverId, sid) !== 0) {
      // A new config (or key) starts a new nonce space; the same config keeps its counter (no nonce reuse).
      this.encoder = new CidEncoder(active.config, sid, this.options.random);
      this.exhausted = false;
      this.reason = null;
    }
    const after = this.info();
    if (JSON.stringify(before) !== JSON.stringify(after)) this.emit('change', after);
    return true;
  }

  /** A new connection ID: QUIC-LB with the active config, or 0b111 when there is none. */
  next(): Buffer {
    const enc = this.encoder;
    if (enc !== null && !this.exhausted) {
      try {
        return enc.next();
      } catch (e) {
        if (!(e instanceof NonceExhaustedError)) throw e;
        // Every nonce was used under this key: 0b111 until a new config arrives (§9.6).
        this.exhausted = true;
        this.reason = e.message;
        this.emit('change', this.info());
      }
    }
    return mintUnroutableCid(this.unroutableLength(), this.options.random);
  }

  private unroutableLength(): number {
    if (this.options.unroutableLength !== undefined) return this.options.unroutableLength;
    const lengths = this.live.map((l) => cidLength(l.config));
    return Math.min(MAX_CID_LEN, Math.max(8, ...lengths));
  }

  /** Length of the CIDs next() returns now. */
  get cidLength(): number {
    return this.encoder !== null && !this.exhausted ? cidLength(this.encoder.config) : this.unroutableLength();
  }

  get activeConfigId(): number | null {
    return this.encoder !== null && !this.exhausted ? this.encoder.config.configId : null;
  }

  get serverId(): Buffer | null {
    return this.sid === null ? null : Buffer.from(this.sid);
  }

  /** The live configs the files describe (e.g. for per-codepoint stateless-reset keys). */
  liveConfigs(): readonly LiveConfig[] {
    return this.live;
  }

  info(): GeneratorInfo {
    return {
      activeConfigId: this.activeConfigId,
      serverId: this.sid === null ? null : toHex(this.sid),
      cidLength: this.cidLength,
      reason: this.activeConfigId === null ? this.reason : null,
    };
  }

  close(): void {
    this.watcher?.close();
    this.watcher = null;
  }
}
