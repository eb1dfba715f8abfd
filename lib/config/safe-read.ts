/**
 * Reading config, key and state files safely, at start and on every reload (a running data plane must survive
 * any file put in their place): opened non-blocking (a FIFO without a writer must not block the event loop),
 * regular files only (checked with fstat on the open descriptor, so a link swapped to /dev/zero is refused),
 * size-capped before and while reading, and text strictly UTF-8 (an invalid byte is refused with its position
 * instead of being replaced silently). Error texts are bounded and quote no file content.
 */
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';

/** A file that exists but must not be read (not a regular file, too large, not UTF-8). */
export class UnsafeFileError extends Error {}

/** Size caps of the files quiclb reads. */
export const MAX_CONFIG_BYTES = 1 << 20;
export const MAX_STATE_BYTES = 1 << 20;
export const MAX_KEY_FILE_BYTES = 4096;

function kind(st: { isDirectory(): boolean; isFIFO(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean; isSocket(): boolean }): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * Reads a regular file of at most `maxBytes`. Throws the fs error (ENOENT, EACCES, ...) for a file that cannot be
 * opened, and UnsafeFileError for one that is not a regular file or is larger than `maxBytes`.
 */
export function readRegularFile(path: string, maxBytes: number): Buffer {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new UnsafeFileError(`is ${kind(st)}, not a regular file`);
    if (st.size > maxBytes) throw new UnsafeFileError(`is ${st.size} bytes, more than the ${maxBytes} allowed`);
    // The size may change while reading (a file being rewritten in place): never read past the cap.
    const buf = Buffer.alloc(maxBytes + 1);
    let n = 0;
    for (;;) {
      const r = readSync(fd, buf, n, buf.length - n, null);
      if (r === 0) break;
      n += r;
      if (n > maxBytes) throw new UnsafeFileError(`is more than the ${maxBytes} bytes allowed`);
    }
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/** The text of an error of readRegularFile() for messages: the fs error code, or the problem found. */
export function readErrorText(e: unknown): string {
  if (e instanceof UnsafeFileError) return e.message;
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
}

/** Offset of the first octet that is not part of a valid UTF-8 sequence, or -1. */
export function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0;
  const n = b.length;
  while (i < n) {
    const c = b[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    let need: number;
    let min: number;
    if (c >= 0xc2 && c <= 0xdf) {
      need = 1;
      min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
      need = 2;
      min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
      need = 3;
      min = 0x10000;
    } else return i;
    if (i + need >= n) return i;
    let cp = c & (0x3f >> need);
    for (let k = 1; k <= need; k++) {
      const d = b[i + k];
      if (d === undefined || (d & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += need + 1;
  }
  return -1;
}

/** Decodes strict UTF-8; throws UnsafeFileError naming the line and column of the first invalid octet. */
export function decodeUtf8(b: Uint8Array): string {
  const bad = firstInvalidUtf8(b);
  if (bad >= 0) {
    const before = Buffer.from(b.subarray(0, bad)).toString('utf8');
    const lines = before.split('\n');
    throw new UnsafeFileError(
      `is not valid UTF-8: octet 0x${b[bad].toString(16).padStart(2, '0')} at line ${lines.length}, column ${lines[lines.length - 1].length + 1} (offset ${bad})`,
    );
  }
  return Buffer.from(b.buffer, b.byteOffset, b.length).toString('utf8');
}

/** A string for an error message: JSON-quoted, cut to `max` characters (a value of unknown size is never echoed whole). */
export function quote(s: string, max = 64): string {
  return s.length <= max ? JSON.stringify(s) : `${JSON.stringify(s.slice(0, max))}… (${s.length} characters)`;
}
