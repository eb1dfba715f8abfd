/** proto/convert.ts: the wire snapshot <-> DataplaneSnapshot, and the field paths a Nack carries. */
import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { snapshotToJson, type DataplaneSnapshot } from '../../lib/config/snapshot.js';
import { ConfigError } from '../../lib/quiclb/config.js';
import { retainedFromWire, snapshotFromWire, snapshotToWire, wireFieldPath } from '../../proto/convert.js';
import { Snapshot, type FallbackAlgorithm, type LoadBalancer, type RoutingMode } from '../../proto/gen/quiclb/v1/distribution.js';
import { config, server, snapshot } from '../dataplane/helpers.js';

function lb(name: string, port: number, extra: Partial<DataplaneSnapshot> = {}): DataplaneSnapshot {
  return {
    ...snapshot(
      [
        server('a', '0a01', '127.0.0.1', 5001),
        server('b', '0a02', '::1', 5002, { state: 'draining', weight: 7, verdict: 'unhealthy' }),
        server('c', '0a03', '127.0.0.2', 5003, { verdict: 'healthy', serverIdByConfig: { 1: Buffer.from('0b03', 'hex') } }),
      ],
      {
        configs: [
          { config: config(0), state: 'draining' },
          { config: config(1, Buffer.from('ffeeddccbbaa99887766554433221100', 'hex')), state: 'active' },
        ],
      },
    ),
    name,
    listen: [{ host: '127.0.0.1', port, family: 4 }],
    ...extra,
  };
}

/** Encodes and decodes through protobuf bytes, as the stream does. */
function overTheWire(s: Snapshot): Snapshot {
  return Snapshot.decode(Snapshot.encode(s).finish());
}

function comparable(s: DataplaneSnapshot) {
  return { ...snapshotToJson({ ...s, version: 0 }), verdicts: s.servers.map((x) => x.verdict ?? null) };
}

function mutate(s: Snapshot, f: (lb: LoadBalancer) => void, index = 0): Snapshot {
  const copy = overTheWire(s);
  f(copy.loadBalancers[index]);
  return copy;
}

function rejection(s: Snapshot): { field: string; message: string } {
  try {
    snapshotFromWire(s);
  } catch (e) {
    return { field: (e as { field: string }).field, message: (e as Error).message };
  }
  throw new Error('accepted');
}

describe('snapshot over the wire', () => {
  it('round-trips every field of several load balancers through protobuf bytes', () => {
    const lbs = [lb('ns/one', 4433), lb('ns/two', 4434, { routing: '4-tuple', shortDcidLength: 12, flows: { maxFlows: 77, idleTimeoutMs: 1234 } })];
    const back = snapshotFromWire(overTheWire(snapshotToWire(42, 'n1', lbs)));
    expect(back.version).toBe(42);
    expect(back.loadBalancers.map(comparable)).toEqual(lbs.map(comparable));
    expect(back.loadBalancers.every((l) => l.version === 42)).toBe(true);
  });

  it('keeps durations exact to the millisecond', () => {
    fc.assert(
      fc.property(fc.integer({ min: 10, max: 86_400_000 }), fc.integer({ min: 10, max: 86_400_000 }), (idle, interval) => {
        const s = lb('x', 1, { flows: { maxFlows: 10, idleTimeoutMs: idle } });
        const back = snapshotFromWire(overTheWire(snapshotToWire(1, 'n', [{ ...s, health: { ...s.health, intervalMs: interval } }]))).loadBalancers[0];
        return back.flows.idleTimeoutMs === idle && back.health.intervalMs === interval;
      }),
    );
  });

  it('fills defaults for unset settings (a minimal message from any client)', () => {
    const minimal = Snapshot.fromPartial({
      version: 3n,
      loadBalancers: [
        {
          name: 'min',
          listen: [{ ip: '127.0.0.1', port: 4433 }],
          configs: [{ configId: 0, serverIdLength: 2, nonceLength: 6, state: 1 }],
          servers: [{ name: 's', serverId: Buffer.from('0102', 'hex'), address: { ip: '127.0.0.1', port: 1 }, weight: 1 }],
        },
      ],
    });
    const [s] = snapshotFromWire(minimal).loadBalancers;
    expect(s.flows).toEqual({ maxFlows: 100_000, idleTimeoutMs: 30_000 });
    expect(s.health.intervalMs).toBe(10_000);
    expect(s.routing).toBe('quic-lb');
    expect(s.shortDcidLength).toBe(9);
    expect(s.servers[0].state).toBe('active');
    expect(s.servers[0].verdict).toBeUndefined();
  });

  it('an empty list of load balancers is valid (serve nothing)', () => {
    expect(snapshotFromWire(snapshotToWire(5, 'n', [])).loadBalancers).toEqual([]);
  });
});

