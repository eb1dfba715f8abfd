/**
 * The batched I/O path: the native addon (native/quiclb_io.c) owns the sockets, receives with recvmmsg into a
 * shared ring and calls onBatch() once per batch; each datagram is routed in place (buffer = the ring, offset,
 * length) and forwarded by writing a send descriptor, sent with sendmmsg when onBatch returns (a coalesced UDP GRO
 * message arrives already split: one entry per datagram, pointing inside its slot). Nothing is
 * allocated per datagram: client addresses come from AddressCache, replies name their upstream socket (the addon
 * knows its client and listener).
 */
import { formatSocketAddress } from '../../lib/config/address.js';
import type { SocketAddress } from '../../lib/config/snapshot.js';
import { AddressCache } from './address-cache.js';
import { CNT, IO_FLAGS, type AddonContext, type IoAddon } from './addon.js';
import { countPortChoice, type DatagramIo, type DatagramSink, type GroState, type IoCallCounts, type IoErrorCounts, type IoListener, type IoUpstream, type LatencySampler, type ListenOptions, type PortChoiceCounts } from './types.js';

const SLOT_MASK = (1 << 20) - 1;
export const BUSY_POLL_MAX_US = 1000;

/** The busy-poll setting in force: the option, else QUICLB_IO_BUSY_POLL_US, else 0 (off); throws when out of range. */
export function busyPollUs(option: number | undefined): number {
  const env = process.env.QUICLB_IO_BUSY_POLL_US;
  const source = option !== undefined ? 'busyPollUs' : 'QUICLB_IO_BUSY_POLL_US';
  const value = option ?? (env === undefined || env.trim() === '' ? 0 : /^\s*\d+\s*$/.test(env) ? Number(env) : NaN);
  if (!Number.isInteger(value) || value < 0 || value > BUSY_POLL_MAX_US)
    throw new Error(`${source}: expected whole microseconds 0..${BUSY_POLL_MAX_US}, got ${JSON.stringify(option ?? env)}`);
  return value;
}

class BatchedListener<L> implements IoListener {
  closed = false;
  constructor(
    readonly id: number,
    readonly bound: SocketAddress,
    readonly owner: L,
  ) {}
}

class BatchedUpstream<U> implements IoUpstream {
  closed = false;
  constructor(
    readonly id: number,
    readonly owner: U,
  ) {}
}

export interface BatchedOptions {
  /** Datagrams per batch (default 256). */
  slots?: number;
  /**
   * Bytes per receive slot: larger datagrams are dropped and counted (default 65536, so that any UDP datagram fits
   * as on the dgram path; the kernel only touches the pages a datagram fills).
   */
  slotSize?: number;
  /** UDP GSO for runs of same-size datagrams to one destination (default: on unless QUICLB_IO_GSO=0). */
  gso?: boolean;
  /**
   * UDP GRO on every socket, where the kernel has it (default: on unless QUICLB_IO_GRO=0): a coalesced train of
   * datagrams is received as one message and split back into its datagrams, each routed on its own.
   */
  gro?: boolean;
  /** Datagrams per batch call (default 8 per slot): coalesced messages beyond it go in a further call. */
  entries?: number;
  /**
   * Busy-poll, in microseconds (0..1000; default: QUICLB_IO_BUSY_POLL_US, else 0 = off): after a wake-up that moved
   * datagrams, keep polling the sockets until this long passes without one, so the next datagram of a busy flow is
   * taken without a sleep and a wake-up (less CPU per datagram and a shorter tail at moderate rates, spinning CPU
   * after traffic; a wake-up returns to the event loop within 1 ms whatever comes). Nothing spins while idle.
   */
  busyPollUs?: number;
  /**
   * Hold the event loop (default: on unless QUICLB_IO_HOLD_LOOP=0): after a batch, while nothing else in the process
   * has work (no timer due, no other I/O ready, no immediate), the addon waits for the next datagram itself and
   * routes it without an event-loop iteration (less CPU per datagram, a shorter tail); anything else ready ends the
   * wait at once. Off (holdLoop reads false) under busy-poll, which keeps the loop itself, and before libuv 1.44.
   */
  holdLoop?: boolean;
  /** Tests only: behave as on a kernel without UDP_GRO. */
  simulateNoGro?: boolean;
}

