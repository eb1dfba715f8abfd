/**
 * A data-plane stream in a process of its own (for tests that freeze it with SIGSTOP, a data plane that stops
 * reading at the socket): says Hello, acknowledges every snapshot, prints one JSON line per snapshot received.
 * Usage: node --import tsx data-plane-client.script.ts ADDRESS TLS_DIR
 */
import { TestDataPlane } from './helpers.js';

const [address, dir] = process.argv.slice(2);
const dp = TestDataPlane.withTls(address, { dir, ca: Buffer.alloc(0), cert: Buffer.alloc(0), key: Buffer.alloc(0) });
dp.stream.on('data', (m: { message?: { $case: string; snapshot: { version: bigint } } }) => {
  if (m.message?.$case === 'snapshot') process.stdout.write(JSON.stringify({ version: String(m.message.snapshot.version) }) + '\n');
});
dp.autoAck = true;
dp.hello('separate-process');
process.on('SIGTERM', () => {
  dp.close();
  process.exit(0);
});
