/**
 * The three QUIC-LB block transforms of draft-21 §5.4/§5.5: plaintext, single-pass AES-128-ECB and the
 * four-pass Feistel network. One instance per config holds its expanded AES key and scratch buffers, so a
 * transform allocates nothing.
 *
 * Written by hand because no npm package implements draft-21's algorithms (and the draft's §5.5.2
 * pseudocode has an erratum: it masks left_1 where right_1 must be masked).
 *
 * The AES block function is @noble/ciphers' in-place single-block AES (pinned exactly: it is exported as
 * `unsafe`, i.e. without API stability, and the test vectors guard it). node:crypto's Cipheriv.update()
 * costs about 0.5-1.3 µs and a fresh Buffer per 16-octet block here, 2-3x the in-place JS block function,
 * and a four-pass decode needs up to four blocks per packet.
 */
import { unsafe as aes } from '@noble/ciphers/aes.js';
import { cipherModeOf, type CipherMode, type QuicLbConfig } from './config.js';

const BLOCK = 16;

export class QuicLbCipher {
  readonly mode: CipherMode;
  /** server_id_len + nonce_len: the octets after the first octet that the transform covers. */
  readonly plaintextLength: number;
  readonly serverIdLength: number;
  private readonly halfLength: number;
  private readonly odd: boolean;
  /** Expanded AES-128 encryption key (round keys), or null in plaintext mode. */
  private readonly encryptKey: Uint32Array | null;
  /** Expanded decryption key, only for single-pass (the only place AES runs in the decrypt direction). */
  private readonly decryptKey: Uint32Array | null;
  /** AES block, encrypted in place; must be a 4-byte aligned view (a fresh Uint8Array is). */
  private readonly block = new Uint8Array(BLOCK);
  private readonly left: Buffer;
  private readonly right: Buffer;
  private readonly joined: Buffer;

  constructor(config: QuicLbConfig) {
    this.mode = cipherModeOf(config);
    this.serverIdLength = config.serverIdLength;
    this.plaintextLength = config.serverIdLength + config.nonceLength;
    this.halfLength = Math.ceil(this.plaintextLength / 2);
    this.odd = this.plaintextLength % 2 === 1;
    this.left = Buffer.alloc(this.halfLength);
    this.right = Buffer.alloc(this.halfLength);
    this.joined = Buffer.alloc(this.plaintextLength);
    const key = config.key === null ? null : Uint8Array.from(config.key);
    this.encryptKey = key === null ? null : aes.expandKeyLE(key);
    this.decryptKey = key !== null && this.mode === 'single-pass' ? aes.expandKeyDecLE(key) : null;
  }

  /** Encrypts plaintext (server ID || nonce, plaintextLength octets) into out[outOffset ..). */
  encrypt(plaintext: Uint8Array, out: Uint8Array, outOffset: number): void {
    if (this.mode === 'plaintext') {
      out.set(plaintext.subarray(0, this.plaintextLength), outOffset);
      return;
    }
    if (this.mode === 'single-pass') {
      this.block.set(plaintext.subarray(0, BLOCK));
      aes.encryptBlock(this.encryptKey!, this.block);
      out.set(this.block, outOffset);
      return;
    }
    this.split(plaintext, 0);
    this.round(1, this.left, this.right, true);
    this.round(2, this.right, this.left, false);
    this.round(3, this.left, this.right, true);
    this.round(4, this.right, this.left, false);
    this.join(out, outOffset);
  }

  /**
   * Recovers the server ID from the encrypted block at src[srcOffset ..) into out[0 .. serverIdLength).
   * Uses the three-pass shortcut when the server ID lies wholly in the left half (server_id_len <= nonce_len).
   */
  decryptServerId(src: Uint8Array, srcOffset: number, out: Uint8Array): void {
    this.decryptInto(src, srcOffset, out, this.serverIdLength);
  }

  /** Full decryption (server ID || nonce) into out[0 .. plaintextLength), as a server decoding its own CIDs. */
  decrypt(src: Uint8Array, srcOffset: number, out: Uint8Array): void {
    this.decryptInto(src, srcOffset, out, this.plaintextLength);
  }

  private decryptInto(src: Uint8Array, srcOffset: number, out: Uint8Array, wanted: number): void {
    const L = this.plaintextLength;
    if (this.mode === 'plaintext') {
      for (let i = 0; i < wanted; i++) out[i] = src[srcOffset + i];
      return;
    }
    if (this.mode === 'single-pass') {
      const block = this.block;
      for (let i = 0; i < BLOCK; i++) block[i] = src[srcOffset + i];
      aes.decryptBlock(this.decryptKey!, block);
      for (let i = 0; i < wanted; i++) out[i] = block[i];
      return;
    }
    this.split(src, srcOffset);
    this.round(4, this.right, this.left, false);
    this.round(3, this.left, this.right, true);
    this.round(2, this.right, this.left, false);
    // left_0 holds floor(L/2) whole octets; the server ID fits there when server_id_len <= nonce_len.
    if (wanted <= L >> 1) {
      for (let i = 0; i < wanted; i++) out[i] = this.left[i];
      return;
    }
    this.round(1, this.left, this.right, true);
    const joined = this.joinScratch();
    for (let i = 0; i < wanted; i++) out[i] = joined[i];
  }

  /** Splits L octets into the two half_len halves, sharing the middle octet by nibbles when L is odd (§5.4.2.3 step 2). */
  private split(src: Uint8Array, offset: number): void {
    const h = this.halfLength;
    const rightStart = offset + (this.plaintextLength >> 1);
    for (let i = 0; i < h; i++) {
      this.left[i] = src[offset + i];
      this.right[i] = src[rightStart + i];
    }
    if (this.odd) {
      this.left[h - 1] &= 0xf0;
      this.right[0] &= 0x0f;
    }
  }

  /**
   * target ^= truncate(AES(expand(L, pass, source)), half_len), then re-mask target's shared nibble.
   * expand() is half || zeros || length || pass (§5.4.2.2, the layout of -19 and later).
   */
  private round(pass: number, source: Buffer, target: Buffer, targetIsRight: boolean): void {
    const h = this.halfLength;
    const block = this.block;
    for (let i = 0; i < h; i++) block[i] = source[i];
    for (let i = h; i < 14; i++) block[i] = 0;
    block[14] = this.plaintextLength;
    block[15] = pass;
    aes.encryptBlock(this.encryptKey!, block);
    for (let i = 0; i < h; i++) target[i] ^= block[i];
    if (this.odd) {
      if (targetIsRight) target[0] &= 0x0f;
      else target[h - 1] &= 0xf0;
    }
  }

  private join(out: Uint8Array, outOffset: number): void {
    const h = this.halfLength;
    if (!this.odd) {
      out.set(this.left, outOffset);
      out.set(this.right, outOffset + h);
      return;
    }
    for (let i = 0; i < h - 1; i++) out[outOffset + i] = this.left[i];
    out[outOffset + h - 1] = this.left[h - 1] | this.right[0];
    for (let i = 1; i < h; i++) out[outOffset + h - 1 + i] = this.right[i];
  }

  private joinScratch(): Buffer {
    this.join(this.joined, 0);
    return this.joined;
  }
}