export class BatchedIo<L, U> implements DatagramIo<L, U> {
  readonly path = 'batched' as const;
  private readonly ctx: AddonContext;
  private readonly rx: Buffer;
  private readonly meta: Int32Array;
  private readonly metaBytes: Uint8Array;
  private readonly tx: Int32Array;
  private readonly counters: Float64Array;
  private readonly rxWords: number;
  private readonly txWords: number;
  /** Datagrams (rxMeta and tx entries) per batch call. */
  private readonly entries: number;
  /** UDP GRO in force, and why it is unavailable when it is. */
  readonly gro: GroState;
  readonly groError: string | null;
  /** Busy-poll after data, microseconds (0: off). */
  readonly busyPollUs: number;
  /** The loop is held after a batch (asked for, and the addon can). */
  readonly holdLoop: boolean;
  private readonly sockets: (BatchedListener<L> | BatchedUpstream<U> | null)[] = [];
  private readonly addresses = new AddressCache();
  private readonly ports: PortChoiceCounts = { hashed: 0, probed: 0, kernel: 0 };
  /** Index of the datagram being handled in the current batch, -1 outside a batch. */
  private current = -1;
  private ntx = 0;
  private sampleLeft: number;
  private closed = false;

  constructor(
    private readonly addon: IoAddon,
    private readonly sink: DatagramSink<L, U>,
    private readonly sampler: LatencySampler | null = null,
    options: BatchedOptions = {},
  ) {
    const slots = options.slots ?? 256;
    const gso = options.gso ?? process.env.QUICLB_IO_GSO !== '0';
    const gro = options.gro ?? process.env.QUICLB_IO_GRO !== '0';
    const hold = options.holdLoop ?? process.env.QUICLB_IO_HOLD_LOOP !== '0';
    const flags =
      (gso ? IO_FLAGS.gso : 0) | (gro ? IO_FLAGS.gro : 0) | (hold ? IO_FLAGS.holdLoop : 0) | (options.simulateNoGro === true ? IO_FLAGS.simulateNoGro : 0);
    this.busyPollUs = busyPollUs(options.busyPollUs);
    this.ctx = addon.create(slots, options.slotSize ?? 65536, this.onBatch, flags, options.entries, this.busyPollUs);
    this.gro = this.ctx.gro ? 'on' : gro ? 'unavailable' : 'off';
    this.groError = this.ctx.groError ?? null;
    this.holdLoop = this.ctx.holdLoop;
    this.rx = Buffer.from(this.ctx.rx);
    this.meta = new Int32Array(this.ctx.rxMeta);
    this.metaBytes = new Uint8Array(this.ctx.rxMeta);
    this.tx = new Int32Array(this.ctx.tx);
    this.counters = new Float64Array(this.ctx.counters);
    this.rxWords = addon.RX_WORDS;
    this.txWords = addon.TX_WORDS;
    this.entries = this.meta.length / this.rxWords;
    this.sampleLeft = sampler?.every ?? 0;
  }

  /**
   * Never throws: an exception of the sink or the sampler is counted (callbackErrors) and reported to
   * sink.onError, and the rest of the batch is still handled and sent.
   */
  private readonly onBatch = (count: number): number => {
    this.ntx = 0;
    const m = this.meta;
    const w = this.rxWords;
    const sink = this.sink;
    const rx = this.rx;
    for (let i = 0; i < count; i++) {
      const b = i * w;
      const id = m[b];
      const s = this.sockets[id & SLOT_MASK];
      if (s === undefined || s === null || s.id !== id || s.closed) continue;
      this.current = i;
      try {
        if (s instanceof BatchedListener) {
          const address = m[b + 4] === 4 ? this.addresses.ipv4(this.metaBytes, (b + 6) * 4) : this.addresses.ipv6(m, b + 6, this.metaBytes);
          sink.onClient(s.owner, rx, m[b + 1], m[b + 2], address, m[b + 3]);
        } else sink.onReply(s.owner, rx, m[b + 1], m[b + 2]);
      } catch (e) {
        this.callbackError(s instanceof BatchedListener ? 'to_server' : 'to_client', e);
      }
    }
    this.current = -1;
    if (this.sampler !== null) {
      this.sampleLeft -= count;
      if (this.sampleLeft <= 0) {
        this.sampleLeft += this.sampler.every;
        const ns = this.counters[CNT.lastBatchNs];
        try {
          if (ns > 0) this.sampler.observe(ns / 1e9); // the previous batch's arrival-to-send time
        } catch (e) {
          this.callbackError('to_client', e);
        }
      }
    }
    return this.ntx;
  };

  private callbackError(direction: 'to_server' | 'to_client', e: unknown): void {
    this.counters[CNT.callbackErrors]++;
    try {
      this.sink.onError(direction, e instanceof Error ? e : String(e), null, false);
    } catch {
      // counted above; a failing error reporter must not stop the batch
    }
  }

