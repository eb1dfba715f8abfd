/**
 * A real QUIC backend for the end-to-end tests, as a child process: the example backend of the product
 * (examples/example-quic-backend.ts: @matrixai/quic 2.0.9 speaking a minimal HTTP/3 and minting ENCRYPTED
 * QUIC-LB connection IDs with ServerCidGenerator, with the library-bug workarounds and the record of every
 * datagram its socket receives), serving the bytes of a file.
 *
 * Run as a child process (Node 24 through tsx, with an IPC channel):
 *   matrixai-backend.ts --port P --config-file STANDALONE.yaml --server-name NAME --cert-dir DIR --body-file FILE
 *                       [--extra-cids 3]
 * (the YAML is the one `quiclb standalone` reads; ServerCidGenerator finds this server's ID and the active config there)
 * It prints "READY <port>" when listening. Over IPC it answers {cmd:'stats'} with a BackendStats object
 * and {cmd:'reset'} by clearing the counters.
 *
 * Every uncaught exception is logged and counted in stats.uncaught, and the process keeps running (the
 * library throws connection events such as idle timeouts as uncaught exceptions; the tests report them).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ExampleQuicBackend } from '../../../examples/example-quic-backend.js';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string' },
    'config-file': { type: 'string' },
    'server-name': { type: 'string' },
    'cert-dir': { type: 'string' },
    'body-file': { type: 'string' },
    'extra-cids': { type: 'string', default: '3' },
    'idle-timeout-ms': { type: 'string', default: '10000' },
  },
});
const need = (k: keyof typeof values): string => {
  const v = values[k];
  if (typeof v !== 'string') throw new Error(`--${k} is required`);
  return v;
};

const certDir = need('cert-dir');
let log = (msg: string): void => {
  process.stdout.write(`[backend] ${msg}\n`);
};
const backend = await ExampleQuicBackend.start({
  host: values.host,
  port: Number(need('port')),
  configFile: need('config-file'),
  serverName: need('server-name'),
  tls: { key: readFileSync(join(certDir, 'key.pem'), 'utf8'), cert: readFileSync(join(certDir, 'cert.pem'), 'utf8') },
  body: readFileSync(need('body-file')),
  extraCids: Number(values['extra-cids']),
  idleTimeoutMs: Number(values['idle-timeout-ms']),
  libraryLogs: true,
  log: (line) => log(line),
});
log = (msg: string): void => {
  process.stdout.write(`[backend ${backend.serverIdHex}] ${msg}\n`);
};

process.on('uncaughtException', (e) => {
  const text = `${e?.name}: ${e?.message}`;
  backend.noteUncaught(text);
  log(`uncaught (kept running): ${text}`);
});
process.on('unhandledRejection', (e) => log(`unhandled rejection (kept running): ${String(e)}`));

process.on('message', (m: { cmd?: string }) => {
  if (m?.cmd === 'stats') process.send?.(backend.stats());
  else if (m?.cmd === 'reset') {
    backend.resetStats();
    process.send?.({ ok: true });
  }
});
process.on('disconnect', () => process.exit(0));
const shutdown = (): void => {
  void backend.stop().finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 1500).unref();
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
log(`READY ${backend.port}`);
