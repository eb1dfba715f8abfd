/**
 * KeyRotation: True while a rotation is in progress, False when stable; the reason is the phase (Stable, Accepting,
 * Draining), the message says what it waits for. Keys appear only as fingerprints.
 */
import { metaTime, type Verdict } from './conditions.js';
import { listNames, type StatusFacts } from './facts.js';

export const KEY_ROTATION = 'KeyRotation';

export function keyRotationCondition(f: StatusFacts): Verdict {
  const r = f.rotation;
  const blocked = r.blocked !== null ? `; blocked: ${r.blocked}` : '';
  const draining = r.drainingConfigIds.length > 0 ? `; config ${r.drainingConfigIds.join(', ')} draining` : '';
  const active = r.activeConfigId === null ? 'no active config' : `config ${r.activeConfigId} active` + (r.activeKeyFingerprint ? ` (key ${r.activeKeyFingerprint})` : '');
  switch (r.phase) {
    case 'Accepting':
      return {
        status: 'True',
        reason: 'Accepting',
        message:
          `config ${r.acceptingConfigId} pushed to the data planes as accepting; ${active}` +
          (r.waitingFor.length > 0 ? `; waiting for acknowledgements from ${listNames(r.waitingFor)}` : '; every connected data plane has it') +
          (r.reconnecting !== null
            ? `; not promoted before ${metaTime(r.reconnecting.until)} unless the data planes of ${listNames(r.reconnecting.nodes)} reconnect to the restarted operator`
            : '') +
          draining +
          blocked,
      };
    case 'Draining':
      return {
        status: 'True',
        reason: 'Draining',
        message:
          `${active}; config ${r.drainingConfigIds.join(', ')} draining until its traffic stops` +
          (r.drainEndsAt !== null ? ` or ${metaTime(r.drainEndsAt)} at the latest` : '') +
          blocked,
      };
    case 'Stable':
      return {
        status: 'False',
        reason: 'Stable',
        message: active + (r.nextRotationAt !== null ? `; next rotation at ${metaTime(r.nextRotationAt)}` : '') + blocked,
      };
  }
}
