#!/usr/bin/env bash
# Get a token for a ServiceAccount of a running test cluster (TokenRequest API), so that a component under test
# runs with that ServiceAccount's RBAC instead of as admin.
#
# Usage: token.sh [--name CLUSTER] [--duration 1h] [--create] [--kubeconfig OUT] NAMESPACE SERVICEACCOUNT
#   --create      create the namespace and the ServiceAccount first if they do not exist
#   --kubeconfig  write a kubeconfig that authenticates with the token to OUT (and print nothing)
# Without --kubeconfig the token is printed on stdout.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME="${QUICLB_CLUSTER_NAME:-dev}"
DURATION=1h
CREATE=0
OUT=""
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --create) CREATE=1; shift ;;
    --kubeconfig) OUT="$2"; shift 2 ;;
    -*) die "unknown option: $1" ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
[ "${#ARGS[@]}" -eq 2 ] || die "usage: token.sh [--name CLUSTER] [--duration 1h] [--create] [--kubeconfig OUT] NAMESPACE SERVICEACCOUNT"
NS="${ARGS[0]}"; SA="${ARGS[1]}"

D="$(cluster_dir "$NAME")"
[ -f "$D/cluster.env" ] || die "cluster '$NAME' is not running (no $D/cluster.env)"
K() { "$KUBECTL" --kubeconfig "$D/admin.kubeconfig" --cache-dir "$D/run/kube-cache" "$@"; }

if [ "$CREATE" = 1 ]; then
  K get namespace "$NS" >/dev/null 2>&1 || K create namespace "$NS" >/dev/null
  K get serviceaccount "$SA" -n "$NS" >/dev/null 2>&1 || K create serviceaccount "$SA" -n "$NS" >/dev/null
fi
TOKEN="$(K create token "$SA" -n "$NS" --duration "$DURATION")"

if [ -z "$OUT" ]; then
  printf '%s\n' "$TOKEN"
  exit 0
fi
SERVER="$(sed -n 's/^QUICLB_APISERVER=//p' "$D/cluster.env")"
umask 077
cat > "$OUT" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: quiclb-$NAME
  cluster:
    server: $SERVER
    certificate-authority-data: $(base64 -w0 < "$D/pki/ca.crt")
users:
- name: system:serviceaccount:$NS:$SA
  user:
    token: $TOKEN
contexts:
- name: $SA@quiclb-$NAME
  context:
    cluster: quiclb-$NAME
    user: system:serviceaccount:$NS:$SA
    namespace: $NS
current-context: $SA@quiclb-$NAME
EOF
