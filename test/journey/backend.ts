/**
 * A backend pod of the journey: an @matrixai/quic 2.0.9 HTTP/3 server bound at the pod's IP that mints its connection
 * IDs with ServerCidGenerator.fromKubernetes({dir}) (the files the operator delivers and the kubelet mounts, followed
 * as they change), serves `GET /<n>` with n bytes of deterministic content (h3.ts) and a `x-served-by: <name>` header,
 * and records every datagram its socket receives before the QUIC library sees it (the audit).
 *
 * The QUIC plumbing (Retry SCID from crypto.ops.sign, more CIDs through the native newSourceCid, the library-bug
 * workarounds) is the one of examples/example-quic-backend.ts, which reads a standalone YAML instead; see there.
 * Differences: the generator follows the Kubernetes files (so configs rotate under a running backend), retry tokens
 * are checked against the exact set of CIDs this instance issued (not a decoder built once), and the audit rule below.
 *
 * Audit rule ("foreign" datagrams: a DCID this backend did not issue):
 *   - short header (1-RTT): the first 20 bytes after the first octet must be a CID this instance issued;
 *   - long header, QUIC v1 Handshake: the DCID must be one this instance issued (after the Retry every client
 *     packet carries the Retry SCID, which this instance minted);
 *   - long header, QUIC v1 Initial and 0-RTT: the client's first flight, whose DCID the client chose (a random one,
 *     before the Retry): excepted, unless the DCID is one ANOTHER backend of this world issued (`issuedElsewhere`):
 *     a post-Retry Initial sent to the wrong backend;
 *   - long header with another version (the data planes' Version Negotiation health probes): not connection
 *     traffic, counted as `probes`, never foreign;
 *   - a v1 Retry from a client (never valid) is foreign.
 */
import { QUICConnection, QUICConnectionId, QUICServer, events } from '@matrixai/quic';
import quiche from '@matrixai/quic/native/quiche.js';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Socket } from 'node:dgram';
import { ServerCidGenerator } from '../../lib/backend/generator.js';
import { H3_CONTROL_STREAM, QUIC_CID_LENGTH, applyQuicWorkarounds, describeConnectionError, quietLogger } from '../../examples/example-quic-backend.js';
import { bodyOf, dataFrameHeader, requestPath, responseHeaders, sizeOfPath } from './h3.js';

applyQuicWorkarounds();

/**
 * quiche's active_connection_id_limit for every @matrixai/quic endpoint of this process (default 8; quiche's own
 * default is 2). A backend behind several data planes sees one client from one address per data plane (each data
 * plane is a full proxy with its own upstream socket), and quiche needs a client-issued CID for each path: with 2,
 * a client whose datagrams alternate between two data planes (ECMP) and that migrates has no CID for the new paths
 * and stalls (measured with world.test.ts's clients: the ECMP ngtcp2-migrate and migrating matrixai runs failed in
 * 4 of 4 runs at 2; 0 failures in 6 rounds of all 9 clients at once at 8).
 * @matrixai/quic has no option for it: set after the library builds its quiche config (setApplicationProtos is the
 * last setter it calls).
 */
let activeConnectionIdLimit = 8;
export function setActiveConnectionIdLimit(n: number): void {
  activeConnectionIdLimit = n;
}
{
  type NativeConfig = { setActiveConnectionIdLimit(n: number): void };
  const proto = (quiche as unknown as { Config: { prototype: { setApplicationProtos(this: NativeConfig, p: unknown): void } } }).Config.prototype;
  const orig = proto.setApplicationProtos;
  proto.setApplicationProtos = function (this: NativeConfig, p: unknown) {
    orig.call(this, p);
    this.setActiveConnectionIdLimit(activeConnectionIdLimit);
  };
}

export interface BackendAudit {
  datagrams: number;
  shortHeader: number;
  /** Datagrams whose DCID this backend did not issue (module comment: the exact rule). */
  foreignCids: number;
  /** Up to 10 foreign DCIDs (hex), with the packet kind. */
  examples: string[];
  /** Long-header datagrams of another version (health probes). */
  probes: number;
  initial: number;
  handshake: number;
  connections: number;
  requests: number;
  responses: number;
  /** CIDs this instance minted. */
  issued: number;
  /** Of those, how many were 0b111 (unroutable: no server ID or config yet). */
  unroutableIssued: number;
  connectionErrors: string[];
  stopped: boolean;
}

