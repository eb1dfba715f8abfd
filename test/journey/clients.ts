/**
 * Real QUIC clients of the journey, run in the pod network namespace:
 *   - ngtcp2: Debian's gtlsclient 0.12.1 (HTTP/3), one connection per request, `--scid` chosen here so the backends
 *     can say which of them served it; `ngtcp2-migrate` adds `--change-local-addr=DUR`: a new socket (new local port)
 *     and a new server-issued DCID after DUR, i.e. active migration, and sends its request once the new path is
 *     validated (MIGRATION_SETTLE_MS says why not in the middle of the download);
 *   - matrixai: examples/example-quic-client.ts (@matrixai/quic), `count` GETs on one connection, spaced over
 *     `spreadMs`; with `migrate` it moves to a new local port and CID before the second half of the requests.
 * gtlsclient exits 0 even when its connection dies (QUIC-PEERS.md): only the downloaded bytes count.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExampleQuicClient } from '../../examples/example-quic-client.js';
import { isIntactBody, sizeOfPath } from './h3.js';
import { spawnTied, sleep } from './lines.js';

export interface ClientRequest {
  kind: 'ngtcp2' | 'ngtcp2-migrate' | 'matrixai';
  host: string;
  port: number;
  path: string;
  count: number;
  spreadMs: number;
  /** ngtcp2-migrate: when the client moves to a new local address, after the handshake (default 30 ms). */
  migrateAfterMs: number;
  /** matrixai: move to a new local port and CID half-way through the requests. */
  migrate: boolean;
  /** Hard limit of the whole run. */
  timeoutMs: number;
}

export interface ClientResult {
  ok: boolean;
  bytes: number;
  intact: boolean;
  /** Client connection IDs (hex) of the run's connections: the pod worker asks the backends who served them. */
  clientCids: string[];
  ms: number;
  detail: Record<string, unknown>;
}

/**
 * gtlsclient's idle timeout: its default. A transfer whose datagrams cross two data planes may pause while the
 * server validates a new path; "complete intact" is the bar, not speed (the run's timeoutMs bounds it).
 */
const GTLS_IDLE_TIMEOUT = '30s';
/**
 * ngtcp2-migrate: the client migrates (new local port, new DCID), then requests once the new path is validated.
 * A migration in the middle of a download stalls between these two peers with no load balancer at all: gtlsclient
 * 0.12.1 ignores the server's packets still arriving on the old path ("con ignore packet from unknown path") and
 * quiche 0.18 never declares them lost (test/e2e/quic-lb-migration.test.ts measured 5 of 40 downloads straight from a
 * backend; docs/backends.md item 9), so the journey would measure the peers. The mid-download case through quiclb is
 * quic-lb-migration's; here the download itself crosses both data planes in the ECMP relay's runs.
 */
const MIGRATION_SETTLE_MS = 300;
/** JOURNEY_GTLS_LOG=DIR: gtlsclient runs without -q and each run's whole stderr goes to DIR/SCID.log (diagnosis). */
const GTLS_LOG_DIR = process.env.JOURNEY_GTLS_LOG;

