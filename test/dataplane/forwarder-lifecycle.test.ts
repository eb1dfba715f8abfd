/** Data-plane lifecycle and accounting: reloads that remove servers, refused sends, health-check restarts, worker races. */
import { describe, expect, it, beforeAll, afterAll } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { repoRoot } from '../helpers/run-cli.js';
import { CidEncoder } from '../../lib/index.js';
import { HealthChecker } from '../../dataplane/health.js';
import { silentLogger } from '../../dataplane/logging.js';
import { Client, config, server, shortPacket, sleep, snapshot, TaggingBackend, waitFor, Opened } from './helpers.js';
import type { DataplaneSnapshot } from '../../lib/config/snapshot.js';

let backends: TaggingBackend[];
let v6backend: TaggingBackend;
const opened = new Opened();
const client = (host?: string): Promise<Client> => opened.client(host);
const start = (snap: DataplaneSnapshot) => opened.dataplane(snap);
const servers = () => [
  server('a', '0001', '127.0.0.1', backends[0].port),
  server('b', '0002', '127.0.0.1', backends[1].port),
  server('c', '0003', '127.0.0.1', backends[2].port),
];
const cidFor = (sid: string) => new CidEncoder(config(0), Buffer.from(sid, 'hex')).next();

beforeAll(async () => {
  backends = await Promise.all(['a', 'b', 'c'].map((n) => opened.backend(n)));
  v6backend = await opened.backend('v6', '::1');
});
afterAll(() => opened.closeAll());

describe('data plane lifecycle and accounting', () => {
  it('a server removed by a reload loses its upstream sockets at once: nothing it sends reaches clients any more', async () => {
    const { dp, port } = await start(snapshot(servers()));
    const c = await client();
    expect(await c.request(shortPacket(cidFor('0002')), port)).toBe('b');
    const bUpstreamPort = backends[1].received.at(-1)!.port;
    expect(dp.stats().upstreamSockets).toBe(1);

    await dp.apply(snapshot(servers().filter((s) => s.name !== 'b')));
    // The client keeps talking (its CID for b no longer routes: fallback to a or c): a new upstream socket.
    const now = await c.request(shortPacket(cidFor('0002')), port);
    expect(now).not.toBeNull();
    expect(now).not.toBe('b');
    // The upstream socket to the removed server b is closed (it would otherwise live as long as the flow).
    expect(dp.stats().upstreamSockets).toBe(1);
    // ... and what b (no longer in the config) sends to it is not relayed to the client.
    const before = c.replies.length;
    backends[1].socket.send(Buffer.from('b|from-removed-server'), bUpstreamPort, '127.0.0.1');
    await sleep(200);
    expect(c.replies.slice(before)).not.toContain('b|from-removed-server');
  });

  it('a datagram the kernel refuses to send (EMSGSIZE: IPv6 client, IPv4 server) is counted as a send error', async () => {
    const snap = snapshot(servers(), {
      listen: [
        { host: '127.0.0.1', port: 0, family: 4 },
        { host: '::1', port: 0, family: 6 },
      ],
    });
    const { dp, port6 } = await start(snap);
    const c = await client('::1');
    // Prime the flow's upstream socket (connected) with a normal datagram.
    expect(await c.request(shortPacket(cidFor('0001')), port6!, '::1')).toBe('a');
    const aBefore = backends[0].received.length;
    // 65520 octets fit an IPv6 UDP datagram (max 65527) but not an IPv4 one (max 65507).
    c.send(shortPacket(cidFor('0001'), { size: 65520 }), port6!, '::1');
    expect(await waitFor(() => dp.stats().received === 2)).toBe(true);
    await sleep(200);
    expect(backends[0].received.length).toBe(aBefore); // never delivered
    const st = dp.stats();
    // Every received datagram must end up either delivered, dropped (counted) or as a send error (counted).
    const accountedFailures = st.sendErrors.upstream + Object.values(st.dropped).reduce((x, y) => x + (y ?? 0), 0);
    expect(accountedFailures).toBe(1);
  });

  it('health checks disabled and re-enabled start counting failures afresh', async () => {
    const b = backends[2];
    b.answerProbes = false;
    const on = { enabled: true, intervalMs: 60, timeoutMs: 30, failuresThreshold: 3, successesThreshold: 2 };
    const hc = new HealthChecker(on, silentLogger);
    const target = [{ name: 'c', address: { host: '127.0.0.1', port: b.port, family: 4 as const } }];
    const changes: string[] = [];
    hc.on('change', (ch) => changes.push(ch.state));
    try {
      hc.update(target, on);
      hc.start();
      const t = () => hc.targetStates()[0];
      expect(await waitFor(() => t().checks.failure >= 2, 3000, 1)).toBe(true);
      expect(t().state).toBe('unknown'); // 2 < 3 failures
      hc.update(target, { ...on, enabled: false }); // operator turns probing off ...
      hc.update(target, on); // ... and on again: the server starts over ('unknown', nothing counted yet)
      const base = t().checks.failure;
      expect(await waitFor(() => t().checks.failure >= base + 1, 3000, 1)).toBe(true);
      // One failure after re-enabling must not be "3 consecutive failures".
      expect(t().state).toBe('unknown');
    } finally {
      await hc.stop();
      b.answerProbes = true;
    }
  });

  it('worker pool: a worker starting during a reload catches up with the new snapshot and with health changes; a slow worker does not make the summed counters go down', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/dataplane/worker-pool-races.script.ts'], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as {
      f3: { expected: number; versions: number[] };
      f3b: { aHealthyPerWorker: number[] };
      f4: { totals: number[] };
    };
    expect(out.f3.versions).toEqual([out.f3.expected, out.f3.expected]);
    expect(out.f3b.aHealthyPerWorker).toEqual([0, 0]);
    expect(out.f4.totals[1]).toBe(out.f4.totals[0]);
  }, 90_000);

  it('a server configured with a non-canonical IPv6 literal (0:0:0:0:0:0:0:1 for ::1) passes its health probes', async () => {
    const host = '0:0:0:0:0:0:0:1'; // the same address as ::1, as an operator may write it ("[0:0:0:0:0:0:0:1]:4433", "[FD00::1]:443", ...)
    const settings = { enabled: true, intervalMs: 50, timeoutMs: 40, failuresThreshold: 2, successesThreshold: 1 };
    const hc = new HealthChecker(settings, silentLogger);
    try {
      hc.update([{ name: 'v6', address: { host, port: v6backend.port, family: 6 } }], settings);
      hc.start();
      const t = () => hc.targetStates()[0];
      expect(await waitFor(() => t().checks.success + t().checks.failure >= 3, 3000, 5)).toBe(true);
      expect(v6backend.probes).toBeGreaterThan(0); // the backend answered every probe
      expect(t().state).toBe('healthy');
    } finally {
      await hc.stop();
    }
  });
});
