/**
 * Spoofed-source flood against the standalone runner, for test/dataplane/hardening-flood.test.ts (run with
 * `node --import tsx` inside a network namespace the test creates; bench/flood/spoof.py sends from random
 * 127.0.0.0/8 sources with a raw socket). Prints one JSON line:
 *   established: confirmed client flows answered after the flood / total;
 *   fresh: new client connections answered after the flood / total;
 *   metrics / healthz: HTTP status of the monitoring server after the flood (0: no answer in 2 s);
 *   bindFailures: of 20 other UDP sockets bound to an ephemeral port after the flood;
 *   nofile: soft/hard limit after start; fds: open descriptors after the flood; stats: Dataplane.stats() subset.
 * argv: SPOOFED RATE
 */
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { CidEncoder } from '../../lib/index.js';
import { runStandalone } from '../../dataplane/standalone.js';
import { readNofileLimit } from '../../dataplane/resources.js';
import { Client, config, shortPacket, standaloneYaml, TaggingBackend } from './helpers.js';

const spoofed = Number(process.argv[2] ?? 3000);
const rate = Number(process.argv[3] ?? 20000);
const ESTABLISHED = 20;
const FRESH = 10;

const backends = await Promise.all(['a', 'b'].map((n) => TaggingBackend.start(n)));
const dir = mkdtempSync(join(tmpdir(), 'quiclb-flood-'));
const path = join(dir, 'lb.yaml');
writeFileSync(
  path,
  standaloneYaml({
    name: 'flood',
    servers: [`  - { id: a, address: "127.0.0.1:${backends[0].port}", server_id: "0001" }`, `  - { id: b, address: "127.0.0.1:${backends[1].port}", server_id: "0002" }`],
    healthCheck: '{ enabled: false }',
    // no new-flow rate limit: this scenario exercises the descriptor and port caps
    extra: 'flows: { unconfirmed: { rate: 0 } }\n',
  }),
);
const logLines: string[] = [];
const logger = pino({ level: 'info' }, { write: (l: string) => void logLines.push(l) });
const h = await runStandalone({ configPath: path, logger, handleSignals: false, watch: false });
const port = h.addresses()[0].port;
const mon = h.monitoringAddress()!;
const encoders = [new CidEncoder(config(), Buffer.from('0001', 'hex')), new CidEncoder(config(), Buffer.from('0002', 'hex'))];

/** A client connection: a CID-routed exchange, twice (the second datagram confirms the flow). */
async function connect(c: Client, i: number): Promise<boolean> {
  const cid = encoders[i % 2].next();
  return (await c.request(shortPacket(cid), port, '127.0.0.1', 1500)) !== null && (await c.request(shortPacket(cid), port, '127.0.0.1', 1500)) !== null;
}

const established: Client[] = [];
for (let i = 0; i < ESTABLISHED; i++) {
  const c = await Client.open();
  established.push(c);
  await connect(c, i);
}

const flood = await new Promise<string>((resolve) => {
  const p = spawn('python3', [join(import.meta.dirname, '../../bench/flood/spoof.py'), '127.0.0.1', String(port), String(spoofed), String(rate)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  p.stdout.on('data', (d: Buffer) => (out += d.toString()));
  p.on('exit', () => resolve(out.trim()));
});
await new Promise((r) => setTimeout(r, 300));

let establishedOk = 0;
for (const c of established) {
  if ((await c.request(shortPacket(encoders[0].next()), port, '127.0.0.1', 1500)) !== null) establishedOk++;
}
let freshOk = 0;
const fresh: Client[] = [];
for (let i = 0; i < FRESH; i++) {
  try {
    const c = await Client.open();
    fresh.push(c);
    if (await connect(c, i)) freshOk++;
  } catch {
    // EMFILE / no port: counted as a failed connection
  }
}

async function status(p: string): Promise<number> {
  try {
    const r = await fetch(`http://127.0.0.1:${mon.port}${p}`, { signal: AbortSignal.timeout(2000) });
    await r.text();
    return r.status;
  } catch {
    return 0;
  }
}
const metrics = await status('/metrics');
const healthz = await status('/healthz');

let bindFailures = 0;
for (let i = 0; i < 20; i++) {
  const s = createSocket('udp4');
  const ok = await new Promise<boolean>((resolve) => {
    s.once('error', () => resolve(false));
    s.bind(0, '127.0.0.1', () => resolve(true));
  });
  if (!ok) bindFailures++;
  try {
    s.close();
  } catch {
    // never bound
  }
}

const st = h.dataplane!.stats();
const result = {
  flood: flood ? JSON.parse(flood) : null,
  established: `${establishedOk}/${ESTABLISHED}`,
  fresh: `${freshOk}/${FRESH}`,
  metrics,
  healthz,
  bindFailures,
  nofile: readNofileLimit(),
  fds: readdirSync('/proc/self/fd').length,
  stats: {
    flows: st.flows,
    unconfirmedFlows: st.unconfirmedFlows,
    upstreamSockets: st.upstreamSockets,
    upstreamSocketLimit: h.dataplane!.upstreamSocketLimit,
    flowsEvictedUnconfirmed: st.flowsEvictedUnconfirmed,
    flowsConfirmed: st.flowsConfirmed,
    dropped: st.dropped,
  },
  warnings: logLines.filter((l) => l.includes('"level":40')).map((l) => JSON.parse(l).msg as string),
};
process.stdout.write(JSON.stringify(result) + '\n');
for (const c of [...established, ...fresh]) await c.close().catch(() => {});
await h.stop();
for (const b of backends) await b.close();
process.exit(0);
