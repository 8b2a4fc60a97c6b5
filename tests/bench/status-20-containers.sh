#!/usr/bin/env bash
# The attention dashboard's cost with N session containers (default 20), and
# `cci list` against `incus list`, side by side in one run:
#   (1) `cci list` vs `incus list` (both with addresses): median of ROUNDS;
#       target (issue 20): cci <= 0.5x incus
#   (2) `cci status --format json`: one look at every slot, median of ROUNDS
#   (3) the live watch (`cci events`, what the dashboard runs) for SECS
#       seconds: wall time of a tick (median, worst) and cci's CPU time per
#       tick; target: under 100 ms of cci time per tick
#   usage: tests/bench/status-20-containers.sh [N] [ROUNDS] [SECS]
#   (needs tests/setup-incus.sh first; starts N sessions of the stand-in agent)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-20}
ROUNDS=${2:-7}
SECS=${3:-20}
IMAGE=${CCI_TEST_IMAGE:-cci-test-base}
cargo build --release --quiet
CCI=$PWD/target/release/cci
wss=() names=()
cleanup() {
    for n in "${names[@]}"; do "$CCI" kill --force "$n" >/dev/null 2>&1 || true; done
    for w in "${wss[@]}"; do rm -rf "$w"; done
}
trap cleanup EXIT

now() { date +%s.%N; }
ms() { echo "($2 - $1) * 1000" | bc | cut -d. -f1; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "starting $N sessions..." >&2
for i in $(seq "$N"); do
    if [ $(((i - 1) % 10)) -eq 0 ]; then
        w=$(mktemp -d)
        cp tests/fixtures/fake-agent "$w/.fake-agent"
        chmod 755 "$w/.fake-agent"
        chown -R 1000:1000 "$w"
        wss+=("$w")
    fi
    names+=("$(CCI_IMAGE=$IMAGE CCI_TOOL_BINARY=/workspace/.fake-agent \
        "$CCI" shell --headless --workspace "${wss[-1]}")")
done
sleep 2

a=() b=() c=()
for _ in $(seq "$ROUNDS"); do
    t=$(now); incus list >/dev/null; a+=("$(ms "$t" "$(now)")")
    t=$(now); "$CCI" list >/dev/null; b+=("$(ms "$t" "$(now)")")
    t=$(now); "$CCI" status --format json >/dev/null; c+=("$(ms "$t" "$(now)")")
done
ma=$(printf '%s\n' "${a[@]}" | median)
mb=$(printf '%s\n' "${b[@]}" | median)
mc=$(printf '%s\n' "${c[@]}" | median)

log=$(mktemp)
CCI_LOG=debug "$CCI" events >/dev/null 2>"$log" &
pid=$!
sleep "$SECS"
read -r utime stime < <(awk '{print $14, $15}' "/proc/$pid/stat")
kill "$pid"; wait "$pid" 2>/dev/null || true
hz=$(getconf CLK_TCK)
ticks=$(grep -c 'attention tick:' "$log" || true)
tick_ms=$(grep -o 'attention tick: [0-9]* us' "$log" | awk '{print int($3 / 1000)}')
tmed=$(echo "$tick_ms" | median)
tmax=$(echo "$tick_ms" | sort -n | tail -1)
cpu=$(echo "scale=1; ($utime + $stime) * 1000 / $hz / $ticks" | bc)
rm -f "$log"

echo "containers: $N running sessions; rounds: $ROUNDS (median wall time)"
echo "incus list:                 ${ma} ms"
echo "cci list:                   ${mb} ms   cci / incus = $(echo "scale=2; $mb / $ma" | bc)   (target <= 0.50)"
echo "cci status --format json:   ${mc} ms   (one look into every session)"
echo "live watch, $ticks ticks in ${SECS} s: tick ${tmed} ms median, ${tmax} ms worst (wall, the first one starting $N monitors);"
echo "  cci CPU time per tick: ${cpu} ms (target < 100 ms)"
