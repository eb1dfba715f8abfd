/**
 * The server-ID file a backend pod reads: the operator puts the pod's server ID in the annotation
 * `quiclb.io/server-id` (lower-case hex, server_id_length octets), and a downward-API volume item with
 * `fieldRef: {fieldPath: "metadata.annotations['quiclb.io/server-id']"}` makes it a file holding the raw value, no
 * newline; the file is empty while the annotation is not set. The kubelet updates it in place.
 */
import { HexError, parseHex } from '../hex.js';
import { MAX_PLAINTEXT_LEN, MIN_NONCE_LEN, MIN_SERVER_ID_LEN } from '../quiclb/config.js';

export const SERVER_ID_ANNOTATION = 'quiclb.io/server-id';
/** A server ID is at most 15 octets (30 hex digits); anything much longer is not one. */
export const MAX_SERVER_ID_FILE_BYTES = 256;
const MAX_SERVER_ID_LEN = MAX_PLAINTEXT_LEN - MIN_NONCE_LEN;

/**
 * The server ID in the file's text, or null when the file is empty (the annotation is not set yet). Surrounding
 * whitespace is ignored (a file written by hand usually ends with a newline). Throws Error with a message that says
 * what is wrong, quoting nothing of the text.
 */
export function parseServerIdText(text: string): Buffer | null {
  const s = text.trim();
  if (s === '') return null;
  let id: Buffer;
  try {
    id = parseHex(s, 'server ID');
  } catch (e) {
    if (e instanceof HexError) throw new Error(e.message, { cause: e });
    throw e;
  }
  if (id.length < MIN_SERVER_ID_LEN || id.length > MAX_SERVER_ID_LEN) {
    throw new Error(`server ID: must be ${MIN_SERVER_ID_LEN} to ${MAX_SERVER_ID_LEN} octets (hex), got ${id.length}`);
  }
  return id;
}
