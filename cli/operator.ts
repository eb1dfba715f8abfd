/** `quiclb operator`: the Kubernetes controller and config server (operator/main.ts). */
import { intFlag, parseFlags } from './args.js';
import { UsageError } from './usage-error.js';
import { waitForStop } from './wait-for-stop.js';

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export const OPERATOR_HELP = `Usage:
  quiclb operator --config-listen ADDR --tls-dir DIR [--kubeconfig FILE] [--namespace NS]
                  [--leader-elect [--lease-namespace NS] [--lease-name NAME]] [--metrics-port N] [--log-level LEVEL]
                  [--server-id-propagation DURATION]

Watches QuicLoadBalancers (quiclb.io/v1alpha1), their Services and EndpointSlices, Pods, Nodes and user key
Secrets (labelled quiclb.io/key=true); assigns server IDs, keeps the keys and configs Secret, annotates backend pods
with quiclb.io/server-id, writes status and Events, and serves every data plane ('quiclb dataplane') the load balancers of its node over mutual TLS
(docs/config-channel.md). A data plane gets the load balancers whose spec.nodeSelector selects the node its Hello
names (a node unknown to the API server gets nothing). Logs one JSON line "operator running" with the bound
addresses when ready; stops on SIGTERM/SIGINT (releasing its Lease). With --leader-elect only the holder of the
Lease acts and listens on --config-listen (it logs "leading: acting and serving snapshots"); a replica that loses
the Lease exits with status 1 (to start again as a candidate).

Options:
  --config-listen ADDR   where the config server listens, IP:PORT or [IPv6]:PORT (port 0: any free port)
  --tls-dir DIR          ca.crt (CA of the data planes' client certificates), tls.crt and tls.key (this server)
  --kubeconfig FILE      kubeconfig to use (default: in-cluster configuration, else $KUBECONFIG)
  --namespace NS         watch only this namespace (default: every namespace)
  --leader-elect         act only while holding the Lease (run two or more replicas)
  --lease-namespace NS   namespace of the Lease (default: $POD_NAMESPACE, else quiclb-system)
  --lease-name NAME      name of the Lease (default quiclb-operator)
  --lease-duration SECS  Lease duration (default 15, at least 3); --renew-deadline SECS (default 10, at most the
                         duration minus 1) and --retry-period SECS (default 2, else 1; 1.2 x it below the renew
                         deadline) as in client-go
  --metrics-port N       serve /metrics, /healthz and /readyz (200 only while acting: the leader) on the
                         --config-listen host, port N (0: any free port)
  --data-plane-auth MODE token: confirm each data plane's node with a TokenReview of the pod-bound ServiceAccount
                         token it sends (quiclb dataplane --node-token-file) and refuse a Hello naming another
                         node; none (default): trust the node the Hello names (docs/config-channel.md, Trust)
  --data-plane-service-account NS/NAME
                         the data planes' ServiceAccount, whose tokens alone are accepted (required with token)
  --otlp-endpoint URL    export OpenTelemetry spans (reconcile, snapshot push) over OTLP/HTTP to this collector
                         (default: OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT if set, else no tracing at all)
  --server-id-propagation DURATION
                         how long after its quiclb.io/server-id annotation changes a pod may still mint with its
                         previous ID (the kubelet's sync period plus its cache TTL; default 2m): a pod handed over
                         between load balancers gets no new connections for that long
  --log-level LEVEL      ${LOG_LEVELS.join(', ')} (default info)`;

