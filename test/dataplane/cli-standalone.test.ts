/**
 * `quiclb standalone` as a real process: --check, --example (real QUIC, and the UDP fallback without
 * @matrixai/quic), worker processes sharing a port with reusePort,
 * and two instances (one in-process, one a separate process) agreeing on every packet of a shared stream.
 */
import { describe, expect, it, beforeAll, afterAll } from '@jest/globals';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { CidEncoder, mintUnroutableCid } from '../../lib/index.js';
import { runStandalone, type StandaloneHandle } from '../../dataplane/standalone.js';
import { repoRoot, runCli, spawnNode, waitLine, type CliProc } from '../helpers/run-cli.js';
import { Client, config, KEY_B64, longPacket, shortPacket, standaloneYaml, TaggingBackend, waitFor } from './helpers.js';


type Proc = CliProc;

const procs: Proc[] = [];
function start(args: string[], nodeArgs: string[] = []): Proc {
  return spawnProc([...nodeArgs, '--import', 'tsx', 'cli/main.ts', ...args]);
}
function spawnProc(argv: string[]): Proc {
  const p = spawnNode(argv);
  procs.push(p);
  return p;
}

/** Runs a printed shell command from the checkout (as a reader would paste it). */
function sh(command: string, timeoutMs = 20_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('bash', ['-c', command], { cwd: repoRoot, timeout: timeoutMs, env: { ...process.env, NODE_OPTIONS: '' } }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
    );
  });
}

let dir: string;
let backends: TaggingBackend[];
const clients: Client[] = [];
const handles: StandaloneHandle[] = [];

