/**
 * The TokenReview verdict of --data-plane-auth token (operator/kube/token-review.ts), on review statuses shaped as
 * the API server returns them: only an authenticated token of the data planes' ServiceAccount, for the audience
 * quiclb-operator, bound to a pod on the Hello's node, is accepted. The real API server is exercised by
 * test/integration/operator-node-auth.test.ts.
 */
import { describe, expect, it } from '@jest/globals';
import { judgeReview, parseServiceAccount, tokenExpiry } from '../../operator/kube/token-review.js';

const SA = { namespace: 'quiclb-system', name: 'quiclb-dataplane' };
const status = (o: { user?: string; node?: string[]; audiences?: string[]; authenticated?: boolean; error?: string } = {}) => ({
  authenticated: o.authenticated ?? true,
  audiences: o.audiences ?? ['quiclb-operator'],
  ...(o.error ? { error: o.error } : {}),
  user: {
    username: o.user ?? 'system:serviceaccount:quiclb-system:quiclb-dataplane',
    extra: { 'authentication.kubernetes.io/pod-name': ['dp-1'], ...(o.node ? { 'authentication.kubernetes.io/node-name': o.node } : {}) },
  },
});

describe('judgeReview', () => {
  it('accepts the data planes ServiceAccount bound to a pod on the Hello node', () => {
    expect(judgeReview(status({ node: ['node-a'] }), SA, 'node-a')).toEqual({ ok: true });
  });

  it.each([
    ['another node', status({ node: ['node-a'] }), /bound to a pod on node "node-a", not "node-b"/],
    ['no node claim (not pod-bound)', status(), /carries no node/],
    ['two node claims', status({ node: ['node-b', 'node-a'] }), /carries no node/],
    ['another ServiceAccount', status({ node: ['node-b'], user: 'system:serviceaccount:default:default' }), /not of the data planes' ServiceAccount/],
    ['another audience', status({ node: ['node-b'], audiences: ['https://kubernetes.default.svc'] }), /audience quiclb-operator/],
    ['not authenticated', status({ authenticated: false, error: 'token has expired' }), /not authenticated: token has expired/],
    ['no status', undefined, /no status/],
  ])('refuses %s', (_what, st, reason) => {
    const r = judgeReview(st, SA, 'node-b');
    expect(r.ok).toBe(false);
    expect(r.ok ? '' : r.reason).toMatch(reason);
  });
});

describe('parseServiceAccount and tokenExpiry', () => {
  it('parses NS/NAME and refuses anything else', () => {
    expect(parseServiceAccount('quiclb-system/quiclb-dataplane')).toEqual(SA);
    for (const bad of ['quiclb-dataplane', 'a/b/c', '/x', 'x/', 'UPPER/x', 'a b/c']) expect(() => parseServiceAccount(bad)).toThrow(/NAMESPACE\/NAME/);
  });

  it('reads a JWT exp claim, and nothing from what is not a JWT', () => {
    const jwt = (payload: object) => `e30.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.sig`;
    expect(tokenExpiry(jwt({ exp: 1_900_000_000 }))).toBe(1_900_000_000_000);
    expect(tokenExpiry(jwt({ sub: 'x' }))).toBeUndefined();
    expect(tokenExpiry(jwt({ exp: 'soon' }))).toBeUndefined();
    expect(tokenExpiry('not-a-jwt')).toBeUndefined();
    expect(tokenExpiry('a.%%%.c')).toBeUndefined();
  });
});
