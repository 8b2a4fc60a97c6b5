#!/usr/bin/env bash
# Add the unprivileged user agents run as: `code`, uid/gid 1000, home
# /home/code, bash, password-less sudo (the container is the sandbox), and the
# /workspace mount point.
#   usage: code-user.sh ROOTFS
set -euo pipefail
r=${1:?usage: code-user.sh ROOTFS}
[ -x "$r/bin/sh" ] || { echo "code-user: $r is not a root file system" >&2; exit 1; }

if ! chroot "$r" getent passwd code >/dev/null; then
    chroot "$r" groupadd --gid 1000 code
    chroot "$r" useradd --uid 1000 --gid 1000 --create-home --home-dir /home/code \
        --shell /bin/bash code
fi
mkdir -p "$r/etc/sudoers.d" "$r/workspace"
echo 'code ALL=(ALL) NOPASSWD:ALL' >"$r/etc/sudoers.d/90-code"
chmod 0440 "$r/etc/sudoers.d/90-code"
