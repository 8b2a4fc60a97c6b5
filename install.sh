#!/usr/bin/env bash
# Install cci from this checkout:
#   1. prepares Incus on this machine (misc/setup-host.sh: installs and starts
#      it, creates a storage pool and a bridge where none exist);
#      skip with CCI_SKIP_INCUS_SETUP=1
#   2. builds cci (release) and installs it as $PREFIX/bin/cci (default /usr/local)
#   3. adds the invoking user to the incus-admin group, so cci can use the socket
# Usage: ./install.sh        then: cci health
set -euo pipefail
cd "$(dirname "$0")"
PREFIX=${PREFIX:-/usr/local}

say() { printf '[install] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

command -v cargo >/dev/null ||
    die "cargo not found: install Rust (https://rustup.rs, or 'apt-get install cargo' on Debian 13+) and run again"

if [ "${CCI_SKIP_INCUS_SETUP:-0}" != 1 ]; then
    as_root env CCI_POOL="${CCI_POOL:-default}" CCI_BRIDGE="${CCI_BRIDGE:-incusbr0}" bash misc/setup-host.sh
fi

say "building cci"
cargo build --release --locked --quiet
as_root install -D -m 0755 target/release/cci "$PREFIX/bin/cci"
say "installed $PREFIX/bin/cci ($("$PREFIX/bin/cci" --version))"

user=${SUDO_USER:-$(id -un)}
if [ "$user" != root ] && ! id -nG "$user" | tr ' ' '\n' | grep -qx incus-admin; then
    as_root usermod -aG incus-admin "$user"
    say "added $user to incus-admin: log in again (or run 'newgrp incus-admin') before using cci"
fi
say "done; check the setup with: cci health"
