/**
 * The journey's network world (agent.ts) without Kubernetes: a `quiclb config-server` on the host serving a
 * standalone YAML (reached from the node namespaces through a host Unix socket, as the operator's would be), two
 * `quiclb dataplane` processes in two node namespaces, two backends in the pod network whose CID files the test
 * writes in the kubelet's layout, and real clients (gtlsclient, a migrating gtlsclient, @matrixai/quic) through each
 * node and through the ECMP relay (each client's handshake on one data plane, its 1-RTT datagrams moving between both
 * in runs, ecmp.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { connect, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatRotationState } from '../../lib/config/state-file.js';
import { makeConfig } from '../../lib/quiclb/config.js';
import { KubeletVolume } from '../backend/kubelet-volume.js';
import { freeTcpPort, writeStandaloneYaml } from '../e2e/peers/dataplane.js';
import { spawnNode, waitLine, type CliProc } from '../helpers/run-cli.js';
import { TestCa } from '../helpers/tls.js';
import { relayServer } from './lines.js';
import { JourneyWorld, type ClientRequest, type ClientResult } from './world.js';

const NODES = [
  { name: 'n1', ip: '172.30.0.11' },
  { name: 'n2', ip: '172.30.0.12' },
];
const BACKENDS = [
  { name: 'web-a', ip: '10.244.1.5', sid: '0a01' },
  { name: 'web-b', ip: '10.244.2.7', sid: '0a02' },
];
const PORT = 4433;
const RELAY_PORT = 15000;
const ECMP = { ip: '10.244.255.1', port: 4433 };
const BODY = 1_000_000;
const key = randomBytes(16);

const dir = mkdtempSync(join(tmpdir(), 'quiclb-journey-test-'));
let ca: TestCa;
let configServer: CliProc;
let socketRelay: Server;
let world: JourneyWorld;
const timings: string[] = [];
/** Server CIDs (hex) of the matrixai clients of the first test, with the backend that issued them. */
const servedCids: { cid: string; backend: string }[] = [];
const dataplanePids = new Map<string, number>();

function note(line: string): void {
  timings.push(line);
  process.stdout.write(`[journey world] ${line}\n`);
}

/** A Unix socket on the host piping to the config server's TCP port (how the node namespaces reach it). */
async function unixRelay(path: string, port: number): Promise<Server> {
  const server = relayServer(() => connect(port, '127.0.0.1'));
  server.listen(path);
  await once(server, 'listening');
  return server;
}

/** The volume the kubelet would mount into a backend pod: the configs Secret and the server-id downward-API file. */
function writeBackendVolume(path: string, sid: string): void {
  const now = Date.now();
  const config = makeConfig({ configId: 1, serverIdLength: 2, nonceLength: 17, key });
  new KubeletVolume(path).write({
    'configs.json': formatRotationState({ serverIdLength: 2, lastRotationAt: now, configs: [{ config, state: 'active', since: now }] }),
    'server-id': sid,
  });
}

function expectGood(r: ClientResult, what: string): void {
  const context = `${what}: ${JSON.stringify(r)}`;
  expect({ context, ok: r.ok, intact: r.intact }).toEqual({ context, ok: true, intact: true });
}

async function run(what: string, r: ClientRequest): Promise<ClientResult> {
  const res = await world.client(r);
  note(`${what}: ok=${res.ok} ${res.bytes} B in ${res.ms} ms, served by ${res.servedBy.join(',')}, migrated connections ${String(res.detail.migratedConnections)}`);
  return res;
}

