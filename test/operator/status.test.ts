import { describe, expect, it } from '@jest/globals';
import { findCondition, isTrueFor, makeCondition, metaTime, sameConditions, setCondition, type Condition } from '../../operator/status/conditions.js';
import { configSyncedCondition } from '../../operator/status/config-synced.js';
import { degradedCondition } from '../../operator/status/degraded.js';
import type { StatusFacts } from '../../operator/status/facts.js';
import { keyRotationCondition } from '../../operator/status/key-rotation.js';
import { readyCondition } from '../../operator/status/ready.js';

const T0 = Date.parse('2026-12-04T12:00:00.750Z');

/** A load balancer that works: 3 of 4 backends healthy, 2 data planes in sync, stable rotation. */
const OK: StatusFacts = {
  generation: 3,
  serviceFound: true,
  serviceName: 'web',
  servicePortFound: true,
  servicePort: '443',
  backends: { total: 4, healthy: 3, draining: 1, unassigned: 0 },
  serverIdsExhausted: null,
  portConflicts: [],
  backendHolder: null,
  podsHeldByOthers: [],
  dataPlanes: { connected: 2, inSync: 2, pending: [], rejections: [] },
  snapshotVersion: 12,
  keyProblem: null,
  rotation: {
    phase: 'Stable',
    activeConfigId: 1,
    activeKeyFingerprint: 'sha256:00112233aabbccdd',
    acceptingConfigId: null,
    drainingConfigIds: [],
    waitingFor: [],
    reconnecting: null,
    drainEndsAt: null,
    nextRotationAt: Date.parse('2026-12-05T12:00:00Z'),
    blocked: null,
  },
};

function facts(over: Partial<StatusFacts>): StatusFacts {
  return { ...OK, ...over };
}

describe('conditions (metav1.Condition semantics)', () => {
  const v = (status: 'True' | 'False' | 'Unknown', reason = 'R', message = 'm') => ({ status, reason, message });

  it('stamps type, generation, whole-second RFC 3339 time, reason and message', () => {
    expect(makeCondition(undefined, 'Ready', v('True', 'Routing', 'ok'), 3, T0)).toEqual({
      type: 'Ready',
      status: 'True',
      observedGeneration: 3,
      lastTransitionTime: '2026-12-04T12:00:00Z',
      reason: 'Routing',
      message: 'ok',
    });
    expect(metaTime(T0)).toBe('2026-12-04T12:00:00Z');
  });

  it('moves lastTransitionTime only when the status flips', () => {
    const c1 = setCondition(undefined, 'Ready', v('False', 'NoBackends', 'none'), 1, T0);
    // same status, new reason, message and generation: the time stays
    const c2 = setCondition(c1, 'Ready', v('False', 'NoHealthyBackends', 'still none'), 2, T0 + 60_000);
    expect(c2[0]).toMatchObject({ reason: 'NoHealthyBackends', observedGeneration: 2, lastTransitionTime: '2026-12-04T12:00:00Z' });
    // flip: the time moves
    const c3 = setCondition(c2, 'Ready', v('True', 'Routing'), 2, T0 + 120_000);
    expect(c3[0].lastTransitionTime).toBe('2026-12-04T12:02:00Z');
    // Unknown is a status of its own
    const c4 = setCondition(c3, 'Ready', v('Unknown'), 2, T0 + 180_000);
    expect(c4[0].lastTransitionTime).toBe('2026-12-04T12:03:00Z');
  });

  it('sets one type and leaves the others (and their order) alone; the input is not mutated', () => {
    const a = setCondition(undefined, 'Ready', v('True'), 1, T0);
    const b = setCondition(a, 'Degraded', v('False', 'AsExpected'), 1, T0);
    const c = setCondition(b, 'Ready', v('False'), 1, T0 + 5000);
    expect(c.map((x) => x.type)).toEqual(['Ready', 'Degraded']);
    expect(b[0].status).toBe('True');
    expect(findCondition(c, 'Degraded')).toBe(b[1]);
  });

  it('refuses a reason that is not a CamelCase identifier (the CRD would reject the status write)', () => {
    expect(() => makeCondition(undefined, 'Ready', v('True', 'not ok'), 1, T0)).toThrow('is not a CamelCase identifier');
  });

  it('truncates a message to the CRD bound', () => {
    const c = makeCondition(undefined, 'Degraded', v('True', 'X', 'x'.repeat(40_000)), 1, T0);
    expect(c.message).toHaveLength(32768);
  });

  it('isTrueFor is what kubectl wait checks: True for the current generation', () => {
    const list: Condition[] = setCondition(undefined, 'Ready', v('True'), 2, T0);
    expect(isTrueFor(list, 'Ready', 2)).toBe(true);
    expect(isTrueFor(list, 'Ready', 3)).toBe(false);
    expect(isTrueFor(setCondition(list, 'Ready', v('False'), 3, T0), 'Ready', 3)).toBe(false);
    expect(isTrueFor(list, 'Degraded', 2)).toBe(false);
  });

  it('sameConditions ignores order and sees any field change', () => {
    const a = setCondition(setCondition(undefined, 'Ready', v('True'), 1, T0), 'Degraded', v('False'), 1, T0);
    expect(sameConditions(a, [a[1], a[0]])).toBe(true);
    expect(sameConditions(a, setCondition(a, 'Ready', v('True', 'R', 'other'), 1, T0))).toBe(false);
    expect(sameConditions(undefined, [])).toBe(true);
  });
});

