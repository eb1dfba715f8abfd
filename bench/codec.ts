/**
 * `npm run bench:codec`: median ns/op of QUIC header parsing and QUIC-LB encode/decode per mode, with a
 * naive baseline measured in the same run (a node:crypto cipher created per packet, as a first
 * implementation would). Figures are medians over rounds; the ratios are what to compare across machines.
 */
import { createCipheriv, createDecipheriv, type Cipheriv } from 'node:crypto';
import { parseArgs } from 'node:util';
import {
  CidDecoder,
  DecodeResult,
  QuicLbCipher,
  encodeCid,
  makeConfig,
  type QuicLbConfig,
} from '../lib/index.js';
import { parseQuicHeader, QuicHeader } from '../lib/quic/header.js';

const { values } = parseArgs({
  options: { rounds: { type: 'string', default: '15' }, ops: { type: 'string', default: '20000' }, json: { type: 'boolean' } },
});
const ROUNDS = Number(values.rounds);
const OPS = Number(values.ops);

let sink = 0;

/** Median ns/op over ROUNDS rounds of OPS calls, after one warm-up round. */
function measure(fn: (i: number) => number): number {
  const perRound: number[] = [];
  for (let r = -1; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < OPS; i++) sink ^= fn(i);
    const ns = Number(process.hrtime.bigint() - t0) / OPS;
    if (r >= 0) perRound.push(ns);
  }
  perRound.sort((a, b) => a - b);
  return perRound[perRound.length >> 1];
}

const key = Buffer.from('8f95f09245765f80256934e50c66207f', 'hex');
const cfg = (serverIdLength: number, nonceLength: number, keyed = true): QuicLbConfig =>
  makeConfig({ configId: 1, serverIdLength, nonceLength, key: keyed ? key : null, lengthSelfEncoded: true });

const modes: { name: string; config: QuicLbConfig }[] = [
  { name: 'plaintext (sid 2, nonce 6)', config: cfg(2, 6, false) },
  { name: 'single-pass (sid 8, nonce 8)', config: cfg(8, 8) },
  { name: 'four-pass even (sid 10, nonce 4; 4 AES)', config: cfg(10, 4) },
  { name: 'four-pass odd (sid 10, nonce 5; 4 AES)', config: cfg(10, 5) },
  { name: 'three-pass shortcut (sid 2, nonce 6; 3 AES)', config: cfg(2, 6) },
];

/** 64 distinct CIDs per mode, so nothing is served from a cache. */
function cidsFor(config: QuicLbConfig): Buffer[] {
  return Array.from({ length: 64 }, (_, i) =>
    encodeCid(config, Buffer.alloc(config.serverIdLength, i + 1), Buffer.alloc(config.nonceLength, (i * 7) & 0xff)),
  );
}

/**
 * What a first implementation does: build a node:crypto cipher per packet, then run the same rounds
 * (four-pass decode). With `reused`, the cipher object is kept across packets (node:crypto's best case).
 */
function naiveFourPassDecode(config: QuicLbConfig, cid: Buffer, reused?: Cipheriv): number {
  const L = config.serverIdLength + config.nonceLength;
  const h = Math.ceil(L / 2);
  const odd = L % 2 === 1;
  let c = reused;
  if (c === undefined) {
    c = createCipheriv('aes-128-ecb', config.key!, null);
    c.setAutoPadding(false);
  }
  const cipher = c;
  const left = Buffer.from(cid.subarray(1, 1 + h));
  const right = Buffer.from(cid.subarray(1 + (L >> 1), 1 + L));
  if (odd) {
    left[h - 1] &= 0xf0;
    right[0] &= 0x0f;
  }
  const round = (pass: number, src: Buffer, dst: Buffer, dstRight: boolean) => {
    const block = Buffer.alloc(16);
    src.copy(block, 0, 0, h);
    block[14] = L;
    block[15] = pass;
    const out = cipher.update(block);
    for (let i = 0; i < h; i++) dst[i] ^= out[i];
    if (odd) {
      if (dstRight) dst[0] &= 0x0f;
      else dst[h - 1] &= 0xf0;
    }
  };
  round(4, right, left, false);
  round(3, left, right, true);
  round(2, right, left, false);
  round(1, left, right, true);
  return left[0];
}

