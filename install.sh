#!/usr/bin/env bash
# Install cci from this checkout:
#   1. prepares Incus on this machine (misc/setup-host.sh: installs and starts
#      it, creates a storage pool and a bridge where none exist);
#      skip with CCI_SKIP_INCUS_SETUP=1
#   2. builds cci (release) and installs it as $PREFIX/bin/cci (default /usr/local)
#   3. adds the invoking user to the incus-admin group, so cci can use the socket
#   4. installs shell completions (bash, zsh, fish) where those shells look
# Running it again is safe: each step checks what is there first.
# Usage: ./install.sh        then: cci health
set -euo pipefail
case "$(uname -s)" in
    Linux) ;;
    Darwin) echo "[install] error: cci needs Linux (Incus system containers); on macOS run it inside a Linux VM" >&2; exit 1 ;;
    *) echo "[install] error: cci needs Linux (Incus system containers); $(uname -s) is not supported" >&2; exit 1 ;;
esac
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

say "installing shell completions"
for shell_dir in "bash:$PREFIX/share/bash-completion/completions/cci" \
    "zsh:$PREFIX/share/zsh/site-functions/_cci" \
    "fish:$PREFIX/share/fish/vendor_completions.d/cci.fish"; do
    shell=${shell_dir%%:*} file=${shell_dir#*:}
    "$PREFIX/bin/cci" completion "$shell" >"target/cci.$shell"
    as_root install -D -m 0644 "target/cci.$shell" "$file"
done

user=${SUDO_USER:-$(id -un)}
if [ "$user" != root ] && ! id -nG "$user" | tr ' ' '\n' | grep -qx incus-admin; then
    as_root usermod -aG incus-admin "$user"
    say "added $user to incus-admin: log in again (or run 'newgrp incus-admin') before using cci"
fi
say "done; check the setup with: cci health"
