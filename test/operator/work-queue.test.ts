// The operator's work queue (operator/queue/work-queue.ts): table tests on an injected clock and timers, and fast-check
// properties over random sequences of adds, delayed adds, forgets, clock steps and run outcomes: never two runs of
// one key at once, every add followed by a run that starts after it, retry delays inside their backoff bounds.
import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { backoffDelay, WorkQueue, type QueueTimers, type Verdict, type WorkQueueOptions } from '../../operator/queue/work-queue.js';

/** Lets every pending promise callback run (the queue starts runs on microtasks). */
const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

class FakeClock {
  t = 0;
  private seq = 0;
  readonly pending = new Map<number, { due: number; fn: () => void }>();
  readonly now = (): number => this.t;
  readonly timers: QueueTimers = {
    setTimeout: (fn, ms) => {
      const id = ++this.seq;
      this.pending.set(id, { due: this.t + ms, fn });
      return id;
    },
    clearTimeout: (h) => {
      this.pending.delete(h as number);
    },
  };

  /** Moves the clock forward, firing due timers in order (and letting the queue react after each). */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      let next: [number, { due: number; fn: () => void }] | undefined;
      for (const e of this.pending) if (e[1].due <= end && (!next || e[1].due < next[1].due)) next = e;
      if (!next) break;
      this.pending.delete(next[0]);
      this.t = Math.max(this.t, next[1].due);
      next[1].fn();
      await flush();
    }
    this.t = end;
    await flush();
  }
}

interface Run {
  key: string;
  startedAt: number;
  finish: (v: Verdict | Error) => void;
}

/** A queue whose process() records each run and waits until the test finishes it. */
function harness(opts: Partial<WorkQueueOptions<string>> = {}) {
  const clock = new FakeClock();
  const runs: Run[] = [];
  const open: Run[] = [];
  const q = new WorkQueue<string>({
    now: clock.now,
    timers: clock.timers,
    random: () => 0,
    ...opts,
    process: (key) =>
      new Promise<Verdict>((resolve, reject) => {
        const run: Run = {
          key,
          startedAt: clock.t,
          finish: (v) => {
            open.splice(open.indexOf(run), 1);
            if (v instanceof Error) reject(v);
            else resolve(v);
          },
        };
        runs.push(run);
        open.push(run);
      }),
  });
  /** Finishes the open run of `key` with `v` and lets the queue react. */
  const finish = async (key: string, v: Verdict | Error = { kind: 'done' }) => {
    const r = open.find((x) => x.key === key);
    if (!r) throw new Error(`no open run of ${key}`);
    r.finish(v);
    await flush();
  };
  return { q, clock, runs, open, finish, keys: () => runs.map((r) => r.key) };
}

const retry: Verdict = { kind: 'retry', error: new Error('boom') };

