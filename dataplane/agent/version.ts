/** The quiclb version (package.json), found from this file in the source tree and in dist/ alike. */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

let cached: string | null = null;

export function softwareVersion(): string {
  if (cached !== null) return cached;
  let dir = import.meta.dirname;
  for (let i = 0; i < 6; i++) {
    const p = join(dir, 'package.json');
    if (existsSync(p)) {
      try {
        const pkg = JSON.parse(readFileSync(p, 'utf8')) as { name?: string; version?: string };
        if (pkg.name === 'quiclb' && typeof pkg.version === 'string') return (cached = pkg.version);
      } catch {
        // not ours
      }
    }
    dir = dirname(dir);
  }
  return (cached = 'unknown');
}
