/**
 * The journey's traffic during a step: for each target (each node's data plane, and the ECMP relay that moves a
 * client's datagrams between both, 8 at a time), one long-lived @matrixai/quic connection with requests spread over
 * the step, and back-to-back ngtcp2 downloads, plain and migrating (new local port and CID before the request:
 * test/journey/clients.ts says why), until stop(). Every
 * client's answer is kept; ok() says whether every transfer completed intact.
 */
import type { ClientKind, ClientResult, World } from './journey-world.js';

export interface Target {
  name: string;
  host: string;
  port: number;
}

export interface Transfer extends ClientResult {
  kind: ClientKind;
  target: string;
  /** ms after the traffic started */
  startedAt: number;
}

export class Traffic {
  readonly results: Transfer[] = [];
  private stopped = false;
  private readonly running: Promise<void>[] = [];

  constructor(
    private readonly world: World,
    private readonly targets: Target[],
    private readonly opts: { spreadMs: number; maxMs: number; size: number; pauseMs: number },
  ) {}

  /** Date.now() at start() */
  t0 = 0;
  private readonly paused = new Set<string>();
  /** ngtcp2 downloads running, per target */
  private readonly inFlight = new Map<string, number>();

  start(): this {
    this.t0 = Date.now();
    const deadline = Date.now() + this.opts.maxMs;
    const run = async (kind: ClientKind, t: Target, path: string, count: number, extra: Record<string, unknown>) => {
      const startedAt = Date.now() - this.t0;
      const r = await this.world.client(kind, t.host, t.port, path, count, { timeoutMs: this.opts.maxMs + 30_000, ...extra }, this.opts.maxMs + 40_000);
      this.results.push({ ...r, kind, target: t.name, startedAt });
    };
    for (const t of this.targets) {
      // The @matrixai/quic client (quiche 0.18) does not migrate here: against quic-go backends a migration of it can
      // fail without any load balancer in the path (docs/backends.md item 9: 1 of 24 through two plain forwarders
      // ended with quiche closing on PROTOCOL_VIOLATION, quiche 0.18 mishandling a repeated RETIRE_CONNECTION_ID from
      // quic-go). The migrating clients are the gtlsclients (ngtcp2-migrate), through every target.
      this.running.push(run('matrixai', t, `/${this.opts.size / 4}`, 6, { spreadMs: this.opts.spreadMs }));
      this.running.push(
        (async () => {
          for (let i = 0; !this.stopped && Date.now() < deadline; i++) {
            if (this.paused.has(t.name)) {
              await new Promise((r) => setTimeout(r, 100));
              continue;
            }
            this.inFlight.set(t.name, (this.inFlight.get(t.name) ?? 0) + 1);
            await run(i % 2 === 0 ? 'ngtcp2' : 'ngtcp2-migrate', t, `/${this.opts.size}`, 1, i % 2 === 0 ? {} : { migrateAfterMs: 30 });
            this.inFlight.set(t.name, this.inFlight.get(t.name)! - 1);
            // A pause between downloads: the machine has 2 cores for the cluster, the operators, the data planes and the world.
            await new Promise((r) => setTimeout(r, this.opts.pauseMs));
          }
        })(),
      );
    }
    return this;
  }

  /**
   * New ngtcp2 downloads through these targets wait until resume() (connections already open go on): a client that
   * starts a connection through a node whose data plane is gone cannot complete its handshake there until the
   * replacement runs, and that is no established transfer.
   */
  pause(targets: string[]): void {
    for (const t of targets) this.paused.add(t);
  }

  /** Resolves once no ngtcp2 download through `targets` runs (pause() them first), or after maxMs. */
  async drained(targets: string[], maxMs: number): Promise<void> {
    const end = Date.now() + maxMs;
    while (Date.now() < end && targets.some((t) => (this.inFlight.get(t) ?? 0) > 0)) await new Promise((r) => setTimeout(r, 50));
  }

  resume(): void {
    this.paused.clear();
  }

  /** ms since start(), to place events among the transfers */
  now(): number {
    return Date.now() - this.t0;
  }

  /** Ends the download loops after their current transfer and waits for every client. */
  async stop(): Promise<Transfer[]> {
    this.stopped = true;
    await Promise.all(this.running);
    return this.results;
  }

  static failures(results: Transfer[]): string[] {
    return results.filter((r) => !(r.ok && r.intact && r.error === undefined)).map((r) => `${r.kind} via ${r.target} at ${r.startedAt}-${r.startedAt + (r.ms ?? 0)} ms: ok=${r.ok} intact=${r.intact} bytes=${r.bytes} ${r.error ?? ''} ${JSON.stringify(r.detail ?? '')}`);
  }

  /**
   * Migrating transfers that completed without migrating as their backend saw it (detail.migratedConnections: the
   * connection used a second CID of its backend): a migration that never happened proves nothing.
   */
  static unmigrated(results: Transfer[]): string[] {
    const migrated = (r: Transfer) => (r.detail as { migratedConnections?: unknown } | undefined)?.migratedConnections;
    return results
      .filter((r) => r.ok && r.kind === 'ngtcp2-migrate' && migrated(r) !== 1)
      .map((r) => `${r.kind} via ${r.target} at ${r.startedAt} ms: migrated connections ${String(migrated(r))}`);
  }

  /** "12 transfers (ngtcp2 4, ...), 38.2 MB, served by 5 backends" */
  static summary(results: Transfer[]): string {
    const kinds = new Map<string, number>();
    for (const r of results) kinds.set(r.kind, (kinds.get(r.kind) ?? 0) + 1);
    const bytes = results.reduce((s, r) => s + (r.bytes ?? 0), 0);
    const served = new Set(results.flatMap((r) => r.servedBy ?? []));
    return `${results.length} transfers (${[...kinds].map(([k, n]) => `${k} ${n}`).join(', ')}), ${(bytes / 1e6).toFixed(1)} MB, served by ${served.size} backends`;
  }
}
