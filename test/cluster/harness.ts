// Programmatic face of the cluster scripts, for test harnesses (the jest global setup uses it): build/check the
// cached binaries, start a cluster (tier 1 or 2) and load its settings, stop it.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Folder of build.sh, up.sh, down.sh, token.sh. */
export const CLUSTER_SCRIPTS = fileURLToPath(new URL('.', import.meta.url));

export interface ClusterUpOptions {
  /** 1 = etcd + kube-apiserver; 2 = + controller-manager, scheduler, kwok fake nodes (default 2) */
  tier?: 1 | 2;
  /** cluster name; its state lives in $TMPDIR/quiclb-cluster-NAME */
  name: string;
  /** kwok fake nodes on tier 2 (default 3) */
  nodes?: number;
  /** tear the cluster down by itself once this process is gone */
  ownerPid?: number;
}

/** Builds the binaries into ~/.cache/quiclb on a cold cache (long, prints progress), else checks them (about 1 s). */
export function ensureBinaries(): void {
  execFileSync('bash', [join(CLUSTER_SCRIPTS, 'build.sh')], { stdio: ['ignore', 'inherit', 'inherit'] });
}

/** Starts a cluster and returns the path of its cluster.env (KEY=value lines). Progress goes to stderr. */
export function clusterUp(opts: ClusterUpOptions): string {
  const args = [join(CLUSTER_SCRIPTS, 'up.sh'), '--tier', String(opts.tier ?? 2), '--name', opts.name];
  if (opts.nodes !== undefined) args.push('--nodes', String(opts.nodes));
  if (opts.ownerPid !== undefined) args.push('--owner-pid', String(opts.ownerPid));
  const out = execFileSync('bash', args, { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  const envFile = out.trim().split('\n').pop() ?? '';
  if (!envFile.endsWith('/cluster.env')) throw new Error(`up.sh printed no cluster.env path: ${out}`);
  return envFile;
}

/** Stops the cluster whose state folder is `dir`: kills exactly its recorded PIDs and removes the folder. */
export function clusterDown(dir: string): void {
  execFileSync('bash', [join(CLUSTER_SCRIPTS, 'down.sh'), '--dir', dir], { stdio: ['ignore', 'inherit', 'inherit'] });
}

/** Parses a cluster.env file. */
export function readClusterEnv(envFile: string): Record<string, string> {
  let text: string;
  try {
    text = readFileSync(envFile, 'utf8');
  } catch (err) {
    throw new Error(`cannot read the cluster settings '${envFile}': ${(err as Error).message}`, { cause: err });
  }
  const env: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) env[m[1]] = m[2];
  }
  if (!env.KUBECONFIG || !env.QUICLB_APISERVER) throw new Error(`${envFile} lacks KUBECONFIG or QUICLB_APISERVER`);
  return env;
}

/** Reads a cluster.env file into process.env (KUBECONFIG, QUICLB_APISERVER, QUICLB_KUBECTL, QUICLB_HELM, ...). */
export function loadClusterEnv(envFile: string): void {
  Object.assign(process.env, readClusterEnv(envFile));
}
