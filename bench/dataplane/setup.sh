#!/usr/bin/env bash
# Debian packages for `npm run bench:dataplane`: nginx with the stream module (the UDP proxy the data plane is
# compared with), gcc (the C load generator and echo backends), util-linux (taskset). Idempotent: installs only
# what is missing, without letting nginx start a server on :80.
set -euo pipefail
need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
command -v cc >/dev/null || need+=(gcc)
command -v taskset >/dev/null || need+=(util-linux)
exec bash "$(dirname "$0")/../../scripts/apt-install-missing.sh" "${need[@]}"
