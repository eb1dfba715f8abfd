/** `quiclb admin get|update|rotate`: a client of the standalone admin API (LoadBalancerConfig over mTLS). */
import { readFileSync } from 'node:fs';
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import {
  LoadBalancerConfigClient,
  type GetConfigResponse,
  type RotateKeysResponse,
  type UpdateConfigResponse,
} from '../proto/gen/quiclb/v1/admin.js';
import { MAX_CONFIG_YAML_BYTES } from '../proto/admin-limits.js';
import { clientCredentials, TlsDirError } from '../proto/tls.js';
import { parseFlags } from './args.js';
import { UsageError } from './usage-error.js';

export const ADMIN_HELP = `Usage:
  quiclb admin get    --server HOST:PORT --tls-dir DIR [--json]
  quiclb admin update --server HOST:PORT --tls-dir DIR --file FILE|- [--expected-version N] [--dry-run] [--json]
  quiclb admin rotate --server HOST:PORT --tls-dir DIR [--json]

Calls the admin API of a standalone load balancer (quiclb standalone --config FILE --admin ADDR --tls-dir DIR):
  get      the configuration in force: version, listen addresses, live QUIC-LB configs (key fingerprints, never
           keys), servers and their health, rotation settings (role: reader or writer)
  update   replace the config file with a new YAML document; validated like a reload of the file (an invalid one
           changes nothing and the error names the field), then written and applied (role: writer)
  rotate   start a key rotation now; prints the new config id and when it becomes active and the old one retires
           (role: writer; needs loadbalancer.config_rotation.enabled: true)

Options:
  --server HOST:PORT     the admin address; HOST must match the server certificate (e.g. localhost:9443)
  --tls-dir DIR          ca.crt (the CA that issued the server's certificate), tls.crt and tls.key (this client's
                         certificate: its subject CN is the name looked up in admin.clients)
  --file FILE            update: the new YAML; "-" (or a lone "-" argument) reads standard input
  --expected-version N   update: refuse (ABORTED) unless the version in force is N (from get): no lost updates
  --dry-run              update: validate only, change nothing
  --json                 print the response as JSON (the proto's field names; durations as "<seconds>s",
                         times as RFC 3339, versions as numbers)
  --timeout SECONDS      give up after this long (default 10)
  -h, --help             this text

Exit status: 0 done; 1 the call was refused or failed (the server's message on stderr); 2 invalid input.`;


/** A refused or failed call: exit status 1. */
class CallFailed extends Error {}

/** The response as script-friendly JSON: snake_case names, all fields, versions as numbers. */
export function toScriptJson(v: unknown): unknown {
  if (typeof v === 'bigint') return Number(v);
  if (v instanceof Date) return v.toISOString();
  if (Array.isArray(v)) return v.map(toScriptJson);
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o);
    if (keys.length === 2 && typeof o.seconds === 'bigint' && typeof o.nanos === 'number') return formatDuration(o.seconds, o.nanos);
    return Object.fromEntries(keys.map((k) => [k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), toScriptJson(o[k])]));
  }
  return v;
}

function formatDuration(seconds: bigint, nanos: number): string {
  return nanos === 0 ? `${seconds}s` : `${seconds}.${String(nanos).padStart(9, '0').replace(/0+$/, '')}s`;
}

function humanDuration(d: { seconds: bigint; nanos: number } | undefined): string {
  if (!d) return '-';
  let ms = Number(d.seconds) * 1000 + Math.round(d.nanos / 1e6);
  const parts: string[] = [];
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms >= size) {
      parts.push(`${Math.floor(ms / size)}${unit}`);
      ms %= size;
    }
  }
  if (ms > 0 || parts.length === 0) parts.push(`${ms}ms`);
  return parts.join('');
}

const time = (d: Date | undefined) => (d ? d.toISOString() : 'never');

function table(rows: string[][]): string[] {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => `  ${r.map((c, i) => c.padEnd(widths[i])).join('  ')}`.trimEnd());
}

export function formatGetConfig(r: GetConfigResponse): string {
  const lines = [
    `${r.name}: version ${r.version}, loaded ${time(r.loadedAt)}`,
    `config file: ${r.configPath}`,
    `listen: ${r.listen.join(', ')}`,
    `routing: ${r.routing}`,
    'configs:',
    ...table([
      ['ID', 'STATE', 'SERVER_ID_LEN', 'NONCE_LEN', 'KEY', 'SELF_ENCODED_LEN', 'EXTRA_LEN'],
      ...r.configs.map((c) => [String(c.configId), c.state, String(c.serverIdLength), String(c.nonceLength), c.encrypted ? c.keyFingerprint : 'plaintext', String(c.lengthSelfEncoded), String(c.extraLength)]),
    ]),
    'servers:',
    ...(r.servers.length === 0
      ? ['  (none)']
      : table([['NAME', 'ADDRESS', 'SERVER_ID', 'WEIGHT', 'STATE', 'HEALTH'], ...r.servers.map((s) => [s.name, s.address, s.serverId, String(s.weight), s.state, s.health])])),
  ];
  const rot = r.rotation;
  if (rot?.enabled) {
    lines.push(`rotation: every ${humanDuration(rot.interval)}, promote after ${humanDuration(rot.promoteAfter)}, drain ${humanDuration(rot.drain)}; last rotation ${time(rot.lastRotation)}`);
  } else lines.push('rotation: disabled');
  return lines.join('\n');
}

