#!/usr/bin/env bash
# Shared package caches ([caches]): the same `npm ci` of a fixed project in
# two slots of one workspace, side by side in one run. The first slot
# downloads into the empty shared cache; the second finds the packages there.
#   first:  `npm ci` in slot 1 (the shared cache emptied before)
#   second: `npm ci` in slot 2
# Prints the median of N rounds of each and the ratio second / first.
# Target (issue 21): at most 0.3x.
# The packages come from the npm registry this machine reaches (Node.js and
# npm are installed in both containers first from the Debian mirror, and the
# lock file made once; none of that is timed), so the figures include a real
# download.
#   usage: tests/bench/caches-npm.sh [ROUNDS]   (needs tests/setup-incus.sh first)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
IMAGE=${CCI_TEST_IMAGE:-cci-test-base}
DEPS=${CCI_BENCH_DEPS:-'{"typescript": "5.6.3", "lodash": "4.17.21", "express": "4.21.1", "eslint": "9.14.0"}'}
cargo build --release --quiet
CCI=$PWD/target/release/cci
work=$(mktemp -d)
ws=$work/ws
mkdir -p "$ws"
chown 1000:1000 "$ws"
cp tests/fixtures/fake-agent "$ws/.fake-agent"
chmod 755 "$ws/.fake-agent"
printf '[caches]\nenabled = ["npm"]\ndir = "%s/caches"\n' "$work" > "$work/config.toml"
export CCI_CONFIG=$work/config.toml CCI_SESSIONS_DIR=$work/store CCI_IMAGE=$IMAGE CCI_TOOL_BINARY=/workspace/.fake-agent
names=()
cleanup() {
    for n in "${names[@]}"; do "$CCI" kill -f "$n" >/dev/null 2>&1 || true; done
    rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
ms() { echo "($2 - $1) * 1000" | bc | cut -d. -f1; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
as_code() {
    local n=$1
    shift
    incus exec "$n" --user 1000 --group 1000 --env HOME=/home/code \
        --env NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt --cwd /home/code/app -- sh -c "$*"
}

one=$("$CCI" shell --background --slot 1 --workspace "$ws" </dev/null)
two=$("$CCI" shell --background --slot 2 --workspace "$ws" </dev/null)
names+=("$one" "$two")
printf '{"name": "bench", "version": "1.0.0", "private": true, "dependencies": %s}\n' "$DEPS" > "$work/package.json"
for n in "$one" "$two"; do
    # The host's trusted authorities, for a machine whose egress goes
    # through a TLS-inspecting proxy (a set-up step, not measured).
    incus file push -q /etc/ssl/certs/ca-certificates.crt "$n/etc/ssl/certs/ca-certificates.crt"
    incus exec "$n" -- sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -qq -y --no-install-recommends nodejs npm >/dev/null'
    incus exec "$n" -- install -d -o 1000 -g 1000 /home/code/app
    incus file push -q --uid 1000 --gid 1000 "$work/package.json" "$n/home/code/app/package.json"
done
as_code "$one" "npm install --package-lock-only --no-audit --no-fund -q >/dev/null"
incus file pull -q "$one/home/code/app/package-lock.json" "$work/"
incus file push -q --uid 1000 --gid 1000 "$work/package-lock.json" "$two/home/code/app/package-lock.json"
cache=$(find "$work/caches" -maxdepth 3 -type d -name npm)
ci="rm -rf node_modules && npm ci --no-audit --no-fund -q >/dev/null"
rx() { incus exec "$1" -- cat /sys/class/net/eth0/statistics/rx_bytes; }
a=() b=() ra=() rb=()
for i in $(seq "$ROUNDS"); do
    find "$cache" -mindepth 1 -delete
    r=$(rx "$one"); t=$(now); as_code "$one" "$ci"; a+=("$(ms "$t" "$(now)")"); ra+=($(($(rx "$one") - r)))
    r=$(rx "$two"); t=$(now); as_code "$two" "$ci"; b+=("$(ms "$t" "$(now)")"); rb+=($(($(rx "$two") - r)))
done
bytes=$(du -sb "$cache" | cut -f1)
modules=$(as_code "$two" "ls node_modules | wc -l")
ma=$(printf '%s\n' "${a[@]}" | median)
mb=$(printf '%s\n' "${b[@]}" | median)
echo "project: $DEPS ($modules packages in node_modules; shared npm cache after a round: $bytes bytes)"
echo "first npm ci (into the empty shared cache): ${ma} ms  (rounds: ${a[*]})"
echo "second npm ci, another slot (from the shared cache): ${mb} ms  (rounds: ${b[*]})"
echo "bytes received by the container: first ${ra[*]}; second ${rb[*]}"
echo "ratio second / first: $(echo "scale=2; $mb / $ma" | bc)x  (target <= 0.3x)"
