/**
 * Issue 10, item 2 (a bad file at reload must not stall or kill a running data plane) and the config-side
 * parts of item 6 (state file not writable at start, a key pasted as a file name, IPv4-mapped listen addresses,
 * NaN/Infinity weights, unbounded names, `lb` twice in log lines, non-UTF-8 YAML).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { CidEncoder } from '../../lib/index.js';
import { ConfigError } from '../../lib/quiclb/config.js';
import { parseStandaloneConfig } from '../../lib/config/standalone.js';
import { runStandalone, type StandaloneHandle } from '../../dataplane/standalone.js';
import { Client, config, KEY, KEY_B64, shortPacket, standaloneYaml, TaggingBackend } from './helpers.js';

let dir: string;
let backend: TaggingBackend;
let client: Client;
const handles: StandaloneHandle[] = [];
const lines: string[] = [];
const logger = pino(
  { level: 'info', base: { lb: 'rl' } },
  new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  }),
);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'quiclb-hardening-reload-'));
  backend = await TaggingBackend.start('a');
  client = await Client.open();
});
afterAll(async () => {
  for (const h of handles) await h.stop();
  await client.close();
  await backend.close();
  rmSync(dir, { recursive: true, force: true });
});

const server = () => `  - { id: a, address: "127.0.0.1:${backend.port}", server_id: "0001" }`;
const goodYaml = (extra = '') => standaloneYaml({ name: 'rl', servers: [server()], healthCheck: '{ enabled: false }', extra });
const cid = () => new CidEncoder(config(), Buffer.from('0001', 'hex')).next();

function writeAtomic(path: string, text: string | Buffer) {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

/** Nested anchors: 10 levels of 10 aliases each (10^10 leaves when expanded), about 1.3 KB. */
function laughs(): string {
  const levels = ['&l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
  for (let i = 1; i < 10; i++) levels.push(`&l${i} [${Array.from({ length: 10 }, () => `*l${i - 1}`).join(',')}]`);
  return `[${levels.join(', ')}]`;
}

async function start(name: string, text: string): Promise<{ h: StandaloneHandle; path: string; port: number }> {
  const path = join(dir, name);
  writeFileSync(path, text);
  const h = await runStandalone({ configPath: path, logger, handleSignals: false, watch: false });
  handles.push(h);
  return { h, path, port: h.addresses()[0].port };
}

describe('reloads survive any file (issue 10 item 2)', () => {
  for (const where of ['a server address', 'a listen entry', 'a duration'] as const) {
    it(`refuses nested YAML anchors in ${where} at once, with a bounded message, and keeps forwarding`, async () => {
      const { h, path, port } = await start(`laughs-${where.replace(/ /g, '-')}.yaml`, goodYaml());
      const bomb = laughs();
      const text =
        where === 'a server address'
          ? goodYaml().replace(/address: "[^"]+"/, `address: ${bomb}`)
          : where === 'a listen entry'
            ? goodYaml().replace('listen: ["127.0.0.1:0"]', `listen: ["127.0.0.1:0", ${bomb}]`)
            : goodYaml().replace('health_check: { enabled: false }', `health_check: { enabled: false, interval: ${bomb} }`);
      writeAtomic(path, text);
      const t0 = Date.now();
      expect(await h.reload('test')).toBe(false);
      expect(Date.now() - t0).toBeLessThan(2000);
      const err = lines.filter((l) => l.includes('config reload failed')).pop()!;
      expect(err.length).toBeLessThan(1000);
      expect(await client.request(shortPacket(cid()), port)).toBe('a');
    });
  }

  it('refuses a key file replaced by a link to /dev/zero, a FIFO, or a huge file, without blocking', async () => {
    const keyPath = join(dir, 'lb.key');
    writeFileSync(keyPath, KEY_B64);
    const yaml = goodYaml().replace(`encryption_key: "${KEY_B64}"`, `encryption_key_file: lb.key`);
    const { h, port } = await start('keyfile.yaml', yaml);
    for (const [what, make, expected] of [
      ['a link to /dev/zero', () => symlinkSync('/dev/zero', keyPath), /is a character device/],
      ['a FIFO', () => execFileSync('mkfifo', [keyPath]), /is a FIFO/],
      ['a 10 MB file', () => writeFileSync(keyPath, Buffer.alloc(10 << 20)), /more than the 4096 allowed/],
    ] as const) {
      unlinkSync(keyPath);
      make();
      const t0 = Date.now();
      expect(await h.reload(what)).toBe(false);
      expect(Date.now() - t0).toBeLessThan(2000);
      expect(lines.filter((l) => l.includes('config reload failed')).pop()).toMatch(expected);
      expect(await client.request(shortPacket(cid()), port)).toBe('a');
    }
  });

  it('refuses a config file replaced by a FIFO or by non-UTF-8 text (naming the position)', async () => {
    const { h, path, port } = await start('fifo.yaml', goodYaml());
    unlinkSync(path);
    execFileSync('mkfifo', [path]);
    expect(await h.reload('fifo')).toBe(false);
    expect(lines.filter((l) => l.includes('config reload failed')).pop()).toMatch(/is a FIFO/);
    unlinkSync(path);
    writeFileSync(path, Buffer.concat([Buffer.from(goodYaml().replace('name: rl', 'name: r')), Buffer.from('# caf\xe9\n', 'latin1')]));
    expect(await h.reload('latin1')).toBe(false);
    expect(lines.filter((l) => l.includes('config reload failed')).pop()).toMatch(/not valid UTF-8: octet 0xe9 at line \d+, column 6/);
    expect(await client.request(shortPacket(cid()), port)).toBe('a');
  });
});

describe('smaller items (issue 10 item 6)', () => {
  const parse = (text: string) => parseStandaloneConfig(text, { baseDir: dir });
  const error = (text: string): ConfigError => {
    try {
      parse(text);
    } catch (e) {
      return e as ConfigError;
    }
    throw new Error('no error');
  };

  it('refuses to start, releasing its sockets, when the rotation state file cannot be written', async () => {
    const path = join(dir, 'rot.yaml');
    const port = await freePort();
    writeFileSync(
      path,
      goodYaml('').replace('listen: ["127.0.0.1:0"]', `listen: ["127.0.0.1:${port}"]`).replace('  encryption_key:', `  config_rotation: { enabled: true }\n  state_file: ${join(dir, 'missing-dir', 'state.json')}\n  encryption_key:`),
    );
    await expect(runStandalone({ configPath: path, logger, handleSignals: false, watch: false })).rejects.toThrow(/cannot write the state file .*state\.json: ENOENT/);
    expect(await canBind(port)).toBe(true); // the listening socket was closed
  });

  it('never echoes a key pasted into encryption_key_file', () => {
    const e = error(goodYaml().replace(`encryption_key: "${KEY_B64}"`, `encryption_key_file: "${KEY_B64}"`));
    expect(e.field).toBe('loadbalancer.encryption_key_file');
    expect(e.message).not.toContain(KEY_B64);
    expect(e.message).not.toContain(KEY_B64.slice(0, 10));
    const hex = error(goodYaml().replace(`encryption_key: "${KEY_B64}"`, `encryption_key_file: ${KEY.toString('hex')}`));
    expect(hex.message).not.toContain(KEY.toString('hex').slice(0, 10));
  });

  it('refuses IPv4-mapped IPv6 listen addresses (they never bind on IPv6-only sockets)', () => {
    const e = error(goodYaml().replace('listen: ["127.0.0.1:0"]', 'listen: ["[::ffff:127.0.0.1]:4433"]'));
    expect(e.field).toBe('listen[0]');
    expect(e.message).toMatch(/listen on "127\.0\.0\.1:4433"/);
  });

  it('reports NaN and Infinity weights as such', () => {
    expect(error(goodYaml().replace('server_id: "0001" }', 'server_id: "0001", weight: .nan }')).message).toMatch(/got NaN$/);
    expect(error(goodYaml().replace('server_id: "0001" }', 'server_id: "0001", weight: .inf }')).message).toMatch(/got Infinity$/);
  });

  it('bounds name and the size of every error message quoting a value', () => {
    const long = 'x'.repeat(100_000);
    const e = error(goodYaml().replace('name: rl', `name: ${long}`));
    expect(e.field).toBe('name');
    expect(e.message.length).toBeLessThan(300);
    expect(error(goodYaml().replace(/address: "[^"]+"/, `address: "${long}"`)).message.length).toBeLessThan(300);
  });

  it('writes `lb` once per log line when the logger carries it', async () => {
    await start('lb-once.yaml', goodYaml());
    const started = lines.find((l) => l.includes('data plane started'))!;
    expect(started.match(/"lb":/g)).toHaveLength(1);
  });
});

async function freePort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const p = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

async function canBind(port: number): Promise<boolean> {
  const s = createSocket('udp4');
  const ok = await new Promise<boolean>((resolve) => {
    s.once('error', () => resolve(false));
    s.bind({ port, address: '127.0.0.1', exclusive: true }, () => resolve(true));
  });
  if (ok) await new Promise<void>((r) => s.close(() => r()));
  return ok;
}