describe('Degraded', () => {
  const cases: [string, Partial<StatusFacts>, string, RegExp][] = [
    ['nothing wrong', {}, 'AsExpected', /^no problem found$/],
    ['Service missing', { serviceFound: false }, 'ServiceNotFound', /^Service web not found in this namespace: create it, or fix spec\.backend\.serviceName$/],
    ['Service port missing', { servicePortFound: false }, 'ServicePortNotFound', /^Service web has no port 443: fix spec\.backend\.port or spec\.backend\.portName$/],
    [
      'another load balancer holds the backend Service',
      { backendHolder: 'team/first' },
      'BackendConflict',
      /^the pods of Service web are already given server IDs by QuicLoadBalancer team\/first: this load balancer assigns none and is not served until it is gone; use one QuicLoadBalancer per backend Service, or a separate Service$/,
    ],
    [
      'pods shared with the backend of an earlier load balancer',
      { podsHeldByOthers: [{ holder: 'team/first', pods: ['web-0', 'web-1'] }] },
      'BackendPodConflict',
      /^2 pod\(s\) of Service web \(web-0, web-1\) are also backends of QuicLoadBalancer team\/first, which gives them their server IDs: this load balancer assigns them none and does not route to them while that one selects them; make the backend Services select disjoint pods$/,
    ],
    ['user key unusable', { keyProblem: 'Secret qlb-key key "key": missing' }, 'KeyUnavailable', /^Secret qlb-key key "key": missing$/],
    ['server IDs exhausted', { serverIdsExhausted: '2 endpoint(s) have no server ID: ...' }, 'ServerIDsExhausted', /^2 endpoint\(s\) have no server ID/],
    [
      'port conflict',
      { portConflicts: [{ port: 443, node: 'n1', holder: 'team-a/first' }, { port: 443, node: 'n2', holder: 'team-a/first' }] },
      'PortConflict',
      /^UDP port 443 on node n1 is already served by QuicLoadBalancer team-a\/first \(2 conflicts on n1, n2\): this load balancer is not served there; choose another spec\.listen\.ports value or narrow spec\.nodeSelector$/,
    ],
    [
      'a data plane rejected',
      { dataPlanes: { ...OK.dataPlanes, rejections: [{ dataPlane: 'node-a', version: 12, error: 'servers[2].address: bad' }] } },
      'DataPlaneRejected',
      /^data plane node-a rejected snapshot version 12: servers\[2\]\.address: bad; they keep forwarding with their last good snapshot$/,
    ],
    ['rotation blocked', { rotation: { ...OK.rotation, blocked: 'all 7 config ids are live' } }, 'RotationBlocked', /^key rotation blocked: all 7 config ids are live$/],
  ];
  it.each(cases)('%s', (_what, over, reason, message) => {
    const d = degradedCondition(facts(over));
    expect(d.status).toBe(reason === 'AsExpected' ? 'False' : 'True');
    expect(d.reason).toBe(reason);
    expect(d.message).toMatch(message);
  });

  it('names the first problem and lists the others', () => {
    const d = degradedCondition(facts({ serverIdsExhausted: 'full', portConflicts: [{ port: 443, node: 'n1', holder: 'x/y' }], rotation: { ...OK.rotation, blocked: 'b' } }));
    expect(d.reason).toBe('ServerIDsExhausted');
    expect(d.message).toBe('full (also: PortConflict, RotationBlocked)');
  });

  it('a load balancer on both the port and the Service of an earlier one: PortConflict, also BackendConflict', () => {
    const d = degradedCondition(facts({ portConflicts: [{ port: 443, node: 'n1', holder: 'x/y' }], backendHolder: 'x/y' }));
    expect([d.reason, d.message.endsWith('(also: BackendConflict)')]).toEqual(['PortConflict', true]);
  });

  it('a BackendPodConflict message stays short however many pods and holders', () => {
    const long = (i: number) => `${'p'.repeat(200)}-${i}`;
    const held = Array.from({ length: 50 }, (_, h) => ({ holder: `team/${'h'.repeat(200)}-${h}`, pods: Array.from({ length: 200 }, (_, i) => long(h * 200 + i)) }));
    const d = degradedCondition(facts({ podsHeldByOthers: held }));
    expect(d.reason).toBe('BackendPodConflict');
    expect(d.message).toMatch(/^10000 pod\(s\) of Service web \(.* and 9997 more\) are also backends of earlier QuicLoadBalancers .*team\/h+-0 \(200\).* and 47 more, which/);
    expect(d.message.length).toBeLessThan(2000);
  });

  it('does not report a missing port of a missing Service twice', () => {
    expect(degradedCondition(facts({ serviceFound: false, servicePortFound: false })).message).not.toContain('also');
  });
});

