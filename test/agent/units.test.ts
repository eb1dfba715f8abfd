/** The agent's small parts: reconnect backoff, the state file, the operator address, health-report diffs. */
import { describe, expect, it } from '@jest/globals';
import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Backoff } from '../../dataplane/agent/backoff.js';
import { hostOf } from '../../dataplane/agent/operator-stream.js';
import { HealthReporter } from '../../dataplane/agent/reports.js';
import { SnapshotStore, StateFileError } from '../../dataplane/agent/state-store.js';
import { snapshotToWire } from '../../proto/convert.js';
import { HealthVerdict, ProbeResult, type BackendHealth } from '../../proto/gen/quiclb/v1/distribution.js';
import { KEY, server, snapshot } from '../dataplane/helpers.js';

describe('Backoff', () => {
  it('full jitter below a ceiling that doubles from 0.5 s to the 30 s cap', () => {
    const max = new Backoff({ random: () => 0.999999 });
    const delays = Array.from({ length: 10 }, () => max.next());
    expect(delays.slice(0, 7)).toEqual([499, 999, 1999, 3999, 7999, 15999, 29999]);
    expect(delays.slice(7).every((d) => d === 29999)).toBe(true);
    const min = new Backoff({ random: () => 0 });
    expect(min.next()).toBe(0);
    const rnd = new Backoff();
    for (let i = 0; i < 200; i++) {
      const ceiling = rnd.ceilingMs;
      const d = rnd.next();
      expect(d).toBeGreaterThanOrEqual(0);
      expect(d).toBeLessThan(ceiling);
    }
  });

  it('a stream that lived long enough resets the ceiling; a short one does not', () => {
    const b = new Backoff({ random: () => 0.999999, resetAfterMs: 30_000 });
    for (let i = 0; i < 5; i++) b.next();
    expect(b.ceilingMs).toBe(16_000);
    b.streamEnded(1000);
    expect(b.ceilingMs).toBe(16_000);
    b.streamEnded(30_000);
    expect(b.ceilingMs).toBe(500);
  });

  it('a snapshot from the operator resets the ceiling (a server that restarts twice is reached again at once)', () => {
    const b = new Backoff({ random: () => 0.999999 });
    for (let i = 0; i < 6; i++) b.next();
    expect(b.ceilingMs).toBe(30_000);
    b.reset();
    expect(b.ceilingMs).toBe(500);
    expect(b.next()).toBeLessThan(500);
  });
  it('after contact with a healthy operator the ceiling stops at 4 s for 60 s (a leader change), then grows to 30 s', () => {
    let now = 1_000_000;
    const b = new Backoff({ random: () => 0.999999, now: () => now });
    b.reset(); // a snapshot arrived
    now += 3_600_000; // the stream stays up an hour, then the leader dies
    b.streamEnded(1000); // short-lived or not: the operator behind it had sent a snapshot
    const delays = Array.from({ length: 8 }, () => b.next());
    expect(delays).toEqual([499, 999, 1999, 3999, 3999, 3999, 3999, 3999]);
    now += 59_999;
    expect(b.ceilingMs).toBe(4_000);
    now += 1;
    expect(b.ceilingMs).toBe(30_000); // gone longer than any takeover: the full cap again
  });

  it('a stream that answered but never sent a snapshot does not count as healthy contact', () => {
    let now = 0;
    const b = new Backoff({ random: () => 0.999999, now: () => now });
    for (let i = 0; i < 6; i++) b.next();
    b.streamEnded(500); // connected (metadata) and dropped before any snapshot
    expect(b.ceilingMs).toBe(30_000);
    now += 40_000;
    b.streamEnded(40_000); // lived long: reset, and the operator was healthy until now
    expect(b.ceilingMs).toBe(500);
    for (let i = 0; i < 6; i++) b.next();
    expect(b.ceilingMs).toBe(4_000);
  });

  it('the lower cap never exceeds maxMs', () => {
    const b = new Backoff({ initialMs: 50, maxMs: 300, random: () => 0.999999 });
    b.reset();
    b.streamEnded(10);
    expect(Array.from({ length: 5 }, () => b.next())).toEqual([49, 99, 199, 299, 299]);
  });
});

