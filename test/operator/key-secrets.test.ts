/**
 * The mapping from a changed user key Secret to the QuicLoadBalancers to requeue: those in the Secret's namespace
 * whose spec.encryption.keySecretRef names it, and no others (same name in another namespace, another Secret, no
 * keySecretRef, a malformed spec).
 */
import { describe, expect, it } from '@jest/globals';
import type { QuicLoadBalancerObject } from '../../operator/kube/informers.js';
import { KEY_SECRET_SELECTOR, loadBalancersUsingSecret } from '../../operator/kube/key-secrets.js';

const qlb = (namespace: string, name: string, spec: unknown): QuicLoadBalancerObject => ({ metadata: { namespace, name }, spec });
const withKey = (secret: string) => ({ encryption: { mode: 'Encrypted', keySecretRef: { name: secret, key: 'key' } } });

describe('loadBalancersUsingSecret', () => {
  const all = [
    qlb('a', 'edge', withKey('k1')),
    qlb('a', 'edge-2', withKey('k1')),
    qlb('a', 'other', withKey('k2')),
    qlb('b', 'edge', withKey('k1')),
    qlb('a', 'generated', { encryption: { mode: 'Encrypted' } }),
    qlb('a', 'no-spec', undefined),
    qlb('a', 'bad-spec', { encryption: { keySecretRef: { name: 42 } } }),
    qlb('a', 'bad-encryption', { encryption: 'k1' }),
  ];

  it('names every load balancer in the namespace whose keySecretRef names the Secret', () => {
    expect(loadBalancersUsingSecret(all, 'a', 'k1')).toEqual(['a/edge', 'a/edge-2']);
    expect(loadBalancersUsingSecret(all, 'a', 'k2')).toEqual(['a/other']);
    expect(loadBalancersUsingSecret(all, 'b', 'k1')).toEqual(['b/edge']);
  });

  it('names none for a Secret nobody references, another namespace, or a Secret without namespace or name', () => {
    expect(loadBalancersUsingSecret(all, 'a', 'k3')).toEqual([]);
    expect(loadBalancersUsingSecret(all, 'c', 'k1')).toEqual([]);
    expect(loadBalancersUsingSecret(all, undefined, 'k1')).toEqual([]);
    expect(loadBalancersUsingSecret(all, 'a', undefined)).toEqual([]);
    expect(loadBalancersUsingSecret([], 'a', 'k1')).toEqual([]);
  });

  it('watches only Secrets labelled quiclb.io/key=true', () => {
    expect(KEY_SECRET_SELECTOR).toBe('quiclb.io/key=true');
  });
});
