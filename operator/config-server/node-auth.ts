/**
 * Confirming the node a data plane's Hello names with the token it sends in the stream's metadata
 * (`x-quiclb-node-token`; docs/config-channel.md, Trust). The verifier (the operator's TokenReview) is injected;
 * this module bounds what a peer can make it cost: the token's size, the verification's time, and how often the
 * same token is verified (results are cached per token and node, a success for the token's remaining validity or
 * a minute, whichever is shorter; a refusal for a few seconds; in-flight verifications are shared).
 * Tokens are kept only as SHA-256 digests and never logged.
 */
import { createHash } from 'node:crypto';
import { MAX_NODE_TOKEN_BYTES, NODE_TOKEN_METADATA } from '../../proto/node-token.js';

export { MAX_NODE_TOKEN_BYTES, NODE_TOKEN_METADATA };

export type NodeAuthResult = { ok: true; expiresAt?: number } | { ok: false; reason: string };

/**
 * Confirms that `token` proves the node `helloNode`. Resolves { ok: false } for a token that does not (invalid,
 * another node, another ServiceAccount); throws when it cannot tell (verifier unreachable). `expiresAt` (ms since
 * the epoch) bounds how long a success is cached.
 */
export type AuthenticateNode = (token: string, helloNode: string) => Promise<NodeAuthResult>;

/** The outcome for a stream: ok, refused (the token does not confirm the node) or unverifiable (try again later). */
export type NodeCheck = { kind: 'ok' } | { kind: 'refused'; reason: string } | { kind: 'unverifiable'; reason: string };

export interface NodeAuthOptions {
  /** A verification that takes longer is abandoned: the stream is closed UNAVAILABLE (default 5 s). */
  readonly timeoutMs?: number;
  /** Longest time a success is cached (default 60 s). */
  readonly maxCacheMs?: number;
  /** How long a refusal is cached (default 5 s). */
  readonly refusalCacheMs?: number;
  /** Cached tokens at most (the oldest goes first; default 1024). */
  readonly maxEntries?: number;
  readonly now?: () => number;
}

interface Entry {
  readonly result: Promise<NodeCheck>;
  /** Infinity while in flight. */
  expires: number;
}

export class NodeAuthenticator {
  private readonly cache = new Map<string, Entry>();
  private readonly timeoutMs: number;
  private readonly maxCacheMs: number;
  private readonly refusalCacheMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;

  constructor(
    private readonly verify: AuthenticateNode,
    options: NodeAuthOptions = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? 5000;
    this.maxCacheMs = options.maxCacheMs ?? 60_000;
    this.refusalCacheMs = options.refusalCacheMs ?? 5000;
    this.maxEntries = options.maxEntries ?? 1024;
    this.now = options.now ?? Date.now;
  }

  /** Checks the token of a stream (undefined: none sent) against the node of its Hello. */
  check(token: string | undefined, helloNode: string): Promise<NodeCheck> {
    if (token === undefined || token === '') return Promise.resolve({ kind: 'refused', reason: `no node token (metadata ${NODE_TOKEN_METADATA})` });
    if (Buffer.byteLength(token) > MAX_NODE_TOKEN_BYTES) return Promise.resolve({ kind: 'refused', reason: `node token larger than ${MAX_NODE_TOKEN_BYTES} bytes` });
    if (helloNode === '') return Promise.resolve({ kind: 'refused', reason: 'the hello names no node' });
    const key = createHash('sha256').update(token).update('\0').update(helloNode).digest('base64');
    const now = this.now();
    const cached = this.cache.get(key);
    if (cached && cached.expires > now) return cached.result;
    this.cache.delete(key);
    // In flight: shared by every stream presenting the same token until it settles.
    const entry: Entry = { result: this.verifyBounded(token, helloNode).then((r) => this.settle(key, entry, r)), expires: Number.POSITIVE_INFINITY };
    this.cache.set(key, entry);
    while (this.cache.size > this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
    return entry.result;
  }

  private settle(key: string, entry: Entry, r: { check: NodeCheck; expiresAt?: number }): NodeCheck {
    const at = this.now();
    if (r.check.kind === 'ok') entry.expires = Math.min(at + this.maxCacheMs, r.expiresAt ?? Number.POSITIVE_INFINITY);
    else if (r.check.kind === 'refused') entry.expires = at + this.refusalCacheMs;
    else entry.expires = 0;
    if (entry.expires <= at && this.cache.get(key) === entry) this.cache.delete(key);
    return r.check;
  }

  private async verifyBounded(token: string, helloNode: string): Promise<{ check: NodeCheck; expiresAt?: number }> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.timeoutMs);
      timer.unref();
    });
    try {
      const r = await Promise.race([this.verify(token, helloNode), timeout]);
      if (r === 'timeout') return { check: { kind: 'unverifiable', reason: `node token not verified within ${this.timeoutMs} ms` } };
      if (r.ok) return { check: { kind: 'ok' }, expiresAt: r.expiresAt };
      return { check: { kind: 'refused', reason: r.reason } };
    } catch (e) {
      return { check: { kind: 'unverifiable', reason: `node token cannot be verified: ${(e as Error).message}` } };
    } finally {
      clearTimeout(timer);
    }
  }
}
