/** The `quiclb` command: dispatches to subcommands. */
import { ConfigError, HexError } from '../lib/index.js';
import { cidCommand } from './cid.js';
import { keygenCommand } from './keygen.js';
import { UsageError } from './usage-error.js';

export const MAIN_HELP = `quiclb: a QUIC load balancer that routes every packet by the QUIC-LB server ID in its connection ID
(draft-ietf-quic-load-balancers-21).

Usage: quiclb <command> [options]

Commands:
  cid encode|decode|inspect   encode, decode or explain QUIC-LB connection IDs (quiclb cid --help)
  keygen                      print a new random 16-byte QUIC-LB key
  standalone                  run the load balancer from a YAML file, or --example (quiclb standalone --help)
  admin get|update|rotate     call a standalone load balancer's admin API (quiclb admin --help)
  dataplane                   run this node's data plane as the operator configures it (quiclb dataplane --help)
  config-server               serve YAML load balancers to data planes over the config channel (quiclb config-server --help)
  operator                    the Kubernetes controller: QuicLoadBalancers -> server IDs, keys, status, data planes (quiclb operator --help)

Run 'quiclb <command> --help' for a command's options. Invalid input exits with status 2.`;

type Command = (argv: string[]) => number | Promise<number>;

const commands: Record<string, Command> = {
  cid: cidCommand,
  keygen: keygenCommand,
  standalone: (argv) => import('./standalone.js').then((m) => m.standaloneCommand(argv)),
  admin: (argv) => import('./admin.js').then((m) => m.adminCommand(argv)),
  dataplane: (argv) => import('./dataplane.js').then((m) => m.dataplaneCommand(argv)),
  'config-server': (argv) => import('./config-server.js').then((m) => m.configServerCommand(argv)),
  operator: (argv) => import('./operator.js').then((m) => m.operatorCommand(argv)),
};

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(MAIN_HELP + '\n');
    return name === undefined ? 2 : 0;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`quiclb: unknown command ${JSON.stringify(name)}\n\n${MAIN_HELP}\n`);
    return 2;
  }
  try {
    return await command(rest);
  } catch (e) {
    if (e instanceof UsageError || e instanceof ConfigError || e instanceof HexError) {
      process.stderr.write(`quiclb ${name}: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}

const exitCode = await main(process.argv.slice(2));
// Let stdout drain before exiting (large --jsonl outputs go through a pipe).
process.exitCode = exitCode;
