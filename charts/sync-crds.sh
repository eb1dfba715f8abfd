#!/usr/bin/env sh
# Copies the CRDs (source of truth: crds/) into the chart, which renders them from files/crds/.
# test/chart/crds.test.ts fails while the copy differs.
set -eu
cd "$(dirname "$0")/.."
rm -f charts/quiclb/files/crds/*.yaml
cp crds/*.yaml charts/quiclb/files/crds/
