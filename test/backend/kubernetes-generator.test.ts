/**
 * ServerCidGenerator.fromKubernetes against real files laid out and swapped as the kubelet does (kubelet-volume.ts):
 * the configs Secret volume and the downward-API server ID, one projected volume or two volumes.
 */
import { describe, it, expect, afterEach } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { lstatSync, mkdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ServerCidGenerator, type GeneratorInfo } from '../../lib/index.js';
import { CidDecoder, decryptCid } from '../../lib/quiclb/decoder.js';
import { cidLength, UNROUTABLE_CONFIG_ID } from '../../lib/quiclb/config.js';
import { KubeletVolume } from './kubelet-volume.js';
import { keyFor, liveConfig, secretFiles, tempDir, waitFor, type ConfigSpec } from './fixtures.js';

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanup.splice(0).reverse()) f();
});

function setup(options: { pollMs?: number; watch?: boolean } = {}) {
  const t = tempDir('backend');
  cleanup.push(t.remove);
  const vol = new KubeletVolume(join(t.dir, 'quiclb'));
  const open = () => {
    const gen = ServerCidGenerator.fromKubernetes({ dir: vol.dir }, options);
    cleanup.push(() => gen.close());
    return gen;
  };
  return { dir: t.dir, vol, open };
}

function decoderFor(configs: readonly ConfigSpec[]): CidDecoder {
  return new CidDecoder(configs.map(liveConfig));
}

function expectUnroutable(cid: Buffer): void {
  expect(cid[0] >> 5).toBe(UNROUTABLE_CONFIG_ID);
  expect((cid[0] & 0x1f) + 1).toBe(cid.length); // self-encoded length (draft-21 §3.2)
}

/** Mints n CIDs and checks each decodes to `sid` under `configId`; returns them. */
function mintAndCheck(gen: ServerCidGenerator, decoder: CidDecoder, configId: number, sid: string, n = 50): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const cid = gen.next();
    const d = decoder.decode(cid);
    expect(d.configId).toBe(configId);
    expect(d.serverId?.toString('hex')).toBe(sid);
    out.push(cid.toString('hex'));
  }
  return out;
}

const C1: ConfigSpec = { id: 1, state: 'active' };

