/**
 * Hardening of the batched I/O addon (native/quiclb_io.c): misuse of its shared buffers, exceptions in the batch
 * callback, hostile datagrams, floods, socket and process lifecycle. What could kill the process runs in a child
 * node (a script given to `node --input-type=module`, the addon path in QUICLB_IO_ADDON), so a failure is a
 * failed test, not a dead jest. Skipped when the addon is not built.
 */
import { afterEach, describe, expect, it } from '@jest/globals';
import { spawn, spawnSync } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadIoAddon, CNT, type IoAddon as IoAddonType } from '../../dataplane/io/addon.js';
import { BatchedIo } from '../../dataplane/io/batched-io.js';
import type { DatagramSink, IoUpstream } from '../../dataplane/io/types.js';
import { sleep, waitFor } from './helpers.js';

const { addon, error, file } = loadIoAddon();
const describeAddon = addon !== null ? describe : describe.skip;
if (addon === null) console.warn(`batched I/O addon not available (${error}): its hardening tests are skipped`);

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function udp(type: 'udp4' | 'udp6' = 'udp4'): Promise<Socket> {
  const s = createSocket(type);
  s.bind(0, type === 'udp4' ? '127.0.0.1' : '::1');
  await once(s, 'listening');
  s.setRecvBufferSize(4 << 20);
  s.setSendBufferSize(4 << 20);
  cleanups.push(() => new Promise<void>((r) => s.close(() => r())));
  return s;
}

