/**
 * `quiclb operator` against the real API server (tier 1 is enough), under its own ServiceAccount token with the
 * RBAC of deploy/rbac.yaml (never admin), with a real `quiclb dataplane` process connected over mTLS and real UDP
 * backends on 127.0.0.x addresses the test owns (the "pod IPs" of Pod objects it creates; on tier 1 they stay
 * Pending, which is fine for annotations). Tier 1 has no controller-manager, so the test writes the EndpointSlices.
 *
 * Proves: finalizer added; server IDs assigned, stored in the ConfigMap, written on the pods, stable across
 * changes; the configs Secret written; the snapshot ACKed by the data plane; Ready and ConfigSynced true and
 * `kubectl wait --for=condition=Ready` succeeds; a datagram with a CID minted from the Secret's active config for a
 * pod's server ID reaches that pod's socket; scaling the slices changes what the data plane routes (timed); the
 * correlation id of a reconcile appears in the publish and in the ACK log lines; quiclb_operator_* metrics;
 * deleting the QuicLoadBalancer closes its listener, deletes its records and Secret and removes the finalizer.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, createServer, type Server } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { CidEncoder } from '../../lib/index.js';
import type { QuicLbConfig } from '../../lib/quiclb/config.js';
import { decodeBackendSecret } from '../../operator/rotation/keys.js';
import { GROUP, PLURAL, SERVER_ID_ANNOTATION, VERSION } from '../../operator/reconcile/spec.js';
import { repoRoot } from '../helpers/run-cli.js';
import { TestCa, type TlsDir } from '../helpers/tls.js';
import { adminKubeConfig, cluster, createNamespace, deleteNamespace, kubectl, kubectlOk, run, waitFor } from './cluster.js';

const CRD_FILE = join(repoRoot, 'crds', 'quiclb.io_quicloadbalancers.yaml');
const RBAC_FILE = join(repoRoot, 'deploy', 'rbac.yaml');
const QLB = { group: GROUP, version: VERSION, plural: PLURAL };
const NODE = `op-node-${randomBytes(3).toString('hex')}`;

interface Proc {
  child: ChildProcess;
  lines: string[];
  exit: Promise<number | null>;
}

function start(args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(process.execPath, ['--import', 'tsx', 'cli/main.ts', ...args], {
    cwd: repoRoot,
    env: { ...process.env, NODE_OPTIONS: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const p: Proc = { child, lines: [], exit: new Promise((r) => child.on('exit', (code) => r(code))) };
  let buf = '';
  const take = (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop()!;
    p.lines.push(...parts);
  };
  child.stdout!.on('data', take);
  child.stderr!.on('data', take);
  return p;
}

async function stop(p: Proc): Promise<void> {
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGTERM');
  const t = setTimeout(() => p.child.kill('SIGKILL'), 5000);
  await p.exit;
  clearTimeout(t);
}

function json(p: Proc, msg: string): Record<string, unknown>[] {
  return p.lines.flatMap((l) => {
    try {
      const o = JSON.parse(l) as Record<string, unknown>;
      return o.msg === msg ? [o] : [];
    } catch {
      return [];
    }
  });
}

const POD_IPS = ['198.18.0.2', '198.18.0.3', '198.18.0.4'];
const BACKEND_PORT = 4433;
const LISTEN_PORT = 8443;

/** test/operator/netns-peer.ts in a private network namespace: the data plane, backend sockets and a client. */
class NetnsPeer {
  readonly dataplaneLines: string[] = [];
  private seq = 0;
  private readonly waiting = new Map<number, (ms: number) => void>();
  private constructor(readonly proc: Proc) {}

