#!/usr/bin/env bash
# `cci run -- true` against, side by side in one run on the same pool:
#   (a) the incus CLI sequence a shell-out tool makes: init, add the workspace
#       disk device, start, exec, delete --force
#   (b) the floor: incus launch + incus exec + incus delete --force
# Prints the median of N rounds of each and the ratios cci/(a), cci/(b).
# Targets (issue 3): cci <= 0.6x (a) and <= 1.15x (b).
#   usage: tests/bench/run-vs-incus-cli.sh [ROUNDS]   (needs tests/setup-incus.sh first)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-7}
IMAGE=${CCI_TEST_IMAGE:-cci-test-base}
cargo build --release --quiet
CCI=$PWD/target/release/cci
ws=$(mktemp -d)
chown 1000:1000 "$ws"
trap 'rm -rf "$ws"' EXIT

now() { date +%s.%N; }
ms() { echo "($2 - $1) * 1000" | bc | cut -d. -f1; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

shellout() {
    local n=cci-bench-a-$$
    incus init -q "$IMAGE" "$n"
    incus config device add -q "$n" workspace disk source="$ws" path=/workspace shift=true >/dev/null
    incus start "$n"
    incus exec "$n" --user 1000 --group 1000 --cwd /workspace -- true
    incus delete --force "$n"
}
floor() {
    local n=cci-bench-b-$$
    incus launch -q "$IMAGE" "$n"
    incus exec "$n" -- true
    incus delete --force "$n"
}
cci_run() { CCI_IMAGE=$IMAGE "$CCI" run --workspace "$ws" -- true; }

a=() b=() c=()
for _ in $(seq "$ROUNDS"); do
    t=$(now); shellout; a+=("$(ms "$t" "$(now)")")
    t=$(now); floor; b+=("$(ms "$t" "$(now)")")
    t=$(now); cci_run; c+=("$(ms "$t" "$(now)")")
done
ma=$(printf '%s\n' "${a[@]}" | median)
mb=$(printf '%s\n' "${b[@]}" | median)
mc=$(printf '%s\n' "${c[@]}" | median)
echo "rounds: $ROUNDS (median wall time)"
echo "(a) incus CLI shell-out sequence: ${ma} ms"
echo "(b) incus launch+exec+delete:     ${mb} ms"
echo "cci run -- true:                  ${mc} ms"
echo "cci / (a) = $(echo "scale=2; $mc / $ma" | bc)   (target <= 0.60)"
echo "cci / (b) = $(echo "scale=2; $mc / $mb" | bc)   (target <= 1.15)"