  async openListener(a: SocketAddress, options: ListenOptions, owner: L): Promise<IoListener> {
    let id: number, port: number;
    try {
      [id, port] = this.addon.openListener(this.ctx, a.host, a.port, options.reusePort, options.bufferBytes);
    } catch (e) {
      throw new Error(`cannot listen on ${formatSocketAddress(a)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
    }
    const l = new BatchedListener<L>(id, { host: a.host, port, family: a.family }, owner);
    this.sockets[id & SLOT_MASK] = l;
    return l;
  }

  async closeListener(l: IoListener): Promise<void> {
    const bl = l as BatchedListener<L>;
    if (bl.closed) return;
    bl.closed = true;
    if (this.sockets[bl.id & SLOT_MASK] === bl) this.sockets[bl.id & SLOT_MASK] = null;
    if (!this.closed) this.addon.close(this.ctx, bl.id);
  }

  openUpstream(listener: IoListener, server: SocketAddress, _clientAddress: string, _clientPort: number, owner: U, localPorts: Int32Array | null = null): IoUpstream | null {
    if (this.current < 0 || this.closed) return null;
    const count = localPorts === null ? 0 : localPorts[0];
    const id = this.addon.openUpstream(this.ctx, (listener as BatchedListener<L>).id, this.current, server.host, server.port, localPorts ?? undefined);
    if (id < 0) return null;
    if (localPorts !== null) {
      // the index of the port taken; anything else (an addon that ignored the ports leaves the count): the kernel's
      const taken = localPorts[0];
      countPortChoice(this.ports, taken >= 0 && taken < count ? taken : -1);
    }
    const up = new BatchedUpstream<U>(id, owner);
    this.sockets[id & SLOT_MASK] = up;
    return up;
  }

  closeUpstream(u: IoUpstream): void {
    const up = u as BatchedUpstream<U>;
    if (up.closed) return;
    up.closed = true;
    if (this.sockets[up.id & SLOT_MASK] === up) this.sockets[up.id & SLOT_MASK] = null;
    if (!this.closed) this.addon.close(this.ctx, up.id);
  }

  /** False for a closed upstream too (the caller counts the drop as to_server; its id may be reused meanwhile). */
  sendToServer(u: IoUpstream, buf: Buffer, off: number, len: number): boolean {
    const up = u as BatchedUpstream<U>;
    return !up.closed && this.queue(up.id, buf, off, len);
  }

  sendToClient(u: IoUpstream, buf: Buffer, off: number, len: number): void {
    const up = u as BatchedUpstream<U>;
    if (up.closed || !this.queue(~up.id, buf, off, len)) this.counters[CNT.txClosed]++;
  }

  /** A send descriptor for the datagram in the ring; false outside a batch or for another buffer. */
  private queue(target: number, buf: Buffer, off: number, len: number): boolean {
    const n = this.ntx;
    if (buf !== this.rx || this.current < 0 || n >= this.entries) return false;
    const t = this.tx;
    const b = n * this.txWords;
    t[b] = target;
    t[b + 1] = off;
    t[b + 2] = len;
    this.ntx = n + 1;
    return true;
  }

  errors(): IoErrorCounts {
    const c = this.counters;
    return {
      toServer: { refused: c[CNT.txServerRefused] + c[CNT.rxIcmp], full: c[CNT.txServerFull], other: c[CNT.txServerOther] },
      toClient: { refused: c[CNT.txClientRefused], full: c[CNT.txClientFull], other: c[CNT.txClientOther] + c[CNT.txClosed] },
      truncated: c[CNT.rxTruncated],
      receive: c[CNT.rxOther],
      stray: c[CNT.rxStray],
    };
  }

  portChoices(): PortChoiceCounts {
    return { ...this.ports };
  }

  /** The addon's call counters (recvmmsg and sendmmsg calls, batches), for tests and the benchmark. */
  calls(): IoCallCounts {
    const c = this.counters;
    return {
      recv: c[CNT.rxCalls],
      send: c[CNT.txCalls],
      batches: c[CNT.batches],
      gsoMessages: c[CNT.gsoMessages],
      gsoFallbacks: c[CNT.gsoFallbacks],
      gro: this.gro,
      groMessages: c[CNT.groMessages],
      groDatagrams: c[CNT.groDatagrams],
      entriesFull: c[CNT.entriesFull],
      callbackErrors: c[CNT.callbackErrors],
      busyPollUs: this.busyPollUs,
      busyPollHits: c[CNT.busyPollHits],
      busyPollSeconds: c[CNT.busyPollNs] / 1e9,
      holdLoop: this.holdLoop,
      heldWakeups: c[CNT.heldWakeups],
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.addon.destroy(this.ctx);
  }
}
