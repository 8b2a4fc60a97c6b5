#!/usr/bin/env bash
# Make a debootstrapped Debian root file system boot as an Incus container with
# networking: hostname, DHCP on eth0 through systemd-networkd (which needs udev
# in the image), DNS through systemd-resolved, package caches emptied.
#   usage: rootfs-setup.sh ROOTFS HOSTNAME
set -euo pipefail
r=${1:?usage: rootfs-setup.sh ROOTFS HOSTNAME}
name=${2:?usage: rootfs-setup.sh ROOTFS HOSTNAME}
[ -x "$r/bin/sh" ] || { echo "rootfs-setup: $r is not a root file system" >&2; exit 1; }

echo "$name" >"$r/etc/hostname"
mkdir -p "$r/etc/systemd/network"
printf '[Match]\nName=eth0\n\n[Network]\nDHCP=yes\n' >"$r/etc/systemd/network/eth0.network"
chroot "$r" systemctl enable systemd-networkd systemd-resolved >/dev/null 2>&1
ln -sf /run/systemd/resolve/stub-resolv.conf "$r/etc/resolv.conf"
rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/*