describe('ConfigSynced', () => {
  const cases: [string, Partial<StatusFacts>, string, string, string][] = [
    ['all in sync', {}, 'True', 'Synced', 'all 2 connected data plane(s) acknowledged version 12'],
    ['no snapshot', { snapshotVersion: null }, 'Unknown', 'NoSnapshot', 'no snapshot could be built yet (see the Degraded condition)'],
    ['no data plane', { dataPlanes: { connected: 0, inSync: 0, pending: [], rejections: [] } }, 'False', 'NoDataPlanes', 'no data plane is connected for the nodes this load balancer selects (spec.nodeSelector)'],
    [
      'waiting',
      { dataPlanes: { connected: 6, inSync: 1, pending: ['a', 'b', 'c', 'd', 'e'], rejections: [] } },
      'False',
      'Pending',
      '1 of 6 connected data planes acknowledged version 12; waiting for a, b, c and 2 more',
    ],
    [
      'rejected',
      { dataPlanes: { connected: 2, inSync: 1, pending: ['b'], rejections: [{ dataPlane: 'b', version: 12, error: 'listen[0]: bad' }] } },
      'False',
      'DataPlaneRejected',
      'b rejected a snapshot (b, version 12: listen[0]: bad)',
    ],
  ];
  it.each(cases)('%s', (_what, over, status, reason, message) => {
    expect(configSyncedCondition(facts(over))).toEqual({ status, reason, message });
  });
});

describe('Ready', () => {
  const cases: [string, Partial<StatusFacts>, string, string][] = [
    ['working', {}, 'True', 'Routing'],
    ['Service missing', { serviceFound: false }, 'False', 'ServiceNotFound'],
    ['Service port missing', { servicePortFound: false }, 'False', 'ServicePortNotFound'],
    ['another holds the backend Service', { backendHolder: 'team/first', backends: { total: 0, healthy: 0, draining: 0, unassigned: 0 } }, 'False', 'BackendConflict'],
    ['no key and no config yet', { keyProblem: 'no key', rotation: { ...OK.rotation, activeConfigId: null } }, 'False', 'KeyUnavailable'],
    ['no endpoints', { backends: { total: 0, healthy: 0, draining: 0, unassigned: 0 } }, 'False', 'NoBackends'],
    ['every endpoint held by an earlier load balancer', { backends: { total: 0, healthy: 0, draining: 0, unassigned: 0 }, podsHeldByOthers: [{ holder: 'team/first', pods: ['web-0'] }] }, 'False', 'BackendPodConflict'],
    ['some endpoints held by an earlier load balancer, the others routing', { podsHeldByOthers: [{ holder: 'team/first', pods: ['web-0'] }] }, 'True', 'Routing'],
    ['endpoints but no IDs', { backends: { total: 0, healthy: 0, draining: 0, unassigned: 3 } }, 'False', 'ServerIDsExhausted'],
    ['no healthy backend', { backends: { total: 2, healthy: 0, draining: 2, unassigned: 0 } }, 'False', 'NoHealthyBackends'],
    ['no healthy backend: handed-over pods wait for their new ID', { backends: { total: 2, healthy: 0, draining: 0, unassigned: 0, awaitingId: { count: 2, until: Date.parse('2026-12-04T12:02:00Z') } } }, 'False', 'NoHealthyBackends'],
    ['no data plane', { dataPlanes: { connected: 0, inSync: 0, pending: [], rejections: [] } }, 'False', 'NoDataPlanes'],
    ['not yet acknowledged', { dataPlanes: { connected: 2, inSync: 1, pending: ['b'], rejections: [] } }, 'False', 'ConfigNotSynced'],
    ['a data plane rejected', { dataPlanes: { connected: 2, inSync: 1, pending: [], rejections: [{ dataPlane: 'b', version: 12, error: 'e' }] } }, 'False', 'DataPlaneRejected'],
    // still routes: exhaustion and port conflicts are Degraded, not un-Ready, while some backends work
    ['exhausted but routing', { serverIdsExhausted: 'full', backends: { total: 256, healthy: 256, draining: 0, unassigned: 4 } }, 'True', 'Routing'],
    ['key Secret broken after start (old key still in use)', { keyProblem: 'bad key' }, 'True', 'Routing'],
  ];
  it.each(cases)('%s', (_what, over, status, reason) => {
    const r = readyCondition(facts(over));
    expect([r.status, r.reason]).toEqual([status, reason]);
    expect(r.message.length).toBeGreaterThan(0);
  });

  it('says when handed-over backends may take new connections', () => {
    const r = readyCondition(facts({ backends: { total: 2, healthy: 0, draining: 0, unassigned: 0, awaitingId: { count: 2, until: Date.parse('2026-12-04T12:02:00Z') } } }));
    expect(r.message).toBe('none of 2 backend(s) is ready and healthy (0 draining); 2 wait until 2026-12-04T12:02:00Z for their new server ID to reach them: new connections have nowhere to go');
  });

  it('says how much works when Ready', () => {
    expect(readyCondition(OK).message).toBe('3 of 4 backend(s) take new connections; 2 data plane(s) run snapshot version 12');
  });
});

