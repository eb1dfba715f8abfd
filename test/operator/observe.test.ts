// observe.ts: the config server's view of a data plane, restricted to one load balancer, as desired.ts reads it.
import { describe, expect, it } from '@jest/globals';
import type * as k8s from '@kubernetes/client-node';
import type { DataPlaneView } from '../../operator/config-server/cache.js';
import type { QuicLoadBalancerObject } from '../../operator/kube/informers.js';
import { backendClaimsOf, configsMountedBy, created, dataPlaneObservation, observe, servingNodesOf } from '../../operator/reconcile/observe.js';
import { INITIAL_STATE } from '../../operator/rotation/machine.js';
import { EMPTY_RECORDS } from '../../operator/allocation/server-ids.js';

const at = new Date('2026-12-04T12:00:00Z');
const view: DataPlaneView = {
  identity: 'quiclb-dataplane@n1',
  certificateName: 'quiclb-dataplane',
  connected: true,
  peer: '127.0.0.1:1',
  hello: { nodeName: 'n1', podName: 'dp-a', softwareVersion: '0', capabilities: [], currentVersion: 0, processStartTime: null },
  connectedSince: at,
  disconnectedAt: null,
  disconnectReason: '',
  lastSent: null,
  appliedVersion: 7,
  appliedAt: at,
  lastNack: null,
  health: [
    { loadBalancer: 'ns/a', server: 'web-0', state: 'unhealthy', lastResult: 'failure', lastProbeTime: at, consecutiveFailures: 3, lastRttMs: null, lastError: 'timeout', reportedAt: at },
    { loadBalancer: 'ns/b', server: 'web-0', state: 'healthy', lastResult: 'success', lastProbeTime: at, consecutiveFailures: 0, lastRttMs: 1, lastError: '', reportedAt: at },
  ],
  lastHealthReportAt: at,
  counters: {
    time: at,
    processStartTime: null,
    receivedAt: at,
    loadBalancers: [
      {
        loadBalancer: 'ns/a',
        receivedPackets: 10,
        receivedBytes: 1000,
        traffic: [
          { outcome: 'cid', configId: 0, packets: 5, bytes: 500 },
          { outcome: 'table', configId: 0, packets: 2, bytes: 200 },
          { outcome: 'cid', configId: 1, packets: 1, bytes: 100 },
          { outcome: 'fallback', configId: null, packets: 2, bytes: 200 },
        ],
        drops: [],
        liveFlows: 1,
      },
      { loadBalancer: 'ns/b', receivedPackets: 9, receivedBytes: 9, traffic: [{ outcome: 'cid', configId: 0, packets: 9, bytes: 9 }], drops: [], liveFlows: 0 },
    ],
  },
  lastReportAt: at,
};

