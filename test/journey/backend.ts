/**
 * A matrixai backend pod of the journey (pod-backend.ts): examples/example-quic-backend.ts's ExampleQuicBackend
 * (@matrixai/quic 2.0.9 HTTP/3, its library workarounds, its per-connection record) bound at the pod's IP, minting its
 * connection IDs with ServerCidGenerator.fromKubernetes({dir}) (the files the operator delivers and the kubelet mounts,
 * followed as they change), serving `GET /<n>` with n bytes of deterministic content (h3.ts) and a
 * `x-served-by: <name>` header. This module adds the journey's audit: every datagram the socket receives, before the
 * QUIC library sees it.
 *
 * Audit rule ("foreign" datagrams: a DCID this backend did not issue), the same for every stack
 * (quicgo-backend/audit.go is the Go copy):
 *   - short header (1-RTT): the first 20 bytes after the first octet must be a CID this instance issued;
 *   - long header, QUIC v1 Handshake: the DCID must be one this instance issued (after the Retry every client
 *     packet carries the Retry SCID, which this instance minted);
 *   - long header, QUIC v1 Initial and 0-RTT: the client's first flight, whose DCID the client chose (a random one,
 *     before the Retry): excepted, unless the DCID is one ANOTHER backend of this world issued (a post-Retry Initial
 *     sent to the wrong backend). This backend keeps those DCIDs (`unownedInitial`); the pod worker settles them
 *     against the other backends at audit time (pod-backend.ts);
 *   - long header with another version (the data planes' Version Negotiation health probes): not connection
 *     traffic, counted as `probes`, never foreign;
 *   - a v1 Retry from a client (never valid) is foreign.
 */
import { ServerCidGenerator } from '../../lib/backend/generator.js';
import { ExampleQuicBackend, QUIC_CID_LENGTH } from '../../examples/example-quic-backend.js';
import { bodyOf, requestPath, responseHeaders, sizeOfPath } from './h3.js';
import { MAX_EXAMPLES, MAX_UNOWNED_INITIAL, type BackendStats, type GeneratorInfo, type PodBackend, type PodBackendOptions } from './pod-backend.js';

export { setActiveConnectionIdLimit } from '../../examples/example-quic-backend.js';

export interface JourneyBackendOptions extends PodBackendOptions {
  extraCids?: number;
}

/** Client connections remembered for clients() per backend. */
const MAX_CLIENTS = 100_000;

export class JourneyBackend implements PodBackend {
  readonly stack = 'matrixai';
  private backend: ExampleQuicBackend | null = null;
  private readonly audit = { datagrams: 0, shortHeader: 0, foreignCids: 0, examples: [] as string[], probes: 0, initial: 0, handshake: 0, stopped: false, unsettledInitials: 0 };
  private readonly unownedInitial = new Map<string, number>();
  /** Client connection ID (hex) of the connection each issued CID belongs to, and the own DCIDs each client used. */
  private readonly cidOwner = new Map<string, string>();
  private readonly dcidsUsed = new Map<string, Set<string>>();
  /** Responses served per client connection ID (the client's initial SCID, hex): who served a client. */
  private readonly servedFor = new Map<string, number>();

  private constructor(readonly options: JourneyBackendOptions) {}

  get name(): string {
    return this.options.name;
  }

  get host(): string {
    return this.options.host;
  }

  get generator(): GeneratorInfo {
    return this.generatorInfo();
  }

