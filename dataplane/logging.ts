/** pino structured logs. Never log key material: our code logs no keys, and these paths are redacted anyway. */
import { pino, type DestinationStream, type Logger as PinoLogger } from 'pino';

export type Logger = PinoLogger;

export const REDACT_PATHS = [
  'key',
  'encryption_key',
  'encryptionKey',
  '*.key',
  '*.encryption_key',
  '*.encryptionKey',
  'configs[*].key',
  'configs[*].encryption_key',
  'config.key',
  '*.configs[*].key',
];

export function createLogger(options: { level?: string; name?: string; base?: Record<string, unknown> } = {}, destination?: DestinationStream): Logger {
  return pino(
    {
      level: options.level ?? 'info',
      name: options.name ?? 'quiclb',
      base: { pid: process.pid, ...options.base },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    },
    destination ?? pino.destination({ fd: 1, sync: true }),
  );
}

/** A logger that discards everything (library default). */
export const silentLogger: Logger = pino({ level: 'silent' });
