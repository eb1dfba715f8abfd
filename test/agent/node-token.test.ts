/**
 * `--node-token-file`: the agent sends the file's token as x-quiclb-node-token on every stream attempt, re-reading
 * it each time (the kubelet rotates a projected token in place), so a config server that refused a stale token
 * accepts the rotated one on the next attempt. The token never appears in the agent's logs. A token file that
 * cannot be used is refused with a message naming the problem, not the content. Real config server over mTLS.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { pino } from 'pino';
import { runAgent, type AgentHandle } from '../../dataplane/agent/agent.js';
import { NodeTokenError, readNodeToken } from '../../dataplane/agent/node-token.js';
import type { AuthenticateNode } from '../../operator/config-server/node-auth.js';
import { InMemorySnapshotSource } from '../../operator/config-server/source.js';
import { TestCa } from '../helpers/tls.js';
import { startServer, type StartedServer } from '../config-server/helpers.js';
import { waitFor } from '../dataplane/helpers.js';

const OLD = 'eyJhbGciOiJSUzI1NiJ9.old-token-of-node-a.sig';
const NEW = 'eyJhbGciOiJSUzI1NiJ9.rotated-token-of-node-a.sig';

let ca: TestCa;
let started: StartedServer;
let dir: string;
const agents: AgentHandle[] = [];
const seen: string[] = [];
const verify: AuthenticateNode = async (token, node) => {
  seen.push(token);
  return token === NEW && node === 'node-a' ? { ok: true } : { ok: false, reason: 'token expired' };
};
const source = new InMemorySnapshotSource();

beforeAll(async () => {
  ca = new TestCa();
  dir = mkdtempSync(join(tmpdir(), 'quiclb-node-token-'));
  started = await startServer(source, ca.issue({ cn: 'quiclb-operator', usage: 'server' }), { authenticateNode: verify });
});

afterAll(async () => {
  for (const a of agents) await a.stop();
  await started?.server.close(200);
  ca?.remove();
  rmSync(dir, { recursive: true, force: true });
});

describe('quiclb dataplane --node-token-file', () => {
  it('sends the token on every attempt, re-read from the file: a refused stale token is followed by the rotated one', async () => {
    const file = join(dir, 'token');
    writeFileSync(file, OLD + '\n');
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _e, cb) {
        lines.push(chunk.toString('utf8'));
        cb();
      },
    });
    const version = source.publish({ all: [] });
    const agent = await runAgent({
      operator: started.address,
      tlsDir: ca.issue({ cn: 'quiclb-dataplane', usage: 'client' }).dir,
      nodeName: 'node-a',
      nodeTokenFile: file,
      metricsPort: null,
      logger: pino({ level: 'debug' }, sink),
      backoff: { initialMs: 50, maxMs: 300 },
    });
    agents.push(agent);
    expect(await waitFor(() => seen.includes(OLD), 5000)).toBe(true);
    expect(agent.versionInForce()).toBeNull();
    writeFileSync(file, NEW + '\n');
    expect(await waitFor(() => agent.versionInForce() === version, 10_000)).toBe(true);
    expect(seen[seen.length - 1]).toBe(NEW);
    expect(agent.operator.attempts).toBeGreaterThanOrEqual(2);
    const logged = lines.join('');
    expect(logged).toContain('PERMISSION_DENIED');
    for (const t of [OLD, NEW]) expect(logged).not.toContain(t.split('.')[1]);
  });

  it('refuses unusable token files with the problem, never the content', () => {
    const empty = join(dir, 'empty');
    writeFileSync(empty, ' \n');
    const big = join(dir, 'big');
    writeFileSync(big, 'a'.repeat(9000));
    const binary = join(dir, 'binary');
    writeFileSync(binary, 'secret\u0001part');
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    expect(() => readNodeToken(join(dir, 'missing'))).toThrow(/ENOENT/);
    expect(() => readNodeToken(empty)).toThrow(/is empty/);
    expect(() => readNodeToken(big)).toThrow(/more than the 8192/);
    expect(() => readNodeToken(fifo)).toThrow(/FIFO/);
    expect(() => readNodeToken(binary)).toThrow(NodeTokenError);
    try {
      readNodeToken(binary);
    } catch (e) {
      expect((e as Error).message).not.toContain('secret');
    }
    expect(readNodeToken((writeFileSync(join(dir, 'ok'), `  ${OLD}\n`), join(dir, 'ok')))).toBe(OLD);
  });
});