describe('rejections name the wire field', () => {
  const good = snapshotToWire(9, 'n', [lb('one', 4433), lb('two', 4434)]);

  it.each<[string, (l: LoadBalancer) => void, string, RegExp]>([
    ['a bad key length', (l) => (l.configs[0].key = Buffer.alloc(5)), 'load_balancers[1].configs[0].key', /16 octets/],
    ['nonce too short', (l) => (l.configs[0].nonceLength = 2), 'load_balancers[1].configs[0].nonce_length', /./],
    ['two active configs', (l) => (l.configs[0].state = 1), 'load_balancers[1].configs', /exactly one config must be active/],
    ['an unspecified config state', (l) => (l.configs[0].state = 0), 'load_balancers[1].configs[0].state', /ACTIVE, ACCEPTING or DRAINING/],
    ['a duplicate config id', (l) => (l.configs[0].configId = 1), 'load_balancers[1].configs[1].config_id', /used twice/],
    ['a duplicate server id', (l) => (l.servers[1].serverId = Buffer.from('0a01', 'hex')), 'load_balancers[1].servers[1].server_id', /also the server ID/],
    ['a bad address', (l) => (l.servers[2].address = { ip: 'backend.local', port: 1 }), 'load_balancers[1].servers[2].address', /IPv4 or IPv6/],
    ['a missing address', (l) => (l.servers[2].address = undefined), 'load_balancers[1].servers[2].address', /required/],
    ['port 0 for a server', (l) => (l.servers[0].address = { ip: '127.0.0.1', port: 0 }), 'load_balancers[1].servers[0].address', /port/],
    ['an oversized weight', (l) => (l.servers[0].weight = 2_000_000), 'load_balancers[1].servers[0].weight', /0\.\.1000000/],
    ['no listen address', (l) => (l.listen = []), 'load_balancers[1].listen', /at least one/],
    ['an idle timeout out of range', (l) => (l.flows = { maxFlows: 1, idleTimeout: { seconds: 0n, nanos: 1_000_000 } }), 'load_balancers[1].flows.idle_timeout', /10\.\.86400000/],
    ['a bad probe threshold', (l) => (l.healthCheck!.failuresThreshold = 5000), 'load_balancers[1].health_check.failures_threshold', /1\.\.1000/],
    ['an unknown routing mode', (l) => (l.routing = 9 as RoutingMode), 'load_balancers[1].routing', /unknown routing mode/],
    ['an unknown fallback algorithm', (l) => (l.fallback = { algorithm: 7 as FallbackAlgorithm }), 'load_balancers[1].fallback.algorithm', /unknown fallback/],
    ['an empty server name', (l) => (l.servers[0].name = ''), 'load_balancers[1].servers[0].name', /empty/],
    ['a duplicate listen address across load balancers', (l) => (l.listen = [{ ip: '127.0.0.1', port: 4433 }]), 'load_balancers[1].listen[0]', /also a listen address of "one"/],
    ['a duplicate name', (l) => (l.name = 'one'), 'load_balancers[1].name', /also the name of load_balancers\[0\]/],
  ])('%s', (_what, change, field, message) => {
    const r = rejection(mutate(good, change, 1));
    expect(r.field).toBe(field);
    expect(r.message).toMatch(message);
    expect(r.message.startsWith(`${field}: `)).toBe(true);
  });

  it('never puts key bytes in a message', () => {
    const r = rejection(mutate(good, (l) => (l.configs[1].key = Buffer.from('00112233445566778899aabbccddee', 'hex')), 1));
    expect(r.message).not.toMatch(/0011223344/);
  });

  it('maps snapshot paths to wire names', () => {
    expect(wireFieldPath('servers[2].serverId')).toBe('servers[2].server_id');
    expect(wireFieldPath('health.intervalMs')).toBe('health_check.interval');
    expect(wireFieldPath('flows.maxFlows')).toBe('flows.max_flows');
    expect(wireFieldPath('shortDcidLength')).toBe('short_header_dcid_length');
  });
});

describe('Snapshot.retained', () => {
  const two = [lb('one', 4433), lb('two', 4434)];
  const withRetained = (retained: string[], lbs = two) => overTheWire(snapshotToWire(9, 'n', lbs, new Date(), retained));

  it('round-trips the names, beside the load balancers', () => {
    const c = snapshotFromWire(withRetained(['ns/kept', 'ns/other']));
    expect(c.retained).toEqual(['ns/kept', 'ns/other']);
    expect(c.loadBalancers.map((l) => l.name)).toEqual(['one', 'two']);
    expect(snapshotFromWire(withRetained([])).retained).toEqual([]);
    expect(snapshotFromWire(withRetained(['only'], [])).loadBalancers).toEqual([]);
  });

  it.each<[string, string[], string, RegExp]>([
    ['an empty name', ['a', ''], 'retained[1]', /must not be empty/],
    ['an over-long name', ['x'.repeat(254)], 'retained[0]', /at most 253 characters, got 254/],
    ['a duplicate', ['a', 'b', 'a'], 'retained[2]', /"a" is also retained\[0\]/],
    ['a name also present', ['a', 'two'], 'retained[1]', /"two" is also the name of load_balancers\[1\]/],
    ['too many with the load balancers', Array.from({ length: 255 }, (_, i) => `r${i}`), 'retained', /at most 256 load balancers with load_balancers, got 2 \+ 255/],
  ])('rejects %s with its field', (_what, retained, field, message) => {
    const r = rejection(withRetained(retained));
    expect(r.field).toBe(field);
    expect(r.message).toMatch(message);
  });

  it('too many load balancers without any retained: the field is load_balancers, whoever checks first', () => {
    const wire = withRetained([], Array.from({ length: 257 }, (_, i) => lb(`lb${i}`, 1000 + i)));
    let err: unknown;
    try {
      retainedFromWire(wire);
    } catch (e) {
      err = e;
    }
    expect((err as ConfigError).field).toBe('load_balancers');
    expect(rejection(wire).field).toBe('load_balancers');
  });

  it('accepts 256 in all', () => {
    expect(snapshotFromWire(withRetained(Array.from({ length: 254 }, (_, i) => `r${i}`))).retained).toHaveLength(254);
  });
});
