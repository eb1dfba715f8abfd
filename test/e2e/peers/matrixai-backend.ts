/**
 * A real QUIC backend for the end-to-end tests: @matrixai/quic 2.0.9 (quiche) speaking a minimal HTTP/3
 * and minting ENCRYPTED QUIC-LB connection IDs with the project's server-side generator (ServerCidGenerator,
 * lib/quiclb/server-generator.ts).
 *
 * Run as a child process (Node 24 through tsx, with an IPC channel):
 *   matrixai-backend.ts --port P --config-file STANDALONE.yaml --server-name NAME --cert-dir DIR --body-file FILE
 *                       [--extra-cids 3]
 * (the YAML is the one `quiclb standalone` reads; ServerCidGenerator finds this server's ID and the active config there)
 * It prints "READY <port>" when listening. Over IPC it answers {cmd:'stats'} with a BackendStats object
 * and {cmd:'reset'} by clearing the counters.
 *
 * Where its connection IDs come from (@matrixai/quic has no CID generator option):
 *   - the Retry SCID, which becomes the connection's server CID, is the first 20 bytes (quiche's
 *     MAX_CONN_ID_LEN) of crypto.ops.sign(key, clientDcid). sign() is also used to MAC retry tokens, so
 *     it returns CID(20 bytes, freshly minted) || HMAC-SHA256(key, data); verify() checks the HMAC and
 *     that the CID prefix decodes to this server's ID;
 *   - more CIDs (needed for active migration) are issued through the native binding
 *     conn.newSourceCid(cid, resetToken, false) and registered in the socket's connection map.
 * So every CID of this server must be exactly 20 bytes: 1 + server_id_length + nonce_length + extra_length = 20.
 *
 * What it records (the honest routing check): every datagram its UDP socket receives, before the QUIC
 * library sees it. For each one: header form, long-header type, DCID, sender address. A short-header
 * (1-RTT) datagram is "own" when its DCID is one this process issued, "foreign" otherwise (another
 * backend's CID, or garbage). The test asserts foreign == 0 and own > 0 on the serving backend.
 *
 * Library bug workarounds (2.0.9), see /work/shared/QUIC-PEERS.md §2:
 *   1. disableActiveMigration defaults to true: set false, or real clients never migrate.
 *   2. ALPN 'h3' and a hand-made HTTP/3 response (control stream 00 04 00; HEADERS 01 03 00 00 d9; DATA).
 *   3. Peer streams that arrive while the connection is 'starting' crash the process (streamShutdown on a
 *      remote uni stream): processStreams() is deferred until the connection has started.
 *   4. A peer application close code 0x100..0x1ff (H3_NO_ERROR) is taken for a TLS error and thrown
 *      uncaught: peerError() reports such codes as 0; an uncaughtException logger is the safety net.
 */
import { QUICConnection, QUICConnectionId, QUICServer, events } from '@matrixai/quic';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CidDecoder, ServerCidGenerator, toHex } from '../../../lib/index.js';

/** quiche's fixed connection-ID length (short headers are parsed with it). */
const CID_LEN = 20;

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string' },
    'config-file': { type: 'string' },
    'server-name': { type: 'string' },
    'cert-dir': { type: 'string' },
    'body-file': { type: 'string' },
    'extra-cids': { type: 'string', default: '3' },
    'idle-timeout-ms': { type: 'string', default: '10000' },
  },
});
const need = (k: keyof typeof values): string => {
  const v = values[k];
  if (typeof v !== 'string') throw new Error(`--${k} is required`);
  return v;
};

const configFile = need('config-file');
const serverName = need('server-name');
const extraCids = Number(values['extra-cids']);
const body = readFileSync(need('body-file'));
const certDir = need('cert-dir');

// The project's server-side CID generator, reading the same standalone YAML as the LB (server ID, active config).
const generator = ServerCidGenerator.fromFile(configFile, serverName, { watch: false });
if (generator.activeConfigId === null || generator.serverId === null) throw new Error(`${configFile}: ${generator.info().reason}`);
const serverId = generator.serverId;
const sidHex = toHex(serverId);
if (generator.cidLength !== CID_LEN) throw new Error(`QUIC-LB config makes ${generator.cidLength}-byte CIDs; @matrixai/quic needs exactly ${CID_LEN}`);
const decoder = new CidDecoder(generator.liveConfigs().map((l) => l.config));
const issued = new Set<string>();
function mintCid(): Buffer {
  const cid = generator.next();
  issued.add(cid.toString('hex'));
  return cid;
}
const ownsCid = (cid: Buffer): boolean => {
  const d = decoder.decode(cid);
  return d.reason === null && d.serverId.equals(serverId);
};

