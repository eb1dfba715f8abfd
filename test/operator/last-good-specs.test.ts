// The claims others see of a load balancer edited into an invalid spec: those of its last readable spec.
import { describe, expect, it } from '@jest/globals';
import type { QuicLoadBalancerObject } from '../../operator/kube/informers.js';
import { LastGoodSpecs } from '../../operator/reconcile/last-good-specs.js';
import { claimsOf } from '../../operator/reconcile/port-claims.js';

const good = { backend: { serviceName: 'web', portName: 'quic' }, listen: { ports: [443] } };
const bad = { backend: { serviceName: 'other', portName: 'quic' }, listen: { ports: ['x'] } };
const obj = (uid: string, spec: unknown): QuicLoadBalancerObject => ({ metadata: { namespace: 'team', name: uid, uid, creationTimestamp: new Date(0) }, spec }) as QuicLoadBalancerObject;
const claims = (objs: QuicLoadBalancerObject[]) =>
  claimsOf(objs.map((o) => ({ namespace: 'team', name: o.metadata!.name!, createdAt: 0, spec: o.spec })), [{ name: 'n1' }]).map((c) => [c.key, c.service, c.ports, [...c.nodes]]);

describe('LastGoodSpecs', () => {
  it('an unreadable spec is seen as the last readable one: its ports, nodes and Service', () => {
    const m = new LastGoodSpecs();
    expect(claims(m.resolve([obj('a', good)]))).toEqual([['team/a', 'team/web', [443], ['n1']]]);
    expect(claims(m.resolve([obj('a', bad)]))).toEqual([['team/a', 'team/web', [443], ['n1']]]);
    // without a readable spec seen before: the raw one (a claim of the Service it names, no ports)
    expect(claims(new LastGoodSpecs().resolve([obj('a', bad)]))).toEqual([['team/a', 'team/other', [], []]]);
  });

  it('a readable edit replaces the memory; a forgotten load balancer starts over', () => {
    const m = new LastGoodSpecs();
    m.resolve([obj('a', good)]);
    m.resolve([obj('a', { ...good, listen: { ports: [8443] } })]);
    expect(claims(m.resolve([obj('a', bad)]))[0]![2]).toEqual([8443]);
    m.forget('a');
    expect(claims(m.resolve([obj('a', bad)]))[0]![2]).toEqual([]);
  });
});
