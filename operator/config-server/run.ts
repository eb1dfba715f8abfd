/**
 * `quiclb config-server`: the config server without Kubernetes, serving standalone YAML files (one load balancer
 * each) to every data plane that connects. Composition only: file source, server, metrics endpoint, logger.
 */
import { pino, type Logger } from 'pino';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { formatSocketAddress } from '../../lib/config/address.js';
import { MonitoringServer } from '../../lib/monitoring.js';
import { serverCredentials } from '../../proto/tls.js';
import { FileSnapshotSource } from './file-source.js';
import { ConfigServer, type BoundAddress } from './server.js';

export interface RunConfigServerOptions {
  readonly listen: string;
  readonly tlsDir: string;
  readonly files: readonly string[];
  /** Port of /metrics on the --listen host (unset: no metrics endpoint). */
  readonly metricsPort?: number;
  readonly logLevel?: string;
  readonly logger?: Logger;
}

export interface RunningConfigServer {
  readonly server: ConfigServer;
  readonly address: BoundAddress;
  readonly metricsAddress: string | null;
  readonly logger: Logger;
  stop(): Promise<void>;
}

export async function runConfigServer(o: RunConfigServerOptions): Promise<RunningConfigServer> {
  const logger = o.logger ?? pino({ level: o.logLevel ?? 'info', name: 'quiclb-config-server' }, pino.destination({ fd: 1, sync: true }));
  const credentials = serverCredentials(o.tlsDir);
  const source = new FileSnapshotSource({ files: o.files, logger });
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'quiclb_' });
  const server = new ConfigServer({ source, credentials, logger, registry });
  let metrics: MonitoringServer | null = null;
  try {
    const address = await server.listen(o.listen);
    let metricsAddress: string | null = null;
    if (o.metricsPort !== undefined) {
      metrics = new MonitoringServer({
        metrics: async () => ({ contentType: registry.contentType, body: await registry.metrics() }),
        readiness: () => ({ ready: true, detail: ['serving'] }),
        logger,
      });
      const bound = await metrics.listen(o.metricsPort, address.host);
      metricsAddress = formatSocketAddress({ host: address.host, port: bound.port });
    }
    logger.info({ address: address.address, metricsAddress, version: source.version(), files: o.files }, 'config server listening');
    return {
      server,
      address,
      metricsAddress,
      logger,
      async stop() {
        source.close();
        await server.close();
        await metrics?.close();
      },
    };
  } catch (e) {
    source.close();
    await server.close(0);
    await metrics?.close();
    throw e;
  }
}
