/**
 * Example QUIC client (example code, not part of the data plane): an @matrixai/quic 2.0.9 (quiche) client
 * that sends minimal HTTP/3 GET requests, shows the connection ID the server issued, and can move its
 * connection to a new local UDP port (active migration with a new connection ID).
 *
 * As a command (what `quiclb standalone --example` prints):
 *   npm run example:client -- HOST PORT [--requests N] [--migrate] [--config STANDALONE.yaml]
 * With --config (the YAML the load balancer reads), it also decodes the server's connection ID the way the
 * load balancer does (encrypted QUIC-LB: only holders of the key can) and names the server.
 *
 * @matrixai/quic is a devDependency: importing this module fails when it is not installed.
 */
import { QUICClient, QUICConnectionId, events, type Port } from '@matrixai/quic';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { randomBytes, randomFillSync } from 'node:crypto';
import { resolve as resolvePath } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { CidDecoder } from '../lib/quiclb/decoder.js';
import { loadStandaloneConfig } from '../lib/config/standalone.js';
import { toHex } from '../lib/hex.js';
import { readVarint, varintSize } from '../lib/quic/varint.js';
import { applyQuicWorkarounds, QUIC_CID_LENGTH, h3Varint, H3_CONTROL_STREAM, isQuicLibraryError, quietLogger } from './example-quic-backend.js';

applyQuicWorkarounds();

export interface H3Response {
  /** The :status of the response when it is a QPACK static-table entry (200, 404, ...), else null. */
  status: number | null;
  body: Buffer;
}

/** How long a migrated connection's old socket keeps receiving (late packets of the old path). */
const OLD_PATH_LINGER_MS = 3000;
/** Client CIDs issued before a migration (migrate() says why three). */
const SPARE_CIDS_FOR_MIGRATION = 3;

/** QPACK static table entries that are `:status` values (RFC 9204 Appendix A). */
const STATIC_STATUS: Record<number, number> = {
  24: 103, 25: 200, 26: 304, 27: 404, 28: 503, 63: 100, 64: 204, 65: 206, 66: 302, 67: 400, 68: 403, 69: 421, 70: 425, 71: 500,
};

/** The :status of a QPACK field section made of static references (what minimal servers send), or null. */
function statusOf(fields: Buffer): number | null {
  // required insert count and base (both 0 without a dynamic table), then the first field line
  if (fields.length < 3 || fields[0] !== 0 || fields[1] !== 0) return null;
  const f = fields[2];
  if ((f & 0xc0) !== 0xc0) return null; // not "indexed field line, static table"
  let idx = f & 0x3f;
  if (idx === 0x3f) {
    const ext = readVarintPrefix(fields, 3);
    if (ext === null) return null;
    idx += ext;
  }
  return STATIC_STATUS[idx] ?? null;
}
function readVarintPrefix(b: Buffer, o: number): number | null {
  let v = 0;
  for (let shift = 0; o < b.length && shift < 28; shift += 7, o++) {
    v += (b[o] & 0x7f) << shift;
    if ((b[o] & 0x80) === 0) return v;
  }
  return null;
}

/** A GET request's HEADERS frame: :method GET, :scheme https, :authority, :path (QPACK static references). */
function requestHeaders(authority: string, path: string): Buffer {
  const lit = (nameIndex: number, value: string): Buffer => {
    // literal field line with static name reference: 01 N T=1 index(4 bits); value length < 127 here
    const v = Buffer.from(value);
    if (nameIndex > 14 || v.length > 126) throw new Error('request header too long for this minimal encoder');
    return Buffer.concat([Buffer.from([0x50 | nameIndex, v.length]), v]);
  };
  const fields = Buffer.concat([
    Buffer.from([0x00, 0x00]), // required insert count 0, base 0
    Buffer.from([0xc0 | 17]), // :method GET
    Buffer.from([0xc0 | 23]), // :scheme https
    lit(0, authority), // :authority
    path === '/' ? Buffer.from([0xc0 | 1]) : lit(1, path), // :path
  ]);
  return Buffer.concat([h3Varint(0x01), h3Varint(fields.length), fields]);
}

