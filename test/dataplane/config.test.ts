import { describe, expect, it, beforeAll, afterAll } from '@jest/globals';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseSocketAddress } from '../../lib/config/address.js';
import {
  ConfigError,
  describeConfig,
  loadStandaloneConfig,
  parseDuration,
  parseStandaloneConfig,
  readRotationState,
  snapshotFromJson,
  snapshotToJson,
  toSnapshot,
  overlayRotationState,
  writeRotationState,
  makeConfig,
} from '../../lib/index.js';

const KEY_B64 = Buffer.from('00112233445566778899aabbccddeeff', 'hex').toString('base64');

const SKETCH = `
loadbalancer:
  server_id_length: 2
  nonce_length: 6
  encryption_key: "${KEY_B64}"
  config_rotation: { enabled: true, interval: "24h" }
servers:
  - { id: "server1", address: "10.0.0.1:443", weight: 100 }
monitoring:
  prometheus_port: 9090
  health_check: { interval: "10s", timeout: "2s", failures_threshold: 3 }
`;

function parse(yaml: string) {
  return parseStandaloneConfig(yaml, { baseDir: dir });
}

function errorOf(yaml: string): ConfigError {
  try {
    parse(yaml);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

const base = (servers = `  - { id: a, address: "127.0.0.1:4001" }`, lb = `  server_id_length: 2\n  nonce_length: 6\n  encryption_key: "${KEY_B64}"`) =>
  `loadbalancer:\n${lb}\nservers:\n${servers}\n`;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'quiclb-config-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('standalone YAML', () => {
  it('accepts the design sketch of the issue, field names as given', () => {
    const c = parse(SKETCH);
    expect(c.serverIdLength).toBe(2);
    expect(c.configs).toHaveLength(1);
    expect(c.configs[0].config).toMatchObject({ configId: 0, serverIdLength: 2, nonceLength: 6 });
    expect(Buffer.from(c.configs[0].config.key!).toString('hex')).toBe('00112233445566778899aabbccddeeff');
    expect(c.rotation).toMatchObject({ enabled: true, intervalMs: 86_400_000, drainMs: 300_000 });
    expect(c.servers[0]).toMatchObject({ name: 'server1', weight: 100, state: 'active', serverIdSource: 'derived' });
    expect(c.servers[0].address).toEqual({ host: '10.0.0.1', port: 443, family: 4 });
    expect(c.monitoring.port).toBe(9090);
    expect(c.health).toMatchObject({ enabled: true, intervalMs: 10_000, timeoutMs: 2_000, failuresThreshold: 3, successesThreshold: 2 });
    expect(c.listen).toEqual([{ host: '0.0.0.0', port: 443, family: 4 }]);
    expect(c.workers).toBe(1);
  });

  it('upstream_ports.seed_file: resolved against the file\'s folder; absent: null; malformed: named', () => {
    expect(parse(base()).upstreamPortSeedFile).toBeNull();
    expect(parse(`upstream_ports: { seed_file: state/seed }\n${base()}`).upstreamPortSeedFile).toBe(join(dir, 'state', 'seed'));
    expect(parse(`upstream_ports: { seed_file: /var/lib/quiclb/seed }\n${base()}`).upstreamPortSeedFile).toBe('/var/lib/quiclb/seed');
    expect(errorOf(`upstream_ports: {}\n${base()}`).message).toMatch(/^upstream_ports\.seed_file: is required/);
    expect(errorOf(`upstream_ports: { seed: x }\n${base()}`).field).toBe('upstream_ports.seed');
    expect(errorOf(`upstream_ports: stable\n${base()}`).field).toBe('upstream_ports');
    expect(errorOf(`upstream_ports: { seed_file: 7 }\n${base()}`).field).toBe('upstream_ports.seed_file');
  });

  it('accepts examples/standalone.yaml', () => {
    const loaded = loadStandaloneConfig(fileURLToPath(new URL('../../examples/standalone.yaml', import.meta.url)));
    expect(loaded.config.servers.map((s) => s.name)).toEqual(['server1', 'server2', 'server3']);
    expect(loaded.config.listen.map((a) => a.family)).toEqual([4, 6]);
  });

  it('derives server IDs from SHA-256 of the id, and takes explicit hex IDs', () => {
    const c = parse(base(`  - { id: server1, address: "127.0.0.1:1" }\n  - { id: b, address: "[::1]:2", server_id: "0a0b" }`));
    const expected = createHash('sha256').update('server1').digest().subarray(0, 2);
    expect(Buffer.from(c.servers[0].serverId).equals(expected)).toBe(true);
    expect(Buffer.from(c.servers[1].serverId).toString('hex')).toBe('0a0b');
    expect(c.servers[1].serverIdSource).toBe('given');
    expect(c.servers[1].address).toEqual({ host: '::1', port: 2, family: 6 });
  });

  it('converts to a valid snapshot, and the snapshot survives its JSON form', () => {
    const loaded = overlayRotationState(parse(base()));
    const s = toSnapshot(loaded, 7);
    expect(s.version).toBe(7);
    expect(s.shortDcidLength).toBe(9);
    const back = snapshotFromJson(JSON.parse(JSON.stringify(snapshotToJson(s))));
    expect(snapshotToJson(back)).toEqual(snapshotToJson(s));
  });

  it("reads the top-level routing mode ('quic-lb' by default) into the snapshot, its JSON form and the summary", () => {
    const dflt = overlayRotationState(parse(base()));
    expect(dflt.config.routing).toBe('quic-lb');
    expect(toSnapshot(dflt, 1).routing).toBe('quic-lb');
    expect(describeConfig(dflt).routing).toBe('quic-lb');
    const tuple = overlayRotationState(parse(`routing: 4-tuple\n${base()}`));
    expect(tuple.config.routing).toBe('4-tuple');
    const s = toSnapshot(tuple, 2);
    expect(s.routing).toBe('4-tuple');
    expect(describeConfig(tuple).routing).toBe('4-tuple');
    const json = snapshotToJson(s);
    expect(json.routing).toBe('4-tuple');
    expect(snapshotFromJson(JSON.parse(JSON.stringify(json))).routing).toBe('4-tuple');
    // The mode is part of the snapshot's content: a reload that only changes it is not a no-op.
    expect(JSON.stringify(snapshotToJson({ ...s, version: 0 }))).not.toBe(JSON.stringify(snapshotToJson({ ...toSnapshot(dflt, 2), version: 0 })));
    // A JSON snapshot with a bad mode is rejected, naming the field.
    expect(() => snapshotFromJson({ ...json, routing: 'round-robin' as never })).toThrow(/^routing: must be one of quic-lb, 4-tuple, got "round-robin"/);
  });

  it('accepts several configs with states, and exactly one active', () => {
    const k = (n: number) => Buffer.alloc(16, n).toString('base64');
    const c = parse(
      base(
        undefined,
        `  server_id_length: 3\n  configs:\n    - { config_id: 2, nonce_length: 5, encryption_key: "${k(1)}", state: active }\n` +
          `    - { config_id: 0, nonce_length: 8, encryption_key: "${k(2)}", state: draining, extra_length: 2 }\n` +
          `    - { config_id: 5, nonce_length: 13, encryption_key: "${k(3)}", state: accepting, length_self_encoded: true }`,
      ),
    );
    expect(c.configs.map((l) => [l.config.configId, l.state])).toEqual([
      [2, 'active'],
      [0, 'draining'],
      [5, 'accepting'],
    ]);
    expect(c.configs[1].config.extraLength).toBe(2);
    expect(c.configs[2].config.lengthSelfEncoded).toBe(true);
  });

  it('refuses two live configs with one key (nonces could repeat under it), naming both, never the key', () => {
    const yaml = base(
      undefined,
      `  server_id_length: 2\n  configs:\n    - { config_id: 1, nonce_length: 6, encryption_key: "${KEY_B64}", state: active }\n` +
        `    - { config_id: 2, nonce_length: 6, encryption_key: "${KEY_B64}", state: accepting }`,
    );
    let msg = '';
    try {
      parse(yaml);
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(/^loadbalancer\.configs\[1\]: has the same key as loadbalancer\.configs\[0\]; live configs need keys of their own/);
    expect(msg).not.toContain(KEY_B64.slice(0, 8));
  });

  it('refuses a numeric server id instead of turning 01 into "1"', () => {
    const yaml = base(undefined).replace(/id: (\w+),/, 'id: 01,');
    expect(yaml).toContain('id: 01,');
    expect(() => parse(yaml)).toThrow(/^servers\[0\]\.id: must be a string: quote it, e\.g\. id: "1" \(YAML reads unquoted digits as a number, here 1/);
  });

  it('writes IPv6 literals in canonical form (one address, one spelling), keeping a zone', () => {
    expect(parseSocketAddress('x', '[FD00:0:0::1]:443').host).toBe('fd00::1');
    expect(parseSocketAddress('x', '[0:0:0:0:0:0:0:1]:443').host).toBe('::1');
    expect(parseSocketAddress('x', '[fe80::0:1%eth0]:443').host).toBe('fe80::1%eth0');
    expect(parseSocketAddress('x', '10.0.0.1:443').host).toBe('10.0.0.1');
    // so two spellings of one listen address are caught as a duplicate
    expect(() => parse(base(undefined).replace('loadbalancer:', 'listen: ["[::1]:4433", "[0::1]:4433"]\nloadbalancer:'))).toThrow(/^listen\[1\]: same address as listen\[0\]/);
  });

  it('reads keys from files relative to the config (base64, hex or raw)', () => {
    writeFileSync(join(dir, 'k64'), KEY_B64 + '\n');
    writeFileSync(join(dir, 'khex'), '00112233445566778899aabbccddeeff\n');
    writeFileSync(join(dir, 'kraw'), Buffer.from('00112233445566778899aabbccddeeff', 'hex'));
    for (const f of ['k64', 'khex', 'kraw']) {
      const c = parse(base(undefined, `  server_id_length: 2\n  nonce_length: 6\n  encryption_key_file: ${f}`));
      expect(Buffer.from(c.configs[0].config.key!).toString('hex')).toBe('00112233445566778899aabbccddeeff');
      expect(c.watchedFiles).toContain(join(dir, f));
    }
  });

  it('parses durations', () => {
    expect(parseDuration('x', '500ms')).toBe(500);
    expect(parseDuration('x', '1h30m')).toBe(5_400_000);
    expect(parseDuration('x', 2)).toBe(2000);
    expect(parseDuration('x', '1.5s')).toBe(1500);
    expect(() => parseDuration('flows.idle_timeout', '10 parsecs')).toThrow(/flows.idle_timeout: must be a duration/);
  });

  const cases: [string, string, RegExp][] = [
    ['unknown top-level field with a hint', `${base()}monitorng: {}\n`, /^monitorng: unknown field \(did you mean monitoring\?\)/],
    ['unknown server field with a hint', base(`  - { id: a, address: "127.0.0.1:1", wieght: 3 }`), /^servers\[0\]\.wieght: unknown field \(did you mean weight\?\)/],
    ['missing loadbalancer', `servers: []\n`, /^loadbalancer: is required/],
    ['bad port', base(`  - { id: a, address: "127.0.0.1:70000" }`), /^servers\[0\]\.address: port must be 1\.\.65535, got 70000/],
    ['host name', base(`  - { id: a, address: "example.com:443" }`), /^servers\[0\]\.address: host must be an IPv4 or IPv6 address/],
    ['IPv6 without brackets', base(`  - { id: a, address: "::1:443" }`), /^servers\[0\]\.address: IPv6 addresses need brackets/],
    ['short key', base(undefined, `  server_id_length: 2\n  nonce_length: 6\n  encryption_key: "c2hvcnQ="`), /^loadbalancer\.encryption_key: must be 16 bytes in base64/],
    ['nonce too small', base(undefined, `  server_id_length: 2\n  nonce_length: 3`), /^loadbalancer\.nonce_length: must be between 4 and 18, got 3/],
    ['lengths too long', base(undefined, `  server_id_length: 8\n  nonce_length: 12`), /^loadbalancer\.nonce_length: server_id_len \+ nonce_len must be at most 19/],
    ['extra_length too long, in the YAML name', base(undefined, `  server_id_length: 2\n  nonce_length: 6\n  extra_length: 12`), /^loadbalancer\.extra_length: must be between 0 and 11, got 12/],
    ['server_id wrong length', base(`  - { id: a, address: "127.0.0.1:1", server_id: "0a" }`), /^servers\[0\]\.server_id: must be exactly server_id_length = 2 bytes/],
    ['server_id not hex', base(`  - { id: a, address: "127.0.0.1:1", server_id: "zz11" }`), /^servers\[0\]\.server_id: expected an even number of hex digits/],
    [
      'duplicate explicit server IDs name both servers',
      base(`  - { id: a, address: "127.0.0.1:1", server_id: "0001" }\n  - { id: b, address: "127.0.0.1:2", server_id: "0001" }`),
      /^servers\[1\]\.server_id: server ID 0001 \(given\) is also the server ID of servers\[0\] \("a", given\)/,
    ],
    ['duplicate ids', base(`  - { id: a, address: "127.0.0.1:1" }\n  - { id: a, address: "127.0.0.1:2" }`), /^servers\[1\]\.id: "a" is also the id of servers\[0\]/],
    ['weight', base(`  - { id: a, address: "127.0.0.1:1", weight: -1 }`), /^servers\[0\]\.weight: must be a number 0\.\.1000000/],
    ['server state', base(`  - { id: a, address: "127.0.0.1:1", state: gone }`), /^servers\[0\]\.state: must be one of active, draining/],
    [
      'two active configs',
      base(undefined, `  server_id_length: 2\n  configs:\n    - { config_id: 0, nonce_length: 6, state: active }\n    - { config_id: 1, nonce_length: 6, state: active }`),
      /^loadbalancer\.configs: exactly one config must have state: active, got 2/,
    ],
    [
      'duplicate config ids',
      base(undefined, `  server_id_length: 2\n  configs:\n    - { config_id: 1, nonce_length: 6, state: active }\n    - { config_id: 1, nonce_length: 6, state: draining }`),
      /^loadbalancer\.configs\[1\]\.config_id: 1 is also the config_id of loadbalancer\.configs\[0\]/,
    ],
    ['config id 7', base(undefined, `  server_id_length: 2\n  nonce_length: 6\n  config_id: 7`), /^loadbalancer\.config_id: 7 \(0b111\) is reserved/],
    [
      'shorthand mixed with configs',
      base(undefined, `  server_id_length: 2\n  nonce_length: 6\n  configs:\n    - { config_id: 0, nonce_length: 6, state: active }`),
      /^loadbalancer\.nonce_length: cannot be combined with loadbalancer\.configs/,
    ],
    [
      'plaintext mixed with encrypted',
      base(undefined, `  server_id_length: 2\n  configs:\n    - { config_id: 0, nonce_length: 6, state: active }\n    - { config_id: 1, nonce_length: 6, state: draining, encryption_key: "${KEY_B64}" }`),
      /^loadbalancer\.configs: mixes plaintext and encrypted configs/,
    ],
    ['rotation of a plaintext config', base(undefined, `  server_id_length: 2\n  nonce_length: 6\n  config_rotation: { enabled: true }`), /^loadbalancer\.config_rotation\.enabled: rotation generates encrypted configs/],
    [
      'follow together with enabled',
      base(undefined, `  server_id_length: 2\n  nonce_length: 6\n  encryption_key: "${KEY_B64}"\n  config_rotation: { enabled: true, follow: true }`),
      /^loadbalancer\.config_rotation\.follow: follow: true is for instances that do not rotate themselves/,
    ],
    ['bad duration', `${base()}flows: { idle_timeout: soon }\n`, /^flows\.idle_timeout: must be a duration/],
    ['timeout above interval', `${base()}monitoring: { health_check: { interval: 1s, timeout: 2s } }\n`, /^monitoring\.health_check\.timeout: must not exceed interval/],
    ['workers', `${base()}workers: many\n`, /^workers: must be an integer 1\.\.256 or "auto"/],
    ['routing mode', `${base()}routing: naive\n`, /^routing: must be one of quic-lb, 4-tuple, got "naive"/],
    ['routing under loadbalancer (it is top-level)', base(undefined, `  server_id_length: 2\n  nonce_length: 6\n  routing: 4-tuple`), /^loadbalancer\.routing: unknown field \(routing is a top-level field/],
    ['missing key file', base(undefined, `  server_id_length: 2\n  nonce_length: 6\n  encryption_key_file: nope.key`), /^loadbalancer\.encryption_key_file: cannot read .*nope\.key: ENOENT/],
    ['YAML syntax', `loadbalancer:\n  server_id_length: 2\n   nonce_length: 6\n`, /^yaml: line 3, column/],
    ['empty file', ``, /the file is empty/],
    ['listen duplicate', `${base()}listen: ["127.0.0.1:5000", "127.0.0.1:5000"]\n`, /^listen\[1\]: same address as listen\[0\]/],
  ];
  it.each(cases)('rejects %s, naming the field', (_name, yaml, re) => {
    expect(errorOf(yaml).message).toMatch(re);
  });

  it('reports a collision of derived server IDs naming both servers', () => {
    // With one-octet IDs, find two names whose SHA-256 starts with the same octet.
    const seen = new Map<number, string>();
    let pair: [string, string] | null = null;
    for (let i = 0; pair === null; i++) {
      const n = `s${i}`;
      const b = createHash('sha256').update(n).digest()[0];
      if (seen.has(b)) pair = [seen.get(b)!, n];
      else seen.set(b, n);
    }
    const yaml = base(`  - { id: ${pair[0]}, address: "127.0.0.1:1" }\n  - { id: ${pair[1]}, address: "127.0.0.1:2" }`, `  server_id_length: 1\n  nonce_length: 6`);
    expect(errorOf(yaml).message).toMatch(
      new RegExp(`^servers\\[1\\]\\.server_id: server ID [0-9a-f]{2} \\(derived from id "${pair[1]}"\\) is also the server ID of servers\\[0\\] \\("${pair[0]}", derived\\); give one of them an explicit server_id`),
    );
  });

  it('never puts key material into error messages or the summary', () => {
    const secret = 'AAECAwQFBgcICQoLDA0ODw'; // 22 chars: almost a key
    const e = errorOf(base(undefined, `  server_id_length: 2\n  nonce_length: 6\n  encryption_key: "${secret}x"`));
    expect(e.message).not.toContain(secret);
    const summary = JSON.stringify(describeConfig(overlayRotationState(parse(base()))));
    expect(summary).not.toContain(KEY_B64);
    expect(summary).not.toContain('00112233445566778899aabbccddeeff');
    expect(summary).toContain('"encrypted":true');
  });
});

describe('rotation state file', () => {
  it('overlays the YAML config when rotation is enabled and fits; is written 0600', () => {
    const path = join(dir, 'rot.yaml');
    writeFileSync(path, base(undefined, `  server_id_length: 2\n  nonce_length: 6\n  encryption_key: "${KEY_B64}"\n  config_rotation: { enabled: true, interval: 1h }`));
    let loaded = loadStandaloneConfig(path);
    expect(loaded.rotationState).toBeNull();
    expect(loaded.config.stateFile).toBe(`${path}.state.json`);
    const now = Date.now();
    const k2 = Buffer.alloc(16, 7);
    writeRotationState(loaded.config.stateFile!, {
      serverIdLength: 2,
      lastRotationAt: now,
      configs: [
        { config: makeConfig({ configId: 1, serverIdLength: 2, nonceLength: 6, key: k2 }), state: 'active', since: now },
        { config: loaded.config.configs[0].config, state: 'draining', since: now },
      ],
    });
    expect(statSync(loaded.config.stateFile!).mode & 0o777).toBe(0o600);
    expect(readRotationState(loaded.config.stateFile!)!.configs).toHaveLength(2);
    loaded = loadStandaloneConfig(path);
    expect(loaded.liveConfigs.map((l) => [l.config.configId, l.state])).toEqual([
      [1, 'active'],
      [0, 'draining'],
    ]);
    expect(loaded.config.watchedFiles).toContain(`${path}.state.json`);
    // A state file that does not fit (other server_id_length) is ignored with a warning.
    writeFileSync(path, base(undefined, `  server_id_length: 3\n  nonce_length: 6\n  encryption_key: "${KEY_B64}"\n  config_rotation: { enabled: true, interval: 1h }`));
    loaded = loadStandaloneConfig(path);
    expect(loaded.stateFileWarning).toMatch(/server_id_length 2, the config 3: ignored/);
    expect(loaded.liveConfigs[0].config.serverIdLength).toBe(3);
  });
});
