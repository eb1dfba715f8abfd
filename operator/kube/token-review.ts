/**
 * `--data-plane-auth token`: confirms a data plane's node with a TokenReview (authentication.k8s.io/v1) of the
 * pod-bound ServiceAccount token it sends (docs/config-channel.md, Trust). The token must be valid for the audience
 * quiclb-operator, belong to the data planes' ServiceAccount, and carry the node the kubelet bound it to
 * (user.extra["authentication.kubernetes.io/node-name"], Kubernetes >= 1.32 pod-bound tokens); that node must be
 * the one the Hello names. Tokens are never logged; a refusal says why without quoting the token.
 */
import * as k8s from '@kubernetes/client-node';
import type { AuthenticateNode, NodeAuthResult } from '../config-server/node-auth.js';

export const NODE_TOKEN_AUDIENCE = 'quiclb-operator';
export const NODE_NAME_EXTRA = 'authentication.kubernetes.io/node-name';

export interface ServiceAccountRef {
  readonly namespace: string;
  readonly name: string;
}

/** Parses NS/NAME (the --data-plane-service-account flag); throws an Error saying what is wrong. */
export function parseServiceAccount(value: string): ServiceAccountRef {
  const m = /^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)\/([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)$/.exec(value);
  if (!m) throw new Error(`expected NAMESPACE/NAME of a ServiceAccount, got ${JSON.stringify(value.slice(0, 100))}`);
  return { namespace: m[1], name: m[3] };
}

/** The verdict of a TokenReview's status for a Hello naming `helloNode`. */
export function judgeReview(status: k8s.V1TokenReviewStatus | undefined, serviceAccount: ServiceAccountRef, helloNode: string): NodeAuthResult {
  if (!status) return { ok: false, reason: 'the TokenReview has no status' };
  if (!status.authenticated) return { ok: false, reason: `token not authenticated${status.error ? `: ${status.error.slice(0, 200)}` : ''}` };
  if (!(status.audiences ?? []).includes(NODE_TOKEN_AUDIENCE)) return { ok: false, reason: `token not valid for the audience ${NODE_TOKEN_AUDIENCE}` };
  const want = `system:serviceaccount:${serviceAccount.namespace}:${serviceAccount.name}`;
  const user = status.user?.username ?? '';
  if (user !== want) return { ok: false, reason: `token of ${JSON.stringify(user.slice(0, 200))}, not of the data planes' ServiceAccount ${want}` };
  const nodes = status.user?.extra?.[NODE_NAME_EXTRA] ?? [];
  if (nodes.length !== 1 || nodes[0] === '') {
    return { ok: false, reason: `token carries no node (${NODE_NAME_EXTRA}): it must be bound to a pod, on Kubernetes >= 1.32` };
  }
  if (nodes[0] !== helloNode) return { ok: false, reason: `token is bound to a pod on node ${JSON.stringify(nodes[0].slice(0, 253))}, not ${JSON.stringify(helloNode.slice(0, 253))}` };
  return { ok: true };
}

/**
 * The token's own expiry (its `exp` claim), read without checking the signature: only used to stop caching a
 * success once the API server has confirmed the token. Undefined when it cannot be read.
 */
export function tokenExpiry(token: string): number | undefined {
  const parts = token.split('.');
  if (parts.length !== 3 || parts[1].length > 4096) return undefined;
  try {
    const exp = (JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')) as { exp?: unknown }).exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** An AuthenticateNode for the config server that asks the API server (TokenReview create). */
export function tokenReviewAuthenticator(api: k8s.AuthenticationV1Api, serviceAccount: ServiceAccountRef): AuthenticateNode {
  return async (token, helloNode) => {
    const review = await api.createTokenReview({
      body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences: [NODE_TOKEN_AUDIENCE] } },
    });
    const verdict = judgeReview(review.status, serviceAccount, helloNode);
    if (!verdict.ok) return verdict;
    const expiresAt = tokenExpiry(token);
    return expiresAt === undefined ? { ok: true } : { ok: true, expiresAt };
  };
}
