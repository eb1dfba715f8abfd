#!/usr/bin/env bash
# Debian packages the tests use: real QUIC peers (ngtcp2 client/server, GnuTLS), iproute2, openssl, and
# build-essential (gcc, make, libc headers). Idempotent; installs only what is missing.
set -euo pipefail
need=()
command -v gtlsclient >/dev/null || need+=(ngtcp2-client)
[ -x /usr/sbin/gtlsserver ] || command -v gtlsserver >/dev/null || need+=(ngtcp2-server)
command -v openssl >/dev/null || need+=(openssl)
command -v ip >/dev/null || need+=(iproute2)
# build-essential: a C compiler with the C library's headers (the batched I/O addon, native/; bench tools)
{ command -v cc >/dev/null && [ -e /usr/include/x86_64-linux-gnu/sys/socket.h ] || [ -e /usr/include/sys/socket.h ]; } || need+=(build-essential)
command -v make >/dev/null || need+=(make)
exec bash "$(dirname "$0")/apt-install-missing.sh" "${need[@]}"
