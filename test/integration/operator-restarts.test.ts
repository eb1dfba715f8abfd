/**
 * Restarts under established flows (issue 8, "Restarts of the data plane, the operator and the API server"; the
 * operator's own restart and leader change are in operator-ha.test.ts): two connections send a tagged datagram
 * every 20 ms through the netns peer, which counts each as delivered, misrouted or lost.
 * - The kube-apiserver process of the run stopped by PID and started again with the same arguments (as
 *   test/cluster/up.sh started it; same port, certificates and etcd, so later test files see the same cluster, and
 *   its pid files are rewritten for down.sh): every datagram delivered; a change made after it is back is applied.
 * - The `quiclb dataplane` process SIGKILLed and started again with --state-dir against the live operator: it
 *   forwards with the saved snapshot before the operator answers, then ACKs the operator's current version; the
 *   flows resume on the same backends (datagrams sent while no process listened are lost, none misrouted).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CidEncoder } from '../../lib/quiclb/encoder.js';
import type { QuicLbConfig } from '../../lib/quiclb/config.js';
import { restartApiServer } from './apiserver-restart.js';
import { kubectl } from './cluster.js';
import { json, OperatorWorld, POD_IPS, waitFor, type Proc } from './operator-fixture.js';

const INTERVAL_MS = 20;

describe('established flows across restarts of the API server and the data plane', () => {
  const w = new OperatorWorld();
  const stateDir = mkdtempSync(join(tmpdir(), 'quiclb-restarts-state-'));
  let operator: Proc;
  let flows: { dcid: Buffer; ip: string }[];
  let config: QuicLbConfig;

  beforeAll(async () => {
    await w.setUp(['web-0', 'web-1']);
    operator = w.startOperator([]);
    const running = await waitFor('operator running', async () => json(operator, 'operator running')[0], 30_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${operator.lines.join('\n')}`);
    });
    await w.startDataPlane(Number(String(running.configAddress).split(':').pop()), ['--state-dir', stateDir]);
    await w.createQlb({ healthCheck: { enabled: false } });
    const r = await kubectl(['wait', '--for=condition=Ready', `qlb/${w.qlbName}`, '-n', w.ns, '--timeout=60s']);
    if (r.code !== 0) throw new Error(`kubectl wait failed: ${r.stderr}`);
    const ids = await w.podIds();
    config = await w.activeConfig();
    flows = [0, 1].map((i) => ({ dcid: new CidEncoder(config, Buffer.from(ids[`web-${i}`]!, 'hex')).next(), ip: POD_IPS[i] }));
    for (const f of flows) expect(await w.peer!.send(f.dcid, f.ip, 10_000)).toBeGreaterThanOrEqual(0);
  }, 120_000);

  afterAll(async () => {
    await w.tearDown();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('the kube-apiserver process restarted: every datagram delivered, and a change made afterwards is applied', async () => {
    const linesBefore = operator.lines.length;
    const traffic = w.peer!.stream(flows, INTERVAL_MS, 120_000);
    await new Promise((r) => setTimeout(r, 500));
    const { exitedMs, readyMs } = await restartApiServer();
    await new Promise((r) => setTimeout(r, 500));
    const counts = await traffic.stop();
    for (const c of counts) {
      expect(c.sent).toBeGreaterThan(readyMs / INTERVAL_MS / 2);
      expect({ misrouted: c.misrouted, lost: c.lost }).toEqual({ misrouted: 0, lost: 0 });
    }
    expect(operator.child.exitCode).toBeNull();
    // The operator really lost the API server: its watches ended and were started again.
    expect(operator.lines.slice(linesBefore).some((l) => l.includes('watch failed: restarting'))).toBe(true);
    const t1 = Date.now();
    await w.setSlice(['web-0', 'web-1', 'web-2']);
    const id2 = await waitFor('web-2 annotated after the restart', async () => (await w.podIds())['web-2'], 60_000, 100);
    expect(await w.reaches(id2, POD_IPS[2], 15_000)).toBeGreaterThanOrEqual(0);
    const sent = counts.reduce((n, c) => n + c.sent, 0);
    process.stderr.write(`[operator-restarts] kube-apiserver SIGTERM -> exited: ${exitedMs} ms (graceful shutdown), -> restarted and ready: ${readyMs} ms; ${sent} datagrams, 0 lost, 0 misrouted; change after it applied and routed in ${Date.now() - t1} ms\n`);
  }, 180_000);

  it('quiclb dataplane SIGKILLed and restarted with --state-dir: forwards at once, ACKs the current version, flows resume', async () => {
    await waitFor('state file written', async () => (readdirSync(stateDir).length > 0 ? true : undefined), 10_000);
    const acked = json(operator, 'data plane ACKed');
    const current = Math.max(...acked.map((a) => Number(a.version)));
    const dpLinesBefore = w.peer!.dataplaneLines.length;
    const acksBefore = acked.length;

    const across = w.peer!.stream(flows, INTERVAL_MS, 60_000);
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    const goneMs = await w.peer!.restartDataPlane();
    const newLines = () => w.peer!.dataplaneLines.slice(dpLinesBefore).flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
    const restored = await waitFor('forwarding with the saved snapshot', async () => newLines().find((l) => l.msg === 'forwarding with the saved snapshot'), 30_000, 20);
    const forwardingMs = Date.now() - t0;
    const acrossCounts = await across.stop();

    // From here on the restarted process forwards: every datagram reaches its flow's backend.
    const after = w.peer!.stream(flows, INTERVAL_MS, 60_000);
    const ack = await waitFor('ACK of the restarted data plane', async () => json(operator, 'data plane ACKed')[acksBefore], 30_000, 20);
    const ackMs = Date.now() - t0;
    await new Promise((r) => setTimeout(r, 1000));
    const afterCounts = await after.stop();

    expect(Number(restored.version)).toBe(current);
    expect(Number(ack.version)).toBe(current);
    expect(newLines().some((l) => l.msg === 'snapshot rejected; keeping the last good one')).toBe(false);
    for (const c of acrossCounts) expect(c.misrouted).toBe(0);
    for (const c of afterCounts) {
      expect(c.sent).toBeGreaterThan(10);
      expect({ misrouted: c.misrouted, lost: c.lost }).toEqual({ misrouted: 0, lost: 0 });
    }
    const lostAcross = acrossCounts.reduce((n, c) => n + c.lost, 0);
    const sentAcross = acrossCounts.reduce((n, c) => n + c.sent, 0);
    const sentAfter = afterCounts.reduce((n, c) => n + c.sent, 0);
    process.stderr.write(
      `[operator-restarts] dataplane SIGKILL -> new process: ${goneMs} ms; -> forwarding with the saved snapshot (version ${current}): ${forwardingMs} ms; -> operator ACK of version ${current}: ${ackMs} ms; ` +
        `across the restart ${sentAcross} datagrams, ${lostAcross} lost (sent while no process listened), 0 misrouted; after it ${sentAfter}, 0 lost, 0 misrouted\n`,
    );
  }, 120_000);
});
