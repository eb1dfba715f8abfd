/**
 * The `admin:` section of the standalone YAML: which client identities (the subject CN of a client certificate
 * issued by the `--tls-dir` CA) may call the admin API (`quiclb standalone --admin`), and with which role.
 */
import { ConfigError } from '../quiclb/config.js';
import { checkKeys, describe, optEnum, requireObject } from './fields.js';

export const ADMIN_ROLES = ['reader', 'writer'] as const;
/** reader: GetConfig; writer: every method. */
export type AdminRole = (typeof ADMIN_ROLES)[number];

export interface AdminClient {
  /** Subject CN of the client certificate. */
  readonly name: string;
  readonly role: AdminRole;
}

export interface AdminSettings {
  readonly clients: readonly AdminClient[];
}

export const MAX_ADMIN_CLIENTS = 1000;
export const MAX_ADMIN_NAME_LENGTH = 253;

export const NO_ADMIN: AdminSettings = Object.freeze({ clients: Object.freeze([]) });

/** Parses `admin:` (absent: no clients). Throws ConfigError naming the field. */
export function parseAdminSection(v: unknown): AdminSettings {
  if (v === undefined || v === null) return NO_ADMIN;
  const o = requireObject('admin', v);
  checkKeys('admin', o, ['clients']);
  if (o.clients === undefined || o.clients === null) return NO_ADMIN;
  if (!Array.isArray(o.clients)) throw new ConfigError('admin.clients', `must be a list of {name, role}, got ${describe(o.clients)}`);
  if (o.clients.length > MAX_ADMIN_CLIENTS) throw new ConfigError('admin.clients', `at most ${MAX_ADMIN_CLIENTS} clients, got ${o.clients.length}`);
  const seen = new Map<string, number>();
  const clients = o.clients.map((c, i): AdminClient => {
    const p = `admin.clients[${i}]`;
    const e = requireObject(p, c);
    checkKeys(p, e, ['name', 'role']);
    if (e.name === undefined) throw new ConfigError(`${p}.name`, 'is required (the subject CN of the client certificate)');
    if (typeof e.name !== 'string' || e.name.length === 0) throw new ConfigError(`${p}.name`, `must be a non-empty string, got ${describe(e.name)}`);
    if (e.name.length > MAX_ADMIN_NAME_LENGTH) throw new ConfigError(`${p}.name`, `must be at most ${MAX_ADMIN_NAME_LENGTH} characters, got ${e.name.length}`);
    // eslint-disable-next-line no-control-regex
    if (/[\u0000-\u001f\u007f]/.test(e.name)) throw new ConfigError(`${p}.name`, 'must not contain control characters');
    const other = seen.get(e.name);
    if (other !== undefined) throw new ConfigError(`${p}.name`, `${JSON.stringify(e.name)} is also the name of admin.clients[${other}]`);
    seen.set(e.name, i);
    if (e.role === undefined) throw new ConfigError(`${p}.role`, `is required (${ADMIN_ROLES.join(' or ')})`);
    return { name: e.name, role: optEnum(`${p}.role`, e.role, ADMIN_ROLES, 'reader') };
  });
  return { clients };
}

/** The role of a client identity, or null when it is not listed. */
export function adminRoleOf(settings: AdminSettings, name: string): AdminRole | null {
  return settings.clients.find((c) => c.name === name)?.role ?? null;
}
