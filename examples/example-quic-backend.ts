/**
 * Example QUIC backend (example code, not part of the data plane): an @matrixai/quic 2.0.9 (quiche) server
 * speaking a minimal HTTP/3 and minting ENCRYPTED QUIC-LB connection IDs with the project's server-side
 * generator (ServerCidGenerator, lib/backend/generator.ts), reading the same standalone YAML as the
 * load balancer. Used by `quiclb standalone --example` (in-process) and by the end-to-end tests
 * (test/e2e/peers/matrixai-backend.ts runs it as a child process).
 *
 *   const b = await ExampleQuicBackend.start({ configFile, serverName: 'server1', tls: selfSignedCert() });
 *   ... b.port, b.serverIdHex, b.stats() ...
 *   await b.stop();
 *
 * @matrixai/quic is a devDependency: importing this module fails when it is not installed.
 *
 * Where its connection IDs come from (@matrixai/quic has no CID generator option):
 *   - the Retry SCID, which becomes the connection's server CID, is the first 20 bytes (quiche's
 *     MAX_CONN_ID_LEN) of crypto.ops.sign(key, clientDcid). sign() is also used to MAC retry tokens, so
 *     it returns CID(20 bytes, freshly minted) || HMAC-SHA256(key, data); verify() checks the HMAC and
 *     that the CID prefix is one this instance minted;
 *   - more CIDs (needed for active migration) are issued through the native binding
 *     conn.newSourceCid(cid, resetToken, false) and registered in the socket's connection map
 *     (the client's active_connection_id_limit caps them: 7 for ngtcp2, 2 for a quiche client).
 * So every CID of this server must be exactly 20 bytes: 1 + server_id_length + nonce_length + extra_length = 20.
 *
 * What it records (the honest routing check): every datagram its UDP socket receives, before the QUIC
 * library sees it. For each one: header form, long-header type, DCID, sender address. A short-header
 * (1-RTT) datagram is "own" when its DCID is one this backend issued, "foreign" otherwise (another
 * backend's CID, or garbage).
 *
 * Library bug workarounds (2.0.9), see /work/shared/QUIC-PEERS.md §2:
 *   1. disableActiveMigration defaults to true: set false, or real clients never migrate.
 *   2. ALPN 'h3' and a hand-made HTTP/3 response (control stream 00 04 00; HEADERS 01 03 00 00 d9; DATA).
 *   3. Peer streams that arrive while the connection is 'starting' crash the process (streamShutdown on a
 *      remote uni stream): processStreams() is deferred until the connection has started
 *      (applyQuicWorkarounds(), process-wide, also needed by clients).
 *   4. A peer application close code 0x100..0x1ff (H3_NO_ERROR) is taken for a TLS error and thrown
 *      uncaught: peerError() reports such codes as 0. Library errors still surface as uncaught exceptions
 *      (connection idle timeouts, peer closes): processes using this module need an 'uncaughtException'
 *      handler; isQuicLibraryError() tells those apart from other errors.
 *   5. quiche's retired source CIDs are never removed from the socket's connection map: a late datagram with a CID
 *      the client retired reached quiche, which closed the connection; they are drained after every recv.
 *   6. active_connection_id_limit is quiche's default 2 (no option): 8 for every endpoint of the process
 *      (setActiveConnectionIdLimit; docs/backends.md item 6).
 *   7. quiche does not retransmit the lost last packets of a path the connection moved away from (its PTO probe for
 *      that path goes out on the active path, without a PING): every 200 ms, each other path's pending probe is sent
 *      on that path (sendOnPath), whose acknowledgement makes quiche declare them lost (docs/backends.md item 9).
 * And quiche closes a connection silently when no usable path is left; the backend notices (a check every second)
 * and reports it with the connection's record (quic-connection-record.ts).
 *
 * Two ways to get the CIDs' config: a standalone YAML (configFile + serverName: the config the LB reads, fixed at
 * start), or a generator the caller made (`generator`: e.g. ServerCidGenerator.fromKubernetes, the files the operator
 * delivers, followed as keys rotate; test/journey/backend.ts runs this class that way).
 */
import { QUICConnection, QUICConnectionId, QUICServer, errors as quicErrors, events } from '@matrixai/quic';
import Logger, { LogLevel } from '@matrixai/logger'; // a dependency of @matrixai/quic
import quiche from '@matrixai/quic/native/quiche.js';
import { createHmac, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign as signData, timingSafeEqual, X509Certificate } from 'node:crypto';
import type { Socket } from 'node:dgram';
import { CidDecoder } from '../lib/quiclb/decoder.js';
import { ServerCidGenerator } from '../lib/backend/generator.js';
import { toHex } from '../lib/hex.js';
import { varintLength, writeVarint } from '../lib/quic/varint.js';
import { ConnectionRecord, type NativePathApi } from './quic-connection-record.js';

