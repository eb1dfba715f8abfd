/**
 * Who may connect: a client without a certificate, with another CA's certificate, with an expired one, or with a
 * server-only (EKU serverAuth) certificate is refused and receives no message at all, while a proper client on the
 * same server gets its snapshot.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { status } from '@grpc/grpc-js';
import { InMemorySnapshotSource } from '../../operator/config-server/source.js';
import { TestCa, type TlsDir } from '../helpers/tls.js';
import { makeLoadBalancer, sleep, startServer, TestDataPlane, type StartedServer } from './helpers.js';

let ca: TestCa;
let otherCa: TestCa;
let started: StartedServer;
let version: number;
const open: TestDataPlane[] = [];

beforeAll(async () => {
  ca = new TestCa();
  otherCa = new TestCa('other-ca');
  const source = new InMemorySnapshotSource();
  version = source.publish({ all: [makeLoadBalancer('web')] });
  started = await startServer(source, ca.issue({ cn: 'quiclb-operator', usage: 'server' }));
});

afterAll(async () => {
  for (const c of open) c.close();
  await started.server.close(200);
  ca.remove();
  otherCa.remove();
});

/** Opens a stream, says Hello, and returns what happened within a second. */
async function attempt(dp: TestDataPlane) {
  open.push(dp);
  dp.hello('intruder');
  const end = await dp.waitForEnd(5000);
  await sleep(100);
  return { end, received: dp.snapshots.length };
}

function client(tls: TlsDir) {
  return TestDataPlane.withTls(started.address, tls);
}

describe('config server mTLS', () => {
  it('serves a client certificate of the configured CA', async () => {
    const dp = client(ca.issue({ cn: 'dp-good', usage: 'client' }));
    open.push(dp);
    dp.hello();
    await dp.waitForVersion(version);
  });

  it('refuses a client without a certificate: no handshake, nothing received', async () => {
    const r = await attempt(TestDataPlane.withoutCertificate(started.address, ca.caCert));
    expect(r.received).toBe(0);
    expect(r.end.code).toBe(status.UNAVAILABLE);
  });

  it("refuses another CA's client certificate", async () => {
    const foreign = otherCa.issue({ cn: 'dp-foreign', usage: 'client' });
    // It trusts our server (our CA) but presents a certificate of its own CA.
    const { writeFileSync } = await import('node:fs');
    writeFileSync(`${foreign.dir}/ca.crt`, ca.caCert);
    const r = await attempt(client(foreign));
    expect(r.received).toBe(0);
    expect(r.end.code).toBe(status.UNAVAILABLE);
  });

  it('refuses an expired client certificate', async () => {
    const r = await attempt(client(ca.issue({ cn: 'dp-expired', usage: 'client', expired: true })));
    expect(r.received).toBe(0);
    expect(r.end.code).toBe(status.UNAVAILABLE);
  });

  it('refuses a server-only certificate used as a client', async () => {
    const r = await attempt(client(ca.issue({ cn: 'dp-server-only', usage: 'server' })));
    expect(r.received).toBe(0);
    // OpenSSL already refuses it in the handshake (a TLS server verifies client certificates for the sslclient
    // purpose); checkClientCertificate()'s EKU check stands behind it.
    expect(r.end.code).toBe(status.UNAVAILABLE);
  });

  it('no refused identity appears among the data planes', () => {
    expect(started.server.dataPlanes().map((d) => d.identity)).toEqual(['dp-good@node-a']);
  });
});
