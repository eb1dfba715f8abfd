/**
 * The last readable spec of every QuicLoadBalancer, for the claims the others see (port-claims.ts, observe.ts
 * backendClaimsOf). A load balancer edited into an invalid spec keeps its last good snapshot published (the
 * reconciler settles it), so it keeps routing its Service's pods on its ports: its claims must stay those of the
 * spec it serves, not nothing (a later one would take its port, and every snapshot of those nodes would be
 * refused) and not the invalid spec's (a typo naming another Service would take that one's pods away). In memory:
 * a new operator process that meets an invalid spec first sees only the raw one, as before.
 */
import type { QuicLoadBalancerObject } from '../kube/informers.js';
import { readSpec } from './spec.js';

export class LastGoodSpecs {
  private readonly byUid = new Map<string, unknown>();

  /** `objects`, each unreadable one carrying its last readable spec when there was one; remembers the readable ones. */
  resolve(objects: readonly QuicLoadBalancerObject[]): QuicLoadBalancerObject[] {
    return objects.map((o) => {
      const uid = o.metadata?.uid;
      if (uid === undefined) return o;
      try {
        readSpec(o.spec);
        this.byUid.set(uid, o.spec);
        return o;
      } catch {
        const good = this.byUid.get(uid);
        return good === undefined ? o : { ...o, spec: good };
      }
    });
  }

  /** A load balancer is gone: forget it. */
  forget(uid: string | undefined): void {
    if (uid !== undefined) this.byUid.delete(uid);
  }
}
