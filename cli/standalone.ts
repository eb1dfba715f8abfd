/** `quiclb standalone`: the data plane from a YAML file, or a self-contained example. */
import { ConfigError } from '../lib/quiclb/config.js';
import { describeConfig, loadStandaloneConfig, LOG_LEVELS, toSnapshot, type LogLevel } from '../lib/config/standalone.js';
import { dump } from 'js-yaml';
import { parseSocketAddress } from '../lib/config/address.js';
import { TlsDirError } from '../proto/tls.js';
import { parseFlags, intFlag, ioFlag } from './args.js';
import { UsageError } from './usage-error.js';
import { waitForStop } from './wait-for-stop.js';

export const STANDALONE_HELP = `Usage:
  quiclb standalone --config FILE [--log-level LEVEL]   run the load balancer from a YAML file
  quiclb standalone --config FILE --admin ADDR --tls-dir DIR
                                                         ... and serve the admin API (quiclb admin --help)
  quiclb standalone --config FILE --check                validate the file and print what it means
  quiclb standalone --example [--listen ADDR] [--metrics-port N] [--no-demo]
                                                         a self-contained example with three example backends

The file format is documented in docs/standalone-config.md (example: examples/standalone.yaml).
Reloads the file when it (or a key file) changes, and on SIGHUP; an invalid file keeps the last good config.
Stops on SIGINT/SIGTERM. An invalid file at start exits with status 2, naming the field.

Options:
  --config FILE        the YAML config
  --check              only validate and print the summary (keys are never printed)
  --log-level LEVEL    ${LOG_LEVELS.join(', ')} (overrides logging.level)
  --io PATH            datagram I/O: auto (default: batched when its addon loads, Linux; else dgram with a
                       warning), batched (recvmmsg/sendmmsg; refuses to start without the addon), dgram
                       (node:dgram); overrides io: of the file and QUICLB_IO; read at start only
  --admin ADDR         serve the admin API (gRPC LoadBalancerConfig: GetConfig, UpdateConfig, RotateKeys) on
                       "ip:port" over mTLS; callers and roles come from admin.clients in the YAML
  --tls-dir DIR        with --admin: ca.crt (the CA of the client certificates), tls.crt, tls.key (the server's)
  --example            run the example (listen 127.0.0.1:4433, metrics 127.0.0.1:9090)
  --listen ADDR        example: where the load balancer listens (e.g. 127.0.0.1:5000)
  --metrics-port N     example: monitoring port (0 = any free port)
  --no-demo            example: skip the demo client`;

export async function standaloneCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(
    argv,
    {
      config: { type: 'string', short: 'c' },
      check: { type: 'boolean' },
      'log-level': { type: 'string' },
      admin: { type: 'string' },
      'tls-dir': { type: 'string' },
      example: { type: 'boolean' },
      listen: { type: 'string' },
      'metrics-port': { type: 'string' },
      'no-demo': { type: 'boolean' },
      io: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    false,
  );
  void positionals;
  if (values.help) {
    process.stdout.write(STANDALONE_HELP + '\n');
    return 0;
  }
  const level = values['log-level'];
  if (level !== undefined && !(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new UsageError(`--log-level: must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(level)}`);
  }
  const io = values.io === undefined ? undefined : ioFlag(values.io);
  if ((values.admin === undefined) !== (values['tls-dir'] === undefined)) throw new UsageError('--admin ADDR and --tls-dir DIR go together');
  const admin = values.admin === undefined ? undefined : { address: parseSocketAddress('--admin', values.admin, { allowPortZero: true }), tlsDir: values['tls-dir']! };
  if (values.example) {
    if (admin) throw new UsageError('--admin serves a config file: use it with --config');
    if (values.config) throw new UsageError('--example runs a built-in config; do not combine it with --config');
    if (values.check) throw new UsageError('--check validates --config FILE; the built-in example needs no check');
    const metricsPort = intFlag('metrics-port', values['metrics-port']);
    if (metricsPort !== undefined && metricsPort > 65535) throw new UsageError('--metrics-port: must be 0..65535');
    const { runExample } = await import('../examples/example.js');
    let ex;
    try {
      ex = await runExample({ listen: values.listen, metricsPort, demo: !values['no-demo'], logLevel: level as LogLevel | undefined });
    } catch (e) {
      if (e instanceof ConfigError) throw e;
      process.stderr.write(`quiclb standalone --example: ${(e as Error).message}\n  (use --listen and --metrics-port to pick other ports)\n`);
      return 1;
    }
    await waitForStop();
    await ex.stop();
    return 0;
  }
  if (values.listen || values['metrics-port'] || values['no-demo']) throw new UsageError('--listen, --metrics-port and --no-demo go with --example');
  if (!values.config) throw new UsageError('--config FILE is required (or --example); see quiclb standalone --help');
  if (values.check) {
    const loaded = loadStandaloneConfig(values.config);
    toSnapshot(loaded, 0); // the same whole-snapshot validation as at start (e.g. a state file's config ids)
    process.stdout.write(`${values.config}: valid\n` + dump(describeConfig(loaded), { lineWidth: 120 }));
    if (loaded.stateFileWarning) process.stdout.write(`warning: ${loaded.stateFileWarning}\n`);
    return 0;
  }
  const { runStandalone } = await import('../dataplane/standalone.js');
  let handle;
  try {
    handle = await runStandalone({ configPath: values.config, logLevel: level as LogLevel | undefined, admin, io });
  } catch (e) {
    if (e instanceof ConfigError) throw e; // exit status 2, field named
    if (e instanceof TlsDirError) throw new UsageError(`--tls-dir: ${e.message}`);
    process.stderr.write(`quiclb standalone: ${(e as Error).message}\n`);
    return 1;
  }
  const sig = await waitForStop();
  handle.logger.info({ signal: sig }, 'stopping');
  await handle.stop();
  return 0;
}
