/** GetConfig: the configuration in force as the admin API shows it, keys as fingerprints only. */
import { formatSocketAddress } from '../../lib/config/address.js';
import { keyFingerprint } from '../../lib/config/key-fingerprint.js';
import { DEFAULT_ROUTING } from '../../lib/config/snapshot.js';
import { toHex } from '../../lib/hex.js';
import { durationFromMs } from '../../proto/convert.js';
import type { GetConfigResponse } from '../../proto/gen/quiclb/v1/admin.js';
import type { StandaloneControl } from '../standalone.js';

export function describeForAdmin(control: StandaloneControl): GetConfigResponse {
  const snapshot = control.snapshot();
  const { config, rotationState } = control.loaded();
  const health = control.health();
  const r = config.rotation;
  return {
    version: BigInt(control.version()),
    name: snapshot.name,
    configPath: control.configPath,
    listen: control.addresses().map(formatSocketAddress),
    routing: snapshot.routing ?? DEFAULT_ROUTING,
    configs: snapshot.configs.map(({ config: c, state }) => ({
      configId: c.configId,
      state,
      serverIdLength: c.serverIdLength,
      nonceLength: c.nonceLength,
      encrypted: c.key !== null,
      keyFingerprint: keyFingerprint(c.key),
      lengthSelfEncoded: c.lengthSelfEncoded,
      extraLength: c.extraLength,
    })),
    servers: snapshot.servers.map((s) => ({
      name: s.name,
      address: formatSocketAddress(s.address),
      serverId: toHex(s.serverId),
      weight: s.weight,
      state: s.state,
      health: health.get(s.name) ?? 'unknown',
    })),
    rotation: {
      enabled: r.enabled,
      interval: durationFromMs(r.intervalMs),
      drain: durationFromMs(r.drainMs),
      promoteAfter: durationFromMs(r.promoteAfterMs),
      lastRotation: rotationState ? new Date(rotationState.lastRotationAt) : undefined,
    },
    loadedAt: control.loadedAt(),
  };
}
