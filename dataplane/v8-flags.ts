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
 *   mark-compact 1.5-5 s after start (sooner under more traffic) that stalled the data plane 10-19 ms (its
 *   incremental marking steps and concurrent markers share the data plane's CPU). Set, the value is also the floor
 *   of every later old-generation limit: V8 runs no full collection while the old generation is below 64 MiB, for
 *   the process's whole life. The batched path promotes almost nothing (what Node allocates per wake-up dies
 *   young), so the data plane runs without full collections; the price is that a process (each worker, and the
 *   operator, which runs from the same entry point) may hold up to 64 MiB of old-generation garbage before one,
 *   well inside the chart's memory limits (charts/quiclb/values.yaml).
 *
 * Every launcher passes them: bin/quiclb.js's shebang, the Dockerfile's ENTRYPOINT, `npm start`, the worker
 * processes (withDataplaneV8Flags) and the benchmarks; test/dataplane/v8-flags.test.ts keeps those in step.
 */
export const DATAPLANE_V8_FLAGS: readonly string[] = ['--max-semi-space-size=1', '--initial-old-space-size=64'];

/**
 * What a node flag sets, as V8 reads its name (dashes and underscores alike). Any semi-space size (min, max or
 * initial) is one setting: a process that sizes the young generation itself keeps its own. The old generation's
 * starting size is set by --initial-old-space-size or --initial-heap-size; a cap (--max-old-space-size) is another
 * setting, and V8 clamps the starting size to half of it.
 */
function setting(arg: string): string {
  const name = arg.replace(/^--/, '').split('=')[0]!.replace(/_/g, '-');
  if (/^(min|max|initial)-semi-space-size$/.test(name)) return 'semi-space-size';
  if (name === 'initial-old-space-size' || name === 'initial-heap-size') return 'initial-old-space-size';
  return name;
}

/**
 * `execArgv` plus each data-plane flag whose setting the process did not choose itself (in its own arguments or
 * NODE_OPTIONS): the node flags for the data plane's worker processes.
 */
export function withDataplaneV8Flags(execArgv: readonly string[] = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? ''): string[] {
  const own = new Set([...execArgv, ...nodeOptions.split(/\s+/)].filter((a) => a.startsWith('--')).map(setting));
  return [...execArgv, ...DATAPLANE_V8_FLAGS.filter((f) => !own.has(setting(f)))];
}
