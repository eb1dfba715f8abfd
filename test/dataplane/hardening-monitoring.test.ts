/**
 * Issue 10, item 4: the monitoring server must not reach forwarding. Loopback by default, a connection cap,
 * slowloris connections closed within seconds, and a bounded number of metrics collections under a tight loop.
 */
import { afterEach, describe, expect, it } from '@jest/globals';
import { connect, type Socket } from 'node:net';
import { parseStandaloneConfig } from '../../lib/config/standalone.js';
import { silentLogger } from '../../dataplane/logging.js';
import { MonitoringServer, type MonitoringOptions } from '../../lib/monitoring.js';
import { KEY_B64, sleep, waitFor } from './helpers.js';

let server: MonitoringServer | null = null;
afterEach(async () => {
  await server?.close();
  server = null;
});

async function startServer(extra: Partial<MonitoringOptions>, collect: () => void = () => {}): Promise<number> {
  server = new MonitoringServer({
    metrics: async () => {
      collect();
      return { contentType: 'text/plain', body: 'quiclb_x 1\n' };
    },
    readiness: () => ({ ready: true, detail: [] }),
    logger: silentLogger,
    ...extra,
  } as MonitoringOptions);
  return (await server.listen(0, '127.0.0.1')).port;
}

describe('monitoring isolation (issue 10 item 4)', () => {
  it('listens on 127.0.0.1 unless monitoring.address says otherwise', () => {
    const c = parseStandaloneConfig(`loadbalancer: { server_id_length: 2, nonce_length: 6, encryption_key: "${KEY_B64}" }\nservers: []\n`);
    expect(c.monitoring).toEqual({ port: 9090, address: '127.0.0.1' });
  });

  it('caps connections and closes slowloris connections (a partial request line, then silence) within seconds', async () => {
    const port = await startServer({ maxConnections: 16, headersTimeoutMs: 500, requestTimeoutMs: 1000 });
    const sockets: Socket[] = [];
    let closed = 0;
    for (let i = 0; i < 200; i++) {
      const s = connect(port, '127.0.0.1');
      s.on('error', () => {});
      s.on('close', () => closed++);
      s.on('connect', () => s.write('GET /metrics HTTP/1.1\r\nHost: x\r\n'));
      sockets.push(s);
    }
    await sleep(300);
    expect(await server!.connections()).toBeLessThanOrEqual(16);
    const all = await waitFor(() => closed === 200, 4000);
    expect({ closed, all }).toEqual({ closed: 200, all: true });
    const r = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(r.status).toBe(200);
    for (const s of sockets) s.destroy();
  });

  it('collects metrics a few times per second at most under a tight /metrics loop, never serving values from before a scrape', async () => {
    let n = 0;
    const port = await startServer({}, () => n++);
    const t0 = Date.now();
    let scrapes = 0;
    while (Date.now() - t0 < 1000) {
      await Promise.all(Array.from({ length: 4 }, () => fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text())));
      scrapes += 4;
    }
    expect(scrapes).toBeGreaterThan(10);
    expect(n).toBeLessThanOrEqual(6); // one per 250 ms
    // A scrape after a pause collects anew.
    await sleep(300);
    const before = n;
    await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text());
    expect(n).toBe(before + 1);
  });
});
