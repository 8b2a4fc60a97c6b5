#!/usr/bin/env bash
# Install cci from this checkout:
#   1. prepares Incus on this machine (misc/setup-host.sh: installs and starts
#      it, creates a storage pool and a bridge where none exist);
#      skip with CCI_SKIP_INCUS_SETUP=1
#   2. builds cci (release) and installs it as $PREFIX/bin/cci (default /usr/local)
#   3. adds the invoking user to the incus-admin group, so cci can use the socket
#   4. installs shell completions (bash, zsh, fish) where those shells look
# Running it again is safe: each step checks what is there first, and files
# that did not change are left alone.
# Usage: ./install.sh [--yes]        then: cci health
#   --yes  install missing packages (Incus, nftables...) without asking
set -euo pipefail
yes=0
for arg in "$@"; do
    case "$arg" in
        -y | --yes) yes=1 ;;
        -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "[install] error: unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done
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
    missing=()
    for tool in incus nft dnsmasq; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    if [ ${#missing[@]} -gt 0 ] && [ "$yes" != 1 ]; then
        say "missing: ${missing[*]}; install.sh installs them with apt-get (Incus 6.0 LTS from"
        say "bookworm-backports on Debian 12), or install them yourself and run it again"
        if [ -t 0 ]; then
            read -r -p "[install] install them now? [y/N] " answer
            case "$answer" in y | Y | yes) ;; *) die "nothing installed" ;; esac
        else
            die "not a terminal: run ./install.sh --yes to install them"
        fi
    fi
    as_root env CCI_POOL="${CCI_POOL:-default}" CCI_BRIDGE="${CCI_BRIDGE:-incusbr0}" bash misc/setup-host.sh
fi

say "building cci"
cargo build --release --locked --quiet
# Where cargo put it: CARGO_TARGET_DIR, build.target-dir, else ./target.
target_dir=$(cargo metadata --format-version 1 --no-deps --locked 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
target_dir=${target_dir:-${CARGO_TARGET_DIR:-target}}
[ -x "$target_dir/release/cci" ] || die "built, but $target_dir/release/cci is not there"
as_root install -C -D -m 0755 "$target_dir/release/cci" "$PREFIX/bin/cci"
say "installed $PREFIX/bin/cci ($("$PREFIX/bin/cci" --version))"

say "installing shell completions"
completions=$(mktemp -d)
trap 'rm -rf "$completions"' EXIT
for shell_dir in "bash:$PREFIX/share/bash-completion/completions/cci" \
    "zsh:$PREFIX/share/zsh/site-functions/_cci" \
    "fish:$PREFIX/share/fish/vendor_completions.d/cci.fish"; do
    shell=${shell_dir%%:*} file=${shell_dir#*:}
    "$PREFIX/bin/cci" completion "$shell" >"$completions/cci.$shell"
    as_root install -C -D -m 0644 "$completions/cci.$shell" "$file"
done

user=${SUDO_USER:-$(id -un)}
if [ "$user" != root ] && ! id -nG "$user" | tr ' ' '\n' | grep -qx incus-admin; then
    as_root usermod -aG incus-admin "$user"
    say "added $user to incus-admin: log in again (or run 'newgrp incus-admin') before using cci"
fi
say "done; check the setup with: cci health"