  static async start(options: JourneyBackendOptions): Promise<JourneyBackend> {
    const b = new JourneyBackend(options);
    const generator = ServerCidGenerator.fromKubernetes({ dir: options.dir }, { unroutableLength: QUIC_CID_LENGTH, pollMs: 500 });
    generator.on('error', (e) => options.log(`generator: ${e.message}`));
    generator.on('change', (info) => options.log(`generator: ${JSON.stringify(info)}`));
    b.backend = await ExampleQuicBackend.start({
      name: options.name,
      host: options.host,
      port: options.port,
      generator,
      tls: options.tls,
      extraCids: options.extraCids,
      // a pod's socket like a production server's: bursts of client datagrams must not meet a ~208 KiB buffer (ecmp.ts)
      recvBufferBytes: 4 * 1024 * 1024,
      // long: a client spacing its requests out (spreadMs) sets the effective idle timeout (the smaller one wins)
      idleTimeoutMs: options.idleTimeoutMs ?? 120_000,
      onDatagram: (msg) => b.record(msg),
      onConnection: (c) => {
        for (const cid of c.cids) if (b.cidOwner.size < MAX_CLIENTS * 8) b.cidOwner.set(cid, c.clientCid);
      },
      respond: (req) => {
        const path = req.request === null ? null : requestPath(req.request);
        const n = path === null ? null : sizeOfPath(path);
        if (n === null) options.log(`request for ${JSON.stringify(path)}: 404 (request stream ${req.request?.subarray(0, 200).toString('hex') ?? 'over 16 KiB'})`);
        // who answered: counted once this backend takes the request (the client may close before the response ends)
        if (b.servedFor.size < MAX_CLIENTS || b.servedFor.has(req.clientCid)) b.servedFor.set(req.clientCid, (b.servedFor.get(req.clientCid) ?? 0) + 1);
        return { headers: responseHeaders(n === null ? 404 : 200, options.name), body: n === null ? null : bodyOf(n) };
      },
      // each connection's end with its record (peers, path events, quiche's path statistics): the diagnosis of a stall
      log: (line) => {
        if (line.includes(' ended: ') || line.startsWith('generator minted') || line.startsWith('newSourceCid failed')) options.log(line);
      },
    });
    return b;
  }

  /** Whether this backend issued the CID (hex). */
  issuedCid(hex: string): boolean {
    return this.backend?.issuedCid(hex) ?? false;
  }

  /** What the generator mints now (active config, server ID, or why it mints 0b111 CIDs). */
  generatorInfo(): ReturnType<ExampleQuicBackend['generatorInfo']> {
    return this.backend!.generatorInfo();
  }

  stats(): Promise<BackendStats> {
    const s = this.backend!.stats();
    const audit = {
      ...this.audit, examples: [...this.audit.examples], connections: s.connections, requests: s.requests, responses: s.responses, issued: s.issued, issuedForgotten: s.issuedForgotten,
      unroutableIssued: s.unroutableIssued, connectionErrors: [...s.connectionErrors],
    };
    return Promise.resolve({ audit, unownedInitial: new Map(this.unownedInitial) });
  }

  issued(cids: string[]): Promise<Set<string>> {
    return Promise.resolve(new Set(cids.filter((c) => this.issuedCid(c))));
  }

  clients(clientCids: string[]): Promise<Map<string, { responses: number; dcids: number }>> {
    const out = new Map<string, { responses: number; dcids: number }>();
    for (const c of clientCids) {
      const responses = this.servedFor.get(c) ?? 0;
      const dcids = this.dcidsUsed.get(c)?.size ?? 0;
      if (responses > 0 || dcids > 0) out.set(c, { responses, dcids });
    }
    return Promise.resolve(out);
  }

  async stop(): Promise<void> {
    this.audit.stopped = true;
    await this.backend?.stop();
  }

  dispose(): Promise<void> {
    return Promise.resolve();
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
      if (!this.issuedCid(hex)) return this.foreign('short', dcid);
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
    const dcid = msg.subarray(6, 6 + msg[5]);
    const hex = dcid.toString('hex');
    const type = (msg[0] >> 4) & 3;
    if (type === 0 || type === 1) {
      if (type === 0) a.initial++;
      if (!this.issuedCid(hex)) {
        if (this.unownedInitial.size < MAX_UNOWNED_INITIAL || this.unownedInitial.has(hex)) this.unownedInitial.set(hex, (this.unownedInitial.get(hex) ?? 0) + 1);
        else a.unsettledInitials++;
      }
    } else if (type === 2) {
      a.handshake++;
      if (!this.issuedCid(hex)) this.foreign('handshake', dcid);
    } else {
      this.foreign('retry', dcid);
    }
  }
}
