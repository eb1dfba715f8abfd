/** dataplane/agent/retained.ts: the snapshot a Snapshot.retained asks for, and failure paths mapped back. */
import { describe, expect, it } from '@jest/globals';
import { snapshotToWire } from '../../proto/convert.js';
import { mergeRetained } from '../../dataplane/agent/retained.js';
import { server, snapshot } from '../dataplane/helpers.js';

const lb = (name: string, port: number) => snapshot([server('s', '0001', '127.0.0.1', 9)], { name, listen: [{ host: '127.0.0.1', port, family: 4 }] });
const inForce = snapshotToWire(3, 'x', [lb('a', 1001), lb('b', 1002), lb('c', 1003)]);

describe('mergeRetained', () => {
  it('nothing retained: the snapshot as received', () => {
    const received = snapshotToWire(4, 'y', [lb('a', 1001)]);
    const m = mergeRetained(received, inForce);
    expect(m.wire).toBe(received);
    expect(m.fieldOf('load_balancers[0].listen[0]')).toBe('load_balancers[0].listen[0]');
  });

  it('takes the retained ones from the snapshot in force, first, and leaves out the ones it lacks', () => {
    const m = mergeRetained(snapshotToWire(4, 'y', [lb('d', 1004)], new Date(), ['c', 'zz', 'a']), inForce);
    expect(m.wire.version).toBe(4n);
    expect(m.wire.retained).toEqual([]);
    expect(m.wire.loadBalancers.map((l) => l.name)).toEqual(['c', 'a', 'd']);
    expect(m.wire.loadBalancers[0]).toBe(inForce.loadBalancers[2]);
    expect([...m.kept]).toEqual(['c', 'a']);
    expect(m.missing).toEqual(['zz']);
    expect(m.fieldOf('load_balancers[1].listen[0]')).toBe('retained[2]');
    expect(m.messageOf('load_balancers[1].listen[0]', 'cannot listen')).toBe('load balancer "a" as in force (listen[0]): cannot listen');
    expect(m.fieldOf('load_balancers[2].servers[0].server_id')).toBe('load_balancers[0].servers[0].server_id');
    expect(m.messageOf('load_balancers[2].name', 'bad')).toBe('bad');
    expect(m.fieldOf('')).toBe('');
  });

  it('nothing in force: every retained name is missing', () => {
    const m = mergeRetained(snapshotToWire(4, 'y', [], new Date(), ['a']), null);
    expect(m.wire.loadBalancers).toEqual([]);
    expect(m.missing).toEqual(['a']);
  });

  it('an invalid retained list throws with its wire path', () => {
    expect(() => mergeRetained(snapshotToWire(4, 'y', [lb('a', 1001)], new Date(), ['a']), inForce)).toThrow(/retained\[0\]: "a" is also the name of load_balancers\[0\]/);
  });
});
