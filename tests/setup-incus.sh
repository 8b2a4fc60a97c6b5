#!/usr/bin/env bash
# Bring up a real Incus daemon for cci's integration tests, idempotently:
# prepares the host (misc/setup-host.sh: packages, daemon, pool, bridge), then
# builds the small Debian test base image with debootstrap once, caches its
# tarballs under $CCI_TEST_CACHE and imports them under a stable alias.
# A second run on a prepared machine takes seconds and downloads nothing.
# Needs root (or passwordless sudo).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
IMAGE_ALIAS=${CCI_TEST_IMAGE:-cci-test-base}
CACHE=${CCI_TEST_CACHE:-/var/cache/cci-tests}
MIRROR=${CCI_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=${CCI_TEST_SUITE:-bookworm}
# Packages baked into the test base image. udev is needed for systemd-networkd to
# bring eth0 up; systemd-resolved gives the container a working resolv.conf.
IMAGE_PACKAGES=systemd-sysv,udev,dbus,systemd-resolved,iproute2,tmux,sudo,git,ca-certificates,curl,procps,less,iputils-ping,netcat-openbsd,openssh-client,gh
# Bump when the recipe below (or image-scripts/rootfs-setup.sh) changes, so a
# stale cached image is rebuilt.
IMAGE_RECIPE=7

say() { printf '[setup-incus] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        exec sudo -n --preserve-env=CCI_TEST_IMAGE,CCI_TEST_CACHE,CCI_DEBIAN_MIRROR,CCI_TEST_SUITE,CI "$0" "$@"
    fi
    die "must run as root (or with passwordless sudo) to install and start Incus"
fi

CCI_MAP_IDS=1000 CCI_EXTRA_PACKAGES="debootstrap" CCI_INCUSD_LOG=${CCI_INCUSD_LOG:-/var/log/incus-cci-tests.log} \
    bash "$here/../misc/setup-host.sh"

# ------------------------------------------------- IPv6 test bridge and profile
# The default bridge has no IPv6; the network tests need one that has.
if ! incus network show cci-test-v6 >/dev/null 2>&1; then
    incus network create cci-test-v6 ipv4.address=10.148.99.1/24 ipv4.nat=true \
        ipv6.address=fd42:cc1:99::1/64 ipv6.nat=true >/dev/null
    say "created bridge cci-test-v6 (IPv4 and IPv6)"
fi
if ! incus profile show cci-test-v6 >/dev/null 2>&1; then
    incus profile create cci-test-v6 >/dev/null
    incus profile device add cci-test-v6 root disk path=/ pool="${CCI_POOL:-default}" >/dev/null
    incus profile device add cci-test-v6 eth0 nic network=cci-test-v6 name=eth0 >/dev/null
    say "created profile cci-test-v6"
fi

# ---------------------------------------------------------------- test image
if incus image alias list --format csv | cut -d, -f1 | grep -qx "$IMAGE_ALIAS"; then
    have=$(incus image show "$IMAGE_ALIAS" | sed -n 's/^ *cci.recipe: *"\{0,1\}\([0-9]*\).*/\1/p')
    if [ "$have" = "$IMAGE_RECIPE" ]; then
        say "ready: image $IMAGE_ALIAS"
        exit 0
    fi
    say "image $IMAGE_ALIAS is from an older recipe; replacing it"
    incus image delete "$IMAGE_ALIAS"
fi

mkdir -p "$CACHE"
rootfs_tar="$CACHE/$SUITE-r$IMAGE_RECIPE-rootfs.tar.gz"
meta_tar="$CACHE/$SUITE-r$IMAGE_RECIPE-meta.tar.gz"
if [ ! -s "$rootfs_tar" ] || [ ! -s "$meta_tar" ]; then
    work=$(mktemp -d "$CACHE/build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    say "building the test base image with debootstrap ($SUITE from $MIRROR, about a minute)"
    CCI_HOSTNAME=cci-test bash "$here/../image-scripts/debootstrap-base.sh" "$work" "$SUITE" "$MIRROR" \
        "$IMAGE_PACKAGES" "cci test base (Debian $SUITE minbase)" "cci.recipe=$IMAGE_RECIPE" ||
        die "could not build the test base image"
    mv "$work/rootfs.tar.gz" "$rootfs_tar"
    mv "$work/meta.tar.gz" "$meta_tar"
fi
incus image import "$meta_tar" "$rootfs_tar" --alias "$IMAGE_ALIAS" >/dev/null
say "imported $IMAGE_ALIAS"
say "ready: image $IMAGE_ALIAS"
