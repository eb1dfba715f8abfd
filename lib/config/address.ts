/** "host:port" socket addresses of the standalone YAML and the snapshot: IP literals only, IPv6 in brackets. */
import { isIPv4, isIPv6, SocketAddress as NetSocketAddress } from 'node:net';
import { ConfigError } from '../quiclb/config.js';
import { describe } from './fields.js';

export interface SocketAddress {
  /** IP literal, without brackets for IPv6. */
  readonly host: string;
  /** 0..65535; 0 (listen only) means an ephemeral port. */
  readonly port: number;
  readonly family: 4 | 6;
}

/**
 * Parses "1.2.3.4:443" or "[::1]:443". Host names are rejected: the data plane never resolves names on the
 * packet path, and a name that resolves differently on two instances would break their agreement.
 */
export function parseSocketAddress(field: string, value: unknown, options: { allowPortZero?: boolean } = {}): SocketAddress {
  if (typeof value !== 'string') throw new ConfigError(field, `must be a "host:port" string, got ${describe(value)}`);
  const s = value.trim();
  let host: string;
  let portText: string;
  if (s.startsWith('[')) {
    const close = s.indexOf(']');
    if (close < 0 || s[close + 1] !== ':') throw new ConfigError(field, `must look like "[::1]:443", got ${describe(value)}`);
    host = s.slice(1, close);
    portText = s.slice(close + 2);
  } else {
    const colon = s.lastIndexOf(':');
    if (colon < 0) throw new ConfigError(field, `must be "host:port" (port missing), got ${describe(value)}`);
    host = s.slice(0, colon);
    portText = s.slice(colon + 1);
    if (host.includes(':')) throw new ConfigError(field, `IPv6 addresses need brackets, e.g. "[${host}]:${portText}"`);
  }
  let family: 4 | 6;
  if (isIPv4(host)) family = 4;
  else if (isIPv6(host)) {
    family = 6;
    host = canonicalIPv6(host);
  } else throw new ConfigError(field, `host must be an IPv4 or IPv6 address (host names are not resolved), got ${describe(host)}`);
  if (!/^\d{1,5}$/.test(portText)) throw new ConfigError(field, `port must be a number, got ${describe(portText)}`);
  const port = Number(portText);
  const min = options.allowPortZero ? 0 : 1;
  if (port < min || port > 65535) throw new ConfigError(field, `port must be ${min}..65535, got ${port}`);
  return { host, port, family };
}

export function formatSocketAddress(a: { host: string; port: number }): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/**
 * The canonical (RFC 5952) text of an IPv6 literal, as sockets report peers: "FD00:0::1" and "fd00::1" are one
 * address for duplicate checks, log lines and metric labels. A zone ("%eth0") is kept.
 */
function canonicalIPv6(host: string): string {
  const pct = host.indexOf('%');
  const addr = pct < 0 ? host : host.slice(0, pct);
  return new NetSocketAddress({ address: addr, family: 'ipv6' }).address + (pct < 0 ? '' : host.slice(pct));
}
