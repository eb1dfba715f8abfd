/**
 * Server-side connection-ID generator for Node QUIC backends (the backend SDK): it learns this server's ID and the
 * live QUIC-LB configs from files, mints CIDs with the `active` config through CidEncoder, and follows the files as
 * they change (key rotation: accepting -> active; a new server ID). Without a usable config (files not there yet,
 * no server ID, every nonce used) it mints 0b111 CIDs with a self-encoded length (draft-21 §3.2), which the data plane
 * routes through its flow tables.
 *
 *   // Kubernetes: the configs Secret and the downward-API server ID (docs/backends.md)
 *   const gen = ServerCidGenerator.fromKubernetes({ dir: '/etc/quiclb' });
 *   // Standalone: the load balancer's YAML, this server by name (docs/standalone-config.md)
 *   const gen = ServerCidGenerator.fromFile('/etc/quiclb/standalone.yaml', 'server1');
 *   const cid = gen.next();
 */
import { EventEmitter } from 'node:events';
import { resolve } from 'node:path';
import { activeConfig, type LiveConfig } from '../config/snapshot.js';
import { FileWatcher } from '../config/watch.js';
import { toHex } from '../hex.js';
import { cidLength, MAX_CID_LEN, type QuicLbConfig } from '../quiclb/config.js';
import { CidEncoder, mintUnroutableCid, NonceExhaustedError, type RandomSource } from '../quiclb/encoder.js';
import { KubernetesSource, type KubernetesFiles } from './kubernetes-source.js';
import type { GeneratorSource, SourceReading } from './source.js';
import { StandaloneSource } from './standalone-source.js';

export interface ServerCidGeneratorOptions {
  /** Follow changes of the files (default true). */
  watch?: boolean;
  /** Length of 0b111 CIDs when there is no config (default: the CID length of the live configs, at least 8). */
  unroutableLength?: number;
  /** Random source (tests). */
  random?: RandomSource;
  /** How often the files are also stat()ed besides inotify, ms (default 2000; lib/config/watch.ts). */
  pollMs?: number;
}

export interface GeneratorInfo {
  /** The active config id used by next(), or null (0b111 CIDs). */
  activeConfigId: number | null;
  serverId: string | null;
  cidLength: number;
  /** Why there is no active config, when there is none. */
  reason: string | null;
}

