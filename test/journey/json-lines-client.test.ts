import { describe, expect, it } from '@jest/globals';
import { spawn } from 'node:child_process';
import { JsonLinesClient } from './json-lines-client.js';
import type { Json } from './lines.js';

// echo: answers with x (answers in reverse order of two requests show the ids matter); quiet: no answer; exit: a
// non-JSON line, an event, then exit 3 without answering
const CHILD = `
const rl = require('node:readline').createInterface({ input: process.stdin });
let held = null;
rl.on('line', (l) => {
  const r = JSON.parse(l);
  const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
  if (r.op === 'echo' && held === null) held = r;
  else if (r.op === 'echo') { out({ id: r.id, x: r.x }); out({ id: held.id, x: held.x }); held = null; }
  else if (r.op === 'exit') { process.stdout.write('not json\\n'); out({ event: 'bye' }); process.exit(3); }
});
`;

function start(): { client: JsonLinesClient; other: [string, Json | undefined][] } {
  const other: [string, Json | undefined][] = [];
  const child = spawn(process.execPath, ['-e', CHILD], { stdio: ['pipe', 'pipe', 'inherit'] });
  return { client: new JsonLinesClient(child, { name: 'test child', onLine: (line, m) => other.push([line, m]) }), other };
}

describe('JsonLinesClient', () => {
  it('matches answers to requests by id, hands other lines to onLine, rejects on exit and after it', async () => {
    const { client, other } = start();
    const [a, b] = await Promise.all([client.request({ op: 'echo', x: 1 }), client.request({ op: 'echo', x: 2 })]);
    expect([a, b]).toEqual([{ x: 1 }, { x: 2 }]);
    const quiet = client.request({ op: 'quiet' });
    await expect(client.request({ op: 'exit' })).rejects.toThrow('test child exited (3)');
    await expect(quiet).rejects.toThrow('test child exited (3)');
    await expect(client.request({ op: 'echo' })).rejects.toThrow('test child exited (3)');
    expect(other).toEqual([['not json', undefined], ['{"event":"bye"}', { event: 'bye' }]]);
    expect(await client.closed).toBe('3');
  });

  it('times out a request; close() ends the child', async () => {
    const { client } = start();
    await expect(client.request({ op: 'quiet' }, 50)).rejects.toThrow('test child: no answer to quiet within 50 ms');
    expect(await client.close(5000)).toBe('0');
  });
});