describe('WorkQueue', () => {
  it('de-duplicates keys added before start and runs them in arrival order', async () => {
    const h = harness();
    h.q.add('a');
    h.q.add('b');
    h.q.add('a');
    h.q.add('a');
    expect(h.q.length).toBe(2);
    await flush();
    expect(h.runs).toHaveLength(0); // not started yet
    h.q.start();
    await flush();
    expect(h.keys()).toEqual(['a']);
    expect(h.q.processing).toBe(1);
    await h.finish('a');
    await h.finish('b');
    expect(h.keys()).toEqual(['a', 'b']);
    expect(h.q.length).toBe(0);
    expect(h.q.processing).toBe(0);
  });

  it('runs a key added while it is processed exactly once more, after the run ends', async () => {
    const h = harness({ concurrency: 4 });
    h.q.start();
    h.q.add('a');
    await flush();
    h.q.add('a');
    h.q.add('a');
    await flush();
    expect(h.keys()).toEqual(['a']); // not a second concurrent run
    expect(h.q.length).toBe(1);
    await h.finish('a');
    expect(h.keys()).toEqual(['a', 'a']);
    await h.finish('a');
    expect(h.keys()).toEqual(['a', 'a']);
    expect(h.q.length).toBe(0);
  });

  it('a process() that adds its own key synchronously does not start a second run', async () => {
    const clock = new FakeClock();
    let active = 0;
    let maxActive = 0;
    let count = 0;
    const q: WorkQueue<string> = new WorkQueue<string>({
      now: clock.now,
      timers: clock.timers,
      concurrency: 3,
      process: async (key) => {
        active++;
        maxActive = Math.max(maxActive, active);
        if (++count < 3) q.add(key);
        await flush();
        active--;
        return { kind: 'done' };
      },
    });
    q.start();
    q.add('a');
    for (let i = 0; i < 10; i++) await flush();
    expect(count).toBe(3);
    expect(maxActive).toBe(1);
  });

  it('runs different keys concurrently up to the concurrency', async () => {
    const h = harness({ concurrency: 2 });
    h.q.start();
    for (const k of ['a', 'b', 'c']) h.q.add(k);
    await flush();
    expect(h.keys()).toEqual(['a', 'b']);
    expect(h.q.processing).toBe(2);
    expect(h.q.length).toBe(1);
    await h.finish('b');
    expect(h.keys()).toEqual(['a', 'b', 'c']);
  });

  it.each([
    ['random 0 (no jitter)', 0, [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000]],
    ['random near 1 (half)', 0.999999, [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]],
  ])('retries with exponential backoff capped at maxDelayMs, %s', async (_name, random, expected) => {
    const h = harness({ random: () => random });
    h.q.start();
    h.q.add('a');
    await flush();
    const gaps: number[] = [];
    for (let i = 0; i < expected.length; i++) {
      const end = h.clock.t;
      await h.finish('a', retry);
      expect(h.q.length).toBe(1); // scheduled, not lost
      await h.clock.advance(70000);
      gaps.push(h.runs[h.runs.length - 1].startedAt - end);
    }
    expect(gaps.map((g) => Math.round(g))).toEqual(expected);
  });

  it('counts an exception (or an invalid verdict) from process() as a retry', async () => {
    const h = harness();
    h.q.start();
    h.q.add('a');
    await flush();
    await h.finish('a', new Error('thrown'));
    await h.clock.advance(199);
    expect(h.runs).toHaveLength(1);
    await h.clock.advance(1);
    expect(h.runs).toHaveLength(2);
    await h.finish('a', { kind: 'requeue-after', ms: Number.NaN });
    await h.clock.advance(399);
    expect(h.runs).toHaveLength(2); // second failure: 400 ms
    await h.clock.advance(1);
    expect(h.runs).toHaveLength(3);
  });

  it("resets the backoff on 'done' and on 'requeue-after'", async () => {
    const h = harness();
    h.q.start();
    h.q.add('a');
    await flush();
    await h.finish('a', retry); // 200
    await h.clock.advance(200);
    await h.finish('a', retry); // 400
    await h.clock.advance(400);
    await h.finish('a', { kind: 'done' });
    h.q.add('a');
    await flush();
    let t = h.clock.t;
    await h.finish('a', retry); // back to 200
    await h.clock.advance(1000);
    expect(h.runs[h.runs.length - 1].startedAt - t).toBe(200);
    await h.finish('a', { kind: 'requeue-after', ms: 5000 });
    await h.clock.advance(5000);
    t = h.clock.t;
    await h.finish('a', retry);
    await h.clock.advance(1000);
    expect(h.runs[h.runs.length - 1].startedAt - t).toBe(200);
  });

  it('requeue-after runs the key again after the wait', async () => {
    const h = harness();
    h.q.start();
    h.q.add('a');
    await flush();
    await h.finish('a', { kind: 'requeue-after', ms: 30000 });
    expect(h.q.length).toBe(1);
    await h.clock.advance(29999);
    expect(h.runs).toHaveLength(1);
    await h.clock.advance(1);
    expect(h.runs.map((r) => r.startedAt)).toEqual([0, 30000]);
  });

  it.each([
    ['earlier second', 1000, 500, 500],
    ['later second', 500, 1000, 500],
  ])('addAfter keeps the earliest pending time (%s)', async (_n, first, second, expectedAt) => {
    const h = harness();
    h.q.start();
    h.q.addAfter('a', first);
    h.q.addAfter('a', second);
    expect(h.q.length).toBe(1);
    await h.clock.advance(5000);
    expect(h.runs.map((r) => r.startedAt)).toEqual([expectedAt]);
    expect(h.clock.pending.size).toBe(0);
  });

  it('add() of a delayed key runs it now and cancels the delayed run; addAfter() of a ready key changes nothing', async () => {
    const h = harness();
    h.q.addAfter('a', 1000);
    h.q.add('a');
    h.q.addAfter('a', 10);
    expect(h.clock.pending.size).toBe(0);
    h.q.start();
    await flush();
    await h.finish('a');
    await h.clock.advance(5000);
    expect(h.runs.map((r) => r.startedAt)).toEqual([0]);
  });

  it('add() during a backoff runs at once but keeps the failure count', async () => {
    const h = harness();
    h.q.start();
    h.q.add('a');
    await flush();
    await h.finish('a', retry); // 1st failure, retry at 200
    h.q.add('a'); // new information
    await flush();
    expect(h.runs).toHaveLength(2);
    const t = h.clock.t;
    await h.finish('a', retry); // 2nd failure: 400
    await h.clock.advance(1000);
    expect(h.runs[2].startedAt - t).toBe(400);
  });

  it('forget() drops pending and delayed runs and the failure count; a run in flight is not repeated', async () => {
    const h = harness();
    h.q.start();
    h.q.add('a');
    await flush();
    h.q.add('a'); // dirty
    h.q.addAfter('b', 100);
    h.q.forget('a');
    h.q.forget('b');
    expect(h.q.length).toBe(0);
    expect(h.clock.pending.size).toBe(0);
    await h.finish('a', retry); // the failure count starts over after forget; this is the first
    await h.clock.advance(1000);
    expect(h.keys()).toEqual(['a', 'a']);
    expect(h.runs[1].startedAt).toBe(200);
  });

  it('stop() waits for runs in flight, drops pending work, clears timers, and the queue can start again', async () => {
    const h = harness({ concurrency: 2 });
    h.q.start();
    h.q.add('a');
    h.q.add('b');
    h.q.add('c');
    h.q.addAfter('d', 1000);
    await flush();
    h.q.add('a'); // dirty
    let stopped = false;
    const stopping = h.q.stop().then(() => {
      stopped = true;
    });
    await flush();
    expect(stopped).toBe(false);
    expect(h.clock.pending.size).toBe(0);
    await h.finish('a', retry); // no retry scheduled after stop
    await flush();
    h.q.add('b'); // b is still in flight: added after stop(), it is kept for the next start()
    expect(stopped).toBe(false);
    await h.finish('b');
    await stopping;
    expect(stopped).toBe(true);
    expect(h.q.length).toBe(1);
    expect(h.clock.pending.size).toBe(0);
    await h.clock.advance(5000);
    expect(h.keys()).toEqual(['a', 'b']);
    h.q.add('e'); // accepted while stopped, runs from the next start
    await flush();
    expect(h.keys()).toEqual(['a', 'b']);
    h.q.start();
    await flush();
    expect(h.keys()).toEqual(['a', 'b', 'b', 'e']); // concurrency 2
    await h.finish('b');
    await h.finish('e');
  });

  it('default timers are unref\u2019d: a long delayed key does not keep the process alive', async () => {
    const timeouts = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timeouts();
    const q = new WorkQueue<string>({ process: async () => ({ kind: 'done' }) });
    q.start();
    q.addAfter('a', 3_600_000);
    q.addAfter('b', 10 * 365 * 24 * 3600 * 1000); // beyond setTimeout's range: clamped, not fired at once
    expect(q.length).toBe(2);
    expect(timeouts()).toBe(before);
    await flush();
    expect(q.processing).toBe(0);
    await q.stop();
  });

  it('refuses nonsensical options', () => {
    const process = async (): Promise<Verdict> => ({ kind: 'done' });
    expect(() => new WorkQueue({ process, baseDelayMs: 0 })).toThrow(RangeError);
    expect(() => new WorkQueue({ process, baseDelayMs: 500, maxDelayMs: 100 })).toThrow(RangeError);
    expect(() => new WorkQueue({ process, concurrency: 0 })).toThrow(RangeError);
  });
});

