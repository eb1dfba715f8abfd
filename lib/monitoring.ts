/**
 * The monitoring HTTP server of every quiclb process (standalone and node data planes, the operator, the config
 * server): /metrics (Prometheus text), /healthz (process alive), /readyz (the caller's readiness).
 *
 * It shares the process (in single-process mode, the event loop) and the descriptor budget with forwarding, so
 * what a peer can make it cost is bounded: a connection cap, short header/request/idle timeouts (slowloris
 * connections are closed within seconds, not minutes), and at most one metrics collection per
 * `metricsMinIntervalMs`: a scrape waits for the next collection, which every scrape waiting then shares, so a
 * tight /metrics loop costs a few collections per second, and a scrape never gets values from before it arrived
 * (except when it joins a collection already running).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** What the server logs through (a pino logger fits). */
export interface MonitoringLogger {
  warn(fields: object, msg: string): void;
}

export interface Readiness {
  ready: boolean;
  /** One line per check, shown in the body. */
  detail: string[];
}

export interface MonitoringOptions {
  metrics: () => Promise<{ contentType: string; body: string }>;
  readiness: () => Readiness;
  logger: MonitoringLogger;
  /** Concurrent connections; more are closed at once (default 32). */
  maxConnections?: number;
  /** Time to receive a request's headers, from the connection's start or the previous response (default 5 s). */
  headersTimeoutMs?: number;
  /** Time to receive a whole request (default 10 s); also the idle timeout of a connection without a request. */
  requestTimeoutMs?: number;
  /** Keep-alive time between requests (default 5 s). */
  keepAliveTimeoutMs?: number;
  /** Least time between two metrics collections (default 250 ms; 0 = no spacing, concurrent scrapes still share one). */
  metricsMinIntervalMs?: number;
}

export const MONITORING_DEFAULTS = {
  maxConnections: 32,
  headersTimeoutMs: 5000,
  requestTimeoutMs: 10_000,
  keepAliveTimeoutMs: 5000,
  metricsMinIntervalMs: 250,
} as const;

export class MonitoringServer {
  private server: Server | null = null;
  private lastCollectionEnd = 0;
  private next: Promise<{ contentType: string; body: string }> | null = null;
  /** Metrics collections run so far. */
  collections = 0;

  constructor(private readonly options: MonitoringOptions) {}

  /** The next metrics collection (at least metricsMinIntervalMs after the previous one ended), shared by every scrape waiting for it. */
  private scrape(): Promise<{ contentType: string; body: string }> {
    if (this.next !== null) return this.next;
    const min = this.options.metricsMinIntervalMs ?? MONITORING_DEFAULTS.metricsMinIntervalMs;
    const wait = this.lastCollectionEnd + min - Date.now();
    const p = (wait > 0 ? new Promise<void>((r) => setTimeout(r, wait)) : Promise.resolve())
      .then(() => {
        this.collections++;
        return this.options.metrics();
      })
      .finally(() => {
        this.lastCollectionEnd = Date.now();
        this.next = null;
      });
    this.next = p;
    return p;
  }

  async listen(port: number, host: string): Promise<AddressInfo> {
    const o = this.options;
    const headersTimeout = o.headersTimeoutMs ?? MONITORING_DEFAULTS.headersTimeoutMs;
    const requestTimeout = Math.max(headersTimeout, o.requestTimeoutMs ?? MONITORING_DEFAULTS.requestTimeoutMs);
    const server = createServer(
      {
        headersTimeout,
        requestTimeout,
        keepAliveTimeout: o.keepAliveTimeoutMs ?? MONITORING_DEFAULTS.keepAliveTimeoutMs,
        // how often the two timeouts above are enforced (Node's default, 30 s, would let slow clients stay that long)
        connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(headersTimeout / 4))),
      },
      (req, res) => {
        const timer = headerTimers.get(req.socket);
        if (timer !== undefined) {
          clearTimeout(timer);
          headerTimers.delete(req.socket);
        }
        const path = (req.url ?? '/').split('?')[0];
        if (req.method !== 'GET' && req.method !== 'HEAD') {
          res.writeHead(405, { allow: 'GET, HEAD' }).end();
          return;
        }
        if (path === '/metrics') {
          this.scrape()
            .then(({ contentType, body }) => res.writeHead(200, { 'content-type': contentType }).end(body))
            .catch((e: Error) => {
              this.options.logger.warn({ err: e.message }, 'metrics collection failed');
              res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics collection failed: ${e.message.slice(0, 200)}\n`);
            });
          return;
        }
        if (path === '/healthz' || path === '/livez') {
          res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
          return;
        }
        if (path === '/readyz') {
          const r = this.options.readiness();
          res.writeHead(r.ready ? 200 : 503, { 'content-type': 'text/plain' }).end(`${r.ready ? 'ready' : 'not ready'}\n${r.detail.join('\n')}\n`);
          return;
        }
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics, /healthz or /readyz\n');
      },
    );
    server.maxConnections = o.maxConnections ?? MONITORING_DEFAULTS.maxConnections;
    // A connection that sends nothing at all is closed after this long without activity.
    server.setTimeout(requestTimeout, (socket) => socket.destroy());
    // And one whose first request's headers are not complete in headersTimeout, by a timer of our own: Node's
    // check runs on connectionsCheckingInterval and was seen not to fire in some embeddings (jest's VM modules).
    const headerTimers = new WeakMap<object, NodeJS.Timeout>();
    server.on('connection', (socket) => {
      const t = setTimeout(() => socket.destroy(), headersTimeout);
      t.unref();
      headerTimers.set(socket, t);
      socket.once('close', () => clearTimeout(t));
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return server.address() as AddressInfo;
  }

  address(): AddressInfo | null {
    return (this.server?.address() as AddressInfo | null) ?? null;
  }

  /** Open connections (at most maxConnections). */
  connections(): Promise<number> {
    const s = this.server;
    if (s === null) return Promise.resolve(0);
    return new Promise((resolve) => s.getConnections((_e, n) => resolve(n ?? 0)));
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
}
