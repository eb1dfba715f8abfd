/**
 * The admin API from the command line, end to end: a real `quiclb standalone --admin` process and the real
 * `quiclb admin` CLI spawned against it (real mTLS on loopback, real datagrams).
 */
import { describe, expect, it, beforeAll, afterAll } from '@jest/globals';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CidEncoder } from '../../lib/index.js';
import { keyFingerprint } from '../../lib/config/key-fingerprint.js';
import { TestCa, type TlsDir } from '../helpers/tls.js';
import { repoRoot } from '../helpers/run-cli.js';
import { Client, config, KEY, KEY_B64, shortPacket, TaggingBackend, waitFor } from '../dataplane/helpers.js';
import { leakedKeys } from './helpers.js';

interface Proc {
  child: ChildProcess;
  out: string[];
}

let dir: string;
let ca: TestCa;
let serverTls: TlsDir;
let writer: TlsDir;
let reader: TlsDir;
let backends: TaggingBackend[];
let udp: Client;
let lb: Proc;
let adminPort: number;
let listenPort: number;
const procs: Proc[] = [];

const yaml = (servers: string[], admin = true) => `name: cli-admin
listen: ["127.0.0.1:0"]
loadbalancer: { server_id_length: 2, nonce_length: 6, encryption_key: "${KEY_B64}" }
servers:
${servers.join('\n')}
monitoring: { prometheus_port: null, health_check: { enabled: false } }
${admin ? 'admin: { clients: [ { name: ops-alice, role: writer }, { name: grafana, role: reader } ] }' : ''}
`;
const srv = (name: string, sid: string, i: number) => `  - { id: ${name}, address: "127.0.0.1:${backends[i].port}", server_id: "${sid}" }`;

function startLb(args: string[]): Proc {
  const child = spawn(process.execPath, ['--import', 'tsx', 'cli/main.ts', 'standalone', ...args], { cwd: repoRoot, env: { ...process.env, NODE_OPTIONS: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const p: Proc = { child, out: [] };
  child.stdout!.on('data', (d: Buffer) => p.out.push(d.toString()));
  child.stderr!.on('data', (d: Buffer) => p.out.push(d.toString()));
  procs.push(p);
  return p;
}

/** Runs `quiclb admin ...` (the real CLI in a child process). */
function admin(args: string[], input?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, ['--import', 'tsx', 'cli/main.ts', 'admin', ...args], { cwd: repoRoot, timeout: 30_000, env: { ...process.env, NODE_OPTIONS: '' } }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
    );
    child.stdin!.end(input ?? '');
  });
}

const as = (tls: TlsDir) => ['--server', `localhost:${adminPort}`, '--tls-dir', tls.dir];
const route = (sid: string) => udp.request(shortPacket(new CidEncoder(config(), Buffer.from(sid, 'hex')).next()), listenPort);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'quiclb-admin-cli-'));
  ca = new TestCa();
  serverTls = ca.issue({ cn: 'quiclb-admin', usage: 'server' });
  writer = ca.issue({ cn: 'ops-alice', usage: 'client' });
  reader = ca.issue({ cn: 'grafana', usage: 'client' });
  backends = await Promise.all(['a', 'b', 'c'].map((n) => TaggingBackend.start(n)));
  udp = await Client.open();
  writeFileSync(join(dir, 'lb.yaml'), yaml([srv('a', '0001', 0), srv('b', '0002', 1)]));
  lb = startLb(['--config', join(dir, 'lb.yaml'), '--admin', '127.0.0.1:0', '--tls-dir', serverTls.dir, '--log-level', 'debug']);
  const ready = () => /"msg":"quiclb standalone running"/.test(lb.out.join(''));
  if (!(await waitFor(() => ready() || lb.child.exitCode !== null, 20_000, 50)) || !ready()) throw new Error(`the load balancer did not start:\n${lb.out.join('')}`);
  const log = lb.out.join('');
  adminPort = Number(/"address":"127\.0\.0\.1:(\d+)","clients":2,"msg":"admin API/.exec(log)![1]);
  listenPort = Number(/"listen":\["127\.0\.0\.1:(\d+)"\],"workers":\d+,"servers":\[/.exec(log)![1]);
}, 60_000);

afterAll(async () => {
  for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
  await udp?.close();
  for (const b of backends ?? []) await b.close();
  ca?.remove();
  rmSync(dir, { recursive: true, force: true });
});

