// Layering of the libraries backends use: the codec (lib/quiclb) and the header parser (lib/quic) are leaves that
// import nothing else of the project; the backend SDK (lib/backend) builds on the codec and lib/config and needs
// neither the Kubernetes client, gRPC, nor the data plane or operator.
import { describe, expect, it } from '@jest/globals';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MAX_CID_LEN } from '../../lib/quiclb/config.js';
import { MAX_CID_LENGTH_V1 } from '../../lib/quic/header.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

/** Every module specifier a file imports or re-exports (static and dynamic). */
function specifiers(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'"]*?from\s*'([^']+)'|import\(\s*'([^']+)'\s*\)|(?:^|\n)\s*import\s*'([^']+)'/g)) {
    out.push(m[1] ?? m[2] ?? m[3]);
  }
  return out;
}

/** The project paths (relative to the root) a folder's files import. */
function projectImports(folder: string): { file: string; target: string }[] {
  return files(join(ROOT, folder)).flatMap((f) =>
    specifiers(f)
      .filter((s) => s.startsWith('.'))
      .map((s) => ({ file: relative(ROOT, f), target: relative(ROOT, resolve(dirname(f), s)) })),
  );
}

function packages(folder: string): string[] {
  return [...new Set(files(join(ROOT, folder)).flatMap((f) => specifiers(f).filter((s) => !s.startsWith('.') && !s.startsWith('node:'))))].sort();
}

describe('library layering', () => {
  it.each(['lib/quiclb', 'lib/quic'])('%s imports nothing of the project outside itself', (folder) => {
    const imports = projectImports(folder);
    expect(imports.length).toBeGreaterThan(0);
    expect(imports.filter((i) => !i.target.startsWith(`${folder}/`))).toEqual([]);
  });

  it('the codec uses no package but the AES implementation', () => {
    expect(packages('lib/quiclb')).toEqual(['@noble/ciphers/aes.js']);
    expect(packages('lib/quic')).toEqual([]);
  });

  it('the backend SDK imports only lib/ and no Kubernetes client, gRPC or data-plane code', () => {
    const imports = projectImports('lib/backend');
    expect(imports.map((i) => i.target)).toContain('lib/quiclb/encoder.js');
    const outside = imports.filter((i) => !i.target.startsWith('lib/'));
    expect(outside).toEqual([]);
    expect(packages('lib/backend')).toEqual([]);
  });

  it('the codec\'s CID length limit is the header parser\'s', () => {
    expect(MAX_CID_LEN).toBe(MAX_CID_LENGTH_V1);
  });

  it('the old codec path is gone and `quiclb` still exports the generator', async () => {
    expect(files(join(ROOT, 'lib/quiclb')).map((f) => relative(ROOT, f))).not.toContain('lib/quiclb/server-generator.ts');
    const lib = await import('../../lib/index.js');
    expect(typeof lib.ServerCidGenerator.fromFile).toBe('function');
    expect(typeof lib.ServerCidGenerator.fromKubernetes).toBe('function');
    expect(typeof lib.parseHex).toBe('function');
  });
});
