/**
 * `npm run bench:config-channel`: the config server with many data-plane streams over real mTLS on loopback.
 * This process runs the server; a child process runs the data-plane clients (grpc-js, one certificate and
 * connection each, answering every snapshot with an Ack), so the memory figures are the server's alone.
 *
 * Prints the change-to-all-ACKed latency (publish -> every stream's Ack booked by the server; p50/p99/max over
 * --changes changes) and the server's memory per connected stream ((RSS and heap after connecting - before) /
 * streams, after a GC). One more stream stops reading (--stalled 0 to leave it out): nobody waits for it.
 *
 * Options: --streams N (200), --changes N (20), --servers N (servers per load balancer, 50), --json.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Registry } from 'prom-client';
import { ConfigServer } from '../operator/config-server/server.js';
import { InMemorySnapshotSource } from '../operator/config-server/source.js';
import { serverCredentials } from '../proto/tls.js';
import { issueClients, makeLoadBalancer, TestDataPlane } from '../test/config-server/helpers.js';
import { TestCa } from '../test/helpers/tls.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    streams: { type: 'string', default: '200' },
    changes: { type: 'string', default: '20' },
    servers: { type: 'string', default: '50' },
    stalled: { type: 'string', default: '1' },
    json: { type: 'boolean' },
  },
});

interface ClientsMessage {
  address: string;
  dirs: string[];
  stalledDirs: string[];
}

/** Child process: the data planes. */
function runClients(): void {
  const open: TestDataPlane[] = [];
  process.on('message', (m: ClientsMessage | 'stop') => {
    if (m === 'stop') {
      for (const dp of open) dp.close();
      process.exit(0);
    }
    for (const dir of m.stalledDirs) {
      const dp = TestDataPlane.withTls(m.address, { dir, ca: Buffer.alloc(0), cert: Buffer.alloc(0), key: Buffer.alloc(0) });
      dp.pause();
      dp.hello('stalled');
      open.push(dp);
    }
    m.dirs.forEach((dir, i) => {
      const dp = TestDataPlane.withTls(m.address, { dir, ca: Buffer.alloc(0), cert: Buffer.alloc(0), key: Buffer.alloc(0) });
      dp.autoAck = true;
      dp.hello(`node-${i}`);
      open.push(dp);
    });
  });
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

function gc(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

async function settle(): Promise<NodeJS.MemoryUsage> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 200));
  }
  return process.memoryUsage();
}

async function main(): Promise<void> {
  const streams = Number(values.streams);
  const changes = Number(values.changes);
  const serversPerLb = Number(values.servers);
  const stalledCount = Number(values.stalled);
  const ca = new TestCa('bench-ca');
  let child: ChildProcess | null = null;
  let server: ConfigServer | null = null;
  try {
    const serverTls = ca.issue({ cn: 'quiclb-operator', usage: 'server' });
    const ids = Array.from({ length: streams }, (_, i) => `dp-${i}`);
    const stalledIds = Array.from({ length: stalledCount }, (_, i) => `stalled-${i}`);
    // What the server calls them: certificate CN @ the node of the Hello (runClients names node-i).
    const dataPlanes = ids.map((cn, i) => `${cn}@node-${i}`);
    const t0 = Date.now();
    const tls = await issueClients(ca, [...ids, ...stalledIds]);
    const certMs = Date.now() - t0;

    const source = new InMemorySnapshotSource();
    const publish = (i: number) =>
      source.publish({
        all: [makeLoadBalancer('web', { servers: serversPerLb, weight: (i % 1000) + 1 }), makeLoadBalancer('api', { servers: serversPerLb, port: 5433, keyIndex: 1 })],
      });
    server = new ConfigServer({ source, credentials: serverCredentials(serverTls.dir), registry: new Registry() });
    const bound = await server.listen('127.0.0.1:0');
    const v0 = publish(0);
    const before = await settle();

    child = fork(fileURLToPath(import.meta.url), ['clients'], { execArgv: ['--import', 'tsx'], stdio: 'inherit' });
    const tc = Date.now();
    child.send({ address: `localhost:${bound.port}`, dirs: tls.slice(0, streams).map((t) => t.dir), stalledDirs: tls.slice(streams).map((t) => t.dir) } satisfies ClientsMessage);
    await server.waitForAck(v0, 60_000, dataPlanes);
    const connectMs = Date.now() - tc;
    const after = await settle();

    const latencies: number[] = [];
    for (let i = 1; i <= changes; i++) {
      const start = performance.now();
      const v = publish(i);
      await server.waitForAck(v, 30_000, dataPlanes);
      latencies.push(performance.now() - start);
      await new Promise((r) => setTimeout(r, 20));
    }
    const sorted = [...latencies].sort((a, b) => a - b);
    const connected = server.dataPlanes().filter((d) => d.connected).length;
    const result = {
      streams,
      stalled: stalledCount,
      connected,
      changes,
      serversPerLoadBalancer: serversPerLb,
      certificatesMs: certMs,
      connectAndFirstAckMs: connectMs,
      changeToAllAckedMs: { p50: +percentile(sorted, 50).toFixed(1), p99: +percentile(sorted, 99).toFixed(1), max: +sorted[sorted.length - 1].toFixed(1) },
      memoryPerStream: {
        rssKiB: +((after.rss - before.rss) / 1024 / (streams + stalledCount)).toFixed(1),
        heapKiB: +((after.heapUsed - before.heapUsed) / 1024 / (streams + stalledCount)).toFixed(1),
      },
      gcExposed: typeof (globalThis as { gc?: unknown }).gc === 'function',
    };
    if (values.json) {
      process.stdout.write(JSON.stringify(result) + '\n');
    } else {
      process.stdout.write(
        [
          `config channel: ${streams} streams (+${stalledCount} stalled, ${connected} connected), ${changes} changes, 2 load balancers x ${serversPerLb} servers`,
          `  change -> all ACKed: p50 ${result.changeToAllAckedMs.p50} ms, p99 ${result.changeToAllAckedMs.p99} ms, max ${result.changeToAllAckedMs.max} ms`,
          `  server memory per connected stream: RSS ${result.memoryPerStream.rssKiB} KiB, heap ${result.memoryPerStream.heapKiB} KiB${result.gcExposed ? '' : ' (no --expose-gc: noisy)'}`,
          `  connect + first ACK of all streams: ${connectMs} ms; certificates: ${certMs} ms`,
        ].join('\n') + '\n',
      );
    }
  } finally {
    child?.send('stop');
    await server?.close(200);
    ca.remove();
  }
}

if (positionals[0] === 'clients') runClients();
else await main();
