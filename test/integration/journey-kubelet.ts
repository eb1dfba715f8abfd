/**
 * The journey's stand-in for the kubelet of the kwok nodes (kwok runs no containers): for a pod of the real cluster it
 * materialises the pod's volumes in local directories the way the kubelet's atomic writer does (a timestamped payload
 * directory, `..data` -> it, each visible file a symlink through `..data`, updates by renaming a `..data_tmp` symlink
 * over `..data`), keeps Secret and downward-API content current while the pod lives (key rotation, the server-ID
 * annotation), and turns the container's args and env into a local process's, with mount paths replaced by those
 * directories. ServiceAccount tokens come from the TokenRequest API bound to the pod, as the kubelet asks for them.
 * It reads the API as the cluster's admin, as a kubelet reads with its node credentials: only the processes it
 * starts get the pod's own, narrower credentials.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { adminKubeConfig, kubeConfigForToken } from './cluster.js';

/** What a volume holds: file path inside the volume -> content. */
export type Payload = Map<string, Buffer>;

let payloadSeq = 0;

/** Writes `payload` into `dir` like the kubelet's AtomicWriter; returns false when nothing changed. */
export function writeAtomically(dir: string, payload: Payload): boolean {
  mkdirSync(dir, { recursive: true });
  if (samePayload(dir, payload)) return false;
  const stamp = `..${new Date().toISOString().replace(/[-:]/g, '_').replace('T', '_').replace('Z', '')}.${process.pid}${++payloadSeq}`;
  const data = join(dir, stamp);
  for (const [path, content] of payload) {
    const file = join(data, path);
    mkdirSync(join(file, '..'), { recursive: true });
    writeFileSync(file, content, { mode: 0o440 });
  }
  mkdirSync(data, { recursive: true });
  const tmp = join(dir, '..data_tmp');
  rmSync(tmp, { force: true });
  symlinkSync(stamp, tmp);
  renameSync(tmp, join(dir, '..data'));
  const top = new Set([...payload.keys()].map((p) => p.split('/')[0]));
  for (const name of top) {
    if (!existsSync(join(dir, name))) symlinkSync(join('..data', name), join(dir, name));
  }
  for (const entry of readdirSync(dir)) {
    if (entry.startsWith('..') && entry !== '..data' && entry !== stamp) rmSync(join(dir, entry), { recursive: true, force: true });
    else if (!entry.startsWith('..') && !top.has(entry)) unlinkSync(join(dir, entry));
  }
  return true;
}

function samePayload(dir: string, payload: Payload): boolean {
  if (!existsSync(join(dir, '..data'))) return false;
  const files = new Set<string>();
  const walk = (rel: string) => {
    for (const e of readdirSync(join(dir, '..data', rel), { withFileTypes: true })) {
      const p = rel === '' ? e.name : `${rel}/${e.name}`;
      if (e.isDirectory()) walk(p);
      else files.add(p);
    }
  };
  walk('');
  if (files.size !== payload.size) return false;
  for (const [p, content] of payload) {
    if (!files.has(p) || !readFileSync(join(dir, '..data', p)).equals(content)) return false;
  }
  return true;
}

/**
 * Only a 404 means the object is missing (an optional source then leaves its files out); any other failure (the API
 * server restarting, overloaded) throws, so the volume keeps its last content, as the kubelet does.
 */
function notFoundAsNull(err: unknown): null {
  if (err instanceof k8s.ApiException && err.code === 404) return null;
  throw err;
}

