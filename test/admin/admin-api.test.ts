/**
 * The standalone admin API end to end in-process: runStandalone with --admin over real mTLS on loopback (TestCa
 * certificates), real UDP backends and datagrams. Tests run in order and share one load balancer.
 */
import { describe, expect, it, beforeAll, afterAll } from '@jest/globals';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { CidEncoder } from '../../lib/index.js';
import { keyFingerprint } from '../../lib/config/key-fingerprint.js';
import { GetConfigResponse } from '../../proto/gen/quiclb/v1/admin.js';
import { runStandalone, type StandaloneHandle } from '../../dataplane/standalone.js';
import { TestCa, type TlsDir } from '../helpers/tls.js';
import { Client, config, KEY, KEY_B64, shortPacket, TaggingBackend } from '../dataplane/helpers.js';
import { adminClient, auditLines, capturingLogger, leakedKeys, refused, type AdminClient } from './helpers.js';

let dir: string;
let path: string;
let ca: TestCa;
let otherCa: TestCa;
let serverTls: TlsDir;
let alice: AdminClient; // writer
let grafana: AdminClient; // reader
let backends: TaggingBackend[];
let udp: Client;
let h: StandaloneHandle;
const handles: StandaloneHandle[] = [];
const clients: AdminClient[] = [];
const { logger, lines } = capturingLogger();
/** Every key this run used (the YAML's, the rotation's): none may appear in a response or a log line. */
const keys: Buffer[] = [KEY];

const yaml = (servers: string[], o: { writers?: string[]; extra?: string } = {}) => `name: admin-it
listen: ["127.0.0.1:0"]
loadbalancer:
  server_id_length: 2
  nonce_length: 6
  encryption_key: "${KEY_B64}"
  config_rotation: { enabled: true, interval: 24h, promote_after: 1h, drain: 2h }
servers:
${servers.join('\n')}
flows: { max: 1000, idle_timeout: 30s }
monitoring:
  prometheus_port: null
  health_check: { enabled: false }
admin:
  clients:
    - { name: ops-alice, role: writer }
    - { name: grafana, role: ${o.writers?.includes('grafana') ? 'writer' : 'reader'} }
${o.extra ?? ''}`;
const srv = (name: string, sid: string, i: number) => `  - { id: ${name}, address: "127.0.0.1:${backends[i].port}", server_id: "${sid}" }`;
const cid = (sid: string) => new CidEncoder(config(), Buffer.from(sid, 'hex')).next();
const routeOf = (handle: StandaloneHandle, sid: string) => udp.request(shortPacket(cid(sid)), handle.addresses()[0].port);
const client = (tls: TlsDir, handle = h) => {
  const c = adminClient(handle.adminAddress()!.port, tls.dir);
  clients.push(c);
  return c;
};
const lastAudit = () => auditLines(lines).at(-1)!;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'quiclb-admin-'));
  ca = new TestCa();
  otherCa = new TestCa('other-ca');
  serverTls = ca.issue({ cn: 'quiclb-admin', usage: 'server' });
  backends = await Promise.all(['a', 'b', 'c'].map((n) => TaggingBackend.start(n)));
  udp = await Client.open();
  path = join(dir, 'lb.yaml');
  writeFileSync(path, yaml([srv('a', '0001', 0), srv('b', '0002', 1)]));
  chmodSync(path, 0o640);
  h = await runStandalone({ configPath: path, logger, handleSignals: false, admin: { address: { host: '127.0.0.1', port: 0, family: 4 }, tlsDir: serverTls.dir } });
  handles.push(h);
  alice = client(ca.issue({ cn: 'ops-alice', usage: 'client' }));
  grafana = client(ca.issue({ cn: 'grafana', usage: 'client' }));
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.close();
  for (const x of handles) await x.stop();
  await udp?.close();
  for (const b of backends ?? []) await b.close();
  ca?.remove();
  otherCa?.remove();
  rmSync(dir, { recursive: true, force: true });
});