describe('observe', () => {
  it('restricts a data plane to one load balancer: health, per-config traffic, the configs of its applied version', () => {
    const o = dataPlaneObservation(view, 'ns/a', (v) => (v === 7 ? [{ configId: 0, fingerprint: 'sha256:x' }] : null));
    expect(o.identity).toBe('quiclb-dataplane@n1');
    expect(o.nodeName).toBe('n1');
    expect(o.ackedConfigs).toEqual([{ configId: 0, fingerprint: 'sha256:x' }]);
    expect([...o.health]).toEqual([['web-0', { state: 'unhealthy', reportedAt: at.getTime() }]]);
    expect([...o.traffic].sort()).toEqual([[0, 7], [1, 1]]);
  });

  it('knows no ACKed configs for a version it no longer remembers', () => {
    expect(dataPlaneObservation(view, 'ns/a', () => null).ackedConfigs).toEqual([]);
    expect(dataPlaneObservation({ ...view, appliedVersion: null }, 'ns/a', () => [{ configId: 0, fingerprint: 'f' }]).ackedConfigs).toEqual([]);
  });

  it('picks the Service and its slices by name in the namespace, other load balancers as port claims, connected data planes only', () => {
    const qlb = { metadata: { namespace: 'ns', name: 'a', generation: 3, creationTimestamp: '2026-12-04T11:00:00Z' as unknown as Date }, spec: { backend: { serviceName: 'web', port: 443 }, listen: { ports: [443] } } };
    const other = { metadata: { namespace: 'ns2', name: 'b', creationTimestamp: '2026-12-04T10:00:00Z' as unknown as Date }, spec: { backend: { serviceName: 'x', port: 1 }, listen: { ports: [443] } } };
    const o = observe({
      qlb,
      services: [
        { metadata: { namespace: 'ns', name: 'web' }, spec: { ports: [{ name: 'quic', port: 443, protocol: 'UDP' }] } },
        { metadata: { namespace: 'ns', name: 'other' }, spec: { ports: [] } },
      ],
      slices: [
        { metadata: { namespace: 'ns', name: 's1', labels: { 'kubernetes.io/service-name': 'web' } }, addressType: 'IPv4', endpoints: [] },
        { metadata: { namespace: 'ns', name: 's2', labels: { 'kubernetes.io/service-name': 'other' } }, addressType: 'IPv4', endpoints: [] },
      ],
      allQlbs: [qlb, other],
      nodes: [{ metadata: { name: 'n1', labels: { zone: 'a' } } }],
      records: EMPTY_RECORDS,
      rotation: INITIAL_STATE,
      keys: new Map(),
      userKey: null,
      freshKey: Buffer.alloc(16),
      dataPlanes: [
        view,
        // Same certificate, another node: a data plane of its own.
        { ...view, identity: 'quiclb-dataplane@n2', hello: { ...view.hello!, nodeName: 'n2' } },
        { ...view, identity: 'quiclb-dataplane@gone', connected: false },
      ],
      configsAt: () => null,
      now: 0,
    });
    expect(o.service).toEqual({ ports: [{ name: 'quic', port: 443, protocol: 'UDP' }] });
    expect(o.endpointSlices).toHaveLength(1);
    expect(o.generation).toBe(3);
    expect(o.createdAt).toBe(Date.parse('2026-12-04T11:00:00Z'));
    expect(o.otherClaims.map((c) => c.key)).toEqual(['ns2/b']);
    expect(o.dataPlanes.map((d) => [d.identity, d.nodeName])).toEqual([
      ['quiclb-dataplane@n1', 'n1'],
      ['quiclb-dataplane@n2', 'n2'],
    ]);
    expect(o.nodes).toEqual([{ name: 'n1', labels: { zone: 'a' } }]);
  });

  it('reads the backend pods of the namespace\'s load balancers from the caches: the first per Service, pods only', () => {
    const q = (namespace: string, name: string, at: string, serviceName: string) => ({
      metadata: { namespace, name, creationTimestamp: at as unknown as Date },
      spec: { backend: { serviceName, portName: 'quic' }, listen: { ports: [443] } },
    });
    const ep = (name: string | null, ip: string) => ({ addresses: [ip], ...(name ? { targetRef: { kind: 'Pod', name, uid: `uid-${name}` } } : {}) });
    const slice = (namespace: string, service: string, endpoints: ReturnType<typeof ep>[]) => ({
      metadata: { namespace, name: `${service}-x`, labels: { 'kubernetes.io/service-name': service } },
      addressType: 'IPv4',
      ports: [{ name: 'quic', port: 8443, protocol: 'UDP' }],
      endpoints,
    });
    const svc = (namespace: string, name: string) => ({ metadata: { namespace, name }, spec: { ports: [{ name: 'quic', port: 443, protocol: 'UDP' }] } });
    const claims = backendClaimsOf(
      'ns',
      [
        q('ns', 'a', '2026-12-04T10:00:00Z', 'web'),
        q('ns', 'b', '2026-12-04T09:00:00Z', 'web'), // earlier on the same Service: it claims, a does not
        q('ns', 'c', '2026-12-04T11:00:00Z', 'all'),
        q('ns', 'd', '2026-12-04T11:00:00Z', 'missing'),
        { metadata: { namespace: 'ns', name: 'broken' }, spec: { listen: {} } },
        q('other', 'e', '2026-12-04T08:00:00Z', 'web'),
      ],
      [svc('ns', 'web'), svc('ns', 'all'), svc('other', 'web')],
      [slice('ns', 'web', [ep('web-0', '192.0.2.1')]), slice('ns', 'all', [ep('web-0', '192.0.2.1'), ep(null, '192.0.2.9')]), slice('other', 'web', [ep('x', '192.0.2.3')])],
    );
    expect(claims.map((c) => [c.key, c.createdAt, [...c.pods]])).toEqual([
      ['ns/b', Date.parse('2026-12-04T09:00:00Z'), ['uid-web-0']],
      ['ns/c', Date.parse('2026-12-04T11:00:00Z'), ['uid-web-0']],
      ['ns/d', Date.parse('2026-12-04T11:00:00Z'), []],
    ]);
  });

  it('a load balancer whose spec cannot be read, or whose Service lacks its port, claims every endpoint pod of the Service, whatever the port; one whose Service is missing claims none', () => {
    const ep = (name: string) => ({ addresses: [`192.0.2.${name.length}`], targetRef: { kind: 'Pod', name, uid: `uid-${name}` } });
    const slice = (service: string, port: { name: string; protocol: string }, endpoints: ReturnType<typeof ep>[]) => ({
      metadata: { namespace: 'ns', name: `${service}-${port.name}`, labels: { 'kubernetes.io/service-name': service } },
      addressType: 'IPv4',
      ports: [{ ...port, port: 8443 }],
      endpoints,
    });
    const svc = (name: string) => ({ metadata: { namespace: 'ns', name }, spec: { ports: [{ name: 'quic', port: 443, protocol: 'UDP' }] } });
    const at = '2026-12-04T10:00:00Z' as unknown as Date;
    const claims = backendClaimsOf(
      'ns',
      [
        // listen.ports missing: readSpec refuses it, but its last snapshot still routes the pods of Service web
        { metadata: { namespace: 'ns', name: 'invalid', creationTimestamp: at }, spec: { backend: { serviceName: 'web', portName: 'quic' } } },
        { metadata: { namespace: 'ns', name: 'noport', creationTimestamp: at }, spec: { backend: { serviceName: 'all', portName: 'nope' }, listen: { ports: [443] } } },
        { metadata: { namespace: 'ns', name: 'nosvc', creationTimestamp: at }, spec: { backend: { serviceName: 'gone', portName: 'quic' }, listen: { ports: [444] } } },
        { metadata: { namespace: 'ns', name: 'nothing', creationTimestamp: at }, spec: { backend: { serviceName: 7 } } },
      ],
      [svc('web'), svc('all')],
      [
        slice('web', { name: 'quic', protocol: 'UDP' }, [ep('web-0')]),
        slice('web', { name: 'http', protocol: 'TCP' }, [ep('web-1')]),
        slice('all', { name: 'quic', protocol: 'UDP' }, [ep('web-0'), ep('web-22')]),
      ],
    );
    expect(claims.map((c) => [c.key, [...c.pods].sort()])).toEqual([
      ['ns/invalid', ['uid-web-0', 'uid-web-1']],
      ['ns/noport', ['uid-web-0', 'uid-web-22']],
      ['ns/nosvc', []],
    ]);
  });

  it('reads the configs Secrets a pod mounts (secret and projected volumes) as load balancer keys', () => {
    const pod = {
      metadata: { namespace: 'ns', name: 'web-0' },
      spec: {
        containers: [],
        volumes: [
          { name: 'a', secret: { secretName: 'h3-quiclb-configs' } },
          { name: 'b', projected: { sources: [{ secret: { name: 'edge-quiclb-configs' } }, { downwardAPI: {} }, { secret: { name: 'tls' } }] } },
          { name: 'c', secret: { secretName: '-quiclb-configs' } },
          { name: 'd', secret: { secretName: 'h3-quiclb-configs' } },
        ],
      },
    };
    expect(configsMountedBy(pod)).toEqual(['ns/h3', 'ns/edge']);
    expect(configsMountedBy({ metadata: { namespace: 'ns' } })).toEqual([]);
  });

  it('gives computeDesired the cached pods of its endpoints: server ID, changed-at, mounts; a cached pod of another UID is left out', () => {
    const qlb = { metadata: { namespace: 'ns', name: 'lb', creationTimestamp: new Date(0) }, spec: { backend: { serviceName: 'web', portName: 'quic' }, listen: { ports: [443] } } };
    const slice = {
      metadata: { namespace: 'ns', name: 'web-x', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      ports: [{ name: 'quic', port: 8443, protocol: 'UDP' }],
      endpoints: ['web-0', 'web-1', 'web-2'].map((p, i) => ({ addresses: [`192.0.2.${i}`], targetRef: { kind: 'Pod', name: p, uid: `uid-${p}` } })),
    };
    const cached: Record<string, k8s.V1Pod> = {
      'web-0': { metadata: { namespace: 'ns', name: 'web-0', uid: 'uid-web-0', annotations: { 'quiclb.io/server-id': '0001', 'quiclb.io/server-id-changed-at': '2026-12-04T12:00:00.000Z' } }, spec: { containers: [], volumes: [{ name: 'q', secret: { secretName: 'lb-quiclb-configs' } }] } },
      'web-1': { metadata: { namespace: 'ns', name: 'web-1', uid: 'uid-old', annotations: { 'quiclb.io/server-id': '0002' } } },
      'web-2': { metadata: { namespace: 'ns', name: 'web-2', uid: 'uid-web-2', annotations: { 'quiclb.io/server-id-changed-at': 'soon' } } },
    };
    const o = observe({
      qlb,
      services: [{ metadata: { namespace: 'ns', name: 'web' }, spec: { ports: [{ name: 'quic', port: 443, protocol: 'UDP' }] } }],
      slices: [slice],
      allQlbs: [qlb],
      nodes: [],
      records: EMPTY_RECORDS,
      rotation: INITIAL_STATE,
      keys: new Map(),
      userKey: null,
      freshKey: new Uint8Array(16),
      dataPlanes: [],
      configsAt: () => null,
      now: 0,
      pods: (name) => cached[name],
    });
    expect([...o.pods!]).toEqual([
      ['uid-web-0', { serverId: '0001', changedAt: Date.parse('2026-12-04T12:00:00Z'), mounts: ['ns/lb'] }],
      ['uid-web-2', { serverId: null, changedAt: null, mounts: [] }],
    ]);
  });

  it('reads creation times given as strings or Dates', () => {
    expect(created({ metadata: { creationTimestamp: new Date(5) } })).toBe(5);
    expect(created({ metadata: {} })).toBe(0);
  });
});

describe('servingNodesOf (the nodes a load balancer that cannot be reconciled is retained on)', () => {
  const node = (name: string, labels: Record<string, string>) => ({ metadata: { name, labels } });
  const nodes = [node('n1', { edge: 'true' }), node('n2', { edge: 'true' }), node('n3', {})];
  const qlb = (name: string, spec: unknown, createdAt: string): QuicLoadBalancerObject => ({ metadata: { namespace: 'ns', name, creationTimestamp: new Date(createdAt) }, spec });
  const spec = (ports: number[], service = 'web', nodeSelector: Record<string, string> = { edge: 'true' }) => ({ backend: { serviceName: service, portName: 'quic' }, listen: { ports }, nodeSelector });

  it('is the selected nodes minus those where an earlier load balancer holds its port', () => {
    const mine = qlb('b', spec([443]), '2026-01-02T00:00:00Z');
    const earlier = qlb('a', spec([443], 'other', { 'kubernetes.io/hostname': 'n2' }), '2026-01-01T00:00:00Z');
    const n2 = node('n2', { edge: 'true', 'kubernetes.io/hostname': 'n2' });
    expect(servingNodesOf(mine, [mine], nodes)).toEqual(['n1', 'n2']);
    expect(servingNodesOf(mine, [mine, earlier], [nodes[0], n2, nodes[2]])).toEqual(['n1']);
  });

  it('is empty while an earlier one holds its backend Service, null when its spec cannot be read', () => {
    const mine = qlb('b', spec([443]), '2026-01-02T00:00:00Z');
    const holder = qlb('a', spec([444]), '2026-01-01T00:00:00Z');
    expect(servingNodesOf(mine, [mine, holder], nodes)).toEqual([]);
    expect(servingNodesOf(qlb('bad', { listen: {} }, '2026-01-02T00:00:00Z'), [], nodes)).toBeNull();
  });
});