/** Runs an ES module script in a child node with the addon loaded as `addon`; its last stdout line is JSON. */
async function runChild(script: string, timeoutMs = 15000): Promise<{ code: number | null; signal: string | null; out: unknown; stderr: string }> {
  const prelude = `import { createRequire } from 'node:module'; const addon = createRequire(import.meta.url)(process.env.QUICLB_IO_ADDON);\n`;
  const child = spawn(process.execPath, ['--expose-gc', '--input-type=module', '-e', prelude + script], {
    env: { ...process.env, QUICLB_IO_ADDON: file!, NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
  clearTimeout(timer);
  const last = stdout.trim().split('\n').pop() ?? '';
  let out: unknown;
  try {
    out = JSON.parse(last);
  } catch {
    out = stdout;
  }
  return { code, signal, out, stderr };
}

function makeIo<S extends DatagramSink<string, string>>(sink: S, slots = 256, sampler: ConstructorParameters<typeof BatchedIo>[2] = null): BatchedIo<string, string> {
  const io = new BatchedIo<string, string>(addon!, sink, sampler, { slots });
  cleanups.push(() => io.close());
  return io;
}

describeAddon('batched I/O addon: shared buffers', () => {
  it('a detached (transferred) receive ring is never written again: the context closes and says why', async () => {
    const r = await runChild(`
      import dgram from 'node:dgram';
      let batches = 0, uncaught = null;
      process.on('uncaughtException', (e) => { uncaught = e.message; });
      const ctx = addon.create(8, 2048, () => { batches++; return 0; }, 0);
      const [, port] = addon.openListener(ctx, '127.0.0.1', 0, false, 0);
      const moved = ctx.rx.transfer();
      const s = dgram.createSocket('udp4');
      s.send(Buffer.from('XYZ-payload'), port, '127.0.0.1');
      await new Promise((r) => setTimeout(r, 200));
      let later = null;
      try { addon.localPort(ctx, 0); } catch (e) { later = e.message; }
      console.log(JSON.stringify({ batches, uncaught, later, written: Buffer.from(moved, 0, 11).toString() === 'XYZ-payload', ref: ctx !== null }));
      process.exit(0);
    `);
    expect(r.code).toBe(0);
    expect(r.out).toEqual({
      batches: 0,
      uncaught: expect.stringMatching(/shared buffer was detached/),
      later: expect.stringMatching(/closed or invalid context/),
      written: false,
      ref: true,
    });
  });

  it('a send table detached inside the batch callback is not read: nothing is sent', async () => {
    const r = await runChild(`
      import dgram from 'node:dgram';
      let uncaught = null, got = 0;
      process.on('uncaughtException', (e) => { uncaught = e.message; });
      const backend = dgram.createSocket('udp4');
      await new Promise((r) => backend.bind(0, '127.0.0.1', r));
      backend.on('message', () => got++);
      let ctx, lid;
      ctx = addon.create(8, 2048, () => {
        const up = addon.openUpstream(ctx, lid, 0, '127.0.0.1', backend.address().port);
        const tx = new Int32Array(ctx.tx);
        tx[0] = up; tx[1] = 0; tx[2] = 5;
        ctx.tx.transfer();
        return 1;
      }, 0);
      const [id, port] = addon.openListener(ctx, '127.0.0.1', 0, false, 0);
      lid = id;
      const s = dgram.createSocket('udp4');
      s.send(Buffer.from('hello'), port, '127.0.0.1');
      await new Promise((r) => setTimeout(r, 200));
      console.log(JSON.stringify({ uncaught, got }));
      process.exit(0);
    `);
    expect(r.code).toBe(0);
    expect(r.out).toEqual({ uncaught: expect.stringMatching(/shared buffer was detached/), got: 0 });
  });
});

describeAddon('batched I/O addon: exceptions in the batch callback', () => {
  it('an exception escaping the callback is counted and cleared (no crash); the next batches still run', async () => {
    const r = await runChild(`
      import dgram from 'node:dgram';
      let batches = 0, uncaught = null;
      process.on('uncaughtException', (e) => { uncaught = e.message; });
      const ctx = addon.create(8, 2048, () => { batches++; throw new Error('boom'); }, 0);
      const [, port] = addon.openListener(ctx, '127.0.0.1', 0, false, 0);
      const s = dgram.createSocket('udp4');
      for (let i = 0; i < 3; i++) {
        s.send(Buffer.from('x'), port, '127.0.0.1');
        for (let t = 0; t < 300 && batches === i; t++) await new Promise((r) => setTimeout(r, 10));
      }
      console.log(JSON.stringify({ batches, uncaught, counted: new Float64Array(ctx.counters)[${CNT.callbackErrors}] }));
      process.exit(0);
    `);
    expect(r.code).toBe(0);
    expect(r.out).toEqual({ batches: 3, uncaught: null, counted: 3 });
  });

  it('BatchedIo: a throwing router, error reporter and sampler are counted; the other datagrams of the batch are forwarded', async () => {
    const backend = await udp();
    const got: string[] = [];
    backend.on('message', (m) => got.push(m.toString()));
    let up: IoUpstream | null = null;
    let io: BatchedIo<string, string> | null = null;
    const sink: DatagramSink<string, string> = {
      onClient(l, buf, off, len) {
        const text = buf.toString('latin1', off, off + len);
        if (text.startsWith('bad')) throw new Error(`router bug on ${text}`);
        up ??= io!.openUpstream(listener, { host: '127.0.0.1', port: backend.address().port, family: 4 }, '', 0, 'U');
        io!.sendToServer(up!, buf, off, len);
      },
      onReply() {},
      onError() {
        throw new Error('the error reporter fails too');
      },
    };
    io = makeIo(sink, 64, { every: 1, observe: () => { throw new Error('sampler bug'); } });
    const listener = await io.openListener({ host: '127.0.0.1', port: 0, family: 4 }, { reusePort: false, bufferBytes: 1 << 20 }, 'L');
    const c = await udp();
    for (const t of ['a1', 'bad1', 'a2', 'bad2', 'a3']) c.send(Buffer.from(t), listener.bound.port, '127.0.0.1');
    expect(await waitFor(() => got.length === 3)).toBe(true);
    expect(got).toEqual(['a1', 'a2', 'a3']);
    // two router exceptions, and the sampler's (from the second batch on: it reports the previous batch)
    c.send(Buffer.from('a4'), listener.bound.port, '127.0.0.1');
    expect(await waitFor(() => got.length === 4)).toBe(true);
    expect(io.calls().callbackErrors).toBeGreaterThanOrEqual(3);
  });
});

describeAddon('batched I/O addon: floods', () => {
  it('serves every ready socket in turn when more are ready than one batch holds (no starvation behind a full socket)', () => {
    const order: string[] = [];
    const ids: number[] = [];
    const ports: number[] = [];
    const ctx = addon!.create(
      16,
      2048,
      (n) => {
        const m = new Int32Array(ctx.rxMeta);
        const seen = new Set<number>();
        for (let i = 0; i < n; i++) seen.add(ids.indexOf(m[i * addon!.RX_WORDS]));
        order.push([...seen].join(''));
        return 0;
      },
      0,
    );
    cleanups.push(() => addon!.destroy(ctx));
    for (let i = 0; i < 3; i++) {
      const [id, port] = addon!.openListener(ctx, '127.0.0.1', 0, false, 1 << 20);
      ids.push(id);
      ports.push(port);
    }
    // 200 datagrams queued on each socket while this process's loop is blocked (spawnSync), then drained
    const sender = `const s = require('dgram').createSocket('udp4'); let left = 600;
      for (let k = 0; k < 200; k++) for (const p of ${JSON.stringify(ports)}) s.send(Buffer.alloc(100), p, '127.0.0.1', () => { if (--left === 0) process.exit(0); });`;
    const r = spawnSync(process.execPath, ['-e', sender], { env: { ...process.env, NODE_OPTIONS: '' }, timeout: 10000 });
    expect(r.status).toBe(0);
    return waitFor(() => order.length >= 6).then((ok) => {
      expect(ok).toBe(true);
      // each batch of 16 holds one socket's datagrams; the next batch goes to the next socket
      expect(order.slice(0, 6)).toEqual(['0', '1', '2', '0', '1', '2']);
    });
  });

  it('a flood keeping the sockets readable leaves timers and an HTTP endpoint running: one wake-up is bounded in count and time', async () => {
    let batches = 0;
    let datagrams = 0;
    const sink: DatagramSink<string, string> = {
      onClient() {
        datagrams++;
        const until = process.hrtime.bigint() + 20000n; // 20 µs of routing work per datagram: the router falls behind
        while (process.hrtime.bigint() < until);
      },
      onReply() {},
      onError() {},
    };
    const SLOTS = 256;
    const io = makeIo(sink, SLOTS);
    const ports: number[] = [];
    for (let i = 0; i < 3; i++) ports.push((await io.openListener({ host: '127.0.0.1', port: 0, family: 4 }, { reusePort: false, bufferBytes: 4 << 20 }, `L${i}`)).bound.port);
    const seenBatches = () => {
      const b = io.calls().batches;
      if (b > batches) batches = b;
    };
    const http = createServer((_req, res) => res.end('ok'));
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    cleanups.push(() => new Promise<void>((r) => http.close(() => r())));
    const httpPort = (http.address() as AddressInfo).port;
    // the flood: a child sending 1200-byte datagrams to all three sockets as fast as it can, for 1.5 s
    const flooder = spawn(
      process.execPath,
      [
        '-e',
        `const s = require('dgram').createSocket('udp4'); const b = Buffer.alloc(1200); const ports = ${JSON.stringify(ports)};
         const end = Date.now() + 1500; let k = 0;
         (function burst() { for (let i = 0; i < 300; i++) s.send(b, ports[k++ % 3], '127.0.0.1'); if (Date.now() < end) setImmediate(burst); else setTimeout(() => process.exit(0), 50); })();`,
      ],
      { env: { ...process.env, NODE_OPTIONS: '' }, stdio: 'ignore' },
    );
    cleanups.push(() => {
      if (flooder.exitCode === null) flooder.kill('SIGKILL');
    });
    let last = performance.now();
    let maxGap = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
      seenBatches();
    }, 10);
    await sleep(300); // flood under way
    const t0 = performance.now();
    const answer = await fetch(`http://127.0.0.1:${httpPort}/metrics`).then((r) => r.text());
    const httpMs = performance.now() - t0;
    await once(flooder, 'exit');
    clearInterval(timer);
    seenBatches();
    expect(answer).toBe('ok');
    expect(datagrams).toBeGreaterThan(1000);
    const mean = datagrams / batches;
    expect(mean).toBeGreaterThan(SLOTS / 4); // the sockets had a backlog: batches were large
    expect(mean).toBeLessThanOrEqual(SLOTS);
    // a wake-up handles at most SLOTS datagrams (~5 ms of routing here): timers and the HTTP server keep running
    console.log(`flood: ${datagrams} datagrams in ${batches} batches (mean ${mean.toFixed(0)}), timer max gap ${maxGap.toFixed(1)} ms, HTTP ${httpMs.toFixed(1)} ms`);
    const slow = /asan/.test(process.env.LD_PRELOAD ?? '') ? 4 : 1; // a sanitizer build slows the whole process
    // alone ~20 ms; 250 ms was once exceeded (252) with every other suite running on 2 cores. An unbounded wake-up
    // stalls for the whole 1.5 s flood; the one that took `slots` coalesced messages stalled 575-820 ms.
    expect(maxGap).toBeLessThan(500 * slow);
    expect(httpMs).toBeLessThan(500 * slow);
  });
});

describeAddon('batched I/O addon: values from JS are checked before use', () => {
  /** A context whose batch callback is `onBatch`, one listener, and helpers to read its shared memory. */
  async function rawContext(onBatch: (n: number) => number, slots = 8) {
    const ctx = addon!.create(slots, 2048, (n) => onBatch(n), 0);
    cleanups.push(() => addon!.destroy(ctx));
    const [listener, port] = addon!.openListener(ctx, '127.0.0.1', 0, false, 0);
    return { ctx, listener, port, meta: new Int32Array(ctx.rxMeta), tx: new Int32Array(ctx.tx), counters: new Float64Array(ctx.counters) };
  }

  it('send descriptors outside the ring are dropped and counted, never sent (as empty datagrams)', async () => {
    const backend = await udp();
    const got: Buffer[] = [];
    backend.on('message', (m) => got.push(m));
    let up = -1;
    const r = await rawContext(() => {
      up = addon!.openUpstream(r.ctx, r.listener, 0, '127.0.0.1', backend.address().port);
      const off = r.meta[1];
      const ring = r.ctx.rx.byteLength;
      const entries = [
        [up, -5, 10],
        [up, off, -1],
        [up, ring, 1],
        [up, ring - 4, 8],
        [up, off, 5], // the only valid one
      ];
      entries.forEach((e, i) => r.tx.set(e, i * addon!.TX_WORDS));
      return entries.length;
    });
    const c = await udp();
    c.send(Buffer.from('hello'), r.port, '127.0.0.1');
    expect(await waitFor(() => got.length >= 1)).toBe(true);
    await sleep(50);
    expect(got.map((b) => b.toString())).toEqual(['hello']);
    expect(r.counters[CNT.txServerOther]).toBe(4);
  });

  it('a reply through a listener closed since (its slot reused by a new listener) is counted, not sent from the new socket', async () => {
    const backend = await udp();
    const c = await udp();
    const fromPorts: number[] = [];
    c.on('message', (_m, rinfo) => fromPorts.push(rinfo.port));
    let up = -1;
    let replyTo = false;
    const r = await rawContext((n) => {
      if (!replyTo) {
        up = addon!.openUpstream(r.ctx, r.listener, 0, '127.0.0.1', backend.address().port);
        return 0;
      }
      for (let i = 0; i < n; i++) r.tx.set([~up, r.meta[i * addon!.RX_WORDS + 1], r.meta[i * addon!.RX_WORDS + 2]], i * addon!.TX_WORDS);
      return n;
    });
    c.send(Buffer.from('hi'), r.port, '127.0.0.1');
    expect(await waitFor(() => up >= 0)).toBe(true);
    addon!.close(r.ctx, r.listener);
    const [second, secondPort] = addon!.openListener(r.ctx, '127.0.0.1', 0, false, 0);
    expect(second & 0xfffff).toBe(r.listener & 0xfffff); // the same slot, a new generation
    replyTo = true;
    backend.send(Buffer.from('reply'), addon!.localPort(r.ctx, up), '127.0.0.1');
    expect(await waitFor(() => r.counters[CNT.txClosed] === 1)).toBe(true);
    await sleep(50);
    expect(fromPorts).not.toContain(secondPort);
    expect(fromPorts).toEqual([]);
  });

  it('ports outside 0..65535 are refused, not wrapped', async () => {
    const r = await rawContext(() => 0);
    const taken = await udp();
    expect(() => addon!.openListener(r.ctx, '127.0.0.1', 65536 + taken.address().port, false, 0)).toThrow(/port 0\.\.65535/);
    expect(() => addon!.openListener(r.ctx, '127.0.0.1', 65536, false, 0)).toThrow(/port 0\.\.65535/);
    // openUpstream answers -errno (EINVAL) for a port it cannot connect to
    expect(addon!.openUpstream(r.ctx, r.listener, 0, '127.0.0.1', 65536 + taken.address().port)).toBe(-22);
    expect(addon!.openUpstream(r.ctx, r.listener, 0, '127.0.0.1', 0)).toBe(-22);
  });
});

describeAddon('batched I/O addon: hostile datagrams', () => {
  /** A relay: client datagrams go to `backend` through one upstream per client port, replies come back. */
  async function relay(family: 4 | 6) {
    const host = family === 4 ? '127.0.0.1' : '::1';
    const type = family === 4 ? 'udp4' : 'udp6';
    const ups = new Map<number, IoUpstream>();
    let io: BatchedIo<string, IoUpstream> | null = null;
    const backend = await udp(type);
    const atBackend: Buffer[] = [];
    backend.on('message', (m, rinfo) => {
      atBackend.push(m);
      backend.send(m, rinfo.port, rinfo.address); // echo
    });
    const sink: DatagramSink<string, IoUpstream> = {
      onClient(_l, buf, off, len, _address, port) {
        let up = ups.get(port);
        if (up === undefined) {
          up = io!.openUpstream(listener, { host, port: backend.address().port, family }, '', 0, null as unknown as IoUpstream)!;
          ups.set(port, up);
        }
        io!.sendToServer(up, buf, off, len);
      },
      onReply(_u, buf, off, len) {
        io!.sendToClient([...ups.values()][0], buf, off, len);
      },
      onError() {},
    };
    io = new BatchedIo<string, IoUpstream>(addon!, sink, null, { slots: 64 });
    cleanups.push(() => io.close());
    const listener = await io.openListener({ host, port: 0, family }, { reusePort: false, bufferBytes: 4 << 20 }, 'L');
    const client = await udp(type);
    const atClient: Buffer[] = [];
    client.on('message', (m) => atClient.push(m));
    return { io, host, port: listener.bound.port, client, atClient, atBackend };
  }

  for (const family of [4, 6] as const) {
    it(`IPv${family}: empty datagrams and the largest UDP datagram (${family === 4 ? 65507 : 65527} bytes) are relayed intact both ways`, async () => {
      const r = await relay(family);
      const big = Buffer.alloc(family === 4 ? 65507 : 65527);
      for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
      r.client.send(Buffer.alloc(0), r.port, r.host);
      await sleep(20);
      r.client.send(big, r.port, r.host);
      await sleep(20);
      r.client.send(Buffer.alloc(0), r.port, r.host);
      expect(await waitFor(() => r.atClient.length === 3)).toBe(true);
      expect(r.atBackend.map((b) => b.length)).toEqual([0, big.length, 0]);
      expect(r.atClient.map((b) => b.length)).toEqual([0, big.length, 0]);
      expect(r.atClient[1].equals(big)).toBe(true);
      const e = r.io.errors();
      expect(e.truncated + e.receive + e.toServer.other + e.toClient.other).toBe(0);
    });
  }

  it('ICMP errors on an upstream socket are read once each (MSG_ERRQUEUE is off): no busy loop while nothing arrives', async () => {
    const gone = await udp();
    const closedPort = gone.address().port;
    await new Promise<void>((r) => gone.close(() => r()));
    cleanups.pop();
    let up: IoUpstream | null = null;
    let io: BatchedIo<string, string> | null = null;
    const sink: DatagramSink<string, string> = {
      onClient(_l, buf, off, len) {
        up ??= io!.openUpstream(listener, { host: '127.0.0.1', port: closedPort, family: 4 }, '', 0, 'U');
        io!.sendToServer(up!, buf, off, len);
      },
      onReply() {},
      onError() {},
    };
    io = makeIo(sink);
    const listener = await io.openListener({ host: '127.0.0.1', port: 0, family: 4 }, { reusePort: false, bufferBytes: 0 }, 'L');
    const c = await udp();
    for (let i = 0; i < 5; i++) {
      c.send(Buffer.from('x'), listener.bound.port, '127.0.0.1');
      await sleep(10);
    }
    expect(await waitFor(() => io.errors().toServer.refused >= 1)).toBe(true);
    await sleep(50);
    const calls0 = io.calls().recv;
    // The main thread's CPU only (the addon polls on it): the process's would count V8's compiler and GC threads,
    // busy with what earlier tests left behind (one CI run measured 404 ms of process CPU in these 300 ms).
    const cpu0 = process.threadCpuUsage();
    await sleep(300);
    const cpu = process.threadCpuUsage(cpu0);
    expect(io.calls().recv - calls0).toBe(0);
    expect((cpu.user + cpu.system) / 1000).toBeLessThan(100); // ms of CPU in 300 ms: idle, not spinning
  });
});

describeAddon('batched I/O addon: lifecycle', () => {
  const fdCount = () => readdirSync('/proc/self/fd').length;

  it('opening and closing 2000 sockets (listeners and upstreams), then destroying, leaves no descriptor behind', async () => {
    await sleep(20);
    const before = fdCount();
    const backend = await udp();
    const afterBackend = fdCount();
    let ctx: ReturnType<IoAddonType['create']> | null = null;
    let listener = -1;
    const upstreams: number[] = [];
    ctx = addon!.create(8, 2048, () => {
      for (let i = 0; i < 1000; i++) upstreams.push(addon!.openUpstream(ctx!, listener, 0, '127.0.0.1', backend.address().port));
      return 0;
    }, 0);
    const listeners: number[] = [];
    for (let i = 0; i < 1000; i++) listeners.push(addon!.openListener(ctx, '127.0.0.1', 0, false, 0)[0]);
    listener = listeners[0];
    const c = await udp();
    c.send(Buffer.from('x'), addon!.localPort(ctx, listener), '127.0.0.1');
    expect(await waitFor(() => upstreams.length === 1000)).toBe(true);
    expect(upstreams.every((id) => id >= 0)).toBe(true);
    expect(fdCount()).toBeGreaterThanOrEqual(afterBackend + 2001); // + the client socket c
    for (const id of [...upstreams, ...listeners.slice(500)]) addon!.close(ctx, id);
    addon!.destroy(ctx); // closes the 500 listeners still open
    addon!.destroy(ctx);
    await sleep(20); // the sockets' libuv handles finish closing on the next loop turn
    await new Promise<void>((r) => c.close(() => r()));
    cleanups.pop();
    expect(fdCount()).toBe(afterBackend);
    expect(afterBackend - before).toBe(1);
  });

  it("destroy() inside the batch callback: its batch's sends are dropped, nothing crashes, later calls say closed", async () => {
    const backend = await udp();
    const got: Buffer[] = [];
    backend.on('message', (m) => got.push(m));
    let ctx: ReturnType<IoAddonType['create']> | null = null;
    let listener = -1;
    let batches = 0;
    ctx = addon!.create(8, 2048, () => {
      batches++;
      const up = addon!.openUpstream(ctx!, listener, 0, '127.0.0.1', backend.address().port);
      new Int32Array(ctx!.tx).set([up, 0, 1], 0);
      addon!.destroy(ctx!);
      return 1;
    }, 0);
    const [id, port] = addon!.openListener(ctx, '127.0.0.1', 0, false, 0);
    listener = id;
    const c = await udp();
    c.send(Buffer.from('x'), port, '127.0.0.1');
    expect(await waitFor(() => batches === 1)).toBe(true);
    c.send(Buffer.from('y'), port, '127.0.0.1');
    await sleep(50);
    expect(batches).toBe(1);
    expect(got).toEqual([]);
    expect(() => addon!.openListener(ctx, '127.0.0.1', 0, false, 0)).toThrow(/closed or invalid context/);
    expect(() => addon!.close(ctx, id)).not.toThrow();
  });

  it('the process exits cleanly with engines open: process.exit, an uncaught exception, and garbage collection of the context', async () => {
    const script = (how: string) => `
      const ctxs = [];
      for (let k = 0; k < 3; k++) { const ctx = addon.create(64, 2048, () => 0, 1); for (let i = 0; i < 5; i++) addon.openListener(ctx, '127.0.0.1', 0, false, 0); ctxs.push(ctx); }
      ${how}`;
    const exit = await runChild(script('console.log(JSON.stringify("exiting")); process.exit(0);'));
    expect([exit.code, exit.signal, exit.out]).toEqual([0, null, 'exiting']);
    const thrown = await runChild(script('setTimeout(() => { throw new Error("uncaught with engines open"); }, 10);'));
    expect([thrown.code, thrown.signal]).toEqual([1, null]);
    expect(thrown.stderr).toContain('uncaught with engines open');
    // unreachable contexts are finalized by the garbage collector: their sockets close
    const gc = await runChild(`
      import { readdirSync, readFileSync } from 'node:fs';
      const before = readdirSync('/proc/self/fd').length;
      (() => { for (let k = 0; k < 3; k++) { const ctx = addon.create(64, 2048, () => 0, 1); for (let i = 0; i < 5; i++) addon.openListener(ctx, '127.0.0.1', 0, false, 0); } })();
      const open = readdirSync('/proc/self/fd').length;
      for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 20)); }
      console.log(JSON.stringify({ opened: open - before, left: readdirSync('/proc/self/fd').length - before }));
      process.exit(0);`);
    expect(gc.out).toEqual({ opened: 15, left: 0 }); // 3 contexts x 5 listeners (a context holds no descriptor of its own without busy-poll)
  });

  it('worker threads: each loads the addon and runs its own engine; exiting or terminated with engines open leaves no descriptor', async () => {
    const r = await runChild(`
      import { Worker, isMainThread } from 'node:worker_threads';
      import { readdirSync, readFileSync } from 'node:fs';
      import dgram from 'node:dgram';
      const count = () => readdirSync('/proc/self/fd').length;
      const code = \`
        const { parentPort, workerData } = require('node:worker_threads');
        const addon = require(process.env.QUICLB_IO_ADDON);
        let got = 0;
        const ctx = addon.create(64, 2048, (n) => { got += n; parentPort.postMessage({ got }); return 0; }, 1);
        const [, port] = addon.openListener(ctx, '127.0.0.1', 0, false, 0);
        for (let i = 0; i < 4; i++) addon.openListener(ctx, '127.0.0.1', 0, false, 0);
        parentPort.postMessage({ port });
        if (workerData === 'exit') parentPort.on('message', () => process.exit(0));
      \`;
      const warm = new Worker('1', { eval: true, execArgv: [] });
      await new Promise((r) => warm.on('exit', r));
      const before = count();
      const s = dgram.createSocket('udp4');
      await new Promise((r) => s.bind(0, '127.0.0.1', r));
      const afterSocket = count();
      let delivered = 0;
      for (let i = 0; i < 12; i++) {
        const how = i % 2 ? 'exit' : 'terminate';
        const w = new Worker(code, { eval: true, execArgv: [], workerData: how });
        const port = await new Promise((r) => w.once('message', (m) => r(m.port)));
        const got = new Promise((r) => w.on('message', (m) => { if (m.got) r(m.got); }));
        s.send(Buffer.from('x'), port, '127.0.0.1');
        delivered += await got;
        if (how === 'exit') { w.postMessage('exit'); await new Promise((r) => w.on('exit', r)); }
        else await w.terminate();
      }
      await new Promise((r) => setTimeout(r, 50));
      console.log(JSON.stringify({ delivered, leaked: count() - afterSocket, socket: afterSocket - before }));
      process.exit(0);
    `);
    expect({ code: r.code, stderr: r.code === 0 ? "" : r.stderr }).toEqual({ code: 0, stderr: "" });
    expect(r.out).toEqual({ delivered: 12, leaked: 0, socket: 1 });
  });
});

describeAddon('batched I/O addon: create()', () => {
  it('refuses a batch callback that is not a function with a TypeError, and leaks nothing when it refuses', () => {
    const before = readdirSync('/proc/self/fd').length;
    // (errors thrown by the addon come from the main realm, not jest's: compare names)
    const thrown = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return `${(e as Error).name}: ${(e as Error).message}`;
      }
      return 'nothing thrown';
    };
    for (let i = 0; i < 50; i++) expect(thrown(() => addon!.create(8, 2048, 'not a function' as unknown as () => number, 0))).toBe('TypeError: create: onBatch must be a function');
    expect(thrown(() => addon!.create(0, 2048, () => 0, 0))).toMatch(/^RangeError/);
    expect(thrown(() => addon!.create(8, 65537, () => 0, 0))).toMatch(/^RangeError/);
    expect(readdirSync('/proc/self/fd').length).toBe(before);
  });
});

