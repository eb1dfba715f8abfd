/**
 * Where the server-ID records live: one ConfigMap per QuicLoadBalancer, `<name>-quiclb-server-ids`, data key
 * `server-ids.json` (records-codec.ts), in the load balancer's namespace and owned by it. Every write carries the
 * resourceVersion that was read (create when there was none), so two writers (a stale replica, a restarted
 * operator) can never both win: the loser gets a 409, re-reads and recomputes.
 */
import * as k8s from '@kubernetes/client-node';
import { isNotFound } from '../kube/informers.js';
import { decodeRecords, encodeRecords } from './records-codec.js';
import { EMPTY_RECORDS, type ServerIdRecords } from './server-ids.js';

export const RECORDS_DATA_KEY = 'server-ids.json';

export function recordsConfigMapName(qlbName: string): string {
  return `${qlbName}-quiclb-server-ids`;
}

export interface StoredIds {
  readonly records: ServerIdRecords;
  /** null: no ConfigMap yet (the write creates it). */
  readonly resourceVersion: string | null;
}

export interface Owner {
  readonly apiVersion: string;
  readonly kind: string;
  readonly name: string;
  readonly uid: string;
}

export function ownerReference(o: Owner): k8s.V1OwnerReference {
  return { apiVersion: o.apiVersion, kind: o.kind, name: o.name, uid: o.uid, controller: true, blockOwnerDeletion: false };
}

export class ServerIdStore {
  constructor(private readonly core: k8s.CoreV1Api) {}

  /** Throws ConfigError (server_ids.*) when the stored text is not valid records: nothing is allocated then. */
  async read(namespace: string, qlbName: string): Promise<StoredIds> {
    let cm: k8s.V1ConfigMap;
    try {
      cm = await this.core.readNamespacedConfigMap({ name: recordsConfigMapName(qlbName), namespace });
    } catch (e) {
      if (isNotFound(e)) return { records: EMPTY_RECORDS, resourceVersion: null };
      throw e;
    }
    const text = cm.data?.[RECORDS_DATA_KEY];
    return { records: text === undefined ? EMPTY_RECORDS : decodeRecords(text).records, resourceVersion: cm.metadata?.resourceVersion ?? null };
  }

  /** Writes `records` with `resourceVersion` as precondition; a 409 (ApiException) means someone else wrote first. */
  async write(namespace: string, owner: Owner, serverIdLength: number, records: ServerIdRecords, resourceVersion: string | null): Promise<void> {
    const name = recordsConfigMapName(owner.name);
    const body: k8s.V1ConfigMap = {
      metadata: { name, namespace, labels: { 'app.kubernetes.io/managed-by': 'quiclb-operator', 'quiclb.io/load-balancer': owner.name }, ownerReferences: [ownerReference(owner)] },
      data: { [RECORDS_DATA_KEY]: encodeRecords({ serverIdLength, records }) },
    };
    if (resourceVersion === null) await this.core.createNamespacedConfigMap({ namespace, body });
    else await this.core.replaceNamespacedConfigMap({ name, namespace, body: { ...body, metadata: { ...body.metadata, resourceVersion } } });
  }

  async remove(namespace: string, qlbName: string): Promise<void> {
    try {
      await this.core.deleteNamespacedConfigMap({ name: recordsConfigMapName(qlbName), namespace });
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
  }
}
