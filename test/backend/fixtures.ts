/** Shared data of the backend SDK tests: live configs as the operator writes them into the configs Secret. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeConfig, type QuicLbConfig } from '../../lib/quiclb/config.js';
import type { ConfigState } from '../../lib/config/snapshot.js';
import type { RotationState } from '../../lib/config/state-file.js';
import { encodeBackendSecret } from '../../operator/rotation/keys.js';

export interface ConfigSpec {
  id: number;
  state: ConfigState;
  key?: Buffer | null;
  nonce?: number;
  sidLen?: number;
  selfEncoded?: boolean;
  extra?: number;
}

export function keyFor(id: number): Buffer {
  return Buffer.alloc(16, 0x10 + id);
}

export function liveConfig(c: ConfigSpec): QuicLbConfig {
  return makeConfig({
    configId: c.id,
    serverIdLength: c.sidLen ?? 2,
    nonceLength: c.nonce ?? 6,
    key: c.key === undefined ? keyFor(c.id) : c.key,
    lengthSelfEncoded: c.selfEncoded ?? false,
    extraLength: c.extra ?? 0,
  });
}

export function rotationState(configs: readonly ConfigSpec[]): RotationState {
  const t = Date.parse('2026-12-04T12:00:00.000Z');
  return {
    serverIdLength: configs[0]?.sidLen ?? 2,
    lastRotationAt: t,
    configs: configs.map((c) => ({ config: liveConfig(c), state: c.state, since: t })),
  };
}

/**
 * The files the kubelet writes for the configs Secret: each data key base64-decoded, byte for byte what the operator
 * put there (operator/rotation/keys.ts), plus the operator's `state.json`, which backends ignore.
 */
export function secretFiles(configs: readonly ConfigSpec[]): Record<string, Buffer> {
  const data = encodeBackendSecret(rotationState(configs));
  const files: Record<string, Buffer> = {};
  for (const [k, v] of Object.entries(data)) files[k] = Buffer.from(v, 'base64');
  files['state.json'] = Buffer.from('{"format":"quiclb-rotation-machine/1","last_rotation_at":null,"last_triggers":{},"configs":[]}');
  return files;
}

export function tempDir(prefix: string): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `quiclb-${prefix}-`));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export async function waitFor(cond: () => boolean, timeoutMs = 5000, stepMs = 10): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return true;
}
