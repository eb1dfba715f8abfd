/**
 * Issue 9's user journey on the tier-2 control plane (controller-manager, scheduler, kwok), as a user lives it:
 * `helm install` charts/quiclb (the CRD from the chart, adopted when it already exists), the chart's operator
 * Deployment (two replicas, leader election) and data-plane DaemonSet scheduled on two kwok nodes of the test, whose
 * processes run locally from the pod objects with exactly the chart's credentials (journey-fixture.ts); a backend
 * Deployment + UDP Service and a QuicLoadBalancer; `kubectl scale` 3 -> 6 -> 2 with `kubectl wait --for=condition=Ready`
 * and `kubectl get qlb` after each step; a key rotation by annotation; chaos (the acting operator killed, a data
 * plane SIGKILLed and its pod replaced, the API server restarted). Real QUIC traffic (ngtcp2, a migrating ngtcp2,
 * @matrixai/quic) runs through both data planes and through an ECMP relay alternating between them during every step,
 * in the network world of test/journey/agent.ts, to backends on quic-go (test/journey/quicgo-backend: its own
 * QUIC-LB encoder in Go, reading the Secret and server ID the operator delivered); every transfer must complete intact
 * and the backends' audit must show no connection ID a backend did not issue. The measured times are printed ([journey] lines).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { restartApiServer } from './apiserver-restart.js';
import { kubectlOk, onTier2, waitFor } from './cluster.js';
import { ECMP, Journey, LISTEN_PORT, report } from './journey-fixture.js';
import { Traffic, type Target, type Transfer } from './journey-traffic.js';
import { json } from './operator-fixture.js';

(onTier2() ? describe : describe.skip)('the user journey on the tier-2 cluster', () => {
  const j = new Journey();
  let t0 = 0;
  const all: Transfer[] = [];
  let targets: Target[] = [];

  /** Runs `during` with traffic on every target, then checks every transfer of it completed intact. */
  async function withTraffic<T>(step: string, during: (mark: (event: string) => void, traffic: Traffic) => Promise<T>, spreadMs = 8000, pauseMs = 300): Promise<T> {
    const traffic = new Traffic(j.world!, targets, { spreadMs, maxMs: 60_000, size: 1_000_000, pauseMs }).start();
    const events: string[] = [];
    let value: T;
    try {
      value = await during((e) => events.push(`${e} at ${traffic.now()} ms`), traffic);
    } finally {
      all.push(...(await traffic.stop()));
    }
    // The data planes' config changes during the step, among the events.
    for (const [node, lines] of j.world!.dpLines) {
      for (const l of lines) {
        const m = /"time":(\d+).*"msg":"(snapshot applied|config applied)"/.exec(l);
        if (m && Number(m[1]) >= traffic.t0) events.push(`${node.slice(-1)}: ${m[2]} at ${Number(m[1]) - traffic.t0} ms`);
      }
    }
    process.stderr.write(`[journey] traffic during ${step}: ${Traffic.summary(traffic.results)}${events.length ? `; ${events.join(', ')}` : ''}\n`);
    expect(Traffic.failures(traffic.results)).toEqual([]);
    expect(Traffic.unmigrated(traffic.results)).toEqual([]);
    // Every target carried complete transfers of each kind.
    for (const t of targets) for (const k of ['ngtcp2', 'matrixai']) expect(`${t.name} ${k}: ${traffic.results.filter((r) => r.target === t.name && r.kind === k && r.ok).length > 0}`).toBe(`${t.name} ${k}: true`);
    return value;
  }

  /** Every running backend pod has a server ID, all different. */
  async function expectUniqueIds(n: number): Promise<void> {
    const ids = await j.serverIds();
    expect(ids.size).toBe(n);
    for (const [pod, id] of ids) expect(`${pod}: ${id}`).toMatch(/^[^:]+: [0-9a-f]{4}$/);
    expect(new Set(ids.values()).size).toBe(n);
  }

  beforeAll(async () => {
    t0 = Date.now();
    await j.setUp();
    targets = [
      ...j.nodes.map((n) => ({ name: n.name, host: n.ip, port: LISTEN_PORT })),
      { name: 'ecmp', host: ECMP.ip, port: ECMP.port },
    ];
  }, 240_000); // includes a cold build of the quic-go backend (21 s here; scripts/test.sh builds it before the suites)

  afterAll(async () => {
    await j.tearDown();
  }, 120_000);

  it('helm install: the chart creates (or adopts) the CRD; operators and data planes run with the chart credentials; a QuicLoadBalancer gets Ready', async () => {
    const out = await j.install();
    expect(out).toContain('STATUS: deployed');
    process.stderr.write(`[journey] CRD: ${j.crdMode}\n`);
    const ops = await j.runningPods(j.sysNs, j.operatorSelector(), 2);
    expect(ops).toHaveLength(2);
    for (const p of ops) await j.startOperator(p);
    // Never admin: each operator's kubeconfig is a token of the chart's operator ServiceAccount bound to its pod.
    for (const [pod, o] of j.operators) {
      const who = JSON.parse(await kubectlOk(['auth', 'whoami', '-o', 'json', `--kubeconfig=${o.kubeconfig}`])) as { status: { userInfo: { username: string; extra?: Record<string, string[]> } } };
      expect({ user: who.status.userInfo.username, pod: who.status.userInfo.extra?.['authentication.kubernetes.io/pod-name'] }).toEqual({ user: `system:serviceaccount:${j.sysNs}:${j.full}-operator`, pod: [pod] });
    }
    const leader = await waitFor('an operator leads', () => j.leader(), 30_000);
    const dps = await j.runningPods(j.sysNs, j.dataplaneSelector(), 2);
    expect(dps.map((p) => p.spec!.nodeName).sort()).toEqual(j.nodes.map((n) => n.name).sort());
    for (const p of dps) await j.startDataplane(p);
    await j.world!.ok({ op: 'ecmp', listen: ECMP, targets: j.nodes.map((n) => ({ ip: n.ip, port: LISTEN_PORT })) });
    await j.createApp(3);
    j.startKubelet();
    await j.applyQlb();
    const cols = await j.waitReady('3/3', '2/2', 90_000);
    report('helm install -> QuicLoadBalancer Ready (3 backends, 2 data planes in sync)', Date.now() - t0);
    expect(cols.CONFIG).toMatch(/^[0-6]$/);
    await expectUniqueIds(3);
    // Kubernetes published pod IPs from the nodes' pod CIDRs, which the world routes.
    for (const p of await j.podsOf(j.appNs, 'app=web')) {
      const node = j.nodes.find((n) => n.name === p.spec!.nodeName)!;
      const net24 = (ip: string) => ip.split('.').slice(0, 3).join('.');
      expect({ pod: p.metadata!.name, net: net24(p.status!.podIP!) }).toEqual({ pod: p.metadata!.name, net: net24(node.podCidr) });
    }
    // Only the Lease holder acts; the data planes were admitted with their pod-bound tokens (operator.dataPlaneAuth=token).
    const standby = [...j.operators.keys()].find((n) => n !== leader)!;
    expect(json(j.operators.get(standby)!.proc, 'leading: acting and serving snapshots')).toHaveLength(0);
    expect(json(j.operators.get(leader)!.proc, 'data plane ACKed').length).toBeGreaterThanOrEqual(2);
    await waitFor('3 backends listening', async () => (j.liveBackends().length === 3 ? true : undefined), 20_000);
  }, 180_000);

  it('kubectl scale 3 -> 6 under traffic: Ready, 6/6 backends with unique server IDs, every transfer intact', async () => {
    await withTraffic('scale 3 -> 6', async () => {
      const t = Date.now();
      await j.scale(6);
      await j.waitReady('6/6', '2/2', 60_000);
      report('scale 3 -> 6 -> Ready 6/6', Date.now() - t);
      await waitFor('6 backends listening', async () => (j.liveBackends().length === 6 ? true : undefined), 20_000);
    });
    await expectUniqueIds(6);
  }, 150_000);

  it('kubectl scale 6 -> 2 under traffic: terminating pods keep their connections until drained; then 2/2', async () => {
    await withTraffic('scale 6 -> 2', async () => {
      const t = Date.now();
      await j.scale(2);
      // Scaled-down pods stay Terminating (the drain finalizer stands for their grace period): they keep their server
      // IDs and connections but take no new ones.
      await j.waitReady('2/6', '2/2', 60_000);
      report('scale 6 -> 2 -> Ready 2/6 (4 terminating)', Date.now() - t);
    });
    const t = Date.now();
    expect(await j.finishTerminating()).toHaveLength(4);
    await j.waitReady('2/2', '2/2', 60_000);
    report('terminating pods gone -> Ready 2/2', Date.now() - t);
    await expectUniqueIds(2);
  }, 150_000);

  it('key rotation (annotation quiclb.io/rotate) under traffic: backends follow the new config, every transfer intact', async () => {
    const before = (await j.qlbColumns()).CONFIG;
    await withTraffic('key rotation', async () => {
      const t = Date.now();
      await kubectlOk(['annotate', '--overwrite', `qlb/${j.qlb}`, '-n', j.appNs, `quiclb.io/rotate=journey-${Date.now()}`]);
      const cols = await waitFor('new active config', async () => {
        const c = await j.qlbColumns();
        return c.CONFIG !== before && c.READY === 'True' ? c : undefined;
      }, 30_000);
      report(`rotation: config ${before} -> ${cols.CONFIG} active`, Date.now() - t);
      // The kubelet stand-in delivers the new configs.json to every backend (new connections mint with it).
      await waitFor('every backend has the new active config mounted', async () => (j.liveBackends().every((b) => j.mountedActiveConfig(b) === Number(cols.CONFIG)) ? true : undefined), 10_000);
      await new Promise((r) => setTimeout(r, 2000));
    });
    const t = Date.now();
    await waitFor('rotation Stable (old config retired)', async () => ((await kubectlOk(['get', `qlb/${j.qlb}`, '-n', j.appNs, '-o', 'jsonpath={.status.rotation.phase}'])) === 'Stable' ? true : undefined), 60_000);
    report('rotation: draining -> Stable', Date.now() - t);
    await j.waitReady('2/2', '2/2', 30_000);
  }, 150_000);

  it('chaos under traffic: the acting operator killed, a data plane SIGKILLed and its pod replaced, the API server restarted', async () => {
    await withTraffic(
      'chaos',
      async (mark, traffic) => {
        // 1. The acting operator dies; the standby takes the Lease and serves the data planes.
        const leader = (await j.leader())!;
        const standby = [...j.operators.keys()].find((n) => n !== leader)!;
        const linesBefore = j.operators.get(standby)!.proc.lines.length;
        let t = Date.now();
        mark('operator SIGKILL');
        j.operators.get(leader)!.proc.child.kill('SIGKILL');
        await j.operators.get(leader)!.proc.exit;
        await waitFor('standby leads', async () => ((await j.leader()) === standby ? true : undefined), 20_000, 100);
        report('operator takeover (SIGKILL -> standby holds the Lease)', Date.now() - t);
        await waitFor('data planes ACK the new leader', async () => (json(j.operators.get(standby)!.proc, 'data plane ACKed').length >= 2 && j.operators.get(standby)!.proc.lines.length > linesBefore ? true : undefined), 30_000, 100);
        report('operator takeover: both data planes ACKed the new leader', Date.now() - t);
        mark('new leader ACKed');

        // 2. A data plane is SIGKILLed and its pod replaced (new pod, new pod-bound token); the replacement forwards
        // with the node's saved snapshot at once and ACKs the operator's current one.
        const node = j.nodes[0].name;
        const old = j.dataplanes.get(node)!.pod;
        t = Date.now();
        // gtlsclient runs with a 5 s idle timeout (test/journey/clients.ts), shorter than a replacement takes here
        // (~5 s): its downloads through the node are let finish and paused until the replacement forwards. The
        // @matrixai/quic connections (idle timeout above their request spacing) stay open across the kill: they are
        // the established transfers that must survive it.
        traffic.pause([node, 'ecmp']);
        await traffic.drained([node, 'ecmp'], 15_000);
        mark('data plane SIGKILL');
        await j.killDataplane(node);
        await kubectlOk(['delete', 'pod', old.metadata!.name!, '-n', j.sysNs, '--wait=false']);
        const fresh = await waitFor('replacement data-plane pod', async () => {
          const pods = await j.runningPods(j.sysNs, j.dataplaneSelector(), 1, 5000).catch(() => []);
          return pods.find((p) => p.spec?.nodeName === node && p.metadata!.uid !== old.metadata!.uid);
        }, 30_000);
        report('data plane SIGKILL -> replacement pod running', Date.now() - t);
        const seen = j.world!.dpLines.get(node)?.length ?? 0;
        const acting = j.operators.get(standby)!.proc;
        const acksBefore = json(acting, 'data plane ACKed').length;
        await j.startDataplane(fresh);
        await waitFor('replacement forwards with the saved snapshot', async () => ((j.world!.dpLines.get(node) ?? []).slice(seen).some((l) => l.includes('"forwarding with the saved snapshot"')) ? true : undefined), 30_000, 50);
        report('data plane SIGKILL -> replacement forwarding (saved snapshot)', Date.now() - t);
        mark('replacement forwarding');
        traffic.resume();
        await waitFor('replacement ACKs the operator', async () => (json(acting, 'data plane ACKed').slice(acksBefore).some((l) => String(l.identity).endsWith(`@${node}`)) ? true : undefined), 30_000, 50).catch((e: Error) => {
          throw new Error(`${e.message}\n${(j.world!.dpLines.get(node) ?? []).slice(seen).join('\n')}\n${acting.lines.slice(-20).join('\n')}`);
        });
        report('data plane SIGKILL -> replacement ACKed the operator', Date.now() - t);
        mark('replacement ACKed');
        j.restartOperator(leader); // the kubelet restarts the crashed operator container (same pod): it stands by
        await j.waitReady('2/2', '2/2', 30_000);

        // 3. The API server restarts (same process arguments; the cluster stays healthy for later suites).
        mark('API server restart');
        const r = await restartApiServer({ graceMs: 5000 });
        mark('API server ready');
        report(`kube-apiserver restart (SIGTERM${r.killed ? ', SIGKILL after 5 s' : ''} -> exited ${r.exitedMs} ms -> ready again)`, r.readyMs);
        await j.waitReady('2/2', '2/2', 60_000);
      },
      // The matrixai connections spread their requests over 20 s (they span all three events); the ngtcp2 downloads
      // pause 1.5 s between runs here: the restarts take CPU the 2 cores do not have to spare.
      20_000,
      1500,
    );
    // A change made after all that is applied: scale 2 -> 3.
    const t = Date.now();
    await j.scale(3);
    await j.waitReady('3/3', '2/2', 60_000);
    report('after chaos: scale 2 -> 3 -> Ready 3/3', Date.now() - t);
    await expectUniqueIds(3);
  }, 200_000);

  it('no backend received a connection ID it did not issue; every transfer of the journey was intact', async () => {
    const audit = await j.world!.audit();
    const foreign = Object.entries(audit.backends).filter(([, b]) => b.foreignCids > 0).map(([n, b]) => `${n}: ${b.foreignCids} ${b.examples.join(' ')}`);
    if (foreign.length > 0) process.stderr.write(`[journey] audit: ${JSON.stringify(audit)}\n`);
    expect(foreign).toEqual([]);
    // and the audit vouches for every Initial: none came after a backend's record of unowned DCIDs was full, and no
    // backend forgot a CID it issued (which another backend's Initial could then carry unnoticed)
    expect(Object.entries(audit.backends).filter(([, b]) => b.unsettledInitials !== 0 || b.issuedForgotten !== 0)).toEqual([]);
    // Every backend minted routable CIDs from its first connection on (it listened only once its files were mounted).
    expect([...j.generators].filter(([, g]) => g.activeConfigId === null).map(([n]) => n)).toEqual([]);
    // What the data planes counted (their monitoring port in each node's namespace): packets by routing outcome and
    // drops by reason, printed with the journey's numbers.
    // Both data planes (node a's is the replacement of the chaos step) open their upstream sockets from stable
    // ports, derived from the seed in the chart's state directory: a restart is no path change at the backends.
    const hashedPorts: Record<string, number> = {};
    for (const n of j.nodes) {
      const m = await j.world!.request({ op: 'fetch', node: n.name, url: 'http://127.0.0.1:9190/metrics' });
      const text = String(m.body ?? m.error ?? '');
      const lines = text.split('\n').filter((l) => /^quiclb_(packets_total|dropped_packets_total|unroutable_packets_total|upstream_ports_total)\{/.test(l) && !/ 0$/.test(l));
      process.stderr.write(`[journey] data plane ${n.name} (since its start): ${lines.join('; ')}\n`);
      hashedPorts[n.name] = lines.filter((l) => l.startsWith('quiclb_upstream_ports_total{') && l.includes('choice="hashed"')).reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
    }
    for (const n of j.nodes) expect({ node: n.name, hashed: hashedPorts[n.name] > 0 }).toEqual({ node: n.name, hashed: true });
    const busy = Object.values(audit.backends).filter((b) => b.shortHeader > 0).length;
    process.stderr.write(`[journey] audit: ${Object.keys(audit.backends).length} backends, ${busy} with 1-RTT traffic, 0 foreign CIDs; whole journey: ${Traffic.summary(all)}; ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
    process.stderr.write(`[journey] pod network UDP (kernel): ${JSON.stringify(audit.udp ?? {})}\n`);
    expect(busy).toBeGreaterThanOrEqual(3);
    expect(Traffic.failures(all)).toEqual([]);
  });
});
