import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import type * as k8s from '@kubernetes/client-node';
import { snapshotFromWire, snapshotToWire } from '../../proto/convert.js';
import { EMPTY_RECORDS } from '../../operator/allocation/server-ids.js';
import { decodeBackendSecret } from '../../operator/rotation/keys.js';
import { keyFingerprint } from '../../lib/config/key-fingerprint.js';
import { INITIAL_STATE, type MachineState } from '../../operator/rotation/machine.js';
import { computeDesired, configsSecretName, statusFacts, type DataPlaneObservation, type EndpointSliceView, type Observed } from '../../operator/reconcile/desired.js';
import { keyRotationCondition } from '../../operator/status/key-rotation.js';
import { decideHealth, staleAfterMs } from '../../operator/reconcile/health-verdict.js';
import { backendHolder, claimsOf, podOwnership, portConflicts, type BackendClaim, type PortClaim } from '../../operator/reconcile/port-claims.js';
import { observe } from '../../operator/reconcile/observe.js';
import { readPreviousServerId, readSpec, selectsNode, SERVER_ID_PROPAGATION_MS } from '../../operator/reconcile/spec.js';
import { buildStatus } from '../../operator/status/status.js';

const T0 = Date.parse('2026-12-04T12:00:00Z');
const KEY = Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex');
const KEY2 = Buffer.from('f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff', 'hex');

const SPEC = {
  backend: { serviceName: 'web', portName: 'quic' },
  listen: { ports: [443] },
  nodeSelector: { edge: 'true' },
};

function pod(name: string, ip: string, conditions: { ready?: boolean; serving?: boolean; terminating?: boolean } = { ready: true }) {
  return { addresses: [ip], conditions, targetRef: { kind: 'Pod', name, uid: `uid-${name}` }, nodeName: 'n1' };
}

const SLICE: EndpointSliceView = {
  addressType: 'IPv4',
  ports: [{ name: 'quic', port: 8443, protocol: 'UDP' }],
  endpoints: [pod('web-0', '198.51.100.10'), pod('web-1', '198.51.100.11', { ready: false }), pod('web-2', '198.51.100.12', { ready: false, serving: true, terminating: true })],
};

function observed(over: Partial<Observed> = {}): Observed {
  return {
    namespace: 'team',
    name: 'lb',
    generation: 1,
    createdAt: T0 - 60_000,
    annotations: {},
    spec: SPEC,
    service: { ports: [{ name: 'quic', port: 443, protocol: 'UDP' }] },
    endpointSlices: [SLICE],
    records: { assigned: [{ id: '0005', podUid: 'uid-web-2', podName: 'web-2', assignedAt: T0 - 1000 }], released: [] },
    rotation: INITIAL_STATE,
    keys: new Map(),
    userKey: null,
    freshKey: KEY,
    nodes: [
      { name: 'n1', labels: { edge: 'true' } },
      { name: 'n2', labels: { edge: 'true' } },
      { name: 'n3', labels: {} },
    ],
    otherClaims: [],
    otherBackends: [],
    dataPlanes: [],
    now: T0,
    ...over,
  };
}

function dataPlane(identity: string, nodeName: string, over: Partial<DataPlaneObservation> = {}): DataPlaneObservation {
  return { identity, nodeName, ackedConfigs: [], health: new Map(), traffic: new Map(), ...over };
}

describe('readSpec', () => {
  it('applies the CRD defaults and converts durations and enums', () => {
    const s = readSpec({ backend: { serviceName: 'web', port: 443 }, listen: { ports: [443] } });
    expect(s).toEqual({
      backend: { serviceName: 'web', port: 443 },
      listen: { ports: [443], addresses: [] },
      connectionIds: { serverIdLength: 2, nonceLength: 6, lengthSelfEncoded: false, serverIdQuarantineMs: 600_000 },
      encryption: { encrypted: true, keySecretRef: null },
      rotation: { intervalMs: null, drainMs: 3_600_000, quietMs: 120_000, trigger: '' },
      routing: 'quic-lb',
      fallback: { maxFlows: 100_000, flowIdleTimeoutMs: 30_000 },
      healthCheck: { enabled: true, intervalMs: 10_000, timeoutMs: 2_000, failureThreshold: 3, successThreshold: 2 },
      nodeSelector: {},
    });
    expect(readSpec({ ...SPEC, routing: { mode: 'FourTuple' }, encryption: { mode: 'Plaintext' }, rotation: { interval: '1h30m' } })).toMatchObject({
      routing: '4-tuple',
      encryption: { encrypted: false },
      rotation: { intervalMs: 5_400_000 },
    });
  });

  it.each([
    [{ listen: { ports: [443] } }, 'spec.backend: is required'],
    [{ backend: { serviceName: 'web', port: 1, portName: 'q' }, listen: { ports: [443] } }, 'spec.backend: set exactly one of port or portName'],
    [{ ...SPEC, listen: { ports: [] } }, 'spec.listen.ports: must list at least one port'],
    [{ ...SPEC, connectionIds: { serverIdLength: 15, nonceLength: 5 } }, 'spec.connectionIds: serverIdLength + nonceLength must be at most 19, got 20'],
    [{ ...SPEC, rotation: { drainPeriod: 'soon' } }, 'spec.rotation.drainPeriod: must be a duration'],
    [{ ...SPEC, encryption: { mode: 'Rot13' } }, 'spec.encryption.mode: must be Encrypted or Plaintext'],
  ])('refuses what an older schema may have stored, naming the field (%#)', (spec, message) => {
    expect(() => readSpec(spec)).toThrow(message);
  });

  it('selects nodes by every label of the selector', () => {
    expect(selectsNode({}, undefined)).toBe(true);
    expect(selectsNode({ a: '1' }, { a: '1', b: '2' })).toBe(true);
    expect(selectsNode({ a: '1', b: '3' }, { a: '1', b: '2' })).toBe(false);
    expect(selectsNode({ a: '' }, {})).toBe(false);
  });
});

