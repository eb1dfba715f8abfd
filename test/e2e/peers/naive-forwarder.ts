/**
 * A deliberately naive UDP full proxy for the end-to-end tests: every NEW client address:port goes to the
 * next backend in turn (round robin per 4-tuple), which is what a QUIC-unaware load balancer does, made
 * deterministic (a hash would pick the other backend for a migrated client only half of the time).
 * Used to prove that the migration test can fail: a migrated client lands on the wrong backend.
 *
 *   naive-forwarder.ts --listen 127.0.0.1:PORT --backend 127.0.0.1:P1 --backend 127.0.0.1:P2
 * Prints "READY" when bound and "flow <client> -> <backend>" for each new client address.
 */
import { createSocket, type Socket } from 'node:dgram';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { listen: { type: 'string' }, backend: { type: 'string', multiple: true } } });
const split = (s: string): { host: string; port: number } => {
  const i = s.lastIndexOf(':');
  return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
};
if (!values.listen || !values.backend?.length) throw new Error('usage: --listen HOST:PORT --backend HOST:PORT...');
const listen = split(values.listen);
const backends = values.backend.map(split);

const flows = new Map<string, { sock: Socket; host: string; port: number }>();
let next = 0;
const front = createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
front.on('message', (msg, rinfo) => {
  const key = `${rinfo.address}:${rinfo.port}`;
  let flow = flows.get(key);
  if (flow === undefined) {
    const be = backends[next++ % backends.length];
    const sock = createSocket('udp4');
    sock.on('message', (reply) => front.send(reply, rinfo.port, rinfo.address));
    sock.on('error', () => {});
    flow = { sock, ...be };
    flows.set(key, flow);
    process.stdout.write(`flow ${key} -> ${be.host}:${be.port}\n`);
  }
  flow.sock.send(msg, flow.port, flow.host);
});
front.bind(listen.port, listen.host, () => process.stdout.write(`READY ${listen.host}:${listen.port}\n`));
process.on('SIGTERM', () => process.exit(0));
