#!/usr/bin/env bash
# The test command (npm test): installs prerequisites, lints, type-checks, builds the artifacts
# (cached outside the clone), then runs every test with node's test runner.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-prereqs.sh
echo "== lint (biome, layers)"; npm run --silent lint
echo "== type check (tsc)"; npx tsc --noEmit
echo "== build artifacts"; node pipeline/bin/kuasar-build.js all
echo "== tests"
# The daemon's mounts go through the ns addon: tests that mount load the one the build ships.
export KUASAR_NS_ADDON="${KUASAR_NS_ADDON:-$PWD/bin/ns.node}"
mapfile -t files < <(find test -name '*.test.ts' | sort)
# One file at a time: VM tests share 2 cores, and a tight CPU makes TCG guests slow.
exec node --import tsx --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
