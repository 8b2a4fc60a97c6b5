#!/usr/bin/env bash
# Bring up a real Incus daemon for cci's integration tests, idempotently.
#
#   - installs what is missing (Incus from bookworm-backports on Debian 12, the
#     distribution package elsewhere; nftables, tmux, debootstrap, btrfs-progs)
#   - starts the daemon when it is not answering (works without systemd)
#   - creates a storage pool (btrfs on a loop file where possible, else dir),
#     a managed bridge on an unused subnet, and the default profile's devices
#   - builds the small Debian test base image with debootstrap once, caches the
#     tarballs under $CCI_TEST_CACHE, and imports them under a stable alias
#
# A second run on a prepared machine takes seconds and downloads nothing.
# Needs root (or passwordless sudo).
set -euo pipefail

POOL=${CCI_TEST_POOL:-default}
BRIDGE=${CCI_TEST_BRIDGE:-incusbr0}
IMAGE_ALIAS=${CCI_TEST_IMAGE:-cci-test-base}
CACHE=${CCI_TEST_CACHE:-/var/cache/cci-tests}
MIRROR=${CCI_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=${CCI_TEST_SUITE:-bookworm}
LOG=${CCI_INCUSD_LOG:-/var/log/incus-cci-tests.log}
# Packages baked into the test base image. udev is needed for systemd-networkd to
# bring eth0 up; systemd-resolved gives the container a working resolv.conf.
IMAGE_PACKAGES=systemd-sysv,udev,dbus,systemd-resolved,iproute2,tmux,sudo,git,ca-certificates,curl,procps,less
# Bump when the recipe below changes, so a stale cached image is rebuilt.
IMAGE_RECIPE=3

say() { printf '[setup-incus] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        exec sudo -n --preserve-env=CCI_TEST_POOL,CCI_TEST_BRIDGE,CCI_TEST_IMAGE,CCI_TEST_CACHE,CCI_DEBIAN_MIRROR,CI "$0" "$@"
    fi
    die "must run as root (or with passwordless sudo) to install and start Incus"
fi

# ---------------------------------------------------------------- packages
need_pkgs=()
command -v incus >/dev/null || need_pkgs+=(incus)
command -v nft >/dev/null || need_pkgs+=(nftables)
command -v dnsmasq >/dev/null || need_pkgs+=(dnsmasq-base)
command -v tmux >/dev/null || need_pkgs+=(tmux)
command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
command -v mkfs.btrfs >/dev/null || need_pkgs+=(btrfs-progs)
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v setpriv >/dev/null || need_pkgs+=(util-linux)

if [ ${#need_pkgs[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "missing ${need_pkgs[*]} and no apt-get: install them by hand"
    . /etc/os-release
    export DEBIAN_FRONTEND=noninteractive
    target=()
    if [ "${ID:-}" = debian ] && [ "${VERSION_CODENAME:-}" = bookworm ]; then
        src=/etc/apt/sources.list.d/cci-bookworm-backports.sources
        if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
            say "adding bookworm-backports (Incus 6.0 LTS lives there)"
            cat >"$src" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        fi
        target=(-t bookworm-backports)
    fi
    say "installing: ${need_pkgs[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${target[@]}" "${need_pkgs[@]}" >/dev/null
fi

# subordinate ids for unprivileged containers
for f in /etc/subuid /etc/subgid; do
    grep -qs '^root:1000000:' "$f" || echo 'root:1000000:1000000000' >>"$f"
done

# ---------------------------------------------------------------- daemon
ADMIN_GROUP=incus-admin
getent group "$ADMIN_GROUP" >/dev/null || groupadd --system "$ADMIN_GROUP"

if ! incus admin waitready --timeout 1 >/dev/null 2>&1; then
    incusd=$(command -v incusd || echo /usr/libexec/incus/incusd)
    [ -x "$incusd" ] || incusd=/usr/lib/incus/incusd
    [ -x "$incusd" ] || die "incusd not found"
    say "starting $incusd (log: $LOG)"
    mkdir -p "$(dirname "$LOG")"
    # setsid + nohup: the daemon outlives this script and the test run.
    setsid nohup "$incusd" --group "$ADMIN_GROUP" --logfile "$LOG" >/dev/null 2>&1 </dev/null &
    incus admin waitready --timeout 60 || die "incusd did not become ready; see $LOG"
fi

# ---------------------------------------------------------------- storage
if ! incus storage show "$POOL" >/dev/null 2>&1; then
    if grep -qw btrfs /proc/filesystems && command -v mkfs.btrfs >/dev/null &&
        incus storage create "$POOL" btrfs size="${CCI_TEST_POOL_SIZE:-30GiB}" >/dev/null 2>&1; then
        say "created btrfs (copy-on-write) pool $POOL"
    else
        incus storage create "$POOL" dir >/dev/null
        say "created dir pool $POOL (no btrfs: launches will be slower)"
    fi
fi

# ---------------------------------------------------------------- bridge
if ! incus network show "$BRIDGE" >/dev/null 2>&1; then
    subnet=""
    for i in $(seq 147 250); do
        cand="10.$i.37"
        if ! ip -4 route | grep -q "^10\.$i\." && ! ip -4 addr | grep -q "inet 10\.$i\."; then
            subnet=$cand
            break
        fi
    done
    [ -n "$subnet" ] || die "no unused 10.x.37.0/24 subnet found for the bridge"
    incus network create "$BRIDGE" ipv4.address="$subnet.1/24" ipv4.nat=true ipv6.address=none >/dev/null
    say "created bridge $BRIDGE on $subnet.0/24"
fi

if ! incus profile device get default root pool >/dev/null 2>&1; then
    incus profile device add default root disk path=/ pool="$POOL" >/dev/null
fi
if ! incus profile device get default eth0 network >/dev/null 2>&1; then
    incus profile device add default eth0 nic name=eth0 network="$BRIDGE" >/dev/null
fi

# ---------------------------------------------------------------- test image
if incus image alias list --format csv | cut -d, -f1 | grep -qx "$IMAGE_ALIAS"; then
    have=$(incus image show "$IMAGE_ALIAS" | sed -n 's/^ *cci.recipe: *"\{0,1\}\([0-9]*\).*/\1/p')
    if [ "$have" = "$IMAGE_RECIPE" ]; then
        say "ready: pool $POOL, bridge $BRIDGE, image $IMAGE_ALIAS"
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
    debootstrap --variant=minbase --include="$IMAGE_PACKAGES" "$SUITE" "$work/rootfs" "$MIRROR" \
        >"$work/debootstrap.log" 2>&1 || {
        cp "$work/debootstrap.log" "$CACHE/debootstrap-failed.log"
        cp "$work/rootfs/debootstrap/debootstrap.log" "$CACHE/debootstrap-inner-failed.log" 2>/dev/null || true
        tail -20 "$work/debootstrap.log" >&2
        die "debootstrap failed; logs in $CACHE/debootstrap-*failed.log"
    }
    r=$work/rootfs
    echo cci-test >"$r/etc/hostname"
    mkdir -p "$r/etc/systemd/network"
    printf '[Match]\nName=eth0\n\n[Network]\nDHCP=yes\n' >"$r/etc/systemd/network/eth0.network"
    chroot "$r" systemctl enable systemd-networkd systemd-resolved >/dev/null 2>&1
    ln -sf /run/systemd/resolve/stub-resolv.conf "$r/etc/resolv.conf"
    rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/*
    tar -C "$r" --numeric-owner -czf "$work/rootfs.tar.gz" .
    cat >"$work/metadata.yaml" <<EOF
architecture: $(uname -m)
creation_date: $(date +%s)
properties:
  os: debian
  release: $SUITE
  description: cci test base (Debian $SUITE minbase)
  cci.recipe: "$IMAGE_RECIPE"
EOF
    tar -C "$work" -czf "$work/meta.tar.gz" metadata.yaml
    mv "$work/rootfs.tar.gz" "$rootfs_tar"
    mv "$work/meta.tar.gz" "$meta_tar"
fi
incus image import "$meta_tar" "$rootfs_tar" --alias "$IMAGE_ALIAS" >/dev/null
say "imported $IMAGE_ALIAS"
say "ready: pool $POOL, bridge $BRIDGE, image $IMAGE_ALIAS"
