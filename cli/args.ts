/** Thin wrapper over node:util parseArgs that turns its errors into UsageError and parses numbers strictly. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from './usage-error.js';
import { IO_CHOICES, type IoChoice } from '../lib/config/standalone.js';

export function parseFlags<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T, allowPositionals = true) {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export function intFlag(name: string, value: string | undefined, required: true): number;
export function intFlag(name: string, value: string | undefined, required?: false): number | undefined;
export function intFlag(name: string, value: string | undefined, required = false): number | undefined {
  if (value === undefined) {
    if (required) throw new UsageError(`--${name} is required`);
    return undefined;
  }
  if (!/^\d+$/.test(value)) throw new UsageError(`--${name}: expected a non-negative integer, got ${JSON.stringify(value)}`);
  return Number(value);
}

/** `--io PATH`: auto, batched or dgram. */
export function ioFlag(value: string): IoChoice {
  if ((IO_CHOICES as readonly string[]).includes(value)) return value as IoChoice;
  throw new UsageError(`--io: must be one of ${IO_CHOICES.join(', ')}, got ${JSON.stringify(value)}`);
}
