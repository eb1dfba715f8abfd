/**
 * Prints (JSON on stdout) every module specifier resolved while operator/tracing.ts is loaded and used, with tracing
 * set up from argv[2] (an OTLP endpoint, or nothing: disabled). A resolve hook registered before the import records
 * them, so the test can tell whether the OpenTelemetry SDK or exporter was loaded.
 *
 * Usage: node --import tsx tracing-imports.script.ts [ENDPOINT]
 */
import { register } from 'node:module';
import { MessageChannel } from 'node:worker_threads';
import { pino } from 'pino';

const HOOK = `
let port;
export function initialize(data) { port = data.port; }
export async function resolve(specifier, context, next) {
  port.postMessage(specifier);
  return next(specifier, context);
}`;

const specifiers: string[] = [];
const { port1, port2 } = new MessageChannel();
port1.on('message', (s: string) => specifiers.push(s));
register(`data:text/javascript,${encodeURIComponent(HOOK)}`, { data: { port: port2 }, transferList: [port2] });

const endpoint = process.argv[2] ?? null;
const tracing = await import(new URL('../../operator/tracing.ts', import.meta.url).href);
const t = await tracing.setupTracing({ endpoint, env: {}, logger: pino({ level: 'silent' }), exportDelayMs: 50 });
await tracing.withReconcileSpan('ns/lb', 'c0ffee', async () => ({ kind: 'done' }));
tracing.startPushSpan({ identity: 'dp', node: 'n', version: 1, nonce: 'x', bytes: 10, loadBalancers: 1, correlationIds: () => ['c0ffee'] })?.end({ kind: 'ack' });
await t.shutdown();
await new Promise((r) => setTimeout(r, 100)); // let the hook's last messages arrive
port1.close();
process.stdout.write(JSON.stringify({ enabled: t.enabled, specifiers }) + '\n');
