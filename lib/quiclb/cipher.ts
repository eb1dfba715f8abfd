/**
 * The three QUIC-LB block transforms of draft-21 §5.4/§5.5: plaintext, single-pass AES-128-ECB and the
 * four-pass Feistel network. One instance per config holds its AES objects and scratch buffers, so a
 * transform allocates nothing but the 16-octet blocks node:crypto returns from update().
 *
 * Written by hand because no npm package implements draft-21's algorithms (and the draft's §5.5.2
 * pseudocode has an erratum: it masks left_1 where right_1 must be masked).
 */
import { createCipheriv, createDecipheriv, type Cipheriv, type Decipheriv } from 'node:crypto';
import { cipherModeOf, type CipherMode, type QuicLbConfig } from './config.js';

const BLOCK = 16;

export class QuicLbCipher {
  readonly mode: CipherMode;
  /** server_id_len + nonce_len: the octets after the first octet that the transform covers. */
  readonly plaintextLength: number;
  readonly serverIdLength: number;
  private readonly halfLength: number;
  private readonly odd: boolean;
  private readonly encryptor: Cipheriv | null;
  private readonly decryptor: Decipheriv | null;
  /** AES input for the Feistel rounds: half || zeros || length || pass (§5.4.2.2, layout of -19 and later). */
  private readonly expanded = Buffer.alloc(BLOCK);
  private readonly left: Buffer;
  private readonly right: Buffer;
  private readonly singleBlock = Buffer.alloc(BLOCK);
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
    this.expanded[14] = this.plaintextLength;
    if (config.key === null) {
      this.encryptor = null;
      this.decryptor = null;
    } else {
      this.encryptor = createCipheriv('aes-128-ecb', config.key, null);
      this.encryptor.setAutoPadding(false);
      this.decryptor = this.mode === 'single-pass' ? createDecipheriv('aes-128-ecb', config.key, null) : null;
      this.decryptor?.setAutoPadding(false);
    }
  }

  /** Encrypts plaintext (server ID || nonce, plaintextLength octets) into out[outOffset ..). */
  encrypt(plaintext: Uint8Array, out: Uint8Array, outOffset: number): void {
    if (this.mode === 'plaintext') {
      out.set(plaintext.subarray(0, this.plaintextLength), outOffset);
      return;
    }
    if (this.mode === 'single-pass') {
      this.singleBlock.set(plaintext.subarray(0, BLOCK));
      out.set(this.encryptor!.update(this.singleBlock), outOffset);
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
      this.singleBlock.set(src.subarray(srcOffset, srcOffset + BLOCK));
      const pt = this.decryptor!.update(this.singleBlock);
      for (let i = 0; i < wanted; i++) out[i] = pt[i];
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

  /** target ^= truncate(AES(expand(L, pass, source)), half_len), then re-mask target's shared nibble. */
  private round(pass: number, source: Buffer, target: Buffer, targetIsRight: boolean): void {
    const h = this.halfLength;
    const block = this.expanded;
    for (let i = 0; i < h; i++) block[i] = source[i];
    block[15] = pass;
    const aes = this.encryptor!.update(block);
    for (let i = 0; i < h; i++) target[i] ^= aes[i];
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