export function formatUpdate(r: UpdateConfigResponse, dryRun: boolean): string {
  if (dryRun) return `valid (dry run: nothing changed); version in force ${r.version}`;
  return r.changed ? `applied: version ${r.version}` : `no change: version ${r.version}`;
}

export function formatRotate(r: RotateKeysResponse): string {
  return [
    `rotation started: config ${r.newConfigId} (key ${r.newKeyFingerprint}) replaces config ${r.previousConfigId}; version ${r.version}`,
    ...r.phases.map((p) => `  ${p.name.padEnd(9)} ${time(p.at)}`),
  ].join('\n');
}

function readYaml(file: string): string {
  let data: Buffer;
  try {
    data = file === '-' ? readFileSync(0) : readFileSync(file);
  } catch (e) {
    throw new UsageError(`--file: cannot read ${file === '-' ? 'standard input' : file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (data.length > MAX_CONFIG_YAML_BYTES) throw new UsageError(`--file: at most ${MAX_CONFIG_YAML_BYTES} bytes, got ${data.length}`);
  return data.toString('utf8');
}

function call<Res>(invoke: (cb: (err: ServiceError | null, res: Res) => void) => void): Promise<Res> {
  return new Promise((resolve, reject) => {
    invoke((err, res) => {
      if (err) {
        const what = err.code === status.UNAVAILABLE || err.code === status.DEADLINE_EXCEEDED ? 'cannot reach the admin API: ' : '';
        reject(new CallFailed(`${what}${status[err.code] ?? err.code}: ${err.details || err.message}`));
      } else resolve(res);
    });
  });
}

export async function adminCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    server: { type: 'string' },
    'tls-dir': { type: 'string' },
    file: { type: 'string' },
    'expected-version': { type: 'string' },
    'dry-run': { type: 'boolean' },
    json: { type: 'boolean' },
    timeout: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    process.stdout.write(ADMIN_HELP + '\n');
    return 0;
  }
  const [sub, ...rest] = positionals;
  if (sub === undefined) throw new UsageError('a subcommand is required: get, update or rotate (quiclb admin --help)');
  if (!['get', 'update', 'rotate'].includes(sub)) throw new UsageError(`unknown subcommand ${JSON.stringify(sub)}: get, update or rotate`);
  let file = values.file;
  if (sub === 'update' && rest.length === 1 && file === undefined) file = rest[0];
  else if (rest.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(rest[0])}`);
  if (sub !== 'update' && (file !== undefined || values['expected-version'] !== undefined || values['dry-run'])) {
    throw new UsageError('--file, --expected-version and --dry-run go with update');
  }
  if (sub === 'update' && file === undefined) throw new UsageError('update needs the new YAML: --file FILE, or - for standard input');
  const server = values.server;
  if (!server) throw new UsageError('--server HOST:PORT is required');
  if (!/^(\[[^\]]+\]|[^:[\]]+):\d{1,5}$/.test(server) || Number(server.slice(server.lastIndexOf(':') + 1)) > 65535) {
    throw new UsageError(`--server: expected HOST:PORT (IPv6 in brackets), got ${JSON.stringify(server)}`);
  }
  if (!values['tls-dir']) throw new UsageError('--tls-dir DIR is required (ca.crt, tls.crt, tls.key)');
  let expectedVersion = 0n;
  if (values['expected-version'] !== undefined) {
    if (!/^\d{1,19}$/.test(values['expected-version'])) throw new UsageError(`--expected-version: expected a version number, got ${JSON.stringify(values['expected-version'])}`);
    expectedVersion = BigInt(values['expected-version']);
  }
  let timeoutS = 10;
  if (values.timeout !== undefined) {
    timeoutS = Number(values.timeout);
    if (!/^\d+(\.\d+)?$/.test(values.timeout) || timeoutS <= 0 || timeoutS > 3600) throw new UsageError(`--timeout: expected seconds (0 < s <= 3600), got ${JSON.stringify(values.timeout)}`);
  }
  const yaml = sub === 'update' ? readYaml(file!) : '';
  let creds;
  try {
    creds = clientCredentials(values['tls-dir']);
  } catch (e) {
    if (e instanceof TlsDirError) throw new UsageError(e.message);
    throw e;
  }
  const client = new LoadBalancerConfigClient(server, creds);
  const options = () => ({ deadline: Date.now() + timeoutS * 1000 });
  const out = (obj: unknown, text: string) => process.stdout.write((values.json ? JSON.stringify(toScriptJson(obj), null, 2) : text) + '\n');
  try {
    if (sub === 'get') {
      const r = await call<GetConfigResponse>((cb) => client.getConfig({}, new Metadata(), options(), cb));
      out(r, formatGetConfig(r));
    } else if (sub === 'update') {
      const dryRun = values['dry-run'] ?? false;
      const r = await call<UpdateConfigResponse>((cb) => client.updateConfig({ configYaml: yaml, expectedVersion, dryRun }, new Metadata(), options(), cb));
      out(r, formatUpdate(r, dryRun));
    } else {
      const r = await call<RotateKeysResponse>((cb) => client.rotateKeys({}, new Metadata(), options(), cb));
      out(r, formatRotate(r));
    }
    return 0;
  } catch (e) {
    if (!(e instanceof CallFailed)) throw e;
    process.stderr.write(`quiclb admin ${sub}: ${e.message}\n`);
    return 1;
  } finally {
    client.close();
  }
}