beforeAll(async () => {
  const t0 = Date.now();
  ca = new TestCa();
  const serverTls = ca.issue({ cn: 'quiclb-operator', usage: 'server' });
  const yaml = join(dir, 'web.yaml');
  writeStandaloneYaml(yaml, {
    name: 'web',
    // hostNetwork: each data plane binds the port on every address of its node
    listen: [`0.0.0.0:${PORT}`],
    loadbalancer: { config_id: 1, server_id_length: 2, nonce_length: 17, encryption_key: key.toString('base64') },
    servers: BACKENDS.map((b) => ({ id: b.name, address: `${b.ip}:${PORT}`, server_id: b.sid })),
    healthCheck: { enabled: true, interval: '500ms', timeout: '300ms' },
    metricsPort: null,
  });
  const grpcPort = await freeTcpPort();
  configServer = spawnNode(['--import', 'tsx', 'cli/main.ts', 'config-server', '--listen', `127.0.0.1:${grpcPort}`, '--tls-dir', serverTls.dir, '--load-balancer', yaml]);
  await waitLine(configServer, /"msg":"config server listening"/, 30_000);
  const socketPath = join(dir, 'config-server.sock');
  socketRelay = await unixRelay(socketPath, grpcPort);

  world = await JourneyWorld.start();
  await world.setup({ podCidrRoutes: ['10.244.0.0/16'], nodes: NODES, configServerSocket: socketPath, relayPort: RELAY_PORT });
  const tWorld = Date.now();
  for (const b of BACKENDS) {
    const volume = join(dir, `volume-${b.name}`);
    writeBackendVolume(volume, b.sid);
    const started = await world.backend({ name: b.name, ip: b.ip, port: PORT, dir: volume });
    expect(started.generator).toEqual({ activeConfigId: 1, serverId: b.sid, cidLength: 20, reason: null });
  }
  for (const n of NODES) {
    const tls = ca.issue({ cn: n.name, usage: 'client' });
    const started = await world.dataplane(n.name, ['--operator', `localhost:${RELAY_PORT}`, '--tls-dir', tls.dir, '--node-name', n.name, '--metrics-port', '9090', '--metrics-address', '127.0.0.1', '--log-level', 'info'], { NODE_NAME: n.name });
    dataplanePids.set(n.name, started.pid);
  }
  await Promise.all(NODES.map((n) => world.waitEvent((e) => e.event === 'dp' && e.node === n.name && String(e.line).includes('"msg":"snapshot applied"'), 30_000)));
  await world.ecmp(ECMP, NODES.map((n) => ({ ip: n.ip, port: PORT })));
  note(`world up in ${Date.now() - t0} ms (agent + namespaces ${tWorld - t0} ms; backends, data planes applied, ecmp ${Date.now() - tWorld} ms)`);
}, 90_000);

afterAll(async () => {
  for (const e of world?.events ?? []) if (e.event === "backend" && process.env.JOURNEY_DEBUG) process.stdout.write(JSON.stringify(e) + "\n");
  const exit = await world?.close();
  if (exit !== undefined) note(`agent exit: ${exit}`);
  configServer?.child.kill('SIGTERM');
  socketRelay?.close();
  ca?.remove();
  rmSync(dir, { recursive: true, force: true });
});