describe('KeyRotation', () => {
  it('Stable: False, reason Stable, the active config and the next rotation', () => {
    expect(keyRotationCondition(OK)).toEqual({
      status: 'False',
      reason: 'Stable',
      message: 'config 1 active (key sha256:00112233aabbccdd); next rotation at 2026-12-05T12:00:00Z',
    });
  });

  it('Accepting: True, who has not acknowledged yet', () => {
    const r = keyRotationCondition(facts({ rotation: { ...OK.rotation, phase: 'Accepting', acceptingConfigId: 2, waitingFor: ['node-b'] } }));
    expect(r).toEqual({
      status: 'True',
      reason: 'Accepting',
      message: 'config 2 pushed to the data planes as accepting; config 1 active (key sha256:00112233aabbccdd); waiting for acknowledgements from node-b',
    });
  });

  it('Accepting while an older config still drains: both named', () => {
    const r = keyRotationCondition(facts({ rotation: { ...OK.rotation, phase: 'Accepting', acceptingConfigId: 3, drainingConfigIds: [0], waitingFor: [] } }));
    expect(r.message).toBe('config 3 pushed to the data planes as accepting; config 1 active (key sha256:00112233aabbccdd); every connected data plane has it; config 0 draining');
  });

  it('Accepting while promotion waits for data planes to reconnect after an operator restart: says so', () => {
    const r = keyRotationCondition(
      facts({ rotation: { ...OK.rotation, phase: 'Accepting', acceptingConfigId: 2, waitingFor: [], reconnecting: { until: Date.parse('2026-12-04T12:00:35Z'), nodes: ['node-c', 'node-d', 'node-e', 'node-f'] } } }),
    );
    expect(r.message).toBe(
      'config 2 pushed to the data planes as accepting; config 1 active (key sha256:00112233aabbccdd); every connected data plane has it; ' +
        'not promoted before 2026-12-04T12:00:35Z unless the data planes of node-c, node-d, node-e and 1 more reconnect to the restarted operator',
    );
  });

  it('Draining: True, until when at the latest', () => {
    const r = keyRotationCondition(facts({ rotation: { ...OK.rotation, phase: 'Draining', activeConfigId: 2, drainingConfigIds: [1], drainEndsAt: Date.parse('2026-12-04T13:00:00Z') } }));
    expect(r.status).toBe('True');
    expect(r.reason).toBe('Draining');
    expect(r.message).toBe('config 2 active (key sha256:00112233aabbccdd); config 1 draining until its traffic stops or 2026-12-04T13:00:00Z at the latest');
  });

  it('a blocked rotation shows in the message, the phase stays the reason', () => {
    const r = keyRotationCondition(facts({ rotation: { ...OK.rotation, blocked: 'no key for a new config', nextRotationAt: null, activeKeyFingerprint: null } }));
    expect(r).toEqual({ status: 'False', reason: 'Stable', message: 'config 1 active; blocked: no key for a new config' });
  });
});
