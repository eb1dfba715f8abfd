/**
 * `quiclb config-server` as a real process: starts fast and logs one "listening" line with the bound address,
 * serves the YAML files' load balancers, pushes a new version when a file changes, keeps the last good load
 * balancer when a file becomes invalid, serves /metrics, stops cleanly on SIGTERM, and a restarted process's
 * version is newer than anything the previous one sent. An invalid file at start exits with status 2.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { snapshotFromWire } from '../../proto/convert.js';
import { repoRoot, runCli } from '../helpers/run-cli.js';
import { TestCa, type TlsDir } from '../helpers/tls.js';
import { keyForms, sleep, TestDataPlane, TEST_KEYS } from './helpers.js';

interface Proc {
  child: ChildProcess;
  lines: string[];
  stderr: string[];
  exited: Promise<number | null>;
}

let ca: TestCa;
let serverTls: TlsDir;
let clientTls: TlsDir;
let dir: string;
const procs: Proc[] = [];
const open: TestDataPlane[] = [];

function yaml(name: string, port: number, weight: number, keyIndex = 0): string {
  return `name: ${name}
listen: ["127.0.0.1:${port}"]
loadbalancer:
  server_id_length: 2
  nonce_length: 6
  encryption_key: "${TEST_KEYS[keyIndex].toString('base64')}"
servers:
  - id: ${name}-1
    address: "127.0.0.1:${port + 1000}"
    weight: ${weight}
  - id: ${name}-2
    address: "127.0.0.1:${port + 1001}"
`;
}

function start(args: string[]): Proc {
  const child = spawn(process.execPath, ['--import', 'tsx', 'cli/main.ts', 'config-server', ...args], {
    cwd: repoRoot,
    env: { ...process.env, NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const p: Proc = { child, lines: [], stderr: [], exited: new Promise((r) => child.on('exit', (code) => r(code))) };
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString('utf8');
    const parts = buf.split('\n');
    buf = parts.pop()!;
    p.lines.push(...parts.filter((l) => l.length > 0));
  });
  child.stderr!.on('data', (d: Buffer) => p.stderr.push(d.toString('utf8')));
  procs.push(p);
  return p;
}

async function waitForLine(p: Proc, msg: string, timeoutMs = 20_000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = p.lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === msg);
    if (line) return line;
    if (Date.now() > deadline) throw new Error(`no "${msg}" line within ${timeoutMs} ms; stdout: ${p.lines.join('\n')}; stderr: ${p.stderr.join('')}`);
    await sleep(25);
  }
}

function args(files: string[], extra: string[] = []): string[] {
  return ['--listen', '127.0.0.1:0', '--tls-dir', serverTls.dir, ...files.flatMap((f) => ['--load-balancer', f]), ...extra];
}

beforeAll(() => {
  ca = new TestCa();
  serverTls = ca.issue({ cn: 'quiclb-operator', usage: 'server' });
  clientTls = ca.issue({ cn: 'dp-cli', usage: 'client' });
  dir = mkdtempSync(join(tmpdir(), 'quiclb-config-server-'));
});

afterAll(async () => {
  for (const c of open) c.close();
  for (const p of procs) if (p.child.exitCode === null && p.child.pid) process.kill(p.child.pid, 'SIGKILL');
  ca.remove();
  rmSync(dir, { recursive: true, force: true });
});

describe('quiclb config-server', () => {
  it('serves the files, follows changes with last-good semantics, stops on SIGTERM, restarts with a newer version', async () => {
    const web = join(dir, 'web.yaml');
    const api = join(dir, 'api.yaml');
    writeFileSync(web, yaml('web', 14433, 100));
    writeFileSync(api, yaml('api', 14533, 50, 1));
    const t0 = Date.now();
    const p = start(args([web, api], ['--metrics-port', '0', '--log-level', 'debug']));
    const listening = await waitForLine(p, 'config server listening');
    expect(Date.now() - t0).toBeLessThan(15_000); // about 0.7 s from source with tsx on this machine
    expect(listening.address).toMatch(/^127\.0\.0\.1:\d+$/);
    const port = Number(String(listening.address).split(':')[1]);
    expect(p.lines.filter((l) => JSON.parse(l).level >= 30)).toHaveLength(1); // one line at info and above

    const dp = TestDataPlane.withTls(`localhost:${port}`, clientTls);
    open.push(dp);
    dp.autoAck = true;
    dp.hello();
    await dp.waitFor(() => dp.snapshots.length === 1);
    const v1 = snapshotFromWire(dp.last!);
    expect(v1.loadBalancers.map((lb) => lb.name)).toEqual(['web', 'api']);
    expect(v1.version).toBeGreaterThanOrEqual(t0);

    // A change: a new version.
    writeFileSync(web, yaml('web', 14433, 7));
    await dp.waitFor(() => dp.snapshots.length === 2, 10_000, 'the changed file');
    const v2 = snapshotFromWire(dp.last!);
    expect(v2.version).toBeGreaterThan(v1.version);
    expect(v2.loadBalancers[0].servers[0].weight).toBe(7);

    // An invalid file: no new version, the last good load balancer stays, the error names file and field.
    writeFileSync(web, yaml('web', 14433, 7).replace('127.0.0.1:15433', 'not-an-address:1'));
    const warning = await waitForLine(p, 'invalid load balancer file: keeping its last good config', 10_000);
    expect(warning).toMatchObject({ file: web, field: 'servers[0].address' });
    // Two load balancers on one listen address: the set is refused as a whole.
    writeFileSync(web, yaml('web', 14533, 7));
    const conflict = await waitForLine(p, 'load balancer files conflict: keeping the last good set', 10_000);
    expect(String(conflict.err)).toContain(api);
    await sleep(300);
    expect(dp.snapshots).toHaveLength(2);

    const metricsText = await (await fetch(`http://${listening.metricsAddress}/metrics`)).text();
    expect(metricsText).toMatch(new RegExp(`^quiclb_config_server_snapshot_version ${v2.version}$`, 'm'));
    expect(metricsText).toMatch(/^quiclb_config_server_connected_data_planes 1$/m);
    // every metric name starts with quiclb_ (process and Node.js metrics included)
    expect(metricsText.split('\n').filter((l) => l !== '' && !/^(# (HELP|TYPE) )?quiclb_/.test(l))).toEqual([]);

    // SIGTERM: the stream ends, the process exits 0 promptly.
    const tStop = Date.now();
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
    expect(Date.now() - tStop).toBeLessThan(3000);
    expect((await dp.waitForEnd()).code).toBe(status.UNAVAILABLE);

    // No key bytes in any line, even at debug level.
    const out = p.lines.join('\n') + p.stderr.join('');
    for (const key of TEST_KEYS) for (const form of keyForms(key)) expect(out).not.toContain(form);

    // Restarted (the web file fixed): its first version is newer than anything the first process sent.
    writeFileSync(web, yaml('web', 14433, 8));
    const p2 = start(args([web, api]));
    const again = await waitForLine(p2, 'config server listening');
    const dp2 = TestDataPlane.withTls(`localhost:${String(again.address).split(':')[1]}`, clientTls);
    open.push(dp2);
    dp2.hello();
    await dp2.waitFor(() => dp2.snapshots.length === 1);
    expect(Number(dp2.last!.version)).toBeGreaterThan(v2.version);
    p2.child.kill('SIGTERM');
    expect(await p2.exited).toBe(0);
  }, 60_000);

  it('an invalid file at start: exit status 2 naming the file and field; --help lists every option', () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, yaml('bad', 16433, 100).replace('nonce_length: 6', 'nonce_length: 99'));
    const r = runCli(['config-server', ...args([bad])]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`${bad}: loadbalancer.nonce_length`);
    const help = runCli(['config-server', '--help']);
    expect(help.status).toBe(0);
    for (const o of ['--listen', '--tls-dir', '--load-balancer', '--metrics-port', '--log-level']) expect(help.stdout).toContain(o);
    expect(runCli(['config-server', '--listen', '127.0.0.1:0']).status).toBe(2);
  }, 30_000);
});