/** Parses HTTP/3 frames of a response stream: HEADERS (status), DATA (body); other frames are skipped. */
function parseResponse(raw: Buffer): H3Response {
  let o = 0;
  let status: number | null = null;
  const body: Buffer[] = [];
  while (o < raw.length) {
    const type = readVarint(raw, o, raw.length);
    if (type < 0) break;
    o += varintSize(raw[o]);
    const length = readVarint(raw, o, raw.length);
    if (length < 0) break;
    o += varintSize(raw[o]);
    const payload = raw.subarray(o, o + length);
    if (type === 0x01 && status === null) status = statusOf(payload);
    else if (type === 0x00) body.push(payload);
    o += length;
  }
  return { status, body: Buffer.concat(body) };
}

interface NativeClientConn {
  sourceId(): Uint8Array;
  destinationId(): Uint8Array;
  migrateSource(local: { host: string; port: number }): number;
  newSourceCid(scid: Uint8Array, resetToken: bigint, retireIfNeeded: boolean): number;
  availableDcids(): number;
}
/** The parts of @matrixai/quic's QUICSocket that migrate() has to re-point (2.0.9 internals). */
interface SocketInternals {
  socket: Socket;
  socketSend: (...a: unknown[]) => Promise<unknown>;
  socketClose: () => Promise<void>;
  handleSocketMessage: (msg: Buffer, rinfo: unknown) => void;
  connectionMap: { set(id: QUICConnectionId, c: unknown): void };
  _port: number;
  port: number;
}

export interface ExampleQuicClientOptions {
  host: string;
  port: number;
  /** TLS server name (default localhost). */
  serverName?: string;
  /** Local address to bind (default 127.0.0.1, or ::1 for an IPv6 host). */
  localHost?: string;
  /** QUIC max_idle_timeout (default 10 s). */
  idleTimeoutMs?: number;
  /** Gives up connecting after this long (default 5 s). */
  connectTimeoutMs?: number;
  /** The UDP socket's receive buffer in bytes, after the handshake and after a migration (default: the system's). */
  recvBufferBytes?: number;
}

/** One QUIC connection speaking minimal HTTP/3 (ALPN h3); the server certificate is not verified. */
export class ExampleQuicClient {
  private control: WritableStreamDefaultWriter<Uint8Array> | null = null;
  /** Sockets of paths the connection migrated away from, still receiving until OLD_PATH_LINGER_MS. */
  private readonly oldSockets: Socket[] = [];
  private constructor(
    private readonly client: QUICClient,
    readonly authority: string,
    private readonly recvBufferBytes?: number,
  ) {}

  static async connect(o: ExampleQuicClientOptions): Promise<ExampleQuicClient> {
    const ipv6 = o.host.includes(':');
    const client = await QUICClient.createQUICClient(
      {
        host: o.host,
        port: o.port as Port,
        serverName: o.serverName ?? 'localhost',
        localHost: o.localHost ?? (ipv6 ? '::1' : '127.0.0.1'),
        logger: quietLogger(),
        crypto: { ops: { randomBytes: async (data: ArrayBuffer) => void randomFillSync(new Uint8Array(data)) } },
        config: {
          verifyPeer: false,
          applicationProtos: ['h3'],
          maxIdleTimeout: o.idleTimeoutMs ?? 10_000,
          disableActiveMigration: false,
        },
      },
      { timer: o.connectTimeoutMs ?? 5000 },
    );
    // Streams the server opens (its HTTP/3 control stream): read and ignored.
    client.connection.addEventListener(events.EventQUICConnectionStream.name, (evt: Event) => {
      const stream = (evt as events.EventQUICConnectionStream).detail;
      void (async () => {
        try {
          for await (const _ of stream.readable) {
            /* ignored */
          }
        } catch {
          /* the connection closed */
        }
      })();
    });
    const c = new ExampleQuicClient(client, o.serverName ?? 'localhost', o.recvBufferBytes);
    if (o.recvBufferBytes !== undefined) c.quicSocket.socket.setRecvBufferSize(o.recvBufferBytes);
    c.control = client.connection.newStream('uni').writable.getWriter();
    c.control.write(H3_CONTROL_STREAM).catch(() => {});
    return c;
  }

  private get native(): NativeClientConn {
    return (this.client.connection as unknown as { conn: NativeClientConn }).conn;
  }

  private get quicSocket(): SocketInternals {
    return (this.client as unknown as { socket: SocketInternals }).socket;
  }

  /** The local UDP port the connection currently sends from. */
  get localPort(): number {
    return this.quicSocket.port;
  }

