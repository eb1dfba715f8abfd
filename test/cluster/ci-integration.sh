#!/usr/bin/env bash
# CI entry point of the real-cluster integration suite.
#   1. ensures the binaries (builds them into ~/.cache/quiclb on a cold cache: 10-15 min on 2 cores, with progress),
#   2. runs the jest integration suite, whose global setup starts a tier-2 cluster on loopback and whose teardown
#      stops it, writing jest's JSON report to $1,
#   3. always tears the cluster down (trap), even if jest is killed or crashes.
# Exits non-zero if the build, the cluster or any test fails, or if any test was skipped (the tier-2 suites skip
# themselves on a tier-1 cluster: here that would be a silent pass).
#
# Usage: test/cluster/ci-integration.sh OUTPUT.json
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OUT="${1:?usage: ci-integration.sh OUTPUT.json}"
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
cd "$REPO_ROOT"
# The project's Node (the `node` devDependency) first, as npm scripts do.
export PATH="$REPO_ROOT/node_modules/.bin:$PATH"

T0_MS=$(date +%s%3N)
bash "$CLUSTER_DIR/build.sh"
log "binaries ready after $(elapsed "$T0_MS") s"

export QUICLB_CLUSTER_NAME="ci-$$-$RANDOM"
unset QUICLB_CLUSTER_DIR   # never reuse a developer's running cluster here
export QUICLB_CLUSTER_TIER=2   # the tier-2 suites must run, whatever the caller's environment says
LOGS="${TMPDIR:-/tmp}/quiclb-integration-logs-$QUICLB_CLUSTER_NAME"
# down.sh (run by jest's global teardown, or below) copies the component logs here; they are kept only if the run fails.
export QUICLB_KEEP_LOGS="$LOGS"
cleanup() {
  local rc=$?
  bash "$CLUSTER_DIR/down.sh" --name "$QUICLB_CLUSTER_NAME" || rc=1
  if [ "$rc" -ne 0 ] && [ -d "$LOGS" ]; then
    local f
    for f in "$LOGS"/*.log; do [ -f "$f" ] && { echo "---- $f (last 30 lines)" >&2; tail -n 30 "$f" >&2; }; done
    log "component logs kept in $LOGS"
  else
    rm -rf "$LOGS"
  fi
  log "integration run finished in $(elapsed "$T0_MS") s (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT
JEST_PID=""
# bash runs a trap only after the foreground command ends: run jest in the background and wait for it, so that a
# SIGTERM/SIGINT to this script reaches jest at once (its owner-PID watchdog and cleanup below then stop the cluster).
trap '[ -z "$JEST_PID" ] || kill -TERM "$JEST_PID" 2>/dev/null; exit 130' INT
trap '[ -z "$JEST_PID" ] || kill -TERM "$JEST_PID" 2>/dev/null; exit 143' TERM

rm -f "$OUT"
NODE_OPTIONS=--experimental-vm-modules jest -c jest.integration.config.js --json --outputFile="$OUT" &
JEST_PID=$!
wait "$JEST_PID"
[ -s "$OUT" ] || die "jest wrote no report to $OUT"
! grep -Eq '"num(Pending|Todo)Tests":[1-9]' "$OUT" || die "some integration tests were skipped (numPendingTests / numTodoTests in $OUT)"
