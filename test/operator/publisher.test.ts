// SnapshotPublisher (operator/reconcile/publisher.ts): the per-node rule, the start-up hold, publishing only real
// changes, and the per-version memory (config fingerprints for rotation ACKs, correlation ids for the logs).
import { describe, expect, it } from '@jest/globals';
import { pino } from 'pino';
import { InMemorySnapshotSource } from '../../operator/config-server/source.js';
import { SnapshotPublisher } from '../../operator/reconcile/publisher.js';
import { configFingerprint } from '../../operator/rotation/keys.js';
import { config, server, snapshot } from '../dataplane/helpers.js';

const silent = pino({ level: 'silent' });
const lb = (name: string, port = 443) => snapshot([server('web-0', '0001', '198.51.100.7', port)], { name });
const names = (s: InMemorySnapshotSource, node: string) => s.snapshotFor({ identity: `dp-${node}`, nodeName: node })?.loadBalancers.map((l) => l.name) ?? null;

const retained = (s: InMemorySnapshotSource, node: string) => s.snapshotFor({ identity: `dp-${node}`, nodeName: node })?.retained ?? [];

function setup(initial: string[] = [], retainNodesOf?: (key: string) => readonly string[] | null) {
  let t = 1_000;
  const source = new InMemorySnapshotSource(() => ++t);
  const p = new SnapshotPublisher(source, silent, initial, retainNodesOf);
  p.setNodes(['n1', 'n2']);
  return { source, p };
}

