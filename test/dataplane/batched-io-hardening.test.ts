/**
 * Hardening of the batched I/O addon (native/quiclb_io.c): misuse of its shared buffers, exceptions in the batch
 * callback, hostile datagrams, floods, socket and process lifecycle. What could kill the process runs in a child
 * node (a script given to `node --input-type=module`, the addon path in QUICLB_IO_ADDON), so a failure is a
 * failed test, not a dead jest. Skipped when the addon is not built.
 */
import { afterEach, describe, expect, it } from '@jest/globals';
import { spawn } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { loadIoAddon, CNT } from '../../dataplane/io/addon.js';
import { BatchedIo } from '../../dataplane/io/batched-io.js';
import type { DatagramSink, IoUpstream } from '../../dataplane/io/types.js';
import { waitFor } from './helpers.js';

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
      for (let i = 0; i < 3; i++) { s.send(Buffer.from('x'), port, '127.0.0.1'); await new Promise((r) => setTimeout(r, 50)); }
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
