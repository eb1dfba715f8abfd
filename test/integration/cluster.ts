// Helpers for tests against the real cluster the global setup started: admin and ServiceAccount KubeConfigs,
// kubectl and helm from the version-keyed cache, polling, throw-away namespaces.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as k8s from '@kubernetes/client-node';

export interface ClusterInfo {
  /** https://127.0.0.1:PORT */
  server: string;
  /** admin kubeconfig (client certificate in group system:masters) */
  kubeconfig: string;
  /** 1 = etcd + kube-apiserver; 2 = + controller-manager, scheduler, kwok fake nodes */
  tier: 1 | 2;
  kubectl: string;
  helm: string;
  name: string;
  dir: string;
  /** number of kwok fake nodes (0 on tier 1) */
  nodes: number;
  /** e.g. v1.37.2 */
  version: string;
}

function need(key: string): string {
  const v = process.env[key];
  if (!v) throw new Error(`${key} is not set: run through jest.integration.config.js (its global setup starts the cluster)`);
  return v;
}

export function cluster(): ClusterInfo {
  return {
    server: need('QUICLB_APISERVER'),
    kubeconfig: need('KUBECONFIG'),
    tier: need('QUICLB_CLUSTER_TIER') === '1' ? 1 : 2,
    kubectl: need('QUICLB_KUBECTL'),
    helm: need('QUICLB_HELM'),
    name: need('QUICLB_CLUSTER_NAME'),
    dir: need('QUICLB_CLUSTER_DIR'),
    nodes: Number(process.env.QUICLB_KWOK_NODES ?? '0'),
    version: need('QUICLB_K8S_VERSION'),
  };
}

/**
 * Whether the cluster is tier 2 (controllers, scheduler, kwok nodes): suites that need it use
 * `(onTier2() ? describe : describe.skip)`, so a tier-1 run skips them (ci-integration.sh runs tier 2 and fails on skips).
 */
export function onTier2(): boolean {
  return process.env.QUICLB_CLUSTER_TIER !== '1';
}

export function adminKubeConfig(): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(cluster().kubeconfig);
  return kc;
}

/**
 * A KubeConfig that authenticates as a ServiceAccount with a token from the TokenRequest API, so the code under test
 * runs with that account's RBAC, not as admin. The ServiceAccount must exist.
 */
export async function serviceAccountKubeConfig(namespace: string, name: string, expirationSeconds = 3600): Promise<k8s.KubeConfig> {
  const core = adminKubeConfig().makeApiClient(k8s.CoreV1Api);
  const tr = await core.createNamespacedServiceAccountToken({
    name,
    namespace,
    body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { audiences: [], expirationSeconds } },
  });
  const token = tr.status?.token;
  if (!token) throw new Error(`TokenRequest for ${namespace}/${name} returned no token`);
  return kubeConfigForToken(token, `system:serviceaccount:${namespace}:${name}`);
}

export function kubeConfigForToken(token: string, user: string): k8s.KubeConfig {
  const admin = adminKubeConfig();
  const c = admin.getCurrentCluster();
  if (!c) throw new Error('admin kubeconfig has no cluster');
  const kc = new k8s.KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: c.name, server: c.server, caData: c.caData, skipTLSVerify: false }],
    users: [{ name: user, token }],
    contexts: [{ name: 'ctx', cluster: c.name, user }],
    currentContext: 'ctx',
  });
  return kc;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a binary; never throws for a non-zero exit (the result says). */
export function run(file: string, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { env: { ...process.env, ...opts.env }, timeout: opts.timeoutMs ?? 60000, maxBuffer: 32 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err && typeof (err as NodeJS.ErrnoException).code === 'string') {
          reject(err); // could not start at all (ENOENT, ...)
          return;
        }
        const code = err ? ((err as { code?: number }).code ?? 1) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** kubectl (same version as the cluster) with the admin kubeconfig unless env overrides KUBECONFIG. */
export function kubectl(args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
  return run(cluster().kubectl, args, opts);
}

/** Like kubectl() but throws with stderr when the command fails; returns stdout. */
export async function kubectlOk(args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<string> {
  const r = await kubectl(args, opts);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

export function helm(args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
  return run(cluster().helm, args, opts);
}

/** Polls `probe` until it returns a value other than undefined; fails with the last seen state after timeoutMs. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60000, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
      last = 'not yet';
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${last instanceof Error ? last.message : String(last)}`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Creates a namespace with a random suffix (and, on tier 1 where no controller makes it, its "default" ServiceAccount). */
export async function createNamespace(prefix: string): Promise<string> {
  const name = `${prefix}-${randomBytes(3).toString('hex')}`;
  const core = adminKubeConfig().makeApiClient(k8s.CoreV1Api);
  await core.createNamespace({ body: { metadata: { name, labels: { 'quiclb.io/test': 'integration' } } } });
  return name;
}

export async function deleteNamespace(name: string): Promise<void> {
  const core = adminKubeConfig().makeApiClient(k8s.CoreV1Api);
  try {
    await core.deleteNamespace({ name });
  } catch (err) {
    if (!(err instanceof k8s.ApiException && err.code === 404)) throw err;
  }
}

/** The `message` of a Kubernetes Status error body (ApiException.body is the raw JSON text or an object). */
export function statusMessage(err: unknown): string {
  if (!(err instanceof k8s.ApiException)) return err instanceof Error ? err.message : String(err);
  const body: unknown = err.body;
  if (typeof body === 'string') {
    try {
      return String((JSON.parse(body) as { message?: string }).message ?? body);
    } catch {
      return body;
    }
  }
  return String((body as { message?: string } | undefined)?.message ?? err.message);
}
