/** Standalone runner in-process: YAML -> data plane, monitoring HTTP, reload (file change, invalid file), logs. */
import { describe, expect, it, beforeAll, afterAll } from '@jest/globals';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { CidEncoder, ServerCidGenerator, CidDecoder } from '../../lib/index.js';
import { runStandalone, type StandaloneHandle } from '../../dataplane/standalone.js';
import { REDACT_PATHS } from '../../dataplane/logging.js';
import { freeUdpPort } from '../agent/fake-operator.js';
import { Client, config, KEY, KEY_B64, longPacket, shortPacket, standaloneYaml, TaggingBackend, waitFor } from './helpers.js';


let dir: string;
let backends: TaggingBackend[];
const handles: StandaloneHandle[] = [];
const clients: Client[] = [];
const logLines: string[] = [];
const logger = pino(
  { level: 'debug', redact: { paths: REDACT_PATHS, censor: '[redacted]' } },
  new Writable({
    write(chunk, _enc, cb) {
      logLines.push(String(chunk));
      cb();
    },
  }),
);

const yaml = (servers: string[]) =>
  standaloneYaml({ name: 'it', servers, healthCheck: '{ enabled: false }', extra: 'flows: { max: 1000, idle_timeout: 30s }\n' });

const srv = (name: string, sid: string, i: number) => `  - { id: ${name}, address: "127.0.0.1:${backends[i].port}", server_id: "${sid}" }`;