describe('journey world: namespaces, data planes, backends with Kubernetes CID files, real QUIC clients', () => {
  it('ngtcp2, a migrating ngtcp2 and @matrixai/quic through each node and through the ECMP relay: all intact', async () => {
    const targets = [...NODES.map((n) => ({ label: `node ${n.name}`, host: n.ip, port: PORT })), { label: 'ecmp', host: ECMP.ip, port: ECMP.port }];
    const runs = targets.flatMap((t) => [
      run(`${t.label} ngtcp2`, { kind: 'ngtcp2', host: t.host, port: t.port, path: `/${BODY}` }),
      run(`${t.label} ngtcp2-migrate`, { kind: 'ngtcp2-migrate', host: t.host, port: t.port, path: `/${BODY}`, migrateAfterMs: 20 }),
      run(`${t.label} matrixai`, { kind: 'matrixai', host: t.host, port: t.port, path: '/100000', count: 4, migrate: true, spreadMs: 1500 }),
    ]);
    const results = await Promise.all(runs);
    const labels = targets.flatMap((t) => [`${t.label} ngtcp2`, `${t.label} ngtcp2-migrate`, `${t.label} matrixai`]);
    results.forEach((r, i) => {
      expectGood(r, labels[i]);
      expect(r.servedBy).toHaveLength(1);
      for (const cid of (r.detail.serverCids as string[] | undefined) ?? []) servedCids.push({ cid, backend: r.servedBy[0] });
    });
    // the migrating clients really moved to a new CID of the same backend and kept going
    results.forEach((r, i) => {
      if (labels[i].endsWith('migrate') || labels[i].endsWith('matrixai')) expect({ what: labels[i], migrated: r.detail.migratedConnections }).toEqual({ what: labels[i], migrated: 1 });
    });
  }, 60_000);

  it('each node serves its own monitoring port (the same 127.0.0.1:9090 in each namespace), reached with fetch; data planes get only the given env', async () => {
    for (const n of NODES) {
      const ready = await world.fetch(n.name, 'http://127.0.0.1:9090/readyz');
      expect({ node: n.name, status: ready.status }).toEqual({ node: n.name, status: 200 });
      const metrics = await world.fetch(n.name, 'http://127.0.0.1:9090/metrics');
      expect(metrics.body).toMatch(/^quiclb_/m);
      // the data plane's environment: the given variables and a container's basics, nothing of the test's
      const environ = readFileSync(`/proc/${dataplanePids.get(n.name)}/environ`, 'utf8').split('\0').filter(Boolean).map((kv) => kv.split('=')[0]);
      expect(environ.sort()).toEqual(['HOME', 'LANG', 'NODE_NAME', 'NODE_OPTIONS', 'PATH', 'TMPDIR'].filter((k) => k === 'NODE_NAME' || k === 'NODE_OPTIONS' || process.env[k] !== undefined));
    }
  });

  it('the ECMP relay kept each handshake on one data plane and moved the 1-RTT datagrams between both in runs', async () => {
    const audit = await world.audit();
    const counts = audit.ecmp[`${ECMP.ip}:${ECMP.port}`];
    note(`ecmp: ${JSON.stringify(counts)}`);
    expect(counts.shortToTargets.every((n) => n > 100)).toBe(true);
    // each client source's short headers go to the targets in turn, `run` at a time: the totals differ by at most one
    // run per source, and the flows moved many times (the three ECMP clients each crossed both data planes repeatedly)
    expect(Math.abs(counts.shortToTargets[0] - counts.shortToTargets[1])).toBeLessThanOrEqual(counts.flows * counts.run);
    expect(counts.moves).toBeGreaterThanOrEqual(Math.floor((counts.shortToTargets[0] + counts.shortToTargets[1]) / counts.run) - 2 * counts.flows);
    // long headers (handshakes) stayed on each flow's home target
    expect(counts.toTargets.reduce((s, n) => s + n, 0) - counts.shortToTargets.reduce((s, n) => s + n, 0)).toBe(counts.longHeader);
  });

  it('audit: every backend got traffic, and no datagram carried a connection ID its backend did not issue', async () => {
    const audit = await world.audit();
    for (const b of BACKENDS) {
      const a = audit.backends[b.name];
      note(`audit ${b.name}: ${JSON.stringify({ ...a, examples: a.examples.slice(0, 3) })}`);
      expect({ name: b.name, foreign: a.foreignCids, examples: a.examples }).toEqual({ name: b.name, foreign: 0, examples: [] });
      expect(a.shortHeader).toBeGreaterThan(0);
      expect(a.unroutableIssued).toBe(0);
      expect(a.unsettledInitials).toBe(0); // every unowned Initial DCID was remembered, so settled above
      expect(a.issuedForgotten).toBe(0); // and every CID the backend issued
    }
    expect(Object.values(audit.backends).reduce((s, a) => s + a.responses, 0)).toBeGreaterThanOrEqual(6 + 3 * 4);
  });

  it('a failed client answers ok:false and the world keeps going; bad requests get precise errors', async () => {
    const dead = await world.client({ kind: 'ngtcp2', host: '172.30.0.99', port: PORT, path: '/1000', timeoutMs: 8000 });
    expect(dead.ok).toBe(false);
    await expect(world.request('client', { kind: 'curl', host: NODES[0].ip, port: PORT, path: '/1' })).rejects.toThrow(/unknown client kind/);
    await expect(world.request('dataplane', { node: 'n9', args: [] })).rejects.toThrow(/unknown node "n9"/);
    await expect(world.request('bogus')).rejects.toThrow(/unknown op "bogus"/);
    await expect(world.request('setup', { nodes: NODES })).rejects.toThrow(/setup was already requested/);
    await expect(world.backend({ name: 'web-a', ip: '10.244.9.9', port: PORT, dir })).rejects.toThrow(/backend web-a is already running/);
    await expect(world.request('ecmp', { listen: { ip: '10.244.255.2', port: 1 }, targets: [{ ip: '999.1.1.1', port: 1 }] })).rejects.toThrow(/"ip" must be an IPv4 address/);
    await expect(world.request('datagram', { to: { ip: '10.244.1.5', port: 1 }, hex: 'xyz' })).rejects.toThrow(/"hex" must be/);
    const again = await world.client({ kind: 'matrixai', host: NODES[1].ip, port: PORT, path: '/5000', count: 2 });
    expectGood(again, 'after the failures');
  }, 30_000);

  it('the audit counts exactly the datagrams whose DCID the backend did not issue', async () => {
    const { cid, backend } = servedCids[0];
    const own = BACKENDS.find((b) => b.name === backend)!;
    const other = BACKENDS.find((b) => b.name !== backend)!;
    const before = await world.audit();
    const dcid = Buffer.from(cid, 'hex');
    const short = Buffer.concat([Buffer.from([0x41]), dcid, randomBytes(40)]);
    const initial = (d: Buffer) => Buffer.concat([Buffer.from([0xc0, 0, 0, 0, 1, d.length]), d, Buffer.from([8]), randomBytes(8), Buffer.alloc(1200)]);
    await world.datagram({ ip: other.ip, port: PORT }, short); // another backend's CID: foreign
    await world.datagram({ ip: other.ip, port: PORT }, initial(dcid)); // a post-Retry Initial at the wrong backend: foreign
    await world.datagram({ ip: other.ip, port: PORT }, initial(randomBytes(18))); // a client-chosen first DCID: not foreign
    await world.datagram({ ip: own.ip, port: PORT }, short); // its own CID: not foreign
    await new Promise((r) => setTimeout(r, 300));
    const after = await world.audit();
    const delta = (name: string) => after.backends[name].foreignCids - before.backends[name].foreignCids;
    expect({ [other.name]: delta(other.name), [own.name]: delta(own.name) }).toEqual({ [other.name]: 2, [own.name]: 0 });
    expect(after.backends[other.name].examples.slice(-2)).toEqual([`short:${cid}`, `initial:${cid}`]);
  });

  it('stopBackend takes the pod (and its address) away; the same name can start again; audits of both are kept', async () => {
    const b = BACKENDS[1];
    await world.stopBackend(b.name);
    const gone = await world.client({ kind: 'matrixai', host: b.ip, port: PORT, path: '/10', timeoutMs: 3000 });
    expect(gone.ok).toBe(false);
    await world.backend({ name: b.name, ip: b.ip, port: PORT, dir: join(dir, `volume-${b.name}`) });
    const back = await world.client({ kind: 'matrixai', host: b.ip, port: PORT, path: '/5000', count: 2 });
    expectGood(back, 'direct to the restarted backend');
    expect(back.servedBy).toEqual([b.name]);
    const audit = await world.audit();
    expect(audit.backends[`${b.name}~1`].stopped).toBe(true);
    expect(audit.backends[b.name].stopped).toBe(false);
    expect(audit.backends[b.name].responses).toBe(2);
  }, 30_000);

  it('a backend started before its pod is annotated mints 0b111 CIDs, then follows the kubelet update of the files', async () => {
    const volume = join(dir, 'volume-web-c');
    const now = Date.now();
    new KubeletVolume(volume).write({
      'configs.json': formatRotationState({ serverIdLength: 2, lastRotationAt: now, configs: [{ config: makeConfig({ configId: 1, serverIdLength: 2, nonceLength: 17, key }), state: 'active', since: now }] }),
      'server-id': '',
    });
    const started = await world.backend({ name: 'web-c', ip: '10.244.3.9', port: PORT, dir: volume });
    expect(started.generator).toMatchObject({ activeConfigId: null, serverId: null, cidLength: 20 });
    expect(started.generator.reason).toMatch(/empty/);
    const t0 = Date.now();
    writeBackendVolume(volume, '0a03');
    const changed = await world.waitEvent((e) => e.event === 'backend' && e.name === 'web-c' && String(e.line).includes('"serverId":"0a03"'), 10_000);
    note(`web-c: server ID file update seen after ${Date.now() - t0} ms: ${String(changed.line)}`);
    expect(JSON.parse(String(changed.line).replace(/^generator: /, ''))).toEqual({ activeConfigId: 1, serverId: '0a03', cidLength: 20, reason: null });
    await world.stopBackend('web-c');
  }, 20_000);

  it('SIGKILL of an agent: its workers, data plane and namespaces are gone within seconds', async () => {
    const other = await JourneyWorld.start();
    await other.setup({ podCidrRoutes: ['10.244.0.0/16'], nodes: [NODES[0]], configServerSocket: join(dir, 'config-server.sock'), relayPort: RELAY_PORT });
    const tls = ca.issue({ cn: 'n1', usage: 'client' });
    await other.dataplane(NODES[0].name, ['--operator', `localhost:${RELAY_PORT}`, '--tls-dir', tls.dir, '--node-name', NODES[0].name, '--no-metrics']);
    await other.waitEvent((e) => e.event === 'dp' && String(e.line).includes('"msg":"snapshot applied"'), 30_000);
    const pids = descendants(other.child.pid!);
    const namespaces = new Set(pids.map(netns).filter((n) => n !== null && n !== netns(String(process.pid))));
    expect(pids.length).toBeGreaterThanOrEqual(4); // agent, 2 workers, the data plane
    expect(namespaces.size).toBe(2); // W and N_1
    const t0 = Date.now();
    other.child.kill('SIGKILL');
    let left: string[] = pids;
    while (Date.now() - t0 < 5000) {
      left = pids.filter((p) => existsSync(`/proc/${p}`) && !isZombieOf(p));
      if (left.length === 0 && !anyProcessIn(namespaces)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    note(`SIGKILLed agent: ${pids.length} processes and ${namespaces.size} namespaces gone after ${Date.now() - t0} ms`);
    expect(left).toEqual([]);
    expect(anyProcessIn(namespaces)).toBe(false);
  }, 60_000);

  it('killDataplane reports the exit; shutdown exits 0 and leaves no process or namespace behind', async () => {
    const killed = await world.killDataplane('n2', 'SIGKILL');
    expect(killed.exit).toBe('SIGKILL');
    const pids = descendants(world.child.pid!);
    const namespaces = new Set(pids.map(netns).filter((n) => n !== null && n !== netns(String(process.pid))));
    expect(namespaces.size).toBe(3);
    const exit = await world.close();
    expect(exit).toBe('0');
    expect(pids.filter((p) => existsSync(`/proc/${p}`) && !isZombieOf(p))).toEqual([]);
    expect(anyProcessIn(namespaces)).toBe(false);
  }, 30_000);
});

// ---- /proc -------------------------------------------------------------------------------------------------------

function stat(pid: string): { ppid: string; state: string } | null {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return { state: fields[0], ppid: fields[1] };
  } catch {
    return null;
  }
}

/** `root` and every process below it (as PIDs). */
function descendants(root: number): string[] {
  const children = new Map<string, string[]>();
  for (const p of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    const s = stat(p);
    if (s) children.set(s.ppid, [...(children.get(s.ppid) ?? []), p]);
  }
  const out = [String(root)];
  for (let i = 0; i < out.length; i++) out.push(...(children.get(out[i]) ?? []));
  return out;
}

function isZombieOf(pid: string): boolean {
  return stat(pid)?.state === 'Z';
}

/** The network namespace of a process ("net:[4026532...]"), or null when it is gone. */
function netns(pid: string): string | null {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return null;
  }
}

function anyProcessIn(namespaces: Set<string | null>): boolean {
  return readdirSync('/proc').some((p) => /^\d+$/.test(p) && namespaces.has(netns(p)) && !isZombieOf(p));
}
