#!/usr/bin/env bash
# Parallel load: PARALLEL `cci run -- sh -c 'echo ID'` at once, ROUNDS rounds
# back to back in one workspace. Every run must exit 0 with exactly its own
# output and nothing on stderr; a round never fails for lack of slots
# because the previous round's containers are still being torn down; and
# no container of the workspace is left once the last round is over.
#   usage: tests/stress/parallel-runs.sh [PARALLEL [ROUNDS]]
#          (default 16 x 20; CI runs a short form, see tests/run.sh)
# Needs what tests/setup-incus.sh sets up; uses CCI (default: the debug
# build) and CCI_TEST_IMAGE (default cci-test-base).
set -euo pipefail
cd "$(dirname "$0")/../.."
PARALLEL=${1:-16}
ROUNDS=${2:-20}
IMAGE=${CCI_TEST_IMAGE:-cci-test-base}
if [ -z "${CCI:-}" ]; then
    cargo build --quiet --bin cci
    CCI=$PWD/target/debug/cci
fi
ws=$(mktemp -d /tmp/cci-stress.XXXXXX)
out=$(mktemp -d /tmp/cci-stress-out.XXXXXX)
# cci refuses a workspace owned by root; the owner is mapped to `code`.
owner=${SUDO_UID:-1000}
[ "$(id -u)" = 0 ] && chown "$owner:$owner" "$ws"
trap 'rm -rf "$ws" "$out"' EXIT

failures=0
start=$(date +%s)
for round in $(seq "$ROUNDS"); do
    pids=()
    for i in $(seq "$PARALLEL"); do
        id="r${round}-${i}"
        CCI_IMAGE=$IMAGE CCI_SLOT_LIMIT=$((PARALLEL + 4)) \
            "$CCI" run --workspace "$ws" -- sh -c "echo $id" \
            >"$out/$id.out" 2>"$out/$id.err" </dev/null &
        pids+=("$!:$id")
    done
    for p in "${pids[@]}"; do
        pid=${p%%:*} id=${p#*:}
        status=0
        wait "$pid" || status=$?
        got=$(cat "$out/$id.out")
        if [ "$status" != 0 ] || [ "$got" != "$id" ] || [ -s "$out/$id.err" ]; then
            failures=$((failures + 1))
            echo "round $round run $id: exit $status, stdout '$got', stderr:" >&2
            sed 's/^/    /' "$out/$id.err" >&2
        fi
    done
done
elapsed=$(($(date +%s) - start))

# The daemon deletes an ephemeral run container once its forced stop is
# done; give that its moment (bounded), then nothing may be left.
left=""
for _ in $(seq 100); do
    left=$(CCI_IMAGE=$IMAGE "$CCI" list --format json 2>/dev/null |
        python3 -c 'import json,sys; ws=sys.argv[1]; print(" ".join(c["name"] for c in json.load(sys.stdin) if c.get("workspace")==ws))' "$(realpath "$ws")" || true)
    [ -z "$left" ] && break
    sleep 0.1
done
echo "$PARALLEL parallel x $ROUNDS rounds: $((PARALLEL * ROUNDS)) runs in ${elapsed} s, $failures failed"
if [ -n "$left" ]; then
    echo "containers left behind: $left" >&2
    exit 1
fi
[ "$failures" = 0 ]
