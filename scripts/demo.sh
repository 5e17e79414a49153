#!/usr/bin/env bash
# The main job (npm run demo): installs prerequisites, builds every artifact (cached), then starts vmm-sandboxer
# in a private directory and runs a pod with a container in a VM, printing each phase and its time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-prereqs.sh
node pipeline/bin/kuasar-build.js all sandboxer
exec node --import tsx scripts/demo.ts "$@"
