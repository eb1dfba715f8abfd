/**
 * Debian ngtcp2 0.12.1 peers (GnuTLS build): `gtlsserver` (HTTP/3 file server) and `gtlsclient`
 * (HTTP/3 client that can migrate: --change-local-addr, --nat-rebinding).
 * Install: scripts/install-system-deps.sh (apt-get install ngtcp2-client ngtcp2-server).
 *
 * gtlsclient exits 0 even when its connection dies on the idle timeout, so callers must check the
 * downloaded body (sameFile), never the exit code.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { requireExecutable, run, type Proc, type ProcGroup, type RunResult } from './proc.js';
import { waitForQuic } from './udp.js';

const HINT = 'bash scripts/install-system-deps.sh (Debian packages ngtcp2-client ngtcp2-server)';

export function gtlsserverPath(): string {
  return requireExecutable('gtlsserver', HINT);
}

export function gtlsclientPath(): string {
  return requireExecutable('gtlsclient', HINT);
}

export interface GtlsServerOptions {
  host: string;
  port: number;
  htdocs: string;
  key: string;
  cert: string;
}

/** Starts `gtlsserver -q -d HTDOCS HOST PORT KEY CERT` and waits until it answers a VN probe. */
export async function startGtlsServer(group: ProcGroup, name: string, o: GtlsServerOptions): Promise<Proc> {
  // -q: without it the server hex-dumps every packet to stdout (hundreds of MB, and 100x slower).
  const p = group.spawn(name, gtlsserverPath(), ['-q', '-d', o.htdocs, o.host, String(o.port), o.key, o.cert]);
  await Promise.race([
    waitForQuic(o.host, o.port, 10000, name),
    p.exited.then((s) => {
      throw new Error(`${name} exited (${s}):\n${p.tail()}`);
    }),
  ]);
  return p;
}

export interface GtlsClientOptions {
  host: string;
  port: number;
  /** URL path, e.g. '/big.bin'. */
  path: string;
  downloadDir: string;
  /** Extra client options (--change-local-addr=100ms, --nat-rebinding, --delay-stream=400ms, ...). */
  args?: string[];
  /** Idle timeout of the QUIC connection (default 4s): a broken path then ends the client quickly. */
  idleTimeout?: string;
  /** Hard limit on the client process. */
  timeoutMs?: number;
  /** Keep the client's event log (no packet/HTTP hex dumps), e.g. to see "Initiate key update". Default: -q. */
  eventLog?: boolean;
}

export interface DownloadResult extends RunResult {
  file: string;
  bytes: number;
}

/** Runs one HTTP/3 GET with gtlsclient and returns where the body landed. */
export async function gtlsDownload(group: ProcGroup, name: string, o: GtlsClientOptions): Promise<DownloadResult> {
  rmSync(o.downloadDir, { recursive: true, force: true });
  mkdirSync(o.downloadDir, { recursive: true });
  const args = [
    ...(o.eventLog ? ['--no-quic-dump', '--no-http-dump'] : ['-q']),
    '--exit-on-all-streams-close',
    `--timeout=${o.idleTimeout ?? '4s'}`,
    '--download',
    o.downloadDir,
    ...(o.args ?? []),
    o.host,
    String(o.port),
    `https://localhost${o.path}`,
  ];
  const r = await run(group, name, gtlsclientPath(), args, o.timeoutMs ?? 30000);
  const file = join(o.downloadDir, basename(o.path) || 'index.html');
  return { ...r, file, bytes: existsSync(file) ? statSync(file).size : 0 };
}

/** Byte-for-byte comparison of two files (bodies in these tests are a few MB, so in memory). */
export function sameFile(a: string, b: string): boolean {
  if (!existsSync(a) || !existsSync(b)) return false;
  if (statSync(a).size !== statSync(b).size) return false;
  return readFileSync(a).equals(readFileSync(b));
}
