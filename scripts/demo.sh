#!/usr/bin/env bash
# The main job (npm run demo): installs prerequisites, builds every artifact (cached), then starts a private
# containerd 2.1 and vmm-sandboxer and runs a pod with a container in a VM through CRI, printing each phase.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-prereqs.sh
node pipeline/bin/kuasar-build.js all sandboxer
exec node --import tsx scripts/demo.ts "$@"
