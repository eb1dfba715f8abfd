/**
 * Reading the node token (`--node-token-file`: the projected ServiceAccount token the kubelet rotates in place)
 * for each stream attempt: bounded, regular files only, surrounding whitespace dropped. Errors name the problem,
 * never the content.
 */
import { decodeUtf8, readErrorText, readRegularFile } from '../../lib/config/safe-read.js';
import { MAX_NODE_TOKEN_BYTES } from '../../proto/node-token.js';

export class NodeTokenError extends Error {}

/** The token in `path`; throws NodeTokenError when it cannot be read or is not a usable token. */
export function readNodeToken(path: string): string {
  let text: string;
  try {
    text = decodeUtf8(readRegularFile(path, MAX_NODE_TOKEN_BYTES)).trim();
  } catch (e) {
    throw new NodeTokenError(`node token file ${path}: ${readErrorText(e)}`);
  }
  if (text === '') throw new NodeTokenError(`node token file ${path} is empty`);
  // gRPC metadata values are printable ASCII; a JWT is base64url segments joined by dots.
  if (!/^[\x21-\x7e]+$/.test(text)) throw new NodeTokenError(`node token file ${path}: not a token (characters outside printable ASCII)`);
  return text;
}