/** Replaces the file atomically, as editors and config management do. */
function writeAtomic(path: string, text: string) {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

async function get(h: StandaloneHandle, path: string): Promise<{ status: number; body: string }> {
  const a = h.monitoringAddress()!;
  const r = await fetch(`http://127.0.0.1:${a.port}${path}`);
  return { status: r.status, body: await r.text() };
}

const cid = (sid: string) => new CidEncoder(config(), Buffer.from(sid, 'hex')).next();

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'quiclb-standalone-'));
  backends = await Promise.all(['a', 'b', 'c'].map((n) => TaggingBackend.start(n)));
});
afterAll(async () => {
  for (const h of handles) await h.stop();
  for (const c of clients) await c.close();
  for (const b of backends) await b.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('quiclb standalone (in-process)', () => {
  it('runs from YAML, serves /metrics /healthz /readyz, reloads on file change and keeps the last good config', async () => {
    const path = join(dir, 'lb.yaml');
    writeFileSync(path, yaml([srv('a', '0001', 0), srv('b', '0002', 1)]));
    const h = await runStandalone({ configPath: path, logger, handleSignals: false });
    handles.push(h);
    const port = h.addresses()[0].port;
    const c = await Client.open();
    clients.push(c);
    expect(await c.request(shortPacket(cid('0001')), port)).toBe('a');
    expect(await c.request(shortPacket(cid('0002')), port)).toBe('b');

    expect(await get(h, '/healthz')).toEqual({ status: 200, body: 'ok\n' });
    const ready = await get(h, '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body).toMatch(/servers accepting new connections: 2\/2/);
    const m = await get(h, '/metrics');
    expect(m.body).toMatch(/quiclb_packets_total\{lb="it",outcome="cid",config_id="0"\} 2/);
    expect(m.body).toMatch(/quiclb_config_version\{lb="it"\} 1/);
    expect(m.body).toMatch(/quiclb_process_cpu_seconds_total/);
    expect((await get(h, '/nope')).status).toBe(404);

    // File change: server c added (watched through the directory).
    writeAtomic(path, yaml([srv('a', '0001', 0), srv('b', '0002', 1), srv('c', '0003', 2)]));
    expect(await waitFor(() => h.snapshot().servers.length === 3, 5000)).toBe(true);
    expect(await c.request(shortPacket(cid('0003')), port)).toBe('c');
    expect((await get(h, '/metrics')).body).toMatch(/quiclb_config_reloads_total\{result="success"\} 1/);

    // An invalid file: the last good config stays, the error is reported and counted.
    const before = h.snapshot().version;
    writeAtomic(path, yaml([srv('a', '0001', 0), `  - { id: b, address: "127.0.0.1:99999" }`]));
    expect(await waitFor(() => logLines.some((l) => l.includes('config reload failed')), 5000)).toBe(true);
    expect(h.snapshot().version).toBe(before);
    expect(await c.request(shortPacket(cid('0003')), port)).toBe('c');
    const failed = logLines.find((l) => l.includes('config reload failed'))!;
    expect(JSON.parse(failed).error).toBe('servers[1].address: port must be 1..65535, got 99999');
    const m2 = (await get(h, '/metrics')).body;
    expect(m2).toMatch(/quiclb_config_reloads_total\{result="failure"\} 1/);
    expect(m2).toMatch(/quiclb_config_last_reload_successful 0/);

    // Fixed again via reload() (the SIGHUP path).
    writeFileSync(path, yaml([srv('a', '0001', 0)]));
    expect(await h.reload('test')).toBe(true);
    expect(h.snapshot().servers.map((s) => s.name)).toEqual(['a']);
    expect(await c.request(shortPacket(cid('0002')), port)).toBe('a'); // b removed: its CID falls back
    // A reload without changes does not bump the version.
    const v = h.snapshot().version;
    expect(await h.reload('again')).toBe(true);
    expect(h.snapshot().version).toBe(v);

    // Never log key material.
    const all = logLines.join('');
    expect(all).not.toContain(KEY_B64);
    expect(all).not.toContain(KEY.toString('hex'));
    expect(all).toContain('"encrypted":true');
  });

  it('refuses to start on an invalid file with the field named', async () => {
    const path = join(dir, 'bad.yaml');
    writeFileSync(path, yaml([srv('a', '0001', 0)]).replace('nonce_length: 6', 'nonce_length: 2'));
    await expect(runStandalone({ configPath: path, logger, handleSignals: false, watch: false })).rejects.toThrow(
      'loadbalancer.nonce_length: must be between 4 and 18, got 2',
    );
  });

  it('upstream_ports.seed_file: a restarted process reaches the backend from the same port; a bad seed file refuses to start', async () => {
    const path = join(dir, 'stable-ports.yaml');
    const listenPort = await freeUdpPort();
    writeFileSync(path, `upstream_ports: { seed_file: stable-ports.seed }\n${yaml([srv('a', '0001', 0)]).replace('127.0.0.1:0', `127.0.0.1:${listenPort}`)}`);
    const c = await Client.open();
    clients.push(c);
    const backendPort = async (): Promise<number> => {
      const h = await runStandalone({ configPath: path, logger, handleSignals: false, watch: false });
      try {
        const before = backends[0].received.length;
        expect(await c.request(shortPacket(cid('0001')), listenPort)).toBe('a');
        expect((await get(h, '/metrics')).body).toMatch(/quiclb_upstream_ports_total\{lb="it",choice="hashed"\} 1/);
        return backends[0].received[before].port;
      } finally {
        await h.stop();
      }
    };
    const first = await backendPort();
    expect(statSync(join(dir, 'stable-ports.seed')).mode & 0o777).toBe(0o600);
    expect(await backendPort()).toBe(first);
    writeFileSync(join(dir, 'stable-ports.seed'), 'short');
    await expect(runStandalone({ configPath: path, logger, handleSignals: false, watch: false })).rejects.toThrow(
      `upstream_ports.seed_file: ${join(dir, 'stable-ports.seed')}: not an upstream port seed (5 bytes, expected 32)`,
    );
  });

  it('starts rotation when a reload enables it, even when the snapshot stays the same', async () => {
    const path = join(dir, 'enable-rotation.yaml');
    writeFileSync(path, yaml([srv('a', '0001', 0)]));
    const h = await runStandalone({ configPath: path, logger, handleSignals: false, watch: false });
    handles.push(h);
    const rotating = yaml([srv('a', '0001', 0)]).replace(`  encryption_key: "${KEY_B64}"`, `  encryption_key: "${KEY_B64}"\n  config_rotation: { enabled: true, interval: 1h }`);
    writeFileSync(path, rotating);
    const v = h.snapshot().version;
    expect(await h.reload('test')).toBe(true);
    expect(h.snapshot().version).toBe(v); // the live configs are the YAML's until the first rotation
    expect(existsSync(`${path}.state.json`)).toBe(true); // the rotator started and wrote its state file
  });

  it('a reload that fails unexpectedly (rotation cannot write its state file) keeps later reloads working', async () => {
    const path = join(dir, 'broken-rotation.yaml');
    writeFileSync(path, yaml([srv('a', '0001', 0)]));
    const h = await runStandalone({ configPath: path, logger, handleSignals: false, watch: false });
    handles.push(h);
    const rotating = (stateFile: string) =>
      yaml([srv('a', '0001', 0)]).replace(
        `  encryption_key: "${KEY_B64}"`,
        `  encryption_key: "${KEY_B64}"\n  config_rotation: { enabled: true, interval: 1h }\n  state_file: ${stateFile}`,
      );
    // Reading a state file in a missing directory finds none (so the file loads); writing it there fails.
    writeFileSync(path, rotating(join(dir, 'no-such-dir', 'state.json')));
    expect(await h.reload('unwritable state file')).toBe(false);
    writeFileSync(path, rotating(join(dir, 'ok.state.json')));
    expect(await h.reload('fixed')).toBe(true);
    expect(existsSync(join(dir, 'ok.state.json'))).toBe(true);
  });

  it('readyz is 503 when no server accepts new connections', async () => {
    const path = join(dir, 'drain.yaml');
    writeFileSync(path, yaml([`  - { id: a, address: "127.0.0.1:${backends[0].port}", state: draining }`]));
    const h = await runStandalone({ configPath: path, logger, handleSignals: false, watch: false });
    handles.push(h);
    const r = await get(h, '/readyz');
    expect(r.status).toBe(503);
    expect(r.body).toMatch(/servers accepting new connections: 0\/1/);
  });
});

describe('ServerCidGenerator', () => {
  it('mints CIDs of the active config that the LB routes to its server, and follows file changes', async () => {
    const path = join(dir, 'gen.yaml');
    writeFileSync(path, yaml([srv('a', '0001', 0), srv('b', '0002', 1)]));
    const gen = ServerCidGenerator.fromFile(path, 'b');
    try {
      expect(gen.activeConfigId).toBe(0);
      expect(gen.serverId!.toString('hex')).toBe('0002');
      expect(gen.cidLength).toBe(9);
      const dec = new CidDecoder([config()]);
      const seen = new Set<string>();
      for (let i = 0; i < 100; i++) {
        const c = gen.next();
        expect(c.length).toBe(9);
        expect(dec.decode(c).serverId!.toString('hex')).toBe('0002');
        seen.add(c.toString('hex'));
      }
      expect(seen.size).toBe(100);
      // Through a running LB: the generator's CIDs reach b.
      const h = await runStandalone({ configPath: path, logger, handleSignals: false, watch: false });
      handles.push(h);
      const c = await Client.open();
      clients.push(c);
      expect(await c.request(longPacket(gen.next(), gen.next(), { type: 2 }), h.addresses()[0].port)).toBe('b');

      // Rotation by hand: a second config becomes active -> the generator switches.
      const changes: number[] = [];
      gen.on('change', (i) => changes.push(i.activeConfigId ?? -1));
      const k2 = Buffer.alloc(16, 9).toString('base64');
      writeAtomic(
        path,
        yaml([srv('a', '0001', 0), srv('b', '0002', 1)]).replace(
          `  nonce_length: 6\n  encryption_key: "${KEY_B64}"`,
          `  configs:\n    - { config_id: 3, nonce_length: 8, encryption_key: "${k2}", state: active }\n    - { config_id: 0, nonce_length: 6, encryption_key: "${KEY_B64}", state: draining }`,
        ),
      );
      expect(await waitFor(() => gen.activeConfigId === 3, 5000)).toBe(true);
      expect(gen.next()[0] >> 5).toBe(3);
      expect(gen.cidLength).toBe(11);
      expect(changes).toContain(3);

      // Invalid file: last good config stays, 'error' emitted.
      const errors: string[] = [];
      gen.on('error', (e) => errors.push(e.message));
      writeAtomic(path, 'loadbalancer: [\n');
      expect(await waitFor(() => errors.length > 0, 5000)).toBe(true);
      expect(gen.activeConfigId).toBe(3);
      // Server removed from the file: no config -> 0b111 with self-encoded length.
      writeAtomic(path, yaml([srv('a', '0001', 0)]));
      expect(await waitFor(() => gen.activeConfigId === null, 5000)).toBe(true);
      const u = gen.next();
      expect(u[0] >> 5).toBe(7);
      expect((u[0] & 0x1f) + 1).toBe(u.length);
      expect(gen.info().reason).toMatch(/server "b" is not in/);
    } finally {
      gen.close();
    }
  });

  it('mints 0b111 CIDs while the file does not exist, and throws on an invalid file at start', () => {
    const g = ServerCidGenerator.fromFile(join(dir, 'missing.yaml'), 'x', { watch: false, unroutableLength: 20 });
    expect(g.activeConfigId).toBeNull();
    const u = g.next();
    expect(u.length).toBe(20);
    expect(u[0]).toBe(0xe0 | 19);
    const bad = join(dir, 'bad-gen.yaml');
    writeFileSync(bad, 'servers: 3\n');
    expect(() => ServerCidGenerator.fromFile(bad, 'x', { watch: false })).toThrow(/^servers: must be a list|^loadbalancer: is required/);
  });
});
