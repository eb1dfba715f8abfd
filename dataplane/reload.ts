/**
 * Reload triggers of standalone mode: changes of the config file, its key files or the rotation state file,
 * and SIGHUP (lib/config/watch.ts), logging watch problems through pino.
 */
import { FileWatcher } from '../lib/config/watch.js';
import type { Logger } from './logging.js';

export class ConfigWatcher extends FileWatcher {
  constructor(onChange: (why: string) => void, logger: Logger, debounceMs = 150) {
    super(onChange, (msg, fields) => logger.warn(fields, msg), debounceMs);
  }
}
