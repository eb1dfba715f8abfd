/**
 * Run by forwarder-paths.test.ts inside a network namespace of its own whose loopback has a slow qdisc (tbf): the
 * data plane's datagrams to the backend wait in the qdisc behind the client's burst, charged to the upstream
 * socket's send buffer, until that buffer is full. Prints one JSON line: what was received, delivered and counted.
 * argv: io path (batched | dgram), datagrams to send.
 */
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { CidEncoder } from '../../lib/index.js';
import { Dataplane } from '../../dataplane/dataplane.js';
import type { IoChoice } from '../../dataplane/io/types.js';
import { config, server, shortPacket, snapshot, sleep } from './helpers.js';

const io = process.argv[2] as IoChoice;
const count = Number(process.argv[3] ?? 3000);

const backend = createSocket('udp4');
backend.bind(0, '127.0.0.1');
await once(backend, 'listening');
backend.setRecvBufferSize(4 << 20);
let delivered = 0;
backend.on('message', () => delivered++);

const dp = new Dataplane({ io, healthChecks: false });
await dp.start(snapshot([server('a', '0001', '127.0.0.1', backend.address().port)]));
const client = createSocket('udp4');
client.bind(0, '127.0.0.1');
await once(client, 'listening');
client.setSendBufferSize(4 << 20);
const pkt = shortPacket(new CidEncoder(config(0), Buffer.from('0001', 'hex')).next());
for (let i = 0; i < count; i++) client.send(pkt, dp.addresses()[0].port, '127.0.0.1');

// Until every datagram is accounted for (delivered or counted), or nothing moves for 2 s (bounded: 20 s).
const accounted = () => {
  const e = dp.ioErrors();
  return delivered + e.toServer.full + e.toServer.refused + e.toServer.other;
};
let last = -1;
let still = 0;
for (const end = Date.now() + 20_000; Date.now() < end && still < 20; ) {
  await sleep(100);
  const now = accounted() + dp.stats().received;
  still = now === last ? still + 1 : 0;
  last = now;
  if (dp.stats().received === count && accounted() === count) break;
}
const text = await dp.registry.metrics();
console.log(
  JSON.stringify({
    io: dp.ioPath,
    sent: count,
    received: dp.stats().received,
    delivered,
    ioErrors: dp.ioErrors(),
    sendErrors: dp.stats().sendErrors,
    metrics: text.split('\n').filter((l) => /^quiclb_(io_errors_total|send_errors_total).*\} [1-9]/.test(l)),
  }),
);
await dp.stop();
client.close();
backend.close();
