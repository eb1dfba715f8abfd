/**
 * Config-server test kit: snapshots with known keys, many client certificates fast, a started server with captured
 * logs, and an in-process data-plane client (real grpc-js over mTLS) that records what it receives.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { credentials, Metadata, type ChannelCredentials, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import { pino, type Logger } from 'pino';
import { Registry } from 'prom-client';
import { DEFAULT_FLOWS, DEFAULT_HEALTH, type DataplaneSnapshot, type SnapshotServer } from '../../lib/config/snapshot.js';
import { makeConfig } from '../../lib/quiclb/config.js';
import {
  DistributionServiceClient,
  type Snapshot,
  type StreamConfigRequest,
  type StreamConfigResponse,
} from '../../proto/gen/quiclb/v1/distribution.js';
import { clientCredentials, serverCredentials } from '../../proto/tls.js';
import { ConfigServer, type ConfigServerOptions } from '../../operator/config-server/server.js';
import type { SnapshotSource } from '../../operator/config-server/source.js';
import type { TestCa, TlsDir } from '../helpers/tls.js';

const run = promisify(execFile);

/** Keys of the test snapshots: tests look for their hex and base64 forms in logs. */
export const TEST_KEYS = [Buffer.from('00112233445566778899aabbccddeeff', 'hex'), Buffer.from('f0e1d2c3b4a5968778695a4b3c2d1e0f', 'hex')];

/** Every printable form a key could take in a log line. */
export function keyForms(key: Buffer): string[] {
  return [key.toString('hex'), key.toString('hex').toUpperCase(), key.toString('base64'), key.toString('base64url'), [...key].join(',')];
}

export interface LoadBalancerOptions {
  servers?: number;
  /** Octets of padding in each server name (big snapshots for flow-control tests). */
  namePadding?: number;
  port?: number;
  keyIndex?: number;
  /** Weight of every server (vary it to make versions differ in content). */
  weight?: number;
}

export function makeLoadBalancer(name: string, o: LoadBalancerOptions = {}): DataplaneSnapshot {
  const servers: SnapshotServer[] = [];
  for (let i = 0; i < (o.servers ?? 3); i++) {
    servers.push({
      name: `${name}-server-${i}${'x'.repeat(o.namePadding ?? 0)}`,
      serverId: new Uint8Array([i >> 8, i & 0xff]),
      address: { host: '127.0.0.1', port: 20000 + (i % 40000), family: 4 },
      weight: o.weight ?? 100,
      state: 'active',
    });
  }
  return {
    version: 0,
    name,
    listen: [{ host: '127.0.0.1', port: o.port ?? 4433, family: 4 }],
    configs: [{ config: makeConfig({ configId: 0, serverIdLength: 2, nonceLength: 6, key: TEST_KEYS[o.keyIndex ?? 0] }), state: 'active' }],
    servers,
    flows: DEFAULT_FLOWS,
    health: DEFAULT_HEALTH,
    shortDcidLength: 9,
  };
}

/**
 * Client certificates for many identities, quickly: one key pair for all (openssl x509 -new -force_pubkey, a
 * handful at a time) instead of three openssl runs per identity. The CA's key is where TestCa keeps it.
 */
export async function issueClients(ca: TestCa, cns: readonly string[], parallel = 4): Promise<TlsDir[]> {
  const base = join(ca.root, `bulk-${Date.now()}`);
  mkdirSync(base);
  const key = join(base, 'tls.key');
  const pub = join(base, 'pub.pem');
  await run('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key]);
  await run('openssl', ['ec', '-in', key, '-pubout', '-out', pub]);
  const ext = join(base, 'ext.cnf');
  writeFileSync(ext, 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n');
  const { readFileSync } = await import('node:fs');
  const keyPem = readFileSync(key);
  const out: TlsDir[] = new Array(cns.length);
  let next = 0;
  const worker = async () => {
    while (next < cns.length) {
      const i = next++;
      const dir = join(base, String(i));
      mkdirSync(dir);
      await run('openssl', [
        'x509', '-new', '-subj', `/CN=${cns[i]}`, '-force_pubkey', pub, '-CA', join(ca.root, `${ca.name}.crt`), '-CAkey', join(ca.root, `${ca.name}.key`),
        '-set_serial', String(100000 + i), '-days', '30', '-sha256', '-extfile', ext, '-out', join(dir, 'tls.crt'),
      ]);
      writeFileSync(join(dir, 'tls.key'), keyPem);
      writeFileSync(join(dir, 'ca.crt'), ca.caCert);
      out[i] = { dir, ca: ca.caCert, cert: readFileSync(join(dir, 'tls.crt')), key: keyPem };
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return out;
}

/** A pino logger writing into `lines` (every line, at `level`). */
export function captureLogger(level = 'debug'): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString('utf8').split('\n').filter((l) => l.length > 0));
      cb();
    },
  });
  return { logger: pino({ level }, sink), lines };
}

