/**
 * The world of the user journey (journey.test.ts) on the tier-2 cluster: two kwok nodes of the test's own (a label,
 * a taint, a pod CIDR each in 10.244.0.0/16 and an InternalIP in 172.30.0.0/24, so Kubernetes publishes addresses the
 * test owns), charts/quiclb installed with Helm, and the processes kwok does not run: each operator pod's
 * `quiclb operator` and each data-plane pod's `quiclb dataplane`, started by the journey's kubelet stand-in
 * (journey-kubelet.ts) from the pod objects with exactly the credentials the chart gave the pod; the backend pods'
 * HTTP/3 servers at their pod IPs. The data planes, backends and clients live in the network world of
 * test/journey/agent.ts (journey-world.ts): the config channel reaches the host's operator through a Unix socket.
 *
 * Why the nodes are the test's own: the harness's kwok nodes have no pod CIDR (kwok's flag gives every pod an address
 * of one documentation range) and one node IP for all; other suites schedule there. The taint keeps other suites'
 * pods off the journey's nodes (workloads.test.ts expects its pods on kwok-node-*).
 */
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import { dump } from 'js-yaml';
import { repoRoot } from '../helpers/run-cli.js';
import { adminKubeConfig, createNamespace, deleteNamespace, helm, kubectl, kubectlOk, waitFor } from './cluster.js';
import { PodVolumes } from './journey-kubelet.js';
import { World, worldAvailable } from './journey-world.js';
import type { BackendStack } from '../journey/pod-backend.js';
import { start, stop, type Proc } from './operator-fixture.js';
import { freeTcpPort } from '../e2e/peers/dataplane.js';
import { relayServer } from '../journey/lines.js';

const execFileP = promisify(execFile);

export const CHART = join(repoRoot, 'charts', 'quiclb');
export const CRD_NAME = 'quicloadbalancers.quiclb.io';
export const LABEL = 'quiclb.io/journey';
export const BACKEND_PORT = 4433;
export const LISTEN_PORT = 8443;
export const RELAY_PORT = 15000;
export const POD_NETWORK = '10.244.0.0/16';
/** The ECMP relay's address in the pod network: a client's handshake stays on one data plane, its 1-RTT datagrams move between both in runs of 8 (test/journey/ecmp.ts). */
export const ECMP = { ip: '10.244.255.1', port: LISTEN_PORT };
/** Finalizer the backend pods carry so a scaled-down pod stays Terminating (kwok deletes at once) until its process drained. */
export const DRAIN_FINALIZER = 'quiclb.io/journey-drain';
/**
 * The backend images the journey's kubelet knows, and the QUIC stack each runs (test/journey/pod-backend.ts). The
 * journey's Deployment runs quic-go: its clients migrate and cross both data planes (ECMP), and quic-go recovers
 * across such path changes where quiche 0.18 can stall (docs/backends.md item 9). The @matrixai/quic backend with the
 * project's TypeScript generator runs in test/journey/world.test.ts and the e2e suites; its image stays known here so
 * a Deployment can run it (the CIDs stay 20 octets, the length it needs).
 */
export const BACKEND_IMAGES: Record<string, BackendStack> = { 'example.invalid/h3:1': 'matrixai', 'example.invalid/h3-quic-go:1': 'quic-go' };
export const JOURNEY_BACKEND_IMAGE = 'example.invalid/h3-quic-go:1';

/** Builds test/journey/quicgo-backend once per source version (cached outside the repo) and returns the program. */
export async function quicGoBackend(): Promise<string> {
  // within the journey's beforeAll; a cold build took 21 s here (build.sh prints the time), scripts/test.sh builds it
  // before the suites
  const { stdout } = await execFileP('bash', [join(repoRoot, 'test/journey/quicgo-backend/build.sh')], { timeout: 120_000, maxBuffer: 1 << 20 });
  return stdout.trim();
}

export interface JourneyNode {
  name: string;
  ip: string;
  podCidr: string;
}

/** One stopwatch line per measured step, printed as the other suites do. */
export function report(what: string, ms: number): void {
  process.stderr.write(`[journey] ${what}: ${ms} ms\n`);
}