const log = (msg: string): void => {
  process.stdout.write(`[backend ${sidHex}] ${msg}\n`);
};

// ---- crypto ops: sign = fresh QUIC-LB CID || HMAC, verify = HMAC check + CID is ours -----------------
const toArrayBuffer = (b: Buffer): ArrayBuffer => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
const hmac = (key: ArrayBuffer, data: ArrayBuffer): Buffer =>
  createHmac('sha256', Buffer.from(key)).update(Buffer.from(data)).digest();
const sign = async (key: ArrayBuffer, data: ArrayBuffer): Promise<ArrayBuffer> =>
  toArrayBuffer(Buffer.concat([mintCid(), hmac(key, data)]));
const verify = async (key: ArrayBuffer, data: ArrayBuffer, sig: ArrayBuffer): Promise<boolean> => {
  const s = Buffer.from(sig);
  if (s.length !== CID_LEN + 32) return false;
  return timingSafeEqual(s.subarray(CID_LEN), hmac(key, data)) && ownsCid(s.subarray(0, CID_LEN));
};

// ---- workaround 3: defer stream processing while the connection is starting --------------------------
type WithStatus = Record<symbol, unknown>;
const statusSymbol = (obj: object): symbol | undefined =>
  Object.getOwnPropertySymbols(obj).find((s) => s.description === '_status');
const proto = QUICConnection.prototype as unknown as { processStreams: (this: QUICConnection) => void };
const origProcessStreams = proto.processStreams;
proto.processStreams = function (this: QUICConnection) {
  const sym = statusSymbol(this);
  if (sym !== undefined && (this as unknown as WithStatus)[sym] === 'starting') return;
  origProcessStreams.call(this);
};

// ---- stats -------------------------------------------------------------------------------------------
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
  /** CIDs this backend minted (Retry SCIDs and NEW_CONNECTION_ID). */
  issued: number;
  connections: number;
  responses: number;
  uncaught: string[];
}

const fresh = (): BackendStats => ({
  serverId: sidHex, port: 0, datagrams: 0, long: {}, shortOwn: 0, shortForeign: 0, shortForeignDecodable: 0,
  dcids: {}, senders: [], perSender: {}, issued: 0, connections: 0, responses: 0, uncaught: [],
});
let stats = fresh();

const LONG_TYPES = ['initial', '0rtt', 'handshake', 'retry'];
function record(msg: Buffer, from: string): void {
  stats.datagrams++;
  if (msg.length < 1) return;
  if (msg[0] & 0x80) {
    const version = msg.length >= 5 ? msg.readUInt32BE(1) : -1;
    const type = version === 1 ? LONG_TYPES[(msg[0] >> 4) & 3] : `version-${version.toString(16)}`;
    stats.long[type] = (stats.long[type] ?? 0) + 1;
    return;
  }
  const dcid = msg.subarray(1, 1 + CID_LEN);
  const hex = dcid.toString('hex');
  if (dcid.length === CID_LEN && issued.has(hex)) {
    stats.shortOwn++;
    const senders = (stats.dcids[hex] ??= []);
    if (!senders.includes(from)) senders.push(from);
    if (!stats.senders.includes(from)) stats.senders.push(from);
    stats.perSender[from] = (stats.perSender[from] ?? 0) + 1;
  } else {
    stats.shortForeign++;
    if (decoder.decode(dcid).reason === null) stats.shortForeignDecodable++;
  }
}

// ---- HTTP/3, just enough for gtlsclient ----------------------------------------------------------------
const varint = (n: number): Buffer => {
  if (n < 64) return Buffer.from([n]);
  if (n < 16384) return Buffer.from([0x40 | (n >> 8), n & 0xff]);
  if (n < 2 ** 30) {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    b[0] |= 0x80;
    return b;
  }
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  b[0] |= 0xc0;
  return b;
};
const H3_HEADERS_200 = Buffer.from([0x00, 0x00, 0xd9]); // QPACK: RIC 0, base 0, static index 25 ':status: 200'

// ---- the server -------------------------------------------------------------------------------------------
interface NativeConn {
  newSourceCid(scid: Uint8Array, resetToken: bigint, retireIfNeeded: boolean): number;
  peerError(): { isApp: boolean; errorCode: number; reason: Uint8Array } | null;
}
interface Internals {
  socket: { socket: import('node:dgram').Socket; connectionMap: { set(id: QUICConnectionId, c: QUICConnection): void; delete(id: QUICConnectionId): void } };
}