function naiveSinglePassDecode(config: QuicLbConfig, cid: Buffer): number {
  const d = createDecipheriv('aes-128-ecb', config.key!, null);
  d.setAutoPadding(false);
  return d.update(cid.subarray(1, 17))[0];
}

const rows: { op: string; ns: number; note?: string }[] = [];

// Header parsing.
const header = new QuicHeader();
const shortPacket = Buffer.concat([Buffer.from([0x40]), cidsFor(modes[0].config)[0], Buffer.alloc(40)]);
const longPacket = Buffer.alloc(1200);
longPacket.set([0xc0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9, 0, 0x44, 0xd0]);
rows.push({ op: 'header parse, short header', ns: measure(() => (parseQuicHeader(shortPacket, header, 9) === null ? header.dcidLength : -1)) });
rows.push({ op: 'header parse, long header (Initial)', ns: measure(() => (parseQuicHeader(longPacket, header, 9) === null ? header.scidLength : -1)) });

// Decode (load balancer side) and encode (server side) per mode.
const out = new DecodeResult();
for (const { name, config } of modes) {
  const decoder = new CidDecoder([config]);
  const cids = cidsFor(config);
  rows.push({ op: `decode ${name}`, ns: measure((i) => (decoder.decodeInto(cids[i & 63], 0, cids[i & 63].length, out) ? out.serverId[0] : -1)) });
}
for (const { name, config } of modes) {
  const cipher = new QuicLbCipher(config);
  const plaintext = Buffer.alloc(config.serverIdLength + config.nonceLength, 5);
  const block = Buffer.alloc(plaintext.length);
  rows.push({ op: `encode ${name}`, ns: measure((i) => {
    plaintext[plaintext.length - 1] = i;
    cipher.encrypt(plaintext, block, 0);
    return block[0];
  }), note: 'block transform only' });
}

// Naive baselines, same run.
const fourEven = modes[2].config;
const fourEvenCids = cidsFor(fourEven);
const naiveFour = measure((i) => naiveFourPassDecode(fourEven, fourEvenCids[i & 63]));
rows.push({ op: 'naive four-pass decode (cipher per packet)', ns: naiveFour });
const reusedCipher = createCipheriv('aes-128-ecb', fourEven.key!, null);
reusedCipher.setAutoPadding(false);
rows.push({
  op: 'four-pass decode, reused node:crypto cipher',
  ns: measure((i) => naiveFourPassDecode(fourEven, fourEvenCids[i & 63], reusedCipher)),
  note: 'for comparison: update() per block',
});
const single = modes[1].config;
const singleCids = cidsFor(single);
rows.push({ op: 'naive single-pass decode (decipher per packet)', ns: measure((i) => naiveSinglePassDecode(single, singleCids[i & 63])) });

const get = (prefix: string) => rows.find((r) => r.op.startsWith(prefix))!.ns;
const ratioFour = naiveFour / get('decode four-pass even');
const ratioSingle = get('naive single-pass') / get('decode single-pass');

if (values.json) {
  process.stdout.write(JSON.stringify({ rows, ratioFourPassVsNaive: ratioFour, ratioSinglePassVsNaive: ratioSingle }) + '\n');
} else {
  const w = Math.max(...rows.map((r) => r.op.length));
  console.log(`quiclb codec benchmark: node ${process.version}, ${ROUNDS} rounds x ${OPS} ops, median ns/op\n`);
  for (const r of rows) console.log(`${r.op.padEnd(w)}  ${r.ns.toFixed(0).padStart(7)} ns${r.note ? `  (${r.note})` : ''}`);
  console.log('');
  console.log(`four-pass decode vs naive baseline:   ${ratioFour.toFixed(1)}x faster (target >= 3x)`);
  console.log(`single-pass decode vs naive baseline: ${ratioSingle.toFixed(1)}x faster`);
  console.log(`plaintext decode: ${get('decode plaintext').toFixed(0)} ns, header parse short/long: ${get('header parse, short').toFixed(0)}/${get('header parse, long').toFixed(0)} ns (target < 150 ns)`);
}
if (sink === 0.5) console.log(sink); // keep results observable so the JIT cannot drop the work