export class Journey {
  readonly run = randomBytes(3).toString('hex');
  readonly release = `jr-${this.run}`;
  readonly full = `${this.release}-quiclb`;
  readonly nodes: JourneyNode[] = [
    { name: `journey-${this.run}-a`, ip: '172.30.0.11', podCidr: '10.244.1.0/24' },
    { name: `journey-${this.run}-b`, ip: '172.30.0.12', podCidr: '10.244.2.0/24' },
  ];
  readonly qlb = 'web';
  readonly dir = mkdtempSync(join(tmpdir(), 'quiclb-journey-'));
  readonly core = adminKubeConfig().makeApiClient(k8s.CoreV1Api);
  readonly apps = adminKubeConfig().makeApiClient(k8s.AppsV1Api);
  readonly coord = adminKubeConfig().makeApiClient(k8s.CoordinationV1Api);
  sysNs = '';
  appNs = '';
  configPort = 0;
  world: World | null = null;
  /** How the CRD came to the release: 'installed' (new), 'adopted' (existed: --take-ownership), or 'own' (already this release's). */
  crdMode: 'installed' | 'adopted' | 'own' = 'installed';
  /** operator pod name -> its process and volumes */
  readonly operators = new Map<string, { proc: Proc; vols: PodVolumes; kubeconfig: string }>();
  /** node name -> the data-plane pod whose process runs in that node's namespace */
  readonly dataplanes = new Map<string, PodVolumes>();
  /** backend pod name -> volumes (kept current by the kubelet loop) and address */
  readonly backends = new Map<string, { vols: PodVolumes; ip: string; terminating: boolean }>();
  readonly kubeletErrors: string[] = [];
  /** backend pods whose volumes are not complete yet */
  private readonly pending = new Map<string, PodVolumes>();
  /** what each backend's generator minted with when it started listening (the agent's answer) */
  readonly generators = new Map<string, { activeConfigId: number | null }>();
  private relay: Server | null = null;
  private kubeletTimer: NodeJS.Timeout | null = null;
  private kubeletBusy: Promise<void> | null = null;
  private nodesCreated = false;

  get dpHost(): string {
    return `${this.full}-operator.${this.sysNs}.svc`;
  }

