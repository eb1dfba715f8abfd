#!/usr/bin/env bash
# Debian packages the tests use: real QUIC peers (ngtcp2 client/server, GnuTLS), iproute2, openssl, and
# gcc/make. Idempotent; installs only what is missing.
set -euo pipefail
need=()
command -v gtlsclient >/dev/null || need+=(ngtcp2-client)
[ -x /usr/sbin/gtlsserver ] || command -v gtlsserver >/dev/null || need+=(ngtcp2-server)
command -v openssl >/dev/null || need+=(openssl)
command -v ip >/dev/null || need+=(iproute2)
command -v cc >/dev/null || need+=(gcc)
command -v make >/dev/null || need+=(make)
exec bash "$(dirname "$0")/apt-install-missing.sh" "${need[@]}"
