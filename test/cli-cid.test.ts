import { describe, expect, it } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { runCli } from './helpers/run-cli.js';

const load = (name: string) => JSON.parse(readFileSync(new URL(`./fixtures/quic-lb/${name}`, import.meta.url), 'utf8'));
const oracle = load('vectors-oracle.json');
const draft = load('vectors-draft.json');

interface Vector {
  cid: string;
  len_self_encoded: boolean;
  status?: string;
  server_id: string;
  config_id: number;
}

const vectors: Vector[] = [
  ...draft.vectors.filter((v: Vector) => v.status === 'ok' || v.status === 'corrected'),
  ...oracle.vectors,
];

describe('quiclb cid --jsonl', () => {
  it('encodes every vector piped through it, one output line per input line in order', () => {
    const input = vectors
      .map((v) => JSON.stringify(v.len_self_encoded ? v : { ...v, first_octet_low: parseInt(v.cid.slice(0, 2), 16) & 0x1f }))
      .join('\n');
    const r = runCli(['cid', 'encode', '--jsonl'], input);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l).cid)).toEqual(vectors.map((v) => v.cid));
  });

  it('reproduces raw vector lines: random low bits are taken from the line\'s own cid', () => {
    const input = vectors.map((v) => JSON.stringify(v)).join('\n');
    const r = runCli(['cid', 'encode', '--jsonl'], input);
    expect(r.status).toBe(0);
    expect(r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l).cid)).toEqual(vectors.map((v) => v.cid));
  });

  it('decodes raw oracle decode-case lines (decoder_configs)', () => {
    const r = runCli(['cid', 'decode', '--jsonl'], oracle.decode_cases.map((c: unknown) => JSON.stringify(c)).join('\n'));
    expect(r.status).toBe(0);
    const out = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l));
    expect(out.map((o) => o.server_id)).toEqual(oracle.decode_cases.map((c: { expected_server_id: string | null }) => c.expected_server_id));
  });

  it('decodes every oracle decode case with its reason', () => {
    const cases = oracle.decode_cases.map((c: { decoder_configs: unknown; cid: string }) => ({ configs: c.decoder_configs, cid: c.cid }));
    const r = runCli(['cid', 'decode', '--jsonl'], cases.map((c: unknown) => JSON.stringify(c)).join('\n') + '\n');
    expect(r.status).toBe(0);
    const out = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l));
    oracle.decode_cases.forEach((c: { kind: string; expected_server_id: string | null }, i: number) => {
      expect(out[i].server_id).toBe(c.expected_server_id);
      const reason = { exact: null, 'trailing-bytes': null, 'config-id-7': 'reserved', 'unknown-config-id': 'unknown-config' }[c.kind];
      expect(out[i].reason).toBe(reason);
      expect(out[i].config_id === null).toBe(reason !== null);
    });
  });

  it('answers a bad line with an error in its place, keeps going, and exits with status 2', () => {
    const lines = [
      JSON.stringify({ config_id: 0, server_id_len: 1, nonce_len: 4, key: null, server_id: '01', nonce: '00000000', len_self_encoded: true }),
      '{not json',
      JSON.stringify({ config_id: 7, server_id_len: 1, nonce_len: 4, key: null, server_id: '01', nonce: '00000000' }),
      JSON.stringify({ config_id: 0, server_id_len: 1, nonce_len: 4, key: 'abc', server_id: '01', nonce: '00000000' }),
    ];
    const r = runCli(['cid', 'encode', '--jsonl'], lines.join('\n'));
    expect(r.status).toBe(2);
    const out = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l));
    expect(out).toHaveLength(4);
    expect(out[0]).toEqual({ cid: '050100000000' }); // 6 octets: self-encoded length 5
    expect(out[1].error).toMatch(/^line 2: not valid JSON/);
    expect(out[2].error).toContain('config_id: 7 (0b111) is reserved');
    expect(out[3].error).toContain('key: expected an even number of hex digits');
  });
});

describe('quiclb cid (single connection ID)', () => {
  it('decodes with --config specs', () => {
    const r = runCli(['cid', 'decode', '--config', '0:3:4:8f95f09245765f80256934e50c66207f', '0720b1d07b359d3c']);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ config_id: 0, server_id: 'ed793a', reason: null });
  });

  it('encodes from flags', () => {
    const r = runCli(['cid', 'encode', '--config-id', '0', '--server-id-len', '3', '--nonce-len', '4', '--key', '8f95f09245765f80256934e50c66207f', '--server-id', 'ed793a', '--nonce', 'ee080dbf', '--len-self-encoded']);
    expect(r.stdout.trim()).toBe('0720b1d07b359d3c');
  });

  it('inspect explains config id, length bits, server ID and nonce', () => {
    const r = runCli(['cid', 'inspect', '0767947d29be054a', '--config', '0:3:4:fdf726a9893ec05c0632d3956680baf0']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('config id       0');
    expect(r.stdout).toContain('self-encoded length of 8 octets');
    expect(r.stdout).toContain('four-pass');
    expect(r.stdout).toContain('server id       31441a');
    expect(r.stdout).toContain('nonce           9c69c275');
  });

  it('inspect names the reserved codepoint', () => {
    expect(runCli(['cid', 'inspect', 'e7aabbccddeeff00']).stdout).toContain('7: reserved');
  });

  it.each([
    [['cid', 'decode', '--config', '0:3:4', 'zz'], 'connection ID: expected an even number of hex digits'],
    [['cid', 'decode', '--config', '0:3', '00'], 'expected ID:SERVER_ID_LEN:NONCE_LEN'],
    [['cid', 'encode', '--config-id', '0', '--server-id-len', '3', '--nonce-len', '4', '--server-id', '01'], 'server_id: must be 3 bytes'],
    [['cid', 'encode', '--config-id', '0', '--server-id-len', '9', '--nonce-len', '11', '--server-id', '01'], 'must be at most 19'],
    [['cid', 'encode', '--bogus'], "Unknown option '--bogus'"],
    [['cid', 'frobnicate'], 'unknown cid subcommand'],
    [['nope'], 'unknown command "nope"'],
  ])('exits 2 with a message on bad input: %j', (args, message) => {
    const r = runCli(args);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(message);
  });
});

describe('key material in errors', () => {
  it('a malformed key is reported by position, never echoed', () => {
    const secret = '8f95f09245765f80256934e50c66207g';
    const r = runCli(['cid', 'decode', '--config', `0:3:4:${secret}`, '0720b1d07b359d3c']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('key: expected an even number of hex digits, got a non-hex character at position 32');
    expect(r.stderr).not.toContain(secret.slice(0, 8));
  });
});

describe('quiclb keygen', () => {
  it('prints 16 random bytes as hex, or base64', () => {
    const a = runCli(['keygen']).stdout.trim();
    const b = runCli(['keygen']).stdout.trim();
    expect(a).toMatch(/^[0-9a-f]{32}$/);
    expect(a).not.toBe(b);
    expect(Buffer.from(runCli(['keygen', '--base64']).stdout.trim(), 'base64')).toHaveLength(16);
  });
});
