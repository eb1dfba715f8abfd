/**
 * Config rotation of standalone mode (docs/standalone-config.md "Rotation"; draft-21 §3.1, digest §11):
 *   1. a fresh random key under the next free config id, written to the state file as 'accepting'
 *      (the load balancer decodes it from then on);
 *   2. after `promote_after`: the new config 'active', the old one 'draining' (servers' generators switch);
 *   3. after `drain`: the old config is retired;
 *   4. the next rotation starts `interval` after the previous one.
 * Every step rewrites the state file (0600, atomic) and calls onChange() so the runner reloads. The phases are
 * recorded with timestamps in the file, so a restarted process resumes where it was.
 */
import { randomBytes } from 'node:crypto';
import { KEY_LEN, makeConfig, MAX_CONFIG_ID, type QuicLbConfig } from '../lib/quiclb/config.js';
import { keyFingerprint } from '../lib/config/key-fingerprint.js';
import { activeConfig } from '../lib/config/snapshot.js';
import type { LoadedStandalone, RotationSettings } from '../lib/config/standalone.js';
import { writeRotationState, type RotationConfigEntry, type RotationState } from '../lib/config/state-file.js';
import type { Logger } from './logging.js';

export interface RotatorOptions {
  logger: Logger;
  onChange: (why: string) => void;
  now?: () => number;
  /** Upper bound of one timer, so clock jumps are noticed (default 60 s). */
  maxSleepMs?: number;
}

export class Rotator {
  private timer: NodeJS.Timeout | null = null;
  private loaded: LoadedStandalone;
  private stopped = false;
  rotations = 0;
  private readonly now: () => number;

  constructor(
    loaded: LoadedStandalone,
    private readonly options: RotatorOptions,
  ) {
    this.loaded = loaded;
    this.now = options.now ?? Date.now;
  }

  private get settings(): RotationSettings {
    return this.loaded.config.rotation;
  }

  private get stateFile(): string {
    return this.loaded.config.stateFile!;
  }

  /** Writes the initial state file if there is none (or it did not fit), then schedules the next step. */
  start(): void {
    if (this.loaded.rotationState === null) {
      const now = this.now();
      const state: RotationState = {
        serverIdLength: this.loaded.config.serverIdLength,
        lastRotationAt: now,
        configs: this.loaded.config.configs.map((l) => ({ config: l.config, state: l.state, since: now })),
      };
      writeRotationState(this.stateFile, state);
      this.options.logger.info({ state_file: this.stateFile }, 'rotation state file written');
      this.loaded = { ...this.loaded, rotationState: state, liveConfigs: this.loaded.config.configs };
    }
    this.schedule();
  }