export interface JourneyBackendOptions {
  name: string;
  host: string;
  port: number;
  /** The kubelet-mounted directory holding configs.json and server-id. */
  dir: string;
  tls: { key: string; cert: string };
  /** Whether another backend of this world issued a CID (hex). */
  issuedElsewhere: (cidHex: string) => boolean;
  log: (line: string) => void;
  extraCids?: number;
  idleTimeoutMs?: number;
}

interface NativeConn {
  recv(data: Uint8Array, info: unknown): number;
  retiredScidNext(): Uint8Array | null;
  newSourceCid(scid: Uint8Array, resetToken: bigint, retireIfNeeded: boolean): number;
  peerError(): { isApp: boolean; errorCode: number; reason: Uint8Array } | null;
}
interface ServerInternals {
  socket: { socket: Socket; connectionMap: { set(id: QUICConnectionId, c: QUICConnection): void; delete(id: QUICConnectionId): void } };
}

const MAX_EXAMPLES = 10;
const MAX_ERRORS = 20;
/** Client connections remembered for responsesFor() per backend. */
const MAX_CLIENTS = 100_000;
const toArrayBuffer = (b: Buffer): ArrayBuffer => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
const hmac = (key: ArrayBuffer, data: ArrayBuffer): Buffer => createHmac('sha256', Buffer.from(key)).update(Buffer.from(data)).digest();
/** Largest request stream read (HEADERS of a GET are a few dozen bytes). */
const MAX_REQUEST_BYTES = 16 * 1024;

export class JourneyBackend {
  private readonly generator: ServerCidGenerator;
  /** Every CID this instance minted (hex): 4 per connection, bounded by the test's connections. */
  readonly issued = new Set<string>();
  private server: QUICServer | null = null;
  private readonly audit: BackendAudit = {
    datagrams: 0, shortHeader: 0, foreignCids: 0, examples: [], probes: 0, initial: 0, handshake: 0, connections: 0,
    requests: 0, responses: 0, issued: 0, unroutableIssued: 0, connectionErrors: [], stopped: false,
  };
  private readonly onMessage = (msg: Buffer) => this.record(msg);
  /** Client connection ID (hex) of the connection each issued CID belongs to, and the own DCIDs each client used. */
  private readonly cidOwner = new Map<string, string>();
  /** Retry SCID (hex) -> the client's SCID in the Initial that used it. */
  private readonly clientCidOf = new Map<string, string>();
  private readonly dcidsUsed = new Map<string, Set<string>>();
  /** Responses served per client connection ID (the client's initial SCID, hex): who served a client. */
  private readonly servedFor = new Map<string, number>();

  private constructor(readonly options: JourneyBackendOptions) {
    this.generator = ServerCidGenerator.fromKubernetes({ dir: options.dir }, { unroutableLength: QUIC_CID_LENGTH, pollMs: 500 });
    this.generator.on('error', (e) => options.log(`generator: ${e.message}`));
    this.generator.on('change', (info) => options.log(`generator: ${JSON.stringify(info)}`));
  }

  get name(): string {
    return this.options.name;
  }

  static async start(options: JourneyBackendOptions): Promise<JourneyBackend> {
    const b = new JourneyBackend(options);
    try {
      await b.listen();
    } catch (e) {
      b.generator.close();
      throw e;
    }
    return b;
  }

  /** What the generator mints now (active config, server ID, or why it mints 0b111 CIDs). */
  generatorInfo(): ReturnType<ServerCidGenerator['info']> {
    return this.generator.info();
  }

  stats(): BackendAudit {
    return { ...this.audit, examples: [...this.audit.examples], connectionErrors: [...this.audit.connectionErrors], issued: this.issued.size };
  }

  /** Responses this backend served on the connection whose client chose `clientCidHex` as its first SCID. */
  responsesFor(clientCidHex: string): number {
    return this.servedFor.get(clientCidHex) ?? 0;
  }