  static async start(env: NodeJS.ProcessEnv): Promise<NetnsPeer> {
    const setup = ['ip link set lo up', ...POD_IPS.map((ip) => `ip addr add ${ip}/32 dev lo`), 'exec "$0" --import tsx test/operator/netns-peer.ts'].join(' && ');
    const child = spawn('unshare', ['-rn', 'sh', '-c', setup, process.execPath], { cwd: repoRoot, env: { ...process.env, NODE_OPTIONS: '', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    const proc: Proc = { child, lines: [], exit: new Promise((r) => child.on('exit', (code) => r(code))) };
    const peer = new NetnsPeer(proc);
    let ready = false;
    let buf = '';
    child.stderr!.on('data', (d: Buffer) => proc.lines.push(d.toString()));
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      for (const line of parts) {
        proc.lines.push(line);
        const m = JSON.parse(line) as { ready?: boolean; dp?: string; id?: number; ms?: number };
        if (m.ready) ready = true;
        if (m.dp !== undefined) peer.dataplaneLines.push(m.dp);
        if (m.id !== undefined) peer.waiting.get(m.id)?.(m.ms!);
      }
    });
    await waitFor('netns peer ready', async () => (ready ? true : undefined), 30_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${proc.lines.join('\n')}`);
    });
    return peer;
  }

  /** Sends datagrams with `dcid` to the load balancer until the backend on `ip` gets one: ms taken, or -1. */
  send(dcid: Buffer, ip: string, timeoutMs: number): Promise<number> {
    const id = ++this.seq;
    return new Promise((resolve) => {
      this.waiting.set(id, (ms) => {
        this.waiting.delete(id);
        resolve(ms);
      });
      this.proc.child.stdin!.write(JSON.stringify({ id, op: 'send', dcid: dcid.toString('hex'), port: LISTEN_PORT, backend: ip, timeoutMs }) + '\n');
    });
  }
}

describe('quiclb operator on a real API server', () => {
  const c = () => cluster();
  let ns: string;
  let ca: TestCa;
  let serverTls: TlsDir;
  let clientTls: TlsDir;
  let dir: string;
  let operator: Proc;
  let peer: NetnsPeer;
  let relay: Server;
  let co: k8s.CustomObjectsApi;
  let core: k8s.CoreV1Api;
  let disc: k8s.DiscoveryV1Api;
  const pods = new Map<string, { uid: string; ip: string }>();

  const qlbName = 'edge';
  const getQlb = async () => (await co.getNamespacedCustomObject({ ...QLB, namespace: ns, name: qlbName })) as { metadata: k8s.V1ObjectMeta; status?: Record<string, unknown> & { conditions?: { type: string; status: string; reason: string }[] } };
  const condition = async (type: string) => (await getQlb()).status?.conditions?.find((x) => x.type === type);

  function slice(names: string[]): k8s.V1EndpointSlice {
    return {
      metadata: { name: 'web-slice', namespace: ns, labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      ports: [{ name: 'quic', port: BACKEND_PORT, protocol: 'UDP' }],
      endpoints: names.map((n) => ({
        addresses: [pods.get(n)!.ip],
        conditions: { ready: true, serving: true, terminating: false },
        targetRef: { kind: 'Pod', name: n, namespace: ns, uid: pods.get(n)!.uid },
        nodeName: NODE,
      })),
    };
  }

  async function setSlice(names: string[]): Promise<void> {
    const cur = await disc.readNamespacedEndpointSlice({ name: 'web-slice', namespace: ns });
    const body = slice(names);
    await disc.replaceNamespacedEndpointSlice({ name: 'web-slice', namespace: ns, body: { ...body, metadata: { ...body.metadata, resourceVersion: cur.metadata!.resourceVersion } } });
  }

  async function podIds(): Promise<Record<string, string | undefined>> {
    const out: Record<string, string | undefined> = {};
    for (const n of pods.keys()) out[n] = (await core.readNamespacedPod({ name: n, namespace: ns })).metadata?.annotations?.[SERVER_ID_ANNOTATION];
    return out;
  }

  async function activeConfig() {
    const s = await core.readNamespacedSecret({ name: `${qlbName}-quiclb-configs`, namespace: ns });
    const state = decodeBackendSecret(s.data);
    return state.configs.find((x) => x.state === 'active')!.config;
  }

  /** Sends datagrams minted for `serverId` (with the Secret's active config) until pod `ip` receives one: ms, or -1. */
  async function reaches(serverId: string, ip: string, timeoutMs: number, known?: QuicLbConfig): Promise<number> {
    const config = known ?? (await activeConfig());
    return peer.send(new CidEncoder(config, Buffer.from(serverId, 'hex')).next(), ip, timeoutMs);
  }

  beforeAll(async () => {
    co = adminKubeConfig().makeApiClient(k8s.CustomObjectsApi);
    core = adminKubeConfig().makeApiClient(k8s.CoreV1Api);
    disc = adminKubeConfig().makeApiClient(k8s.DiscoveryV1Api);
    dir = mkdtempSync(join(tmpdir(), 'quiclb-op-'));
    await kubectlOk(['apply', '--server-side', '-f', CRD_FILE]);
    await kubectlOk(['wait', '--for=condition=Established', 'crd/quicloadbalancers.quiclb.io', '--timeout=60s']);
    if ((await kubectl(['get', 'namespace', 'quiclb-system'])).code !== 0) await kubectlOk(['create', 'namespace', 'quiclb-system']);
    await kubectlOk(['apply', '--server-side', '-f', RBAC_FILE]);
    const kubeconfig = join(dir, 'operator.kubeconfig');
    const tok = await run('bash', [join(repoRoot, 'test/cluster/token.sh'), '--name', c().name, '--kubeconfig', kubeconfig, 'quiclb-system', 'quiclb-operator']);
    if (tok.code !== 0) throw new Error(`token.sh failed: ${tok.stderr}`);

    ns = await createNamespace('op');
    await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: 'default' } } }).catch(() => undefined);
    await core.createNode({ body: { metadata: { name: NODE, labels: { 'quiclb.io/edge': 'true' } } } });

    // Pods web-0..2 on 198.18.0.2..4: addresses that exist only inside the peer's network namespace.
    for (let i = 0; i < 3; i++) {
      const name = `web-${i}`;
      const pod = await core.createNamespacedPod({
        namespace: ns,
        body: { metadata: { name, labels: { app: 'web' } }, spec: { automountServiceAccountToken: false, containers: [{ name: 'web', image: 'example.invalid/web:1' }] } },
      });
      pods.set(name, { uid: pod.metadata!.uid!, ip: POD_IPS[i] });
    }
    await core.createNamespacedService({ namespace: ns, body: { metadata: { name: 'web' }, spec: { clusterIP: 'None', ports: [{ name: 'quic', port: 443, protocol: 'UDP', targetPort: BACKEND_PORT }], selector: { app: 'web' } } } });
    await disc.createNamespacedEndpointSlice({ namespace: ns, body: slice(['web-0', 'web-1']) });

    ca = new TestCa();
    serverTls = ca.issue({ cn: 'quiclb-operator', usage: 'server' });
    clientTls = ca.issue({ cn: `dataplane-${NODE}`, usage: 'client' });
    operator = start(['operator', '--kubeconfig', kubeconfig, '--config-listen', '127.0.0.1:0', '--tls-dir', serverTls.dir, '--metrics-port', '0', '--log-level', 'debug']);
    const running = await waitFor('operator running', async () => json(operator, 'operator running')[0], 30_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${operator.lines.join('\n')}`);
    });
    const configPort = Number(String(running.configAddress).split(':').pop());
    const socketPath = join(dir, 'relay.sock');
    relay = createServer((conn) => {
      const up = connect(configPort, '127.0.0.1');
      conn.pipe(up).pipe(conn);
      conn.on('error', () => up.destroy());
      up.on('error', () => conn.destroy());
    });
    relay.listen(socketPath);
    await once(relay, 'listening');
    peer = await NetnsPeer.start({
      RELAY_SOCKET: socketPath,
      RELAY_PORT: '9443',
      POD_IPS: POD_IPS.join(','),
      BACKEND_PORT: String(BACKEND_PORT),
      DATAPLANE_ARGS: JSON.stringify(['--tls-dir', clientTls.dir, '--node-name', NODE, '--no-metrics', '--report-interval', '1']),
    });
  }, 120_000);

  afterAll(async () => {
    if (peer) await stop(peer.proc);
    if (operator) await stop(operator);
    relay?.close();
    if (ns) await deleteNamespace(ns);
    await core?.deleteNode({ name: NODE }).catch(() => undefined);
    ca?.remove();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('makes a QuicLoadBalancer Ready: finalizer, IDs, Secret, annotations, ACKed snapshot, kubectl wait', async () => {
    await co.createNamespacedCustomObject({
      ...QLB,
      namespace: ns,
      body: {
        apiVersion: `${GROUP}/${VERSION}`,
        kind: 'QuicLoadBalancer',
        metadata: { name: qlbName, namespace: ns },
        spec: {
          backend: { serviceName: 'web', port: 443 },
          listen: { ports: [LISTEN_PORT], addresses: ['127.0.0.1'] },
          connectionIds: { serverIdLength: 2, nonceLength: 6 },
          healthCheck: { interval: '1s', timeout: '500ms' },
          nodeSelector: { 'quiclb.io/edge': 'true' },
        },
      },
    });
    const t0 = Date.now();
    const w = await kubectl(['wait', '--for=condition=Ready', `qlb/${qlbName}`, '-n', ns, '--timeout=60s']);
    if (w.code !== 0) throw new Error(`kubectl wait failed: ${w.stderr}\n${operator.lines.slice(-40).join('\n')}\n${peer.dataplaneLines.slice(-20).join('\n')}`);
    process.stderr.write(`[operator] create -> Ready: ${Date.now() - t0} ms\n`);

    const q = await getQlb();
    expect(q.metadata.finalizers).toContain('quiclb.io/cleanup');
    expect((await condition('ConfigSynced'))?.status).toBe('True');
    expect((await condition('Degraded'))?.status).toBe('False');
    expect(q.status).toMatchObject({ backends: { total: 2 }, dataPlanes: { connected: 1, inSync: 1 } });
    expect(q.metadata.managedFields?.some((f) => f.manager === 'quiclb-operator' && f.subresource === 'status')).toBe(true);

    const ids = await podIds();
    expect(ids['web-0']).toMatch(/^[0-9a-f]{4}$/);
    expect(ids['web-1']).toMatch(/^[0-9a-f]{4}$/);
    expect(ids['web-0']).not.toBe(ids['web-1']);
    expect(ids['web-2']).toBeUndefined();
    const cm = await core.readNamespacedConfigMap({ name: `${qlbName}-quiclb-server-ids`, namespace: ns });
    expect(cm.data?.['server-ids.json']).toContain(pods.get('web-0')!.uid);
    const config = await activeConfig();
    expect(config.key).not.toBeNull();

    // A CID minted with the Secret's config for web-1's ID reaches web-1's socket (and not web-0's).
    expect(await reaches(ids['web-1']!, POD_IPS[1], 10_000)).toBeGreaterThanOrEqual(0);
    expect(await reaches(ids['web-0']!, POD_IPS[0], 10_000)).toBeGreaterThanOrEqual(0);
    // web-0's ID never reaches web-1.
    expect(await reaches(ids['web-0']!, POD_IPS[1], 300)).toBe(-1);

    // No key bytes in any log line of the operator.
    const keyHex = Buffer.from(config.key!).toString('hex');
    const keyB64 = Buffer.from(config.key!).toString('base64');
    expect(operator.lines.filter((l) => l.includes(keyHex) || l.includes(keyB64))).toEqual([]);
  });

  it('follows scaling: a new pod gets an ID and traffic, IDs of the others stay; a removed pod releases its ID', async () => {
    const before = await podIds();
    const t0 = Date.now();
    await setSlice(['web-0', 'web-1', 'web-2']);
    const id2 = await waitFor('web-2 annotated', async () => (await podIds())['web-2'], 20_000, 50);
    const ms = await reaches(id2, POD_IPS[2], 20_000);
    expect(ms).toBeGreaterThanOrEqual(0);
    process.stderr.write(`[operator] slice change -> new pod's CID routed: ${Date.now() - t0} ms\n`);
    const after = await podIds();
    expect(after['web-0']).toBe(before['web-0']);
    expect(after['web-1']).toBe(before['web-1']);
    expect(new Set(Object.values(after)).size).toBe(3);

    await setSlice(['web-1', 'web-2']);
    await waitFor('web-0 released', async () => {
      const cm = await core.readNamespacedConfigMap({ name: `${qlbName}-quiclb-server-ids`, namespace: ns });
      const r = JSON.parse(cm.data!['server-ids.json']) as { released: { pod: string; id: string }[] };
      return r.released.find((x) => x.pod === 'web-0' && x.id === before['web-0']);
    }, 20_000);
    await waitFor('status shows 2 backends', async () => ((await getQlb()).status as { backends?: { total: number } } | undefined)?.backends?.total === 2 || undefined, 20_000);
    expect((await podIds())['web-1']).toBe(before['web-1']);
  });

  it('logs a correlation id from reconcile to published version to the data plane ACK, and exports metrics', async () => {
    const published = json(operator, 'snapshot published').filter((l) => Array.isArray(l.correlationIds) && (l.correlationIds as string[]).length > 0);
    expect(published.length).toBeGreaterThan(0);
    const last = published[published.length - 1];
    const cid = (last.correlationIds as string[])[0];
    await waitFor('ACK log with the correlation id', async () => json(operator, 'data plane ACKed').find((l) => (l.correlationIds as string[]).includes(cid)), 10_000);
    expect(operator.lines.some((l) => l.includes(cid) && l.includes('server-ID records written')) || operator.lines.some((l) => l.includes(cid) && l.includes('"reconciled"'))).toBe(true);

    const metricsAddress = String(json(operator, 'operator running')[0].metricsAddress);
    const text = await (await fetch(`http://${metricsAddress}/metrics`)).text();
    const value = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
    expect(value(/^quiclb_operator_reconciles_total\{result="success"\} (\d+)/m)).toBeGreaterThan(0);
    expect(value(/^quiclb_operator_connected_data_planes (\d+)/m)).toBe(1);
    expect(value(/^quiclb_operator_snapshot_versions_acked_total (\d+)/m)).toBeGreaterThan(0);
    expect(value(/^quiclb_operator_server_id_allocations_total\{kind="assigned"\} (\d+)/m)).toBe(3);
    expect(value(/^quiclb_operator_rotations_total\{phase="created"\} (\d+)/m)).toBe(1);
  });

  it('deleting the QuicLoadBalancer closes its listener, removes its records and Secret, then the finalizer', async () => {
    const ids = await podIds();
    const config = await activeConfig();
    expect(await reaches(ids['web-1']!, POD_IPS[1], 5000, config)).toBeGreaterThanOrEqual(0);
    await co.deleteNamespacedCustomObject({ ...QLB, namespace: ns, name: qlbName });
    await waitFor('QuicLoadBalancer gone', async () => ((await kubectl(['get', 'qlb', qlbName, '-n', ns])).code !== 0 ? true : undefined), 30_000);
    await waitFor('listener closed', async () => ((await reaches(ids['web-1']!, POD_IPS[1], 300, config)) < 0 ? true : undefined), 15_000, 100);
    await expect(core.readNamespacedConfigMap({ name: `${qlbName}-quiclb-server-ids`, namespace: ns })).rejects.toMatchObject({ code: 404 });
    await expect(core.readNamespacedSecret({ name: `${qlbName}-quiclb-configs`, namespace: ns })).rejects.toMatchObject({ code: 404 });
    expect((await podIds())['web-1']).toBeUndefined();
  });
});
