#!/usr/bin/env bash
# Regenerates the TypeScript for every .proto under runtime/protos into gen/
# (or into $1, which the freshness test uses). Offline: buf compiles with its
# built-in well-known types and runs the protoc-gen-es from node_modules.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$here/gen}"
buf="$root/node_modules/.bin/buf"
plugin="$root/node_modules/.bin/protoc-gen-es"
for tool in "$buf" "$plugin"; do
  [[ -x "$tool" ]] || { echo "generate.sh: $tool is missing; run npm ci in $root" >&2; exit 1; }
done
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$here"
"$buf" generate --template buf.gen.yaml --output "$tmp" .
rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$tmp/gen" "$out"
