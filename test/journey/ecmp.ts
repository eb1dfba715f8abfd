/**
 * An ECMP stand-in in the pod network: clients send to `listen`; for each client source address the relay keeps one
 * upstream socket (bound to `upstreamHost`, so every data plane sees the same client 4-tuple). Replies from any
 * target go back to the client from the listen socket.
 *
 * The model: a real ECMP path change moves a 5-tuple from one node to another; it does not spray. So each client
 * flow has a home target (new flows take the targets in turn) and its long-header datagrams (the handshake) always
 * go there, as a flow whose hash is stable while it starts would; its short-header (1-RTT) datagrams then alternate
 * between the targets per datagram, starting at home: every transfer crosses both data planes many times, the worst
 * a flow can see from path changes after its handshake.
 *
 * Why not alternate the handshake too: each data plane is a full proxy, so the backend sees the client at a
 * different source address per data plane, and a Retry token is bound to the address it was sent to (RFC 9000
 * §8.1.2; @matrixai/quic's validateToken compares the host and silently drops a mismatch). A post-Retry Initial
 * that arrives through the other data plane is dropped: with per-datagram alternation of the handshake every
 * handshake waits for a retransmission through the right data plane (measured with JOURNEY_ECMP_SPRAY=1: each
 * ngtcp2 post-Retry Initial went unanswered until its PTO, ~1 s), and a real path change between the Retry and the
 * next Initial costs that handshake a retry (docs/backends.md, item 7).
 */
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';

export interface Endpoint {
  ip: string;
  port: number;
}

/** Client sources tracked at most (each holds a socket); older ones are closed first. */
const MAX_FLOWS = 256;
/** A client's upstream socket closes after this long without a datagram either way. */
const IDLE_MS = 60_000;

interface Flow {
  socket: Socket;
  home: number;
  /** Target of the flow's next short-header datagram. */
  next: number;
  lastUsed: number;
}

/** JOURNEY_ECMP_SPRAY=1: every datagram alternates, handshakes too (the older model; reproduces the limitation above). */
const SPRAY = process.env.JOURNEY_ECMP_SPRAY === '1';
/** A QUIC long header (Initial, 0-RTT, Handshake, Retry, Version Negotiation): first bit set. */
const isLongHeader = (msg: Buffer): boolean => msg.length > 0 && (msg[0] & 0x80) !== 0;

export class EcmpRelay {
  private readonly flows = new Map<string, Flow>();
  readonly counts = { fromClients: 0, toTargets: [] as number[], shortToTargets: [] as number[], longHeader: 0, flows: 0, fromTargets: 0 };
  private readonly sweeper: NodeJS.Timeout;

  private constructor(
    private readonly listenSocket: Socket,
    readonly listen: Endpoint,
    readonly targets: readonly Endpoint[],
    private readonly upstreamHost: string,
  ) {
    this.counts.toTargets = targets.map(() => 0);
    this.counts.shortToTargets = targets.map(() => 0);
    listenSocket.on('message', (msg, r) => this.fromClient(msg, `${r.address}:${r.port}`, r.address, r.port));
    listenSocket.on('error', () => {});
    this.sweeper = setInterval(() => this.sweep(), 5000);
    this.sweeper.unref();
  }

  static async start(listen: Endpoint, targets: readonly Endpoint[], upstreamHost: string): Promise<EcmpRelay> {
    if (targets.length === 0) throw new Error('ecmp: no targets');
    const s = createSocket('udp4');
    s.bind(listen.port, listen.ip);
    await Promise.race([once(s, 'listening'), once(s, 'error').then(([e]) => Promise.reject(e as Error))]);
    return new EcmpRelay(s, listen, targets, upstreamHost);
  }

  private fromClient(msg: Buffer, key: string, address: string, port: number): void {
    this.counts.fromClients++;
    let flow = this.flows.get(key);
    if (!flow) {
      if (this.flows.size >= MAX_FLOWS) this.closeFlow(this.flows.keys().next().value!);
      const socket = createSocket('udp4');
      socket.bind(0, this.upstreamHost);
      socket.on('error', () => {});
      socket.on('message', (reply) => {
        this.counts.fromTargets++;
        const f = this.flows.get(key);
        if (f) f.lastUsed = Date.now();
        this.listenSocket.send(reply, port, address);
      });
      const home = this.counts.flows++ % this.targets.length;
      flow = { socket, home, next: home, lastUsed: Date.now() };
      this.flows.set(key, flow);
    }
    flow.lastUsed = Date.now();
    let i: number;
    if (isLongHeader(msg) && !SPRAY) {
      i = flow.home;
      this.counts.longHeader++;
    } else {
      i = flow.next;
      flow.next = (i + 1) % this.targets.length;
      this.counts.shortToTargets[i]++;
    }
    this.counts.toTargets[i]++;
    flow.socket.send(msg, this.targets[i].port, this.targets[i].ip);
  }

  private closeFlow(key: string): void {
    const f = this.flows.get(key);
    this.flows.delete(key);
    try {
      f?.socket.close();
    } catch {
      /* already closed */
    }
  }

  private sweep(): void {
    const now = Date.now();
    for (const [key, f] of this.flows) if (now - f.lastUsed > IDLE_MS) this.closeFlow(key);
  }

  close(): void {
    clearInterval(this.sweeper);
    for (const key of [...this.flows.keys()]) this.closeFlow(key);
    try {
      this.listenSocket.close();
    } catch {
      /* already closed */
    }
  }
}
