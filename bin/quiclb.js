#!/usr/bin/env -S node --max-semi-space-size=1
// Entry point of the installed `quiclb` command: runs the compiled CLI.
// --max-semi-space-size=1 (MiB): node:dgram allocates ~2 KB of short-lived objects per datagram; with V8's default
// young generation growing to ~8 MiB each scavenge pauses the data plane for 2-3.5 ms, which shows as the p99
// latency. A 1 MiB young generation collects more often in ~0.5 ms (bench/dataplane/README.md, "GC and the latency
// tail"). Worker processes get the same flag from dataplane/workers.ts.
import '../dist/cli/main.js';
