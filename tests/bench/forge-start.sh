#!/usr/bin/env bash
# What git through cci costs at the user's task: `cci run` of a workspace
# whose origin is on a forwarded host, to the moment a first `git ls-remote`
# of it has answered inside (a stand-in git host on the loopback:
# tests/fixtures/fake-git-host.py; nothing leaves the machine). Side by side
# in one run:
#   (a) `cci run -- true` with [git] forward = false (no forwarding at all)
#   (b) `cci run -- git ls-remote origin` with forwarding, the forwarder
#       already running (every session after the first)
#   (c) the same with the forwarder stopped first (a user's first session)
# Prints the median of ROUNDS of each and the ratios (b)/(a), (c)/(a).
#   usage: tests/bench/forge-start.sh [ROUNDS]   (as root, after tests/setup-incus.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-5}
IMAGE=${CCI_TEST_IMAGE:-cci-test-base}
cargo build --release --quiet
CCI=$PWD/target/release/cci
work=$(mktemp -d)
ws=$work/ws
mkdir -p "$ws" "$work/git/me"
echo secret-bench-token >"$work/token"
git init -q --bare "$work/git/me/proj.git"
git -C "$work/git/me/proj.git" symbolic-ref HEAD refs/heads/main
python3 tests/fixtures/fake-git-host.py "$work/git" "$work/token" "$work/port" &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
until [ -s "$work/port" ]; do sleep 0.05; done
git init -q -b main "$ws"
git -C "$ws" remote add origin https://git.fake.test/me/proj.git
chown -R 1000:1000 "$ws"
printf '[git]\nforward_hosts = ["git.fake.test=http://127.0.0.1:%s"]\ntoken_command = "cat %s"\n' \
    "$(cat "$work/port")" "$work/token" >"$work/on.toml"
printf '[git]\nforward = false\n' >"$work/off.toml"

now() { date +%s.%N; }
ms() { echo "($2 - $1) * 1000" | bc | cut -d. -f1; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
run() { CCI_IMAGE=$IMAGE CCI_CONFIG=$1 "$CCI" run --workspace "$ws" -- "${@:2}" >/dev/null; }

a=() b=() c=()
for _ in $(seq "$ROUNDS"); do
    t=$(now); run "$work/off.toml" true; a+=("$(ms "$t" "$(now)")")
    t=$(now); run "$work/on.toml" git ls-remote origin; b+=("$(ms "$t" "$(now)")")
    pkill -f "cci forge serve" || true
    while pgrep -f "cci forge serve" >/dev/null; do sleep 0.05; done
    t=$(now); run "$work/on.toml" git ls-remote origin; c+=("$(ms "$t" "$(now)")")
done
ma=$(printf '%s\n' "${a[@]}" | median)
mb=$(printf '%s\n' "${b[@]}" | median)
mc=$(printf '%s\n' "${c[@]}" | median)
echo "rounds: $ROUNDS (median wall time)"
echo "(a) cci run, no forwarding:                     ${ma} ms"
echo "(b) cci run + git ls-remote through cci:        ${mb} ms"
echo "(c) the same, forwarder started by this run:    ${mc} ms"
echo "(b)/(a) = $(echo "scale=2; $mb / $ma" | bc)   (c)/(a) = $(echo "scale=2; $mc / $ma" | bc)"
