#!/usr/bin/env bash
# Stop a cluster started by up.sh: kill exactly the PIDs it recorded (checking each still runs the recorded
# binary), wait for them to exit, then remove the cluster's state folder. Idempotent: a missing cluster is fine.
#
# Usage: down.sh [--name NAME | --dir DIR]      (default: --name ${QUICLB_CLUSTER_NAME:-dev})
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

D=""
NAME="${QUICLB_CLUSTER_NAME:-dev}"
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --dir) D="$2"; shift 2 ;;
    *) die "unknown argument: $1" ;;
  esac
done
[ -n "$D" ] || D="$(cluster_dir "$NAME")"
if [ ! -d "$D" ]; then
  log "no cluster at $D: nothing to stop"
  exit 0
fi
# Refuse to touch a folder up.sh did not create.
[ -f "$D/.quiclb-cluster" ] || die "$D is not a quiclb test cluster folder; not touching it"
# The watchdog and an explicit down may race: serialise, then re-check.
exec 8<"$D/.quiclb-cluster"
flock 8
if [ ! -d "$D/pids" ]; then log "cluster at $D already stopped"; exit 0; fi

# Report what the cluster cost in memory: peak resident set (VmHWM) of every process still running.
peaks=""
total_kb=0
for pf in "$D"/pids/*.pid; do
  [ -f "$pf" ] || continue
  n="$(basename "$pf" .pid)"
  [ "$n" = watchdog ] && continue
  pid_matches "$pf" "${pf%.pid}.bin" || continue
  kb="$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$(cat "$pf")/status" 2>/dev/null || true)"
  [ -n "$kb" ] || continue
  peaks="$peaks $n=$((kb / 1024))MB"
  total_kb=$((total_kb + kb))
done
[ -n "$peaks" ] && log "peak RSS:$peaks (sum $((total_kb / 1024)) MB)"

# stop_group NAME...: SIGTERM the group's live processes, wait up to 15 s for them to exit, then SIGKILL.
stopped=0
stop_group() {
  local n pid pf live=()
  for n in "$@"; do
    pf="$D/pids/$n.pid"
    [ -f "$pf" ] || continue
    pid="$(cat "$pf")"
    [ "$pid" = "$$" ] && continue   # the watchdog runs this script through exec
    if pid_matches "$pf" "$D/pids/$n.bin"; then
      kill -TERM "$pid" 2>/dev/null || true
      live+=("$n")
      stopped=$((stopped + 1))
    fi
  done
  local deadline=$((SECONDS + 15))
  for n in "${live[@]}"; do
    while pid_matches "$D/pids/$n.pid" "$D/pids/$n.bin"; do
      if [ $SECONDS -ge $deadline ]; then
        log "$n ($(cat "$D/pids/$n.pid")) ignored SIGTERM; sending SIGKILL"
        kill -KILL "$(cat "$D/pids/$n.pid")" 2>/dev/null || true
        sleep 0.2
        continue
      fi
      sleep 0.1
    done
  done
}
# Clients first, then the API server, then etcd (so nothing logs lost connections), the watchdog last.
stop_group kwok kube-scheduler kube-controller-manager
stop_group kube-apiserver
stop_group etcd
stop_group watchdog

# Logs are lost with the folder unless asked for (CI keeps them on failure).
if [ -n "${QUICLB_KEEP_LOGS:-}" ] && [ -d "$D/logs" ]; then
  mkdir -p "$QUICLB_KEEP_LOGS" && cp -r "$D/logs/." "$QUICLB_KEEP_LOGS/" || true
fi
rm -rf "$D"
log "cluster at $D stopped ($stopped processes) and removed"