  /** The connection ID the client sends to: issued by the server (a QUIC-LB CID for a QUIC-LB server). */
  get serverCid(): Buffer {
    return Buffer.from(this.native.destinationId());
  }

  /** The client's own connection ID (random). */
  get clientCid(): Buffer {
    return Buffer.from(this.native.sourceId());
  }

  /** Spare connection IDs the server issued (NEW_CONNECTION_ID) that a migration can switch to. */
  get spareServerCids(): number {
    return this.native.availableDcids();
  }

  /** GET path on a new request stream; resolves with the response (status and body). */
  async get(path = '/', timeoutMs = 5000): Promise<H3Response> {
    const stream = this.client.connection.newStream('bidi');
    const read = (async () => {
      const chunks: Buffer[] = [];
      for await (const chunk of stream.readable) chunks.push(Buffer.from(chunk));
      return parseResponse(Buffer.concat(chunks));
    })();
    const w = stream.writable.getWriter();
    await w.write(requestHeaders(this.authority, path));
    await w.close();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no response within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      return await Promise.race([read, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Active migration: moves the connection to a new local UDP port (a new socket; the old one is closed 3 s later) and
   * switches to a spare connection ID the server issued, as a client on a new network does. quiche validates
   * the new path with PATH_CHALLENGE. @matrixai/quic has no API for this: it re-points the client's socket
   * (2.0.9 internals) and calls quiche's migrate_source through the native binding.
   */
  async migrate(): Promise<{ from: number; to: number }> {
    // the server's NEW_CONNECTION_ID frames arrive shortly after the handshake
    for (let i = 0; i < 100 && this.native.availableDcids() < 1; i++) await new Promise((r) => setTimeout(r, 10));
    if (this.native.availableDcids() < 1) throw new Error('the server issued no spare connection ID to migrate to');
    const conn = this.client.connection as unknown as { send(): Promise<void> };
    const qs = this.quicSocket;
    // The new path needs a new client connection ID too (the server addresses the new path with it): issue three
    // (NEW_CONNECTION_ID) and route datagrams carrying them to this connection. quiche issues none by itself, and a
    // server spends them before the new path: quic-go moves its own sends to a fresh CID of ours as soon as it has
    // one, and validates with another every other address the old path showed it (behind two load balancer nodes a
    // flow reaches the backend from two addresses). A server without a spare CID never validates the new path, keeps
    // sending to the old one and the connection dies with it (with one CID: 3 of 3 migrations straight to quic-go
    // stalled, a small sample; docs/backends.md item 9).
    for (let i = 0; i < SPARE_CIDS_FOR_MIGRATION; i++) {
      const cid = randomBytes(QUIC_CID_LENGTH);
      this.native.newSourceCid(cid, BigInt('0x' + randomBytes(16).toString('hex')), true);
      qs.connectionMap.set(new QUICConnectionId(cid), this.client.connection);
    }
    await conn.send();
    const from = qs.port;
    const old = qs.socket;
    const host = old.address().address;
    const sock = createSocket(old.address().family === 'IPv6' ? 'udp6' : 'udp4');
    sock.bind(0, host);
    await once(sock, 'listening');
    if (this.recvBufferBytes !== undefined) sock.setRecvBufferSize(this.recvBufferBytes);
    sock.on('error', () => {});
    // the old socket keeps receiving for a while: the server's packets already on their way to the old path (late
    // under load) still reach the connection and are acknowledged; quiche 0.18 servers never resend them otherwise
    // (docs/backends.md, item 9)
    sock.on('message', qs.handleSocketMessage);
    qs.socket = sock;
    qs.socketSend = promisify(sock.send).bind(sock) as SocketInternals['socketSend'];
    qs.socketClose = promisify(sock.close).bind(sock) as SocketInternals['socketClose'];
    qs._port = sock.address().port;
    this.native.migrateSource({ host, port: qs._port });
    await conn.send();
    this.oldSockets.push(old);
    setTimeout(() => this.closeOldSocket(old), OLD_PATH_LINGER_MS).unref();
    return { from, to: qs._port };
  }

  private closeOldSocket(old: Socket): void {
    const i = this.oldSockets.indexOf(old);
    if (i < 0) return;
    this.oldSockets.splice(i, 1);
    old.off('message', this.quicSocket.handleSocketMessage);
    try {
      old.close();
    } catch {
      /* already closed */
    }
  }

  async close(): Promise<void> {
    for (const old of [...this.oldSockets]) this.closeOldSocket(old);
    await this.client.destroy({ isApp: true, errorCode: 0x100, force: true }).catch(() => {}); // H3_NO_ERROR
  }
}

/** Decodes server connection IDs with the QUIC-LB configs of a standalone YAML, as the load balancer does. */
export class ExampleCidDecoder {
  private readonly decoder: CidDecoder;
  private readonly names = new Map<string, string>();
  constructor(configFile: string) {
    const loaded = loadStandaloneConfig(configFile);
    this.decoder = new CidDecoder(loaded.liveConfigs.map((l) => l.config));
    for (const s of loaded.config.servers) this.names.set(toHex(s.serverId), s.name);
  }

  /** "server ID 1a2b (server1)", or why the CID does not decode. */
  describe(cid: Buffer): { serverId: string | null; name: string | null; text: string } {
    const d = this.decoder.decode(cid);
    if (d.reason !== null) return { serverId: null, name: null, text: `not routable by the config (${d.reason})` };
    const serverId = toHex(d.serverId);
    const name = this.names.get(serverId) ?? null;
    return { serverId, name, text: `server ID ${serverId}${name ? ` (${name})` : ' (no such server in the config)'}` };
  }
}

export const CLIENT_USAGE = `Usage: npm run example:client -- HOST PORT [--requests N] [--migrate] [--path P] [--config STANDALONE.yaml]

A QUIC client (@matrixai/quic, HTTP/3): opens one connection, sends N GET requests (default 3), prints each
response and the connection ID the server issued. --migrate moves the connection to a new local port (with a
new connection ID) before the last request. --config decodes the server's connection IDs with the load
balancer's config (the key is in it).`;

/** The command: returns the exit status. */
export async function clientMain(argv: string[], out: (line: string) => void = (l) => process.stdout.write(l + '\n')): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        requests: { type: 'string', short: 'n', default: '3' },
        migrate: { type: 'boolean' },
        path: { type: 'string', default: '/' },
        config: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${CLIENT_USAGE}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    out(CLIENT_USAGE);
    return 0;
  }
  const [host, portText] = positionals;
  const port = Number(portText);
  const n = Number(values.requests);
  if (!host || !Number.isInteger(port) || port < 1 || port > 65535 || !Number.isInteger(n) || n < 1 || positionals.length > 2) {
    process.stderr.write(`${CLIENT_USAGE}\n`);
    return 2;
  }
  if (values.migrate && n < 2) {
    process.stderr.write(`--migrate moves the connection before the last request: it needs --requests 2 or more\n`);
    return 2;
  }
  let decoder: ExampleCidDecoder | null;
  try {
    decoder = values.config ? new ExampleCidDecoder(values.config) : null;
  } catch (e) {
    process.stderr.write(`--config: ${e instanceof Error ? e.message : String(e)}\n`);
    return 2;
  }
  const guard = (e: unknown) => {
    if (!isQuicLibraryError(e)) {
      process.stderr.write(`${(e as Error)?.stack ?? String(e)}\n`);
      process.exit(1);
    }
  };
  process.on('uncaughtException', guard);
  let c: ExampleQuicClient | null = null;
  try {
    try {
      c = await ExampleQuicClient.connect({ host, port });
    } catch (e) {
      const why = e instanceof Error ? [e.name, e.message].filter(Boolean).join(': ') : String(e);
      throw new Error(`no QUIC connection to ${host}:${port} (${why}); is the load balancer running there?`, { cause: e });
    }
    out(`QUIC connection to ${host}:${port} from local port ${c.localPort} (HTTP/3)`);
    for (let i = 1; i <= n; i++) {
      if (values.migrate && i === n) {
        const m = await c.migrate();
        out(`migrated: local port ${m.from} -> ${m.to}, now sending to the server's connection ID ${toHex(c.serverCid)}`);
      }
      const r = await c.get(values.path);
      const cid = c.serverCid;
      out(`${i}. GET ${values.path} -> ${r.status ?? '?'}: ${r.body.toString('utf8').trimEnd()}`);
      out(`   server connection ID ${toHex(cid)}${decoder ? `: ${decoder.describe(cid).text}` : ''}`);
    }
    return 0;
  } catch (e) {
    process.stderr.write(`example client: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  } finally {
    await c?.close();
    process.off('uncaughtException', guard);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolvePath(process.argv[1])).href) {
  process.exitCode = await clientMain(process.argv.slice(2));
}