describe('ServerCidGenerator.fromKubernetes', () => {
  it('mints 0b111 until both files are there and valid, then the active config, decoding to the annotated server ID', async () => {
    const { vol, open } = setup({ pollMs: 200 });
    const gen = open(); // the volume is still empty
    const infos: GeneratorInfo[] = [];
    gen.on('change', (i) => infos.push(i));
    expect(gen.activeConfigId).toBeNull();
    expectUnroutable(gen.next());
    expect(gen.next().length).toBe(8);
    expect(gen.info().reason).toMatch(/configs\.json does not exist \(mount the Secret <name>-quiclb-configs\)/);

    // The Secret is there, the operator has not annotated the pod yet: the downward API writes an empty file.
    vol.write({ ...secretFiles([C1]), 'server-id': '' });
    expect(await waitFor(() => /server-id is empty/.test(gen.info().reason ?? ''))).toBe(true);
    const u = gen.next();
    expectUnroutable(u);
    expect(u.length).toBe(cidLength(liveConfig(C1))); // as long as the config's CIDs: same short-header length
    expect(gen.liveConfigs().map((l) => l.config.configId)).toEqual([1]);

    vol.write({ ...secretFiles([C1]), 'server-id': '00a7' });
    expect(readlinkSync(join(vol.dir, 'configs.json'))).toBe('..data/configs.json'); // the kubelet's layout
    expect(lstatSync(join(vol.dir, '..data')).isSymbolicLink()).toBe(true);
    expect(await waitFor(() => gen.activeConfigId === 1)).toBe(true);
    expect(gen.info()).toEqual({ activeConfigId: 1, serverId: '00a7', cidLength: 9, reason: null });
    mintAndCheck(gen, decoderFor([C1]), 1, '00a7');
    expect(infos.at(-1)).toEqual(gen.info());
    expect(gen.lastError).toBeNull();
  });

  it('follows a rotation (accepting: not yet; active: switch; draining, retired) and server-ID changes, with two volumes and inotify only', async () => {
    const t = tempDir('backend2');
    cleanup.push(t.remove);
    const secret = new KubeletVolume(join(t.dir, 'secret'));
    const podinfo = new KubeletVolume(join(t.dir, 'podinfo'));
    secret.write(secretFiles([C1]));
    podinfo.write({ 'server-id': '0102' });
    // pollMs of a minute: only the inotify events of the ..data swaps can make these steps within the waits below.
    const gen = ServerCidGenerator.fromKubernetes(
      { configsFile: join(secret.dir, 'configs.json'), serverIdFile: join(podinfo.dir, 'server-id') },
      { pollMs: 60_000 },
    );
    cleanup.push(() => gen.close());
    const changes: (number | null)[] = [];
    gen.on('change', (i) => changes.push(i.activeConfigId));
    const seen = new Set<string>();
    const all = [C1, { id: 2, state: 'active', nonce: 8 } as ConfigSpec];
    const dec = decoderFor(all);
    const old = mintAndCheck(gen, dec, 1, '0102');
    old.forEach((c) => seen.add(c));

    // Config 2 accepting: the data planes decode it, backends must not mint with it yet.
    secret.write(secretFiles([C1, { id: 2, state: 'accepting', nonce: 8 }]));
    expect(await waitFor(() => gen.liveConfigs().length === 2)).toBe(true);
    expect(gen.activeConfigId).toBe(1);
    mintAndCheck(gen, dec, 1, '0102').forEach((c) => seen.add(c));

    // Active: switch; config 1 drains (its CIDs still decode to this server).
    secret.write(secretFiles([{ id: 2, state: 'active', nonce: 8 }, { id: 1, state: 'draining' }]));
    expect(await waitFor(() => gen.activeConfigId === 2)).toBe(true);
    expect(gen.cidLength).toBe(11);
    mintAndCheck(gen, dec, 2, '0102').forEach((c) => seen.add(c));
    for (const c of old) expect(dec.decode(Buffer.from(c, 'hex')).serverId?.toString('hex')).toBe('0102');

    // Retired: the same active config keeps its nonce counter (no CID repeats).
    secret.write(secretFiles([{ id: 2, state: 'active', nonce: 8 }]));
    expect(await waitFor(() => gen.liveConfigs().length === 1)).toBe(true);
    mintAndCheck(gen, dec, 2, '0102').forEach((c) => seen.add(c));
    expect(seen.size).toBe(200);

    // A new server ID (e.g. the load balancer was recreated): minted from the next CID on.
    podinfo.write({ 'server-id': '0a0b' });
    expect(await waitFor(() => gen.serverId?.toString('hex') === '0a0b')).toBe(true);
    mintAndCheck(gen, dec, 2, '0a0b');

    // The annotation removed (the load balancer deleted): no server ID, 0b111.
    podinfo.write({ 'server-id': '' });
    expect(await waitFor(() => gen.activeConfigId === null)).toBe(true);
    expectUnroutable(gen.next());
    expect(changes).toEqual([2, 2, null]); // accepting and retiring change nothing a caller sees
    expect(gen.lastError).toBeNull();
  });

  const CONFIGS_BAD: [string, (payload: string) => void, RegExp][] = [
    ['not JSON', (p) => writeFileSync(join(p, 'configs.json'), '{"format": '), /configs\.json: state_file: not valid JSON/],
    ['another format', (p) => writeFileSync(join(p, 'configs.json'), '{"format":"x/1"}'), /state_file\.format: must be "quiclb-rotation-state\/1"/],
    [
      'a 15-byte key',
      (p) =>
        writeFileSync(
          join(p, 'configs.json'),
          secretFiles([C1])['configs.json'].toString().replace(keyFor(1).toString('base64'), Buffer.alloc(15, 1).toString('base64')),
        ),
      /state_file\.configs\[0\]\.key/,
    ],
    ['empty', (p) => writeFileSync(join(p, 'configs.json'), ''), /not valid JSON/],
    ['not UTF-8', (p) => writeFileSync(join(p, 'configs.json'), Buffer.from([0x7b, 0xff, 0x7d])), /not valid UTF-8: octet 0xff at line 1, column 2/],
    ['larger than 1 MiB', (p) => writeFileSync(join(p, 'configs.json'), Buffer.alloc((1 << 20) + 1, 0x20)), /more than the 1048576 allowed/],
    ['a directory', (p) => (rmSync(join(p, 'configs.json')), mkdirSync(join(p, 'configs.json'))), /cannot read: is a directory, not a regular file/],
    ['a FIFO without writer', (p) => (rmSync(join(p, 'configs.json')), execFileSync('mkfifo', [join(p, 'configs.json')])), /cannot read: is a FIFO, not a regular file/],
  ];

  it.each(CONFIGS_BAD)('configs.json %s: the last good configs stay in force, lastError and "error" say why, no key in it', (_name, spoil, message) => {
    const { vol, open } = setup({ watch: false });
    vol.write({ ...secretFiles([C1]), 'server-id': '0001' });
    const gen = open();
    expect(gen.activeConfigId).toBe(1);
    const errors: Error[] = [];
    gen.on('error', (e) => errors.push(e));
    vol.write({ ...secretFiles([C1]), 'server-id': '0001' });
    spoil(vol.payloadDir());
    expect(gen.reload()).toBe(false);
    expect(gen.lastError?.message).toMatch(message);
    expect(gen.lastError?.message).toMatch(/^\/.*\/configs\.json: /);
    expect(errors).toHaveLength(1);
    expect(errors[0].message).not.toContain(keyFor(1).toString('base64'));
    expect(gen.activeConfigId).toBe(1);
    mintAndCheck(gen, decoderFor([C1]), 1, '0001', 10);
    // A good file again: taken, lastError cleared.
    vol.write({ ...secretFiles([{ id: 3, state: 'active' }]), 'server-id': '0001' });
    expect(gen.reload()).toBe(true);
    expect(gen.lastError).toBeNull();
    expect(gen.activeConfigId).toBe(3);
  });

  const SERVER_ID_BAD: [string, string | Buffer, RegExp][] = [
    ['not hex', 'zz01', /server-id: server ID: expected an even number of hex digits, got a non-hex character at position 1/],
    ['an odd number of digits', '001', /odd number of digits \(3\)/],
    ['16 octets', '00'.repeat(16), /must be 1 to 15 octets \(hex\), got 16/],
    ['larger than 256 bytes', 'a'.repeat(300), /is 300 bytes, more than the 256 allowed/],
    ['not UTF-8', Buffer.from([0x30, 0xc0]), /not valid UTF-8/],
  ];

  it.each(SERVER_ID_BAD)('server-id %s: the last good server ID stays in force (configs still followed)', (_name, content, message) => {
    const { vol, open } = setup({ watch: false });
    vol.write({ ...secretFiles([C1]), 'server-id': '0001' });
    const gen = open();
    vol.write({ ...secretFiles([{ id: 2, state: 'active' }, { id: 1, state: 'draining' }]), 'server-id': content });
    expect(gen.reload()).toBe(false);
    expect(gen.lastError?.message).toMatch(message);
    expect(gen.serverId?.toString('hex')).toBe('0001');
    expect(gen.activeConfigId).toBe(2); // the good configs.json beside it was taken
    mintAndCheck(gen, decoderFor([{ id: 2, state: 'active' }]), 2, '0001', 10);
  });

  it('never throws for bad files at start: 0b111, the reason and lastError say why, and it recovers when they are fixed', async () => {
    const { vol, open } = setup({ pollMs: 200 });
    vol.write({ 'configs.json': '{', 'server-id': 'xyz' });
    const gen = open();
    expect(gen.activeConfigId).toBeNull();
    expectUnroutable(gen.next());
    expect(gen.info().reason).toMatch(/configs\.json is invalid \(no good version read yet\)/);
    expect(gen.lastError?.message).toMatch(/server-id: server ID: expected an even number of hex digits/);
    vol.write({ ...secretFiles([C1]), 'server-id': 'xyz' });
    expect(await waitFor(() => /server-id is invalid/.test(gen.info().reason ?? ''))).toBe(true);
    vol.write({ ...secretFiles([C1]), 'server-id': '0005' });
    expect(await waitFor(() => gen.activeConfigId === 1)).toBe(true);
    expect(gen.lastError).toBeNull();
    mintAndCheck(gen, decoderFor([C1]), 1, '0005', 10);
  });

  it('a server ID whose length is not the configs\' server_id_length: 0b111 with the reason', () => {
    const { vol, open } = setup({ watch: false });
    vol.write({ ...secretFiles([C1]), 'server-id': '000102' });
    const gen = open();
    expect(gen.activeConfigId).toBeNull();
    expect(gen.info().reason).toBe('the server ID is 3 octets but config 1 has server_id_length 2');
    expectUnroutable(gen.next());
    expect(gen.lastError).toBeNull();
  });

  it('configs.json without an active config (only accepting): 0b111', () => {
    const { vol, open } = setup({ watch: false });
    vol.write({ ...secretFiles([{ id: 4, state: 'accepting' }]), 'server-id': '0001' });
    const gen = open();
    expect(gen.info().reason).toBe('no active config');
    expectUnroutable(gen.next());
  });

  it('a downward-API file missing from the volume names the annotation to mount', () => {
    const { vol, open } = setup({ watch: false });
    vol.write(secretFiles([C1]));
    const gen = open();
    expect(gen.info().reason).toMatch(/server-id does not exist \(mount the pod annotation quiclb\.io\/server-id with the downward API\)/);
  });

  it('plaintext and self-encoded-length configs as well', () => {
    const { vol, open } = setup({ watch: false });
    const spec: ConfigSpec = { id: 0, state: 'active', key: null, selfEncoded: true, nonce: 10, sidLen: 3 };
    vol.write({ ...secretFiles([spec]), 'server-id': 'abcdef' });
    const gen = open();
    const cid = gen.next();
    expect(cid.length).toBe(14);
    expect(cid[0] & 0x1f).toBe(13);
    mintAndCheck(gen, decoderFor([spec]), 0, 'abcdef', 10);
  });

  it('a config\'s nonce counter continues after a pause (server ID changed and back, configs.json briefly missing): no nonce repeats under a key', () => {
    const { vol, open } = setup({ watch: false });
    vol.write({ ...secretFiles([C1]), 'server-id': '0001' });
    const gen = open();
    const config = liveConfig(C1);
    const nonce = (cid: Buffer) => BigInt('0x' + decryptCid(config, cid).nonce.toString('hex'));
    const wrap = 1n << 48n;
    let last = nonce(gen.next());
    const expectNext = (sid: string) => {
      const cid = gen.next();
      expect(decryptCid(config, cid).serverId.toString('hex')).toBe(sid);
      const n = nonce(cid);
      return n;
    };
    // Another server ID: its own counter.
    vol.write({ ...secretFiles([C1]), 'server-id': '0002' });
    expect(gen.reload()).toBe(true);
    expectNext('0002');
    // Back to the first one: its counter continues where it stopped.
    vol.write({ ...secretFiles([C1]), 'server-id': '0001' });
    expect(gen.reload()).toBe(true);
    let n = expectNext('0001');
    expect(n).toBe((last + 1n) % wrap);
    last = n;
    // configs.json gone for a moment (0b111 meanwhile), then back: the counter continues.
    vol.write({ 'server-id': '0001' });
    expect(gen.reload()).toBe(true);
    expectUnroutable(gen.next());
    vol.write({ ...secretFiles([C1]), 'server-id': '0001' });
    expect(gen.reload()).toBe(true);
    n = expectNext('0001');
    expect(n).toBe((last + 1n) % wrap);
    // A new key under the same config id is a new config: a fresh counter (any start is fine: another key).
    vol.write({ ...secretFiles([{ id: 1, state: 'active', key: Buffer.alloc(16, 0x77) }]), 'server-id': '0001' });
    expect(gen.reload()).toBe(true);
    expect(gen.activeConfigId).toBe(1);
  });
});
