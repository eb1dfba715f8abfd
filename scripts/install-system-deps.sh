#!/usr/bin/env bash
# Debian packages the tests and benchmarks use: real QUIC peers (ngtcp2 client/server, GnuTLS), iproute2,
# openssl, and gcc/make for the benchmark's C load generator. Idempotent; installs only what is missing.
set -euo pipefail
need=()
command -v gtlsclient >/dev/null || need+=(ngtcp2-client)
[ -x /usr/sbin/gtlsserver ] || command -v gtlsserver >/dev/null || need+=(ngtcp2-server)
command -v openssl >/dev/null || need+=(openssl)
command -v ip >/dev/null || need+=(iproute2)
command -v cc >/dev/null || need+=(gcc)
command -v make >/dev/null || need+=(make)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${need[*]} (run as root, or: sudo apt-get install -y ${need[*]})" >&2
  exit 1
fi
echo "installing: ${need[*]}"
# Keep packages from starting services (ngtcp2-server ships a unit) while they install.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
