#!/bin/bash
# Alternating latency runs, nginx then quiclb, under the benchmark's harness: per rep and peer a fresh peer process,
# a 4 s warm-up, then 4 s at 20k round trips/s of 64 B datagrams; prints "peer rep p50 p99 p999 loss%".
# gen and the echo backends on CPU 0, the peer alone on CPU 1, all at nice -10 (bench/dataplane/README.md, Method).
#
#   bash bench/dataplane/p99-ab.sh [REPS]        (default 8; run as root after one `npm run bench:dataplane`, which
#                                                 builds gen/echo and writes the quiclb config and DCIDs used here)
#   QUICLB_ENV="QUICLB_IO_BUSY_POLL_US=50" bash bench/dataplane/p99-ab.sh 8     (quiclb with an environment)
#
# quiclb runs as installed: bin/quiclb.js over dist/ (`npm run build` first) with its shebang's node flags.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS=${1:-8}
W=${BENCH_WORK:-$HOME/.cache/quiclb/bench}
for f in "$W/quiclb-bench.yaml" "$W/dcids.txt" "$W/gen" "$W/echo" dist/cli/main.js; do
  [ -e "$f" ] || { echo "p99-ab: $f missing (run npm run bench:dataplane once, and npm run build)" >&2; exit 2; }
done
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
gen() { taskset -c 0 nice -n -10 "$W/gen" -t "127.0.0.1:$LP" -n 32 -s 64 -r 20000 -d 4 -f "$W/dcids.txt"; }
for rep in $(seq 1 "$REPS"); do
  for peer in nginx quiclb; do
    if [ "$peer" = nginx ]; then
      setsid taskset -c 1 nice -n -10 nginx -p "$P" -c "$P/nginx.conf" -e "$P/error.log" &
    else
      # --io batched: a missing addon is an error here, not a silent run of the node:dgram fallback.
      # shellcheck disable=SC2086 # NODE_FLAGS and QUICLB_ENV are word lists
      setsid taskset -c 1 nice -n -10 env NODE_OPTIONS= ${QUICLB_ENV:-} node_modules/node/bin/node $NODE_FLAGS bin/quiclb.js standalone --config "$W/quiclb-bench.yaml" --io batched >"$P/quiclb.log" 2>&1 &
    fi
    PEER_PID=$!
    for i in $(seq 1 51); do
      ss -uln | grep -q ":$LP " && break
      [ "$i" = 51 ] && { echo "p99-ab: $peer is not listening on :$LP after 5 s (logs follow):" >&2; cat "$P/quiclb.log" "$P/error.log" >&2 2>/dev/null; exit 1; }
      sleep 0.1
    done
    gen >/dev/null
    gen | python3 -c 'import json,sys; r=json.load(sys.stdin); print(sys.argv[1], sys.argv[2], r["p50_us"], r["p99_us"], r["p999_us"], r["loss_pct"])' "$peer" "$rep"
    kill -- "-$PEER_PID" 2>/dev/null || true
    wait "$PEER_PID" 2>/dev/null || true
    PEER_PID=
    sleep 0.3
  done
done
