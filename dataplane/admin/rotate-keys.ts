/**
 * RotateKeys: start a standalone key rotation now (dataplane/rotation.ts). The rotator writes the new config into
 * the state file as accepting; the runner then reloads inside the same exclusive section, so the response carries
 * the version in force with the new config.
 */
import { status } from '@grpc/grpc-js';
import { keyFingerprint } from '../../lib/config/key-fingerprint.js';
import type { RotateKeysResponse } from '../../proto/gen/quiclb/v1/admin.js';
import { RotationRefused } from '../rotation.js';
import type { StandaloneControl } from '../standalone.js';
import { AdminCallError } from './errors.js';

export function rotateKeys(control: StandaloneControl, caller: string): Promise<RotateKeysResponse> {
  return control.exclusive(async () => {
    const rotator = control.rotator();
    const settings = control.loaded().config.rotation;
    if (!rotator) {
      throw new AdminCallError(
        status.FAILED_PRECONDITION,
        settings.follow
          ? 'this instance follows the rotation state file of another instance (config_rotation.follow): rotate there'
          : 'key rotation is disabled: set loadbalancer.config_rotation.enabled: true',
      );
    }
    const previous = control.loaded().liveConfigs.find((l) => l.state === 'active');
    let state;
    try {
      state = rotator.rotateNow();
    } catch (e) {
      if (e instanceof RotationRefused) throw new AdminCallError(status.FAILED_PRECONDITION, e.message);
      throw e;
    }
    const fresh = state.configs.find((e) => e.state === 'accepting')!;
    if (!(await control.reloadNow(`admin RotateKeys by ${caller}`))) {
      throw new AdminCallError(
        status.INTERNAL,
        `config ${fresh.config.configId} was written to the rotation state file but the config could not be reloaded (see the load balancer's log); it is applied with the next successful reload`,
      );
    }
    const at = (ms: number) => new Date(fresh.since + ms);
    return {
      newConfigId: fresh.config.configId,
      newKeyFingerprint: keyFingerprint(fresh.config.key),
      previousConfigId: previous?.config.configId ?? 0,
      phases: [
        { name: 'accepting', at: at(0) },
        { name: 'active', at: at(settings.promoteAfterMs) },
        { name: 'retired', at: at(settings.promoteAfterMs + settings.drainMs) },
      ],
      version: BigInt(control.version()),
    };
  });
}
