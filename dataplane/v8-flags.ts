/**
 * The V8 flags the data plane runs with. Its latency tail is set by garbage-collection pauses more than by anything
 * in the packet path, and these two flags move the pauses out of it (bench/dataplane/README.md, "GC and the latency
 * tail"):
 *
 * - `--max-semi-space-size=1` (MiB): V8 grows the young generation while many objects survive (module loading at
 *   start-up) and keeps it as long as the allocation rate stays high, which under traffic it does on the node:dgram
 *   path (~2 KB of short-lived objects per datagram). Grown to ~8 MiB, each scavenge frees megabytes at once in a
 *   2-6 ms pause; at 1 MiB scavenges run more often and each stays well under a millisecond.
 * - `--initial-old-space-size=64` (MiB): with V8's default the first old-generation limit is computed from the
 *   start-up heap (~13 MiB), and the JIT code and feedback the first seconds of traffic add cross it: a full
 *   mark-compact 2-5 s after start, which paused the data plane for 10-20 ms under traffic (its incremental
 *   marking steps and concurrent markers share the data plane's CPU). The data plane's old generation barely grows
 *   after start-up (nothing is allocated per datagram on the batched path), so with a 64 MiB first limit it runs
 *   without a full collection; V8 still collects when a large config or flow table gets there.
 *
 * Every launcher passes them: bin/quiclb.js's shebang, the Dockerfile's ENTRYPOINT, `npm start`, the worker
 * processes (withDataplaneV8Flags) and the benchmarks; test/dataplane/v8-flags.test.ts keeps those in step.
 */
export const DATAPLANE_V8_FLAGS: readonly string[] = ['--max-semi-space-size=1', '--initial-old-space-size=64'];

/**
 * The setting a flag sizes, as V8 reads its name (dashes and underscores alike): `--max-semi-space-size=4` and
 * `--min_semi_space_size=2` both size the semi-space, `--max-old-space-size=512` the old generation.
 */
function sizedSetting(arg: string): string {
  return arg
    .replace(/^--/, '')
    .split('=')[0]!
    .replace(/_/g, '-')
    .replace(/^(min|max|initial)-/, '');
}

/**
 * `execArgv` plus each data-plane flag whose setting the process did not size itself (in its own arguments or
 * NODE_OPTIONS; e.g. a --max-old-space-size of its own keeps V8's old-generation sizing): the node flags for the
 * data plane's worker processes.
 */
export function withDataplaneV8Flags(execArgv: readonly string[] = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? ''): string[] {
  const own = new Set([...execArgv, ...nodeOptions.split(/\s+/)].filter((a) => a.startsWith('--')).map(sizedSetting));
  return [...execArgv, ...DATAPLANE_V8_FLAGS.filter((f) => !own.has(sizedSetting(f)))];
}