/** quiche's fixed connection-ID length (short headers are parsed with it). */
export const QUIC_CID_LENGTH = 20;

// ---- workaround 3: defer stream processing while the connection is starting (process-wide, idempotent) ----
const PATCHED = Symbol.for('quiclb.example.processStreamsPatched');
type WithStatus = Record<symbol, unknown>;
const statusSymbol = (obj: object): symbol | undefined => Object.getOwnPropertySymbols(obj).find((s) => s.description === '_status');

/** Patches QUICConnection.prototype.processStreams (library bug 3). Called on import; safe to call again. */
export function applyQuicWorkarounds(): void {
  const proto = QUICConnection.prototype as unknown as { processStreams: (this: QUICConnection) => void } & Record<symbol, boolean>;
  if (proto[PATCHED]) return;
  const orig = proto.processStreams;
  proto.processStreams = function (this: QUICConnection) {
    const sym = statusSymbol(this);
    if (sym !== undefined && (this as unknown as WithStatus)[sym] === 'starting') return;
    orig.call(this);
  };
  proto[PATCHED] = true;
}
applyQuicWorkarounds();

/**
 * Whether an uncaught exception comes from @matrixai/quic's event plumbing (a connection that timed out or
 * was closed by its peer, a stream reset): those are thrown from event handlers where no caller can catch them.
 */
export function isQuicLibraryError(e: unknown): boolean {
  if (e instanceof quicErrors.ErrorQUIC) return true;
  // errors of the native binding (quiche error names) and of @matrixai/async-init state checks
  if (e instanceof Error && /^(Done|InvalidStreamState|InvalidState|StreamStopped|StreamReset|IdLimit|OutOfIdentifiers)$/.test(e.message)) return true;
  return e instanceof Error && /^Error(QUIC|AsyncInit)/.test(e.name);
}

