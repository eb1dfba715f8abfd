#!/usr/bin/env bash
# The whole test suite (the README's `npm test`): type check, lint, unit/component/e2e tests, and the
# real-cluster integration suite. Ends with the line "N passed, N failed" that CI reads.
set -uo pipefail
cd "$(dirname "$0")/.."

out=$(mktemp -d "${TMPDIR:-/tmp}/quiclb-test.XXXXXX")
trap 'rm -rf "$out"' EXIT
passed=0
failed=0

step() { # name command...: a check that counts as one test
  local name=$1; shift
  echo "== $name"
  if "$@"; then passed=$((passed + 1)); else echo "FAILED: $name"; failed=$((failed + 1)); fi
}

count_jest() { # json file: adds jest's per-test counts; a missing or broken report counts as a failure
  local counts
  # A suite that failed to load (syntax error, failing import) has no per-test results: count it as one failure.
  if counts=$(node -e 'const r=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));
      const broken=r.testResults.filter(t=>t.status==="failed"&&t.assertionResults.length===0).length;
      console.log(r.numPassedTests, r.numFailedTests + broken)' "$1" 2>/dev/null); then
    read -r p f <<<"$counts"
    passed=$((passed + p)); failed=$((failed + f))
  else
    echo "no test report at $1"; failed=$((failed + 1))
  fi
}

step "system packages" bash scripts/install-system-deps.sh
# The batched I/O addon, if `npm install` ran before the C compiler was installed (a warning then, not a failure),
# or its source changed since (a no-op when the build is up to date).
node native/build.mjs
# On Linux the batched path is the one the data plane runs: a suite that silently fell back to node:dgram would
# leave it untested, so an addon that does not build fails the run here.
if [ "$(uname -s)" = Linux ]; then step "batched I/O addon built (native/build/quiclb_io.node)" test -f native/build/quiclb_io.node; fi
step "typecheck (tsc --noEmit)" npx tsc --noEmit
step "lint (eslint)" npx eslint .

echo "== unit, component and end-to-end tests (jest)"
NODE_OPTIONS=--experimental-vm-modules npx jest --json --outputFile="$out/unit.json" 2>&1 | tail -n 60
count_jest "$out/unit.json"

# The run above uses the batched I/O path where its addon is built (io: auto); the suites that exercise the data
# plane's sockets run again on the node:dgram fallback, so both paths stay correct: forwarding (full proxy, IPv4 and
# IPv6, reload, flow expiry, refused sends), health probes, the standalone runner, real QUIC end to end (plain,
# migrating, two instances, the config channel's data plane processes). test/dataplane/forwarder-paths.test.ts and
# batched-io.test.ts force their path themselves; workers with SO_REUSEPORT are tested on both paths there, and the
# negative controls of quic-lb-migration (4-tuple mode, naive forwarder) do not depend on the path.
if [ -f native/build/quiclb_io.node ]; then
  echo "== data-plane socket suites on the node:dgram I/O path (QUICLB_IO=dgram)"
  QUICLB_IO=dgram NODE_OPTIONS=--experimental-vm-modules npx jest --json --outputFile="$out/dgram.json" \
    test/dataplane/forwarder.test.ts test/dataplane/forwarder-lifecycle.test.ts test/dataplane/hardening-reload.test.ts \
    test/dataplane/health.test.ts test/dataplane/standalone.test.ts test/e2e/plain-forwarding.test.ts \
    test/e2e/consistent-instances.test.ts 2>&1 | tail -n 20
  count_jest "$out/dgram.json"
  QUICLB_IO=dgram NODE_OPTIONS=--experimental-vm-modules npx jest --json --outputFile="$out/dgram-some.json" \
    test/dataplane/fuzz.test.ts test/e2e/quic-lb-migration.test.ts test/e2e/config-channel.test.ts \
    -t 'real sockets|^QUIC-LB routing through quiclb|1\. snapshot -> ACK -> a real QUIC transfer' 2>&1 | tail -n 20
  count_jest "$out/dgram-some.json"
else
  echo "== batched I/O addon not built (native/build/quiclb_io.node): the run above used node:dgram"
fi

# The journey's quic-go backend (test/journey/quicgo-backend): its QUIC-LB codec against the draft's vectors, and the
# program the integration suite's journey runs (built once per source version, cached outside the repo).
step "quic-go backend: go vet, go test (QUIC-LB codec vectors)" bash test/journey/quicgo-backend/build.sh --check
step "quic-go backend built" bash test/journey/quicgo-backend/build.sh

if [ -x test/cluster/ci-integration.sh ]; then
  echo "== integration tests against a real control plane"
  test/cluster/ci-integration.sh "$out/integration.json"
  count_jest "$out/integration.json"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
