#!/bin/sh
# Name resolution in a build container, decided within a few seconds (cci
# build runs it as root before the build script):
#   usage: dns-check.sh PROBE BUDGET_SECONDS [SERVER...]
# Each lookup of PROBE gives the resolver 2 s (one attempt). Then:
#   - a local stub (127.x, ::1, or no nameserver at all) whose service
#     (systemd-resolved) is still starting is waited for, up to BUDGET s;
#   - a local stub that still does not answer, or any resolver when SERVERs
#     are given (CCI_BUILD_DNS), is replaced: /etc/resolv.conf names the
#     default gateway (the Incus bridge's DNS) and the SERVERs;
#   - a resolver that is not local is left alone.
# Prints one line, its first word the verdict:
#   ok                   names resolve
#   repaired WAS|NOW     they resolve since resolv.conf was rewritten
#   unresolved WAS|NOW   a resolver answers, but not with PROBE
#   silent WAS|NOW       no resolver answered (exit status 3)
# WAS and NOW are the nameservers before and after (space-separated).
probe=${1:?usage: dns-check.sh PROBE BUDGET [SERVER...]}
budget=${2:?usage: dns-check.sh PROBE BUDGET [SERVER...]}
shift 2
export RES_OPTIONS="timeout:2 attempts:1"

now() { date +%s%N | cut -c1-13; } # milliseconds
end=$(($(now) + budget * 1000))
servers() {
    awk '$1 == "nameserver" { printf "%s%s", sep, $2; sep = " " }' /etc/resolv.conf 2>/dev/null
}
# One lookup: ok, silent (no answer before the timeout), or answered (a
# negative answer or a refusal came back quickly). A silent resolver gets a
# second try: a forwarder may answer from its cache once upstream replied.
lookup() {
    for try in 1 2; do
        t0=$(now)
        if timeout 5 getent ahosts "$probe" >/dev/null 2>&1; then
            echo ok
            return
        fi
        [ $(($(now) - t0)) -ge 1800 ] || { echo answered; return; }
    done
    echo silent
}
local_stub() {
    ! grep -q '^nameserver' /etc/resolv.conf 2>/dev/null ||
        grep -qE '^nameserver[[:space:]]+(127\.|::1)' /etc/resolv.conf 2>/dev/null
}
# systemd-resolved is on its way up (the container is still booting).
# systemd-resolved is on its way up (the container is still booting): not
# up yet (inactive, or systemd does not answer on its bus yet, as under
# load) while the boot goes on. Only with systemd as init.
resolved_starting() {
    [ -d /run/systemd/system ] || return 1
    case $(systemctl is-active systemd-resolved 2>/dev/null) in
    activating) return 0 ;;
    active | failed) return 1 ;;
    esac
    case $(systemctl is-system-running 2>/dev/null) in
    running | degraded | maintenance | stopping) return 1 ;;
    esac
    return 0
}

was=$(servers)
verdict=$(lookup)
[ "$verdict" = ok ] && { echo ok; exit 0; }
rewrite=no
if local_stub; then
    while [ "$verdict" != ok ] && [ "$(now)" -lt "$end" ] && resolved_starting; do
        sleep 0.5
        verdict=$(lookup)
    done
    [ "$verdict" = ok ] && { echo ok; exit 0; }
    rewrite=yes
elif [ $# -gt 0 ]; then
    rewrite=yes
fi
if [ $rewrite = yes ]; then
    gw=$(ip route 2>/dev/null | awk '/^default/ { print $3; exit }')
    rm -f /etc/resolv.conf
    for s in $gw "$@"; do echo "nameserver $s"; done >/etc/resolv.conf
    verdict=$(lookup)
    [ "$verdict" = ok ] && { echo "repaired ${was:-none}|$(servers)"; exit 0; }
fi
said="${was:-none}|$(servers)"
case $verdict in
silent) echo "silent $said"; exit 3 ;;
*) echo "unresolved $said" ;;
esac