  hostPath(node: string, path: string): string {
    const d = join(this.dir, 'nodes', node, path.replace(/\//g, '_'));
    mkdirSync(d, { recursive: true, mode: 0o700 });
    return d;
  }

  /** Namespaces, the two kwok nodes, and the network world (the agent's namespaces with the nodes' and pods' routes). */
  async setUp(): Promise<void> {
    this.sysNs = await createNamespace('jsys');
    this.appNs = await createNamespace('japp');
    for (const n of this.nodes) {
      await this.core.createNode({
        body: {
          metadata: {
            name: n.name,
            annotations: { 'kwok.x-k8s.io/node': 'fake', 'node.alpha.kubernetes.io/ttl': '0' },
            labels: { [LABEL]: this.run, 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': 'amd64', 'kubernetes.io/hostname': n.name },
          },
          spec: { podCIDR: n.podCidr, podCIDRs: [n.podCidr], taints: [{ key: LABEL, value: this.run, effect: 'NoSchedule' }] },
          status: {
            addresses: [
              { type: 'InternalIP', address: n.ip },
              { type: 'Hostname', address: n.name },
            ],
            allocatable: { cpu: '32', memory: '256Gi', pods: '110' },
            capacity: { cpu: '32', memory: '256Gi', pods: '110' },
          },
        },
      });
    }
    this.nodesCreated = true;
    await kubectlOk(['wait', '--for=condition=Ready', 'node', '-l', `${LABEL}=${this.run}`, '--timeout=60s'], { timeoutMs: 70_000 });
    // The relay the nodes' data planes reach the config server through (the agent relays 127.0.0.1:RELAY_PORT in each
    // node's namespace to this socket): it stands in for the operator's Service, which only the leader listens behind.
    this.configPort = await freeTcpPort();
    const sock = join(this.dir, 'config.sock');
    this.relay = relayServer(() => connect(this.configPort, '127.0.0.1'));
    this.relay.listen(sock);
    await once(this.relay, 'listening');
    if (!worldAvailable()) throw new Error('the network world test/journey/agent.ts is missing');
    const quicGo = await quicGoBackend();
    this.world = World.start();
    await this.world.ok({ op: 'setup', podCidrRoutes: [POD_NETWORK], nodes: this.nodes.map((n) => ({ name: n.name, ip: n.ip })), configServerSocket: sock, relayPort: RELAY_PORT, quicGoBackend: quicGo }, 60_000);
  }

  /** The chart's values for the journey: everything on the journey's nodes, the operator watching the app namespace, a short Lease. */
  values(): string {
    const onNodes = { nodeSelector: { [LABEL]: this.run }, tolerations: [{ key: LABEL, operator: 'Exists', effect: 'NoSchedule' }] };
    const file = join(this.dir, 'values.yaml');
    writeFileSync(
      file,
      dump({
        crds: { enabled: true },
        operator: { ...onNodes, watchNamespace: this.appNs, leaderElection: { leaseDuration: 4, renewDeadline: 3, retryPeriod: 1 } },
        dataplane: { nodeSelector: onNodes.nodeSelector, reportInterval: 1 },
      }),
    );
    return file;
  }

  /**
   * `helm install` with the CRD from the chart. Other suites apply the same CRD with kubectl into this cluster, and
   * another release may have installed it: a user then adopts the existing CRD into the release (Helm >= 3.17:
   * --take-ownership; with Helm 4's server-side apply also --force-conflicts for the fields kubectl's field manager
   * owns). The CRD is never deleted (the chart keeps it on uninstall).
   */
  async install(): Promise<string> {
    const crd = await kubectl(['get', 'crd', CRD_NAME, '-o', 'jsonpath={.metadata.annotations.meta\\.helm\\.sh/release-name}/{.metadata.annotations.meta\\.helm\\.sh/release-namespace}']);
    const args = ['install', this.release, CHART, '--namespace', this.sysNs, '-f', this.values(), '--timeout', '90s'];
    if (crd.code === 0) {
      if (crd.stdout === `${this.release}/${this.sysNs}`) this.crdMode = 'own';
      else {
        this.crdMode = 'adopted';
        args.push('--take-ownership', '--force-conflicts');
      }
    }
    const r = await helm(args, { timeoutMs: 120_000 });
    if (r.code !== 0) throw new Error(`helm install failed (${r.code}): ${r.stderr}\n${r.stdout}`);
    await kubectlOk(['wait', '--for=condition=Established', `crd/${CRD_NAME}`, '--timeout=60s'], { timeoutMs: 70_000 });
    return r.stdout;
  }

  async podsOf(namespace: string, selector: string): Promise<k8s.V1Pod[]> {
    return (await this.core.listNamespacedPod({ namespace, labelSelector: selector })).items;
  }

  /** Running pods of the selector (kwok ran them), at least `count`, waited for. */
  async runningPods(namespace: string, selector: string, count: number, timeoutMs = 60_000): Promise<k8s.V1Pod[]> {
    return waitFor(
      `${count} running pods ${selector}`,
      async () => {
        const pods = (await this.podsOf(namespace, selector)).filter((p) => p.status?.phase === 'Running' && !p.metadata?.deletionTimestamp && p.spec?.nodeName);
        return pods.length >= count ? pods : undefined;
      },
      timeoutMs,
    );
  }

  operatorSelector(): string {
    return `app.kubernetes.io/instance=${this.release},app.kubernetes.io/component=operator`;
  }

  dataplaneSelector(): string {
    return `app.kubernetes.io/instance=${this.release},app.kubernetes.io/component=dataplane`;
  }

  /**
   * Starts the operator container of `pod` as a local process: the container's args with the mounts' local
   * directories, the config server on 127.0.0.1:configPort (both replicas: only the leader listens, as behind the
   * Service) and the metrics server on any free port (they share the host's network), and a kubeconfig holding only a
   * token of the pod's ServiceAccount bound to the pod (what in-cluster configuration reads from the mounted token).
   */
  async startOperator(pod: k8s.V1Pod): Promise<Proc> {
    const vols = new PodVolumes(pod, join(this.dir, 'pods'), (p) => this.hostPath(pod.spec!.nodeName!, p));
    await vols.refresh(false);
    const { args, env } = vols.process();
    const local = args.map((a) => (a.startsWith('--config-listen=') ? `--config-listen=127.0.0.1:${this.configPort}` : a.startsWith('--metrics-port=') ? '--metrics-port=0' : a));
    const kubeconfig = await vols.serviceAccountKubeconfig(join(this.dir, `${pod.metadata!.name}.kubeconfig`));
    if (local[0] !== 'operator') throw new Error(`operator container args start with ${local[0]}`);
    const proc = start([...local, `--kubeconfig=${kubeconfig}`], env);
    this.operators.set(pod.metadata!.name!, { proc, vols, kubeconfig });
    return proc;
  }

  /** Restarts the operator container of a pod (the kubelet restarting a crashed container: same pod, same token). */
  restartOperator(podName: string): Proc {
    const o = this.operators.get(podName)!;
    const { args, env } = o.vols.process();
    const local = args.map((a) => (a.startsWith('--config-listen=') ? `--config-listen=127.0.0.1:${this.configPort}` : a.startsWith('--metrics-port=') ? '--metrics-port=0' : a));
    o.proc = start([...local, `--kubeconfig=${join(this.dir, `${podName}.kubeconfig`)}`], env);
    return o.proc;
  }

  /** The pod name of the operator holding the Lease (holder identity: POD_NAME-<random>). */
  async leader(): Promise<string | undefined> {
    const lease = await this.coord.readNamespacedLease({ name: `${this.full}-operator`, namespace: this.sysNs }).catch(() => null);
    const holder = lease?.spec?.holderIdentity;
    if (!holder) return undefined;
    return [...this.operators.keys()].find((p) => holder.startsWith(`${p}-`));
  }

  /**
   * Starts the data-plane container of `pod` in its node's namespace of the world: the container's args with local
   * mounts (the chart's client certificate Secret, the pod-bound projected token of audience quiclb-operator, the
   * node's hostPath state directory), --operator pointing at the node-local relay to the config server, the Service's
   * DNS name kept as the TLS server name the operator's certificate must carry.
   */
  async startDataplane(pod: k8s.V1Pod): Promise<void> {
    const node = pod.spec!.nodeName!;
    const vols = new PodVolumes(pod, join(this.dir, 'pods'), (p) => this.hostPath(node, p));
    await vols.refresh(false);
    const { args, env } = vols.process();
    const local: string[] = [];
    for (const a of args) {
      const m = /^--operator=(.+):(\d+)$/.exec(a);
      if (m) local.push(`--operator=127.0.0.1:${RELAY_PORT}`, `--server-name=${m[1]}`);
      else local.push(a);
    }
    if (local[0] !== 'dataplane') throw new Error(`data-plane container args start with ${local[0]}`);
    this.dataplanes.set(node, vols);
    await this.world!.ok({ op: 'dataplane', node, args: local.slice(1), env });
  }

  /** SIGKILLs the data plane of `node`; resolves with the agent's answer (exit status). */
  async killDataplane(node: string): Promise<Record<string, unknown>> {
    return this.world!.ok({ op: 'killDataplane', node, signal: 'SIGKILL' });
  }

  // ---------------------------------------------------------------------------------------------------- the app

  async createApp(replicas: number): Promise<void> {
    const labels = { app: 'web' };
    await this.apps.createNamespacedDeployment({
      namespace: this.appNs,
      body: {
        metadata: { name: 'web' },
        spec: {
          replicas,
          selector: { matchLabels: labels },
          template: {
            metadata: { labels, finalizers: [DRAIN_FINALIZER] },
            spec: {
              automountServiceAccountToken: false,
              nodeSelector: { [LABEL]: this.run },
              tolerations: [{ key: LABEL, operator: 'Exists', effect: 'NoSchedule' }],
              containers: [
                {
                  name: 'h3',
                  image: JOURNEY_BACKEND_IMAGE,
                  ports: [{ name: 'quic', containerPort: BACKEND_PORT, protocol: 'UDP' }],
                  volumeMounts: [{ name: 'quiclb', mountPath: '/etc/quiclb', readOnly: true }],
                },
              ],
              // docs/backends.md "Pod spec": the configs Secret and the server-ID annotation in one projected volume.
              volumes: [
                {
                  name: 'quiclb',
                  projected: {
                    defaultMode: 0o440,
                    sources: [
                      { secret: { name: `${this.qlb}-quiclb-configs`, optional: true, items: [{ key: 'configs.json', path: 'configs.json' }] } },
                      { downwardAPI: { items: [{ path: 'server-id', fieldRef: { fieldPath: "metadata.annotations['quiclb.io/server-id']" } }] } },
                    ],
                  },
                },
              ],
            },
          },
        },
      },
    });
    await this.core.createNamespacedService({
      namespace: this.appNs,
      body: { metadata: { name: 'web' }, spec: { selector: labels, ports: [{ name: 'quic', port: 443, targetPort: BACKEND_PORT, protocol: 'UDP' }] } },
    });
  }

  async applyQlb(): Promise<void> {
    const qlb = {
      apiVersion: 'quiclb.io/v1alpha1',
      kind: 'QuicLoadBalancer',
      metadata: { name: this.qlb, namespace: this.appNs },
      spec: {
        backend: { serviceName: 'web', port: 443 },
        listen: { ports: [LISTEN_PORT] },
        nodeSelector: { [LABEL]: this.run },
        // 20-octet CIDs (1 + 2 + 17), the longest QUIC allows: what @matrixai/quic (the other backend image) needs.
        connectionIds: { serverIdLength: 2, nonceLength: 17, serverIdQuarantine: '1m' },
        rotation: { drainPeriod: '30s', quietPeriod: '3s' },
        healthCheck: { interval: '1s', timeout: '500ms' },
      },
    };
    await kubectlOk(['apply', '-f', '-'], { input: JSON.stringify(qlb) });
  }

  /** `kubectl get qlb NAME` (printer columns) as header -> value. */
  async qlbColumns(): Promise<Record<string, string>> {
    const out = await kubectlOk(['get', 'qlb', this.qlb, '-n', this.appNs]);
    const [head, row] = out.trim().split('\n');
    const keys = head.trim().split(/\s+/);
    const vals = row.trim().split(/\s+/);
    return Object.fromEntries(keys.map((k, i) => [k, vals[i]]));
  }

  /** `kubectl wait --for=condition=Ready`, then polls until `kubectl get qlb` shows the counts. */
  async waitReady(backends: string, dataplanes: string, timeoutMs = 60_000): Promise<Record<string, string>> {
    const deadline = Date.now() + timeoutMs;
    const r = await kubectl(['wait', '--for=condition=Ready', `qlb/${this.qlb}`, '-n', this.appNs, `--timeout=${Math.ceil(timeoutMs / 1000)}s`], { timeoutMs: timeoutMs + 10_000 });
    if (r.code !== 0) throw new Error(`kubectl wait failed: ${r.stderr}\n${await this.diagnostics()}`);
    return waitFor(
      `kubectl get qlb: BACKENDS ${backends}, DATAPLANES ${dataplanes}`,
      async () => {
        const c = await this.qlbColumns();
        return c.READY === 'True' && c.BACKENDS === backends && c.DATAPLANES === dataplanes ? c : undefined;
      },
      Math.max(1000, deadline - Date.now()),
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}\n${await this.diagnostics()}`);
    });
  }

  async diagnostics(): Promise<string> {
    const q = await kubectl(['get', 'qlb', this.qlb, '-n', this.appNs, '-o', 'yaml']);
    const pods = await kubectl(['get', 'pods', '-A', '-o', 'wide', '-l', 'app=web']);
    const ops = [...this.operators.entries()].map(([n, o]) => `--- operator ${n}\n${o.proc.lines.slice(-15).join('\n')}`).join('\n');
    const dps = [...(this.world?.dpLines.entries() ?? [])].map(([n, l]) => `--- dataplane ${n}\n${l.slice(-10).join('\n')}`).join('\n');
    return `${q.stdout}\n${pods.stdout}\n${ops}\n${dps}\nkubelet errors: ${this.kubeletErrors.slice(-5).join('\n')}`;
  }

  /** Server-ID annotation of every running, not terminating backend pod. */
  async serverIds(): Promise<Map<string, string | undefined>> {
    const pods = (await this.podsOf(this.appNs, 'app=web')).filter((p) => !p.metadata?.deletionTimestamp);
    return new Map(pods.map((p) => [p.metadata!.name!, p.metadata?.annotations?.['quiclb.io/server-id']]));
  }

  // ------------------------------------------------------------------------------------------- backend kubelet

  /** Keeps the backend pods' processes and volumes in step with the API every 300 ms until stopKubelet(). */
  startKubelet(): void {
    const tick = () => {
      this.kubeletBusy = this.syncBackends()
        .catch((e: Error) => {
          this.kubeletErrors.push(`${new Date().toISOString()} ${e.message}`);
          if (this.kubeletErrors.length > 100) this.kubeletErrors.splice(0, 50);
        })
        .finally(() => {
          this.kubeletBusy = null;
          if (this.kubeletTimer) this.kubeletTimer = setTimeout(tick, 300);
        });
    };
    this.kubeletTimer = setTimeout(tick, 0);
  }

  async stopKubelet(): Promise<void> {
    if (this.kubeletTimer) clearTimeout(this.kubeletTimer);
    this.kubeletTimer = null;
    await this.kubeletBusy;
  }

  private async syncBackends(): Promise<void> {
    const pods = await this.podsOf(this.appNs, 'app=web');
    for (const pod of pods) {
      const name = pod.metadata!.name!;
      const known = this.backends.get(name);
      if (known) {
        known.vols.pod = pod;
        known.terminating = Boolean(pod.metadata?.deletionTimestamp);
        await known.vols.refresh(false);
        continue;
      }
      if (pod.status?.phase !== 'Running' || !pod.status.podIP || pod.metadata?.deletionTimestamp) continue;
      let vols = this.pending.get(name);
      if (!vols) {
        vols = new PodVolumes(pod, join(this.dir, 'pods'), (p) => this.hostPath(pod.spec!.nodeName!, p));
        this.pending.set(name, vols);
      }
      vols.pod = pod;
      await vols.refresh(false);
      // The backend serves once it can mint routable CIDs (its server ID and the configs are mounted), as a backend
      // whose readiness probe checks its generator would (kwok marks pods Ready at once): a connection it accepted
      // with 0b111 CIDs would not survive a path change (draft-21 §3.2).
      const dir = vols.dirs.get('quiclb')!;
      if (!mountedFile(join(dir, 'server-id')) || !mountedFile(join(dir, 'configs.json'))) continue;
      const image = pod.spec?.containers[0]?.image ?? '';
      const stack = Object.hasOwn(BACKEND_IMAGES, image) ? BACKEND_IMAGES[image] : undefined;
      if (stack === undefined) throw new Error(`pod ${name}: the journey's kubelet cannot run image ${JSON.stringify(image)} (it knows ${Object.keys(BACKEND_IMAGES).join(', ')})`);
      this.pending.delete(name);
      const ip = pod.status.podIP;
      this.backends.set(name, { vols, ip, terminating: false });
      let r: Record<string, unknown>;
      try {
        r = await this.world!.ok({ op: 'backend', name, ip, port: BACKEND_PORT, dir, stack });
      } catch (e) {
        this.backends.delete(name); // not running: the next pass starts it again
        throw e;
      }
      this.generators.set(name, r.generator as { activeConfigId: number | null });
    }
  }

  /** The config id the backend's mounted configs.json marks active (what its generator mints with). */
  mountedActiveConfig(pod: string): number | undefined {
    const dir = this.backends.get(pod)?.vols.dirs.get('quiclb');
    if (!dir) return undefined;
    const state = JSON.parse(readFileSync(join(dir, 'configs.json'), 'utf8')) as { configs: { config_id: number; state: string }[] };
    return state.configs.find((c) => c.state === 'active')?.config_id;
  }

  /** Running backends (not terminating), by pod name. */
  liveBackends(): string[] {
    return [...this.backends.entries()].filter(([, b]) => !b.terminating).map(([n]) => n);
  }

  /** The terminating backends' processes have drained: stop them and let their pods go (remove the drain finalizer). */
  async finishTerminating(): Promise<string[]> {
    await this.stopKubelet();
    const gone: string[] = [];
    for (const pod of await this.podsOf(this.appNs, 'app=web')) {
      if (!pod.metadata?.deletionTimestamp) continue;
      const name = pod.metadata.name!;
      if (this.backends.has(name)) await this.world!.ok({ op: 'stopBackend', name });
      this.backends.delete(name);
      await this.dropFinalizer(name);
      gone.push(name);
    }
    this.startKubelet();
    return gone;
  }

  private async dropFinalizer(pod: string): Promise<void> {
    await kubectl(['patch', 'pod', pod, '-n', this.appNs, '--type=json', '-p', JSON.stringify([{ op: 'remove', path: '/metadata/finalizers' }])]);
  }

  async scale(replicas: number): Promise<void> {
    await kubectlOk(['scale', 'deployment/web', '-n', this.appNs, `--replicas=${replicas}`]);
  }

  // ---------------------------------------------------------------------------------------------------- cleanup

  /** Undoes everything, each step on its own (a failing step never skips the next), every wait bounded. */
  async tearDown(): Promise<void> {
    const step = async (what: string, f: () => Promise<unknown>) => {
      try {
        await f();
      } catch (e) {
        process.stderr.write(`[journey] cleanup: ${what}: ${(e as Error).message}\n`);
      }
    };
    await step('kubelet', () => this.stopKubelet());
    if (this.appNs) {
      // The operators (still running) remove their annotations and the finalizer; otherwise strip it.
      await step('qlb', async () => {
        await kubectl(['delete', 'qlb', '--all', '-n', this.appNs, '--wait=true', '--timeout=15s'], { timeoutMs: 20_000 });
        for (const q of (await kubectl(['get', 'qlb', '-n', this.appNs, '-o', 'name'])).stdout.split('\n').filter(Boolean)) {
          await kubectl(['patch', q, '-n', this.appNs, '--type=merge', '-p', '{"metadata":{"finalizers":null}}']);
        }
      });
    }
    await step('world', async () => this.world?.shutdown());
    await step('operators', () => Promise.all([...this.operators.values()].map((o) => stop(o.proc))));
    this.relay?.close();
    if (this.sysNs) await step('helm uninstall', () => helm(['uninstall', this.release, '-n', this.sysNs, '--timeout', '60s'], { timeoutMs: 90_000 }));
    if (this.appNs) {
      await step('app pods', async () => {
        await kubectl(['scale', 'deployment/web', '-n', this.appNs, '--replicas=0']);
        for (const p of await this.podsOf(this.appNs, 'app=web')) await this.dropFinalizer(p.metadata!.name!);
      });
      await step('app namespace', () => deleteNamespace(this.appNs));
    }
    if (this.sysNs) await step('system namespace', () => deleteNamespace(this.sysNs));
    if (this.nodesCreated) {
      // Pods of the namespaces go first (kwok deletes them while it manages their node), then the nodes.
      await step('pods gone', () =>
        waitFor(
          'pods of the journey gone',
          async () => {
            const left: k8s.V1Pod[] = [];
            for (const n of this.nodes) left.push(...(await this.core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${n.name}` })).items);
            for (const p of left) if (p.metadata?.finalizers?.includes(DRAIN_FINALIZER)) await this.dropFinalizer(p.metadata.name!);
            return left.length === 0 ? true : undefined;
          },
          20_000,
          500,
        ),
      );
      for (const n of this.nodes) await step(`node ${n.name}`, () => this.core.deleteNode({ name: n.name }));
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A mounted file with content (an empty server-id file means the annotation is not there yet). */
function mountedFile(path: string): boolean {
  try {
    return readFileSync(path).length > 0;
  } catch {
    return false;
  }
}

