#!/bin/sh
# kuasar-vmm release bundle installer. From the directory the bundle was extracted into:
#   ./install.sh [--dest-dir DIR] [--hypervisor qemu|cloud-hypervisor|stratovirt]
#   ./install.sh --uninstall [--dest-dir DIR]
# It checks the extracted files against SHA256SUMS, then runs install-vmm (lib/install.cjs) on the bundle's own
# node (bin/node): the host needs POSIX sh and coreutils, no Node.js and no source tree.
set -eu

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
node="$here/bin/node"

fail() {
	printf 'install.sh: %s\n' "$*" >&2
	exit 1
}

uninstall=
for arg in "$@"; do
	[ "$arg" = --uninstall ] && uninstall=1
done

if [ -z "$uninstall" ]; then
	command -v sha256sum >/dev/null 2>&1 || fail "sha256sum is missing; install coreutils (apt-get install -y coreutils)"
	# A truncated or altered extraction is refused before anything is written.
	if ! (cd "$here" && sha256sum --check --quiet --strict SHA256SUMS >/dev/null 2>&1); then
		bad=$(cd "$here" && sha256sum --check --quiet SHA256SUMS 2>&1 | head -n 5 || true)
		fail "the files in $here do not match its SHA256SUMS (re-extract the bundle):
$bad"
	fi
fi

[ -x "$node" ] || fail "$node is missing or not executable; re-extract the bundle"
# The bundled node is an x86_64 glibc program (libc6, libstdc++6): say so plainly when it cannot start here.
if ! why=$("$node" -e '' 2>&1); then
	fail "the bundled node ($node) does not run on this host ($(uname -sm)): $why
It needs x86_64 Linux with the C and C++ runtime libraries (Debian: libc6, libstdc++6)."
fi

exec "$node" "$here/lib/install.cjs" --bin-dir "$here/bin" "$@"
