/** Durations in the standalone YAML: "500ms", "10s", "5m", "24h", "1h30m", or a plain number of seconds. */
import { ConfigError } from '../quiclb/config.js';
import { describe } from './fields.js';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION_RE = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$/;
const PART_RE = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/g;

/** Parses a duration into milliseconds; throws ConfigError naming `field`. */
export function parseDuration(field: string, value: unknown): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw new ConfigError(field, `must be a non-negative duration, got ${value}`);
    return Math.round(value * 1000);
  }
  if (typeof value !== 'string') {
    throw new ConfigError(field, `must be a duration such as "10s", "500ms", "5m" or "24h", got ${describe(value)}`);
  }
  const s = value.trim();
  if (!DURATION_RE.test(s)) {
    throw new ConfigError(field, `must be a duration such as "10s", "500ms", "5m" or "24h", got ${describe(value)}`);
  }
  let ms = 0;
  for (const m of s.matchAll(PART_RE)) ms += Number(m[1]) * UNIT_MS[m[2]];
  return Math.round(ms);
}

/** Formats milliseconds for messages: 1500 -> "1.5s". */
export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`;
  if (ms >= 1000) return `${ms / 1000}s`;
  return `${ms}ms`;
}
