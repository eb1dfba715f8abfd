/**
 * Loads the batched I/O addon (native/build/quiclb_io.node, built by native/build.mjs at npm install). Linux only;
 * null elsewhere or when it was not built or does not load (the data plane then runs node:dgram).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

/** The addon's functions (native/quiclb_io.c). */
export interface IoAddon {
  RX_WORDS: number;
  TX_WORDS: number;
  COUNTERS: number;
  /**
   * flags: bit 0 UDP GSO for runs of datagrams to one destination; bit 1 UDP GRO on every socket (where the kernel
   * has it); bit 2 (tests only) behave as a kernel without UDP_GRO; bit 3 hold the loop: after a batch, wait for the
   * next datagram in the addon while nothing else in the process has work (native/quiclb_io.c, hold_loop). entries:
   * datagrams per batch call (default 8 per slot; a coalesced message is one per segment). busyPollUs: after a wake-up that moved datagrams, keep polling
   * until this many microseconds pass without one (0..1000, default 0: off).
   */
  create(slots: number, slotSize: number, onBatch: (count: number) => number, flags: number, entries?: number, busyPollUs?: number): AddonContext;
  destroy(ctx: AddonContext): void;
  /** [id, bound port]; throws (code EADDRINUSE, ...) when binding fails. */
  openListener(ctx: AddonContext, host: string, port: number, reusePort: boolean, bufferBytes: number): [number, number];
  /**
   * Socket id, or -errno. localPorts [n, p1..pn] (n <= 8): local ports tried in order before the kernel's choice;
   * on return localPorts[0] holds the index of the port taken, or -1 (the kernel chose).
   */
  openUpstream(ctx: AddonContext, listenerId: number, rxIndex: number, host: string, port: number, localPorts?: Int32Array): number;
  close(ctx: AddonContext, id: number): void;
  send(ctx: AddonContext, count: number): void;
  localPort(ctx: AddonContext, id: number): number;
}

export interface AddonContext {
  readonly rx: ArrayBuffer;
  readonly rxMeta: ArrayBuffer;
  readonly tx: ArrayBuffer;
  readonly counters: ArrayBuffer;
  /** UDP GRO is on (asked for and the kernel has it). */
  readonly gro: boolean;
  /** Why UDP GRO is off though asked for (the kernel refused UDP_GRO). */
  readonly groError?: string;
  /** The loop is held (asked for, no busy-poll, libuv 1.44 or later). */
  readonly holdLoop: boolean;
}

/** create()'s flags. */
export const IO_FLAGS = { gso: 1, gro: 2, simulateNoGro: 4, holdLoop: 8 } as const;

/** Indices of the addon's counters (CNT_* in quiclb_io.c). */
export const CNT = {
  txServerRefused: 0,
  txServerFull: 1,
  txServerOther: 2,
  txClientRefused: 3,
  txClientFull: 4,
  txClientOther: 5,
  rxIcmp: 6,
  rxTruncated: 7,
  rxOther: 8,
  txClosed: 9,
  rxCalls: 10,
  txCalls: 11,
  batches: 12,
  lastBatchNs: 13,
  gsoMessages: 14,
  gsoFallbacks: 15,
  callbackErrors: 16,
  groMessages: 17,
  groDatagrams: 18,
  entriesFull: 19,
  busyPollHits: 20,
  busyPollNs: 21,
  rxStray: 22,
  heldWakeups: 23,
} as const;

export interface LoadedAddon {
  addon: IoAddon | null;
  /** Why it is null. */
  error: string | null;
  /** The file loaded (or tried). */
  file: string | null;
}

let cached: LoadedAddon | null = null;

/** The addon, or null with the reason. */
export function loadIoAddon(): LoadedAddon {
  if (cached !== null) return cached;
  if (process.platform !== 'linux') return (cached = { addon: null, error: `platform ${process.platform}`, file: null });
  const require = createRequire(import.meta.url);
  const here = import.meta.dirname;
  // dataplane/io/ in the source tree, dist/dataplane/io/ when built; QUICLB_IO_ADDON: another build (e.g. with ASan)
  const override = process.env.QUICLB_IO_ADDON;
  const candidates =
    override !== undefined && override !== ''
      ? [override]
      : [join(here, '..', '..', 'native', 'build', 'quiclb_io.node'), join(here, '..', '..', '..', 'native', 'build', 'quiclb_io.node')];
  const file = candidates.find((f) => existsSync(f));
  if (file === undefined) return (cached = { addon: null, error: 'native/build/quiclb_io.node not built (npm install builds it when a C compiler is present; `node native/build.mjs` says why it failed)', file: null });
  try {
    const addon = require(file) as IoAddon;
    if (addon.COUNTERS !== Object.keys(CNT).length) return (cached = { addon: null, error: `${file} is out of date (run node native/build.mjs)`, file });
    return (cached = { addon, error: null, file });
  } catch (e) {
    return (cached = { addon: null, error: `${file}: ${(e as Error).message}`, file });
  }
}
