/**
 * An ECMP stand-in in the pod network: clients send to `listen`; for each client source address the relay keeps one
 * upstream socket (bound to `upstreamHost`, so every data plane sees the same client 4-tuple). Replies from any
 * target go back to the client from the listen socket.
 *
 * The model: a real ECMP path change moves a 5-tuple from one node to another; it does not spray. So each client
 * flow has a home target (new flows take the targets in turn) and its long-header datagrams (the handshake) always
 * go there, as a flow whose hash is stable while it starts would; its short-header (1-RTT) datagrams then move
 * between the targets in runs of ECMP_RUN datagrams (8; JOURNEY_ECMP_RUN), starting at home: a flow changes data
 * plane every 8 datagrams, so a 1 MB download (about 90 client datagrams) crosses both data planes about ten times,
 * each crossing a path change the backend sees (one more peer address: each data plane is a full proxy).
 *
 * Why runs and not per-datagram alternation (which this relay did before, JOURNEY_ECMP_RUN=1): the backends' QUIC
 * stack cannot recover some losses across path changes, and per-datagram alternation makes every datagram a path
 * change. quiche 0.18 (@matrixai/quic 2.0.9) keeps loss recovery per path: a packet it sent on a path is declared lost
 * only against later packets acknowledged on that same path, and its PTO on a path the connection no longer uses
 * re-queues the data of the oldest one or two unacknowledged packets only (the same ones each time: their
 * retransmissions are acknowledged under other packet numbers). So when the last packets sent on a path are lost and
 * the connection never sends on that path again, their data is never sent again: the response has a hole, the client
 * waits, the server sends only ACK-only probes (no PING: the probe count belongs to the old path), the client
 * times out (ERR_IDLE_CLOSE). A migrating client abandons its old paths (two of them behind alternating data planes),
 * and under CPU load the server's last packets on them arrive after ngtcp2 stopped accepting the old path (one PTO
 * after migrating: "ignore packet from unknown path") or are dropped by a full socket buffer. Measured in a world-only
 * repro (96-176 downloads through the relay while the pod network and data plane processes were stopped 20-250 ms
 * at random, SIGSTOP/SIGCONT, as a loaded machine does): per-datagram alternation 17 of 176 migrating-or-plain
 * downloads stalled (all migrating ones), runs of 4 7 of 96, runs of 8 1 of 96 (a plain download whose last run left
 * a lost tail on the other data plane), a single data plane with no relay 4 of 96; every stalled download showed the
 * hole in gtlsclient's log and the backend's connection record (examples/quic-connection-record.ts) its last packets
 * on the old path. Since then the example backend sends each other path's pending PTO probe on that path (its
 * workaround 7), which heals a path the client still accepts (a flow that left a data plane with a lost tail), not one
 * a migrated client left: runs of 8 with it, 5 of 96 stalled under the same stops, all migrating. docs/backends.md,
 * item 9.
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
/**
 * Receive buffer of the relay's sockets (the kernel caps it at net.core.rmem_max). The default (~208 KiB, about 90
 * full datagrams) overflowed when a backend's burst met a busy pod-network event loop: the journey's pod network
 * counted thousands of UDP RcvbufErrors, losses no data plane sees; a router does not drop for that.
 */
const RECV_BUFFER_BYTES = 4 * 1024 * 1024;
function enlargeReceiveBuffer(s: Socket): void {
  try {
    s.setRecvBufferSize(RECV_BUFFER_BYTES);
  } catch {
    /* not bound yet or not allowed: the default stays */
  }
}

interface Flow {
  socket: Socket;
  home: number;
  /** Target of the flow's short-header datagrams now. */
  current: number;
  /** Short-header datagrams sent to `current` in this run. */
  inRun: number;
  lastUsed: number;
}

/** JOURNEY_ECMP_SPRAY=1: every datagram alternates, handshakes too (the oldest model; reproduces both limitations above). */
const SPRAY = process.env.JOURNEY_ECMP_SPRAY === '1';
/**
 * Short-header datagrams of a flow per run on one target before the flow moves to the next (default 8; 1 = the
 * per-datagram alternation, which a real network does not do: the module comment says why it is not the model).
 */
export const ECMP_RUN = Math.max(1, Math.min(1000, Number(process.env.JOURNEY_ECMP_RUN ?? 8) || 8));
/** A QUIC long header (Initial, 0-RTT, Handshake, Retry, Version Negotiation): first bit set. */
const isLongHeader = (msg: Buffer): boolean => msg.length > 0 && (msg[0] & 0x80) !== 0;

export class EcmpRelay {
  private readonly flows = new Map<string, Flow>();
  /** moves: times a flow's 1-RTT datagrams moved to another target (path changes the backends saw). */
  readonly counts = { fromClients: 0, toTargets: [] as number[], shortToTargets: [] as number[], longHeader: 0, flows: 0, fromTargets: 0, moves: 0, run: SPRAY ? 1 : ECMP_RUN };
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
    enlargeReceiveBuffer(s);
    return new EcmpRelay(s, listen, targets, upstreamHost);
  }

  private fromClient(msg: Buffer, key: string, address: string, port: number): void {
    this.counts.fromClients++;
    let flow = this.flows.get(key);
    if (!flow) {
      if (this.flows.size >= MAX_FLOWS) this.closeFlow(this.flows.keys().next().value!);
      const socket = createSocket('udp4');
      socket.bind(0, this.upstreamHost);
      socket.once('listening', () => enlargeReceiveBuffer(socket));
      socket.on('error', () => {});
      socket.on('message', (reply) => {
        this.counts.fromTargets++;
        const f = this.flows.get(key);
        if (f) f.lastUsed = Date.now();
        this.listenSocket.send(reply, port, address);
      });
      const home = this.counts.flows++ % this.targets.length;
      flow = { socket, home, current: home, inRun: 0, lastUsed: Date.now() };
      this.flows.set(key, flow);
    }
    flow.lastUsed = Date.now();
    let i: number;
    if (isLongHeader(msg) && !SPRAY) {
      i = flow.home;
      this.counts.longHeader++;
    } else {
      if (flow.inRun >= (SPRAY ? 1 : ECMP_RUN)) {
        flow.current = (flow.current + 1) % this.targets.length;
        flow.inRun = 0;
        this.counts.moves++;
      }
      i = flow.current;
      flow.inRun++;
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
