/**
 * The world of the operator integration tests (operator*.test.ts), on the real API server of the run: the CRD, the
 * RBAC of deploy/rbac.yaml and a token for its ServiceAccount (the operator never runs as admin), a namespace with
 * Pods, a Service and an EndpointSlice the test writes (tier 1 has no controllers), a Node, a CA with the
 * operator's and the data plane's certificates, and `quiclb` processes: operators on the host and a data plane in a
 * private network namespace (test/operator/netns-peer.ts; the API server refuses loopback addresses in
 * EndpointSlices, so the pods' addresses exist only in that namespace) reached through a Unix-socket relay.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer, type Server, type Socket } from 'node:net';
import * as k8s from '@kubernetes/client-node';
import { CidEncoder } from '../../lib/quiclb/encoder.js';
import type { QuicLbConfig } from '../../lib/quiclb/config.js';
import { decodeBackendSecret } from '../../operator/rotation/keys.js';
import { GROUP, PLURAL, SERVER_ID_ANNOTATION, VERSION } from '../../operator/reconcile/spec.js';
import { repoRoot } from '../helpers/run-cli.js';
import { TestCa, type TlsDir } from '../helpers/tls.js';
import { adminKubeConfig, cluster, createNamespace, deleteNamespace, kubectl, kubectlOk, run, waitFor } from './cluster.js';

export const CRD_FILE = join(repoRoot, 'crds', 'quiclb.io_quicloadbalancers.yaml');
export const RBAC_FILE = join(repoRoot, 'deploy', 'rbac.yaml');
export const QLB = { group: GROUP, version: VERSION, plural: PLURAL };
export const NODE = `op-node-${randomBytes(3).toString('hex')}`;

export interface Proc {
  child: ChildProcess;
  lines: string[];
  exit: Promise<number | null>;
}

export function start(args: string[], env: NodeJS.ProcessEnv = {}): Proc {
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

export async function stop(p: Proc): Promise<void> {
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGTERM');
  const t = setTimeout(() => p.child.kill('SIGKILL'), 5000);
  await p.exit;
  clearTimeout(t);
}

export function json(p: Proc, msg: string): Record<string, unknown>[] {
  return p.lines.flatMap((l) => {
    try {
      const o = JSON.parse(l) as Record<string, unknown>;
      return o.msg === msg ? [o] : [];
    } catch {
      return [];
    }
  });
}

export const POD_IPS = ['198.18.0.2', '198.18.0.3', '198.18.0.4'];
export const BACKEND_PORT = 4433;
export const LISTEN_PORT = 8443;

/** test/operator/netns-peer.ts in a private network namespace: the data plane, backend sockets and a client. */
export class NetnsPeer {
  readonly dataplaneLines: string[] = [];
  private seq = 0;
  private readonly waiting = new Map<number, (ms: number) => void>();
  private readonly streaming = new Map<number, (flows: StreamCounts[]) => void>();
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
        const m = JSON.parse(line) as { ready?: boolean; dp?: string; id?: number; ms?: number; flows?: StreamCounts[] };
        if (m.ready) ready = true;
        if (m.dp !== undefined) peer.dataplaneLines.push(m.dp);
        if (m.id !== undefined && m.flows !== undefined) peer.streaming.get(m.id)?.(m.flows);
        else if (m.id !== undefined) peer.waiting.get(m.id)?.(m.ms!);
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

  /** SIGKILLs the data plane and starts it again with the same arguments: resolves with the ms between the two. */
  restartDataPlane(): Promise<number> {
    const id = ++this.seq;
    return new Promise((resolve) => {
      this.waiting.set(id, (ms) => {
        this.waiting.delete(id);
        resolve(ms);
      });
      this.proc.child.stdin!.write(JSON.stringify({ id, op: 'restart-dataplane' }) + '\n');
    });
  }

  /**
   * Sends one datagram per flow every intervalMs (each tagged) until stop() or maxMs; stop() resolves with, per flow,
   * how many reached the flow's backend, another backend (misrouted), or none.
   */
  stream(flows: { dcid: Buffer; ip: string }[], intervalMs: number, maxMs: number): { stop: () => Promise<StreamCounts[]> } {
    const id = ++this.seq;
    const result = new Promise<StreamCounts[]>((resolve) => {
      this.streaming.set(id, (counts) => {
        this.streaming.delete(id);
        resolve(counts);
      });
    });
    const line = { id, op: 'stream', flows: flows.map((f) => ({ dcid: f.dcid.toString('hex'), backend: f.ip })), port: LISTEN_PORT, intervalMs, maxMs };
    this.proc.child.stdin!.write(JSON.stringify(line) + '\n');
    return {
      stop: () => {
        this.proc.child.stdin!.write(JSON.stringify({ id, op: 'stop' }) + '\n');
        return result;
      },
    };
  }
}