/** The value of a downward-API fieldRef of the pod (the fields the journey's pods use). */
export function fieldOf(pod: k8s.V1Pod, fieldPath: string): string {
  const ann = /^metadata\.annotations\['(.+)'\]$/.exec(fieldPath);
  if (ann) return pod.metadata?.annotations?.[ann[1]] ?? '';
  const label = /^metadata\.labels\['(.+)'\]$/.exec(fieldPath);
  if (label) return pod.metadata?.labels?.[label[1]] ?? '';
  switch (fieldPath) {
    case 'metadata.name':
      return pod.metadata!.name!;
    case 'metadata.namespace':
      return pod.metadata!.namespace!;
    case 'metadata.uid':
      return pod.metadata!.uid!;
    case 'spec.nodeName':
      return pod.spec!.nodeName!;
    case 'spec.serviceAccountName':
      return pod.spec!.serviceAccountName ?? 'default';
    case 'status.podIP':
      return pod.status?.podIP ?? '';
    case 'status.hostIP':
      return pod.status?.hostIP ?? '';
    default:
      throw new Error(`journey kubelet: fieldRef ${fieldPath} is not modelled`);
  }
}

/** One pod's volumes on this machine, refreshed by refresh(). */
export class PodVolumes {
  private readonly core = adminKubeConfig().makeApiClient(k8s.CoreV1Api);
  /** volume name -> local directory */
  readonly dirs = new Map<string, string>();
  /** ServiceAccount tokens already requested, per volume/path (the kubelet renews them at 80 % of their life; the journey is shorter). */
  private readonly tokens = new Map<string, string>();

  /** `hostPaths` maps a hostPath volume's path to the node's local directory for it (survives pod replacement). */
  constructor(
    public pod: k8s.V1Pod,
    private readonly root: string,
    private readonly hostPaths: (path: string) => string,
  ) {}

  get name(): string {
    return this.pod.metadata!.name!;
  }

  /** Re-reads the pod (annotations change) and rewrites every volume whose content changed; returns the changed volume names. */
  async refresh(rereadPod = true): Promise<string[]> {
    if (rereadPod) this.pod = await this.core.readNamespacedPod({ name: this.name, namespace: this.pod.metadata!.namespace! });
    const changed: string[] = [];
    for (const v of this.pod.spec?.volumes ?? []) {
      const dir = this.dirFor(v);
      if (v.hostPath) continue;
      if (v.emptyDir) continue;
      const payload = await this.payloadOf(v);
      if (payload && writeAtomically(dir, payload)) changed.push(v.name);
    }
    return changed;
  }

  private dirFor(v: k8s.V1Volume): string {
    let dir = this.dirs.get(v.name);
    if (dir) return dir;
    dir = v.hostPath ? this.hostPaths(v.hostPath.path) : join(this.root, this.pod.metadata!.uid!, v.name);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.dirs.set(v.name, dir);
    return dir;
  }

  private async payloadOf(v: k8s.V1Volume): Promise<Payload | null> {
    const out: Payload = new Map();
    if (v.secret) {
      if (!(await this.addSecret(out, v.secret.secretName!, v.secret.items, v.secret.optional))) return null;
      return out;
    }
    if (v.downwardAPI) {
      for (const item of v.downwardAPI.items ?? []) out.set(item.path, Buffer.from(fieldOf(this.pod, item.fieldRef!.fieldPath)));
      return out;
    }
    if (v.configMap) {
      const cm = await this.core.readNamespacedConfigMap({ name: v.configMap.name!, namespace: this.pod.metadata!.namespace! }).catch(notFoundAsNull);
      if (!cm) return v.configMap.optional ? out : null;
      for (const [k, val] of Object.entries(cm.data ?? {})) {
        const item = v.configMap.items ? v.configMap.items.find((i) => i.key === k) : { key: k, path: k };
        if (item) out.set(item.path, Buffer.from(val));
      }
      return out;
    }
    if (v.projected) {
      for (const s of v.projected.sources ?? []) {
        if (s.secret && !(await this.addSecret(out, s.secret.name!, s.secret.items, s.secret.optional))) return null;
        if (s.downwardAPI) for (const item of s.downwardAPI.items ?? []) out.set(item.path, Buffer.from(fieldOf(this.pod, item.fieldRef!.fieldPath)));
        if (s.serviceAccountToken) out.set(s.serviceAccountToken.path, Buffer.from(await this.token(`${v.name}/${s.serviceAccountToken.path}`, s.serviceAccountToken.audience, s.serviceAccountToken.expirationSeconds)));
        if (s.configMap) {
          const cm = await this.core.readNamespacedConfigMap({ name: s.configMap.name!, namespace: this.pod.metadata!.namespace! }).catch(notFoundAsNull);
          if (!cm && !s.configMap.optional) return null;
          for (const [k, val] of Object.entries(cm?.data ?? {})) {
            const item = s.configMap.items ? s.configMap.items.find((i) => i.key === k) : { key: k, path: k };
            if (item) out.set(item.path, Buffer.from(val));
          }
        }
      }
      return out;
    }
    throw new Error(`journey kubelet: volume ${v.name} of pod ${this.name} has a kind that is not modelled`);
  }