describe('decideHealth (the central rule)', () => {
  const e = (state: 'healthy' | 'unhealthy' | 'unknown', age = 0) => ({ state, reportedAt: T0 - age });
  const stale = staleAfterMs(10_000, 2_000);
  it.each([
    ['no report at all', [], 'healthy'],
    ['one unhealthy of one', [e('unhealthy')], 'unhealthy'],
    ['a tie', [e('unhealthy'), e('healthy')], 'healthy'],
    ['a majority unhealthy', [e('unhealthy'), e('unhealthy'), e('healthy')], 'unhealthy'],
    ['unknown ignored', [e('unhealthy'), e('unknown'), e('unknown')], 'unhealthy'],
    ['stale reports ignored', [e('unhealthy', stale + 1), e('healthy')], 'healthy'],
    ['a report at the staleness bound counts', [e('unhealthy', stale)], 'unhealthy'],
  ])('%s', (_what, entries, verdict) => {
    const reports = (entries as ReturnType<typeof e>[]).map((x) => new Map([['web-0', x]]));
    expect(decideHealth(['web-0'], reports, stale, T0).get('web-0')).toBe(verdict);
  });

  it('is the same whatever the order of the reports (every data plane gets one verdict)', () => {
    const reports = [new Map([['a', e('unhealthy')]]), new Map([['a', e('healthy')]]), new Map([['a', e('unhealthy')]])];
    expect(decideHealth(['a'], reports, stale, T0)).toEqual(decideHealth(['a'], [...reports].reverse(), stale, T0));
  });
});

describe('portConflicts', () => {
  const claim = (key: string, createdAt: number, over: Partial<PortClaim> = {}): PortClaim => ({
    key,
    createdAt,
    ports: [443],
    addresses: [],
    nodes: new Set(['n1', 'n2']),
    service: 'ns/web',
    ...over,
  });
  it('the later claim of a port on a node conflicts; the earlier one does not', () => {
    const a = claim('ns/a', 1);
    const b = claim('ns/b', 2, { nodes: new Set(['n2', 'n3']) });
    expect(portConflicts(b, [a])).toEqual([{ port: 443, node: 'n2', holder: 'ns/a' }]);
    expect(portConflicts(a, [b])).toEqual([]);
  });
  it('equal creation times: the smaller namespace/name is earlier', () => {
    expect(portConflicts(claim('ns/b', 1), [claim('ns/a', 1)])).toHaveLength(2);
    expect(portConflicts(claim('ns/a', 1), [claim('ns/b', 1)])).toEqual([]);
  });
  it.each([
    ['other ports', { ports: [8443] }, {}, 0],
    ['two specific IPv4 addresses', { addresses: ['192.0.2.1'] }, { addresses: ['192.0.2.2'] }, 0],
    ['the same specific address', { addresses: ['192.0.2.1'] }, { addresses: ['192.0.2.1'] }, 2],
    ['0.0.0.0 (default) against a specific IPv4 address', {}, { addresses: ['192.0.2.1'] }, 2],
    ['0.0.0.0 against an IPv6 address', {}, { addresses: ['2001:db8::1'] }, 0],
    [':: against anything', { addresses: ['::'] }, { addresses: ['192.0.2.1'] }, 2],
    ['other nodes', { nodes: new Set(['n9']) }, {}, 0],
  ])('%s', (_what, earlier, later, n) => {
    expect(portConflicts(claim('ns/b', 2, later as Partial<PortClaim>), [claim('ns/a', 1, earlier as Partial<PortClaim>)])).toHaveLength(n);
  });
});

describe('backendHolder', () => {
  const claim = (key: string, createdAt: number, service = 'ns/web'): PortClaim => ({ key, createdAt, ports: [443], addresses: [], nodes: new Set(['n1']), service });
  it.each([
    ['no other claim', claim('ns/b', 2), [], null],
    ['an earlier one on the same Service holds it', claim('ns/b', 2), [claim('ns/a', 1)], 'ns/a'],
    ['a later one does not', claim('ns/a', 1), [claim('ns/b', 2)], null],
    ['equal creation times: the smaller namespace/name', claim('ns/b', 1), [claim('ns/a', 1)], 'ns/a'],
    ['equal creation times, the smaller one itself', claim('ns/a', 1), [claim('ns/b', 1)], null],
    ['another Service of the namespace', claim('ns/b', 2), [claim('ns/a', 1, 'ns/api')], null],
    ['the same Service name in another namespace', claim('ns/b', 2), [claim('other/a', 1, 'other/web')], null],
    ['the earliest of several is named', claim('ns/c', 3), [claim('ns/b', 2), claim('ns/a', 1)], 'ns/a'],
    ['its own claim is ignored', claim('ns/b', 2), [claim('ns/b', 1)], null],
  ] as const)('%s', (_what, self, others, holder) => {
    expect(backendHolder(self, others)).toBe(holder);
  });
});

