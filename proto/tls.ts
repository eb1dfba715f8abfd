/**
 * mTLS for the config channel and the admin API. A TLS directory holds `ca.crt` (the CA that issues the peers'
 * certificates), `tls.crt` and `tls.key` (this side's certificate chain and key): the layout of a Kubernetes TLS
 * Secret with its CA (cert-manager writes exactly these names). The files are re-read when they change
 * (grpc-js's FileWatcherCertificateProvider), so rotated certificates are picked up without a restart.
 *
 * Peers are authenticated by the TLS handshake (certificate chain to ca.crt, validity); the identity is the
 * certificate's subject CN. What the handshake does not check, the extended key usage of a client certificate,
 * checkClientCertificate() checks before a call is served: a server-only certificate is no client identity.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { experimental, type ChannelCredentials, type ServerCredentials, type ServerDuplexStream, type ServerUnaryCall } from '@grpc/grpc-js';

export const TLS_FILES = Object.freeze({ ca: 'ca.crt', cert: 'tls.crt', key: 'tls.key' });

/** How often the certificate files are re-read. */
const REFRESH_MS = 60_000;

export class TlsDirError extends Error {}

function files(dir: string) {
  const f = { ca: join(dir, TLS_FILES.ca), cert: join(dir, TLS_FILES.cert), key: join(dir, TLS_FILES.key) };
  for (const [what, path] of Object.entries(f)) {
    if (!existsSync(path)) throw new TlsDirError(`TLS directory ${dir}: ${what === 'ca' ? 'CA certificate' : what === 'cert' ? 'certificate' : 'private key'} ${path} is missing`);
  }
  return f;
}

function provider(dir: string) {
  const f = files(dir);
  return new experimental.FileWatcherCertificateProvider({ caCertificateFile: f.ca, certificateFile: f.cert, privateKeyFile: f.key, refreshIntervalMs: REFRESH_MS });
}

/** Server credentials that require a client certificate issued by the directory's CA. */
export function serverCredentials(dir: string): ServerCredentials {
  const p = provider(dir);
  return experimental.createCertificateProviderServerCredentials(p, p, true);
}

/** Client credentials presenting the directory's certificate and trusting servers issued by its CA. */
export function clientCredentials(dir: string): ChannelCredentials {
  const p = provider(dir);
  return experimental.createCertificateProviderChannelCredentials(p, p);
}

const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';

export interface PeerIdentity {
  /** Subject common name of the client certificate. */
  readonly name: string;
}

type AnyCall = ServerDuplexStream<unknown, unknown> | ServerUnaryCall<unknown, unknown>;

/**
 * The verified client identity of a call, or an error message when the certificate may not act as a client:
 * no certificate, no CN, or an extended key usage without clientAuth (e.g. a server certificate).
 */
export function checkClientCertificate(call: AnyCall): PeerIdentity | { error: string } {
  const peer = call.getAuthContext()?.sslPeerCertificate;
  if (!peer || !peer.raw) return { error: 'no client certificate' };
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(peer.raw);
  } catch {
    return { error: 'unreadable client certificate' };
  }
  // keyUsage is the extended key usage list (undefined when the extension is absent: any usage).
  const eku = cert.keyUsage;
  if (eku !== undefined && !eku.includes(CLIENT_AUTH_OID)) return { error: 'certificate not issued for client authentication (extended key usage lacks clientAuth)' };
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(cert.subject)?.[1];
  if (!cn) return { error: 'client certificate has no subject CN' };
  return { name: cn };
}
