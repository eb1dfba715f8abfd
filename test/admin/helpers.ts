/** Shared pieces of the admin API tests: a promisified LoadBalancerConfig client, key-leak checks, log capture. */
import { Writable } from 'node:stream';
import { Metadata, type ServiceError } from '@grpc/grpc-js';
import { pino } from 'pino';
import { REDACT_PATHS } from '../../dataplane/logging.js';
import {
  LoadBalancerConfigClient,
  type GetConfigResponse,
  type RotateKeysResponse,
  type UpdateConfigRequest,
  type UpdateConfigResponse,
} from '../../proto/gen/quiclb/v1/admin.js';
import { clientCredentials } from '../../proto/tls.js';

export interface AdminClient {
  get(): Promise<GetConfigResponse>;
  update(req: Partial<UpdateConfigRequest> & { configYaml: string }): Promise<UpdateConfigResponse>;
  rotate(): Promise<RotateKeysResponse>;
  close(): void;
}

function unary<Res>(invoke: (md: Metadata, opts: { deadline: number }, cb: (err: ServiceError | null, res: Res) => void) => void): Promise<Res> {
  return new Promise((resolve, reject) => invoke(new Metadata(), { deadline: Date.now() + 10_000 }, (err, res) => (err ? reject(err) : resolve(res))));
}

/** A client presenting the certificate of `tlsDir`, dialling localhost:port (the name on the server certificate). */
export function adminClient(port: number, tlsDir: string): AdminClient {
  const c = new LoadBalancerConfigClient(`localhost:${port}`, clientCredentials(tlsDir));
  return {
    get: () => unary((md, o, cb) => c.getConfig({}, md, o, cb)),
    update: (req) => unary((md, o, cb) => c.updateConfig({ expectedVersion: 0n, dryRun: false, ...req }, md, o, cb)),
    rotate: () => unary((md, o, cb) => c.rotateKeys({}, md, o, cb)),
    close: () => c.close(),
  };
}

/** Resolves to the gRPC error of a call that must fail. */
export async function refused(p: Promise<unknown>): Promise<ServiceError> {
  try {
    await p;
  } catch (e) {
    return e as ServiceError;
  }
  throw new Error('the call succeeded but should have been refused');
}

/** Every spelling of a key that must never appear in a log line or a response. */
export function keySpellings(key: Buffer): string[] {
  return [key.toString('hex'), key.toString('hex').toUpperCase(), key.toString('base64'), key.toString('base64').replace(/=+$/, ''), key.toString('base64url')];
}

/** The spellings of any of `keys` found in `text` (empty when none). */
export function leakedKeys(text: string | Buffer, keys: readonly Buffer[]): string[] {
  const found: string[] = [];
  for (const k of keys) {
    if (Buffer.isBuffer(text) && text.includes(k)) found.push(`raw ${k.toString('hex').slice(0, 4)}...`);
    const s = String(text);
    for (const sp of keySpellings(k)) if (s.includes(sp)) found.push(sp.slice(0, 4) + '...');
  }
  return found;
}

/** A debug-level pino logger (the product's redaction) that keeps every line. */
export function capturingLogger(): { logger: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = pino(
    { level: 'debug', redact: { paths: REDACT_PATHS, censor: '[redacted]' } },
    new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk));
        cb();
      },
    }),
  );
  return { logger, lines };
}

export interface AuditLine {
  audit: true;
  caller: string | null;
  method: string;
  code: string;
  outcome: string;
  version_before: number;
  version_after: number;
  yaml_sha256?: string;
  error?: string;
}

export function auditLines(lines: readonly string[]): AuditLine[] {
  return lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((o) => o.audit === true) as unknown as AuditLine[];
}
