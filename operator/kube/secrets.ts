/**
 * The Secrets the operator reads and writes: the configs Secret `<name>-quiclb-configs` (configs.json for the
 * backends + state.json, the rotation record; secret-codec.ts), written whole with the read resourceVersion as
 * precondition, and the user's key Secret (spec.encryption.keySecretRef), read only. Key bytes never leave this
 * module except as Uint8Array values; errors name the Secret and data key, never the value.
 */
import * as k8s from '@kubernetes/client-node';
import { ownerReference, type Owner } from '../allocation/store.js';
import { configsSecretName } from '../reconcile/desired.js';
import { parseUserKey } from '../rotation/keys.js';
import { INITIAL_STATE, type MachineState } from '../rotation/machine.js';
import { decodeConfigsSecret } from '../rotation/secret-codec.js';
import { isNotFound } from './informers.js';

export interface StoredConfigs {
  readonly state: MachineState;
  readonly keys: ReadonlyMap<number, Uint8Array>;
  /** The stored data as is (to write only a difference). */
  readonly data: Readonly<Record<string, string>> | null;
  readonly resourceVersion: string | null;
}

export class SecretStore {
  constructor(private readonly core: k8s.CoreV1Api) {}

  /** Throws ConfigError when the Secret exists but does not decode (never overwritten then: backends mount it). */
  async readConfigs(namespace: string, qlbName: string): Promise<StoredConfigs> {
    let s: k8s.V1Secret;
    try {
      s = await this.core.readNamespacedSecret({ name: configsSecretName(qlbName), namespace });
    } catch (e) {
      if (isNotFound(e)) return { state: INITIAL_STATE, keys: new Map(), data: null, resourceVersion: null };
      throw e;
    }
    const { state, keys } = decodeConfigsSecret(s.data);
    return { state, keys, data: s.data ?? {}, resourceVersion: s.metadata?.resourceVersion ?? null };
  }

  async writeConfigs(namespace: string, owner: Owner, data: Record<string, string>, resourceVersion: string | null): Promise<void> {
    const name = configsSecretName(owner.name);
    const metadata: k8s.V1ObjectMeta = {
      name,
      namespace,
      labels: { 'app.kubernetes.io/managed-by': 'quiclb-operator', 'quiclb.io/load-balancer': owner.name },
      ownerReferences: [ownerReference(owner)],
    };
    if (resourceVersion === null) await this.core.createNamespacedSecret({ namespace, body: { metadata, type: 'Opaque', data } });
    else await this.core.replaceNamespacedSecret({ name, namespace, body: { metadata: { ...metadata, resourceVersion }, type: 'Opaque', data } });
  }

  async removeConfigs(namespace: string, qlbName: string): Promise<void> {
    try {
      await this.core.deleteNamespacedSecret({ name: configsSecretName(qlbName), namespace });
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
  }

  /** The user's key, or why it cannot be used (for Degraded/KeyUnavailable). */
  async readUserKey(namespace: string, ref: { name: string; key: string }): Promise<{ key: Uint8Array } | { problem: string }> {
    let s: k8s.V1Secret;
    try {
      s = await this.core.readNamespacedSecret({ name: ref.name, namespace });
    } catch (e) {
      if (isNotFound(e)) return { problem: `Secret ${ref.name} not found` };
      throw e;
    }
    const b64 = s.data?.[ref.key];
    try {
      return { key: parseUserKey(ref.name, ref.key, b64 === undefined ? undefined : Buffer.from(b64, 'base64')) };
    } catch (e) {
      return { problem: (e as Error).message };
    }
  }
}
