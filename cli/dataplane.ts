/** `quiclb dataplane --operator ADDR`: the per-node data plane driven by the operator's config channel. */
import { LOG_LEVELS } from '../lib/config/standalone.js';
import { TlsDirError } from '../proto/tls.js';
import { intFlag, ioFlag, parseFlags } from './args.js';
import { UsageError } from './usage-error.js';
import { waitForStop } from './wait-for-stop.js';

export const DATAPLANE_HELP = `Usage:
  quiclb dataplane --operator HOST:PORT --tls-dir DIR [options]

Runs the data plane of this node as the operator configures it: connects to the operator's config server over
mutual TLS, applies every snapshot it sends (one UDP load balancer per entry; Ack, or Nack naming the field),
probes the backends and reports their health and the traffic counters on the same stream. While the operator is
unreachable it keeps forwarding with the last good snapshot and reconnects with jittered exponential backoff
(0.5 s doubling to 30 s). docs/config-channel.md describes the protocol. Stops on SIGINT/SIGTERM.

Options:
  --operator HOST:PORT     the operator's config server (required)
  --tls-dir DIR            ca.crt, tls.crt, tls.key: this node's client certificate and the CA (required)
  --server-name NAME       name the operator's certificate must carry (default: the host of --operator)
  --state-dir DIR          keep the last good snapshot here (file mode 0600) and forward with it at start,
                           before the operator answers; without it the node is not ready until the first snapshot.
                           Also keeps the seed of stable upstream ports: a restarted data plane reaches each
                           backend from the same local ports, so backends see no path change
  --node-name NAME         node name in the Hello (default: $NODE_NAME, else the host name)
  --pod-name NAME          pod name in the Hello (default: $POD_NAME)
  --node-token-file FILE   send the token in FILE (a projected ServiceAccount token, audience quiclb-operator) on
                           every stream, re-read each time, so an operator run with --data-plane-auth token can
                           confirm this node (docs/config-channel.md, Trust)
  --metrics-port N         monitoring port: /metrics /healthz /readyz (default 9090)
  --metrics-address ADDR   monitoring address (default 0.0.0.0)
  --no-metrics             no monitoring server
  --workers N              data-plane processes per load balancer sharing its ports (default 1: in this process)
  --report-interval SECS   counters on the stream every SECS seconds (default 5)
  --log-level LEVEL        ${LOG_LEVELS.join(', ')} (default info)
  --io PATH                datagram I/O: auto (default: batched when its addon loads, Linux; else dgram with a
                           warning), batched (recvmmsg/sendmmsg; refuses to start without the addon), dgram
                           (node:dgram); overrides QUICLB_IO
  -h, --help               this help`;

export async function dataplaneCommand(argv: string[]): Promise<number> {
  const { values } = parseFlags(
    argv,
    {
      operator: { type: 'string' },
      'tls-dir': { type: 'string' },
      'server-name': { type: 'string' },
      'state-dir': { type: 'string' },
      'node-name': { type: 'string' },
      'pod-name': { type: 'string' },
      'node-token-file': { type: 'string' },
      'metrics-port': { type: 'string' },
      'metrics-address': { type: 'string' },
      'no-metrics': { type: 'boolean' },
      workers: { type: 'string' },
      'report-interval': { type: 'string' },
      'log-level': { type: 'string' },
      io: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    false,
  );
  if (values.help) {
    process.stdout.write(DATAPLANE_HELP + '\n');
    return 0;
  }
  if (!values.operator) throw new UsageError('--operator HOST:PORT is required; see quiclb dataplane --help');
  if (!/^(\[[0-9A-Fa-f:.]+\]|[^\s:[\]]+):\d{1,5}$/.test(values.operator) || Number(values.operator.slice(values.operator.lastIndexOf(':') + 1)) > 65535) {
    throw new UsageError(`--operator: expected HOST:PORT (IPv6 in brackets), got ${JSON.stringify(values.operator)}`);
  }
  if (!values['tls-dir']) throw new UsageError('--tls-dir DIR is required (ca.crt, tls.crt, tls.key)');
  const level = values['log-level'] ?? 'info';
  if (!(LOG_LEVELS as readonly string[]).includes(level)) throw new UsageError(`--log-level: must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(level)}`);
  const metricsPort = intFlag('metrics-port', values['metrics-port']) ?? 9090;
  if (metricsPort > 65535) throw new UsageError('--metrics-port: must be 0..65535');
  if (values['no-metrics'] && (values['metrics-port'] !== undefined || values['metrics-address'] !== undefined)) {
    throw new UsageError('--no-metrics cannot be combined with --metrics-port or --metrics-address');
  }
  // The data planes and worker processes this agent starts read QUICLB_IO (dataplane/io/select.ts).
  if (values.io !== undefined) process.env.QUICLB_IO = ioFlag(values.io);
  const workers = intFlag('workers', values.workers) ?? 1;
  if (workers < 1 || workers > 256) throw new UsageError('--workers: must be 1..256');
  const interval = values['report-interval'];
  if (interval !== undefined && !(/^\d+(\.\d+)?$/.test(interval) && Number(interval) >= 0.1 && Number(interval) <= 3600)) {
    throw new UsageError(`--report-interval: seconds 0.1..3600, got ${JSON.stringify(interval)}`);
  }
  if (values['node-token-file'] !== undefined) {
    if (values['node-token-file'] === '') throw new UsageError('--node-token-file: a file name is required');
    // Checked at start so a wrong path fails fast; later a missing token is logged per attempt (the kubelet may be late).
    const { readNodeToken } = await import('../dataplane/agent/node-token.js');
    try {
      readNodeToken(values['node-token-file']);
    } catch (e) {
      throw new UsageError(`--node-token-file: ${(e as Error).message}`);
    }
  }
  const { runAgent } = await import('../dataplane/agent/agent.js');
  let handle;
  try {
    handle = await runAgent({
      operator: values.operator,
      tlsDir: values['tls-dir'],
      serverName: values['server-name'],
      stateDir: values['state-dir'],
      nodeName: values['node-name'],
      podName: values['pod-name'],
      nodeTokenFile: values['node-token-file'],
      metricsPort: values['no-metrics'] ? null : metricsPort,
      metricsAddress: values['metrics-address'],
      workers,
      logLevel: level,
      reportIntervalMs: interval === undefined ? undefined : Math.round(Number(interval) * 1000),
    });
  } catch (e) {
    process.stderr.write(`quiclb dataplane: ${(e as Error).message}\n`);
    return e instanceof TlsDirError ? 2 : 1;
  }
  const sig = await waitForStop();
  handle.logger.info({ signal: sig }, 'stopping');
  await handle.stop();
  // grpc-js and the certificate file watcher may hold timers: the process is done.
  process.exit(0);
}