/** Runs one gtlsclient GET; resolves with the downloaded body's size and integrity. */
async function gtlsGet(r: ClientRequest, dir: string, scid: string, remaining: number): Promise<{ bytes: number; intact: boolean; exit: string; stderr: string }> {
  const dl = join(dir, scid);
  mkdirSync(dl, { recursive: true });
  const args = [
    ...(GTLS_LOG_DIR ? ['--no-quic-dump', '--no-http-dump'] : ['-q']), '--exit-on-all-streams-close', `--timeout=${GTLS_IDLE_TIMEOUT}`, '--scid', scid, '--download', dl,
    ...(r.kind === 'ngtcp2-migrate' ? [`--change-local-addr=${r.migrateAfterMs}ms`, `--delay-stream=${r.migrateAfterMs + MIGRATION_SETTLE_MS}ms`] : []),
    r.host, String(r.port), `https://localhost${r.path}`,
  ];
  // (gtlsclient cannot bind a source address: it gets the client address from the route's src)
  const child = spawnTied('gtlsclient', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const log = GTLS_LOG_DIR ? createWriteStream(join(GTLS_LOG_DIR, `${scid}.log`)) : null;
  child.stderr?.on('data', (d: Buffer) => {
    log?.write(d);
    if (stderr.length < 4000) stderr += d.toString();
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), remaining);
  const exit = await new Promise<string>((resolve) => {
    child.on('exit', (code, signal) => resolve(String(code ?? signal)));
    child.on('error', (e) => resolve(`spawn error: ${e.message}`));
  });
  clearTimeout(timer);
  log?.end();
  const file = join(dl, r.path.slice(1) || 'index.html');
  let bytes = 0;
  let intact = false;
  try {
    bytes = statSync(file).size;
    const want = sizeOfPath(r.path);
    intact = want !== null && isIntactBody(readFileSync(file), want);
  } catch {
    /* nothing downloaded */
  }
  rmSync(dl, { recursive: true, force: true });
  return { bytes, intact, exit, stderr: stderr.trim() };
}

async function runNgtcp2(r: ClientRequest): Promise<ClientResult> {
  const t0 = Date.now();
  // downloads land here (one file per GET, checked and deleted at once); the directory goes with the run
  const dir = mkdtempSync(join(tmpdir(), 'quiclb-journey-dl-'));
  try {
    return await downloads(r, dir, t0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function downloads(r: ClientRequest, dir: string, t0: number): Promise<ClientResult> {
  const clientCids: string[] = [];
  const runs: Record<string, unknown>[] = [];
  let bytes = 0;
  let intact = true;
  for (let i = 0; i < r.count; i++) {
    if (i > 0 && r.spreadMs > 0) await sleep(r.spreadMs / (r.count - 1));
    const remaining = r.timeoutMs - (Date.now() - t0);
    if (remaining <= 0) {
      intact = false;
      runs.push({ error: 'run time limit reached' });
      break;
    }
    const scid = randomBytes(17).toString('hex');
    clientCids.push(scid);
    const g = await gtlsGet(r, dir, scid, remaining);
    bytes += g.bytes;
    intact &&= g.intact;
    runs.push({ scid, bytes: g.bytes, intact: g.intact, exit: g.exit, ...(g.intact ? {} : { stderr: g.stderr }) });
  }
  const want = (sizeOfPath(r.path) ?? -1) * r.count;
  return { ok: intact && bytes === want, bytes, intact, clientCids, ms: Date.now() - t0, detail: { runs } };
}

async function runMatrixai(r: ClientRequest, clientIp: string): Promise<ClientResult> {
  const t0 = Date.now();
  const want = sizeOfPath(r.path);
  let bytes = 0;
  let intact = true;
  const detail: Record<string, unknown> = {};
  let c: ExampleQuicClient | null = null;
  const clientCids: string[] = [];
  try {
    // quiche sends no keep-alive: the idle timeout must outlast the pauses between requests
    const gapMs = r.count > 1 ? r.spreadMs / (r.count - 1) : 0;
    const idleTimeoutMs = Math.min(120_000, Math.max(10_000, gapMs + 10_000));
    // 4 MiB receive buffer: the pod network's event loop is busy with the backends and the relay (ecmp.ts says why)
    c = await ExampleQuicClient.connect({ host: r.host, port: r.port, localHost: clientIp, connectTimeoutMs: 5000, idleTimeoutMs, recvBufferBytes: 4 * 1024 * 1024 });
    clientCids.push(c.clientCid.toString('hex'));
    const serverCids = new Set<string>([c.serverCid.toString('hex')]);
    const statuses: (number | null)[] = [];
    for (let i = 0; i < r.count; i++) {
      if (i > 0 && r.spreadMs > 0) await sleep(r.spreadMs / (r.count - 1));
      if (r.migrate && i === Math.floor(r.count / 2) && i > 0) {
        const m = await c.migrate();
        detail.migrated = m;
      }
      const remaining = r.timeoutMs - (Date.now() - t0);
      if (remaining <= 0) throw new Error(`run time limit reached after ${i} of ${r.count} requests`);
      const res = await c.get(r.path, Math.min(remaining, 15_000));
      statuses.push(res.status);
      serverCids.add(c.serverCid.toString('hex'));
      bytes += res.body.length;
      intact &&= res.status === 200 && want !== null && isIntactBody(res.body, want);
    }
    detail.statuses = statuses;
    detail.serverCids = [...serverCids];
  } catch (e) {
    intact = false;
    detail.error = e instanceof Error ? e.message : String(e);
  } finally {
    await c?.close();
  }
  return { ok: intact && want !== null && bytes === want * r.count, bytes, intact, clientCids, ms: Date.now() - t0, detail };
}

export function runClient(r: ClientRequest, clientIp: string): Promise<ClientResult> {
  return r.kind === 'matrixai' ? runMatrixai(r, clientIp) : runNgtcp2(r);
}
