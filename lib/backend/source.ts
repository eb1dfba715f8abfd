/** What ServerCidGenerator needs from where its config lives: the live configs and this server's ID. */
import type { LiveConfig } from '../config/snapshot.js';

export interface SourceReading {
  /** The live configs (the generator mints with the `active` one). */
  readonly live: readonly LiveConfig[];
  /** This server's ID, or null when it has none (yet). */
  readonly serverId: Buffer | null;
  /** Why there is no server ID or no usable config; null when both are there. */
  readonly reason: string | null;
  /** Files that are present but invalid: the reading holds their last good content (in order of the files). */
  readonly problems: readonly Error[];
}

export interface GeneratorSource {
  /**
   * Reads the files. Throws when they are invalid as a whole (nothing is applied; `initial`: the first read, where
   * a source may choose to be strict); per-file problems that keep a last good part are returned in `problems`.
   */
  read(initial: boolean): SourceReading;
  /** The files whose change calls for read() (may grow after a read, e.g. a key file named in the YAML). */
  watchedFiles(): readonly string[];
}
