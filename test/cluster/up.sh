#!/usr/bin/env bash
# Start a real Kubernetes control plane on loopback, from the binaries test/cluster/build.sh caches.
#
#   tier 1: etcd + kube-apiserver (RBAC on, real certificates, TokenRequest for ServiceAccounts)
#   tier 2: tier 1 + kube-controller-manager + kube-scheduler + kwok with fake nodes
#
# Usage: up.sh [--tier 1|2] [--name NAME] [--nodes N] [--owner-pid PID]
#   --name       cluster name; its state lives in ${QUICLB_CLUSTER_ROOT:-${TMPDIR:-/tmp}}/quiclb-cluster-NAME
#   --nodes      number of kwok fake nodes (tier 2), default 3
#   --owner-pid  tear the cluster down by itself once that process is gone (used by the jest harness)
# Env defaults: QUICLB_CLUSTER_TIER (2), QUICLB_CLUSTER_NAME (dev), QUICLB_KWOK_NODES (3).
#
# On success it prints the path of "<state dir>/cluster.env" as its last stdout line. That file has
# KUBECONFIG (admin), QUICLB_APISERVER, QUICLB_KUBECTL, QUICLB_HELM, ... as KEY=value lines.
# Every process binds 127.0.0.1 only; ports are random free ones in 20000-32767.
# Stop it with down.sh (same --name), which kills exactly the PIDs recorded here and removes the state dir.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TIER="${QUICLB_CLUSTER_TIER:-2}"
NAME="${QUICLB_CLUSTER_NAME:-dev}"
NODES="${QUICLB_KWOK_NODES:-3}"
OWNER_PID=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tier) TIER="$2"; shift 2 ;;
    --name) NAME="$2"; shift 2 ;;
    --nodes) NODES="$2"; shift 2 ;;
    --owner-pid) OWNER_PID="$2"; shift 2 ;;
    *) die "unknown argument: $1" ;;
  esac