/** What became of a stream's datagrams of one flow. */
export interface StreamCounts {
  sent: number;
  delivered: number;
  misrouted: number;
  lost: number;
}

/** A TCP relay on 127.0.0.1 that can cut every connection and refuse new ones (an unreachable API server). */
export class TcpRelay {
  private readonly conns = new Set<Socket>();
  private down = false;
  private constructor(private readonly server: Server) {}

  static async start(targetPort: number): Promise<TcpRelay> {
    const server = createServer();
    const relay = new TcpRelay(server);
    server.on('connection', (c) => {
      if (relay.down) return void c.destroy();
      const up = connect(targetPort, '127.0.0.1');
      relay.conns.add(c);
      relay.conns.add(up);
      c.pipe(up).pipe(c);
      const end = () => {
        c.destroy();
        up.destroy();
        relay.conns.delete(c);
        relay.conns.delete(up);
      };
      c.on('error', end).on('close', end);
      up.on('error', end).on('close', end);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return relay;
  }

  get port(): number {
    return (this.server.address() as { port: number }).port;
  }

  cut(): void {
    this.down = true;
    for (const c of [...this.conns]) c.destroy();
  }

  restore(): void {
    this.down = false;
  }

  close(): void {
    this.cut();
    this.server.close();
  }
}

export type QlbObject = { metadata: k8s.V1ObjectMeta; status?: Record<string, unknown> & { conditions?: { type: string; status: string; reason: string }[] } };

export class OperatorWorld {
  readonly co = adminKubeConfig().makeApiClient(k8s.CustomObjectsApi);
  readonly core = adminKubeConfig().makeApiClient(k8s.CoreV1Api);
  readonly disc = adminKubeConfig().makeApiClient(k8s.DiscoveryV1Api);
  readonly pods = new Map<string, { uid: string; ip: string }>();
  readonly dir = mkdtempSync(join(tmpdir(), 'quiclb-op-'));
  readonly kubeconfig = join(this.dir, 'operator.kubeconfig');
  readonly qlbName = 'edge';
  ns = '';
  ca!: TestCa;
  serverTls!: TlsDir;
  clientTls!: TlsDir;
  peer: NetnsPeer | null = null;
  private relay: Server | null = null;
  readonly operators: Proc[] = [];

  /** Cluster objects, certificates and the operator's kubeconfig; pods web-0..2 on POD_IPS; a slice with `inSlice`. */
  async setUp(inSlice: string[]): Promise<void> {
    await kubectlOk(['apply', '--server-side', '-f', CRD_FILE]);
    await kubectlOk(['wait', '--for=condition=Established', 'crd/quicloadbalancers.quiclb.io', '--timeout=60s']);
    if ((await kubectl(['get', 'namespace', 'quiclb-system'])).code !== 0) await kubectlOk(['create', 'namespace', 'quiclb-system']);
    await kubectlOk(['apply', '--server-side', '-f', RBAC_FILE]);
    const tok = await run('bash', [join(repoRoot, 'test/cluster/token.sh'), '--name', cluster().name, '--kubeconfig', this.kubeconfig, 'quiclb-system', 'quiclb-operator']);
    if (tok.code !== 0) throw new Error(`token.sh failed: ${tok.stderr}`);
    this.ns = await createNamespace('op');
    await this.core.createNamespacedServiceAccount({ namespace: this.ns, body: { metadata: { name: 'default' } } }).catch(() => undefined);
    // A label of its own: load balancers left behind by other runs (tier 1 never finishes deleting a namespace) select nothing here.
    await this.core.createNode({ body: { metadata: { name: NODE, labels: { 'quiclb.io/test-node': NODE } } } }).catch(() => undefined);
    for (let i = 0; i < POD_IPS.length; i++) {
      const name = `web-${i}`;
      const pod = await this.core.createNamespacedPod({
        namespace: this.ns,
        body: { metadata: { name, labels: { app: 'web' } }, spec: { automountServiceAccountToken: false, containers: [{ name: 'web', image: 'example.invalid/web:1' }] } },
      });
      this.pods.set(name, { uid: pod.metadata!.uid!, ip: POD_IPS[i] });
    }
    // No selector: the test owns the Service's EndpointSlices (on tier 2 the EndpointSlice controller would add its own).
    await this.core.createNamespacedService({
      namespace: this.ns,
      body: { metadata: { name: 'web' }, spec: { clusterIP: 'None', ports: [{ name: 'quic', port: 443, protocol: 'UDP', targetPort: BACKEND_PORT }] } },
    });
    await this.disc.createNamespacedEndpointSlice({ namespace: this.ns, body: this.slice(inSlice) });
    this.ca = new TestCa();
    this.serverTls = this.ca.issue({ cn: 'quiclb-operator', usage: 'server' });
    this.clientTls = this.ca.issue({ cn: `dataplane-${NODE}`, usage: 'client' });
  }

  /**
   * A ServiceAccount of the operator's own, bound to the operator's ClusterRole rules as `edit` leaves them, and a
   * kubeconfig with its token: an operator run as it meets exactly the refusals the test wants. `grantAll()` binds
   * the whole ClusterRole too; `remove()` deletes what this made (stop the operator first).
   */
  async restrictedOperatorAccount(
    prefix: string,
    edit: (rules: k8s.V1PolicyRule[]) => k8s.V1PolicyRule[],
  ): Promise<{ readonly kubeconfig: string; grantAll(): Promise<void>; remove(): Promise<void> }> {
    const name = `${prefix}-${randomBytes(3).toString('hex')}`;
    const rbac = adminKubeConfig().makeApiClient(k8s.RbacAuthorizationV1Api);
    const rules = (await rbac.readClusterRole({ name: 'quiclb-operator' })).rules ?? [];
    const subjects = [{ kind: 'ServiceAccount', name, namespace: 'quiclb-system' }];
    const binding = (n: string, role: string) => ({ metadata: { name: n }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role }, subjects });
    const remove = async () => {
      for (const n of [name, `${name}-all`]) await rbac.deleteClusterRoleBinding({ name: n }).catch(() => undefined);
      await rbac.deleteClusterRole({ name }).catch(() => undefined);
      await this.core.deleteNamespacedServiceAccount({ namespace: 'quiclb-system', name }).catch(() => undefined);
    };
    await this.core.createNamespacedServiceAccount({ namespace: 'quiclb-system', body: { metadata: { name } } });
    try {
      await rbac.createClusterRole({ body: { metadata: { name }, rules: edit(rules) } });
      await rbac.createClusterRoleBinding({ body: binding(name, name) });
      const kubeconfig = join(this.dir, `${name}.kubeconfig`);
      const tok = await run('bash', [join(repoRoot, 'test/cluster/token.sh'), '--name', cluster().name, '--kubeconfig', kubeconfig, 'quiclb-system', name]);
      if (tok.code !== 0) throw new Error(`token.sh failed: ${tok.stderr}`);
      return { kubeconfig, grantAll: async () => void (await rbac.createClusterRoleBinding({ body: binding(`${name}-all`, 'quiclb-operator') })), remove };
    } catch (e) {
      await remove();
      throw e;
    }
  }

  async tearDown(): Promise<void> {
    if (this.peer) await stop(this.peer.proc);
    await Promise.all(this.operators.map((p) => stop(p)));
    this.relay?.close();
    // Tier 1 has no namespace controller: delete what is left by hand (finalizers first, the operator is gone).
    if (this.ns) {
      const left = (await kubectl(['get', 'qlb', '-n', this.ns, '-o', 'name'])).stdout.split('\n').filter((l) => l !== '');
      for (const q of left) await kubectl(['patch', q, '-n', this.ns, '--type=merge', '-p', '{"metadata":{"finalizers":null}}']);
      await kubectl(['delete', 'qlb', '--all', '-n', this.ns, '--wait=false']);
      await deleteNamespace(this.ns);
    }
    await this.core.deleteNode({ name: NODE }).catch(() => undefined);
    this.ca?.remove();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** The operator's kubeconfig, but dialling the API server at 127.0.0.1:`port` (a TcpRelay; TLS still names the real server). */
  relayedKubeconfig(port: number): string {
    const out = join(this.dir, `operator-${port}.kubeconfig`);
    writeFileSync(out, readFileSync(this.kubeconfig, 'utf8').replace(/server: https:\/\/127\.0\.0\.1:\d+/, `server: https://127.0.0.1:${port}`), { mode: 0o600 });
    return out;
  }

  /** Starts `quiclb operator` under the ServiceAccount's token. */
  startOperator(extra: string[], configListen = '127.0.0.1:0', kubeconfig = this.kubeconfig): Proc {
    // Test pods never mint (no kubelet brings them an annotation): a pod whose server ID changed takes connections at once.
    const p = start(['operator', '--kubeconfig', kubeconfig, '--config-listen', configListen, '--tls-dir', this.serverTls.dir, '--metrics-port', '0', '--log-level', 'debug', '--server-id-propagation', '0s', ...extra]);
    this.operators.push(p);
    return p;
  }

  /** Starts the data plane in its network namespace, dialling the config server at 127.0.0.1:`configPort` through the relay. */
  async startDataPlane(configPort: number, extraArgs: string[] = []): Promise<NetnsPeer> {
    const socketPath = join(this.dir, 'relay.sock');
    this.relay = createServer((conn) => {
      const up = connect(configPort, '127.0.0.1');
      conn.pipe(up).pipe(conn);
      conn.on('error', () => up.destroy());
      up.on('error', () => conn.destroy());
    });
    this.relay.listen(socketPath);
    await once(this.relay, 'listening');
    this.peer = await NetnsPeer.start({
      RELAY_SOCKET: socketPath,
      RELAY_PORT: '9443',
      POD_IPS: POD_IPS.join(','),
      BACKEND_PORT: String(BACKEND_PORT),
      DATAPLANE_ARGS: JSON.stringify(['--tls-dir', this.clientTls.dir, '--node-name', NODE, '--no-metrics', '--report-interval', '1', ...extraArgs]),
    });
    return this.peer;
  }

  async createQlb(spec: Record<string, unknown> = {}, name = this.qlbName): Promise<void> {
    await this.co.createNamespacedCustomObject({
      ...QLB,
      namespace: this.ns,
      body: {
        apiVersion: `${GROUP}/${VERSION}`,
        kind: 'QuicLoadBalancer',
        metadata: { name, namespace: this.ns },
        spec: {
          backend: { serviceName: 'web', port: 443 },
          listen: { ports: [LISTEN_PORT], addresses: ['127.0.0.1'] },
          connectionIds: { serverIdLength: 2, nonceLength: 6 },
          healthCheck: { interval: '1s', timeout: '500ms' },
          nodeSelector: { 'quiclb.io/test-node': NODE },
          ...spec,
        },
      },
    });
  }

  async getQlb(name = this.qlbName): Promise<QlbObject> {
    return (await this.co.getNamespacedCustomObject({ ...QLB, namespace: this.ns, name })) as QlbObject;
  }

  async condition(type: string, name = this.qlbName) {
    return (await this.getQlb(name)).status?.conditions?.find((x) => x.type === type);
  }

  /** The slice with the named pods (ready, or terminating when named in `terminating`) and `extra` pod-less endpoints (addresses only). */
  slice(names: string[], extra: string[] = [], terminating: string[] = []): k8s.V1EndpointSlice {
    return {
      metadata: { name: 'web-slice', namespace: this.ns, labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      ports: [{ name: 'quic', port: BACKEND_PORT, protocol: 'UDP' }],
      endpoints: [
        ...names.map((n) => ({
          addresses: [this.pods.get(n)!.ip],
          conditions: terminating.includes(n) ? { ready: false, serving: true, terminating: true } : { ready: true, serving: true, terminating: false },
          targetRef: { kind: 'Pod', name: n, namespace: this.ns, uid: this.pods.get(n)!.uid },
          nodeName: NODE,
        })),
        ...extra.map((ip) => ({ addresses: [ip], conditions: { ready: true, serving: true, terminating: false }, nodeName: NODE })),
      ],
    };
  }

  async setSlice(names: string[], extra: string[] = [], terminating: string[] = []): Promise<void> {
    const cur = await this.disc.readNamespacedEndpointSlice({ name: 'web-slice', namespace: this.ns });
    const body = this.slice(names, extra, terminating);
    await this.disc.replaceNamespacedEndpointSlice({ name: 'web-slice', namespace: this.ns, body: { ...body, metadata: { ...body.metadata, resourceVersion: cur.metadata!.resourceVersion } } });
  }

  async podIds(): Promise<Record<string, string | undefined>> {
    const out: Record<string, string | undefined> = {};
    for (const n of this.pods.keys()) out[n] = (await this.core.readNamespacedPod({ name: n, namespace: this.ns })).metadata?.annotations?.[SERVER_ID_ANNOTATION];
    return out;
  }

  /** The stored server-ID records: pod UID (or address stand-in) -> ID. */
  async storedIds(name = this.qlbName): Promise<{ assigned: Map<string, string>; released: { pod: string; id: string }[] }> {
    const cm = await this.core.readNamespacedConfigMap({ name: `${name}-quiclb-server-ids`, namespace: this.ns });
    const r = JSON.parse(cm.data!['server-ids.json']) as { assigned: { pod_uid: string; id: string }[]; released: { pod: string; id: string }[] };
    return { assigned: new Map(r.assigned.map((a) => [a.pod_uid, a.id])), released: r.released };
  }

  async activeConfig(): Promise<QuicLbConfig> {
    const s = await this.core.readNamespacedSecret({ name: `${this.qlbName}-quiclb-configs`, namespace: this.ns });
    return decodeBackendSecret(s.data).configs.find((x) => x.state === 'active')!.config;
  }

  /** Sends datagrams minted for `serverId` (with the Secret's active config) until pod `ip` receives one: ms, or -1. */
  async reaches(serverId: string, ip: string, timeoutMs: number, known?: QuicLbConfig): Promise<number> {
    const config = known ?? (await this.activeConfig());
    return this.peer!.send(new CidEncoder(config, Buffer.from(serverId, 'hex')).next(), ip, timeoutMs);
  }
}

export { waitFor };
