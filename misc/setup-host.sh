#!/usr/bin/env bash
# Prepare this machine to run Incus containers for cci, idempotently:
#   - installs what is missing (Incus 6.0 LTS from bookworm-backports on Debian 12,
#     the distribution package elsewhere; nftables, dnsmasq, btrfs-progs, tmux...)
#   - starts the daemon when it is not answering (systemd when it runs the
#     machine, else incusd by hand in the background)
#   - creates a storage pool (btrfs on a loop file where possible, else dir), a
#     managed bridge on an unused subnet and the default profile's root disk and
#     NIC, but only where none exist: an existing setup is never changed.
# Used by install.sh and by the test harness. Needs root (or passwordless sudo).
set -euo pipefail

POOL=${CCI_POOL:-default}
BRIDGE=${CCI_BRIDGE:-incusbr0}
MIRROR=${CCI_DEBIAN_MIRROR:-http://deb.debian.org/debian}
LOG=${CCI_INCUSD_LOG:-/var/log/incusd.log}
# Extra packages the caller needs (space separated), e.g. debootstrap for tests.
EXTRA_PACKAGES=${CCI_EXTRA_PACKAGES:-}

say() { printf '[setup-host] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        exec sudo -n --preserve-env=CCI_POOL,CCI_BRIDGE,CCI_DEBIAN_MIRROR,CCI_INCUSD_LOG,CCI_EXTRA_PACKAGES,CCI_POOL_SIZE "$0" "$@"
    fi
    die "must run as root (or with passwordless sudo) to install and start Incus"
fi

# ---------------------------------------------------------------- packages
need_pkgs=()
command -v incus >/dev/null || need_pkgs+=(incus)
command -v nft >/dev/null || need_pkgs+=(nftables)
command -v dnsmasq >/dev/null || need_pkgs+=(dnsmasq-base)
command -v tmux >/dev/null || need_pkgs+=(tmux)
command -v zstd >/dev/null || need_pkgs+=(zstd)
command -v mkfs.btrfs >/dev/null || need_pkgs+=(btrfs-progs)
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v setpriv >/dev/null || need_pkgs+=(util-linux)
for p in $EXTRA_PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done

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
# The workspace owner's uid/gid is the one host id cci maps into a sandbox (to
# `code`, by raw.idmap): let root delegate the invoking user's (and CCI_MAP_IDS).
map_ids=" ${CCI_MAP_IDS:-} "
[ -n "${SUDO_UID:-}" ] && [ "${SUDO_UID}" != 0 ] && map_ids+=" u${SUDO_UID} g${SUDO_GID:-$SUDO_UID} "
for id in $map_ids; do
    case $id in
        u*) files=/etc/subuid; id=${id#u} ;;
        g*) files=/etc/subgid; id=${id#g} ;;
        *) files="/etc/subuid /etc/subgid" ;;
    esac
    case $id in '' | *[!0-9]* | 0) continue ;; esac
    for f in $files; do
        grep -qsx "root:$id:1" "$f" || echo "root:$id:1" >>"$f"
    done
done

# ---------------------------------------------------------------- daemon
ADMIN_GROUP=incus-admin
getent group "$ADMIN_GROUP" >/dev/null || groupadd --system "$ADMIN_GROUP"

if ! incus admin waitready --timeout 1 >/dev/null 2>&1; then
    incusd=$(command -v incusd || echo /usr/libexec/incus/incusd)
    [ -x "$incusd" ] || incusd=/usr/lib/incus/incusd
    [ -x "$incusd" ] || die "incusd not found"
    if [ -d /run/systemd/system ] && systemctl start incus.socket incus.service 2>/dev/null &&
        incus admin waitready --timeout 60 >/dev/null 2>&1; then
        say "started incus with systemd"
    else
    say "starting $incusd (log: $LOG)"
    mkdir -p "$(dirname "$LOG")"
    # setsid + nohup: the daemon outlives this script and the test run.
    setsid nohup "$incusd" --group "$ADMIN_GROUP" --logfile "$LOG" >/dev/null 2>&1 </dev/null &
    incus admin waitready --timeout 60 || die "incusd did not become ready; see $LOG"
    fi
fi

# ---------------------------------------------------------------- storage
if ! incus storage show "$POOL" >/dev/null 2>&1; then
    if grep -qw btrfs /proc/filesystems && command -v mkfs.btrfs >/dev/null &&
        incus storage create "$POOL" btrfs size="${CCI_POOL_SIZE:-30GiB}" >/dev/null 2>&1; then
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

# Every container's systemd takes inotify instances from one shared host
# uid; the kernel's default of 128 runs out at about 15 containers ("Too
# many open files" at boot). Raise the limits as Incus recommends for
# production hosts, now and at every boot; never lower them.
raise_sysctl() {
    local key=$1 want=$2 have
    have=$(sysctl -n "$key" 2>/dev/null || echo 0)
    if [ "$have" -lt "$want" ]; then
        sysctl -q -w "$key=$want" >/dev/null || die "cannot set $key"
        say "raised $key from $have to $want"
    fi
    local conf="/etc/sysctl.d/90-cci-${key//./-}.conf" line="$key = $want"
    if [ "$(cat "$conf" 2>/dev/null)" != "$line" ]; then
        mkdir -p /etc/sysctl.d
        printf '%s\n' "$line" >"$conf.tmp" && mv "$conf.tmp" "$conf"
    fi
}
raise_sysctl fs.inotify.max_user_instances 1024
raise_sysctl fs.inotify.max_user_watches 1048576

say "ready: Incus $(incus version | sed -n 's/^Server version: //p'), pool $POOL, bridge $BRIDGE"
