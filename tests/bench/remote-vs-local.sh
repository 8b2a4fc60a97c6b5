#!/usr/bin/env bash
# A remote server against the local daemon, side by side in one run: the
# same daemon, reached once over its Unix socket and once over its HTTPS
# listener on 127.0.0.1 as remote `bench` (added with a trust token), so the
# difference is what a remote costs cci itself: TLS, and the repository
# going in as a pack over the API instead of a mounted seed mirror (network
# open on both: the ACL of restricted mode needs bridge connection tracking,
# which the kernel here lacks).
# For a generated repository of FILES files / MB megabytes in COMMITS
# commits (default 5000 / 50 / 100):
#   run:   `cci run --isolated -- git log -1` (repository in, the command,
#          commits back, container gone), network open
#   shell: `cci shell --isolated --background` (returns when the agent runs
#          in tmux on the repository), then `cci kill`
#   copy:  `cci run -- true` in a copy of the tree without .git (remote
#          only: copied in, copied back; locally the folder is mounted)
# Prints the median of ROUNDS of each and the ratio remote / local.
# No packet leaves the machine.
#   usage: tests/bench/remote-vs-local.sh [ROUNDS] [FILES] [MB] [COMMITS]
#   (needs tests/setup-incus.sh first)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
FILES=${2:-5000}
MB=${3:-50}
COMMITS=${4:-100}
IMAGE=${CCI_TEST_IMAGE:-cci-test-base}
cargo build --release --quiet
CCI=$PWD/target/release/cci
work=$(mktemp -d)
ws=$work/repo
home=$work/home
mkdir -p "$ws" "$home"
printf '[safe]\n\tdirectory = *\n[user]\n\tname = bench\n\temail = bench@localhost\n' >"$home/.gitconfig"
before=$(incus config get core.https_address)
name=cci-bench-remote-$$
cleanup() {
    HOME=$home "$CCI" kill --all --force >/dev/null 2>&1 || true
    HOME=$home CCI_REMOTE=bench "$CCI" kill --all --force >/dev/null 2>&1 || true
    for fp in $(incus config trust list -f json | python3 -c 'import json,sys; [print(c["fingerprint"]) for c in json.load(sys.stdin) if c["name"] == sys.argv[1]]' "$name"); do
        incus config trust remove "$fp" >/dev/null 2>&1 || true
    done
    [ "$before" = "127.0.0.1:18444" ] || incus config set core.https_address "$before"
    rm -rf "$work"
}
trap cleanup EXIT
[ -n "$before" ] || incus config set core.https_address 127.0.0.1:18444
addr=$(incus config get core.https_address)
case $addr in 127.0.0.1:*) ;; *) addr=127.0.0.1:${addr##*:} ;; esac

echo "generating $FILES files / $MB MB in $COMMITS commits ..." >&2
python3 tests/bench/gen-repo.py "$ws" "$FILES" "$MB" "$COMMITS"
cp tests/fixtures/fake-agent "$ws/.fake-agent"
git -C "$ws" add .fake-agent
git -C "$ws" -c user.name=b -c user.email=b@l commit -qm agent
chown -R 1000:1000 "$ws"
plain=$work/plain
mkdir -p "$plain"
(cd "$ws" && tar --exclude=.git -cf - .) | tar -C "$plain" -xf -
echo "repository: $(du -sh "$ws/.git" | cut -f1) in .git; plain copy $(du -sh "$plain" | cut -f1)" >&2

token=$(incus config trust add "$name" -q | tail -1)
HOME=$home "$CCI" remote add bench "$token" >/dev/null
export CCI_IMAGE=$IMAGE CCI_TOOL_BINARY=/workspace/.fake-agent CCI_SESSIONS_DIR=$work/store CCI_NETWORK=open

now() { date +%s.%N; }
ms() { echo "($2 - $1) * 1000" | bc | cut -d. -f1; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# $1: local|bench; the rest: the cci command. Prints milliseconds.
timed() {
    local where=$1
    shift
    local t0 t1
    t0=$(now)
    HOME=$home CCI_REMOTE=$where "$CCI" "$@" </dev/null >"$work/out" 2>"$work/err" || {
        cat "$work/err" >&2
        exit 1
    }
    t1=$(now)
    ms "$t0" "$t1"
}

shell_once() {
    local where=$1 t0 t1 n
    t0=$(now)
    n=$(HOME=$home CCI_REMOTE=$where "$CCI" shell --isolated --background -w "$ws" </dev/null 2>"$work/err") || {
        cat "$work/err" >&2
        exit 1
    }
    t1=$(now)
    HOME=$home CCI_REMOTE=$where "$CCI" kill --force "$n" >/dev/null 2>&1
    ms "$t0" "$t1"
}

declare -A times
for r in $(seq "$ROUNDS"); do
    for where in local bench; do
        times[run_$where]+="$(timed "$where" run --isolated -w "$ws" -- git -C /workspace log -1 --oneline) "
        times[shell_$where]+="$(shell_once "$where") "
    done
    times[copy_local]+="$(timed local run -w "$plain" -- true) "
    times[copy_bench]+="$(timed bench run -w "$plain" -- true) "
    echo "round $r done" >&2
done

printf '%-6s %10s %10s %8s\n' what local_ms remote_ms ratio
for what in run shell copy; do
    l=$(echo "${times[${what}_local]}" | tr ' ' '\n' | grep . | median)
    b=$(echo "${times[${what}_bench]}" | tr ' ' '\n' | grep . | median)
    printf '%-6s %10s %10s %8s\n' "$what" "$l" "$b" "$(echo "scale=2; $b / $l" | bc)"
done