describe('SnapshotPublisher', () => {
  it('gives each known node the load balancers that select it, an unknown node nothing', () => {
    const { source, p } = setup();
    p.set('ns/a', lb('ns/a'), ['n1'], 'c1');
    p.set('ns/b', lb('ns/b'), ['n1', 'n2'], 'c2');
    expect(names(source, 'n1')).toEqual(['ns/a', 'ns/b']);
    expect(names(source, 'n2')).toEqual(['ns/b']);
    expect(names(source, 'typo')).toBeNull();
    p.remove('ns/b', 'c3');
    expect(names(source, 'n2')).toEqual([]);
    p.setNodes(['n1', 'n2', 'n3']);
    expect(names(source, 'n3')).toEqual([]);
  });

  it('stamps every load balancer with the global version', () => {
    const { source, p } = setup();
    const v = p.set('ns/a', lb('ns/a'), ['n1'], 'c1');
    expect(source.snapshotFor({ identity: 'x', nodeName: 'n1' })!.loadBalancers[0].version).toBe(v);
    expect(source.version()).toBe(v);
  });

  it('publishes nothing until every load balancer present at start was set or removed', () => {
    const { source, p } = setup(['ns/a', 'ns/b']);
    expect(p.set('ns/a', lb('ns/a'), ['n1'], 'c1')).toBe(0);
    expect(source.version()).toBe(0);
    expect(p.versionOf('ns/a')).toBeNull();
    p.remove('ns/b', 'c2');
    expect(source.version()).toBeGreaterThan(0);
    expect(names(source, 'n1')).toEqual(['ns/a']);
    expect(p.versionOf('ns/a')).toBe(source.version());
    expect(p.correlationIdsOf(source.version())).toEqual(['c1']); // removing an unknown key changed nothing
  });

  it('stops waiting for a load balancer that has nothing to publish, and has the data planes keep it as they have it', () => {
    const { source, p } = setup(['ns/a', 'ns/bad']);
    p.set('ns/a', lb('ns/a'), ['n1'], 'c1');
    expect(source.version()).toBe(0);
    p.settle('ns/bad');
    expect(names(source, 'n1')).toEqual(['ns/a']);
    // it existed at start: a restart must not close its listeners (an invalid edit keeps the last good configuration)
    expect(retained(source, 'n1')).toEqual(['ns/bad']);
  });

  it('a load balancer created after the start and reconciled with nothing to publish is not retained', () => {
    const { source, p } = setup([]);
    p.setNodes(['n1']);
    p.settle('ns/new-bad');
    expect(retained(source, 'n1')).toEqual([]);
    expect(p.retainedCount).toBe(0);
  });

  it('after its content was published, settle() keeps that content (what was published stays)', () => {
    const { source, p } = setup(['ns/a']);
    p.set('ns/a', lb('ns/a'), ['n1'], 'c1');
    const v = source.version();
    p.settle('ns/a');
    expect(source.version()).toBe(v);
    expect(names(source, 'n1')).toEqual(['ns/a']);
    expect(retained(source, 'n1')).toEqual([]);
  });

  it('ends the hold on request', () => {
    const { source, p } = setup(['ns/a', 'ns/b']);
    p.set('ns/a', lb('ns/a'), ['n1'], 'c1');
    p.releaseHold();
    expect(names(source, 'n1')).toEqual(['ns/a']);
  });

  it('publishes a new version only when the content or the nodes change', () => {
    const { source, p } = setup();
    const v1 = p.set('ns/a', lb('ns/a'), ['n1'], 'c1');
    expect(p.set('ns/a', lb('ns/a'), ['n1'], 'c2')).toBe(v1);
    expect(source.version()).toBe(v1);
    const v2 = p.set('ns/a', lb('ns/a', 444), ['n1'], 'c3');
    expect(v2).toBeGreaterThan(v1);
    const v3 = p.set('ns/a', lb('ns/a', 444), ['n1', 'n2'], 'c4');
    expect(v3).toBeGreaterThan(v2);
    // Another load balancer's change moves the global version, not this one's.
    p.set('ns/b', lb('ns/b'), ['n1'], 'c5');
    expect(p.versionOf('ns/a')).toBe(v3);
    expect(p.correlationIdsOf(v3)).toEqual(['c4']);
  });

  it('remembers each version\'s configs per load balancer (what an ACK of that version covers)', () => {
    const { p } = setup();
    const c0 = config(0);
    const c1 = config(1, Buffer.alloc(16, 7));
    const v1 = p.set('ns/a', snapshot([], { name: 'ns/a', configs: [{ config: c0, state: 'active' }] }), ['n1'], 'c1');
    const v2 = p.set('ns/a', snapshot([], { name: 'ns/a', configs: [{ config: c0, state: 'active' }, { config: c1, state: 'accepting' }] }), ['n1'], 'c2');
    expect(p.configsAt(v1, 'ns/a')).toEqual([{ configId: 0, fingerprint: configFingerprint(c0) }]);
    expect(p.configsAt(v2, 'ns/a')).toEqual([
      { configId: 0, fingerprint: configFingerprint(c0) },
      { configId: 1, fingerprint: configFingerprint(c1) },
    ]);
    expect(p.configsAt(v2, 'ns/other')).toEqual([]);
    expect(p.configsAt(12345, 'ns/a')).toBeNull();
  });

  describe('the start-up hold ends before a load balancer was reconciled', () => {
    it('keeps it retained on the nodes it selects instead of dropping it', () => {
      const { source, p } = setup(['ns/a', 'ns/stuck'], (k) => (k === 'ns/stuck' ? ['n2'] : null));
      p.set('ns/a', lb('ns/a'), ['n1', 'n2'], 'c1');
      p.releaseHold();
      expect(names(source, 'n1')).toEqual(['ns/a']);
      expect(retained(source, 'n1')).toEqual([]);
      expect(names(source, 'n2')).toEqual(['ns/a']);
      expect(retained(source, 'n2')).toEqual(['ns/stuck']);
      expect(p.retainedCount).toBe(1);
      // Nothing is known of its configs: an ACK of this version promotes nothing of it.
      expect(p.configsAt(source.version(), 'ns/stuck')).toEqual([]);
      expect(p.versionOf('ns/stuck')).toBeNull();
    });

    it('retains on every known node when its nodes cannot be told', () => {
      const { source, p } = setup(['ns/stuck'], () => null);
      p.releaseHold();
      expect(retained(source, 'n1')).toEqual(['ns/stuck']);
      expect(retained(source, 'n2')).toEqual(['ns/stuck']);
      p.setNodes(['n1', 'n2', 'n3']);
      expect(retained(source, 'n3')).toEqual(['ns/stuck']);
    });

    it('a later set() replaces the retention with the content', () => {
      const { source, p } = setup(['ns/a', 'ns/stuck'], () => ['n1']);
      p.set('ns/a', lb('ns/a'), ['n1'], 'c1');
      p.releaseHold();
      const held = source.version();
      const v = p.set('ns/stuck', lb('ns/stuck', 444), ['n1'], 'c2');
      expect(v).toBeGreaterThan(held);
      expect(names(source, 'n1')).toEqual(['ns/a', 'ns/stuck']);
      expect(retained(source, 'n1')).toEqual([]);
      expect(p.retainedCount).toBe(0);
      expect(p.configsAt(held, 'ns/stuck')).toEqual([]);
      expect(p.configsAt(v, 'ns/stuck')).toHaveLength(1);
    });

    it('settle() keeps the retention (an invalid spec keeps the last good configuration); remove() ends it', () => {
      const { source, p } = setup(['ns/a', 'ns/bad', 'ns/gone'], () => ['n1']);
      p.set('ns/a', lb('ns/a'), ['n1'], 'c1');
      p.releaseHold();
      expect(retained(source, 'n1')).toEqual(['ns/bad', 'ns/gone']);
      const v0 = source.version();
      p.settle('ns/bad');
      expect(source.version()).toBe(v0);
      expect(retained(source, 'n1')).toEqual(['ns/bad', 'ns/gone']);
      expect(p.remove('ns/gone', 'c2')).toBe(source.version());
      expect(p.correlationIdsOf(source.version())).toEqual(['c2']);
      expect(retained(source, 'n1')).toEqual(['ns/bad']);
      expect(names(source, 'n1')).toEqual(['ns/a']);
      expect(p.retainedCount).toBe(1);
      // Nothing left to end: no new version.
      const v1 = source.version();
      p.settle('ns/bad');
      p.remove('ns/gone', 'c3');
      expect(source.version()).toBe(v1);
    });

    it('settled before the hold ends: retained too; removed: not', () => {
      const { source, p } = setup(['ns/a', 'ns/bad', 'ns/gone', 'ns/stuck'], () => ['n1']);
      p.set('ns/a', lb('ns/a'), ['n1'], 'c1');
      p.settle('ns/bad');
      p.remove('ns/gone', 'c2');
      p.releaseHold();
      expect(retained(source, 'n1')).toEqual(['ns/bad', 'ns/stuck']);
    });

    it('follows the nodes it is kept on: refreshRetained() publishes when they change, and only then', () => {
      let nodes = ['n1'];
      const { source, p } = setup(['ns/stuck'], () => nodes);
      p.setNodes(['n1', 'n2']);
      p.releaseHold();
      expect(retained(source, 'n1')).toEqual(['ns/stuck']);
      expect(retained(source, 'n2')).toEqual([]);
      const v = source.version();
      p.refreshRetained();
      expect(source.version()).toBe(v);
      nodes = ['n2']; // relabelled nodes, or an edited nodeSelector
      p.refreshRetained();
      expect(source.version()).toBeGreaterThan(v);
      expect(retained(source, 'n1')).toEqual([]);
      expect(retained(source, 'n2')).toEqual(['ns/stuck']);
    });

    it('a hold that ends because every load balancer reconciled retains nothing', () => {
      const { source, p } = setup(['ns/a'], () => ['n1']);
      p.set('ns/a', lb('ns/a'), ['n1'], 'c1');
      p.releaseHold();
      expect(retained(source, 'n1')).toEqual([]);
      expect(p.retainedCount).toBe(0);
    });
  });
});
