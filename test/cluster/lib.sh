#!/usr/bin/env bash
# Shared helpers for the real-cluster scripts. Source it; do not run it.
# shellcheck disable=SC2034

CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CLUSTER_DIR/../.." && pwd)"
# shellcheck source=versions.env
. "$CLUSTER_DIR/versions.env"

# Everything built lives outside the repo, keyed by version.
QUICLB_CACHE="${QUICLB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/quiclb}"
K8S_DIR="$QUICLB_CACHE/k8s-v$K8S_VERSION"
ETCD_DIR="$QUICLB_CACHE/etcd-v$ETCD_VERSION"
KWOK_DIR="$QUICLB_CACHE/kwok-v$KWOK_VERSION"
HELM_DIR="$QUICLB_CACHE/helm-$(printf '%s' "$HELM_NPM_PACKAGE" | tr -c 'A-Za-z0-9.-' '_')"
BUILD_DIR="$QUICLB_CACHE/build"

KUBE_APISERVER="$K8S_DIR/kube-apiserver"
KUBE_CONTROLLER_MANAGER="$K8S_DIR/kube-controller-manager"
KUBE_SCHEDULER="$K8S_DIR/kube-scheduler"
KUBECTL="$K8S_DIR/kubectl"
ETCD="$ETCD_DIR/etcd"
KWOK="$KWOK_DIR/kwok"
KWOKCTL="$KWOK_DIR/kwokctl"
HELM="$HELM_DIR/helm"

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# pick_ports N: prints N distinct TCP ports on 127.0.0.1 that nothing listens on, drawn at random from
# 20000-32767 (below the kernel's ephemeral range 32768-60999, so outgoing connections don't take them),
# so that two clusters started at the same time are very unlikely to collide.
pick_ports() {
  local n="$1" got="" p tries=0
  while [ "$(wc -w <<<"$got")" -lt "$n" ]; do
    tries=$((tries + 1)); [ "$tries" -lt 1000 ] || die "no free ports found"
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 12768))
    grep -qw "$p" <<<"$got" && continue
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue   # something listens there
    got="$got $p"
  done
  echo $got
}

# elapsed START_MS: seconds (one decimal) since START_MS (from `date +%s%3N`).
elapsed() { local ms=$(( $(date +%s%3N) - $1 )); printf '%d.%d' $((ms / 1000)) $(((ms % 1000) / 100)); }

# State folder of a named cluster (ports, certificates, kubeconfigs, logs, pid files, etcd data).
cluster_dir() { echo "${QUICLB_CLUSTER_ROOT:-${TMPDIR:-/tmp}}/quiclb-cluster-$1"; }

# proc_start PID: start time of the process (field 22 of /proc/PID/stat, clock ticks since boot). PID + start time
# identify one process for good: a reused PID has a later start time.
proc_start() {
  local s
  s="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  s="${s##*) }"   # drop "PID (comm) "; comm may contain spaces and parentheses
  # shellcheck disable=SC2086
  set -- $s
  echo "${20}"
}

# record_pid NAME PID BIN: what down.sh needs to recognise exactly this process later.
record_pid() {
  echo "$2" > "$D/pids/$1.pid"
  echo "$3" > "$D/pids/$1.bin"
  proc_start "$2" > "$D/pids/$1.start" || true
}

# pid_matches PIDFILE BINFILE: the recorded process is alive: same PID, same start time, same argv[0]
# (guards against PID reuse; pid_max is only 32768 on some machines).
pid_matches() {
  local pid bin start exe
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  bin="$(cat "$2" 2>/dev/null)" || return 1
  start="$(cat "${1%.pid}.start" 2>/dev/null)" || return 1
  [ -n "$start" ] && [ "$(proc_start "$pid")" = "$start" ] || return 1
  exe="$( { tr '\0' '\n' < "/proc/$pid/cmdline"; } 2>/dev/null | head -n 1)"
  [ "$exe" = "$bin" ]
}

# cluster_alive DIR: does any process recorded in DIR still run?
cluster_alive() {
  local f
  for f in "$1"/pids/*.pid; do
    [ -f "$f" ] || continue
    pid_matches "$f" "${f%.pid}.bin" && return 0
  done
  return 1
}
