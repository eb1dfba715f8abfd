/**
 * Logs at debug level, through a whole session (connect, pushes, ACK, NACK, reports, replacement, a refused
 * message, shutdown): the connect/ack/nack/disconnect lines carry identity, version and nonce, and no line holds
 * key bytes in any printable form.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { InMemorySnapshotSource } from '../../operator/config-server/source.js';
import { TestCa, type TlsDir } from '../helpers/tls.js';
import { keyForms, makeLoadBalancer, sleep, startServer, TestDataPlane, TEST_KEYS } from './helpers.js';

let ca: TestCa;
let serverTls: TlsDir;
let dpTls: TlsDir;

beforeAll(() => {
  ca = new TestCa();
  serverTls = ca.issue({ cn: 'quiclb-operator', usage: 'server' });
  dpTls = ca.issue({ cn: 'dp-logs', usage: 'client' });
});

afterAll(() => ca.remove());

describe('config server logs', () => {
  it('name identity, version and nonce, and never contain key bytes (debug level)', async () => {
    const source = new InMemorySnapshotSource();
    const { server, address, lines } = await startServer(source, serverTls, { answerTimeoutMs: 200 });
    const v1 = source.publish({ all: [makeLoadBalancer('web', { keyIndex: 0 })] });
    const dp = TestDataPlane.withTls(address, dpTls);
    dp.hello('node-logs');
    const s1 = await dp.waitForVersion(v1);
    dp.nack(s1, 'load_balancers[0].configs[0].key', 'must be 16 octets (or empty for plaintext), got 15');
    const v2 = source.publish({ all: [makeLoadBalancer('web', { keyIndex: 1 }), makeLoadBalancer('api', { keyIndex: 0, port: 5000 })] });
    const s2 = await dp.waitForVersion(v2);
    dp.ack(s2);
    await server.waitForAck(v2, 2000);
    dp.send({ message: { $case: 'counters', counters: { time: new Date(), processStartTime: new Date(), loadBalancers: [] } } });
    const replacement = TestDataPlane.withTls(address, dpTls);
    replacement.hello('node-logs');
    await replacement.waitForVersion(v2);
    replacement.send({ message: { $case: 'hello', hello: { nodeName: 'x'.repeat(300), podName: '', softwareVersion: '', capabilities: [], currentVersion: 0n, processStartTime: undefined } } });
    await replacement.waitForEnd();
    await sleep(100);
    dp.close();
    replacement.close();
    await server.close(200);

    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const byMsg = (msg: string) => parsed.filter((l) => l.msg === msg);
    expect(byMsg('data plane connected')[0]).toMatchObject({ level: 30, identity: 'dp-logs@node-logs', certificate: 'dp-logs', node: 'node-logs' });
    expect(byMsg('pushing snapshot')[0]).toMatchObject({ level: 20, identity: 'dp-logs@node-logs', version: v1, nonce: s1.nonce });
    expect(byMsg('snapshot rejected by data plane')[0]).toMatchObject({ level: 40, identity: 'dp-logs@node-logs', version: v1, nonce: s1.nonce, field: 'load_balancers[0].configs[0].key' });
    expect(byMsg('snapshot acknowledged')[0]).toMatchObject({ level: 30, identity: 'dp-logs@node-logs', version: v2, nonce: s2.nonce });
    expect(byMsg('data plane disconnected').length).toBeGreaterThanOrEqual(1);
    expect(byMsg('closing config stream').map((l) => l.reason)).toContain('hello.node_name: at most 253 characters, got 300');

    const all = lines.join('\n');
    for (const key of TEST_KEYS) for (const form of keyForms(key)) expect(all).not.toContain(form);
    expect(lines.length).toBeGreaterThan(8);
  });
});
