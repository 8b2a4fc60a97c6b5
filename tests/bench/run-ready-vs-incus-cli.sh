#!/usr/bin/env bash
# Time to the user's task: a first command that needs the network, measured
# until it has reached a host of the (fake) internet — a listener in a
# network namespace (tests/fixtures/fakenet.sh), never off this machine.
# Side by side in one run, on the same pool:
#   (a) the incus CLI sequence that waits for an address the same way:
#       init, add the workspace disk, start, poll `incus list` until eth0 has
#       an IPv4 address, exec the probe, delete --force
#   (b) `cci run -- <probe>` (cci waits for the address itself)
#   (c) `cci run --no-wait -- <probe retried until it connects>`: the old
#       hand-over, for comparison
# Prints the median of N rounds of each and the ratio (b)/(a) (target <= 0.60).
#   usage: tests/bench/run-ready-vs-incus-cli.sh [ROUNDS]   (as root, after tests/setup-incus.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-7}
IMAGE=${CCI_TEST_IMAGE:-cci-test-base}
TARGET=198.51.100.10
cargo build --release --quiet
CCI=$PWD/target/release/cci
bash tests/fixtures/fakenet.sh up >/dev/null
ws=$(mktemp -d)
chown 1000:1000 "$ws"
trap 'rm -rf "$ws"' EXIT

now() { date +%s.%N; }
ms() { echo "($2 - $1) * 1000" | bc | cut -d. -f1; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
probe=(nc -z -w 5 "$TARGET" 8080)

shellout() {
    local n=cci-bench-r-$$
    incus init -q "$IMAGE" "$n"
    incus config device add -q "$n" workspace disk source="$ws" path=/workspace >/dev/null
    incus start "$n"
    until incus list "$n" --format csv --columns 4 | grep -q '\.'; do sleep 0.05; done
    incus exec "$n" --user 1000 --group 1000 --cwd /workspace -- "${probe[@]}"
    incus delete --force "$n"
}
cci_run() { CCI_IMAGE=$IMAGE "$CCI" run --workspace "$ws" -- "${probe[@]}"; }
cci_nowait() {
    CCI_IMAGE=$IMAGE "$CCI" run --no-wait --workspace "$ws" -- \
        sh -c "until ${probe[*]} 2>/dev/null; do sleep 0.05; done"
}

a=() b=() c=()
for _ in $(seq "$ROUNDS"); do
    t=$(now); shellout; a+=("$(ms "$t" "$(now)")")
    t=$(now); cci_run; b+=("$(ms "$t" "$(now)")")
    t=$(now); cci_nowait; c+=("$(ms "$t" "$(now)")")
done
ma=$(printf '%s\n' "${a[@]}" | median)
mb=$(printf '%s\n' "${b[@]}" | median)
mc=$(printf '%s\n' "${c[@]}" | median)
echo "rounds: $ROUNDS (median wall time, to a TCP connect to the fake internet)"
echo "(a) incus CLI, waiting for an address: ${ma} ms"
echo "(b) cci run (waits for the address):   ${mb} ms"
echo "(c) cci run --no-wait, probe retried:  ${mc} ms"
echo "cci / (a) = $(echo "scale=2; $mb / $ma" | bc)   (target <= 0.60)"
