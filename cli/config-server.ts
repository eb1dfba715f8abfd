/** `quiclb config-server`: serves standalone YAML load balancers to data planes over the config channel (mTLS gRPC). */
import { parseFlags, intFlag } from './args.js';
import { UsageError } from './usage-error.js';
import { waitForStop } from './wait-for-stop.js';

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export const CONFIG_SERVER_HELP = `Usage:
  quiclb config-server --listen ADDR --tls-dir DIR --load-balancer FILE [--load-balancer FILE ...]
                       [--metrics-port N] [--log-level LEVEL]

The operator's config server without Kubernetes: serves DistributionService (docs/config-channel.md) over mutual
TLS to every 'quiclb dataplane' that connects, and pushes each of them every load balancer given. Each FILE is a
standalone YAML (docs/standalone-config.md; its listen, configs and keys, servers, flows and health settings are
used; workers, monitoring and logging are not). A file is reloaded when it (or a key or state file it names)
changes; an invalid file keeps its last good load balancer, and the error is logged. Versions are never smaller
than the start time in milliseconds, so a restarted server's snapshot is newer than anything it sent before.
Logs one JSON line "config server listening" with the bound address when ready; stops on SIGTERM/SIGINT. An invalid
file at start exits with status 2, naming the file and field.

Options:
  --listen ADDR          where to serve, IP:PORT or [IPv6]:PORT (port 0: any free port; the log line says which)
  --tls-dir DIR          ca.crt (the CA of the data planes' client certificates), tls.crt and tls.key (this
                         server's certificate; its SANs must cover the name the data planes dial)
  --load-balancer FILE   a standalone YAML; repeat for several load balancers (names and listen addresses unique)
  --metrics-port N       serve /metrics, /healthz and /readyz on the --listen host, port N (0: any free port)
  --log-level LEVEL      ${LOG_LEVELS.join(', ')} (default info)`;

export async function configServerCommand(argv: string[]): Promise<number> {
  const { values } = parseFlags(
    argv,
    {
      listen: { type: 'string' },
      'tls-dir': { type: 'string' },
      'load-balancer': { type: 'string', multiple: true },
      'metrics-port': { type: 'string' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    false,
  );
  if (values.help) {
    process.stdout.write(CONFIG_SERVER_HELP + '\n');
    return 0;
  }
  if (!values.listen) throw new UsageError('--listen ADDR is required (e.g. 127.0.0.1:9443); see quiclb config-server --help');
  if (!values['tls-dir']) throw new UsageError('--tls-dir DIR is required (ca.crt, tls.crt, tls.key)');
  const files = values['load-balancer'] ?? [];
  if (files.length === 0) throw new UsageError('--load-balancer FILE is required (at least one)');
  const metricsPort = intFlag('metrics-port', values['metrics-port']);
  if (metricsPort !== undefined && metricsPort > 65535) throw new UsageError('--metrics-port: must be 0..65535');
  const level = values['log-level'];
  if (level !== undefined && !LOG_LEVELS.includes(level)) throw new UsageError(`--log-level: must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(level)}`);
  const { runConfigServer } = await import('../operator/config-server/run.js');
  const { ConfigError } = await import('../lib/quiclb/config.js');
  const { TlsDirError } = await import('../proto/tls.js');
  let running;
  try {
    running = await runConfigServer({ listen: values.listen, tlsDir: values['tls-dir'], files, metricsPort, logLevel: level });
  } catch (e) {
    if (e instanceof ConfigError) throw e; // exit status 2, file and field named
    if (e instanceof TlsDirError) throw new UsageError(e.message);
    process.stderr.write(`quiclb config-server: ${(e as Error).message}\n`);
    return 1;
  }
  const signal = await waitForStop();
  running.logger.info({ signal }, 'stopping');
  await running.stop();
  return 0;
}
