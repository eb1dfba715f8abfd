/**
 * An ECMP stand-in in the pod network: clients send to `listen`; for each client source address the relay keeps one
 * upstream socket (bound to `upstreamHost`, so every data plane sees the same client 4-tuple) and sends that
 * client's datagrams to the targets in turn (1st to target 0, 2nd to target 1, ...), as a router whose ECMP hash
 * changes under a flow would, or as two paths of one anycast address. Replies from any target go back to the client
 * from the listen socket.
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
  next: number;
  lastUsed: number;
}

export class EcmpRelay {
  private readonly flows = new Map<string, Flow>();
  readonly counts = { fromClients: 0, toTargets: [] as number[], fromTargets: 0 };
  private readonly sweeper: NodeJS.Timeout;

  private constructor(
    private readonly listenSocket: Socket,
    readonly listen: Endpoint,
    readonly targets: readonly Endpoint[],
    private readonly upstreamHost: string,
  ) {
    this.counts.toTargets = targets.map(() => 0);
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
      flow = { socket, next: 0, lastUsed: Date.now() };
      this.flows.set(key, flow);
    }
    flow.lastUsed = Date.now();
    const i = flow.next;
    flow.next = (i + 1) % this.targets.length;
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
