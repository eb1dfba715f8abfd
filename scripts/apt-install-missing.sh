#!/usr/bin/env bash
# Installs the named Debian packages (the caller has already found them missing) without letting their
# maintainer scripts start services (a policy-rc.d that answers 101, e.g. nginx would start on :80).
# Usage: scripts/apt-install-missing.sh PKG...   (no arguments: nothing to do)
set -euo pipefail
[ $# -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: $* (run as root, or: sudo apt-get install -y $*)" >&2
  exit 1
fi
echo "installing: $*" >&2
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$@" >/dev/null