done
case "$TIER" in 1|2) ;; *) die "--tier must be 1 or 2" ;; esac
[[ "$NODES" =~ ^[0-9]+$ ]] || die "--nodes must be a non-negative integer, got '$NODES'"
[ -z "$OWNER_PID" ] || [[ "$OWNER_PID" =~ ^[0-9]+$ ]] || die "--owner-pid must be a PID, got '$OWNER_PID'"
[[ "$NAME" =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad cluster name: $NAME"

for b in "$ETCD" "$KUBE_APISERVER" "$KUBECTL"; do
  [ -x "$b" ] || die "missing $b: run test/cluster/build.sh first"
done
if [ "$TIER" = 2 ]; then
  for b in "$KUBE_CONTROLLER_MANAGER" "$KUBE_SCHEDULER" "$KWOK" "$KWOK_DIR/stages.yaml"; do
    [ -e "$b" ] || die "missing $b: run test/cluster/build.sh first"
  done
fi
command -v openssl >/dev/null || die "openssl is needed for the cluster's certificates (Debian: apt-get install openssl)"
command -v curl >/dev/null || die "curl is needed for the readiness checks (Debian: apt-get install curl)"

D="$(cluster_dir "$NAME")"
if [ -e "$D" ]; then
  if cluster_alive "$D"; then die "cluster '$NAME' is already running ($D); stop it with down.sh --name $NAME"; fi
  log "removing the leftovers of a dead cluster '$NAME'"
  bash "$CLUSTER_DIR/down.sh" --dir "$D" >/dev/null
fi
mkdir -p "$D"/{pki,logs,pids,run}
chmod 700 "$D"
touch "$D/.quiclb-cluster"
T0_MS=$(date +%s%3N)

# Any way out of this script before the cluster is up (a failed command, also inside a function, where an ERR trap
# does not reach; exit; die; Ctrl-C; SIGTERM; SIGHUP) stops what was started.
on_error() {
  local rc=$?
  trap - EXIT INT TERM HUP
  [ "$rc" -ne 0 ] || rc=1
  log "start-up failed (exit $rc); last log lines:"
  local f
  for f in "$D"/logs/*.log; do [ -f "$f" ] && { echo "---- $f" >&2; tail -n 25 "$f" >&2; }; done
  bash "$CLUSTER_DIR/down.sh" --dir "$D" >&2 || true
  exit "$rc"
}
trap on_error EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

if [ -n "$OWNER_PID" ]; then
  # Watchdog, started before any daemon: when the owner (e.g. the jest process) dies without tearing down, even
  # during this start-up, tear down anyway.
  QUICLB_WATCHDOG=1 setsid bash -c 'while kill -0 "$1" 2>/dev/null && [ -d "$2" ]; do sleep 2; done
    [ -d "$2" ] && exec bash "$3" --dir "$2"' watchdog "$OWNER_PID" "$D" "$CLUSTER_DIR/down.sh" \
    >"$D/logs/watchdog.log" 2>&1 </dev/null &
  record_pid watchdog $! bash
fi

# ------------------------------------------------------------------------------------------------ ports
read -r ETCD_PORT ETCD_PEER_PORT APISERVER_PORT KCM_PORT SCHED_PORT <<<"$(pick_ports 5)"

# ------------------------------------------------------------------------------------------------ PKI
# One EC P-256 CA signs the API server's serving cert and every client cert; the ServiceAccount token
# signing key is a separate EC key.
P="$D/pki"
(
  cd "$P"
  umask 077
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
  openssl req -x509 -new -key ca.key -subj "/CN=quiclb-test-ca" -days 2 -out ca.crt \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  # leaf NAME SUBJECT EXTENSIONS
  leaf() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key"
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
    printf '%s\n' "$3" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -set_serial "0x$(openssl rand -hex 12)" \
      -days 2 -extfile "$1.ext" -out "$1.crt"
    rm -f "$1.csr" "$1.ext"
  }
  leaf apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  client_ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  leaf admin "/O=system:masters/CN=quiclb-test-admin" "$client_ext"
  leaf kcm "/CN=system:kube-controller-manager" "$client_ext"
  leaf scheduler "/CN=system:kube-scheduler" "$client_ext"
  # kwok plays every kubelet of the fake nodes: it is test infrastructure, so it gets cluster-admin rights.
  leaf kwok "/O=system:masters/CN=kwok-controller" "$client_ext"
  # Front proxy (aggregation layer) identity, signed by its own CA as in kubeadm clusters. Without it the
  # controller-manager and scheduler log "missing content for CA bundle ... requestheader-client-ca-file" forever.
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out front-proxy-ca.key
  openssl req -x509 -new -key front-proxy-ca.key -subj "/CN=quiclb-test-front-proxy-ca" -days 2 -out front-proxy-ca.crt \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out front-proxy-client.key
  openssl req -new -key front-proxy-client.key -subj "/CN=front-proxy-client" -out front-proxy-client.csr
  printf '%s\n' "$client_ext" > front-proxy-client.ext
  openssl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key \
    -set_serial "0x$(openssl rand -hex 12)" -days 2 -extfile front-proxy-client.ext -out front-proxy-client.crt
  rm -f front-proxy-client.csr front-proxy-client.ext
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out sa.key
  openssl pkey -in sa.key -pubout -out sa.pub
) 2>"$D/logs/openssl.log"

# kubeconfig FILE USER: a self-contained kubeconfig (certificates embedded) for pki/USER.{crt,key}.
kubeconfig() {
  local b64='base64 -w0'
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: quiclb-$NAME
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $($b64 < "$P/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $($b64 < "$P/$2.crt")
    client-key-data: $($b64 < "$P/$2.key")
contexts:
- name: quiclb-$NAME
  context:
    cluster: quiclb-$NAME
    user: $2
current-context: quiclb-$NAME
EOF
  chmod 600 "$1"
}
kubeconfig "$D/admin.kubeconfig" admin
kubeconfig "$D/kcm.kubeconfig" kcm
kubeconfig "$D/scheduler.kubeconfig" scheduler
kubeconfig "$D/kwok.kubeconfig" kwok

# start NAME BINARY ARGS...: runs a daemon in its own session (so a Ctrl-C aimed at the caller doesn't hit it),
# logs to logs/NAME.log and records its PID and binary in pids/NAME.{pid,bin} for down.sh.
start() {
  local name="$1" bin="$2"; shift 2
  (
    # Do not hand the caller's open descriptors (pipes, lock files) to a daemon that outlives this script.
    for fd in /proc/self/fd/*; do fd="${fd##*/}"; [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done 2>/dev/null
    HOME="$D/run" exec setsid "$bin" "$@" >"$D/logs/$name.log" 2>&1 </dev/null
  ) &
  record_pid "$name" $! "$bin"
}
# alive NAME: is the recorded process still running?
alive() { kill -0 "$(cat "$D/pids/$1.pid")" 2>/dev/null; }
# wait_for WHAT SECONDS CMD...: poll CMD every 0.25 s; fail if it does not succeed in time or a daemon died.
wait_for() {
  local what="$1" secs="$2"; shift 2
  local deadline=$((SECONDS + secs)) n
  until "$@" >/dev/null 2>&1; do
    for n in "$D"/pids/*.pid; do
      n="$(basename "$n" .pid)"
      [ "$n" = watchdog ] && continue
      alive "$n" || { log "$n exited while waiting for $what"; return 1; }
    done
    [ $SECONDS -lt $deadline ] || { log "timed out after ${secs}s waiting for $what"; return 1; }
    sleep 0.25
  done
}
K() { "$KUBECTL" --kubeconfig "$D/admin.kubeconfig" --cache-dir "$D/run/kube-cache" "$@"; }

# ------------------------------------------------------------------------------------------------ etcd
log "starting etcd v$ETCD_VERSION on 127.0.0.1:$ETCD_PORT"
start etcd "$ETCD" --name quiclb --data-dir "$D/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "quiclb=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
  --unsafe-no-fsync --log-level warn
wait_for "etcd /readyz" 30 curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/readyz"

# ------------------------------------------------------------------------------------------------ kube-apiserver
APISERVER_ARGS=(
  --etcd-servers "http://127.0.0.1:$ETCD_PORT"
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT"
  --tls-cert-file "$P/apiserver.crt" --tls-private-key-file "$P/apiserver.key" --cert-dir "$D/run/apiserver"
  --client-ca-file "$P/ca.crt"
  --requestheader-client-ca-file "$P/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client
  --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group
  --requestheader-extra-headers-prefix X-Remote-Extra-
  --proxy-client-cert-file "$P/front-proxy-client.crt" --proxy-client-key-file "$P/front-proxy-client.key"
  --authorization-mode RBAC
  --service-account-issuer https://kubernetes.default.svc.cluster.local
  --service-account-key-file "$P/sa.pub" --service-account-signing-key-file "$P/sa.key"
  --service-cluster-ip-range 10.96.0.0/16
  --allow-privileged=true
  --endpoint-reconciler-type none
  --profiling=false
)
# Without a controller-manager no namespace gets its "default" ServiceAccount, and the ServiceAccount admission
# plugin would reject every pod.
[ "$TIER" = 1 ] && APISERVER_ARGS+=(--disable-admission-plugins ServiceAccount)
log "starting kube-apiserver v$K8S_VERSION on https://127.0.0.1:$APISERVER_PORT (tier $TIER)"
start kube-apiserver "$KUBE_APISERVER" "${APISERVER_ARGS[@]}"
wait_for "kube-apiserver /readyz" 90 K get --raw /readyz

if [ "$TIER" = 2 ]; then
  log "starting kube-controller-manager, kube-scheduler and kwok"
  start kube-controller-manager "$KUBE_CONTROLLER_MANAGER" \
    --kubeconfig "$D/kcm.kubeconfig" --authentication-kubeconfig "$D/kcm.kubeconfig" \
    --authorization-kubeconfig "$D/kcm.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --cert-dir "$D/run/kcm" \
    --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file "$P/sa.key" --root-ca-file "$P/ca.crt" \
    --cluster-signing-cert-file "$P/ca.crt" --cluster-signing-key-file "$P/ca.key" \
    --profiling=false
  start kube-scheduler "$KUBE_SCHEDULER" \
    --kubeconfig "$D/scheduler.kubeconfig" --authentication-kubeconfig "$D/scheduler.kubeconfig" \
    --authorization-kubeconfig "$D/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --cert-dir "$D/run/scheduler" \
    --leader-elect=false --profiling=false
  # No --server-address/--node-port: kwok then serves nothing (no kubelet API, nothing listens).
  # Fake pod IPs come from a documentation range and are never dialled.
  start kwok "$KWOK" --kubeconfig "$D/kwok.kubeconfig" --config "$KWOK_DIR/stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --cidr "${QUICLB_KWOK_POD_CIDR:-198.51.100.0/24}" --node-ip "${QUICLB_KWOK_NODE_IP:-203.0.113.10}" \
    --node-lease-duration-seconds 40

  nodes_yaml=""
  for i in $(seq 0 $((NODES - 1))); do
    nodes_yaml+="---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: \"0\"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: kwok-node-$i
    node-role.kubernetes.io/agent: \"\"
status:
  allocatable: {cpu: \"32\", memory: 256Gi, pods: \"110\"}
  capacity: {cpu: \"32\", memory: 256Gi, pods: \"110\"}
"
  done
  [ "$NODES" -gt 0 ] && K apply -f - <<<"$nodes_yaml" >/dev/null
  wait_for "kube-controller-manager /healthz" 60 curl -skf --max-time 2 "https://127.0.0.1:$KCM_PORT/healthz"
  wait_for "kube-scheduler /readyz" 60 curl -skf --max-time 2 "https://127.0.0.1:$SCHED_PORT/readyz"
  [ "$NODES" -gt 0 ] && wait_for "$NODES kwok nodes Ready" 60 K wait --for=condition=Ready node -l type=kwok --timeout=2s
  # The controller-manager's serviceaccount controller creates "default" in every namespace; pods need it.
  wait_for "the default ServiceAccount" 60 K get serviceaccount default -n default
fi

# A readiness probe may have been answered by another cluster's process on a colliding port: make sure every
# daemon of this cluster is still alive before declaring it up.
for n in etcd kube-apiserver $([ "$TIER" = 2 ] && echo kube-controller-manager kube-scheduler kwok); do
  alive "$n" || { log "$n is not running (port collision?); see $D/logs/$n.log"; exit 1; }
done

cat > "$D/cluster.env" <<EOF
QUICLB_CLUSTER_NAME=$NAME
QUICLB_CLUSTER_DIR=$D
QUICLB_CLUSTER_TIER=$TIER
QUICLB_APISERVER=https://127.0.0.1:$APISERVER_PORT
KUBECONFIG=$D/admin.kubeconfig
QUICLB_KUBECTL=$KUBECTL
QUICLB_HELM=$HELM
QUICLB_K8S_VERSION=v$K8S_VERSION
QUICLB_KWOK_NODES=$([ "$TIER" = 2 ] && echo "$NODES" || echo 0)
KUBECACHEDIR=$D/run/kube-cache
HELM_CACHE_HOME=$D/run/helm/cache
HELM_CONFIG_HOME=$D/run/helm/config
HELM_DATA_HOME=$D/run/helm/data
EOF
trap - EXIT INT TERM HUP
log "cluster '$NAME' (tier $TIER) is up in $(elapsed "$T0_MS") s: KUBECONFIG=$D/admin.kubeconfig"
echo "$D/cluster.env"
