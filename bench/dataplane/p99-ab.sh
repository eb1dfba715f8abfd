#!/bin/bash
# Alternating latency runs, nginx then quiclb (then any extra peers), under the benchmark's harness: per rep and peer
# a fresh peer process, a 4 s warm-up, then 4 s at 20k round trips/s of 64 B datagrams (SIZE=N: N bytes); prints per run
# "peer rep p50 p99 p999 loss% cpu p90 p98", latencies in us, cpu being the peer's CPU (every process of its session,
# /proc) per forwarded datagram in us over the measured 4 s, and at the end each peer's medians.
# gen and the echo backends on CPU 0, the peer alone on CPU 1, all at nice -10 (bench/dataplane/README.md, Method).
#
#   bash bench/dataplane/p99-ab.sh [REPS [NAME:VAR=VALUE[,VAR=VALUE...] ...]]
#     REPS: default 8. Run as root after one `npm run bench:dataplane`, which builds gen/echo and writes the quiclb
#     config and DCIDs used here. Each NAME:... adds a quiclb peer run with that environment, e.g.
#   bash bench/dataplane/p99-ab.sh 8 busypoll:QUICLB_IO_BUSY_POLL_US=50 prev:QUICLB_IO_ADDON=/tmp/prev/quiclb_io.node
#   QUICLB_ENV="QUICLB_IO_BUSY_POLL_US=50" bash bench/dataplane/p99-ab.sh 8     (the quiclb peer itself with an environment)
#   SIZE=1200 bash bench/dataplane/p99-ab.sh 8     (datagrams of 1200 B instead of 64)
#
# quiclb runs as installed: bin/quiclb.js over dist/ (`npm run build` first) with its shebang's node flags.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS=${1:-8}
SIZE=${SIZE:-64}
[[ "$SIZE" =~ ^[0-9]+$ ]] && ((SIZE >= 64 && SIZE <= 1472)) || { echo "p99-ab: SIZE must be a datagram size of 64..1472 bytes" >&2; exit 2; }
shift || true
PEERS=(nginx quiclb)
declare -A PEER_ENV=([quiclb]="${QUICLB_ENV:-}")
for spec in "$@"; do
  name=${spec%%:*}
  [[ "$spec" == *:* && "$name" =~ ^[A-Za-z0-9_-]+$ && "$name" != nginx && -z "${PEER_ENV[$name]+x}" ]] ||
    { echo "p99-ab: '$spec' is not NAME:VAR=VALUE[,VAR=VALUE...] with a new NAME" >&2; exit 2; }
  PEERS+=("$name")
  PEER_ENV[$name]=${spec#*:}
  PEER_ENV[$name]=${PEER_ENV[$name]//,/ }
done
W=${BENCH_WORK:-$HOME/.cache/quiclb/bench}
for f in "$W/quiclb-bench.yaml" "$W/dcids.txt" "$W/gen" "$W/echo" dist/cli/main.js; do
  [ -e "$f" ] || { echo "p99-ab: $f missing (run npm run bench:dataplane once, and npm run build)" >&2; exit 2; }
done
# as run.ts does: a generator older than its source is rebuilt (the per-run line needs its percentile list)
[ "$W/gen" -nt bench/dataplane/gen.c ] || cc -O2 -Wall -o "$W/gen" bench/dataplane/gen.c
LP=$(grep -A1 '^listen:' "$W/quiclb-bench.yaml" | tail -1 | sed 's/.*://')
EPORT=$(grep -m1 'address: 127.0.0.2' "$W/quiclb-bench.yaml" | sed 's/.*://')
NODE_FLAGS=$(head -1 bin/quiclb.js | sed 's/^.* node //')
P=$(mktemp -d /tmp/quiclb-p99ab.XXXXXX)
cat >"$P/nginx.conf" <<NG
daemon off;
master_process on;
worker_processes 1;
pid $P/nginx.pid;
error_log $P/error.log warn;
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
events { worker_connections 8192; }
stream {
  upstream echo_backends {
    hash \$remote_addr\$remote_port consistent;
    server 127.0.0.2:$EPORT; server 127.0.0.3:$EPORT; server 127.0.0.4:$EPORT; server 127.0.0.5:$EPORT;
  }
  server { listen 127.0.0.1:$LP udp reuseport rcvbuf=4m sndbuf=4m; proxy_pass echo_backends; proxy_timeout 30s; }
}
NG
taskset -c 0 nice -n -10 "$W/echo" -a "127.0.0.2:$EPORT" -a "127.0.0.3:$EPORT" -a "127.0.0.4:$EPORT" -a "127.0.0.5:$EPORT" >/dev/null 2>&1 &
ECHO_PID=$!
PEER_PID=
cleanup() {
  [ -n "$PEER_PID" ] && kill -- "-$PEER_PID" 2>/dev/null || true
  kill "$ECHO_PID" 2>/dev/null || true
  rm -rf "$P"
}
trap cleanup EXIT
gen() { taskset -c 0 nice -n -10 "$W/gen" -t "127.0.0.1:$LP" -n 32 -s "$SIZE" -r 20000 -d 4 -f "$W/dcids.txt"; }
# CPU ticks (user + system) of every process in session $1
session_ticks() {
  local t=0 pid f
  for pid in $(ps -o pid= -s "$1"); do
    f=$(cut -d' ' -f14,15 "/proc/$pid/stat" 2>/dev/null) || continue
    t=$((t + ${f% *} + ${f#* }))
  done
  echo "$t"
}
RESULTS="$P/results"
for rep in $(seq 1 "$REPS"); do
  for peer in "${PEERS[@]}"; do
    if [ "$peer" = nginx ]; then
      setsid taskset -c 1 nice -n -10 nginx -p "$P" -c "$P/nginx.conf" -e "$P/error.log" &
    else
      # --io batched: a missing addon is an error here, not a silent run of the node:dgram fallback.
      # shellcheck disable=SC2086 # NODE_FLAGS and the peer's environment are word lists
      setsid taskset -c 1 nice -n -10 env NODE_OPTIONS= ${PEER_ENV[$peer]} node_modules/node/bin/node $NODE_FLAGS bin/quiclb.js standalone --config "$W/quiclb-bench.yaml" --io batched >"$P/quiclb.log" 2>&1 &
    fi
    PEER_PID=$!
    for i in $(seq 1 51); do
      ss -uln | grep -q ":$LP " && break
      [ "$i" = 51 ] && { echo "p99-ab: $peer is not listening on :$LP after 5 s (logs follow):" >&2; cat "$P/quiclb.log" "$P/error.log" >&2 2>/dev/null; exit 1; }
      sleep 0.1
    done
    gen >/dev/null
    t0=$(session_ticks "$PEER_PID")
    out=$(gen)
    t1=$(session_ticks "$PEER_PID")
    python3 -c 'import json,os,sys; r=json.loads(sys.argv[3]); cpu=(int(sys.argv[5])-int(sys.argv[4]))/os.sysconf("SC_CLK_TCK")
print(sys.argv[1], sys.argv[2], r["p50_us"], r["p99_us"], r["p999_us"], r["loss_pct"], round(cpu*1e6/(2*r["recv"]), 2) if r["recv"] else "-", r["pcts_us"][2], r["pcts_us"][5])' \
      "$peer" "$rep" "$out" "$t0" "$t1" | tee -a "$RESULTS"
    kill -- "-$PEER_PID" 2>/dev/null || true
    wait "$PEER_PID" 2>/dev/null || true
    PEER_PID=
    sleep 0.3
  done
done
echo "medians over $REPS reps: peer p50 p99 p999 cpu_us_per_datagram p90 p98, then p99 / nginx's p99 of the same rep: median, reps <= 1"
python3 - "$RESULTS" "${PEERS[@]}" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
nginx = {r[1]: float(r[3]) for r in rows if r[0] == "nginx"}
for peer in sys.argv[2:]:
    mine = [r for r in rows if r[0] == peer]
    med = lambda i: statistics.median(float(r[i]) for r in mine if r[i] != "-")
    ratios = [float(r[3]) / nginx[r[1]] for r in mine if nginx.get(r[1]) and float(r[3]) > 0]  # p99 0: no replies
    paired = "" if peer == "nginx" or not ratios else f" {statistics.median(ratios):.2f}x {sum(x <= 1 for x in ratios)}/{len(ratios)}"
    print(peer, med(2), med(3), med(4), round(med(6), 2), med(7), med(8), paired.strip() or "-")
PY