describe('podOwnership', () => {
  const claim = (key: string, createdAt: number, pods: string[]): BackendClaim => ({ key, createdAt, pods: new Set(pods) });
  const self = { key: 'ns/b', createdAt: 2 };
  const mine = new Set(['p0', 'p1', 'p2']);
  it('a pod shared with an earlier backend is the earliest one\'s; the others stay mine', () => {
    const o = podOwnership(self, mine, [claim('ns/a', 1, ['p0', 'p9']), claim('ns/z', 0, ['p1']), claim('ns/y', 0, ['p0'])]);
    expect([...o.heldByOthers].sort()).toEqual([['p0', 'ns/y'], ['p1', 'ns/z']]);
    expect(o.waiting.size).toBe(0);
  });
  it('equal creation times: the smaller namespace/name holds', () => {
    expect([...podOwnership(self, mine, [claim('ns/a', 2, ['p0'])]).heldByOthers]).toEqual([['p0', 'ns/a']]);
    expect([...podOwnership(self, mine, [claim('ns/c', 2, ['p0'])]).heldByOthers]).toEqual([]);
  });
  it('names the later ones that want a pod it holds, not those that only want pods an earlier one holds', () => {
    const o = podOwnership(self, mine, [claim('ns/a', 1, ['p0']), claim('ns/d', 3, ['p0']), claim('ns/c', 3, ['p2', 'p0']), claim('ns/e', 4, ['p7'])]);
    expect([...o.heldByOthers]).toEqual([['p0', 'ns/a']]);
    expect([...o.waiting]).toEqual([['ns/c', ['p2']]]);
  });
  it('ignores its own claim and claims without shared pods', () => {
    expect(podOwnership(self, mine, [claim('ns/b', 0, ['p0']), claim('ns/a', 1, [])])).toEqual({ heldByOthers: new Map(), waiting: new Map() });
  });
  it('a shared pod is the one\'s whose configs Secret it mounts, among those that have it; with none of theirs or several, the earliest\'s', () => {
    const mounts = new Map<string, string[]>([
      ['p0', ['ns/b']], // mine although ns/a is earlier
      ['p1', ['ns/c']], // the later ns/c's
      ['p2', ['ns/a', 'ns/c']], // two of theirs: the earliest, ns/a
      ['p9', ['ns/b']], // not a pod of ns/a's and mine: no matter
    ]);
    const others = [claim('ns/a', 1, ['p0', 'p2', 'p9']), claim('ns/c', 3, ['p1', 'p2', 'p3']), claim('ns/x', 0, ['p3'])];
    const o = podOwnership(self, new Set([...mine, 'p3']), others, (p) => mounts.get(p));
    expect([...o.heldByOthers].sort()).toEqual([['p1', 'ns/c'], ['p2', 'ns/a'], ['p3', 'ns/x']]);
    expect([...o.waiting]).toEqual([['ns/a', ['p0']]]);
    // a pod that mounts the Secret of a load balancer whose backend does not have it: the earliest
    expect([...podOwnership(self, mine, [claim('ns/a', 1, ['p0'])], () => ['ns/q']).heldByOthers]).toEqual([['p0', 'ns/a']]);
  });
});

describe('port claims of stored objects', () => {
  it('selects nodes by each nodeSelector; a spec that cannot be read claims no port or node, only the Service it names', () => {
    const nodes = [{ name: 'n1', labels: { edge: 'true' } }, { name: 'n2' }];
    const claims = claimsOf(
      [
        { namespace: 'a', name: 'x', createdAt: 1, spec: SPEC },
        { namespace: 'a', name: 'y', createdAt: 2, spec: { ...SPEC, nodeSelector: undefined, listen: { ports: [80, 443], addresses: ['::'] } } },
        { namespace: 'a', name: 'broken', createdAt: 3, spec: { listen: {} } },
        { namespace: 'a', name: 'invalid', createdAt: 0, spec: { ...SPEC, listen: { ports: ['x'] } } },
      ],
      nodes,
    );
    expect(claims.map((c) => [c.key, [...c.nodes], c.ports, c.addresses, c.service])).toEqual([
      ['a/x', ['n1'], [443], [], 'a/web'],
      ['a/y', ['n1', 'n2'], [80, 443], ['::'], 'a/web'],
      ['a/invalid', [], [], [], 'a/web'],
    ]);
    // the unreadable one (earliest) holds its Service against the later ones, and takes no port from them
    expect(backendHolder(claims[0], claims)).toBe('a/invalid');
    expect(portConflicts(claims[1], claims).map((c) => c.holder)).toEqual(['a/x']);
  });
});

