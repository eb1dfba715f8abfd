#!/usr/bin/env bash
# Builds quicgo-backend (once per source hash) and prints the binary's absolute path as the only stdout line.
#   $QUICLB_CACHE/quicgo-backend/<first 16 hex of sha256(go.mod go.sum *.go)>/quicgo-backend (the cache root of
#   test/cluster/lib.sh: QUICLB_CACHE, else $XDG_CACHE_HOME/quiclb, else ~/.cache/quiclb). Go is needed only to build.
# Build chatter goes to stderr. Concurrent runs are safe: each builds to a temp name and renames it into place.
# `build.sh --check` runs go vet and go test (the QUIC-LB codec against the draft's vectors) instead, with the same
# environment.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${QUICLB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/quiclb}"
export PATH="/usr/local/go/bin:$PATH"
need_go() {
  command -v go >/dev/null 2>&1 || { echo "build.sh: go not found (expected /usr/local/go/bin/go)" >&2; exit 1; }
}
cd "$here"
# the hash covers go.mod, go.sum and every *.go (names in C-locale order, so it is stable)
files=(go.mod go.sum)
while IFS= read -r f; do files+=("$f"); done < <(ls -1 -- *.go | LC_ALL=C sort)
hash="$(cat -- "${files[@]}" | sha256sum | cut -c1-16)"
outdir="$cache/quicgo-backend/$hash"
bin="$outdir/quicgo-backend"
export GOMODCACHE="${GOMODCACHE:-$cache/gomod}" GOPATH="${GOPATH:-$cache/gopath}" GOCACHE="${GOCACHE:-$cache/gocache}"
# go.mod and go.sum are checked in and complete: the default -mod=readonly fails loudly on drift instead of editing them
export CGO_ENABLED=0 GOTOOLCHAIN=local
if [ "${1:-}" = --check ]; then
  need_go
  go vet -p=2 ./... 1>&2
  exec go test -p=2 -count=1 ./... 1>&2
fi
if [ ! -x "$bin" ]; then
  need_go
  mkdir -p "$outdir"
  tmp="$(mktemp "$outdir/.quicgo-backend.XXXXXX")"
  trap 'rm -f "$tmp"' EXIT
  start=$(date +%s)
  # -buildvcs=false: git may refuse VCS stamping on a checkout owned by another user (as test/cluster/build.sh)
  if ! go build -buildvcs=false -trimpath -p=2 -o "$tmp" . 1>&2; then
    echo "build.sh: go build failed in $here" >&2
    exit 1
  fi
  chmod 0755 "$tmp"
  mv -f "$tmp" "$bin"
  trap - EXIT
  echo "build.sh: built $bin in $(( $(date +%s) - start )) s" >&2
fi
echo "$bin"