describe('hostOf (the default TLS name of --operator)', () => {
  it.each([
    ['quiclb-operator.quiclb-system.svc:9443', 'quiclb-operator.quiclb-system.svc'],
    ['localhost:1', 'localhost'],
    ['127.0.0.1:9443', '127.0.0.1'],
    ['[::1]:9443', '::1'],
    ['example', 'example'],
  ])('%s -> %s', (address, host) => expect(hostOf(address)).toBe(host));
});

describe('SnapshotStore (--state-dir)', () => {
  const wire = snapshotToWire(7, 'n7', [snapshot([server('a', '0001', '127.0.0.1', 4433)], { name: 'lb', listen: [{ host: '127.0.0.1', port: 4500, family: 4 }] })]);

  it('writes atomically with mode 0600 (no temporary file left) and reads back the same snapshot', () => {
    const dir = mkdtempSync(join(tmpdir(), 'quiclb-state-'));
    try {
      const store = new SnapshotStore(join(dir, 'sub'));
      expect(store.load()).toBeNull();
      store.save(wire);
      expect(statSync(store.path).mode & 0o777).toBe(0o600);
      expect(readdirSync(join(dir, 'sub'))).toEqual(['snapshot.pb']);
      const back = store.load()!;
      expect(back.version).toBe(7n);
      expect(back.nonce).toBe('n7');
      expect(Buffer.from(back.loadBalancers[0].configs[0].key).equals(KEY)).toBe(true);
      // Overwrite: still 0600, still one file.
      store.save({ ...wire, version: 8n });
      expect(store.load()!.version).toBe(8n);
      expect(statSync(store.path).mode & 0o777).toBe(0o600);
      expect(readdirSync(join(dir, 'sub'))).toEqual(['snapshot.pb']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reports a corrupt file precisely and never returns its content', () => {
    const dir = mkdtempSync(join(tmpdir(), 'quiclb-state-'));
    try {
      const store = new SnapshotStore(dir);
      store.save(wire);
      const good = readFileSync(store.path);
      const cases: [Buffer, RegExp][] = [
        [Buffer.from('hello'), /bad header/],
        [good.subarray(0, good.length - 3), /checksum mismatch/],
        [Buffer.concat([good.subarray(0, 60), Buffer.from([good[60] ^ 1]), good.subarray(61)]), /checksum mismatch/],
      ];
      for (const [bytes, re] of cases) {
        writeFileSync(store.path, bytes);
        expect(() => store.load()).toThrow(StateFileError);
        expect(() => store.load()).toThrow(re);
      }
      if (process.getuid?.() !== 0) {
        chmodSync(store.path, 0o000);
        expect(() => store.load()).toThrow(/cannot read: EACCES/);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('HealthReporter', () => {
  const h = (server: string, state: HealthVerdict, failures = 0): BackendHealth => ({
    loadBalancer: 'lb',
    server,
    state,
    lastResult: failures ? ProbeResult.PROBE_RESULT_FAILURE : ProbeResult.PROBE_RESULT_SUCCESS,
    lastProbeTime: new Date(),
    consecutiveFailures: failures,
    lastRtt: undefined,
    lastError: failures ? 'timeout' : '',
  });
  it('lists every server first, then only the changes (not a new probe time), and everything again after reset()', () => {
    const r = new HealthReporter();
    const ok = HealthVerdict.HEALTH_VERDICT_HEALTHY;
    expect(r.changes([h('a', ok), h('b', ok)]).map((x) => x.server)).toEqual(['a', 'b']);
    expect(r.changes([h('a', ok), h('b', ok)])).toEqual([]);
    expect(r.changes([h('a', ok), h('b', ok, 1)]).map((x) => x.server)).toEqual(['b']);
    expect(r.changes([h('a', ok), h('b', ok, 1), h('c', ok)]).map((x) => x.server)).toEqual(['c']);
    r.reset();
    expect(r.changes([h('a', ok), h('b', ok, 1), h('c', ok)]).map((x) => x.server)).toEqual(['a', 'b', 'c']);
  });
});
