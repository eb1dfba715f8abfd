/**
 * The data-plane side of test/integration/operator.test.ts, run inside a private network namespace
 * (`unshare -rn`, so nothing touches the host's network): the API server refuses loopback addresses in
 * EndpointSlices, so the test's "pod IPs" are addresses the namespace puts on its own `lo` (given in POD_IPS), and
 * the data plane, the backend sockets and the client all live there. The data plane reaches the operator's config
 * server on the host through a TCP relay to a Unix socket (Unix sockets cross network namespaces); TLS stays end
 * to end.
 *
 * Protocol: JSON lines. Out: {"ready":true}, {"dp": "<data-plane log line>"}, {"id": n, "ms": t} (-1: not
 * delivered). In: {"id": n, "op": "send", "dcid": hex, "port": listenPort, "backend": ip, "timeoutMs": t} sends
 * short-header datagrams with that DCID to 127.0.0.1:port until the backend on `ip` receives one.
 * {"id": n, "op": "stream", "flows": [{"dcid": hex, "backend": ip}], "port": p, "intervalMs": t, "maxMs": t} sends
 * one datagram per flow every intervalMs, each with its own tag, until {"id": n, "op": "stop"} (or maxMs); 300 ms
 * after the last one it answers {"id": n, "flows": [{"sent", "delivered", "misrouted", "lost"}]}: delivered to the
 * flow's backend, received by another backend, received by none.
 * Ends (killing the data plane) on stdin end or SIGTERM.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { connect, createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { shortPacket, vnFor } from '../dataplane/helpers.js';

const env = (k: string): string => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const socketPath = env('RELAY_SOCKET');
const relayPort = Number(env('RELAY_PORT'));
const podIps = env('POD_IPS').split(',');
const backendPort = Number(env('BACKEND_PORT'));
const dataplaneArgs = JSON.parse(env('DATAPLANE_ARGS')) as string[];

const out = (o: unknown) => process.stdout.write(JSON.stringify(o) + '\n');

const relay = createServer((c) => {
  const up = connect(socketPath);
  c.pipe(up).pipe(c);
  const end = () => {
    c.destroy();
    up.destroy();
  };
  c.on('error', end);
  up.on('error', end);
});
relay.listen(relayPort, '127.0.0.1');
await once(relay, 'listening');

const received = new Map<string, Set<string>>();
/** Tags of stream datagrams -> the backends that received them (bounded by the streams' maxMs). */
const streamTags = new Map<string, string[]>();
const backends: Socket[] = [];
for (const ip of podIps) {
  const s = createSocket('udp4');
  s.bind(backendPort, ip);
  await once(s, 'listening');
  const tags = new Set<string>();
  received.set(ip, tags);
  s.on('message', (m, r) => {
    const vn = vnFor(m);
    if (vn) return void s.send(vn, r.port, r.address);
    const tag = m.subarray(m.length - 8).toString('hex');
    const stream = streamTags.get(tag);
    if (stream) stream.push(ip);
    else if (tags.size < 100_000) tags.add(tag);
  });
  backends.push(s);
}
const client = createSocket('udp4');
client.bind(0, '127.0.0.1');
await once(client, 'listening');

function startDataPlane(): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'cli/main.ts', 'dataplane', ...dataplaneArgs, '--operator', `localhost:${relayPort}`], {
    env: { ...process.env, NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  for (const stream of [child.stdout!, child.stderr!]) createInterface({ input: stream }).on('line', (line) => out({ dp: line }));
  child.on('exit', (code) => out({ dpExit: code }));
  return child;
}
let dp = startDataPlane();

/** SIGKILLs the data plane and starts it again with the same arguments: resolves with the ms it was gone. */
async function restartDataPlane(): Promise<number> {
  const t0 = Date.now();
  const old = dp;
  const exited = once(old, 'exit');
  old.kill('SIGKILL');
  await exited;
  dp = startDataPlane();
  return Date.now() - t0;
}

function shutdown(): void {
  dp.kill('SIGTERM');
  setTimeout(() => process.exit(0), 2000).unref();
  dp.on('exit', () => process.exit(0));
}
process.on('SIGTERM', shutdown);
interface StreamCommand {
  id: number;
  flows: { dcid: string; backend: string }[];
  port: number;
  intervalMs: number;
  maxMs: number;
}
const streams = new Map<number, () => void>();

async function stream(cmd: StreamCommand): Promise<void> {
  const sent = cmd.flows.map(() => [] as string[]);
  let stopped = false;
  streams.set(cmd.id, () => (stopped = true));
  const t0 = Date.now();
  while (!stopped && Date.now() - t0 < cmd.maxMs) {
    cmd.flows.forEach((f, i) => {
      const tag = randomBytes(8);
      streamTags.set(tag.toString('hex'), []);
      sent[i].push(tag.toString('hex'));
      client.send(shortPacket(Buffer.from(f.dcid, 'hex'), { tag }), cmd.port, '127.0.0.1');
    });
    await new Promise((r) => setTimeout(r, cmd.intervalMs));
  }
  streams.delete(cmd.id);
  await new Promise((r) => setTimeout(r, 300));
  const flows = cmd.flows.map((f, i) => {
    const counts = { sent: sent[i].length, delivered: 0, misrouted: 0, lost: 0 };
    for (const tag of sent[i]) {
      const got = streamTags.get(tag)!;
      streamTags.delete(tag);
      if (got.length === 0) counts.lost++;
      else if (got.every((ip) => ip === f.backend)) counts.delivered++;
      else counts.misrouted++;
    }
    return counts;
  });
  out({ id: cmd.id, flows });
}

createInterface({ input: process.stdin })
  .on('line', (line) => {
    const cmd = JSON.parse(line) as { id: number; op: string; dcid: string; port: number; backend: string; timeoutMs: number };
    if (cmd.op === 'stream') return void stream(cmd as unknown as StreamCommand);
    if (cmd.op === 'stop') return void streams.get(cmd.id)?.();
    if (cmd.op === 'restart-dataplane') return void restartDataPlane().then((ms) => out({ id: cmd.id, ms }));
    if (cmd.op !== 'send') return;
    void (async () => {
      const tags = received.get(cmd.backend);
      const t0 = Date.now();
      while (tags && Date.now() - t0 < cmd.timeoutMs) {
        const tag = randomBytes(8);
        client.send(shortPacket(Buffer.from(cmd.dcid, 'hex'), { tag }), cmd.port, '127.0.0.1');
        for (let i = 0; i < 20 && !tags.has(tag.toString('hex')); i++) await new Promise((r) => setTimeout(r, 5));
        if (tags.has(tag.toString('hex'))) return out({ id: cmd.id, ms: Date.now() - t0 });
      }
      out({ id: cmd.id, ms: -1 });
    })();
  })
  .on('close', shutdown);

out({ ready: true });