  /** How many of this backend's CIDs the client connection `clientCidHex` sent to (2 or more: it migrated to a new CID). */
  dcidsUsedBy(clientCidHex: string): number {
    return this.dcidsUsed.get(clientCidHex)?.size ?? 0;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = null;
    this.audit.stopped = true;
    this.generator.close();
    if (!s) return;
    (s as unknown as ServerInternals).socket.socket.off('message', this.onMessage);
    await s.stop({ force: true }).catch(() => {});
  }

  private mintCid(): Buffer {
    let cid = this.generator.next();
    if (cid.length !== QUIC_CID_LENGTH) {
      // quiche parses short headers with 20-byte DCIDs: a config of another length cannot work with this server
      this.options.log(`generator minted a ${cid.length}-byte CID; @matrixai/quic needs ${QUIC_CID_LENGTH}: using a 0b111 CID`);
      cid = randomBytes(QUIC_CID_LENGTH);
      cid[0] |= 0xe0;
    }
    if ((cid[0] & 0xe0) === 0xe0) this.audit.unroutableIssued++;
    this.issued.add(cid.toString('hex'));
    return cid;
  }

  private foreign(kind: string, dcid: Buffer): void {
    this.audit.foreignCids++;
    if (this.audit.examples.length < MAX_EXAMPLES) this.audit.examples.push(`${kind}:${dcid.toString('hex')}`);
  }