  /** Adds the Secret's keys (or `items`); false when it is missing and not optional (the kubelet keeps the pod waiting). */
  private async addSecret(out: Payload, name: string, items: k8s.V1KeyToPath[] | undefined, optional: boolean | undefined): Promise<boolean> {
    const s = await this.core.readNamespacedSecret({ name, namespace: this.pod.metadata!.namespace! }).catch(notFoundAsNull);
    if (!s) return optional === true;
    for (const [k, val] of Object.entries(s.data ?? {})) {
      const item = items ? items.find((i) => i.key === k) : { key: k, path: k };
      if (item) out.set(item.path, Buffer.from(val, 'base64'));
    }
    return true;
  }

  /** A token of the pod's ServiceAccount bound to the pod (its node appears in the token's claims), as the kubelet requests it. */
  async token(key: string, audience?: string, expirationSeconds?: number): Promise<string> {
    const known = this.tokens.get(key);
    if (known) return known;
    const tr = await this.core.createNamespacedServiceAccountToken({
      name: this.pod.spec!.serviceAccountName ?? 'default',
      namespace: this.pod.metadata!.namespace!,
      body: {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenRequest',
        spec: {
          audiences: audience ? [audience] : [],
          expirationSeconds: expirationSeconds ?? 3600,
          boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: this.name, uid: this.pod.metadata!.uid! },
        },
      },
    });
    const token = tr.status?.token;
    if (!token) throw new Error(`TokenRequest for pod ${this.name} returned no token`);
    this.tokens.set(key, token);
    return token;
  }

  /**
   * The container's command line and environment as local paths: every arg that names a path under a volumeMount's
   * mountPath names the same path under the volume's local directory; env fieldRefs are resolved from the pod.
   */
  process(container = 0): { args: string[]; env: Record<string, string> } {
    const c = this.pod.spec!.containers[container];
    const mounts = (c.volumeMounts ?? []).map((m) => ({ at: m.mountPath, dir: this.dirs.get(m.name) })).sort((a, b) => b.at.length - a.at.length);
    const local = (value: string): string => {
      for (const m of mounts) {
        const i = value.indexOf(m.at);
        if (i >= 0 && (value.length === i + m.at.length || value[i + m.at.length] === '/')) {
          if (!m.dir) throw new Error(`journey kubelet: volume of ${m.at} not materialised (refresh() first)`);
          return value.slice(0, i) + m.dir + value.slice(i + m.at.length);
        }
      }
      return value;
    };
    const env: Record<string, string> = {};
    for (const e of c.env ?? []) {
      if (e.value !== undefined) env[e.name] = e.value;
      else if (e.valueFrom?.fieldRef) env[e.name] = fieldOf(this.pod, e.valueFrom.fieldRef.fieldPath);
      else throw new Error(`journey kubelet: env ${e.name} of pod ${this.name} has a source that is not modelled`);
    }
    return { args: (c.args ?? []).map(local), env };
  }

  /** A kubeconfig with the pod's ServiceAccount token (what in-cluster configuration would read from the mounted token). */
  async serviceAccountKubeconfig(file: string): Promise<string> {
    const token = await this.token('in-cluster');
    const kc = kubeConfigForToken(token, `system:serviceaccount:${this.pod.metadata!.namespace}:${this.pod.spec!.serviceAccountName ?? 'default'}`);
    writeFileSync(file, kc.exportConfig(), { mode: 0o600 });
    return file;
  }
}