/** Encoders kept for a return to an earlier (config, server ID): live configs (at most 7) times a few server IDs. */
const MAX_ENCODERS = 16;

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
  /**
   * The encoders of live configs, per server ID: a config's nonce counter survives a pause (a file briefly missing or
   * invalid, a server ID changed and changed back), so no nonce repeats under a key (§9.6). At most MAX_ENCODERS.
   */
  private encoders: CidEncoder[] = [];
  private live: readonly LiveConfig[] = [];
  private sid: Buffer | null = null;
  private reason: string | null = 'not loaded';
  private watcher: FileWatcher | null = null;
  /** The last problem reading the files (the last good content stays in force), or null. */
  lastError: Error | null = null;

  private constructor(
    private readonly source: GeneratorSource,
    private readonly options: ServerCidGeneratorOptions,
  ) {
    super();
  }

  /**
   * Standalone: reads the load balancer's YAML (and its rotation state file and key files) and finds this server by
   * `name`. A missing file is not an error (0b111 CIDs until it appears); an invalid file throws ConfigError naming
   * the field.
   */
  static fromFile(path: string, serverName: string, options: ServerCidGeneratorOptions = {}): ServerCidGenerator {
    return ServerCidGenerator.start(new StandaloneSource(resolve(path), serverName), options);
  }

  /**
   * Kubernetes: reads the files the operator delivers: `configs.json` of the Secret `<name>-quiclb-configs` and the
   * `server-id` downward-API file of the pod annotation `quiclb.io/server-id`; `{ dir }` when one (projected)
   * volume holds both under these names, else `{ configsFile, serverIdFile }`. Never throws for the files' content:
   * it mints 0b111 CIDs until both are present and valid, keeps the last good content of a file that turns invalid
   * (setting lastError and emitting 'error'), and follows the kubelet's in-place updates.
   */
  static fromKubernetes(files: KubernetesFiles, options: ServerCidGeneratorOptions = {}): ServerCidGenerator {
    const resolved = 'dir' in files ? { dir: resolve(files.dir) } : { configsFile: resolve(files.configsFile), serverIdFile: resolve(files.serverIdFile) };
    return ServerCidGenerator.start(new KubernetesSource(resolved), options);
  }

  private static start(source: GeneratorSource, options: ServerCidGeneratorOptions): ServerCidGenerator {
    const g = new ServerCidGenerator(source, options);
    // Watch before the first read, so a change made while it reads is not missed.
    if (options.watch !== false) {
      g.watcher = new FileWatcher(() => g.reload(), undefined, undefined, options.pollMs);
      g.watcher.watchFiles(source.watchedFiles());
    }
    try {
      g.load(true);
    } catch (e) {
      g.close();
      throw e;
    }
    return g;
  }

  /** Re-reads the files; returns false (keeping the last good content, emitting 'error') when one is invalid. */
  reload(): boolean {
    return this.load(false);
  }

  private report(err: Error): void {
    this.lastError = err;
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }

  private load(initial: boolean): boolean {
    const before = this.info();
    let reading: SourceReading;
    try {
      reading = this.source.read(initial);
    } catch (e) {
      if (initial) throw e;
      this.watcher?.watchFiles(this.source.watchedFiles());
      this.report(e as Error);
      return false;
    }
    this.watcher?.watchFiles(this.source.watchedFiles());
    this.apply(reading);
    if (reading.problems.length === 0) this.lastError = null;
    for (const p of reading.problems) this.report(p);
    const after = this.info();
    if (JSON.stringify(before) !== JSON.stringify(after)) this.emit('change', after);
    return reading.problems.length === 0;
  }

  private apply(reading: SourceReading): void {
    this.live = reading.live;
    const sid = reading.serverId;
    this.sid = sid;
    const active = activeConfig({ configs: reading.live });
    let reason = reading.reason;
    if (reason === null && active === undefined) reason = 'no active config';
    if (reason === null && sid !== null && active !== undefined && sid.length !== active.config.serverIdLength) {
      reason = `the server ID is ${sid.length} octets but config ${active.config.configId} has server_id_length ${active.config.serverIdLength}`;
    }
    // Forget the encoders of retired configs (not while no configs are known: the file may be back in a moment).
    if (reading.live.length > 0) this.encoders = this.encoders.filter((e) => reading.live.some((l) => sameConfig(l.config, e.config)));
    if (reason !== null || sid === null || active === undefined) {
      this.encoder = null;
      this.reason = reason ?? 'no server ID';
      return;
    }
    // A new config (or key, or server ID) starts a new nonce counter; one seen before continues its own.
    let enc = this.encoders.find((e) => sameConfig(e.config, active.config) && Buffer.compare(e.serverId, sid) === 0);
    if (enc === undefined) {
      enc = new CidEncoder(active.config, sid, this.options.random);
      this.encoders = [...this.encoders.slice(-(MAX_ENCODERS - 1)), enc];
    }
    this.encoder = enc;
    this.reason = null;
  }

  /** The encoder next() mints with, or null (0b111). */
  private usable(): CidEncoder | null {
    return this.encoder !== null && !this.encoder.exhausted ? this.encoder : null;
  }

  /** A new connection ID: QUIC-LB with the active config, or 0b111 when there is none. */
  next(): Buffer {
    const enc = this.usable();
    if (enc === null) return mintUnroutableCid(this.unroutableLength(), this.options.random);
    const cid = enc.next();
    // That was the last nonce under this key: 0b111 from now on until a new config arrives (§9.6).
    if (enc.exhausted) this.emit('change', this.info());
    return cid;
  }

  private unroutableLength(): number {
    if (this.options.unroutableLength !== undefined) return this.options.unroutableLength;
    const lengths = this.live.map((l) => cidLength(l.config));
    return Math.min(MAX_CID_LEN, Math.max(8, ...lengths));
  }

  /** Length of the CIDs next() returns now. */
  get cidLength(): number {
    const enc = this.usable();
    return enc !== null ? cidLength(enc.config) : this.unroutableLength();
  }

  get activeConfigId(): number | null {
    return this.usable()?.config.configId ?? null;
  }

  get serverId(): Buffer | null {
    return this.sid === null ? null : Buffer.from(this.sid);
  }

  /** The live configs the files describe (e.g. to recognise this server's CIDs of a draining config). */
  liveConfigs(): readonly LiveConfig[] {
    return this.live;
  }

  /** Why next() mints 0b111 CIDs, or null when it mints QUIC-LB ones. */
  private whyUnroutable(): string | null {
    if (this.usable() !== null) return null;
    // An encoder that is set but unusable has used every nonce under its key.
    return this.encoder !== null ? new NonceExhaustedError(this.encoder.config.configId).message : this.reason;
  }

  info(): GeneratorInfo {
    return {
      activeConfigId: this.activeConfigId,
      serverId: this.sid === null ? null : toHex(this.sid),
      cidLength: this.cidLength,
      reason: this.whyUnroutable(),
    };
  }

  close(): void {
    this.watcher?.close();
    this.watcher = null;
  }
}