describeAddon('BatchedIo: closed upstreams', () => {
  it('a send on an upstream closed earlier in the batch is refused (false: the router counts the drop), not queued', async () => {
    const backend = await udp();
    const got: Buffer[] = [];
    backend.on('message', (m) => got.push(m));
    const results: boolean[] = [];
    let io: BatchedIo<string, string> | null = null;
    const sink: DatagramSink<string, string> = {
      onClient(_l, buf, off, len) {
        const up = io!.openUpstream(listener, { host: '127.0.0.1', port: backend.address().port, family: 4 }, '', 0, 'U')!;
        results.push(io!.sendToServer(up, buf, off, len));
        io!.closeUpstream(up);
        results.push(io!.sendToServer(up, buf, off, len));
        const before = io!.errors().toClient.other;
        io!.sendToClient(up, buf, off, len);
        results.push(io!.errors().toClient.other === before + 1);
      },
      onReply() {},
      onError() {},
    };
    io = makeIo(sink);
    const listener = await io.openListener({ host: '127.0.0.1', port: 0, family: 4 }, { reusePort: false, bufferBytes: 0 }, 'L');
    const c = await udp();
    c.send(Buffer.from('x'), listener.bound.port, '127.0.0.1');
    expect(await waitFor(() => results.length === 3)).toBe(true);
    expect(results).toEqual([true, false, true]);
  });
});