type Op =
  | { op: 'add'; key: string }
  | { op: 'addAfter'; key: string; ms: number }
  | { op: 'forget'; key: string }
  | { op: 'advance'; ms: number }
  | { op: 'finish'; index: number; verdict: 'done' | 'retry' | 'throw' | 'requeue' };

const KEYS = ['a', 'b', 'c', 'd'];
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('add' as const), key: fc.constantFrom(...KEYS) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('addAfter' as const), key: fc.constantFrom(...KEYS), ms: fc.integer({ min: -5, max: 3000 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('forget' as const), key: fc.constantFrom(...KEYS) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 2000 }) }) },
  {
    weight: 4,
    arbitrary: fc.record({ op: fc.constant('finish' as const), index: fc.nat(), verdict: fc.constantFrom('done' as const, 'retry' as const, 'throw' as const, 'requeue' as const) }),
  },
);

describe('WorkQueue properties', () => {
  it('never runs one key twice at once, and every add is followed by a run that starts after it', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { maxLength: 60 }), fc.integer({ min: 1, max: 3 }), fc.double({ min: 0, max: 0.999, noNaN: true }), async (ops, concurrency, rnd) => {
        const clock = new FakeClock();
        let seq = 0;
        const active = new Map<string, number>();
        const starts = new Map<string, number[]>(); // key -> seq of each run start
        const lastAdd = new Map<string, number>(); // key -> seq of its last add not followed by forget
        const open: Array<{ key: string; finish: (v: Verdict | Error) => void }> = [];
        let overlap = false;
        const q = new WorkQueue<string>({
          now: clock.now,
          timers: clock.timers,
          random: () => rnd,
          concurrency,
          baseDelayMs: 50,
          maxDelayMs: 1000,
          process: (key) => {
            const n = (active.get(key) ?? 0) + 1;
            if (n > 1) overlap = true;
            active.set(key, n);
            starts.set(key, [...(starts.get(key) ?? []), ++seq]);
            return new Promise<Verdict>((resolve, reject) => {
              const run = {
                key,
                finish: (v: Verdict | Error) => {
                  active.set(key, (active.get(key) ?? 1) - 1);
                  if (v instanceof Error) reject(v);
                  else resolve(v);
                },
              };
              open.push(run);
            });
          },
        });
        q.start();
        for (const o of ops) {
          if (o.op === 'add') {
            q.add(o.key);
            lastAdd.set(o.key, ++seq);
          } else if (o.op === 'addAfter') {
            q.addAfter(o.key, o.ms);
            lastAdd.set(o.key, ++seq);
          } else if (o.op === 'forget') {
            q.forget(o.key);
            lastAdd.delete(o.key);
            ++seq;
          } else if (o.op === 'advance') {
            await clock.advance(o.ms);
          } else if (open.length > 0) {
            const [run] = open.splice(o.index % open.length, 1);
            const v: Verdict | Error =
              o.verdict === 'done' ? { kind: 'done' } : o.verdict === 'retry' ? retry : o.verdict === 'throw' ? new Error('thrown') : { kind: 'requeue-after', ms: 700 };
            run.finish(v);
          }
          await flush();
          if (q.processing > concurrency) overlap = true;
        }
        // Drain: every run ends 'done'; time moves on until nothing is pending (bounded).
        for (let i = 0; i < 200 && (open.length > 0 || q.length > 0); i++) {
          for (const run of open.splice(0)) run.finish({ kind: 'done' });
          await flush();
          await clock.advance(1000);
        }
        expect(overlap).toBe(false);
        expect(open).toHaveLength(0);
        expect(q.length).toBe(0);
        for (const [key, addSeq] of lastAdd) {
          expect({ key, ranAfterAdd: (starts.get(key) ?? []).some((s) => s > addSeq) }).toEqual({ key, ranAfterAdd: true });
        }
        await q.stop();
        expect(clock.pending.size).toBe(0);
      }),
      { numRuns: 300 },
    );
  });

  it('backoffDelay stays within [nominal/2, nominal] and never above the cap', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 10_000 }),
        fc.integer({ min: 0, max: 1_000_000 }),
        fc.integer({ min: 1, max: 2000 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (base, extra, failures, random) => {
          const max = base + extra;
          const d = backoffDelay(failures, base, max, random);
          const nominal = Math.min(max, base * 2 ** (failures - 1));
          expect(Number.isFinite(d)).toBe(true);
          expect(d).toBeLessThanOrEqual(max);
          expect(d).toBeLessThanOrEqual(nominal);
          expect(d).toBeGreaterThanOrEqual(nominal / 2);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('the queue waits exactly the backoff delay between consecutive failures', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 500 }),
        fc.integer({ min: 0, max: 20_000 }),
        fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { minLength: 1, maxLength: 15 }),
        async (base, extra, randoms) => {
          const max = base + extra;
          let i = 0;
          const h = harness({ baseDelayMs: base, maxDelayMs: max, random: () => randoms[i++ % randoms.length] });
          h.q.start();
          h.q.add('a');
          await flush();
          for (let n = 1; n <= randoms.length; n++) {
            const end = h.clock.t;
            await h.finish('a', retry);
            await h.clock.advance(max + 1);
            const gap = h.runs[n].startedAt - end;
            expect(gap).toBeCloseTo(backoffDelay(n, base, max, randoms[n - 1]), 6);
            expect(gap).toBeLessThanOrEqual(max);
          }
          await h.finish('a');
          await h.q.stop();
        },
      ),
      { numRuns: 100 },
    );
  });
});
