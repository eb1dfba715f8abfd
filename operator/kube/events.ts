/**
 * Kubernetes Events (events.k8s.io/v1) about a QuicLoadBalancer: what `kubectl describe qlb` and `kubectl events`
 * show. A failed Event write is logged, never fatal (events are best effort).
 */
import { randomBytes } from 'node:crypto';
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { GROUP, KIND, VERSION } from '../reconcile/spec.js';

export interface Regarding {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
}

export class EventRecorder {
  private readonly api: k8s.EventsV1Api;

  constructor(
    kc: k8s.KubeConfig,
    private readonly instance: string,
    private readonly logger: Logger,
  ) {
    this.api = kc.makeApiClient(k8s.EventsV1Api);
  }

  async record(on: Regarding, type: 'Normal' | 'Warning', reason: string, note: string): Promise<void> {
    try {
      await this.api.createNamespacedEvent({
        namespace: on.namespace,
        body: {
          // Named as client-go names them (object name, '.', a unique hex suffix): generateName ending in '.' is invalid.
          metadata: { name: `${on.name}.${Date.now().toString(16)}${randomBytes(4).toString('hex')}`, namespace: on.namespace },
          eventTime: new k8s.V1MicroTime(),
          action: 'Reconcile',
          reason,
          // The API bounds the note at 1 KiB.
          note: note.length > 1000 ? `${note.slice(0, 997)}...` : note,
          type,
          reportingController: 'quiclb.io/operator',
          reportingInstance: this.instance,
          regarding: { apiVersion: `${GROUP}/${VERSION}`, kind: KIND, name: on.name, namespace: on.namespace, uid: on.uid },
        },
      });
    } catch (e) {
      this.logger.warn({ qlb: `${on.namespace}/${on.name}`, reason, err: e instanceof k8s.ApiException ? `HTTP ${e.code}` : (e as Error).message }, 'event not recorded');
    }
  }
}
