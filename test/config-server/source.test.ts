/**
 * Snapshot sources: versions only grow and never fall below the clock (a restarted process is newer); the
 * in-memory source picks per identity, then per node, then `all`; the file source publishes on a real change
 * (including a key file's), not on an unchanged rewrite, and keeps a file's last good load balancer.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileSnapshotSource } from '../../operator/config-server/file-source.js';
import { InMemorySnapshotSource, nextVersion } from '../../operator/config-server/source.js';
import { ConfigError } from '../../lib/quiclb/config.js';
import { captureLogger, makeLoadBalancer, sleep, TEST_KEYS } from './helpers.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'quiclb-source-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('versions', () => {
  it('grow with every publication and are never below the clock', () => {
    fc.assert(
      fc.property(fc.nat({ max: 2 ** 50 }), fc.nat({ max: 2 ** 50 }), (prev, now) => {
        const v = nextVersion(prev, now);
        return v > prev && v >= now;
      }),
    );
  });

  it('a source started later (a restart) publishes a newer first version even after many fast publications', () => {
    let t = 1_000_000;
    const first = new InMemorySnapshotSource(() => t);
    let last = 0;
    for (let i = 0; i < 100; i++) last = first.publish({ all: [] });
    t += 200; // the restart takes longer than 100 publications took
    expect(new InMemorySnapshotSource(() => t).publish({ all: [] })).toBeGreaterThan(last);
  });
});

describe('InMemorySnapshotSource', () => {
  it('serves per identity, else per node, else all; null before the first publication', () => {
    const s = new InMemorySnapshotSource();
    expect(s.snapshotFor({ identity: 'a', nodeName: 'n' })).toBeNull();
    const all = [makeLoadBalancer('all')];
    const v = s.publish({ all, byNode: new Map([['n2', [makeLoadBalancer('node')]]]), byIdentity: new Map([['b', []]]) });
    expect(s.snapshotFor({ identity: 'a', nodeName: 'n' })).toEqual({ version: v, loadBalancers: all });
    expect(s.snapshotFor({ identity: 'a', nodeName: 'n2' })!.loadBalancers[0].name).toBe('node');
    expect(s.snapshotFor({ identity: 'b', nodeName: 'n2' })!.loadBalancers).toEqual([]);
    const seen: number[] = [];
    const off = s.subscribe((x) => seen.push(x));
    const v2 = s.publish((version) => ({ all: [{ ...makeLoadBalancer('x'), version }] }));
    off();
    s.publish({ all: [] });
    expect(seen).toEqual([v2]);
  });
});

function yaml(name: string, keyLine: string, weight = 100): string {
  return `name: ${name}\nlisten: ["127.0.0.1:4433"]\nloadbalancer:\n  server_id_length: 2\n  nonce_length: 6\n  ${keyLine}\nservers:\n  - id: s1\n    address: "127.0.0.1:5001"\n    weight: ${weight}\n`;
}

describe('FileSnapshotSource', () => {
  it('publishes on a key file change, not on an unchanged rewrite, and keeps the last good load balancer', async () => {
    const keyFile = join(dir, 'web.key');
    const file = join(dir, 'web.yaml');
    writeFileSync(keyFile, TEST_KEYS[0].toString('base64'));
    writeFileSync(file, yaml('web', 'encryption_key_file: web.key'));
    const { logger, lines } = captureLogger();
    const source = new FileSnapshotSource({ files: [file], logger, debounceMs: 20, pollMs: 100 });
    try {
      const v1 = source.version();
      const key = () => Buffer.from(source.snapshotFor({ identity: 'a', nodeName: 'n' })!.loadBalancers[0].configs[0].config.key!);
      expect(key()).toEqual(TEST_KEYS[0]);
      expect(source.snapshotFor({ identity: 'a', nodeName: 'n' })!.loadBalancers[0].version).toBe(v1);

      writeFileSync(file, yaml('web', 'encryption_key_file: web.key')); // same content
      await sleep(400);
      expect(source.version()).toBe(v1);

      writeFileSync(keyFile, TEST_KEYS[1].toString('base64'));
      for (let i = 0; i < 40 && source.version() === v1; i++) await sleep(50);
      const v2 = source.version();
      expect(v2).toBeGreaterThan(v1);
      expect(key()).toEqual(TEST_KEYS[1]);

      writeFileSync(keyFile, 'too short');
      await sleep(500);
      expect(source.version()).toBe(v2);
      expect(key()).toEqual(TEST_KEYS[1]);
      expect(lines.some((l) => l.includes('invalid load balancer file: keeping its last good config'))).toBe(true);
      for (const k of TEST_KEYS) expect(lines.join('\n')).not.toContain(k.toString('base64'));
    } finally {
      source.close();
    }
  });

  it('refuses at start an invalid file, naming it, and two load balancers with one name', () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, yaml('bad', 'encryption_key: "AAAA"'));
    const { logger } = captureLogger();
    expect(() => new FileSnapshotSource({ files: [bad], logger, watch: false })).toThrow(ConfigError);
    expect(() => new FileSnapshotSource({ files: [bad], logger, watch: false })).toThrow(`${bad}: loadbalancer.encryption_key`);
    const a = join(dir, 'a.yaml');
    const b = join(dir, 'b.yaml');
    writeFileSync(a, yaml('same', `encryption_key: "${TEST_KEYS[0].toString('base64')}"`));
    writeFileSync(b, yaml('same', `encryption_key: "${TEST_KEYS[1].toString('base64')}"`).replace('4433', '4434'));
    expect(() => new FileSnapshotSource({ files: [a, b], logger, watch: false })).toThrow(`${b}: name`);
  });
});
