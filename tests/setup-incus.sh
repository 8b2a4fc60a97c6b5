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
        exec sudo -n --preserve-env=CCI_TEST_IMAGE,CCI_TEST_DOCKER_IMAGE,CCI_TEST_CACHE,CCI_DEBIAN_MIRROR,CCI_TEST_SUITE,CI "$0" "$@"
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
# The recipe an image alias was made by (empty: no such image).
recipe_of() {
    # (grep reads to the end: an early exit would break the pipe under pipefail.)
    incus image alias list --format csv | cut -d, -f1 | grep -x "$1" >/dev/null || return 0
    incus image show "$1" | sed -n 's/^ *cci.recipe: *"\{0,1\}\([0-9]*\).*/\1/p'
}

# The Docker test image: the base with Debian's docker.io added (downloaded
# here, at set-up, like the base's packages; the tests themselves reach no
# registry). Cached as an exported tarball beside the base's.
docker_image() {
    local alias=${CCI_TEST_DOCKER_IMAGE:-cci-test-docker} have tar name
    have=$(recipe_of "$alias")
    [ "$have" = "$IMAGE_RECIPE" ] && { say "ready: image $alias"; return 0; }
    [ -n "$have" ] && incus image delete "$alias"
    mkdir -p "$CACHE"
    tar="$CACHE/$SUITE-r$IMAGE_RECIPE-docker"
    if [ ! -s "$tar.tar.gz" ]; then
        name=cci-test-dockerbuild-$$
        mirror_host=$(printf '%s\n' "$MIRROR" | sed -E 's#^[a-z]+://([^/:]+).*#\1#')
        say "building the Docker test image (docker.io from $MIRROR, about a minute)"
        # Nothing of a failed or interrupted build stays behind.
        trap 'incus delete --force "$name" >/dev/null 2>&1 || true; incus image delete "$alias-new" >/dev/null 2>&1 || true' EXIT
        incus image delete "$alias-new" >/dev/null 2>&1 || true
        incus launch "$IMAGE_ALIAS" "$name" >/dev/null
        # shellcheck disable=SC2016
        incus exec "$name" --env "MIRROR_HOST=$mirror_host" -- sh -c '
            i=0; until getent hosts "$MIRROR_HOST" >/dev/null; do i=$((i+1)); [ $i -lt 60 ] || exit 1; sleep 1; done
            apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io &&
            apt-get clean && rm -rf /var/lib/apt/lists/*' >&2 ||
            die "could not build the Docker test image"
        incus stop "$name"
        incus publish "$name" --alias "$alias-new" "cci.recipe=$IMAGE_RECIPE" \
            description="cci test base with Docker" >/dev/null
        incus delete "$name" >/dev/null
        # Exported under a temporary name, moved when complete.
        incus image export "$alias-new" "$tar.part" >/dev/null
        mv "$tar.part.tar.gz" "$tar.tar.gz"
        incus image delete "$alias-new"
        trap - EXIT
    fi
    incus image import "$tar.tar.gz" --alias "$alias" >/dev/null
    say "ready: image $alias"
}

have=$(recipe_of "$IMAGE_ALIAS")
if [ "$have" = "$IMAGE_RECIPE" ]; then
    say "ready: image $IMAGE_ALIAS"
    docker_image
    exit 0
fi
if [ -n "$have" ]; then
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
    rm -rf "$work"
    trap - EXIT
fi
incus image import "$meta_tar" "$rootfs_tar" --alias "$IMAGE_ALIAS" >/dev/null
say "imported $IMAGE_ALIAS"
say "ready: image $IMAGE_ALIAS"
docker_image
