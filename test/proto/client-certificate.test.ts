/**
 * checkClientCertificate (proto/tls.ts) on real certificates: the identity check behind the TLS handshake of the
 * config server and the admin API. The handshake already refuses most bad certificates, so this checks the function
 * itself, with the peer certificate as grpc-js hands it over.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import type { ServerUnaryCall } from '@grpc/grpc-js';
import { checkClientCertificate } from '../../proto/tls.js';
import { TestCa } from '../helpers/tls.js';

let ca: TestCa;
beforeAll(() => {
  ca = new TestCa();
});
afterAll(() => ca?.remove());

function callWith(raw: Buffer | undefined): ServerUnaryCall<unknown, unknown> {
  return { getAuthContext: () => ({ transportSecurityType: 'ssl', sslPeerCertificate: raw ? { raw } : undefined }) } as unknown as ServerUnaryCall<unknown, unknown>;
}
const der = (usage: 'client' | 'server' | 'both', cn = 'node-a') => new X509Certificate(ca.issue({ cn, usage }).cert).raw;

describe('checkClientCertificate', () => {
  it('names the subject CN of a client certificate (clientAuth, or both usages)', () => {
    expect(checkClientCertificate(callWith(der('client')))).toEqual({ name: 'node-a' });
    expect(checkClientCertificate(callWith(der('both', 'ops-alice')))).toEqual({ name: 'ops-alice' });
  });

  it('refuses no certificate, an unreadable one, and a server-only certificate', () => {
    expect(checkClientCertificate(callWith(undefined))).toEqual({ error: 'no client certificate' });
    expect(checkClientCertificate(callWith(Buffer.from('not a certificate')))).toEqual({ error: 'unreadable client certificate' });
    expect(checkClientCertificate(callWith(der('server')))).toEqual({ error: expect.stringMatching(/clientAuth/) });
  });
});
