/**
 * The node:dgram I/O path (any platform; the fallback when the batched addon is not available): one 'message'
 * event per datagram, one send per datagram. Upstream sockets connect asynchronously, so datagrams are queued
 * (up to MAX_QUEUE) until the connect completes.
 */
import { createSocket, type RemoteInfo, type Socket, type SocketOptions } from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { formatSocketAddress } from '../../lib/config/address.js';
import type { SocketAddress } from '../../lib/config/snapshot.js';
import { countPortChoice, type DatagramIo, type DatagramSink, type IoErrorCounts, type IoListener, type IoUpstream, type LatencySampler, type ListenOptions, type PortChoiceCounts } from './types.js';

/** Datagrams held per upstream socket while it connects. */
const MAX_QUEUE = 64;

/**
 * Datagrams libuv may hold per socket while the kernel's send buffer is full. libuv never reports EAGAIN to a
 * dgram sender: it keeps each refused datagram in a send queue in memory until the socket is writable, so without
 * a bound a slow egress grows the process without limit. Beyond this the datagram is dropped and counted `full`,
 * as the batched path counts sendmmsg's EAGAIN.
 */
const MAX_SEND_QUEUE = 256;

/**
 * dgram resolves the destination of every unconnected send through dns.lookup, which answers IP literals on the
 * next tick. Replies always go to the IP literal the client datagram came from: answer synchronously.
 */
const literalLookup = ((host: string, family: unknown, cb: (err: null, address: string, family: number) => void) =>
  cb(null, host, typeof family === 'number' ? family : 0)) as unknown as NonNullable<SocketOptions['lookup']>;

class DgramListener implements IoListener {
  bound: SocketAddress;
  constructor(readonly socket: Socket, address: SocketAddress) {
    this.bound = address;
  }
}

class DgramUpstream<U> implements IoUpstream {
  ready = false;
  closed = false;
  queue: Buffer[] | null = [];
  constructor(
    /** Replaced while a candidate local port is refused (a fresh socket per bind attempt). */
    public socket: Socket,
    readonly listener: DgramListener,
    readonly clientAddress: string,
    readonly clientPort: number,
    readonly owner: U,
  ) {}
}

function withoutZone(address: string): string {
  const i = address.indexOf('%');
  return i < 0 ? address : address.slice(0, i);
}

function code(e: Error): string {
  return (e as NodeJS.ErrnoException).code ?? e.message;
}

export class DgramIo<L, U> implements DatagramIo<L, U> {
  readonly path = 'dgram' as const;
  private readonly counts: IoErrorCounts = { toServer: { refused: 0, full: 0, other: 0 }, toClient: { refused: 0, full: 0, other: 0 }, truncated: 0, receive: 0, stray: 0 };
  private readonly ports: PortChoiceCounts = { hashed: 0, probed: 0, kernel: 0 };
  private sampleLeft: number;
  /**
   * Completions of sends. node:dgram reports a refused send (EMSGSIZE, EPERM, EACCES, ...) only to a send
   * callback, never as an 'error' event. One function per direction, so no allocation per datagram.
   */
  private readonly onUpstreamSent = (err: Error | null): void => {
    if (err) this.countError('to_server', err, null);
  };
  private readonly onReplySent = (err: Error | null): void => {
    if (err) this.countError('to_client', err, null);
  };

  constructor(
    private readonly sink: DatagramSink<L, U>,
    private readonly sampler: LatencySampler | null = null,
  ) {
    this.sampleLeft = sampler?.every ?? 0;
  }

