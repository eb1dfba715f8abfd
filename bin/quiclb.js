#!/usr/bin/env -S node --max-semi-space-size=1 --initial-old-space-size=64
// Entry point of the installed `quiclb` command: runs the compiled CLI, with the V8 flags the data plane's
// latency tail needs (dataplane/v8-flags.ts says why; worker processes get them from there).
import '../dist/cli/main.js';
