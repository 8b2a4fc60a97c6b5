#!/usr/bin/env bash
# Getting a repository into a container, side by side in one run on the same
# pool, for a generated repository of FILES files / MB megabytes with COMMITS
# commits (default 20000 / 200 / 500):
#   (a) the baseline: `incus launch` of the image, then `incus file push -r`
#       of the working tree (what a tool without a transport does)
#   (b) `cci shell --isolated --background` with no seed mirror yet (the
#       first session of the repository): returns once the repository is at
#       /workspace on the session branch and the agent runs in tmux
#   (b2) the same after one new host commit: the second session, which
#       brings only what changed into the mirror
#   (c) `cci run --isolated`: repository in, a commit, commits back, gone
# Prints the median of ROUNDS of each, the ratios (b)/(a) and (b2)/(a)
# (target <= 0.30), and the bytes that went into the seed mirror for the
# first and for the second session, and of one commit coming back.
#   usage: tests/bench/isolated-vs-file-push.sh [ROUNDS] [FILES] [MB] [COMMITS]
#   (needs tests/setup-incus.sh first; about 5 minutes with the defaults)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
FILES=${2:-20000}
MB=${3:-200}
COMMITS=${4:-500}
IMAGE=${CCI_TEST_IMAGE:-cci-test-base}
cargo build --release --quiet
CCI=$PWD/target/release/cci
work=$(mktemp -d)
ws=$work/repo
home=$work/home
mkdir -p "$ws" "$home"
printf '[safe]\n\tdirectory = *\n[user]\n\tname = bench\n\temail = bench@localhost\n' >"$home/.gitconfig"
cleanup() {
    for n in $(incus list -c n -f csv "cci-bench-iso-" 2>/dev/null); do incus delete -f "$n" >/dev/null 2>&1 || true; done
    HOME=$home "$CCI" kill --all --force >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "generating $FILES files / $MB MB in $COMMITS commits ..." >&2
python3 tests/bench/gen-repo.py "$ws" "$FILES" "$MB" "$COMMITS"
cp tests/fixtures/fake-agent "$ws/.fake-agent"
git -C "$ws" add .fake-agent
git -C "$ws" -c user.name=b -c user.email=b@l commit -qm agent
chown -R 1000:1000 "$ws"
g() { git -c safe.directory='*' -C "$ws" "$@"; }
echo "repository: $(du -sh "$ws/.git" | cut -f1) in .git, $(g ls-files | wc -l) files" >&2

now() { date +%s.%N; }
ms() { echo "($2 - $1) * 1000" | bc | cut -d. -f1; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

baseline() {
    local n=cci-bench-iso-$$
    incus launch -q "$IMAGE" "$n"
    incus exec "$n" -- mkdir -p /workspace
    incus file push -q -r "$ws/." "$n/workspace/"
    incus delete -f "$n" >/dev/null
}
shell() {
    local name
    name=$(cd "$ws" && HOME=$home CCI_IMAGE=$IMAGE CCI_TOOL_BINARY=/workspace/.fake-agent \
        "$CCI" shell --isolated --background)
    echo "$name"
}
run() { (cd "$ws" && HOME=$home CCI_IMAGE=$IMAGE "$CCI" run --isolated -- sh -c 'date > stamp && git add stamp && git commit -qm stamp' 2>/dev/null); }

# Each measurement starts on a quiet host: the containers of the one
# before are gone (deleting 400 MB on btrfs goes on in the background) and
# the page cache is written back.
settle() {
    for _ in $(seq 100); do
        [ -z "$(incus list -c n -f csv 2>/dev/null | grep -E '^(cci-bench-iso-|cci-)')" ] && break
        sleep 0.3
    done
    sync
    sleep 2
}
mirror_bytes() { find "$home/.cci/git-mirrors" -name '*.pack' -printf '%s\n' 2>/dev/null | awk '{s+=$1} END {print s+0}'; }
a=() b=() b2=() c=()
for i in $(seq "$ROUNDS"); do
    settle
    t=$(now); baseline; a+=("$(ms "$t" "$(now)")")
    rm -rf "$home/.cci/git-mirrors"
    settle
    t=$(now); name=$(shell); b+=("$(ms "$t" "$(now)")")
    first_bytes=$(mirror_bytes)
    HOME=$home "$CCI" kill --force "$name" >/dev/null 2>&1
    echo "$i" >"$ws/d000/changed-$i"
    chown -R 1000:1000 "$ws"
    g add -A && g -c user.name=b -c user.email=b@l commit -qm "change $i"
    settle
    t=$(now); name=$(shell); b2+=("$(ms "$t" "$(now)")")
    second_bytes=$(( $(mirror_bytes) - first_bytes ))
    HOME=$home "$CCI" kill --force "$name" >/dev/null 2>&1
    settle
    t=$(now); run; c+=("$(ms "$t" "$(now)")")
    echo "round $i: baseline ${a[-1]} ms, shell ${b[-1]} ms, second shell ${b2[-1]} ms, run ${c[-1]} ms" >&2
done
ma=$(printf '%s\n' "${a[@]}" | median)
mb=$(printf '%s\n' "${b[@]}" | median)
mb2=$(printf '%s\n' "${b2[@]}" | median)
mc=$(printf '%s\n' "${c[@]}" | median)
back_bytes=$(g bundle create - main ^main~1 2>/dev/null | wc -c)
echo "rounds: $ROUNDS (median wall time); $FILES files, $MB MB, $COMMITS commits"
echo "(a) incus launch + incus file push -r:        ${ma} ms"
echo "(b) cci shell --isolated --background:        ${mb} ms"
echo "(b2) the same, second session:                ${mb2} ms"
echo "(c) cci run --isolated (clone, commit, back): ${mc} ms"
echo "(b) / (a) = $(echo "scale=2; $mb / $ma" | bc)   (b2) / (a) = $(echo "scale=2; $mb2 / $ma" | bc)   (target <= 0.30)"
echo "into the seed mirror: first session $first_bytes bytes, second $second_bytes bytes; one commit back: $back_bytes bytes"