  async openListener(a: SocketAddress, options: ListenOptions, owner: L): Promise<IoListener> {
    const buf = options.bufferBytes;
    const socket = createSocket({
      type: a.family === 6 ? 'udp6' : 'udp4',
      ipv6Only: a.family === 6,
      lookup: literalLookup,
      reusePort: options.reusePort,
      ...(buf > 0 ? { recvBufferSize: buf, sendBufferSize: buf } : {}),
    });
    await new Promise<void>((resolve, reject) => {
      const onError = (e: Error) => {
        socket.close();
        reject(new Error(`cannot listen on ${formatSocketAddress(a)}: ${code(e)}`));
      };
      socket.once('error', onError);
      socket.bind({ port: a.port, address: a.host, exclusive: true }, () => {
        socket.off('error', onError);
        resolve();
      });
    });
    const info = socket.address();
    const l = new DgramListener(socket, { host: info.address, port: info.port, family: a.family });
    const sink = this.sink;
    if (this.sampler === null) {
      socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => sink.onClient(owner, msg, 0, msg.length, rinfo.address, rinfo.port));
    } else {
      socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
        if (--this.sampleLeft > 0) sink.onClient(owner, msg, 0, msg.length, rinfo.address, rinfo.port);
        else {
          this.sampleLeft = this.sampler!.every;
          const t0 = performance.now();
          sink.onClient(owner, msg, 0, msg.length, rinfo.address, rinfo.port);
          this.sampler!.observe((performance.now() - t0) / 1000);
        }
      });
    }
    socket.on('error', (e) => this.countError('to_client', e, null));
    return l;
  }

  async closeListener(l: IoListener): Promise<void> {
    await new Promise<void>((r) => (l as DgramListener).socket.close(() => r()));
  }

  openUpstream(listener: IoListener, a: SocketAddress, clientAddress: string, clientPort: number, owner: U, localPorts: Int32Array | null = null): IoUpstream | null {
    const socket = createSocket(a.family === 6 ? 'udp6' : 'udp4');
    const up = new DgramUpstream<U>(socket, listener as DgramListener, clientAddress, clientPort, owner);
    if (localPorts === null) this.connectUpstream(up, a);
    else this.bindUpstream(up, a, Array.from(localPorts.subarray(1, 1 + Math.max(0, localPorts[0]))), 0);
    return up;
  }

  /**
   * Binds the upstream's socket to candidate `i` (node:dgram binds asynchronously; a port in use fails the socket,
   * so each further candidate gets a fresh socket), then connects; past the last candidate the kernel chooses.
   */
  private bindUpstream(up: DgramUpstream<U>, a: SocketAddress, ports: number[], i: number): void {
    if (i >= ports.length) {
      countPortChoice(this.ports, -1);
      if (i > 0) up.socket = createSocket(a.family === 6 ? 'udp6' : 'udp4'); // the last one failed its bind
      this.connectUpstream(up, a);
      return;
    }
    const socket = i === 0 ? up.socket : createSocket(a.family === 6 ? 'udp6' : 'udp4');
    up.socket = socket;
    const onBindError = () => {
      if (up.closed) return; // closeUpstream closed this socket
      socket.close();
      this.bindUpstream(up, a, ports, i + 1);
    };
    socket.once('error', onBindError);
    socket.bind({ port: ports[i], exclusive: true }, () => {
      socket.off('error', onBindError);
      if (up.closed) return;
      countPortChoice(this.ports, i);
      this.connectUpstream(up, a);
    });
  }

  private connectUpstream(up: DgramUpstream<U>, a: SocketAddress): void {
    const socket = up.socket;
    const owner = up.owner;
    // node:dgram binds before it connects: a datagram from anyone that reached the port in between stays queued in
    // the kernel and would be relayed to the client as the server's. Only the server's are replies; the others are
    // dropped and counted as stray (after the connect the kernel lets only the server's through).
    // A link-local server's zone: node reports the interface name (fe80::1%eth0), a config may give its index.
    const host = withoutZone(a.host);
    socket.on('message', (m: Buffer, rinfo: RemoteInfo) => {
      if (up.closed) return;
      if (rinfo.port === a.port && (rinfo.address === a.host || withoutZone(rinfo.address) === host)) this.sink.onReply(owner, m, 0, m.length);
      else this.counts.stray++;
    });
    // before the connect completed: the socket is unusable (the caller closes it; the next datagram opens another)
    socket.on('error', (e) => this.countError('to_server', e, up, !up.ready));
    socket.connect(a.port, a.host, () => {
      if (up.closed) return;
      up.ready = true;
      const q = up.queue!;
      up.queue = null;
      for (let i = 0; i < q.length; i++) socket.send(q[i], this.onUpstreamSent);
    });
  }

  closeUpstream(u: IoUpstream): void {
    const up = u as DgramUpstream<U>;
    if (up.closed) return;
    up.closed = true;
    up.queue = null;
    try {
      up.socket.close();
    } catch {
      // already closed
    }
  }

  sendToServer(u: IoUpstream, buf: Buffer, off: number, len: number): boolean {
    const up = u as DgramUpstream<U>;
    const msg = off === 0 && len === buf.length ? buf : buf.subarray(off, off + len);
    if (up.ready) {
      if (up.socket.getSendQueueCount() < MAX_SEND_QUEUE) up.socket.send(msg, this.onUpstreamSent);
      else this.countFull('to_server', up);
    } else if (up.queue !== null && up.queue.length < MAX_QUEUE) up.queue.push(msg);
    else return false;
    return true;
  }

  sendToClient(u: IoUpstream, buf: Buffer, off: number, len: number): void {
    const up = u as DgramUpstream<U>;
    const socket = up.listener.socket;
    if (socket.getSendQueueCount() < MAX_SEND_QUEUE) socket.send(buf, off, len, up.clientPort, up.clientAddress, this.onReplySent);
    else this.countFull('to_client', up);
  }

  /** A datagram dropped because its socket's send queue is at MAX_SEND_QUEUE (no Error object: this is the overload path). */
  private countFull(direction: 'to_server' | 'to_client', up: DgramUpstream<U>): void {
    (direction === 'to_server' ? this.counts.toServer : this.counts.toClient).full++;
    this.sink.onError(direction, 'send queue full', up.owner, false);
  }

  errors(): IoErrorCounts {
    return { toServer: { ...this.counts.toServer }, toClient: { ...this.counts.toClient }, truncated: 0, receive: this.counts.receive, stray: this.counts.stray };
  }

  portChoices(): PortChoiceCounts {
    return { ...this.ports };
  }

  calls(): null {
    return null;
  }

  async close(): Promise<void> {
    // the Dataplane closes its listeners and upstreams itself
  }

  private countError(direction: 'to_server' | 'to_client', e: Error, up: DgramUpstream<U> | null, fatal = false): void {
    const c = direction === 'to_server' ? this.counts.toServer : this.counts.toClient;
    const n = up?.queue ? Math.max(1, up.queue.length) : 1;
    const k = code(e);
    if (k === 'ECONNREFUSED') c.refused += n;
    else if (k === 'EAGAIN' || k === 'EWOULDBLOCK' || k === 'ENOBUFS') c.full += n;
    else c.other += n;
    this.sink.onError(direction, e, up?.owner ?? null, fatal);
  }
}
