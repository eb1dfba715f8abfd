/**
 * A client-side NAT for the end-to-end tests, in the test process: the client sends to `nat.port`; each new
 * client source address (a client that migrates or is NAT-rebound uses a new one) gets the next of the NAT's
 * pre-bound upstream sockets, whose datagrams go to the target (the load balancer), and the target's replies to
 * that socket go back to that client source. So the test chooses the source ports the load balancer sees, e.g.
 * a second port that the load balancer's fallback hash sends to another backend than the first one: a client
 * that happened to pick those ports, made deterministic. It never looks into the datagrams.
 */
import { createSocket, type Socket } from 'node:dgram';
import { randomInt } from 'node:crypto';

export interface NatMapping {
  /** The client's source address ("127.0.0.1:port"). */
  readonly client: string;
  /** The NAT's source port towards the target for it. */
  readonly port: number;
  /** Datagrams client -> target and target -> client through this mapping. */
  up: number;
  down: number;
}

/** Binds a UDP socket to exactly `port` on `host`, or resolves null when it is taken. */
function bindExactly(host: string, port: number): Promise<Socket | null> {
  return new Promise((resolve) => {
    const s = createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
    s.once('error', () => {
      s.close();
      resolve(null);
    });
    s.bind(port, host, () => {
      s.removeAllListeners('error');
      s.on('error', () => {});
      resolve(s);
    });
  });
}

export class ClientNat {
  readonly mappings: NatMapping[] = [];
  /** Client sources that arrived after every upstream socket was taken (their datagrams are dropped). */
  readonly overflow: string[] = [];
  private readonly byClient = new Map<string, { socket: Socket; mapping: NatMapping }>();

  private constructor(
    private readonly front: Socket,
    private readonly upstream: Socket[],
    readonly host: string,
    readonly target: { host: string; port: number },
  ) {
    front.on('message', (msg, rinfo) => {
      const key = `${rinfo.address}:${rinfo.port}`;
      let m = this.byClient.get(key);
      if (m === undefined) {
        const socket = this.upstream[this.mappings.length];
        if (socket === undefined) {
          if (!this.overflow.includes(key)) this.overflow.push(key);
          return;
        }
        const mapping: NatMapping = { client: key, port: socket.address().port, up: 0, down: 0 };
        this.mappings.push(mapping);
        m = { socket, mapping };
        this.byClient.set(key, m);
        socket.on('message', (reply) => {
          mapping.down++;
          front.send(reply, rinfo.port, rinfo.address);
        });
      }
      m.mapping.up++;
      m.socket.send(msg, this.target.port, this.target.host);
    });
    front.on('error', () => {});
  }

  /**
   * Binds the front socket (ephemeral port) and `count` upstream sockets: the i-th one to a port `accept(i, port,
   * earlier)` accepts, `earlier` being the ports already chosen (tried at random in 20000..60999, taken ones skipped).
   */
  static async start(
    target: { host: string; port: number },
    accept: (index: number, port: number, earlier: readonly number[]) => boolean,
    count = 3,
    host = '127.0.0.1',
  ): Promise<ClientNat> {
    const front = await bindExactly(host, 0);
    if (front === null) throw new Error('ClientNat: cannot bind the front socket');
    const upstream: Socket[] = [];
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      let s: Socket | null = null;
      for (let attempt = 0; s === null; attempt++) {
        if (attempt >= 2000) throw new Error(`ClientNat: no free port accepted for upstream socket ${i}`);
        const p = randomInt(20000, 61000);
        if (ports.includes(p) || !accept(i, p, ports)) continue;
        s = await bindExactly(host, p);
      }
      upstream.push(s);
      ports.push(s.address().port);
    }
    return new ClientNat(front, upstream, host, target);
  }

  /** Where the client sends. */
  get port(): number {
    return this.front.address().port;
  }

  async close(): Promise<void> {
    await Promise.all([this.front, ...this.upstream].map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}