describe('computeDesired', () => {
  it('takes client-node objects as they come (V1EndpointSlice, V1Service ports, V1Node)', () => {
    // compile-time: the reconciler passes informer objects without copying them
    const slice: k8s.V1EndpointSlice = { addressType: 'IPv4', endpoints: [{ addresses: ['198.51.100.5'], conditions: { ready: true }, targetRef: { kind: 'Pod', name: 'p', uid: 'u' } }], ports: [{ name: 'quic', port: 8443, protocol: 'UDP' }] };
    const service: k8s.V1Service = { spec: { ports: [{ name: 'quic', port: 443, protocol: 'UDP' }] } };
    const node: k8s.V1Node = { metadata: { name: 'n1', labels: { edge: 'true' } } };
    const d = computeDesired(
      observed({ endpointSlices: [slice], service: { ports: service.spec!.ports! }, nodes: [{ name: node.metadata!.name!, labels: node.metadata!.labels }], records: EMPTY_RECORDS }),
    );
    expect([...d.podServerIds]).toEqual([['p', '0000']]);
  });

  it('marks notes as transitions (emit once) or states (emit on a change of Degraded)', () => {
    const other: PortClaim = { key: 'other/first', createdAt: 0, ports: [443], addresses: [], nodes: new Set(['n1']), service: 'other/web' };
    const d = computeDesired(observed({ otherClaims: [other] }));
    expect(d.events.map((e) => [e.reason, e.kind])).toEqual([
      ['PortConflict', 'state'],
      ['ServerIDsAssigned', 'transition'],
      ['ConfigCreated', 'transition'],
    ]);
  });

  it('assigns IDs, builds a valid snapshot for the selected nodes, the backends Secret and the pod annotations', () => {
    const d = computeDesired(observed());
    expect(d.nodes).toEqual(['n1', 'n2']);
    // web-2 keeps its recorded ID (terminating: draining); web-0 (ready) is allocated before web-1 (not ready)
    expect([...d.podServerIds]).toEqual([
      ['web-0', '0000'],
      ['web-1', '0001'],
      ['web-2', '0005'],
    ]);
    const s = d.snapshot!;
    expect(s.name).toBe('team/lb');
    expect(s.listen).toEqual([{ host: '0.0.0.0', port: 443, family: 4 }]);
    expect(s.configs).toHaveLength(1);
    expect(s.configs[0]).toMatchObject({ state: 'active', config: { configId: 0, serverIdLength: 2, nonceLength: 6 } });
    expect(Buffer.from(s.configs[0].config.key!).equals(KEY)).toBe(true);
    expect(s.servers.map((x) => [x.name, Buffer.from(x.serverId).toString('hex'), `${x.address.host}:${x.address.port}`, x.state, x.verdict])).toEqual([
      ['web-0', '0000', '198.51.100.10:8443', 'active', 'healthy'],
      ['web-1', '0001', '198.51.100.11:8443', 'draining', 'healthy'],
      ['web-2', '0005', '198.51.100.12:8443', 'draining', 'healthy'],
    ]);
    expect(s.routing).toBe('quic-lb');
    // the snapshot travels: the wire conversion accepts it
    const back = snapshotFromWire(snapshotToWire(7, 'n', [{ ...s, version: 7 }]));
    expect(back.loadBalancers[0].servers).toHaveLength(3);
    // the Secret backends mount holds the same config and key
    const secret = decodeBackendSecret(d.configsSecretData!);
    expect(secret.configs).toHaveLength(1);
    expect(Buffer.from(secret.configs[0].config.key!).equals(KEY)).toBe(true);
    expect(configsSecretName('lb')).toBe('lb-quiclb-configs');
    expect(d.events.map((e) => e.reason)).toEqual(['ServerIDsAssigned', 'ConfigCreated']);
    expect(d.events.find((e) => e.reason === 'ConfigCreated')).toMatchObject({ audit: true, message: `config 0 created and active, key ${keyFingerprint(KEY)}` });
    expect(JSON.stringify(d.events)).not.toContain(KEY.toString('hex'));
    expect(d.facts.backends).toEqual({ total: 3, healthy: 1, draining: 1, unassigned: 0 });
    // the quarantine of nothing and a stable rotation without interval: no timer needed
    expect(d.requeueAfterMs).toBeNull();
  });

  it('prefers an IPv4 address for a dual-stack pod and ignores slices without the UDP port', () => {
    const v6: EndpointSliceView = { addressType: 'IPv6', ports: [{ name: 'quic', port: 8443, protocol: 'UDP' }], endpoints: [pod('web-0', '2001:db8::10')] };
    const tcp: EndpointSliceView = { addressType: 'IPv4', ports: [{ name: 'quic', port: 8443, protocol: 'TCP' }], endpoints: [pod('web-9', '198.51.100.99')] };
    const d = computeDesired(observed({ endpointSlices: [v6, SLICE, tcp], records: EMPTY_RECORDS }));
    expect(d.snapshot!.servers.find((x) => x.name === 'web-0')!.address).toEqual({ host: '198.51.100.10', port: 8443, family: 4 });
    expect(d.podServerIds.has('web-9')).toBe(false);
  });

  it('leaves the ID records alone while the Service or its port is missing', () => {
    for (const o of [observed({ service: null }), observed({ service: { ports: [{ name: 'other', port: 1, protocol: 'UDP' }] } })]) {
      const d = computeDesired(o);
      expect(d.allocation).toBeNull(); // nothing to write: web-2's record stays
      expect(d.events.some((e) => e.reason === 'ServerIDsReleased')).toBe(false);
      expect(d.snapshot!.servers).toEqual([]);
    }
    const status = buildStatus({
      facts: statusFacts(computeDesired(observed({ service: null })), { snapshotVersion: 5, dataPlanes: [] }),
      previousConditions: undefined,
      rotation: INITIAL_STATE,
      now: T0,
    });
    expect(status.conditions.find((c) => c.type === 'Degraded')).toMatchObject({ status: 'True', reason: 'ServiceNotFound' });
    expect(status.conditions.find((c) => c.type === 'Ready')).toMatchObject({ status: 'False', reason: 'ServiceNotFound' });
  });

  it('is not served where an earlier load balancer holds the port', () => {
    const other: PortClaim = { key: 'other/first', createdAt: T0 - 120_000, ports: [443], addresses: [], nodes: new Set(['n1']), service: 'other/web' };
    const d = computeDesired(observed({ otherClaims: [other] }));
    expect(d.nodes).toEqual(['n2']);
    expect(d.facts.portConflicts).toEqual([{ port: 443, node: 'n1', holder: 'other/first' }]);
    expect(d.facts.backendHolder).toBeNull();
    expect(d.events.some((e) => e.reason === 'PortConflict' && e.type === 'Warning')).toBe(true);
  });

  it('leaves a backend Service held by an earlier load balancer alone: no IDs, no annotations, no snapshot, no nodes', () => {
    const holder: PortClaim = { key: 'team/first', createdAt: T0 - 120_000, ports: [8443], addresses: [], nodes: new Set(['n1', 'n2']), service: 'team/web' };
    const d = computeDesired(observed({ otherClaims: [holder] }));
    expect(d.facts.backendHolder).toBe('team/first');
    expect(d.allocation).toBeNull(); // the records stay as they are
    expect([...d.podServerIds]).toEqual([]);
    expect(d.snapshot).toBeNull();
    expect(d.nodes).toEqual([]);
    expect(d.facts.portConflicts).toEqual([]);
    expect(d.facts.keyProblem).toBeNull();
    expect(d.events.filter((e) => e.kind === 'state').map((e) => [e.type, e.reason])).toEqual([['Warning', 'BackendConflict']]);
    expect(d.events.find((e) => e.reason === 'BackendConflict')?.message).toContain('team/first');
    const status = buildStatus({ facts: statusFacts(d, { snapshotVersion: null, dataPlanes: [] }), previousConditions: [], rotation: d.rotation.state, now: T0 });
    expect(status.conditions.find((c) => c.type === 'Degraded')).toMatchObject({ status: 'True', reason: 'BackendConflict' });
    expect(status.conditions.find((c) => c.type === 'Ready')).toMatchObject({ status: 'False', reason: 'BackendConflict' });
  });

  it.each([
    ['a later load balancer on the same Service', { key: 'team/later', createdAt: T0, service: 'team/web' }],
    ['an earlier one on another Service', { key: 'team/first', createdAt: T0 - 120_000, service: 'team/api' }],
    ['an earlier one on a Service of the same name in another namespace', { key: 'other/first', createdAt: T0 - 120_000, service: 'other/web' }],
  ])('keeps its backends beside %s', (_what, over) => {
    const other: PortClaim = { ports: [8443], addresses: [], nodes: new Set(['n1']), ...over };
    const d = computeDesired(observed({ otherClaims: [other] }));
    expect(d.facts.backendHolder).toBeNull();
    expect(d.podServerIds.size).toBeGreaterThan(0);
    expect(d.snapshot).not.toBeNull();
  });

  it('without a usable user key: no config, no snapshot, Degraded/KeyUnavailable and not Ready', () => {
    const spec = { ...SPEC, encryption: { keySecretRef: { name: 'qlb-key' } } };
    const d = computeDesired(observed({ spec, userKey: { problem: 'Secret qlb-key key "key": missing' } }));
    expect(d.snapshot).toBeNull();
    expect(d.configsSecretData).toBeNull();
    expect(d.rotation.actions).toEqual([expect.objectContaining({ kind: 'blocked', reason: 'no-key' })]);
    const status = buildStatus({ facts: statusFacts(d, { snapshotVersion: null, dataPlanes: [] }), previousConditions: undefined, rotation: d.rotation.state, now: T0 });
    expect(status.conditions.find((c) => c.type === 'Degraded')).toMatchObject({ status: 'True', reason: 'KeyUnavailable' });
    expect(status.conditions.find((c) => c.type === 'Ready')).toMatchObject({ status: 'False', reason: 'KeyUnavailable' });
    // with the key, the first config uses it (not the fresh random one)
    const ok = computeDesired(observed({ spec, userKey: { key: KEY2 } }));
    expect(Buffer.from(ok.snapshot!.configs[0].config.key!).equals(KEY2)).toBe(true);
  });

  it('rotates on the annotation; only data planes on serving nodes must ACK; the status follows every phase', () => {
    const first = computeDesired(observed());
    const keys = new Map([[0, KEY]]);
    let rotation: MachineState = first.rotation.state;
    const records = first.allocation!.records;
    const n3 = dataPlane('dp-n3', 'n3'); // not selected: never waited for
    const started = computeDesired(observed({ rotation, keys, records, freshKey: KEY2, annotations: { 'quiclb.io/rotate': '1' }, dataPlanes: [n3], now: T0 + 1000 }));
    expect(started.rotation.phase).toBe('Accepting');
    expect(started.events.map((e) => e.reason)).toEqual(['RotationStarted']);
    expect(started.snapshot!.configs.map((c) => [c.config.configId, c.state])).toEqual([
      [0, 'active'],
      [1, 'accepting'],
    ]);
    rotation = started.rotation.state;
    const keys2 = new Map([...keys, [1, KEY2]]);
    const acked = rotation.configs.map((c) => ({ configId: c.configId, fingerprint: c.fingerprint }));
    const dpA = dataPlane('dp-n1', 'n1', { ackedConfigs: acked });
    const dpB = dataPlane('dp-n2', 'n2', { ackedConfigs: acked.slice(0, 1) });
    const waiting = computeDesired(observed({ rotation, keys: keys2, records, dataPlanes: [dpA, dpB, n3], annotations: { 'quiclb.io/rotate': '1' }, now: T0 + 2000 }));
    expect(waiting.rotation.phase).toBe('Accepting');
    expect(waiting.facts.rotation.waitingFor).toEqual(['dp-n2']);
    const st = buildStatus({
      facts: statusFacts(waiting, {
        snapshotVersion: 9,
        dataPlanes: [
          { identity: 'dp-n1', ackedVersion: 9, rejection: null },
          { identity: 'dp-n2', ackedVersion: 8, rejection: null },
        ],
      }),
      previousConditions: undefined,
      rotation: waiting.rotation.state,
      now: T0 + 2000,
    });
    expect(st.conditions.find((c) => c.type === 'KeyRotation')).toMatchObject({ status: 'True', reason: 'Accepting' });
    expect(st.conditions.find((c) => c.type === 'ConfigSynced')).toMatchObject({ status: 'False', reason: 'Pending' });
    expect(st.dataPlanes).toEqual({ connected: 2, inSync: 1, summary: '1/2' });
    const promoted = computeDesired(
      observed({ rotation, keys: keys2, records, dataPlanes: [dpA, { ...dpB, ackedConfigs: acked }, n3], annotations: { 'quiclb.io/rotate': '1' }, now: T0 + 3000 }),
    );
    expect(promoted.rotation.phase).toBe('Draining');
    expect(promoted.events.map((e) => e.reason)).toEqual(['ConfigPromoted']);
    expect(promoted.requeueAfterMs).toBe(2 * 60_000); // the quiet period
    const secret = decodeBackendSecret(promoted.configsSecretData!);
    expect(secret.configs.map((c) => [c.config.configId, c.state])).toEqual([
      [0, 'draining'],
      [1, 'active'],
    ]);
  });

  it('right after an operator start, promotion waits while a serving node has no data plane connected', () => {
    const first = computeDesired(observed());
    const records = first.allocation!.records;
    const started = computeDesired(observed({ rotation: first.rotation.state, keys: new Map([[0, KEY]]), records, freshKey: KEY2, annotations: { 'quiclb.io/rotate': '1' }, now: T0 + 1000 }));
    const rotation = started.rotation.state;
    const keys = new Map([[0, KEY], [1, KEY2]]);
    const acked = rotation.configs.map((c) => ({ configId: c.configId, fingerprint: c.fingerprint }));
    const dpA = dataPlane('dp-n1', 'n1', { ackedConfigs: acked });
    const dpB = dataPlane('dp-n2', 'n2', { ackedConfigs: acked });
    const at = (dataPlanes: ReturnType<typeof dataPlane>[], now: number) =>
      computeDesired(observed({ rotation, keys, records, dataPlanes, annotations: { 'quiclb.io/rotate': '1' }, reconnectUntil: T0 + 30_000, now }));
    // n2 serves it but its data plane has not reconnected: wait, and look again when the window ends.
    const waiting = at([dpA], T0 + 2000);
    expect(waiting.rotation.phase).toBe('Accepting');
    expect(waiting.rotation.actions).toEqual([{ kind: 'waiting-for-reconnects', configId: 1, until: T0 + 30_000 }]);
    expect(waiting.requeueAfterMs).toBeLessThanOrEqual(28_000);
    expect(waiting.facts.rotation.reconnecting).toEqual({ until: T0 + 30_000, nodes: ['n2'] });
    expect(keyRotationCondition(statusFacts(waiting, { snapshotVersion: 3, dataPlanes: [] })).message).toContain('not promoted before 2026-12-04T12:00:30Z unless the data planes of n2 reconnect');
    // every serving node connected and in sync: promoted at once, window or not
    expect(at([dpA, dpB], T0 + 2000).rotation.phase).toBe('Draining');
    // the window over: the connected data planes decide, as always
    expect(at([dpA], T0 + 30_000).rotation.phase).toBe('Draining');
  });

  it('with every serving data plane in sync and a ready backend: Ready, with kubectl-get summaries', () => {
    const d = computeDesired(observed());
    const facts = statusFacts(d, {
      snapshotVersion: 3,
      dataPlanes: [
        { identity: 'dp-n1', ackedVersion: 3, rejection: null },
        { identity: 'dp-n2', ackedVersion: 4, rejection: { version: 2, error: 'old news' } },
      ],
    });
    const st = buildStatus({ facts, previousConditions: undefined, rotation: d.rotation.state, serverIds: { assigned: 3, quarantined: 0, capacity: 65536n }, now: T0 });
    expect(st.conditions.map((c) => [c.type, c.status, c.reason])).toEqual([
      ['Ready', 'True', 'Routing'],
      ['ConfigSynced', 'True', 'Synced'],
      ['Degraded', 'False', 'AsExpected'],
      ['KeyRotation', 'False', 'Stable'],
    ]);
    expect(st).toMatchObject({
      observedGeneration: 1,
      backends: { total: 3, healthy: 1, draining: 1, unassigned: 0, summary: '1/3' },
      dataPlanes: { connected: 2, inSync: 2, summary: '2/2' },
      activeConfigId: 0,
      snapshotVersion: 3,
      lastRotationTime: '2026-12-04T12:00:00Z',
      rotation: { phase: 'Stable', configs: [{ id: 0, state: 'Active', keyFingerprint: keyFingerprint(KEY) }] },
      serverIds: { assigned: 3, quarantined: 0, capacity: 65536 },
    });
    expect(JSON.stringify(st)).not.toContain(KEY.toString('hex'));
    expect(JSON.stringify(st)).not.toContain(KEY.toString('base64'));
  });

  it('a data plane that rejected the latest version makes ConfigSynced and Ready False with its error', () => {
    const d = computeDesired(observed());
    const facts = statusFacts(d, { snapshotVersion: 5, dataPlanes: [{ identity: 'dp-n1', ackedVersion: 4, rejection: { version: 5, error: 'servers[0].address: bad' } }] });
    const st = buildStatus({ facts, previousConditions: undefined, rotation: d.rotation.state, now: T0 });
    expect(st.conditions.find((c) => c.type === 'Degraded')).toMatchObject({ status: 'True', reason: 'DataPlaneRejected' });
    expect(st.conditions.find((c) => c.type === 'Ready')).toMatchObject({ status: 'False', reason: 'DataPlaneRejected' });
  });

  it('the central verdict from the serving data planes goes into the snapshot and the healthy count', () => {
    const unhealthy = new Map([['web-0', { state: 'unhealthy' as const, reportedAt: T0 }]]);
    const d = computeDesired(observed({ dataPlanes: [dataPlane('dp-n1', 'n1', { health: unhealthy }), dataPlane('dp-n3', 'n3', { health: new Map([['web-0', { state: 'healthy' as const, reportedAt: T0 }]]) })] }));
    // dp-n3 does not serve this load balancer: its report does not count
    expect(d.snapshot!.servers.find((s) => s.name === 'web-0')!.verdict).toBe('unhealthy');
    expect(d.facts.backends.healthy).toBe(0);
  });
});

