#!/usr/bin/env bash
# Saving and restoring an agent state folder of 2,000 files and 50 MB,
# side by side in one run, against the incus CLI's recursive file copy:
#   save:    `cci session save NAME`        vs `incus file pull -r NAME/home/code/.claude DIR`
#   restore: `cci session restore ID NAME2` vs `incus file push -r DIR/.claude NAME2/home/code/`
# Prints the median of N rounds of each and the ratios cci / incus.
# Target (issue 4): at most 0.2x for both.
#   usage: tests/bench/session-save-restore.sh [ROUNDS]   (needs tests/setup-incus.sh first)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-5}
IMAGE=${CCI_TEST_IMAGE:-cci-test-base}
cargo build --release --quiet
CCI=$PWD/target/release/cci
work=$(mktemp -d)
ws=$work/ws
mkdir -p "$ws"
chown 1000:1000 "$ws"
cp tests/fixtures/fake-agent "$ws/.fake-agent"
chmod 755 "$ws/.fake-agent"
export CCI_SESSIONS_DIR=$work/store CCI_IMAGE=$IMAGE CCI_TOOL_BINARY=/workspace/.fake-agent
names=()
cleanup() {
    for n in "${names[@]}"; do "$CCI" kill "$n" >/dev/null 2>&1 || true; done
    rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
ms() { echo "($2 - $1) * 1000" | bc | cut -d. -f1; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

src=$("$CCI" shell --background --workspace "$ws" </dev/null)
dst=$("$CCI" shell --background --workspace "$ws" </dev/null)
names+=("$src" "$dst")
# 2,000 files in 40 folders, 50 MB in all (25 KiB each, random so nothing compresses).
incus exec "$src" --user 1000 --group 1000 -- sh -c '
    cd /home/code/.claude && mkdir -p projects
    for d in $(seq 1 40); do
        mkdir -p projects/p$d
        for f in $(seq 1 50); do head -c 26214 /dev/urandom > projects/p$d/f$f.jsonl; done
    done'
files=$(incus exec "$src" -- find /home/code/.claude -type f | wc -l)
bytes=$(incus exec "$src" -- du -sb /home/code/.claude | cut -f1)
id=$("$CCI" info "$src" --format json | sed -n 's/.*"session": "\(.*\)".*/\1/p')

a=() b=() c=() d=()
for i in $(seq "$ROUNDS"); do
    rm -rf "$work/pull"
    mkdir -p "$work/pull"
    t=$(now); incus file pull -q -r "$src/home/code/.claude" "$work/pull/" >/dev/null; a+=("$(ms "$t" "$(now)")")
    t=$(now); "$CCI" session save "$src" >/dev/null; b+=("$(ms "$t" "$(now)")")
    incus exec "$dst" -- rm -rf /home/code/.claude
    t=$(now); incus file push -q -r "$work/pull/.claude" "$dst/home/code/" >/dev/null; c+=("$(ms "$t" "$(now)")")
    incus exec "$dst" -- rm -rf /home/code/.claude
    t=$(now); "$CCI" session restore "$id" "$dst" >/dev/null; d+=("$(ms "$t" "$(now)")")
done
restored=$(incus exec "$dst" -- find /home/code/.claude -type f | wc -l)
[ "$restored" -ge 2000 ] || { echo "restore lost files: $restored" >&2; exit 1; }
ma=$(printf '%s\n' "${a[@]}" | median)
mb=$(printf '%s\n' "${b[@]}" | median)
mc=$(printf '%s\n' "${c[@]}" | median)
md=$(printf '%s\n' "${d[@]}" | median)
echo "state: $files files, $bytes bytes; rounds: $ROUNDS (median wall time)"
echo "save:    incus file pull -r ${ma} ms   cci session save    ${mb} ms   ratio $(echo "scale=3; $mb / $ma" | bc)   (target <= 0.2)"
echo "restore: incus file push -r ${mc} ms   cci session restore ${md} ms   ratio $(echo "scale=3; $md / $mc" | bc)   (target <= 0.2)"
