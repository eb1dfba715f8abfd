/**
 * A small DistributionService server for the agent tests (the operator's config server is another helper's work):
 * real grpc-js over mTLS on loopback, recording every stream's Hello, answers and reports, and pushing the wire
 * snapshots a test builds with snapshotToWire (the latest one to every new stream, as the real server does).
 */
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { Metadata, Server, type ServerDuplexStream } from '@grpc/grpc-js';
import {
  DistributionServiceService,
  type Ack,
  type CountersReport,
  type HealthReport,
  type Hello,
  type Nack,
  type Snapshot,
  type StreamConfigRequest,
  type StreamConfigResponse,
} from '../../proto/gen/quiclb/v1/distribution.js';
import { checkClientCertificate, serverCredentials } from '../../proto/tls.js';
import { snapshotToWire } from '../../proto/convert.js';
import type { DataplaneSnapshot } from '../../lib/config/snapshot.js';

export interface StreamRecord {
  readonly peer: string;
  hello: Hello | null;
  readonly acks: Ack[];
  readonly nacks: Nack[];
  readonly health: HealthReport[];
  readonly counters: CountersReport[];
  open: boolean;
  readonly call: ServerDuplexStream<StreamConfigRequest, StreamConfigResponse>;
}

export class FakeOperator {
  readonly streams: StreamRecord[] = [];
  latest: Snapshot | null = null;
  private nonce = 0;
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(tlsDir: string, port = 0): Promise<FakeOperator> {
    const server = new Server({ 'grpc.keepalive_permit_without_calls': 1 });
    let op: FakeOperator | null = null;
    const pending: StreamRecord[] = [];
    server.addService(DistributionServiceService, {
      streamConfig: (call: ServerDuplexStream<StreamConfigRequest, StreamConfigResponse>) => {
        const id = checkClientCertificate(call);
        if ('error' in id) {
          call.destroy(new Error(id.error));
          return;
        }
        const rec: StreamRecord = { peer: id.name, hello: null, acks: [], nacks: [], health: [], counters: [], open: true, call };
        (op ? op.streams : pending).push(rec);
        call.on('error', () => {
          rec.open = false;
        });
        call.on('close', () => {
          rec.open = false;
        });
        call.on('end', () => {
          rec.open = false;
          call.end();
        });
        call.on('data', (r: StreamConfigRequest) => {
          const m = r.message;
          if (!m) return;
          if (m.$case === 'hello') {
            rec.hello = m.hello;
            // Response headers at once, as the operator's config server sends them: the data plane counts as connected.
            call.sendMetadata(new Metadata());
            if (op?.latest) call.write({ message: { $case: 'snapshot', snapshot: op.latest } });
          } else if (m.$case === 'ack') rec.acks.push(m.ack);
          else if (m.$case === 'nack') rec.nacks.push(m.nack);
          else if (m.$case === 'health') rec.health.push(m.health);
          else if (m.$case === 'counters') rec.counters.push(m.counters);
        });
      },
    });
    const bound = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`127.0.0.1:${port}`, serverCredentials(tlsDir), (err, p) => (err ? reject(err) : resolve(p))),
    );
    op = new FakeOperator(server, bound);
    op.streams.push(...pending);
    return op;
  }

  /** Pushes a snapshot of these load balancers to every open stream (and to later ones); returns its nonce. */
  push(version: number, lbs: readonly DataplaneSnapshot[]): string {
    return this.pushWire(snapshotToWire(version, `n${++this.nonce}`, lbs));
  }

  pushWire(s: Snapshot): string {
    this.latest = s;
    for (const r of this.streams) if (r.open && r.hello) r.call.write({ message: { $case: 'snapshot', snapshot: s } });
    return s.nonce;
  }

  open(): StreamRecord[] {
    return this.streams.filter((s) => s.open);
  }

  acks(): Ack[] {
    return this.streams.flatMap((s) => s.acks);
  }

  nacks(): Nack[] {
    return this.streams.flatMap((s) => s.nacks);
  }

  /** Stops at once (open streams fail with UNAVAILABLE on the data plane's side). */
  stop(): void {
    for (const s of this.streams) s.open = false;
    this.server.forceShutdown();
  }
}

/** A UDP port that was free a moment ago on 127.0.0.1. */
export async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}
