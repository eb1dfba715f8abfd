/**
 * Busy-poll on the batched path (native/quiclb_io.c busy_poll, BatchedOptions.busyPollUs, QUICLB_IO_BUSY_POLL_US):
 * the setting is validated and exposed; under a steady stream from another process the addon takes datagrams while
 * it spins, yet returns to the event loop (timers fire) within its bound; an idle context never spins.
 * Skipped (with a note) when the addon is not built.
 */
import { afterEach, describe, expect, it } from '@jest/globals';
import { loadIoAddon } from '../../dataplane/io/addon.js';
import { BatchedIo, busyPollUs } from '../../dataplane/io/batched-io.js';
import type { DatagramSink } from '../../dataplane/io/types.js';
import { sleep, streamingPeer, waitFor, withEnv } from './helpers.js';

const { addon, error } = loadIoAddon();
const describeAddon = addon !== null ? describe : describe.skip;
if (addon === null) console.warn(`batched I/O addon not available (${error}): its tests are skipped`);

class Counter implements DatagramSink<string, string> {
  clients = 0;
  onClient(): void {
    this.clients++;
  }
  onReply(): void {}
  onError(): void {}
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const withSetting = (value: string | undefined, f: () => void) => withEnv('QUICLB_IO_BUSY_POLL_US', value, f);

describe('busyPollUs()', () => {
  it('is the option, else QUICLB_IO_BUSY_POLL_US, else 0; anything but whole microseconds 0..1000 is a precise error', () => {
    withSetting(undefined, () => expect(busyPollUs(undefined)).toBe(0));
    withSetting('', () => expect(busyPollUs(undefined)).toBe(0));
    withSetting('25', () => {
      expect(busyPollUs(undefined)).toBe(25);
      expect(busyPollUs(0)).toBe(0); // the option wins
    });
    withSetting('1000', () => expect(busyPollUs(undefined)).toBe(1000));
    for (const bad of ['1001', '-1', '2.5', '20us', 'abc', '0x10'])
      withSetting(bad, () => expect(() => busyPollUs(undefined)).toThrow(`QUICLB_IO_BUSY_POLL_US: expected whole microseconds 0..1000, got "${bad}"`));
    for (const bad of [-1, 1001, 2.5, Number.NaN]) expect(() => busyPollUs(bad)).toThrow('busyPollUs: expected whole microseconds 0..1000');
  });
});

describeAddon('batched I/O busy-poll', () => {
  it('is exposed by the context and its call counts; the addon itself refuses a value out of range', async () => {
    const off = new BatchedIo<string, string>(addon!, new Counter(), null, { busyPollUs: 0 });
    cleanups.push(() => off.close());
    expect(off.busyPollUs).toBe(0);
    expect(off.calls().busyPollUs).toBe(0);
    let on: BatchedIo<string, string> | null = null;
    withSetting('40', () => (on = new BatchedIo<string, string>(addon!, new Counter(), null, {})));
    cleanups.push(() => on!.close());
    expect(on!.busyPollUs).toBe(40);
    expect(on!.calls()).toMatchObject({ busyPollUs: 40, busyPollHits: 0, busyPollSeconds: 0 });
    expect(() => addon!.create(16, 2048, () => 0, 0, undefined, 1001)).toThrow('create: busyPollUs 0..1000');
  });

  it('takes a steady stream while spinning, yet timers fire on time; nothing spins once the stream stops', async () => {
    const sink = new Counter();
    // the longest setting: datagrams every ~100 us keep it spinning, only the per-wake-up bound returns to the loop
    const io = new BatchedIo<string, string>(addon!, sink, null, { busyPollUs: 1000 });
    cleanups.push(() => io.close());
    const l = await io.openListener({ host: '127.0.0.1', port: 0, family: 4 }, { reusePort: false, bufferBytes: 1 << 20 }, 'L');
    const ticks: number[] = [];
    const timer = setInterval(() => ticks.push(performance.now()), 5);
    cleanups.push(() => clearInterval(timer));
    const t0 = performance.now();
    const { sent } = await streamingPeer(l.bound.port, 1500, { gapUs: 100, onCleanup: (f) => cleanups.push(f) }).done;
    clearInterval(timer);
    expect(sent).toBeGreaterThan(1000);
    expect(await waitFor(() => sink.clients === sent, 3000)).toBe(true);
    const calls = io.calls();
    expect(calls.busyPollHits).toBeGreaterThan(0); // datagrams taken while spinning, without a wake-up
    expect(calls.busyPollSeconds).toBeGreaterThan(0);
    // an unbounded spin would hold the loop for the whole stream (the timer would not fire for 1.5 s)
    const during = ticks.filter((t) => t > t0 + 200);
    expect(during.length).toBeGreaterThan(20);
    const gaps = during.slice(1).map((t, i) => t - during[i]);
    expect(Math.max(...gaps)).toBeLessThan(250);
    // idle: the spin only follows data
    await sleep(50);
    const idle0 = io.calls().busyPollSeconds;
    const cpu0 = process.cpuUsage();
    await sleep(300);
    const cpu = process.cpuUsage(cpu0);
    expect(io.calls().busyPollSeconds).toBe(idle0);
    expect((cpu.user + cpu.system) / 1000).toBeLessThan(150); // a spinning context would burn ~300 ms
  }, 20_000);
});
