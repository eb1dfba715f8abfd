#!/usr/bin/env bash
# Builds quicgo-backend (once per source hash) and prints the binary's absolute path as the only stdout line.
#   ${QUICLB_CACHE:-$HOME/.cache/quiclb}/quicgo-backend/<first 16 hex of sha256(go.mod go.sum *.go)>/quicgo-backend
# Build chatter goes to stderr. Concurrent runs are safe: each builds to a temp name and renames it into place.
# `build.sh --check` runs go vet and go test (the QUIC-LB codec against the draft's vectors) instead, with the same
# environment.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${QUICLB_CACHE:-$HOME/.cache/quiclb}"
export PATH="/usr/local/go/bin:$PATH"
if ! command -v go >/dev/null 2>&1; then
  echo "build.sh: go not found (expected /usr/local/go/bin/go)" >&2
  exit 1
fi
cd "$here"
# the hash covers go.mod, go.sum and every *.go (names in C-locale order, so it is stable)
files=(go.mod go.sum)
while IFS= read -r f; do files+=("$f"); done < <(ls -1 -- *.go | LC_ALL=C sort)
hash="$(cat -- "${files[@]}" | sha256sum | cut -c1-16)"
outdir="$cache/quicgo-backend/$hash"
bin="$outdir/quicgo-backend"
export GOMODCACHE="${GOMODCACHE:-$cache/gomod}" GOPATH="${GOPATH:-$cache/gopath}" GOCACHE="${GOCACHE:-$cache/gocache}"
export GOFLAGS="${GOFLAGS:--mod=mod}" CGO_ENABLED=0 GOTOOLCHAIN=local
if [ "${1:-}" = --check ]; then
  go vet -p=2 ./... 1>&2
  exec go test -p=2 -count=1 ./... 1>&2
fi
if [ ! -x "$bin" ]; then
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