describeAddon('batched I/O addon: socket table', () => {
  const softFdLimit = Number(/Max open files\s+(\d+)/.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1] ?? 0);
  const itBig = softFdLimit >= 13000 ? it : it.skip;

  /** Microseconds per close + open with `n` sockets open (the best of three rounds of 2000). */
  function churnCost(n: number): number {
    const ctx = addon!.create(8, 2048, () => 0, 0);
    try {
      const ids = Array.from({ length: n }, () => addon!.openListener(ctx, '127.0.0.1', 0, false, 0)[0]);
      let best = Infinity;
      let x = 12345;
      for (let round = 0; round < 3; round++) {
        const t0 = process.hrtime.bigint();
        for (let k = 0; k < 2000; k++) {
          x = (x * 1103515245 + 12345) & 0x7fffffff;
          const j = x % n;
          addon!.close(ctx, ids[j]);
          ids[j] = addon!.openListener(ctx, '127.0.0.1', 0, false, 0)[0];
        }
        best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1000 / 2000);
      }
      return best;
    } finally {
      addon!.destroy(ctx);
    }
  }

  itBig('a new socket costs the same with 12000 open as with 100 (a free list, not a scan of the table: peers open flows)', async () => {
    const small = churnCost(100);
    await sleep(20);
    const big = churnCost(12000);
    await sleep(20); // the closed sockets' libuv handles are freed on the next loop turn
    console.log(`socket churn: ${small.toFixed(1)} µs with 100 open, ${big.toFixed(1)} µs with 12000 open`);
    expect(big / small).toBeLessThan(1.9); // 2.4-2.9 with the scan (it grew with the table), 1.3-1.4 with the free list
  });

  /**
   * Microseconds per datagram to take k datagrams from each of n listeners, all queued at once: a child process sends
   * them while this process's loop is blocked (spawnSync), so the drain alone is timed.
   */
  async function backlogCost(n: number, k: number): Promise<number> {
    let got = 0;
    const ctx = addon!.create(256, 2048, (count: number) => {
      got += count;
      return 0;
    }, 0);
    try {
      const ports = Array.from({ length: n }, () => addon!.openListener(ctx, '127.0.0.1', 0, false, 1 << 16)[1]);
      const send = `const s = require('node:dgram').createSocket('udp4'); const ports = ${JSON.stringify(ports)};
        s.bind(0, '127.0.0.1', () => { s.setSendBufferSize(8 << 20); let left = ports.length * ${k}; const b = Buffer.alloc(64, 1);
          for (let r = 0; r < ${k}; r++) for (const p of ports) s.send(b, p, '127.0.0.1', () => { if (--left === 0) s.close(); }); });`;
      const child = spawnSync(process.execPath, ['-e', send], { stdio: 'inherit', timeout: 30000 });
      expect(child.status).toBe(0);
      const t0 = process.hrtime.bigint();
      expect(await waitFor(() => got === n * k, 30000)).toBe(true);
      return Number(process.hrtime.bigint() - t0) / 1000 / (n * k);
    } finally {
      addon!.destroy(ctx);
    }
  }

  itBig('a backlog on more sockets than libuv takes per poll costs per datagram what a small one does', async () => {
    // Level-triggered readiness of sockets a wake-up's budget did not reach made libuv poll again and again while its
    // 1024-event buffer came back full (up to 48 times per wake-up): draining 3000 listeners cost ~10x per datagram.
    const small = await backlogCost(500, 20);
    await sleep(20);
    const big = await backlogCost(3000, 10);
    await sleep(20);
    console.log(`backlog: ${small.toFixed(2)} µs per datagram on 500 sockets, ${big.toFixed(2)} µs on 3000`);
    expect(big / small).toBeLessThan(3);
  });
});