describe('pods shared by the backends of two load balancers (observe + computeDesired)', () => {
  // alpha (earlier) names Service web (web-0, web-1); beta (later) names Service all (web-0, web-1, web-2), on
  // another port: no port or Service conflict, only the pods web-0 and web-1 are wanted by both.
  const qlb = (name: string, createdAt: number, serviceName: string, port: number) => ({
    metadata: { namespace: 'team', name, uid: `uid-${name}`, generation: 1, creationTimestamp: new Date(createdAt).toISOString() as unknown as Date },
    spec: { backend: { serviceName, portName: 'quic' }, listen: { ports: [port] } },
  });
  const alpha = qlb('alpha', T0 - 7_200_000, 'web', 443);
  const beta = qlb('beta', T0 - 3_600_000, 'all', 444);
  const service = (name: string): k8s.V1Service => ({ metadata: { namespace: 'team', name }, spec: { ports: [{ name: 'quic', port: 443, protocol: 'UDP' }] } });
  const slice = (service: string, pods: string[]): k8s.V1EndpointSlice => ({
    metadata: { namespace: 'team', name: `${service}-slice`, labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    ports: [{ name: 'quic', port: 8443, protocol: 'UDP' }],
    endpoints: pods.map((p) => pod(p, `198.51.100.${10 + Number(p.slice(4))}`)),
  });
  const desiredFor = (self: ReturnType<typeof qlb>, allQlbs: ReturnType<typeof qlb>[], slices: k8s.V1EndpointSlice[], records = EMPTY_RECORDS, now = T0) =>
    computeDesired(
      observe({
        qlb: self,
        services: [service('web'), service('all')],
        slices,
        allQlbs,
        nodes: [{ metadata: { name: 'n1' } }],
        records,
        rotation: INITIAL_STATE,
        keys: new Map(),
        userKey: null,
        freshKey: KEY,
        dataPlanes: [],
        configsAt: () => null,
        now,
      }),
    );
  const status = (d: ReturnType<typeof computeDesired>) =>
    buildStatus({ facts: statusFacts(d, { snapshotVersion: 1, dataPlanes: [] }), previousConditions: [], rotation: d.rotation.state, now: T0 });
  const overlapping = [slice('web', ['web-0', 'web-1']), slice('all', ['web-0', 'web-1', 'web-2'])];

  it('the earlier one keeps every pod of its Service and is not degraded by the later one', () => {
    const d = desiredFor(alpha, [alpha, beta], overlapping);
    expect([...d.podServerIds.keys()].sort()).toEqual(['web-0', 'web-1']);
    expect(d.snapshot!.servers.map((s) => s.name).sort()).toEqual(['web-0', 'web-1']);
    expect(status(d).conditions.find((c) => c.type === 'Degraded')).toMatchObject({ status: 'False' });
    expect([...d.waiting]).toEqual([['team/beta', ['uid-web-0', 'uid-web-1']]]); // reconciled again when this changes
    expect(desiredFor(alpha, [alpha, beta], [slice('web', ['web-0']), slice('all', ['web-1', 'web-2'])]).waiting.size).toBe(0);
  });

  it('the later one assigns no ID to, annotates and routes to none of the shared pods, releases the IDs it had for them, and is Degraded naming the holder', () => {
    // beta had given web-0 an ID before alpha's Service came to select it
    const records = { assigned: [{ id: '0000', podUid: 'uid-web-0', podName: 'web-0', assignedAt: T0 - 1000 }], released: [] };
    const d = desiredFor(beta, [alpha, beta], overlapping, records);
    expect([...d.podServerIds.keys()]).toEqual(['web-2']);
    expect(d.snapshot!.servers.map((s) => s.name)).toEqual(['web-2']);
    expect(d.allocation!.records.assigned.map((a) => a.podName)).toEqual(['web-2']);
    expect(d.allocation!.records.released).toEqual([{ id: '0000', podUid: 'uid-web-0', podName: 'web-0', releasedAt: T0 }]); // quarantined, as a pod that left
    expect(d.podServerIds.get('web-2')).not.toBe('0000');
    const degraded = status(d).conditions.find((c) => c.type === 'Degraded')!;
    expect(degraded).toMatchObject({ status: 'True', reason: 'BackendPodConflict' });
    expect(degraded.message).toContain('QuicLoadBalancer team/alpha');
    expect(degraded.message).toContain('2 pod(s)');
    expect(d.events.filter((e) => e.kind === 'state').map((e) => [e.type, e.reason])).toEqual([['Warning', 'BackendPodConflict']]);
    expect(d.facts.backends.total).toBe(1);
    expect(d.waiting.size).toBe(0);
  });

  it('of the load balancers naming a Service, the first holds its pods (observe.test.ts: only it claims them); once it is gone, the next one', () => {
    const gamma = qlb('gamma', T0 - 5_400_000, 'web', 445);
    expect(desiredFor(gamma, [alpha, beta, gamma], overlapping).facts.backendHolder).toBe('team/alpha');
    expect([...desiredFor(beta, [alpha, beta, gamma], overlapping).podServerIds.keys()]).toEqual(['web-2']);
    // alpha gone: gamma holds web and its pods, beta still gets only web-2
    expect([...desiredFor(beta, [beta, gamma], overlapping).podServerIds.keys()]).toEqual(['web-2']);
  });

  it('a holder whose spec cannot be read, or whose Service lacks its port, keeps claiming every pod of its Service (its last snapshot may still route them)', () => {
    // alpha gives web-0/web-1 no IDs now (records kept, nothing annotated by it); beta must not take them meanwhile
    const alphaNoPort = { ...alpha, spec: { ...alpha.spec, backend: { serviceName: 'web', portName: 'nope' } } };
    const alphaInvalid = { ...alpha, spec: { backend: { serviceName: 'web', portName: 'quic' }, listen: { ports: [] } } };
    for (const a of [alphaNoPort, alphaInvalid]) {
      const d = desiredFor(beta, [a, beta], overlapping);
      expect([...d.podServerIds.keys()]).toEqual(['web-2']);
      expect(d.facts.podsHeldByOthers).toEqual([{ holder: 'team/alpha', pods: ['web-0', 'web-1'] }]);
    }
  });

  it('the later one takes the pods when the holder is gone, or stops selecting them; a quarantined ID comes back to its pod', () => {
    const first = desiredFor(beta, [alpha, beta], overlapping, { assigned: [{ id: '0000', podUid: 'uid-web-0', podName: 'web-0', assignedAt: T0 - 1000 }], released: [] });
    const records = first.allocation!.records;
    const gone = desiredFor(beta, [beta], overlapping, records, T0 + 1000);
    expect([...gone.podServerIds].sort()).toEqual([['web-0', '0000'], ['web-1', expect.any(String)], ['web-2', first.podServerIds.get('web-2')]]);
    expect(status(gone).conditions.find((c) => c.type === 'Degraded')).toMatchObject({ status: 'False' });
    const narrowed = desiredFor(beta, [alpha, beta], [slice('web', ['web-1']), slice('all', ['web-0', 'web-1', 'web-2'])], records, T0 + 1000);
    expect([...narrowed.podServerIds.keys()].sort()).toEqual(['web-0', 'web-2']);
    expect(narrowed.podServerIds.get('web-0')).toBe('0000');
  });

  it('a pod handed over (its cached annotation another ID, or changed lately) is draining until the change has had time to reach it; then active', () => {
    const view = (serverId: string | null, changedAt: number | null = null) => ({ serverId, changedAt, mounts: [] });
    const handOver = (pods: ReadonlyMap<string, ReturnType<typeof view>>, now = T0) =>
      computeDesired(observed({ endpointSlices: [{ ...SLICE, endpoints: [pod('web-0', '198.51.100.10'), pod('web-1', '198.51.100.11')] }], records: EMPTY_RECORDS, pods, now }));
    const state = (d: ReturnType<typeof computeDesired>) => Object.fromEntries(d.snapshot!.servers.map((x) => [x.name, x.state]));
    // no annotation (a new pod: it mints unroutable CIDs until its file is valid): active at once
    const fresh = handOver(new Map([['uid-web-0', view(null)]]));
    expect(state(fresh)).toEqual({ 'web-0': 'active', 'web-1': 'active' });
    expect(fresh.requeueAfterMs).toBeNull();
    // web-0 carries another load balancer's ID: draining; looked at again when the margin would end
    const foreign = handOver(new Map([['uid-web-0', view('00ff')]]));
    expect(state(foreign)).toEqual({ 'web-0': 'draining', 'web-1': 'active' });
    expect(foreign.requeueAfterMs).toBe(SERVER_ID_PROPAGATION_MS);
    expect(foreign.facts.backends.healthy).toBe(1);
    // ours since T0 (the reconciler wrote it with the time): draining until T0 + margin, also after an operator restart (the time is on the pod)
    const id = foreign.podServerIds.get('web-0')!;
    const ours = (now: number) => handOver(new Map([['uid-web-0', view(id, T0)]]), now);
    expect(state(ours(T0 + 1000))['web-0']).toBe('draining');
    expect(ours(T0 + 1000).requeueAfterMs).toBe(SERVER_ID_PROPAGATION_MS - 1000);
    expect(state(ours(T0 + SERVER_ID_PROPAGATION_MS))['web-0']).toBe('active');
    // removed lately by the load balancer that had it (no annotation yet): draining too
    expect(state(handOver(new Map([['uid-web-0', view(null, T0 - 1000)]])))['web-0']).toBe('draining');
    // the margin is the operator's --server-id-propagation
    const short = computeDesired(observed({ endpointSlices: [{ ...SLICE, endpoints: [pod('web-0', '198.51.100.10')] }], records: EMPTY_RECORDS, pods: new Map([['uid-web-0', view('00ff')]]), serverIdPropagationMs: 1000 }));
    expect(short.requeueAfterMs).toBe(1000);
    // a changed-at in the future counts as now
    expect(handOver(new Map([['uid-web-0', view(id, T0 + 3_600_000)]])).requeueAfterMs).toBe(SERVER_ID_PROPAGATION_MS);
  });

  it('a pod that this load balancer took its ID off and gives the same ID again is not drained (quiclb.io/server-id-previous with its UID)', () => {
    const state = (serverId: string | null, previous: string | undefined, uid: string | null = 'uid-lb') =>
      computeDesired(
        observed({
          ...(uid !== null ? { uid } : {}),
          endpointSlices: [{ ...SLICE, endpoints: [pod('web-0', '198.51.100.10')] }],
          records: EMPTY_RECORDS,
          pods: new Map([['uid-web-0', { serverId, changedAt: T0 - 1000, mounts: [], ...(previous !== undefined ? { previous } : {}) }]]),
        }),
      ).snapshot!.servers[0].state;
    // the first ID allocated is 0000
    expect(state(null, 'uid-lb/0000')).toBe('active');
    expect(state('0000', 'uid-lb/0000')).toBe('active');
    expect(state(null, 'uid-lb/0001')).toBe('draining'); // another ID was taken off
    expect(state(null, 'uid-old/0000')).toBe('draining'); // by another (or a deleted) load balancer: other keys
    expect(state('00ff', 'uid-lb/0000')).toBe('draining'); // the annotation is another ID: a hand-over
    expect(state(null, 'uid-lb/0000', null)).toBe('draining'); // our UID unknown
    expect(state(null, undefined)).toBe('draining');
    // the annotation as read from the pod: a malformed value counts as none
    expect(['uid-lb/0000', 'uid-lb/0A', 'uid-lb/000', '/0000', 'uid-lb/', 'a/b/0000', `${'u'.repeat(65)}/00`, ''].map(readPreviousServerId)).toEqual(['uid-lb/0000', null, null, null, null, null, null, null]);
    expect(readPreviousServerId(undefined)).toBeNull();
  });

  it('the BackendPodConflict Event names the holders only (pods coming and going do not change it); the Degraded condition keeps the count', () => {
    const event = (slices: k8s.V1EndpointSlice[]) => desiredFor(beta, [alpha, beta], slices).events.find((e) => e.reason === 'BackendPodConflict')!.message;
    const two = event(overlapping);
    expect(event([slice('web', ['web-0']), slice('all', ['web-0', 'web-2'])])).toBe(two);
    expect(two).toBe('pods of Service all belong to QuicLoadBalancer team/alpha: no server IDs assigned to them, not routed to');
    expect(status(desiredFor(beta, [alpha, beta], overlapping)).conditions.find((c) => c.type === 'Degraded')!.message).toContain('2 pod(s)');
  });

  it('every pod held by the earlier one: Ready False for that reason, not NoBackends', () => {
    const d = desiredFor(beta, [alpha, beta], [slice('web', ['web-0', 'web-1']), slice('all', ['web-0', 'web-1'])]);
    expect(d.podServerIds.size).toBe(0);
    expect(status(d).conditions.find((c) => c.type === 'Ready')).toMatchObject({ status: 'False', reason: 'BackendPodConflict' });
  });
});

describe('computeDesired: properties', () => {
  it('for any mix of slices and endpoints, the snapshot is valid and every pod with an address has one unique ID', () => {
    const endpointArb = fc.record({
      pod: fc.integer({ min: 0, max: 60 }),
      v6: fc.boolean(),
      ready: fc.option(fc.boolean(), { nil: undefined }),
      terminating: fc.option(fc.boolean(), { nil: undefined }),
      withRef: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(endpointArb, { maxLength: 80 }), fc.integer({ min: 1, max: 2 }), (eps, serverIdLength) => {
        const slice = (v6: boolean): EndpointSliceView => ({
          addressType: v6 ? 'IPv6' : 'IPv4',
          ports: [{ name: 'quic', port: 8443, protocol: 'UDP' }],
          endpoints: eps
            .filter((e) => e.v6 === v6)
            .map((e) => ({
              addresses: [v6 ? `2001:db8::${e.pod + 1}` : `198.51.100.${e.pod + 1}`],
              conditions: { ready: e.ready, terminating: e.terminating },
              ...(e.withRef ? { targetRef: { kind: 'Pod', name: `p${e.pod}`, uid: `u${e.pod}` } } : {}),
            })),
        });
        const d = computeDesired(observed({ spec: { ...SPEC, connectionIds: { serverIdLength } }, endpointSlices: [slice(false), slice(true)], records: EMPTY_RECORDS }));
        const s = d.snapshot!;
        const ids = s.servers.map((x) => Buffer.from(x.serverId).toString('hex'));
        expect(new Set(ids).size).toBe(ids.length);
        expect(new Set(s.servers.map((x) => x.name)).size).toBe(s.servers.length);
        expect(s.servers.every((x) => x.serverId.length === serverIdLength)).toBe(true);
        // in the fallback pool only ready, non-terminating endpoints
        for (const x of s.servers) {
          if (x.state === 'active') expect(eps.some((e) => (e.withRef ? `p${e.pod}` === x.name : true) && e.ready !== false && e.terminating !== true)).toBe(true);
        }
        expect(d.facts.backends.total).toBe(s.servers.length);
      }),
      { numRuns: 150 },
    );
  });
});