describe('quiclb admin (CLI) against quiclb standalone --admin (processes)', () => {
  it('get: readable by default, --json for scripts', async () => {
    expect(await route('0001')).toBe('a');
    const text = await admin(['get', ...as(reader)]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^cli-admin: version 1, loaded \d{4}-/);
    expect(text.stdout).toMatch(new RegExp(`listen: 127\\.0\\.0\\.1:${listenPort}`));
    expect(text.stdout).toMatch(new RegExp(`^  0 +active +2 +6 +${keyFingerprint(KEY)}`, 'm'));
    expect(text.stdout).toMatch(new RegExp(`^  a +127\\.0\\.0\\.1:${backends[0].port} +0001 +100 +active +unknown`, 'm'));
    expect(text.stdout).toMatch(/^rotation: disabled$/m);
    const json = await admin(['get', ...as(reader), '--json']);
    expect(json.code).toBe(0);
    const r = JSON.parse(json.stdout) as Record<string, unknown>;
    expect(r).toMatchObject({ version: 1, name: 'cli-admin', listen: [`127.0.0.1:${listenPort}`], routing: 'quic-lb', config_path: join(dir, 'lb.yaml') });
    expect(r.configs).toEqual([{ config_id: 0, state: 'active', server_id_length: 2, nonce_length: 6, encrypted: true, key_fingerprint: keyFingerprint(KEY), length_self_encoded: false, extra_length: 0 }]);
    expect(r.rotation).toMatchObject({ enabled: false, interval: '86400s', drain: '300s', promote_after: '5s' });
    expect(leakedKeys(text.stdout + json.stdout, [KEY])).toEqual([]);
  });

  it('update --file: applies (a datagram reaches the moved server); update - reads stdin; refusals exit 1 with the server message', async () => {
    const file = join(dir, 'next.yaml');
    writeFileSync(file, yaml([srv('a', '0001', 2), srv('b', '0002', 1)]));
    const dry = await admin(['update', ...as(writer), '--file', file, '--dry-run']);
    expect([dry.code, dry.stdout]).toEqual([0, 'valid (dry run: nothing changed); version in force 1\n']);
    expect(await route('0001')).toBe('a');
    const stale = await admin(['update', ...as(writer), '--file', file, '--expected-version', '7']);
    expect(stale.code).toBe(1);
    expect(stale.stderr).toMatch(/^quiclb admin update: ABORTED: the version in force is 1, not the expected 7/);
    const ok = await admin(['update', ...as(writer), '--file', file, '--expected-version', '1']);
    expect([ok.code, ok.stdout]).toEqual([0, 'applied: version 2\n']);
    expect(await route('0001')).toBe('c');
    expect(readFileSync(join(dir, 'lb.yaml'), 'utf8')).toBe(readFileSync(file, 'utf8'));

    const bad = await admin(['update', ...as(writer), '-'], yaml([srv('a', '0001', 2), srv('a', '0002', 1)]));
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^quiclb admin update: INVALID_ARGUMENT: servers\[1\]\.id: "a" is also the id of servers\[0\]/);
    const denied = await admin(['update', ...as(reader), '--file', file, '--json']);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/PERMISSION_DENIED: UpdateConfig needs the writer role; "grafana" is a reader/);
    expect(await route('0001')).toBe('c');
  });

  it('rotate: FAILED_PRECONDITION when rotation is disabled (exit 1)', async () => {
    const r = await admin(['rotate', ...as(writer)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/FAILED_PRECONDITION: key rotation is disabled/);
  });

  it('an unreachable server exits 1 saying so', async () => {
    const r = await admin(['get', '--server', 'localhost:1', '--tls-dir', writer.dir, '--timeout', '3']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^quiclb admin get: cannot reach the admin API: (UNAVAILABLE|DEADLINE_EXCEEDED): /);
  });

  it('invalid input exits 2; --help lists every option', async () => {
    const help = await admin(['--help']);
    expect(help.code).toBe(0);
    for (const o of ['get', 'update', 'rotate', '--server', '--tls-dir', '--file', '--expected-version', '--dry-run', '--json', '--timeout']) expect(help.stdout).toContain(o);
    const cases: [string[], RegExp][] = [
      [[], /a subcommand is required/],
      [['frob', ...as(writer)], /unknown subcommand "frob"/],
      [['get', '--tls-dir', writer.dir], /--server HOST:PORT is required/],
      [['get', '--server', 'localhost', '--tls-dir', writer.dir], /--server: expected HOST:PORT/],
      [['get', '--server', `localhost:${adminPort}`], /--tls-dir DIR is required/],
      [['get', '--server', `localhost:${adminPort}`, '--tls-dir', dir], /ca\.crt is missing/],
      [['update', ...as(writer)], /update needs the new YAML/],
      [['update', ...as(writer), '--file', join(dir, 'nope.yaml')], /--file: cannot read .*nope\.yaml: ENOENT/],
      [['update', ...as(writer), '--file', '-', '--expected-version', 'x'], /--expected-version: expected a version number/],
      [['get', ...as(writer), '--dry-run'], /--file, --expected-version and --dry-run go with update/],
      [['get', ...as(writer), '--bogus'], /Unknown option '--bogus'/],
      [['get', ...as(writer), '--timeout', '0'], /--timeout: expected seconds/],
    ];
    for (const [args, message] of cases) {
      const r = await admin(args);
      expect([args, r.code]).toEqual([args, 2]);
      expect(r.stderr).toMatch(message);
    }
  }, 60_000);

  it('quiclb standalone: --admin without --tls-dir, with a TLS directory lacking files, or without admin.clients in the config, exits 2', async () => {
    const noClients = join(dir, 'no-clients.yaml');
    writeFileSync(noClients, yaml([srv('a', '0001', 0)], false));
    const a = startLb(['--config', noClients, '--admin', '127.0.0.1:0']);
    const b = startLb(['--config', noClients, '--admin', '127.0.0.1:0', '--tls-dir', serverTls.dir]);
    const c = startLb(['--config', noClients, '--admin', 'localhost:9443', '--tls-dir', serverTls.dir]);
    const d = startLb(['--config', join(dir, 'lb.yaml'), '--admin', '127.0.0.1:0', '--tls-dir', join(dir, 'no-such-dir')]);
    for (const p of [a, b, c, d]) await waitFor(() => p.child.exitCode !== null, 20_000, 50);
    expect([d.child.exitCode, d.out.join('')]).toEqual([2, expect.stringMatching(/--tls-dir: TLS directory .*no-such-dir: CA certificate .*ca\.crt is missing/)]);
    expect([a.child.exitCode, a.out.join('')]).toEqual([2, expect.stringMatching(/--admin ADDR and --tls-dir DIR go together/)]);
    expect([b.child.exitCode, b.out.join('')]).toEqual([2, expect.stringMatching(/admin\.clients: is empty: --admin needs the client certificate names/)]);
    expect([c.child.exitCode, c.out.join('')]).toEqual([2, expect.stringMatching(/--admin: host must be an IPv4 or IPv6 address/)]);
  }, 60_000);

  it('workers: 2: get, update (both workers route to the moved server), rotate refused', async () => {
    const path = join(dir, 'workers.yaml');
    writeFileSync(path, yaml([srv('a', '0001', 0), srv('b', '0002', 1)]).replace('name: cli-admin', 'name: cli-admin-workers\nworkers: 2'));
    const p = startLb(['--config', path, '--admin', '127.0.0.1:0', '--tls-dir', serverTls.dir]);
    const ready = () => /"msg":"quiclb standalone running"/.test(p.out.join(''));
    if (!(await waitFor(() => ready() || p.child.exitCode !== null, 30_000, 50)) || !ready()) throw new Error(`did not start:\n${p.out.join('')}`);
    const log = p.out.join('');
    const port = Number(/"address":"127\.0\.0\.1:(\d+)","clients":2,"msg":"admin API/.exec(log)![1]);
    const lbPort = Number(/"listen":\["127\.0\.0\.1:(\d+)"\],"workers":2,"servers":\[/.exec(log)![1]);
    const conn = ['--server', `localhost:${port}`, '--tls-dir', writer.dir];
    const g = await admin(['get', ...conn, '--json']);
    expect(g.code).toBe(0);
    expect(JSON.parse(g.stdout)).toMatchObject({ name: 'cli-admin-workers', listen: [`127.0.0.1:${lbPort}`] });
    writeFileSync(join(dir, 'workers-next.yaml'), readFileSync(path, 'utf8').replace(`127.0.0.1:${backends[0].port}`, `127.0.0.1:${backends[2].port}`));
    const u = await admin(['update', ...conn, '--file', join(dir, 'workers-next.yaml'), '--expected-version', '1']);
    expect([u.code, u.stdout, u.stderr]).toEqual([0, 'applied: version 2\n', '']);
    // many client ports: the kernel spreads the flows over both workers, all must follow the move
    const clientsNow = await Promise.all(Array.from({ length: 8 }, () => Client.open()));
    try {
      for (const c of clientsNow) expect(await c.request(shortPacket(new CidEncoder(config(), Buffer.from('0001', 'hex')).next()), lbPort)).toBe('c');
    } finally {
      for (const c of clientsNow) await c.close();
    }
    expect((await admin(['rotate', ...conn])).code).toBe(1);
    p.child.kill('SIGTERM');
    await waitFor(() => p.child.exitCode !== null, 10_000, 50);
  }, 60_000);

  it('the debug-level log of the load balancer process holds no key bytes and one audit line per call', async () => {
    lb.child.kill('SIGTERM');
    await waitFor(() => lb.child.exitCode !== null, 10_000, 50);
    const log = lb.out.join('');
    expect(leakedKeys(log, [KEY])).toEqual([]);
    const audits = log.split('\n').filter((l) => l.includes('"audit":true')).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(audits.map((a) => `${String(a.caller)} ${String(a.method)} ${String(a.code)}`)).toEqual([
      'grafana GetConfig OK',
      'grafana GetConfig OK',
      'ops-alice UpdateConfig OK',
      'ops-alice UpdateConfig ABORTED',
      'ops-alice UpdateConfig OK',
      'ops-alice UpdateConfig INVALID_ARGUMENT',
      'grafana UpdateConfig PERMISSION_DENIED',
      'ops-alice RotateKeys FAILED_PRECONDITION',
    ]);
  });
});