const tlsKey = randomBytes(32);
const server = new QUICServer({
  crypto: { key: toArrayBuffer(tlsKey), ops: { sign, verify } },
  config: {
    key: readFileSync(join(certDir, 'key.pem'), 'utf8'),
    cert: readFileSync(join(certDir, 'cert.pem'), 'utf8'),
    verifyPeer: false,
    maxIdleTimeout: Number(values['idle-timeout-ms']),
    applicationProtos: ['h3'],
    disableActiveMigration: false,
  },
});
const internals = server as unknown as Internals;

server.addEventListener(events.EventQUICServerConnection.name, (evt: Event) => {
  const conn = (evt as events.EventQUICServerConnection).detail;
  stats.connections++;
  const native = (conn as unknown as { conn: NativeConn }).conn;
  // workaround 4: H3 application close codes are not TLS errors
  const origPeerError = native.peerError.bind(native);
  native.peerError = () => {
    const e = origPeerError();
    return e && e.isApp && e.errorCode >= 0x100 && e.errorCode <= 0x1ff ? { ...e, errorCode: 0 } : e;
  };
  log(`connection scid=${conn.connectionId.toString()} from ${conn.remoteHost}:${conn.remotePort}`);
  const extra: QUICConnectionId[] = [];
  for (let i = 0; i < extraCids; i++) {
    const cid = mintCid();
    try {
      const seq = native.newSourceCid(cid, BigInt('0x' + randomBytes(16).toString('hex')), false);
      const id = new QUICConnectionId(cid);
      internals.socket.connectionMap.set(id, conn);
      extra.push(id);
      log(`NEW_CONNECTION_ID seq=${seq} cid=${cid.toString('hex')}`);
    } catch (e) {
      log(`newSourceCid failed: ${(e as Error).message}`);
      break;
    }
  }
  conn.addEventListener(events.EventQUICConnectionStopped.name, () => {
    for (const id of extra) internals.socket.connectionMap.delete(id);
  }, { once: true });
  const ctrl = conn.newStream('uni').writable.getWriter();
  ctrl.write(Buffer.from([0x00, 0x04, 0x00])).catch(() => {}); // control stream, SETTINGS (empty)
  conn.addEventListener(events.EventQUICConnectionStream.name, (sevt: Event) => {
    const stream = (sevt as events.EventQUICConnectionStream).detail;
    void (async () => {
      try {
        for await (const _ of stream.readable) {
          /* request HEADERS (content ignored) or the client's uni streams */
        }
        if (Number(stream.streamId) % 4 !== 0) return; // not a client bidi stream
        const w = stream.writable.getWriter();
        await w.write(Buffer.concat([varint(0x01), varint(H3_HEADERS_200.length), H3_HEADERS_200]));
        await w.write(Buffer.concat([varint(0x00), varint(body.length)]));
        for (let o = 0; o < body.length; o += 65536) await w.write(body.subarray(o, o + 65536));
        await w.close();
        stats.responses++;
        log(`served ${body.length} bytes on stream ${stream.streamId}, peer now ${conn.remoteHost}:${conn.remotePort}`);
      } catch (e) {
        log(`stream ${stream.streamId}: ${(e as Error).message}`);
      }
    })();
  });
});

process.on('uncaughtException', (e) => {
  const text = `${e?.name}: ${e?.message}`;
  if (stats.uncaught.length < 20) stats.uncaught.push(text);
  log(`uncaught (kept running): ${text}`);
});
process.on('unhandledRejection', (e) => log(`unhandled rejection (kept running): ${String(e)}`));

await server.start({ host: values.host, port: Number(need('port')) });
// Record every datagram before the QUIC library handles it.
internals.socket.socket.prependListener('message', (msg: Buffer, rinfo: { address: string; port: number }) =>
  record(msg, `${rinfo.address}:${rinfo.port}`));
stats.port = server.port as unknown as number;

process.on('message', (m: { cmd?: string }) => {
  if (m?.cmd === 'stats') process.send?.({ ...stats, issued: issued.size });
  else if (m?.cmd === 'reset') {
    stats = fresh();
    stats.port = server.port as unknown as number;
    process.send?.({ ok: true });
  }
});
process.on('disconnect', () => process.exit(0));
const shutdown = (): void => {
  void server.stop({ force: true }).finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 1500).unref();
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
log(`READY ${server.port}`);