const yaml = (extra: string) =>
  standaloneYaml({
    name: 'cli',
    servers: backends.map((b, i) => `  - { id: ${b.name}, address: "127.0.0.1:${b.port}", server_id: "000${i + 1}", weight: ${100 * (i + 1)} }`),
    healthCheck: '{ interval: 1s, timeout: 500ms }',
    extra,
  });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'quiclb-cli-'));
  backends = await Promise.all(['a', 'b', 'c'].map((n) => TaggingBackend.start(n)));
});
afterAll(async () => {
  for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
  for (const h of handles) await h.stop();
  for (const c of clients) await c.close();
  for (const b of backends) await b.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('quiclb standalone CLI', () => {
  it('--check validates and summarises without keys; an invalid file exits 2 naming the field', () => {
    const good = join(dir, 'good.yaml');
    writeFileSync(good, yaml(''));
    const r = runCli(['standalone', '--config', good, '--check']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/valid\n/);
    expect(r.stdout).toMatch(/encrypted: true/);
    expect(r.stdout).not.toContain(KEY_B64);
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, yaml('').replace('server_id: "0002"', 'server_id: "0001"'));
    const r2 = runCli(['standalone', '--config', bad]);
    expect(r2.status).toBe(2);
    expect(r2.stderr).toMatch(/^quiclb standalone: servers\[1\]\.server_id: server ID 0001 \(given\) is also the server ID of servers\[0\] \("a", given\)/);
    const r4 = runCli(['standalone', '--example', '--check']);
    expect(r4.status).toBe(2);
    expect(r4.stderr).toMatch(/--check validates --config FILE; the built-in example needs no check/);
    const r3 = runCli(['standalone']);
    expect(r3.status).toBe(2);
    expect(r3.stderr).toMatch(/--config FILE is required/);
    expect(runCli(['--help']).stdout).toMatch(/standalone +run the load balancer from a YAML file/);
  });

  it('--check applies the same whole-config validation as start: a state file with a duplicate config id fails both', () => {
    const path = join(dir, 'dup-state.yaml');
    writeFileSync(path, yaml('').replace(`  encryption_key: "${KEY_B64}"`, `  encryption_key: "${KEY_B64}"\n  config_rotation: { enabled: true, interval: 1h }`));
    const entry = (state: string) => ({ config_id: 1, nonce_length: 6, key: KEY_B64, state, since: '2026-01-01T00:00:00Z' });
    writeFileSync(
      `${path}.state.json`,
      JSON.stringify({ format: 'quiclb-rotation-state/1', server_id_length: 2, last_rotation_at: '2026-01-01T00:00:00Z', configs: [entry('active'), entry('draining')] }),
    );
    const check = runCli(['standalone', '--config', path, '--check']);
    const run = runCli(['standalone', '--config', path]);
    expect(check.status).toBe(2);
    expect(run.status).toBe(2);
    // in the state file's own field names, naming the file
    expect(check.stderr).toBe(`quiclb standalone: state_file.configs[1].config_id: 1 is also the config_id of state_file.configs[0] (in ${path}.state.json)\n`);
    expect(check.stderr).toBe(run.stderr);
  });

  it('--example: real QUIC through the load balancer (bodies name the backend, CIDs decode to it, migration, cid routing); the printed commands work; SIGINT stops it', async () => {
    const p = start(['standalone', '--example', '--listen', '127.0.0.1:0', '--metrics-port', '0']);
    await waitLine(p, /Ctrl-C stops\./);
    const text = p.out.join('\n');
    expect(text).not.toMatch(/UDP example|not QUIC servers/);
    const port = Number(/^ {2}load balancer {2}udp 127\.0\.0\.1:(\d+) \((batched|dgram) I\/O\) {3}config: (\S+)$/m.exec(text)![1]);
    const configPath = /config: (\S+standalone\.yaml)$/m.exec(text)![1];
    const metricsUrl = /^ {2}metrics {8}(http:\/\/\S+\/metrics)/m.exec(text)![1];
    // the banner's server IDs (derived from the names) are the ones the responses and the decoded CIDs name
    const sids = new Map([...text.matchAll(/(server\d) 127\.0\.0\.1:\d+ \(server ID ([0-9a-f]{4})\)/g)].map((m) => [m[1], m[2]]));
    expect(sids.size).toBe(3);

    // Each response: its body (written by the backend that served it) and the CID the client sent to, decoded.
    const responses = [...text.matchAll(/^ {4}(\d)\. 200 (server\d) \(server ID ([0-9a-f]{4})\) answered request (\d+) of QUIC connection ([0-9a-f]{12})… \(from 127\.0\.0\.1:\d+\)\n {7}CID ([0-9a-f]{40}) -> server ID ([0-9a-f]{4}) \((server\d)\) {3}LB routed: cid=(\d+) table=(\d+) fallback=(\d+)$/gm)]
      .map((m) => ({ n: m[1], name: m[2], sid: m[3], request: m[4], conn: m[5], cid: m[6], decodedSid: m[7], decodedName: m[8], cidRouted: Number(m[9]) }));
    const connections = [...text.matchAll(/^ {2}connection (\d) from client port (\d+) \(handshake routed: cid=(\d+) table=(\d+) fallback=(\d+)\)$/gm)];
    expect(connections.length).toBeGreaterThanOrEqual(1);
    expect(responses).toHaveLength(3 + connections.length - 1); // 3 on connection 1, then 1 per connection
    for (const r of responses) {
      expect(sids.get(r.name)).toBe(r.sid); // the body names the backend and its server ID
      expect(r.decodedName).toBe(r.name); // the server ID in the CID is the server that answered
      expect(r.decodedSid).toBe(r.sid);
      expect(r.cidRouted).toBeGreaterThan(0); // the request went through the LB, routed by CID
    }
    // connection 1 migrated between requests 2 and 3: new client port, new CID, same connection and backend
    const [r1, r2, r3] = responses;
    expect([r1.request, r2.request, r3.request]).toEqual(['1', '2', '3']);
    expect(new Set([r1.conn, r2.conn, r3.conn]).size).toBe(1);
    expect(new Set([r1.name, r2.name, r3.name]).size).toBe(1);
    expect(r2.cid).toBe(r1.cid);
    expect(r3.cid).not.toBe(r2.cid);
    const mig = /^ {4}migration: client port (\d+) -> (\d+), CID ([0-9a-f]{12})… -> ([0-9a-f]{12})…/m.exec(text)!;
    expect(mig[1]).toBe(connections[0][2]);
    expect(mig[2]).not.toBe(mig[1]);
    expect([mig[3], mig[4]]).toEqual([r2.cid.slice(0, 12), r3.cid.slice(0, 12)]);
    // the demo's totals: one fallback per connection (its first Initial), everything else by CID
    const total = /^ {2}load balancer, whole demo: routed by cid=(\d+) table=(\d+) fallback=(\d+)$/m.exec(text)!;
    const [cid, fallback] = [Number(total[1]), Number(total[3])];
    expect(fallback).toBeGreaterThanOrEqual(connections.length);
    expect(fallback).toBeLessThan(2 * connections.length);
    expect(cid).toBeGreaterThan(5 * responses.length);
    const routedBy = async (outcome: string) =>
      [...(await (await fetch(metricsUrl)).text()).matchAll(new RegExp(`^quiclb_packets_total\\{[^}]*outcome="${outcome}"[^}]*\\} (\\d+)`, 'gm'))]
        .reduce((n, m) => n + Number(m[1]), 0);
    const cidBefore = await routedBy('cid');
    expect(cidBefore).toBeGreaterThanOrEqual(cid);

    // The printed commands work: the example client (npm script), with migration and CID decoding...
    const printed = [...text.matchAll(/^ {2}(npm run example:client -- .*)$/gm)].map((m) => m[1]);
    expect(printed).toEqual([`npm run example:client -- 127.0.0.1 ${port}`, `npm run example:client -- 127.0.0.1 ${port} --migrate --config ${configPath}`]);
    const plain = await sh(printed[0]);
    expect(plain.code).toBe(0);
    expect(plain.stdout).toMatch(/^3\. GET \/ -> 200: server\d \(server ID [0-9a-f]{4}\) answered request 3 of QUIC connection/m);
    const full = await sh(printed[1]);
    expect(full.code).toBe(0);
    const served = [...full.stdout.matchAll(/^\d\. GET \/ -> 200: (server\d) \(server ID ([0-9a-f]{4})\) answered request \d/gm)].map((m) => m[1]);
    const decoded = [...full.stdout.matchAll(/^ {3}server connection ID ([0-9a-f]{40}): server ID ([0-9a-f]{4}) \((server\d)\)$/gm)];
    expect(served).toHaveLength(3);
    expect(new Set(served).size).toBe(1);
    expect(decoded.map((m) => m[3])).toEqual(served);
    expect(full.stdout).toMatch(/^migrated: local port (\d+) -> (?!\1\b)\d+, now sending to the server's connection ID/m);
    expect(decoded[2][1]).not.toBe(decoded[1][1]);
    // ...and Debian's gtlsclient (HTTP/3), when installed (npm test installs it)
    const gtls = /^ {2}(gtlsclient .*)$/m.exec(text);
    if (gtls) {
      const g = await sh(gtls[1]);
      expect(g.stdout).toMatch(/^server\d \(server ID [0-9a-f]{4}\) answered request 1 of QUIC connection/);
      expect(g.code).toBe(0);
    }
    expect(await routedBy('cid')).toBeGreaterThan(cidBefore + 20);
    // Ctrl-C with a client connection still open stops the backends cleanly (exit status 0)
    const holder = spawnProc(['--import', 'tsx', '--input-type=module', '-e', `
      import { ExampleQuicClient } from './examples/example-quic-client.ts';
      const c = await ExampleQuicClient.connect({ host: '127.0.0.1', port: ${port} });
      console.log('OPEN ' + (await c.get('/')).body.toString().trim());
      setInterval(() => {}, 1000);`]);
    expect(await waitLine(holder, /^OPEN server\d \(server ID/)).toBeTruthy();
    p.child.kill('SIGINT');
    expect(await p.exit).toBe(0);
    expect(p.err.join('')).toBe('');
    expect(existsSync(configPath)).toBe(false);
    holder.child.kill('SIGKILL');
  }, 60_000);

  it('--example without @matrixai/quic says so and runs the UDP example instead', async () => {
    // hide the package from module resolution (as in an install without devDependencies)
    const hook = join(dir, 'hide-matrixai.mjs');
    writeFileSync(hook, `import { registerHooks } from 'node:module';
registerHooks({
  resolve(specifier, context, next) {
    if (specifier === '@matrixai/quic' || specifier.startsWith('@matrixai/quic/')) {
      throw Object.assign(new Error("Cannot find package '@matrixai/quic' (hidden by the test)"), { code: 'ERR_MODULE_NOT_FOUND' });
    }
    return next(specifier, context);
  },
});
`);
    const p = start(['standalone', '--example', '--listen', '127.0.0.1:0', '--metrics-port', '0'], ['--import', hook]);
    await waitLine(p, /Ctrl-C stops\./);
    const text = p.out.join('\n');
    expect(text).toMatch(/^The QUIC example needs the npm package @matrixai\/quic \(a devDependency\), which cannot be loaded here:\n {2}Cannot find package '@matrixai\/quic' \(hidden by the test\)\nRun `npm install` in a quiclb checkout/m);
    expect(text).toMatch(/Running the UDP example instead/);
    const steps = [...text.matchAll(/^ {2}\d\. .*-> (server\d)/gm)].map((m) => m[1]);
    expect(steps).toHaveLength(3);
    expect(new Set(steps).size).toBe(1);
    expect(text).toMatch(/routed by cid=2 table=0 fallback=1/);
    expect(text).toMatch(/not QUIC servers/);
    // The printed command works: send the datagram it describes.
    const port = Number(/udp 127\.0\.0\.1:(\d+)/.exec(text)![1]);
    const c = await Client.open();
    clients.push(c);
    c.send(Buffer.from('hello through quiclb'), port);
    const [reply] = await c.waitReplies(1);
    expect(reply).toMatch(/^server\d \(server ID [0-9a-f]{4}\) got 20 bytes through the load balancer/);
    p.child.kill('SIGINT');
    expect(await p.exit).toBe(0);
  });

  /** Runs `quiclb standalone` with `workers: 2`; returns the process, its UDP port, monitoring address and worker PIDs. */
  async function startTwoWorkers(file: string) {
    const path = join(dir, file);
    writeFileSync(path, yaml('workers: 2\n'));
    const p = start(['standalone', '--config', path]);
    const running = JSON.parse(await waitLine(p, /quiclb standalone running/));
    const port = Number(running.listen[0].split(':')[1]);
    const mon = JSON.parse(await waitLine(p, /monitoring: /)).address as string;
    const workerPids = p.out.filter((l) => l.includes('data plane started')).map((l) => JSON.parse(l).pid as number);
    expect(new Set(workerPids).size).toBe(2);
    return { p, port, mon, workerPids };
  }

  it('workers: 2 share the port with reusePort; every flow stays on one worker; metrics are aggregated', async () => {
    const { p, port, mon } = await startTwoWorkers('workers.yaml');

    const N = 24;
    const PER = 5;
    const cs = await Promise.all(Array.from({ length: N }, () => Client.open()));
    clients.push(...cs);
    const marks = backends.map((b) => b.received.length);
    for (const c of cs) {
      for (let i = 0; i < PER; i++) expect(await c.request(shortPacket(mintUnroutableCid(8)), port)).not.toBeNull();
    }
    // Every client flow used one upstream socket (one worker) for all its datagrams.
    const upstreamByClient = new Map<string, Set<number>>();
    backends.forEach((b, i) => {
      for (const r of b.received.slice(marks[i])) {
        const tagOwner = cs.findIndex((c) => c.replies.some((rep) => rep.endsWith(r.data.subarray(r.data.length - 8).toString('hex'))));
        const k = `${tagOwner}`;
        if (!upstreamByClient.has(k)) upstreamByClient.set(k, new Set());
        upstreamByClient.get(k)!.add(r.port);
      }
    });
    expect(upstreamByClient.size).toBe(N);
    for (const ports of upstreamByClient.values()) expect(ports.size).toBe(1);

    const metrics = await (await fetch(`http://${mon}/metrics`)).text();
    expect(metrics).toMatch(new RegExp(`quiclb_received_packets_total\\{lb="cli"\\} ${N * PER}\\b`));
    const perWorker = [...metrics.matchAll(/quiclb_worker_received_packets_total\{lb="cli",worker="(\d)"\} (\d+)/g)].map((m) => Number(m[2]));
    expect(perWorker).toHaveLength(2);
    expect(perWorker.reduce((a, b) => a + b, 0)).toBe(N * PER);
    expect(perWorker.every((n) => n > 0)).toBe(true); // 24 flows over 2 sockets: both see traffic (p(fail) = 2^-23)
    expect(metrics).toMatch(/quiclb_workers\{state="ready"\} 2/);
    expect(metrics).toMatch(/quiclb_config_version\{lb="cli"\} 1\n/);
    expect(metrics).toMatch(/quiclb_health_checks_total\{lb="cli",server="a",result="success"\}/);
    expect((await fetch(`http://${mon}/readyz`)).status).toBe(200);
    p.child.kill('SIGTERM');
    expect(await p.exit).toBe(0);
  }, 60_000);

  it('workers: a worker that dies is restarted, and the aggregated counters carry what it had counted (they never go down)', async () => {
    const { p, port, mon, workerPids } = await startTwoWorkers('workers-restart.yaml');
    try {
      const scrape = async () => {
        const text = await (await fetch(`http://${mon}/metrics`)).text();
        const total = Number(new RegExp(`^quiclb_received_packets_total\\{lb="cli"\\} (\\d+)$`, 'm').exec(text)?.[1]);
        const perWorker = [...text.matchAll(/^quiclb_worker_received_packets_total\{lb="cli",worker="(\d)"\} (\d+)$/gm)].map((m) => Number(m[2]));
        return { text, total, perWorkerSum: perWorker.reduce((a, b) => a + b, 0) };
      };
      const send = async (n: number) => {
        const cs = await Promise.all(Array.from({ length: n }, () => Client.open()));
        clients.push(...cs);
        for (const c of cs) expect(await c.request(shortPacket(mintUnroutableCid(8)), port)).not.toBeNull();
      };
      await send(16);
      const before = await scrape();
      expect(before.total).toBe(16);
      expect(before.perWorkerSum).toBe(16);

      process.kill(workerPids[0], 'SIGKILL'); // a worker of the process this test started
      await waitLine(p, /worker exited; restarting/);
      expect(await waitFor(() => p.out.filter((l) => l.includes('data plane started')).length === 3, 15_000, 50)).toBe(true);
      let afterRestart = await scrape();
      for (let t = Date.now(); !/quiclb_workers\{state="ready"\} 2/.test(afterRestart.text) && Date.now() - t < 15_000; ) {
        await new Promise((r) => setTimeout(r, 100));
        afterRestart = await scrape();
      }
      expect(afterRestart.text).toMatch(/quiclb_workers\{state="ready"\} 2/);
      expect(afterRestart.total).toBe(16); // not the survivor's share alone
      expect(afterRestart.perWorkerSum).toBe(16);

      await send(8);
      const after = await scrape();
      expect(after.total).toBe(24);
      expect(after.perWorkerSum).toBe(24);
    } catch (e) {
      // the primary's and the workers' log lines explain a failure (which worker restarted, when it was ready)
      throw new Error(`${(e as Error).message}\n--- quiclb output (last lines):\n${p.out.slice(-40).join('\n')}\n${p.err.join('').slice(-2000)}`, { cause: e });
    }
    p.child.kill('SIGTERM');
    expect(await p.exit).toBe(0);
  }, 60_000);

  it('two instances with the same config (two processes) deliver one shared packet stream to identical backends', async () => {
    const path = join(dir, 'twin.yaml');
    writeFileSync(path, yaml(''));
    const p = start(['standalone', '--config', path, '--log-level', 'debug']);
    const portB = Number(JSON.parse(await waitLine(p, /quiclb standalone running/)).listen[0].split(':')[1]);
    // SIGHUP re-reads the file (unchanged here: nothing to apply).
    p.child.kill('SIGHUP');
    expect(JSON.parse(await waitLine(p, /"why":"SIGHUP"/, 5000)).msg).toBe('config unchanged');
    const h = await runStandalone({ configPath: path, logger: pino({ level: 'silent' }), handleSignals: false, watch: false });
    handles.push(h);
    const portA = h.addresses()[0].port;
    // A stream of connections; each datagram goes to instance A or B at random (like ECMP after a re-hash).
    const cs = await Promise.all(Array.from({ length: 30 }, () => Client.open()));
    clients.push(...cs);
    const rand = (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(Math.random() * 256)));
    const enc = backends.map((_, i) => new CidEncoder(config(), Buffer.from(`000${i + 1}`, 'hex')));
    let viaA = 0;
    let viaB = 0;
    for (const c of cs) {
      const pick = () => (Math.random() < 0.5 ? (viaA++, portA) : (viaB++, portB));
      const dcid = rand(16);
      const scid = rand(8);
      const first = await c.request(longPacket(dcid, scid), pick());
      expect(first).not.toBeNull();
      for (let i = 0; i < 4; i++) expect(await c.request(longPacket(dcid, scid), pick())).toBe(first); // Initial retransmits
      for (let i = 0; i < 3; i++) expect(await c.request(shortPacket(mintUnroutableCid(8)), pick())).toBe(first);
      const idx = backends.findIndex((b) => b.name === first);
      for (let i = 0; i < 3; i++) expect(await c.request(shortPacket(enc[idx].next()), pick())).toBe(first);
    }
    expect(viaA).toBeGreaterThan(50);
    expect(viaB).toBeGreaterThan(50);
    // Weights 100/200/300: every backend got connections.
    const firsts = new Set(cs.map((c) => c.replies[0].split('|')[0]));
    expect(firsts.size).toBeGreaterThan(1);
    p.child.kill('SIGTERM');
    expect(await p.exit).toBe(0);
  }, 60_000);
});