// ---- a self-signed certificate, made with node:crypto (no openssl needed) ------------------------------------
function der(tag: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  const n = body.length;
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...len]), body]);
}
function oid(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split('.').map(Number);
  const out = [40 * a + b];
  for (const v of rest) {
    const bytes = [v & 0x7f];
    for (let x = v >>> 7; x > 0; x >>>= 7) bytes.unshift(0x80 | (x & 0x7f));
    out.push(...bytes);
  }
  return der(0x06, Buffer.from(out));
}
const utcTime = (d: Date): Buffer => der(0x17, Buffer.from(d.toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z'));

/**
 * A fresh self-signed ECDSA P-256 certificate for `localhost` and 127.0.0.1 (valid for 30 days), as PEM.
 * Good enough for clients that do not verify the server (the example client, `gtlsclient`).
 */
export function selfSignedCert(commonName = 'localhost'): { key: string; cert: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const ecdsaSha256 = der(0x30, oid('1.2.840.10045.4.3.2'));
  const name = der(0x30, der(0x31, der(0x30, oid('2.5.4.3'), der(0x0c, Buffer.from(commonName)))));
  const serial = randomBytes(16);
  serial[0] = (serial[0] & 0x7f) | 0x01;
  const now = Date.now();
  const san = der(0x30, der(0x82, Buffer.from('localhost')), der(0x87, Buffer.from([127, 0, 0, 1])));
  const tbs = der(
    0x30,
    der(0xa0, der(0x02, Buffer.from([2]))), // v3
    der(0x02, serial),
    ecdsaSha256,
    name,
    der(0x30, utcTime(new Date(now - 3600_000)), utcTime(new Date(now + 30 * 86400_000))),
    name,
    publicKey.export({ type: 'spki', format: 'der' }),
    der(0xa3, der(0x30, der(0x30, oid('2.5.29.17'), der(0x04, san)))),
  );
  const signature = signData('sha256', tbs, privateKey);
  const certDer = der(0x30, tbs, ecdsaSha256, der(0x03, Buffer.concat([Buffer.from([0]), signature])));
  const cert = `-----BEGIN CERTIFICATE-----\n${certDer.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END CERTIFICATE-----\n`;
  const key = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  // self-check: a malformed certificate would only show up as a TLS handshake failure
  if (!new X509Certificate(cert).verify(createPublicKey(createPrivateKey(key)))) throw new Error('selfSignedCert: the certificate does not verify');
  return { key, cert };
}

// ---- HTTP/3, just enough for gtlsclient and the example client -------------------------------------------------
/** A QUIC varint (HTTP/3 frame types and lengths), minimally encoded. */
export function h3Varint(n: number): Buffer {
  const b = Buffer.alloc(varintLength(n));
  writeVarint(b, 0, n);
  return b;
}
/** A control stream's first bytes: stream type 0x00 (control), SETTINGS frame (0x04) with no settings. */
export const H3_CONTROL_STREAM = Buffer.from([0x00, 0x04, 0x00]);
const H3_HEADERS_200 = Buffer.from([0x00, 0x00, 0xd9]); // QPACK: RIC 0, base 0, static index 25 ':status: 200'

// ---- stats -------------------------------------------------------------------------------------------------------
export interface BackendStats {
  serverId: string;
  port: number;
  datagrams: number;
  /** Long-header datagrams by type. */
  long: Record<string, number>;
  /** Short-header (1-RTT) datagrams whose DCID this backend issued. */
  shortOwn: number;
  /** Short-header datagrams whose DCID this backend did not issue (misrouted, or garbage). */
  shortForeign: number;
  /** Of those, how many decode (QUIC-LB) to another server ID. */
  shortForeignDecodable: number;
  /** Distinct DCIDs (hex) seen in own short-header datagrams, with the sender addresses that used them. */
  dcids: Record<string, string[]>;
  /** Sender addresses (the LB's upstream sockets) of own short-header datagrams, in first-seen order. */
  senders: string[];
  /** Own short-header datagrams per sender address. */
  perSender: Record<string, number>;
  /**
   * CIDs this backend minted and remembers (at most the last 100 000): Retry SCIDs and NEW_CONNECTION_IDs, and the one
   * @matrixai/quic derives for every Initial and retry token, used or not (version-negotiation probes included).
   */
  issued: number;
  /** Minted CIDs forgotten to stay within that bound: an Initial carrying one is no longer recognised as this backend's. */
  issuedForgotten: number;
  /** Of those, how many were 0b111 (unroutable: the generator had no config or server ID yet). */
  unroutableIssued: number;
  connections: number;
  /** Requests received (client bidirectional streams read to their end). */
  requests: number;
  /** Responses written to their end. */
  responses: number;
  /** How connections ended with an error, as the library reported it (e.g. "peer closed: transport code 10"). */
  connectionErrors: string[];
  uncaught: string[];
}

const LONG_TYPES = ['initial', '0rtt', 'handshake', 'retry'];

/** One line for a connection error event: its message, the QUIC error code and reason when there is one. */
export function describeConnectionError(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const data = (e as { data?: unknown }).data as { isApp?: boolean; errorCode?: number; reason?: Uint8Array } | undefined;
  let text = `${e.name}: ${e.message}`;
  if (data && typeof data.errorCode === 'number') {
    text += ` (${data.isApp ? 'application' : 'transport'} code 0x${data.errorCode.toString(16)}`;
    if (data.reason && data.reason.length > 0) text += `, reason ${JSON.stringify(Buffer.from(data.reason).toString('utf8'))}`;
    text += ')';
  }
  const cause = (e as { cause?: unknown }).cause;
  if (cause instanceof Error) text += ` caused by ${cause.name}: ${cause.message}`;
  return text;
}

/** What a request handler learns about the request (the example's bodies name the backend and the path). */
export interface RequestInfo {
  /** Server CID of the connection (hex): the Retry SCID this backend minted. */
  connectionId: string;
  /** The peer as this backend sees it (behind a load balancer: the LB's upstream socket). */
  peer: string;
  /** Requests served on this connection so far, this one included. */
  requestNumber: number;
  /** The client's connection ID (hex): the SCID of its Initial after the Retry. */
  clientCid: string;
  /** The request stream as received (HEADERS frame of the GET), or null when it was over 16 KiB. */
  request: Buffer | null;
}

export interface ExampleQuicBackendOptions {
  /** Where to listen (default 127.0.0.1). */
  host?: string;
  /** UDP port (default 0: any free port). */
  port?: number;
  /** The standalone YAML the LB reads; the backend takes its server ID and the active config from it (with serverName). */
  configFile?: string;
  /** This server's `id` in the YAML. */
  serverName?: string;
  /**
   * Or the CID generator to mint with, made by the caller (e.g. ServerCidGenerator.fromKubernetes: followed as its
   * files change, 0b111 CIDs until it has a config and a server ID); the backend closes it on stop().
   */
  generator?: ServerCidGenerator;
  /** Name in logs and bodies (default serverName). */
  name?: string;
  /** TLS key and certificate chain (PEM text). */
  tls: { key: string; cert: string };
  /** Response body (default: a line naming the backend, its server ID, the connection and the peer). */
  body?: Buffer | ((req: RequestInfo) => Buffer | string);
  /** The whole response instead: a HEADERS frame and a body (null: none). Overrides `body`. */
  respond?: (req: RequestInfo) => { headers: Buffer; body: Buffer | null };
  /** How many extra CIDs to issue per connection with NEW_CONNECTION_ID (default 3). */
  extraCids?: number;
  /** QUIC max_idle_timeout (default 10 s). */
  idleTimeoutMs?: number;
  /** Every datagram the socket receives, before the QUIC library sees it (e.g. an audit of the DCIDs). */
  onDatagram?: (msg: Buffer, from: string) => void;
  /** A new connection: its server CID, the client's first SCID and every CID this backend issued it (hex). */
  onConnection?: (c: { serverCid: string; clientCid: string; cids: string[] }) => void;
  /** Diagnostic lines (default: none). Each connection's end comes with its ConnectionRecord summary. */
  log?: (line: string) => void;
  /** Let @matrixai/quic log at INFO on stderr (default false: silent). */
  libraryLogs?: boolean;
  /** The UDP socket's receive buffer in bytes (default: the system's; the kernel caps it at net.core.rmem_max). */
  recvBufferBytes?: number;
}

/**
 * quiche's active_connection_id_limit for every @matrixai/quic endpoint of this process (default 8; quiche's own
 * default is 2). A backend behind several data planes sees one client from one address per data plane (each data
 * plane is a full proxy with its own upstream socket), and quiche needs a client-issued CID for each path: with 2,
 * a client whose datagrams alternate between two data planes and that migrates has no CID for the new paths and
 * stalls (measured with test/journey's clients: the ECMP ngtcp2-migrate and migrating matrixai runs failed in 4 of 4
 * runs at 2; none in 6 rounds of all 9 clients at once at 8). docs/backends.md, item 6.
 * @matrixai/quic has no option for it: set after the library builds its quiche config (setApplicationProtos is the
 * last setter it calls).
 */
let activeConnectionIdLimit = 8;
export function setActiveConnectionIdLimit(n: number): void {
  activeConnectionIdLimit = n;
}
{
  type NativeConfig = { setActiveConnectionIdLimit(n: number): void };
  const proto = (quiche as unknown as { Config: { prototype: { setApplicationProtos(this: NativeConfig, p: unknown): void } & Record<symbol, boolean> } }).Config.prototype;
  const PATCHED_LIMIT = Symbol.for('quiclb.example.activeConnectionIdLimitPatched');
  if (!proto[PATCHED_LIMIT]) {
    const orig = proto.setApplicationProtos;
    proto.setApplicationProtos = function (this: NativeConfig, p: unknown) {
      orig.call(this, p);
      this.setActiveConnectionIdLimit(activeConnectionIdLimit);
    };
    proto[PATCHED_LIMIT] = true;
  }
}

interface HostPort {
  host: string;
  port: number;
}
interface NativeConn extends NativePathApi {
  recv(data: Uint8Array, info: { from: HostPort }): number;
  sendOnPath(data: Uint8Array, from?: HostPort | null, to?: HostPort | null): [number, { to: HostPort }] | null;
  maxSendUdpPayloadSize(): number;
  retiredScidNext(): Uint8Array | null;
  newSourceCid(scid: Uint8Array, resetToken: bigint, retireIfNeeded: boolean): number;
  peerError(): { isApp: boolean; errorCode: number; reason: Uint8Array } | null;
}
interface ServerInternals {
  socket: { socket: Socket; connectionMap: { set(id: QUICConnectionId, c: QUICConnection): void; delete(id: QUICConnectionId): void } };
}

/** A @matrixai/logger that prints nothing (the library logs every connection at INFO). */
export const quietLogger = (): Logger => new Logger('quic', LogLevel.SILENT);

const toArrayBuffer = (b: Buffer): ArrayBuffer => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
const hmac = (key: ArrayBuffer, data: ArrayBuffer): Buffer => createHmac('sha256', Buffer.from(key)).update(Buffer.from(data)).digest();
/** Largest request stream read (the HEADERS of a GET are a few dozen bytes). */
const MAX_REQUEST_BYTES = 16 * 1024;
/**
 * CIDs and client CIDs remembered, the oldest forgotten first: bounded, and never full (every Initial a peer sends
 * mints a CID, the data planes' version-negotiation health probes included; a set that stopped growing would fail the
 * retry tokens of every later connection).
 */
const MAX_TRACKED = 100_000;
/** Distinct DCIDs and sender addresses the stats list (BackendStats.dcids, senders, perSender). */
const MAX_LISTED = 1000;
/**
 * Makes room for one more entry in a set or map bounded at MAX_TRACKED by forgetting its oldest (insertion order);
 * whether it forgot one.
 */
function makeRoom(c: Set<string> | Map<string, string>): boolean {
  if (c.size < MAX_TRACKED) return false;
  const oldest = c.keys().next();
  return !oldest.done && c.delete(oldest.value);
}
/** How often a connection is checked for a close quiche did without telling @matrixai/quic. */
const CLOSE_CHECK_MS = 1000;
/** How often a connection's other paths get their pending loss probes sent (workaround 7). */
const PATH_PROBE_MS = 200;

/** One example QUIC backend (see the module comment). */
export class ExampleQuicBackend {
  private readonly generator: ServerCidGenerator;
  private readonly issued = new Set<string>();
  /** Retry SCID (hex) -> the client's SCID in the Initial that used it (its connection ID for the whole connection). */
  private readonly clientCidOf = new Map<string, string>();
  private server: QUICServer | null = null;
  private decoderOf: { live: ReturnType<ServerCidGenerator['liveConfigs']>; decoder: CidDecoder } | null = null;
  private current: BackendStats;
  /** How many DCIDs `current.dcids` lists, and the senders `current.senders` lists (reset with it). */
  private listed = { dcids: 0, senders: new Set<string>() };
  private readonly log: (line: string) => void;
  private readonly onMessage = (msg: Buffer, rinfo: { address: string; port: number }) => this.record(msg, `${rinfo.address}:${rinfo.port}`);

  private constructor(readonly options: ExampleQuicBackendOptions) {
    this.log = options.log ?? (() => {});
    if (options.generator) {
      this.generator = options.generator;
    } else {
      if (options.configFile === undefined || options.serverName === undefined) throw new Error('ExampleQuicBackend: give configFile and serverName, or a generator');
      // The project's server-side CID generator, reading the same standalone YAML as the LB (server ID, active config).
      this.generator = ServerCidGenerator.fromFile(options.configFile, options.serverName, { watch: false });
      if (this.generator.activeConfigId === null || this.generator.serverId === null) {
        this.generator.close();
        throw new Error(`${options.configFile}: ${this.generator.info().reason}`);
      }
      if (this.generator.cidLength !== QUIC_CID_LENGTH) {
        this.generator.close();
        throw new Error(`${options.configFile}: the QUIC-LB config makes ${this.generator.cidLength}-byte CIDs; @matrixai/quic needs exactly ${QUIC_CID_LENGTH}`);
      }
    }
    this.current = this.fresh();
  }

  get name(): string {
    return this.options.name ?? this.options.serverName ?? 'backend';
  }

  /** The server ID the generator mints with now (empty while it has none). */
  get serverId(): Buffer {
    return this.generator.serverId ?? Buffer.alloc(0);
  }

  get serverIdHex(): string {
    return toHex(this.serverId);
  }

  get host(): string {
    return this.options.host ?? '127.0.0.1';
  }

  get port(): number {
    return this.server ? (this.server.port as unknown as number) : 0;
  }

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  /** Starts a backend; resolves once it listens. */
  static async start(options: ExampleQuicBackendOptions): Promise<ExampleQuicBackend> {
    const b = new ExampleQuicBackend(options);
    try {
      await b.listen();
    } catch (e) {
      await b.stop(); // the generator, and the server when it started (a failed receive buffer setting)
      throw e;
    }
    return b;
  }

  stats(): BackendStats {
    return { ...this.current, serverId: this.serverIdHex, issued: this.issued.size };
  }

  resetStats(): void {
    this.current = this.fresh();
    this.listed = { dcids: 0, senders: new Set<string>() };
  }

  /** Whether this backend minted the CID (hex), among the last MAX_TRACKED (100 000) it minted. */
  issuedCid(hex: string): boolean {
    return this.issued.has(hex);
  }

  /** What the generator mints now (active config, server ID, or why it mints 0b111 CIDs). */
  generatorInfo(): ReturnType<ServerCidGenerator['info']> {
    return this.generator.info();
  }

  /** Records an uncaught library error against this backend (see isQuicLibraryError). */
  noteUncaught(text: string): void {
    if (this.current.uncaught.length < 20) this.current.uncaught.push(text);
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = null;
    this.generator.close();
    if (!s) return;
    (s as unknown as ServerInternals).socket.socket.off('message', this.onMessage);
    await s.stop({ force: true }).catch(() => {});
  }

  private fresh(): BackendStats {
    return {
      serverId: this.serverIdHex, port: this.port, datagrams: 0, long: {}, shortOwn: 0, shortForeign: 0, shortForeignDecodable: 0,
      dcids: {}, senders: [], perSender: {}, issued: 0, issuedForgotten: 0, unroutableIssued: 0, connections: 0, requests: 0, responses: 0, connectionErrors: [], uncaught: [],
    };
  }

  private mintCid(): Buffer {
    let cid = this.generator.next();
    if (cid.length !== QUIC_CID_LENGTH) {
      // quiche parses short headers with 20-byte DCIDs: a config of another length cannot work with this server
      this.log(`generator minted a ${cid.length}-byte CID; @matrixai/quic needs ${QUIC_CID_LENGTH}: using a 0b111 CID`);
      cid = randomBytes(QUIC_CID_LENGTH);
      cid[0] |= 0xe0;
    }
    if ((cid[0] & 0xe0) === 0xe0) this.current.unroutableIssued++;
    if (makeRoom(this.issued)) this.current.issuedForgotten++;
    this.issued.add(cid.toString('hex'));
    return cid;
  }

  private record(msg: Buffer, from: string): void {
    this.options.onDatagram?.(msg, from);
    const stats = this.current;
    stats.datagrams++;
    if (msg.length < 1) return;
    if (msg[0] & 0x80) {
      const version = msg.length >= 5 ? msg.readUInt32BE(1) : -1;
      const type = version === 1 ? LONG_TYPES[(msg[0] >> 4) & 3] : `version-${version.toString(16)}`;
      stats.long[type] = (stats.long[type] ?? 0) + 1;
      // after the Retry: DCID = our Retry SCID, SCID = the client's first CID (its connection ID from then on)
      if (type === 'initial' && msg.length > 6) {
        const dcid = msg.subarray(6, 6 + msg[5]).toString('hex');
        const o = 6 + msg[5];
        if (msg.length > o && this.issued.has(dcid) && !this.clientCidOf.has(dcid)) {
          const scid = msg.subarray(o + 1, o + 1 + msg[o]);
          if (scid.length === msg[o]) {
            makeRoom(this.clientCidOf);
            this.clientCidOf.set(dcid, scid.toString('hex'));
          }
        }
      }
      return;
    }
    const dcid = msg.subarray(1, 1 + QUIC_CID_LENGTH);
    const hex = dcid.toString('hex');
    if (dcid.length === QUIC_CID_LENGTH && this.issued.has(hex)) {
      stats.shortOwn++;
      // constant work per datagram: the listed keys are counted here, not with Object.keys or includes
      const listed = this.listed;
      let senders = stats.dcids[hex];
      if (senders === undefined && listed.dcids < MAX_LISTED) {
        senders = stats.dcids[hex] = [];
        listed.dcids++;
      }
      if (senders && senders.length < 16 && !senders.includes(from)) senders.push(from);
      if (!listed.senders.has(from) && listed.senders.size < MAX_LISTED) {
        listed.senders.add(from);
        stats.senders.push(from);
      }
      if (listed.senders.has(from)) stats.perSender[from] = (stats.perSender[from] ?? 0) + 1;
    } else {
      stats.shortForeign++;
      if (this.decoder().decode(dcid).reason === null) stats.shortForeignDecodable++;
    }
  }

  /** A decoder of the generator's live configs, built again only when they change (a peer's datagrams cost no key setup). */
  private decoder(): CidDecoder {
    const live = this.generator.liveConfigs();
    if (this.decoderOf?.live !== live) this.decoderOf = { live, decoder: new CidDecoder(live.map((l) => l.config)) };
    return this.decoderOf.decoder;
  }

  private bodyFor(req: RequestInfo): Buffer {
    const b = this.options.body;
    if (Buffer.isBuffer(b)) return b;
    if (typeof b === 'function') {
      const r = b(req);
      return typeof r === 'string' ? Buffer.from(r) : r;
    }
    return Buffer.from(
      `${this.name} (server ID ${this.serverIdHex}) answered request ${req.requestNumber} of QUIC connection ${req.connectionId.slice(0, 12)}… (from ${req.peer})\n`,
    );
  }

  private async listen(): Promise<void> {
    // crypto ops: sign = fresh QUIC-LB CID || HMAC (the Retry SCID and the token MAC), verify = HMAC + a CID we issued
    const sign = async (key: ArrayBuffer, data: ArrayBuffer): Promise<ArrayBuffer> => toArrayBuffer(Buffer.concat([this.mintCid(), hmac(key, data)]));
    const verify = async (key: ArrayBuffer, data: ArrayBuffer, sig: ArrayBuffer): Promise<boolean> => {
      const s = Buffer.from(sig);
      if (s.length !== QUIC_CID_LENGTH + 32) return false;
      return timingSafeEqual(s.subarray(QUIC_CID_LENGTH), hmac(key, data)) && this.issued.has(s.subarray(0, QUIC_CID_LENGTH).toString('hex'));
    };
    const server = new QUICServer({
      ...(this.options.libraryLogs ? {} : { logger: quietLogger() }),
      crypto: { key: toArrayBuffer(randomBytes(32)), ops: { sign, verify } },
      config: {
        key: this.options.tls.key,
        cert: this.options.tls.cert,
        verifyPeer: false,
        maxIdleTimeout: this.options.idleTimeoutMs ?? 10_000,
        applicationProtos: ['h3'],
        disableActiveMigration: false,
      },
    });
    server.addEventListener(events.EventQUICServerConnection.name, (evt: Event) => this.onConnection((evt as events.EventQUICServerConnection).detail, server));
    await server.start({ host: this.host, port: this.options.port ?? 0 });
    this.server = server;
    // Record every datagram before the QUIC library handles it.
    const socket = (server as unknown as ServerInternals).socket.socket;
    socket.prependListener('message', this.onMessage);
    if (this.options.recvBufferBytes !== undefined) socket.setRecvBufferSize(this.options.recvBufferBytes);
    this.current.port = this.port;
  }

  private onConnection(conn: QUICConnection, server: QUICServer): void {
    const internals = server as unknown as ServerInternals;
    this.current.connections++;
    const native = (conn as unknown as { conn: NativeConn }).conn;
    const record = new ConnectionRecord(native);
    // workaround 4: H3 application close codes are not TLS errors
    const origPeerError = native.peerError.bind(native);
    native.peerError = () => {
      const e = origPeerError();
      return e && e.isApp && e.errorCode >= 0x100 && e.errorCode <= 0x1ff ? { ...e, errorCode: 0 } : e;
    };
    // workaround 5: @matrixai/quic never drains quiche's retired source CIDs, so a CID the client retired stays in
    // the socket's connection map; a late datagram carrying it (reordered behind the RETIRE_CONNECTION_ID, e.g. through
    // another data plane) then reaches quiche, which no longer knows the CID and closes the connection
    // (InvalidState -> PROTOCOL_VIOLATION, the client sees ERR_DRAINING). Unmapped, such a datagram is dropped.
    const origRecv = native.recv.bind(native);
    native.recv = (data, info) => {
      record.received(`${info.from.host}:${info.from.port}`);
      try {
        return origRecv(data, info);
      } finally {
        for (let id = native.retiredScidNext(); id !== null; id = native.retiredScidNext()) internals.socket.connectionMap.delete(new QUICConnectionId(id));
      }
    };
    conn.addEventListener(events.EventQUICConnectionSend.name, (evt: Event) => {
      const d = (evt as events.EventQUICConnectionSend).detail as { msg: Uint8Array; port: number; address: string };
      record.sent(`${d.address}:${d.port}`, d.msg);
    });
    const connectionId = conn.connectionId.toString();
    // the client's first SCID as its post-Retry Initial carried it (quiche's connectionIdPeer follows the CID of the
    // path in use, which changes when the connection is seen on several paths, e.g. through two data planes)
    const clientCid = this.clientCidOf.get(connectionId) ?? Buffer.from(conn.connectionIdPeer).toString('hex');
    this.clientCidOf.delete(connectionId); // needed once
    this.log(`connection scid=${connectionId} from ${conn.remoteHost}:${conn.remotePort}`);
    const extra: QUICConnectionId[] = [];
    for (let i = 0; i < (this.options.extraCids ?? 3); i++) {
      const cid = this.mintCid();
      try {
        const seq = native.newSourceCid(cid, BigInt('0x' + randomBytes(16).toString('hex')), false);
        const id = new QUICConnectionId(cid);
        internals.socket.connectionMap.set(id, conn);
        extra.push(id);
        this.log(`NEW_CONNECTION_ID seq=${seq} cid=${cid.toString('hex')}`);
      } catch (e) {
        this.log(`newSourceCid failed: ${e instanceof Error ? e.message : String(e)}`);
        break;
      }
    }
    this.options.onConnection?.({ serverCid: connectionId, clientCid, cids: [connectionId, ...extra.map((id) => id.toString())] });
    // How the connection ended, once, with its record: the library's error event, its stop, or a close quiche did
    // without telling the library (no usable path left: @matrixai/quic then never stops the connection).
    let ended = false;
    const end = (how: string): void => {
      if (ended) return;
      ended = true;
      clearInterval(closeCheck);
      clearInterval(probeOtherPaths);
      this.log(`connection scid=${connectionId} client=${clientCid} ended: ${how} ${JSON.stringify(record.summary())}`);
    };
    // workaround 7: quiche 0.18 detects losses per path, against later packets acknowledged on the same path, and
    // sends a path's PTO probe on the active path, without a PING (the probe count belongs to the other path): when the
    // last packets sent on a path are lost and the connection moved to another path (another data plane, a migrating
    // client), nothing is retransmitted, the client waits and times out (docs/backends.md, item 9). Sending on each
    // other path whatever quiche has for it (a PING when its PTO fired, nothing otherwise) gets that PING acknowledged
    // by the client, which declares the path's lost packets lost: their data is sent again on the active path.
    const probeOtherPaths = setInterval(() => {
      // a server has one local address: a second path means a second peer address (no native call until then)
      if (ended || record.peerCount() < 2) return;
      let paths: { localHost: HostPort; peerHost: HostPort; active: boolean }[];
      try {
        paths = native.pathStats() as typeof paths;
      } catch {
        return;
      }
      if (paths.length < 2) return;
      for (const p of paths) {
        if (p.active) continue;
        for (let i = 0; i < 2; i++) {
          let out: [number, { to: HostPort }] | null;
          let buf: Buffer;
          try {
            // inside the try: a throw from a timer would reach the process's uncaughtException handler
            buf = Buffer.allocUnsafe(native.maxSendUdpPayloadSize());
            out = native.sendOnPath(buf, p.localHost, p.peerHost);
          } catch {
            break;
          }
          if (out === null) break;
          record.probed();
          conn.dispatchEvent(new events.EventQUICConnectionSend({ detail: { id: (conn as unknown as { sendId: string }).sendId, msg: buf.subarray(0, out[0]), port: out[1].to.port, address: out[1].to.host } }));
        }
      }
    }, PATH_PROBE_MS);
    probeOtherPaths.unref();
    const closeCheck = setInterval(() => {
      if (!record.closed()) return;
      if (this.current.connectionErrors.length < 20) this.current.connectionErrors.push('closed by quiche without a close event');
      end('closed by quiche without a close event');
    }, CLOSE_CHECK_MS);
    closeCheck.unref();
    conn.addEventListener(events.EventQUICConnectionStopped.name, () => {
      for (const id of extra) internals.socket.connectionMap.delete(id);
      end('stopped');
    }, { once: true });
    // the library dispatches a connection's error once per open stream as well: keep the first
    let errored = false;
    conn.addEventListener(events.EventQUICConnectionError.name, (evt: Event) => {
      if (errored) return;
      errored = true;
      const text = describeConnectionError((evt as events.EventQUICConnectionError).detail);
      if (this.current.connectionErrors.length < 20) this.current.connectionErrors.push(text);
      end(text);
    });
    const ctrl = conn.newStream('uni').writable.getWriter();
    ctrl.write(H3_CONTROL_STREAM).catch(() => {});
    let requests = 0;
    conn.addEventListener(events.EventQUICConnectionStream.name, (sevt: Event) => {
      const stream = (sevt as events.EventQUICConnectionStream).detail;
      void (async () => {
        try {
          const chunks: Buffer[] = [];
          let size = 0;
          for await (const chunk of stream.readable) {
            if (size < MAX_REQUEST_BYTES) chunks.push(Buffer.from(chunk));
            size += chunk.byteLength;
          }
          if (Number(stream.streamId) % 4 !== 0) return; // not a client bidi stream (control, QPACK)
          this.current.requests++;
          const req: RequestInfo = {
            connectionId, clientCid, peer: `${conn.remoteHost}:${conn.remotePort}`, requestNumber: ++requests,
            request: size <= MAX_REQUEST_BYTES ? Buffer.concat(chunks) : null,
          };
          const { headers, body } = this.options.respond ? this.options.respond(req) : { headers: Buffer.concat([h3Varint(0x01), h3Varint(H3_HEADERS_200.length), H3_HEADERS_200]), body: this.bodyFor(req) };
          const w = stream.writable.getWriter();
          await w.write(headers);
          if (body !== null) {
            await w.write(Buffer.concat([h3Varint(0x00), h3Varint(body.length)]));
            for (let o = 0; o < body.length; o += 65536) await w.write(body.subarray(o, o + 65536));
          }
          await w.close();
          this.current.responses++;
          this.log(`served ${body?.length ?? 0} bytes on stream ${stream.streamId}, peer now ${conn.remoteHost}:${conn.remotePort}`);
        } catch (e) {
          // the stream or the connection ended first (the reason can be anything, even null)
          this.log(`stream ${stream.streamId}: ${e instanceof Error ? e.message : String(e)}`);
        }
      })().catch(() => {});
    });
  }
}
