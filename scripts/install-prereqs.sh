#!/usr/bin/env bash
# Installs the Debian packages and npm modules kuasar-vmm needs. Idempotent: a machine that has
# everything is left alone (no apt-get update, no npm ci when node_modules matches the lock file).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[prereqs] %s\n' "$*"; }

# bookworm packages: VMM, guest userland, kernel build, image tools, networking
BOOKWORM_PKGS=(qemu-system-x86 qemu-utils busybox-static runc e2fsprogs cpio gzip xz-utils flex bison bc libelf-dev libssl-dev patch
  linux-source-6.1 build-essential python3 iproute2 iptables containernetworking-plugins socat systemd kmod file procps util-linux zstd)
# Only these two come from sid, pinned low so nothing else (libc!) is upgraded.
SID_PKGS=(containerd vhost-device-vsock)

# One dpkg-query for all of them: this runs before every make target, so it must cost little.
declare -A installed=()
while read -r name status; do
  [ "$status" = "install ok installed" ] && installed[$name]=1
done < <(dpkg-query -W -f='${Package} ${Status}\n' "${BOOKWORM_PKGS[@]}" "${SID_PKGS[@]}" 2>/dev/null || true)
missing=()
for p in "${BOOKWORM_PKGS[@]}" "${SID_PKGS[@]}"; do
  [ -n "${installed[$p]:-}" ] || missing+=("$p")
done

if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "[prereqs] missing Debian packages: ${missing[*]}; run this script as root (it uses apt-get)" >&2
    exit 1
  fi
  log "installing Debian packages: ${missing[*]}"
  mirror=$(grep -h -m1 -oE 'https?://[^ ]+/debian/?$' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -1 || true)
  mirror=${mirror:-$(grep -h -m1 -oE 'https?://[^ ]+/debian' /etc/apt/sources.list.d/* /etc/apt/sources.list 2>/dev/null | head -1)}
  if [ ! -f /etc/apt/sources.list.d/sid.sources ]; then
    printf 'Types: deb\nURIs: %s\nSuites: sid\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" >/etc/apt/sources.list.d/sid.sources
  fi
  printf 'Package: *\nPin: release n=sid\nPin-Priority: 100\n' >/etc/apt/preferences.d/sid-pin
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o Acquire::Check-Valid-Until=false update -qq
  apt-get install -y -qq --no-install-recommends "${BOOKWORM_PKGS[@]}" >/dev/null
  apt-get install -y -qq --no-install-recommends containerd/sid vhost-device-vsock/sid runc >/dev/null
  log "libc is $(dpkg-query -W -f='${Version}' libc6), runc is $(dpkg-query -W -f='${Version}' runc)"
fi

# npm modules: reinstall only when the lock file changed since the last install
if [ -f package-lock.json ]; then
  stamp=node_modules/.lock-sha256
  want=$(sha256sum package-lock.json | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "npm ci"
    npm ci --no-audit --no-fund --loglevel=error
    echo "$want" >"$stamp"
  fi
fi
log "ready"