describe('admin API (standalone, mTLS)', () => {
  it('GetConfig (reader): version, name, path, bound listen address, configs by fingerprint, servers, rotation; no key bytes', async () => {
    expect(await routeOf(h, '0001')).toBe('a');
    const r = await grafana.get();
    expect(r.version).toBe(BigInt(h.control.version()));
    expect(r.name).toBe('admin-it');
    expect(r.configPath).toBe(path);
    expect(r.listen).toEqual([`127.0.0.1:${h.addresses()[0].port}`]);
    expect(r.routing).toBe('quic-lb');
    expect(r.configs).toEqual([
      { configId: 0, state: 'active', serverIdLength: 2, nonceLength: 6, encrypted: true, keyFingerprint: keyFingerprint(KEY), lengthSelfEncoded: false, extraLength: 0 },
    ]);
    expect(r.configs[0].keyFingerprint).toMatch(/^sha256:[0-9a-f]{16}$/);
    expect(r.servers).toEqual([
      { name: 'a', address: `127.0.0.1:${backends[0].port}`, serverId: '0001', weight: 100, state: 'active', health: 'unknown' },
      { name: 'b', address: `127.0.0.1:${backends[1].port}`, serverId: '0002', weight: 100, state: 'active', health: 'unknown' },
    ]);
    expect(r.rotation).toMatchObject({ enabled: true, interval: { seconds: 86_400n, nanos: 0 }, promoteAfter: { seconds: 3600n, nanos: 0 }, drain: { seconds: 7200n, nanos: 0 } });
    expect(r.loadedAt).toBeInstanceOf(Date);
    expect(leakedKeys(Buffer.from(GetConfigResponse.encode(r).finish()), keys)).toEqual([]);
    expect(lastAudit()).toMatchObject({ audit: true, caller: 'grafana', method: 'GetConfig', code: 'OK', outcome: 'ok' });
  });

  it('a reader calling UpdateConfig or RotateKeys is denied and audited; nothing changes', async () => {
    const before = readFileSync(path, 'utf8');
    const v = h.control.version();
    const e = await refused(grafana.update({ configYaml: yaml([srv('a', '0001', 2), srv('b', '0002', 1)]) }));
    expect(e.code).toBe(status.PERMISSION_DENIED);
    expect(e.details).toMatch(/UpdateConfig needs the writer role; "grafana" is a reader/);
    expect(lastAudit()).toMatchObject({ caller: 'grafana', method: 'UpdateConfig', code: 'PERMISSION_DENIED', outcome: 'denied', version_before: v, version_after: v });
    expect(lastAudit().yaml_sha256).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect((await refused(grafana.rotate())).code).toBe(status.PERMISSION_DENIED);
    expect(lastAudit()).toMatchObject({ caller: 'grafana', method: 'RotateKeys', code: 'PERMISSION_DENIED' });
    expect(readFileSync(path, 'utf8')).toBe(before);
    expect(h.control.version()).toBe(v);
    expect(await routeOf(h, '0001')).toBe('a');
  });

  it('an identity not in admin.clients is denied (PERMISSION_DENIED, audited); a server certificate used as a client, or one from another CA, never gets a handshake', async () => {
    const mallory = client(ca.issue({ cn: 'mallory', usage: 'client' }));
    const e = await refused(mallory.get());
    expect(e.code).toBe(status.PERMISSION_DENIED);
    expect(e.details).toMatch(/"mallory" is not listed in admin.clients/);
    expect(lastAudit()).toMatchObject({ caller: 'mallory', method: 'GetConfig', code: 'PERMISSION_DENIED', outcome: 'denied' });
    // refused in the TLS handshake, so no call reaches the service: a server certificate (no clientAuth usage)
    // carrying a writer's name, and another CA's client certificate
    const audits = auditLines(lines).length;
    const impostor = client(ca.issue({ cn: 'ops-alice', usage: 'server' }));
    expect((await refused(impostor.update({ configYaml: 'name: x' }))).code).toBe(status.UNAVAILABLE);
    const stranger = client(otherCa.issue({ cn: 'ops-alice', usage: 'client' }));
    expect((await refused(stranger.get())).code).toBe(status.UNAVAILABLE);
    expect(auditLines(lines).length).toBe(audits);
    expect(readFileSync(path, 'utf8')).not.toBe('name: x');
  });

  it('an invalid UpdateConfig (YAML syntax, a bad field, a duplicate server id, a missing key file) is INVALID_ARGUMENT naming the field; file and config in force untouched', async () => {
    const before = readFileSync(path, 'utf8');
    const v = h.control.version();
    const cases: [string, RegExp][] = [
      [yaml([srv('a', '0001', 2)]).replace('servers:\n', 'servers:\n  - { id: x, address: [\n'), /^yaml: line \d+, column \d+/],
      [yaml([srv('a', '0001', 2), srv('b', '0002', 1)]).replace('server_id: "0002"', 'server_id: "0002", wieght: 5'), /^servers\[1\]\.wieght: unknown field \(did you mean weight\?\)/],
      [yaml([srv('a', '0001', 2), srv('a', '0003', 1)]), /^servers\[1\]\.id: "a" is also the id of servers\[0\]/],
      [yaml([srv('a', '0001', 2)]).replace(`encryption_key: "${KEY_B64}"`, 'encryption_key_file: no-such.key'), /^loadbalancer\.encryption_key_file: cannot read .*no-such\.key: ENOENT/],
      [yaml([srv('a', '0001', 2)]).replace('role: writer', 'role: admin'), /^admin\.clients\[0\]\.role: must be one of reader, writer/],
      // a path this process writes (the rotation state) never comes from the network
      [yaml([srv('a', '0001', 2)]).replace('  nonce_length: 6\n', '  nonce_length: 6\n  state_file: elsewhere.json\n'), /^loadbalancer\.state_file: cannot be changed through the admin API/],
    ];
    for (const [text, message] of cases) {
      const e = await refused(alice.update({ configYaml: text }));
      expect(e.code).toBe(status.INVALID_ARGUMENT);
      expect(e.details).toMatch(message);
      expect(lastAudit()).toMatchObject({ caller: 'ops-alice', method: 'UpdateConfig', code: 'INVALID_ARGUMENT', outcome: 'failed', version_after: v });
    }
    const big = await refused(alice.update({ configYaml: `# ${'x'.repeat(1024 * 1024)}\n` }));
    expect(big.code).toBe(status.INVALID_ARGUMENT);
    expect(big.details).toMatch(/config_yaml: at most 1048576 bytes/);
    expect(readFileSync(path, 'utf8')).toBe(before);
    expect(existsSync(join(dir, 'elsewhere.json'))).toBe(false);
    expect(h.control.version()).toBe(v);
    expect(await routeOf(h, '0001')).toBe('a');
  });

  it('expected_version guards against lost updates (ABORTED); dry_run validates only', async () => {
    const before = readFileSync(path, 'utf8');
    const v = h.control.version();
    const next = yaml([srv('a', '0001', 2), srv('b', '0002', 1)]);
    const e = await refused(alice.update({ configYaml: next, expectedVersion: BigInt(v + 5) }));
    expect(e.code).toBe(status.ABORTED);
    expect(e.details).toMatch(new RegExp(`version in force is ${v}, not the expected ${v + 5}`));
    expect(await alice.update({ configYaml: next, expectedVersion: BigInt(v), dryRun: true })).toEqual({ version: BigInt(v), changed: false });
    expect(lastAudit()).toMatchObject({ method: 'UpdateConfig', code: 'OK' });
    expect(readFileSync(path, 'utf8')).toBe(before);
    expect(await routeOf(h, '0001')).toBe('a');
  });

  it('concurrent UpdateConfig calls with the same expected_version: exactly one applies, the others are ABORTED', async () => {
    const v = h.control.version();
    const texts = [0, 1, 2, 3].map((i) => yaml([srv('a', '0001', 0), srv('b', '0002', 1)], { extra: `# edit ${i}\n` }).replace('max: 1000', `max: ${1001 + i}`));
    const results = await Promise.allSettled(texts.map((t) => alice.update({ configYaml: t, expectedVersion: BigInt(v) })));
    const ok = results.filter((r) => r.status === 'fulfilled');
    expect(ok.length).toBe(1);
    expect(results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason.code)).toEqual([status.ABORTED, status.ABORTED, status.ABORTED]);
    expect(h.control.version()).toBe(v + 1);
    expect(texts).toContain(readFileSync(path, 'utf8'));
  });

  it('a valid UpdateConfig moves a server (a datagram reaches the new backend), writes the file atomically with its mode, and survives a restart', async () => {
    const v = h.control.version();
    const text = yaml([srv('a', '0001', 2), srv('b', '0002', 1)]);
    const r = await alice.update({ configYaml: text, expectedVersion: BigInt(v) });
    expect(r).toEqual({ version: BigInt(v + 1), changed: true });
    expect(lastAudit()).toMatchObject({ caller: 'ops-alice', method: 'UpdateConfig', code: 'OK', version_before: v, version_after: v + 1 });
    expect(await routeOf(h, '0001')).toBe('c');
    expect(await routeOf(h, '0002')).toBe('b');
    expect(readFileSync(path, 'utf8')).toBe(text);
    expect(statSync(path).mode & 0o777).toBe(0o640);
    expect((await grafana.get()).servers[0].address).toBe(`127.0.0.1:${backends[2].port}`);
    // the same text again: nothing changes
    expect(await alice.update({ configYaml: text })).toEqual({ version: BigInt(v + 1), changed: false });

    const again = await runStandalone({ configPath: path, logger, handleSignals: false, watch: false });
    handles.push(again);
    expect(await routeOf(again, '0001')).toBe('c');
    await again.stop();
  });

  it('a valid config that cannot be applied (listen address in use) is FAILED_PRECONDITION; the file is restored, the config in force kept', async () => {
    const before = readFileSync(path, 'utf8');
    const v = h.control.version();
    const text = yaml([srv('a', '0001', 0), srv('b', '0002', 1)]).replace('listen: ["127.0.0.1:0"]', `listen: ["127.0.0.1:${backends[2].port}"]`);
    const e = await refused(alice.update({ configYaml: text }));
    expect(e.code).toBe(status.FAILED_PRECONDITION);
    expect(e.details).toMatch(/could not be applied \(.*EADDRINUSE.*\); the config in force and the file are unchanged/);
    expect(readFileSync(path, 'utf8')).toBe(before);
    expect(h.control.version()).toBe(v);
    expect(await routeOf(h, '0001')).toBe('c');
  });

  it('roles follow the config in force: an UpdateConfig that makes grafana a writer lets it write; a file reload that makes it a reader again denies', async () => {
    const text = yaml([srv('a', '0001', 2), srv('b', '0002', 1)], { writers: ['grafana'] });
    expect((await refused(grafana.update({ configYaml: text, dryRun: true }))).code).toBe(status.PERMISSION_DENIED);
    const r = await alice.update({ configYaml: text });
    expect(r.changed).toBe(true); // roles changed, the data plane's snapshot did not
    expect(await grafana.update({ configYaml: text, dryRun: true })).toMatchObject({ changed: false });
    // a reload of the file changes roles just the same
    writeFileSync(path, yaml([srv('a', '0001', 2), srv('b', '0002', 1)]));
    expect(await h.reload('test')).toBe(true);
    expect((await refused(grafana.update({ configYaml: text, dryRun: true }))).code).toBe(status.PERMISSION_DENIED);
  });

  it('RotateKeys starts a rotation: a new accepting config in GetConfig, phases at +promote_after and +promote_after+drain; a second one is FAILED_PRECONDITION', async () => {
    const v = h.control.version();
    const t0 = Date.now();
    const r = await alice.rotate();
    expect(r.newConfigId).toBe(1);
    expect(r.previousConfigId).toBe(0);
    expect(r.version).toBe(BigInt(v + 1));
    expect(r.phases.map((p) => p.name)).toEqual(['accepting', 'active', 'retired']);
    const [accepting, active, retired] = r.phases.map((p) => p.at!.getTime());
    expect(accepting).toBeGreaterThanOrEqual(t0 - 5);
    expect(active - accepting).toBe(3_600_000);
    expect(retired - active).toBe(7_200_000);
    expect(lastAudit()).toMatchObject({ caller: 'ops-alice', method: 'RotateKeys', code: 'OK', version_before: v, version_after: v + 1 });

    const state = JSON.parse(readFileSync(`${path}.state.json`, 'utf8')) as { configs: { config_id: number; key: string; state: string }[] };
    const fresh = state.configs.find((c) => c.config_id === 1)!;
    expect(fresh.state).toBe('accepting');
    keys.push(Buffer.from(fresh.key, 'base64'));
    expect(r.newKeyFingerprint).toBe(keyFingerprint(Buffer.from(fresh.key, 'base64')));

    const g = await grafana.get();
    expect(g.version).toBe(r.version);
    expect(g.configs.map((c) => [c.configId, c.state, c.keyFingerprint])).toEqual([
      [0, 'active', keyFingerprint(KEY)],
      [1, 'accepting', r.newKeyFingerprint],
    ]);
    expect(g.rotation?.lastRotation?.getTime()).toBe(accepting);
    expect(leakedKeys(Buffer.from(GetConfigResponse.encode(g).finish()), keys)).toEqual([]);
    // the load balancer decodes the new config already: a CID minted with it routes
    const next = new CidEncoder(config(1, keys[1]), Buffer.from('0002', 'hex')).next();
    expect(await udp.request(shortPacket(next), h.addresses()[0].port)).toBe('b');

    const e = await refused(alice.rotate());
    expect(e.code).toBe(status.FAILED_PRECONDITION);
    expect(e.details).toMatch(/config 1 is still accepting \(it becomes active at /);
    expect(lastAudit()).toMatchObject({ method: 'RotateKeys', code: 'FAILED_PRECONDITION', outcome: 'failed' });
  });

  it('RotateKeys with rotation disabled is FAILED_PRECONDITION', async () => {
    const text = yaml([srv('a', '0001', 2), srv('b', '0002', 1)]).replace('enabled: true, ', 'enabled: false, ');
    expect((await alice.update({ configYaml: text })).changed).toBe(true);
    const e = await refused(alice.rotate());
    expect(e.code).toBe(status.FAILED_PRECONDITION);
    expect(e.details).toMatch(/key rotation is disabled: set loadbalancer\.config_rotation\.enabled: true/);
  });

  it('at debug level, no log line of the whole run holds key bytes (hex or base64); audit lines never hold the YAML', () => {
    expect(lines.length).toBeGreaterThan(20);
    expect(keys.length).toBe(2);
    expect(leakedKeys(lines.join(''), keys)).toEqual([]);
    const audits = auditLines(lines);
    expect(audits.length).toBeGreaterThanOrEqual(20);
    for (const a of audits) expect(JSON.stringify(a)).not.toMatch(/server_id_length|servers:|127\.0\.0\.1:\d+"? *}/);
  });
});
