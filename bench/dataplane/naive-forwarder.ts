/**
 * The "naive Node" peer of `npm run bench:dataplane`: a QUIC-unaware node:dgram full proxy, written the way
 * a first version would be (same design as the shared kit's nodefwd.js): one upstream socket per client
 * address:port, round-robin backend per new flow, a Buffer and closure per datagram, unconnected sends,
 * Date.now() per datagram, idle sweep every 5 s.
 *
 *   LISTEN=127.0.0.1:8443 BACKENDS=127.0.0.2:9000,127.0.0.3:9000 tsx bench/dataplane/naive-forwarder.ts
 */
import { createSocket, type Socket } from 'node:dgram';

const split = (s: string): { host: string; port: number } => {
  const i = s.lastIndexOf(':');
  return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
};
const LISTEN = split(process.env.LISTEN ?? '127.0.0.1:8443');
const BACKENDS = (process.env.BACKENDS ?? '127.0.0.2:9000').split(',').map(split);
const IDLE_MS = Number(process.env.IDLE_MS ?? 30000);

interface Flow {
  sock: Socket;
  host: string;
  port: number;
  lastSeen: number;
}
const flows = new Map<string, Flow>();
let rr = 0;
let created = 0;
let up = 0;
let down = 0;

const front = createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
front.on('message', (msg, rinfo) => {
  const key = rinfo.address + ':' + rinfo.port;
  let f = flows.get(key);
  if (f === undefined) {
    const be = BACKENDS[rr++ % BACKENDS.length];
    const sock = createSocket('udp4');
    const flow: Flow = { sock, host: be.host, port: be.port, lastSeen: 0 };
    sock.on('message', (reply) => {
      flow.lastSeen = Date.now();
      down++;
      front.send(reply, rinfo.port, rinfo.address);
    });
    sock.on('error', () => {});
    flows.set(key, flow);
    created++;
    f = flow;
  }
  f.lastSeen = Date.now();
  up++;
  f.sock.send(msg, f.port, f.host);
});
front.on('error', (e) => {
  process.stderr.write(`front socket error: ${e.message}\n`);
  process.exit(1);
});
front.bind(LISTEN.port, LISTEN.host, () => {
  process.stderr.write(`naive-forwarder ${process.pid} listening ${LISTEN.host}:${LISTEN.port} -> ${BACKENDS.length} backends\n`);
});

setInterval(() => {
  const now = Date.now();
  for (const [k, f] of flows) {
    if (now - f.lastSeen > IDLE_MS) {
      f.sock.close();
      flows.delete(k);
    }
  }
}, 5000).unref();

const stop = (): void => {
  process.stderr.write(`naive-forwarder ${process.pid}: flows_created=${created} up=${up} down=${down}\n`);
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