  private record(msg: Buffer): void {
    const a = this.audit;
    a.datagrams++;
    if (msg.length < 1) return;
    if ((msg[0] & 0x80) === 0) {
      a.shortHeader++;
      const dcid = msg.subarray(1, 1 + QUIC_CID_LENGTH);
      const hex = dcid.toString('hex');
      if (!this.issued.has(hex)) return this.foreign('short', dcid);
      const owner = this.cidOwner.get(hex);
      if (owner === undefined) return;
      const used = this.dcidsUsed.get(owner) ?? new Set<string>();
      if (used.size < 16) used.add(hex);
      if (this.dcidsUsed.size < MAX_CLIENTS || this.dcidsUsed.has(owner)) this.dcidsUsed.set(owner, used);
      return;
    }
    if (msg.length < 6 || msg.readUInt32BE(1) !== 1) {
      a.probes++;
      return;
    }
    const dcidLen = msg[5];
    const dcid = msg.subarray(6, 6 + dcidLen);
    const hex = dcid.toString('hex');
    const type = (msg[0] >> 4) & 3;
    if (type === 0 || type === 1) {
      if (type === 0) a.initial++;
      // after the Retry: DCID = our Retry SCID, SCID = the client's first CID (how responses are attributed)
      if (type === 0 && this.issued.has(hex) && msg.length > 6 + dcidLen) {
        const scidLen = msg[6 + dcidLen];
        const scid = msg.subarray(7 + dcidLen, 7 + dcidLen + scidLen);
        if (scid.length === scidLen && !this.clientCidOf.has(hex)) this.clientCidOf.set(hex, scid.toString('hex'));
      }
      if (!this.issued.has(hex) && this.options.issuedElsewhere(hex)) this.foreign(type === 0 ? 'initial' : '0rtt', dcid);
    } else if (type === 2) {
      a.handshake++;
      if (!this.issued.has(hex)) this.foreign('handshake', dcid);
    } else {
      this.foreign('retry', dcid);
    }
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
      logger: quietLogger(),
      crypto: { key: toArrayBuffer(randomBytes(32)), ops: { sign, verify } },
      config: {
        key: this.options.tls.key,
        cert: this.options.tls.cert,
        verifyPeer: false,
        // long: a client spacing its requests out (spreadMs) sets the effective idle timeout (the smaller one wins)
        maxIdleTimeout: this.options.idleTimeoutMs ?? 120_000,
        applicationProtos: ['h3'],
        disableActiveMigration: false,
      },
    });
    server.addEventListener(events.EventQUICServerConnection.name, (evt: Event) => this.onConnection((evt as events.EventQUICServerConnection).detail, server));
    await server.start({ host: this.options.host, port: this.options.port });
    this.server = server;
    (server as unknown as ServerInternals).socket.socket.prependListener('message', this.onMessage);
  }

  private onConnection(conn: QUICConnection, server: QUICServer): void {
    const internals = server as unknown as ServerInternals;
    this.audit.connections++;
    const native = (conn as unknown as { conn: NativeConn }).conn;
    // library bug 4: HTTP/3 application close codes are not TLS errors
    const origPeerError = native.peerError.bind(native);
    native.peerError = () => {
      const e = origPeerError();
      return e && e.isApp && e.errorCode >= 0x100 && e.errorCode <= 0x1ff ? { ...e, errorCode: 0 } : e;
    };
    // Library bug: @matrixai/quic never drains quiche's retired source CIDs, so a CID the client retired stays in
    // the socket's connection map; a late datagram carrying it (reordered behind the RETIRE_CONNECTION_ID, e.g. through
    // the other data plane) then reaches quiche, which no longer knows the CID and closes the connection
    // (InvalidState -> PROTOCOL_VIOLATION, the client sees ERR_DRAINING). Unmapped, such a datagram is dropped.
    const origRecv = native.recv.bind(native);
    native.recv = (data, info) => {
      try {
        return origRecv(data, info);
      } finally {
        for (let id = native.retiredScidNext(); id !== null; id = native.retiredScidNext()) internals.socket.connectionMap.delete(new QUICConnectionId(id));
      }
    };
    // the client's first SCID as its post-Retry Initial carried it (quiche's connectionIdPeer follows the CID of the
    // path in use, which changes when the connection is seen on several paths, e.g. through two data planes)
    const serverCid = Buffer.from(conn.connectionId).toString('hex');
    const clientCid = this.clientCidOf.get(serverCid) ?? Buffer.from(conn.connectionIdPeer).toString('hex');
    this.cidOwner.set(serverCid, clientCid);
    const extra: QUICConnectionId[] = [];
    for (let i = 0; i < (this.options.extraCids ?? 3); i++) {
      const cid = this.mintCid();
      try {
        native.newSourceCid(cid, BigInt('0x' + randomBytes(16).toString('hex')), false);
        const id = new QUICConnectionId(cid);
        this.cidOwner.set(cid.toString('hex'), clientCid);
        internals.socket.connectionMap.set(id, conn);
        extra.push(id);
      } catch (e) {
        this.options.log(`newSourceCid failed: ${e instanceof Error ? e.message : String(e)}`);
        break;
      }
    }
    conn.addEventListener(events.EventQUICConnectionStopped.name, () => {
      for (const id of extra) internals.socket.connectionMap.delete(id);
    }, { once: true });
    let ended = false;
    conn.addEventListener(events.EventQUICConnectionError.name, (evt: Event) => {
      if (ended) return;
      ended = true;
      if (this.audit.connectionErrors.length < MAX_ERRORS) this.audit.connectionErrors.push(describeConnectionError((evt as events.EventQUICConnectionError).detail));
    });
    const ctrl = conn.newStream('uni').writable.getWriter();
    ctrl.write(H3_CONTROL_STREAM).catch(() => {});
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
          if (Number(stream.streamId) % 4 !== 0) return; // the client's uni streams (control, QPACK)
          this.audit.requests++;
          const path = size <= MAX_REQUEST_BYTES ? requestPath(Buffer.concat(chunks)) : null;
          const n = path === null ? null : sizeOfPath(path);
          const w = stream.writable.getWriter();
          // who answered: counted once this backend takes the request (the client may close before our close() returns)
          if (this.servedFor.size < MAX_CLIENTS || this.servedFor.has(clientCid)) this.servedFor.set(clientCid, (this.servedFor.get(clientCid) ?? 0) + 1);
          await w.write(responseHeaders(n === null ? 404 : 200, this.name));
          if (n !== null) {
            const body = bodyOf(n);
            await w.write(dataFrameHeader(n));
            for (let o = 0; o < n; o += 65536) await w.write(body.subarray(o, o + 65536));
          } else {
            this.options.log(`request for ${JSON.stringify(path)}: 404 (request stream ${Buffer.concat(chunks).subarray(0, 200).toString('hex')})`);
          }
          await w.close();
          this.audit.responses++;

        } catch (e) {
          this.options.log(`stream ${stream.streamId}: ${e instanceof Error ? e.message : String(e)}`);
        }
      })().catch(() => {});
    });
  }
}