export interface StartedServer {
  server: ConfigServer;
  address: string;
  registry: Registry;
  lines: string[];
}

export async function startServer(source: SnapshotSource, serverTls: TlsDir, options: Partial<ConfigServerOptions> = {}): Promise<StartedServer> {
  const { logger, lines } = captureLogger();
  const registry = new Registry();
  const server = new ConfigServer({ source, credentials: serverCredentials(serverTls.dir), logger, registry, ...options });
  const bound = await server.listen('127.0.0.1:0');
  return { server, address: `localhost:${bound.port}`, registry, lines };
}

export interface StreamEnd {
  code: number;
  details: string;
}

/**
 * One data-plane stream as a test sees it: every snapshot received, the status it ended with, and helpers to
 * answer. `pause()` stops reading (grpc-js stops taking data off HTTP/2 and flow control pushes back).
 */
export class TestDataPlane {
  readonly client: DistributionServiceClient;
  readonly stream: ClientDuplexStream<StreamConfigRequest, StreamConfigResponse>;
  readonly snapshots: Snapshot[] = [];
  ended: StreamEnd | null = null;
  private waiters: Array<() => void> = [];
  /** Answer every snapshot with an Ack automatically. */
  autoAck = false;

  constructor(address: string, creds: ChannelCredentials, options: Record<string, unknown> = {}, metadata?: Metadata) {
    this.client = new DistributionServiceClient(address, creds, options);
    this.stream = metadata ? this.client.streamConfig(metadata) : this.client.streamConfig();
    this.stream.on('data', (m: StreamConfigResponse) => {
      if (m.message?.$case === 'snapshot') {
        this.snapshots.push(m.message.snapshot);
        if (this.autoAck) this.ack(m.message.snapshot);
      }
      this.notify();
    });
    this.stream.on('error', (e: ServiceError) => {
      this.ended ??= { code: e.code, details: e.details };
      this.notify();
    });
    this.stream.on('status', (s: { code: number; details: string }) => {
      this.ended ??= { code: s.code, details: s.details };
      this.notify();
    });
  }

  static withTls(address: string, tls: TlsDir): TestDataPlane {
    return new TestDataPlane(address, clientCredentials(tls.dir));
  }

  /** A client that sends `token` as its node token (x-quiclb-node-token). */
  static withNodeToken(address: string, tls: TlsDir, token: string): TestDataPlane {
    const md = new Metadata();
    md.set('x-quiclb-node-token', token);
    return new TestDataPlane(address, clientCredentials(tls.dir), {}, md);
  }

  /** A client that presents no certificate (trusts the server's CA). */
  static withoutCertificate(address: string, ca: Buffer): TestDataPlane {
    return new TestDataPlane(address, credentials.createSsl(ca));
  }

  send(req: StreamConfigRequest): void {
    this.stream.write(req);
  }

  hello(nodeName = 'node-a', currentVersion = 0n): void {
    this.send({
      message: {
        $case: 'hello',
        hello: { nodeName, podName: 'pod-a', softwareVersion: '0.1.0', capabilities: ['health-reports', 'counters'], currentVersion, processStartTime: new Date(1_700_000_000_000) },
      },
    });
  }

  ack(s: Snapshot, nonce = s.nonce): void {
    this.send({ message: { $case: 'ack', ack: { version: s.version, nonce } } });
  }

  nack(s: Snapshot, field: string, message: string): void {
    this.send({ message: { $case: 'nack', nack: { version: s.version, nonce: s.nonce, field, message } } });
  }

  get last(): Snapshot | undefined {
    return this.snapshots[this.snapshots.length - 1];
  }

  /** Resolves when `pred` holds (checked on every message and end), or rejects after `timeoutMs`. */
  waitFor(pred: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
    if (pred()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== check);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} (snapshots: ${this.snapshots.map((s) => s.version).join(',')}; ended: ${JSON.stringify(this.ended)})`));
      }, timeoutMs);
      const check = () => {
        if (!pred()) return;
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== check);
        resolve();
      };
      this.waiters.push(check);
    });
  }

  waitForVersion(version: number, timeoutMs = 5000): Promise<Snapshot> {
    return this.waitFor(() => this.snapshots.some((s) => s.version === BigInt(version)), timeoutMs, `version ${version}`).then(
      () => this.snapshots.find((s) => s.version === BigInt(version))!,
    );
  }

  waitForEnd(timeoutMs = 5000): Promise<StreamEnd> {
    return this.waitFor(() => this.ended !== null, timeoutMs, 'the stream to end').then(() => this.ended!);
  }

  pause(): void {
    this.stream.pause();
  }

  resume(): void {
    this.stream.resume();
  }

  close(): void {
    this.stream.cancel();
    this.client.close();
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