export async function operatorCommand(argv: string[]): Promise<number> {
  const { values } = parseFlags(
    argv,
    {
      'config-listen': { type: 'string' },
      'tls-dir': { type: 'string' },
      kubeconfig: { type: 'string' },
      namespace: { type: 'string' },
      'leader-elect': { type: 'boolean' },
      'lease-namespace': { type: 'string' },
      'lease-name': { type: 'string' },
      'lease-duration': { type: 'string' },
      'renew-deadline': { type: 'string' },
      'retry-period': { type: 'string' },
      'metrics-port': { type: 'string' },
      'otlp-endpoint': { type: 'string' },
      'data-plane-auth': { type: 'string' },
      'data-plane-service-account': { type: 'string' },
      'log-level': { type: 'string' },
      'server-id-propagation': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    false,
  );
  if (values.help) {
    process.stdout.write(OPERATOR_HELP + '\n');
    return 0;
  }
  if (!values['config-listen']) throw new UsageError('--config-listen ADDR is required (e.g. 0.0.0.0:9443); see quiclb operator --help');
  if (!values['tls-dir']) throw new UsageError('--tls-dir DIR is required (ca.crt, tls.crt, tls.key)');
  const leaseFlags = ['lease-namespace', 'lease-name', 'lease-duration', 'renew-deadline', 'retry-period'] as const;
  if (!values['leader-elect'] && leaseFlags.some((f) => values[f] !== undefined)) throw new UsageError(`--${leaseFlags.join(', --')} need --leader-elect`);
  const leaseSeconds = intFlag('lease-duration', values['lease-duration']);
  const renewDeadlineSeconds = intFlag('renew-deadline', values['renew-deadline']);
  const retrySeconds = intFlag('retry-period', values['retry-period']);
  const lease = leaseSeconds ?? 15;
  if (lease < 3) throw new UsageError('--lease-duration must be at least 3 (seconds)');
  const renew = renewDeadlineSeconds ?? Math.min(10, lease - 1);
  if (renew < 2 || renew >= lease) throw new UsageError('--renew-deadline must be at least 2 and below --lease-duration');
  // The Lease's rule (operator/kube/lease.ts, as client-go's): 1.2 x the retry period below the renew deadline.
  const retry = retrySeconds ?? (2 * 1.2 < renew ? 2 : 1);
  if (retry < 1 || retry * 1.2 >= renew) throw new UsageError(`--retry-period: 1.2 x ${retry} s must be below --renew-deadline (${renew} s), and it must be at least 1`);
  const metricsPort = intFlag('metrics-port', values['metrics-port']);
  if (metricsPort !== undefined && metricsPort > 65535) throw new UsageError('--metrics-port: must be 0..65535');
  const level = values['log-level'] ?? 'info';
  if (!LOG_LEVELS.includes(level)) throw new UsageError(`--log-level: must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(level)}`);
  const auth = values['data-plane-auth'] ?? 'none';
  if (auth !== 'none' && auth !== 'token') throw new UsageError(`--data-plane-auth: must be token or none, got ${JSON.stringify(auth)}`);
  const saFlag = values['data-plane-service-account'];
  if (auth === 'token' && saFlag === undefined) throw new UsageError('--data-plane-auth token needs --data-plane-service-account NS/NAME');
  if (auth === 'none' && saFlag !== undefined) throw new UsageError('--data-plane-service-account needs --data-plane-auth token');
  let serverIdPropagationMs: number | undefined;
  if (values['server-id-propagation'] !== undefined) {
    const { parseDuration } = await import('../lib/config/duration.js');
    try {
      serverIdPropagationMs = parseDuration('--server-id-propagation', values['server-id-propagation']);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  const { parseServiceAccount } = await import('../operator/kube/token-review.js');
  let dataPlaneServiceAccount;
  try {
    dataPlaneServiceAccount = saFlag === undefined ? undefined : parseServiceAccount(saFlag);
  } catch (e) {
    throw new UsageError(`--data-plane-service-account: ${(e as Error).message}`);
  }
  const { tracesUrl } = await import('../operator/tracing.js');
  try {
    tracesUrl(values['otlp-endpoint']);
  } catch (e) {
    // The message already names its source (--otlp-endpoint or the OTEL_* variable).
    throw new UsageError((e as Error).message);
  }
  const k8s = await import('@kubernetes/client-node');
  const { runOperator, operatorLogger } = await import('../operator/main.js');
  const { TlsDirError } = await import('../proto/tls.js');
  const kc = new k8s.KubeConfig();
  try {
    if (values.kubeconfig) kc.loadFromFile(values.kubeconfig);
    else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
    else kc.loadFromDefault();
  } catch (e) {
    throw new UsageError(`--kubeconfig: ${(e as Error).message}`);
  }
  // loadFromDefault() falls back to http://localhost:8080 in silence; say so instead.
  const server = kc.getCurrentCluster()?.server;
  if (!server || server === 'http://localhost:8080') throw new UsageError('no Kubernetes API server configured: pass --kubeconfig FILE or run in a cluster');
  const logger = operatorLogger(level);
  let running;
  try {
    running = await runOperator({
      kubeconfig: kc,
      configListen: values['config-listen'],
      tlsDir: values['tls-dir'],
      namespace: values.namespace ?? null,
      metricsPort,
      logger,
      otlpEndpoint: values['otlp-endpoint'] ?? null,
      ...(serverIdPropagationMs !== undefined ? { serverIdPropagationMs } : {}),
      ...(dataPlaneServiceAccount ? { dataPlaneServiceAccount } : {}),
      ...(values['leader-elect']
        ? {
            leaderElection: {
              namespace: values['lease-namespace'] ?? process.env.POD_NAMESPACE ?? 'quiclb-system',
              name: values['lease-name'] ?? 'quiclb-operator',
              leaseSeconds: lease,
              renewDeadlineSeconds: renew,
              retrySeconds: retry,
            },
          }
        : {}),
    });
  } catch (e) {
    if (e instanceof TlsDirError) throw new UsageError(e.message);
    logger.fatal({ err: (e as Error).message }, 'operator failed to start');
    return 1;
  }
  const why = await Promise.race([waitForStop(), running.lost.then(() => 'lost')]);
  logger.info({ why }, 'stopping');
  await running.stop();
  return why === 'lost' ? 1 : 0;
}
