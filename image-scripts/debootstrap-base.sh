#!/usr/bin/env bash
# Build a bootable Debian base image locally with debootstrap (for machines
# that cannot reach an image server): a minbase root file system with systemd,
# DHCP networking (rootfs-setup.sh) and the code user (code-user.sh), written as
# the two tarballs of an Incus split image. Needs root and debootstrap.
#   usage: debootstrap-base.sh OUT SUITE MIRROR PACKAGES DESCRIPTION [KEY=VALUE...]
#   (KEY=VALUE pairs become image properties; CCI_HOSTNAME sets the hostname)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: debootstrap-base.sh OUT SUITE MIRROR PACKAGES DESCRIPTION [KEY=VALUE...]}
suite=${2:?suite missing}
mirror=${3:?mirror missing}
packages=${4:?packages missing}
description=${5:?description missing}
shift 5
[ "$(id -u)" -eq 0 ] || { echo "building a base with debootstrap needs root (run cci build with sudo)" >&2; exit 3; }
command -v debootstrap >/dev/null ||
    { echo "debootstrap is not installed (apt-get install debootstrap)" >&2; exit 3; }

mkdir -p "$out"
work=$(mktemp -d "$out/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase --include="$packages" "$suite" "$work/rootfs" "$mirror" \
    >"$out/debootstrap.log" 2>&1 || {
    cp "$work/rootfs/debootstrap/debootstrap.log" "$out/debootstrap-inner.log" 2>/dev/null || true
    tail -20 "$out/debootstrap.log" >&2
    echo "debootstrap of $suite from $mirror failed; logs in $out/debootstrap*.log" >&2
    exit 1
}
bash "$here/rootfs-setup.sh" "$work/rootfs" "${CCI_HOSTNAME:-cci}"
bash "$here/code-user.sh" "$work/rootfs"
tar -C "$work/rootfs" --numeric-owner -czf "$work/rootfs.tar.gz" .
{
    echo "architecture: $(uname -m)"
    echo "creation_date: $(date +%s)"
    echo "properties:"
    echo "  os: debian"
    echo "  release: $suite"
    echo "  description: $description"
    for p in "$@"; do echo "  ${p%%=*}: \"${p#*=}\""; done
} >"$work/metadata.yaml"
tar -C "$work" -czf "$work/meta.tar.gz" metadata.yaml
mv "$work/rootfs.tar.gz" "$out/rootfs.tar.gz"
mv "$work/meta.tar.gz" "$out/meta.tar.gz"
