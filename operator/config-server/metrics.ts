/** The config server's quiclb_ metrics, on a prom-client Registry the caller owns. */
import { Counter, Gauge, type Registry } from 'prom-client';

export interface ConfigServerMetricsSource {
  connectedCount(): number;
  /** Source's current snapshot version. */
  version(): number;
  /** (identity, seconds since its last report) per data plane known. */
  reportAges(): Array<[string, number]>;
  /** Connected data planes sent nothing because they cannot keep retained load balancers (stream.ts). */
  withheldCount(): number;
}

export class ConfigServerMetrics {
  readonly sent: Counter;
  readonly acked: Counter;
  readonly nacked: Counter;
  readonly streamsRefused: Counter<'reason'>;

  constructor(registry: Registry, source: ConfigServerMetricsSource) {
    const registers = [registry];
    new Gauge({
      name: 'quiclb_config_server_connected_data_planes',
      help: 'Data planes with an open config stream (after Hello).',
      registers,
      collect() {
        this.set(source.connectedCount());
      },
    });
    new Gauge({
      name: 'quiclb_config_server_withheld_data_planes',
      help: 'Connected data planes sent no snapshot because their node retains load balancers they cannot keep (a data plane without the retained-load-balancers capability): they forward with what they have, without updates.',
      registers,
      collect() {
        this.set(source.withheldCount());
      },
    });
    new Gauge({
      name: 'quiclb_config_server_snapshot_version',
      help: 'Version of the newest snapshot the config server serves (0: none yet).',
      registers,
      collect() {
        this.set(source.version());
      },
    });
    new Gauge({
      name: 'quiclb_config_server_seconds_since_last_report',
      help: 'Per data plane (connected, or disconnected within the last hour): seconds since its last health or counters report (since its Hello before the first).',
      labelNames: ['data_plane'],
      registers,
      collect() {
        this.reset();
        for (const [identity, age] of source.reportAges()) this.set({ data_plane: identity }, age);
      },
    });
    this.sent = new Counter({ name: 'quiclb_config_server_snapshots_sent_total', help: 'Snapshots pushed to data planes.', registers });
    this.acked = new Counter({ name: 'quiclb_config_server_snapshots_acked_total', help: 'Snapshot pushes acknowledged (applied) by data planes.', registers });
    this.nacked = new Counter({ name: 'quiclb_config_server_snapshots_nacked_total', help: 'Snapshot pushes rejected by data planes.', registers });
    this.streamsRefused = new Counter({
      name: 'quiclb_config_server_streams_refused_total',
      help: 'Streams closed by the server, by reason: unauthenticated, node_unauthenticated, node_unverifiable, hello_timeout, protocol, invalid_message, replaced, shutdown.',
      labelNames: ['reason'],
      registers,
    });
  }
}
