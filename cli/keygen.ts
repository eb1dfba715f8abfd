/** `quiclb keygen`: a fresh random AES-128 key for a QUIC-LB config. */
import { randomBytes } from 'node:crypto';
import { parseFlags } from './args.js';
import { UsageError } from './usage-error.js';

export const KEYGEN_HELP = `Usage: quiclb keygen [--base64]
Prints a new random 16-byte QUIC-LB key: 32 hex digits, or base64 (the form the standalone YAML takes) with --base64.`;

export function keygenCommand(argv: string[]): number {
  const { values, positionals } = parseFlags(argv, { base64: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } });
  if (values.help) {
    process.stdout.write(KEYGEN_HELP + '\n');
    return 0;
  }
  if (positionals.length) throw new UsageError(`keygen takes no arguments, got ${JSON.stringify(positionals[0])}`);
  const key = randomBytes(16);
  process.stdout.write((values.base64 ? key.toString('base64') : key.toString('hex')) + '\n');
  return 0;
}
