import { describe, expect, it } from '@jest/globals';
import { readFileSync } from 'node:fs';
import {
  CidDecoder,
  cipherModeOf,
  configFromJson,
  decryptCid,
  encodeCid,
  QuicLbCipher,
  makeConfig,
  parseHex,
  toHex,
} from '../lib/index.js';

interface Vector {
  id: string;
  status?: string;
  mode: string;
  config_id: number;
  server_id_len: number;
  nonce_len: number;
  key: string | null;
  server_id: string;
  nonce: string;
  cid: string;
  len_self_encoded: boolean;
}
interface DecodeCase {
  id: string;
  kind: string;
  decoder_configs: unknown[];
  cid: string;
  expected_server_id: string | null;
}

const load = (name: string) => JSON.parse(readFileSync(new URL(`./fixtures/quic-lb/${name}`, import.meta.url), 'utf8'));
const draft = load('vectors-draft.json') as { vectors: Vector[] };
const oracle = load('vectors-oracle.json') as { vectors: Vector[]; decode_cases: DecodeCase[] };

const draftUsable = draft.vectors.filter((v) => v.status === 'ok' || v.status === 'corrected');
const allEncode = [...draftUsable, ...oracle.vectors];

function encodeVector(v: Vector): string {
  const config = configFromJson(v);
  const cid = parseHex(v.cid, 'cid');
  return toHex(
    encodeCid(config, parseHex(v.server_id, 'sid'), parseHex(v.nonce, 'nonce'), {
      firstOctetLow: v.len_self_encoded ? undefined : cid[0] & 0x1f,
    }),
  );
}

describe('QUIC-LB test vectors', () => {
  it('uses every draft vector marked ok or corrected, and all oracle vectors', () => {
    expect(draftUsable.map((v) => v.id)).toEqual([
      'B.1-1',
      'B.1-2-corrected',
      'B.2-1',
      'B.2-2',
      'B.2-3',
      'B.2-4-cr0',
      'B.2-4-cr3',
      '5.4.2.4-example',
    ]);
    expect(oracle.vectors.length).toBe(108);
    expect(oracle.decode_cases.length).toBe(32);
  });

  it.each(allEncode.map((v) => [v.id, v] as const))('%s: the selected algorithm is the vector mode', (_id, v) => {
    expect(cipherModeOf(configFromJson(v))).toBe(v.mode);
  });

  it.each(allEncode.map((v) => [v.id, v] as const))('%s: encoding reproduces the connection ID', (_id, v) => {
    expect(encodeVector(v)).toBe(v.cid);
  });

  it.each(allEncode.map((v) => [v.id, v] as const))('%s: the load balancer decodes the server ID', (_id, v) => {
    const decoder = new CidDecoder([configFromJson(v)]);
    const r = decoder.decode(parseHex(v.cid, 'cid'));
    expect(r.reason).toBeNull();
    expect(r.configId).toBe(v.config_id);
    expect(toHex(r.serverId!)).toBe(v.server_id);
  });

  it.each(allEncode.map((v) => [v.id, v] as const))('%s: a server recovers server ID and nonce', (_id, v) => {
    const { serverId, nonce } = decryptCid(configFromJson(v), parseHex(v.cid, 'cid'));
    expect(toHex(serverId)).toBe(v.server_id);
    expect(toHex(nonce)).toBe(v.nonce);
  });

  it('does not reproduce the draft rows marked inconsistent (errata 3 and 4)', () => {
    const b24 = draft.vectors.find((v) => v.id === 'B.2-4-verbatim')!;
    expect(encodeVector(b24)).not.toBe(b24.cid);
  });

  it.each(oracle.decode_cases.map((c) => [c.id, c.kind, c] as const))('%s (%s): decoder matches the oracle', (_id, kind, c) => {
    const decoder = new CidDecoder(c.decoder_configs.map((j, i) => configFromJson(j, `decoder_configs[${i}]`)));
    const r = decoder.decode(parseHex(c.cid, 'cid'));
    if (c.expected_server_id === null) {
      expect(r.serverId).toBeNull();
      expect(r.reason).toBe(kind === 'config-id-7' ? 'reserved' : 'unknown-config');
    } else {
      expect(r.reason).toBeNull();
      expect(toHex(r.serverId!)).toBe(c.expected_server_id);
    }
  });
});

describe('four-pass internals (§5.4.2.4 worked example)', () => {
  it('splits an odd-length plaintext by nibbles and produces the example CID', () => {
    const config = makeConfig({
      configId: 0,
      serverIdLength: 3,
      nonceLength: 4,
      key: parseHex('fdf726a9893ec05c0632d3956680baf0', 'key'),
      lengthSelfEncoded: true,
    });
    const out = Buffer.alloc(7);
    new QuicLbCipher(config).encrypt(parseHex('31441a9c69c275', 'pt'), out, 0);
    expect(toHex(out)).toBe('67947d29be054a');
  });
});
