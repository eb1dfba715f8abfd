/**
 * Picks the data plane's I/O path: `io` option, else QUICLB_IO from the environment, else auto (batched when the
 * addon loads, i.e. on Linux with native/build/quiclb_io.node built; node:dgram otherwise). Forcing batched where
 * the addon does not load is an error, so a forced benchmark or test never measures the other path silently.
 */
import { loadIoAddon } from './addon.js';
import { BatchedIo } from './batched-io.js';
import { DgramIo } from './dgram-io.js';
import { IO_PATHS, type DatagramIo, type DatagramSink, type IoChoice, type IoPath, type LatencySampler } from './types.js';

export function parseIoChoice(value: string, source: string): IoChoice {
  if ((IO_PATHS as readonly string[]).includes(value)) return value as IoChoice;
  throw new Error(`${source}: expected one of ${IO_PATHS.join(', ')}, got ${JSON.stringify(value)}`);
}

/** The choice in force: the option, else QUICLB_IO, else auto. */
export function ioChoice(option: IoChoice | undefined): IoChoice {
  if (option !== undefined) return option;
  const env = process.env.QUICLB_IO;
  return env === undefined || env === '' ? 'auto' : parseIoChoice(env, 'QUICLB_IO');
}

export interface SelectedIo<L, U> {
  io: DatagramIo<L, U>;
  /** Why the dgram path runs under auto (the addon's load error), else null. */
  fallbackReason: string | null;
}

export function createIo<L, U>(option: IoChoice | undefined, sink: DatagramSink<L, U>, sampler: ((path: IoPath) => LatencySampler) | null): SelectedIo<L, U> {
  const choice = ioChoice(option);
  if (choice === 'dgram') return { io: new DgramIo(sink, sampler?.('dgram') ?? null), fallbackReason: null };
  const { addon, error } = loadIoAddon();
  if (addon !== null) return { io: new BatchedIo(addon, sink, sampler?.('batched') ?? null), fallbackReason: null };
  if (choice === 'batched') throw new Error(`io: batched: the batched I/O addon is not available (${error})`);
  return { io: new DgramIo(sink, sampler?.('dgram') ?? null), fallbackReason: error };
}
