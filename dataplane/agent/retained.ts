/**
 * Snapshot.retained on the data plane: the snapshot to put in force is the operator's load balancers plus each
 * retained one exactly as the snapshot in force has it (a retained name not in force is left out). The result is a
 * whole snapshot (nothing retained): it is what is validated, applied, acknowledged and saved to --state-dir.
 *
 * The retained load balancers come first, so a listen address of a new load balancer that collides with a retained
 * one is reported on the new one (`load_balancers[i].listen[j]`, a path of the message the operator sent).
 */
import { retainedFromWire } from '../../proto/convert.js';
import type { Snapshot } from '../../proto/gen/quiclb/v1/distribution.js';

export interface MergedSnapshot {
  /** The snapshot to put in force (`retained` empty). */
  readonly wire: Snapshot;
  /** Retained names taken from the snapshot in force. */
  readonly kept: ReadonlySet<string>;
  /** Retained names the snapshot in force does not have (left out). */
  readonly missing: readonly string[];
  /** A field path of `wire` -> the path in the snapshot as received (a retained one: `retained[i]`). */
  fieldOf(field: string): string;
  /** The message of a failure at `field` of `wire`, saying which retained load balancer it concerns. */
  messageOf(field: string, message: string): string;
}

const LB_PATH = /^load_balancers\[(\d+)\](.*)$/;

/** Throws ConfigError (wire path `retained[i]`) when the retained list itself is invalid. */
export function mergeRetained(received: Snapshot, inForce: Snapshot | null): MergedSnapshot {
  const names = retainedFromWire(received);
  if (names.length === 0) return { wire: received, kept: new Set(), missing: [], fieldOf: (f) => f, messageOf: (_f, m) => m };
  const have = new Map((inForce?.loadBalancers ?? []).map((lb) => [lb.name, lb]));
  const keptNames = names.filter((n) => have.has(n));
  const kept = keptNames.map((n) => have.get(n)!);
  const wire: Snapshot = { ...received, loadBalancers: [...kept, ...received.loadBalancers], retained: [] };
  const split = (field: string): { index: number; rest: string } | null => {
    const m = LB_PATH.exec(field);
    return m ? { index: Number(m[1]), rest: m[2] } : null;
  };
  return {
    wire,
    kept: new Set(keptNames),
    missing: names.filter((n) => !have.has(n)),
    fieldOf(field) {
      const p = split(field);
      if (p === null) return field;
      if (p.index < kept.length) return `retained[${names.indexOf(keptNames[p.index])}]`;
      return `load_balancers[${p.index - kept.length}]${p.rest}`;
    },
    messageOf(field, message) {
      const p = split(field);
      if (p === null || p.index >= kept.length) return message;
      return `load balancer ${JSON.stringify(keptNames[p.index])} as in force${p.rest ? ` (${p.rest.replace(/^\./, '')})` : ''}: ${message}`;
    },
  };
}
