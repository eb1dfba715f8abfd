/**
 * The data plane's datagram I/O, one interface with two implementations (dataplane/io/select.ts picks one):
 * - batched (batched-io.ts): the native addon (native/quiclb_io.c): recvmmsg/sendmmsg, one JS call per batch,
 *   datagrams routed and forwarded in place in a shared receive ring;
 * - dgram (dgram-io.ts): node:dgram, one 'message' event and one send per datagram (any platform).
 * The Dataplane owns the routing; the I/O layer owns the sockets and hands it one datagram at a time as
 * (buffer, offset, length), with no Buffer, object or native crossing per datagram on the batched path.
 */
import type { SocketAddress } from '../../lib/config/snapshot.js';
import { IO_CHOICES, type IoChoice } from '../../lib/config/standalone.js';

/** The option: auto = batched when the addon loads (Linux), else dgram. */
export { IO_CHOICES as IO_PATHS, type IoChoice };
/** The path a data plane runs. */
export type IoPath = 'batched' | 'dgram';

/** Send errors by direction and reason (counted, never thrown). */
export interface IoErrorCounts {
  /** client -> server: ECONNREFUSED (an ICMP error on the connected upstream socket), full buffer, other. */
  toServer: { refused: number; full: number; other: number };
  /** server -> client. */
  toClient: { refused: number; full: number; other: number };
  /**
   * Datagrams that did not fit a receive slot, dropped (batched path): larger than a slot, or the datagrams of a
   * coalesced (UDP GRO) message beyond its slot or beyond 256.
   */
  truncated: number;
  /** Receive errors other than ICMP reports. */
  receive: number;
  /**
   * Datagrams an upstream socket received that were not from its server, dropped: sent to its port after the bind
   * and before the connect() of stable upstream ports (a connected socket's kernel filters other senders later).
   * The server's own datagrams queued in that window are not counted (docs/dataplane-agent.md).
   */
  stray: number;
}

/** Upstream sockets by how their local port was chosen: the first candidate, a later one, the kernel (all in use). */
export interface PortChoiceCounts {
  hashed: number;
  probed: number;
  kernel: number;
}

/** Counts one upstream socket's port choice (the index of the candidate taken, -1: the kernel's choice). */
export function countPortChoice(c: PortChoiceCounts, index: number): void {
  if (index < 0) c.kernel++;
  else if (index === 0) c.hashed++;
  else c.probed++;
}

/** UDP GRO on the batched path: on; off (QUICLB_IO_GRO=0 or the option); unavailable (the kernel refused UDP_GRO). */
export type GroState = 'on' | 'off' | 'unavailable';

export interface IoCallCounts {
  batches: number;
  recv: number;
  send: number;
  gsoMessages: number;
  gsoFallbacks: number;
  /** UDP GRO: whether it is on, coalesced messages received, the datagrams they held. */
  gro: GroState;
  groMessages: number;
  groDatagrams: number;
  /** Batch calls made early in a wake-up because coalesced messages filled the entry table. */
  entriesFull: number;
  /** Exceptions thrown by the router (sink) or the sampler inside a batch: counted and reported to onError. */
  callbackErrors: number;
  /** Busy-poll setting (microseconds, 0: off); busy polls that found datagrams (each a wake-up saved); the time spent polling. */
  busyPollUs: number;
  busyPollHits: number;
  busyPollSeconds: number;
  /** Whether the loop is held after a batch (BatchedOptions.holdLoop), and the wake-ups served while it was. */
  holdLoop: boolean;
  heldWakeups: number;
}

/** Who gets the datagrams: the Dataplane. Called synchronously, once per datagram, within the I/O's batch. */
export interface DatagramSink<L, U> {
  /** A client datagram buf[off, off + len) from address:port on listener `l`. */
  onClient(l: L, buf: Buffer, off: number, len: number, address: string, port: number): void;
  /** A server's reply buf[off, off + len) on upstream `u`. */
  onReply(u: U, buf: Buffer, off: number, len: number): void;
  /**
   * A socket-level error (already in errors()): for logging. `fatal`: the upstream socket `u` is unusable and
   * must be closed (its connect failed).
   */
  onError(direction: 'to_server' | 'to_client', err: Error | string, u: U | null, fatal: boolean): void;
}

/** The sampled routing latency: 1 in `every` client datagrams, seconds from its arrival to its send. */
export interface LatencySampler {
  readonly every: number;
  observe(seconds: number): void;
}

export interface ListenOptions {
  reusePort: boolean;
  /** SO_RCVBUF/SO_SNDBUF (0 = system default). */
  bufferBytes: number;
}

/** An open listening socket. */
export interface IoListener {
  readonly bound: SocketAddress;
}

/** An open upstream socket (connected to one server, replies relayed to one client). */
export interface IoUpstream {
  readonly closed: boolean;
}

export interface DatagramIo<L, U> {
  readonly path: IoPath;
  /** Binds a listening socket; rejects with `cannot listen on ADDR: CODE`. */
  openListener(address: SocketAddress, options: ListenOptions, owner: L): Promise<IoListener>;
  closeListener(l: IoListener): Promise<void>;
  /**
   * Opens a socket connected to `server` for the client datagram being handled (replies go to that client through
   * `listener`); null when the system refuses a socket (counted by the caller as a socket-limit drop).
   * `localPorts` ([n, p1..pn], dataplane/upstream-ports.ts): local ports to bind first, in order, a port in use
   * skipped; none free (or null): the kernel's choice. The choice is counted in portChoices().
   */
  openUpstream(listener: IoListener, server: SocketAddress, clientAddress: string, clientPort: number, owner: U, localPorts?: Int32Array | null): IoUpstream | null;
  closeUpstream(u: IoUpstream): void;
  /** Forwards buf[off, off + len) to the upstream's server; false: not sent and not queued (counted by the caller). */
  sendToServer(u: IoUpstream, buf: Buffer, off: number, len: number): boolean;
  /** Relays buf[off, off + len) to the upstream's client through its listener. */
  sendToClient(u: IoUpstream, buf: Buffer, off: number, len: number): void;
  errors(): IoErrorCounts;
  /** How the local ports of upstream sockets were chosen so far (only sockets opened with localPorts count). */
  portChoices(): PortChoiceCounts;
  /** Batched path: JS calls (batches), system calls and GSO messages so far; null on the dgram path. */
  calls(): IoCallCounts | null;
  /** Closes everything (after the listeners were closed). */
  close(): Promise<void>;
}