  /** The runner reloaded: take the current config and state file. */
  update(loaded: LoadedStandalone): void {
    this.loaded = loaded;
    if (loaded.rotationState === null && loaded.config.rotation.enabled && !this.stopped) {
      this.start();
      return;
    }
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** When the next step is due (ms since the epoch). */
  nextDue(state: RotationState): number {
    const s = this.settings;
    // A rotation cannot start while a config is accepting: then only its promotion (or a retirement) is due.
    let due = state.configs.some((e) => e.state === 'accepting') ? Infinity : state.lastRotationAt + s.intervalMs;
    for (const e of state.configs) {
      if (e.state === 'accepting') due = Math.min(due, e.since + s.promoteAfterMs);
      if (e.state === 'draining') due = Math.min(due, e.since + s.drainMs);
    }
    return due;
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const state = this.loaded.rotationState;
    if (this.stopped || state === null || !this.settings.enabled) return;
    const wait = Math.max(0, Math.min(this.nextDue(state) - this.now(), this.options.maxSleepMs ?? 60_000));
    this.timer = setTimeout(() => this.step(), wait);
    this.timer.unref();
  }

  /** Performs every step that is due now; returns the new state when something changed. */
  step(): RotationState | null {
    this.timer = null;
    const state = this.loaded.rotationState;
    if (this.stopped || state === null) return null;
    const next = advance(state, this.settings, this.now(), activeConfig(this.loaded.config)?.config);
    if (next === null) {
      this.schedule();
      return null;
    }
    try {
      this.commit(next);
    } catch (e) {
      this.options.logger.error({ state_file: this.stateFile, err: (e as Error).message }, 'cannot write the rotation state file; retrying later');
      this.timer = setTimeout(() => this.step(), 5000);
      this.timer.unref();
      return null;
    }
    return next.state;
  }

  /**
   * Starts a rotation now, whatever the interval (the admin API's RotateKeys). Throws RotationRefused, writing
   * nothing, when this rotator is stopped, a config is still accepting, or no config id is free; throws the
   * file system's error when the state file cannot be written.
   */
  rotateNow(): RotationState {
    const state = this.loaded.rotationState;
    if (this.stopped || !this.settings.enabled) throw new RotationRefused('key rotation is disabled: set loadbalancer.config_rotation.enabled: true');
    if (state === null) throw new RotationRefused(`no rotation state yet (${this.stateFile} could not be written: see the log)`);
    const accepting = state.configs.find((e) => e.state === 'accepting');
    if (accepting) {
      const at = new Date(accepting.since + this.settings.promoteAfterMs).toISOString();
      throw new RotationRefused(`config ${accepting.config.configId} is still accepting (it becomes active at ${at}); rotate after that`);
    }
    const next = advance(state, { ...this.settings, intervalMs: 0 }, this.now(), activeConfig(this.loaded.config)?.config);
    if (!next?.rotated) throw new RotationRefused('no free config id: all 7 are live; rotate again when a draining config has retired');
    this.commit(next);
    return next.state;
  }

  /** Writes the state file (throws when it cannot), logs the steps and hands the new state to the runner. */
  private commit(next: Advance): void {
    writeRotationState(this.stateFile, next.state);
    if (next.rotated) this.rotations++;
    for (const m of next.messages) this.options.logger.info({ ...m.fields, state_file: this.stateFile }, m.msg);
    this.loaded = { ...this.loaded, rotationState: next.state, liveConfigs: next.state.configs.map((e) => ({ config: e.config, state: e.state })) };
    this.options.onChange(next.messages.map((m) => m.msg).join('; '));
    this.schedule();
  }
}

/** A rotation that cannot start now (the admin API answers FAILED_PRECONDITION). */
export class RotationRefused extends Error {}

interface Advance {
  state: RotationState;
  rotated: boolean;
  messages: { msg: string; fields: Record<string, unknown> }[];
}

/** Pure transition function: what the state looks like at `now`. Null when nothing is due. */
export function advance(state: RotationState, s: RotationSettings, now: number, template?: QuicLbConfig): Advance | null {
  let configs: RotationConfigEntry[] = [...state.configs];
  let lastRotationAt = state.lastRotationAt;
  const messages: Advance['messages'] = [];
  let rotated = false;
  // Retire drained configs.
  const retired = configs.filter((e) => e.state === 'draining' && now >= e.since + s.drainMs);
  if (retired.length) {
    configs = configs.filter((e) => !retired.includes(e));
    for (const e of retired) messages.push({ msg: 'config retired', fields: { config_id: e.config.configId } });
  }
  // Promote an accepting config: servers switch to it, the old active one drains.
  const ready = configs.find((e) => e.state === 'accepting' && now >= e.since + s.promoteAfterMs);
  if (ready) {
    configs = configs.map((e) =>
      e === ready ? { ...e, state: 'active' as const, since: now } : e.state === 'active' ? { ...e, state: 'draining' as const, since: now } : e,
    );
    messages.push({ msg: 'config promoted to active', fields: { config_id: ready.config.configId } });
  }
  // Start a rotation: fresh key under the next free config id, accepting first.
  if (now >= lastRotationAt + s.intervalMs && !configs.some((e) => e.state === 'accepting')) {
    const active = configs.find((e) => e.state === 'active');
    const base = template ?? active?.config;
    const used = new Set(configs.map((e) => e.config.configId));
    let id = -1;
    const start = active ? active.config.configId : -1;
    for (let i = 1; i <= MAX_CONFIG_ID + 1; i++) {
      const cand = (start + i) % (MAX_CONFIG_ID + 1);
      if (!used.has(cand)) {
        id = cand;
        break;
      }
    }
    if (base && id >= 0) {
      const config = makeConfig({
        configId: id,
        serverIdLength: state.serverIdLength,
        nonceLength: base.nonceLength,
        key: randomBytes(KEY_LEN),
        lengthSelfEncoded: base.lengthSelfEncoded,
        extraLength: base.extraLength,
      });
      configs.push({ config, state: 'accepting', since: now });
      lastRotationAt = now;
      rotated = true;
      messages.push({ msg: 'rotation started: new config accepting', fields: { config_id: id, key_fingerprint: keyFingerprint(config.key) } });
    } else {
      lastRotationAt = now;
      messages.push({ msg: 'rotation skipped: no free config id', fields: {} });
    }
  }
  if (messages.length === 0) return null;
  return { state: { serverIdLength: state.serverIdLength, lastRotationAt, configs }, rotated, messages };
}
