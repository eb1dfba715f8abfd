/**
 * The admin API of standalone mode (proto/quiclb/v1/admin.proto, LoadBalancerConfig) over mTLS. Every call is
 * authorized by the client certificate's subject CN against `admin.clients` of the config in force (a reload
 * changes roles at once) and audit-logged: one info line with `audit: true`, the caller, the method, the gRPC
 * code, and the config version before and after. Audit lines never hold the YAML (only its SHA-256) or keys.
 */
import { Server, status, type handleUnaryCall, type ServerUnaryCall, type sendUnaryData } from '@grpc/grpc-js';
import { formatSocketAddress, type SocketAddress } from '../../lib/config/address.js';
import { adminRoleOf, type AdminRole } from '../../lib/config/admin-clients.js';
import { ConfigError } from '../../lib/quiclb/config.js';
import { LoadBalancerConfigService, type LoadBalancerConfigServer, type UpdateConfigRequest } from '../../proto/gen/quiclb/v1/admin.js';
import { checkClientCertificate, serverCredentials } from '../../proto/tls.js';
import type { Logger } from '../logging.js';
import type { StandaloneControl } from '../standalone.js';
import { AdminCallError } from './errors.js';
import { describeForAdmin } from './get-config.js';
import { rotateKeys } from './rotate-keys.js';
import { MAX_CONFIG_YAML_BYTES } from '../../proto/admin-limits.js';
import { updateConfig, yamlDigest } from './update-config.js';

export interface AdminServerOptions {
  control: StandaloneControl;
  logger: Logger;
  address: SocketAddress;
  /** ca.crt (issues the clients' certificates), tls.crt, tls.key (this server's). */
  tlsDir: string;
}

export interface AdminServer {
  address(): SocketAddress;
  close(): Promise<void>;
}

/** Longest error text in an audit line. */
const MAX_AUDIT_ERROR = 500;

const SERVER_OPTIONS = {
  // UpdateConfig's YAML (1 MiB) plus its framing; larger messages are refused by grpc-js (RESOURCE_EXHAUSTED).
  'grpc.max_receive_message_length': MAX_CONFIG_YAML_BYTES + 16 * 1024,
  'grpc.max_concurrent_streams': 16,
  'grpc.keepalive_time_ms': 60_000,
  'grpc.keepalive_timeout_ms': 20_000,
  'grpc.max_connection_idle_ms': 300_000,
};

type Method = 'GetConfig' | 'UpdateConfig' | 'RotateKeys';

export async function startAdminServer(o: AdminServerOptions): Promise<AdminServer> {
  const { control, logger } = o;
  if (control.loaded().config.admin.clients.length === 0) {
    throw new ConfigError('admin.clients', 'is empty: --admin needs the client certificate names (subject CN) and their roles (reader, writer)');
  }

  function unary<Req, Res>(method: Method, needs: AdminRole, run: (req: Req, caller: string) => Promise<Res>, auditOf?: (req: Req) => Record<string, unknown>): handleUnaryCall<Req, Res> {
    return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      const started = performance.now();
      const versionBefore = control.version();
      let caller: string | null = null;
      const finish = (code: status, error?: string) => {
        const fields = {
          audit: true,
          caller,
          peer: call.getPeer(),
          method,
          code: status[code],
          outcome: code === status.OK ? 'ok' : code === status.PERMISSION_DENIED || code === status.UNAUTHENTICATED ? 'denied' : 'failed',
          version_before: versionBefore,
          version_after: control.version(),
          duration_ms: Math.round((performance.now() - started) * 10) / 10,
          ...auditOf?.(call.request),
          ...(error === undefined ? {} : { error: error.length > MAX_AUDIT_ERROR ? `${error.slice(0, MAX_AUDIT_ERROR)}...` : error }),
        };
        logger.info(fields, 'admin call');
      };
      const refuse = (code: status, message: string) => {
        finish(code, message);
        callback({ code, details: message });
      };
      const id = checkClientCertificate(call as ServerUnaryCall<unknown, unknown>);
      if ('error' in id) return refuse(status.UNAUTHENTICATED, id.error);
      caller = id.name;
      const role = adminRoleOf(control.loaded().config.admin, id.name);
      if (role === null) return refuse(status.PERMISSION_DENIED, `client ${JSON.stringify(id.name)} is not listed in admin.clients`);
      if (needs === 'writer' && role !== 'writer') return refuse(status.PERMISSION_DENIED, `${method} needs the writer role; ${JSON.stringify(id.name)} is a ${role}`);
      run(call.request, id.name).then(
        (res) => {
          finish(status.OK);
          callback(null, res);
        },
        (e: unknown) => {
          if (e instanceof AdminCallError) return refuse(e.code, e.message);
          logger.error({ method, error: (e as Error).message }, 'admin call failed');
          refuse(status.INTERNAL, `internal error: ${(e as Error).message}`);
        },
      );
    };
  }

  const impl: LoadBalancerConfigServer = {
    getConfig: unary('GetConfig', 'reader', async () => describeForAdmin(control)),
    updateConfig: unary(
      'UpdateConfig',
      'writer',
      async (req: UpdateConfigRequest, caller) => {
        const r = await updateConfig(control, req, caller);
        return { version: BigInt(r.version), changed: r.changed };
      },
      (req) => ({
        yaml_sha256: yamlDigest(req.configYaml),
        yaml_bytes: Buffer.byteLength(req.configYaml, 'utf8'),
        dry_run: req.dryRun,
        expected_version: Number(req.expectedVersion),
      }),
    ),
    rotateKeys: unary('RotateKeys', 'writer', (_req, caller) => rotateKeys(control, caller)),
  };

  const credentials = serverCredentials(o.tlsDir); // throws TlsDirError naming a missing file
  const server = new Server(SERVER_OPTIONS);
  server.addService(LoadBalancerConfigService, impl);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(formatSocketAddress(o.address), credentials, (err, p) => (err ? reject(err) : resolve(p))),
  ).catch((e: unknown) => {
    server.forceShutdown();
    throw new Error(`cannot start the admin API on ${formatSocketAddress(o.address)}: ${(e as Error).message}`, { cause: e });
  });
  const bound: SocketAddress = { ...o.address, port };
  logger.info({ address: formatSocketAddress(bound), clients: control.loaded().config.admin.clients.length }, 'admin API (LoadBalancerConfig) listening, mTLS');
  return {
    address: () => bound,
    close: () =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.forceShutdown(), 2000);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}
