#!/usr/bin/env bash
# Shared package caches ([caches]): the same `npm ci` of a fixed project in
# two slots of one workspace, side by side in one run. The first slot
# downloads into the empty shared cache; the second finds the packages there.
#   first:  `npm ci` in slot 1 (the shared cache emptied before)
#   second: `npm ci` in slot 2
# Prints the median of N rounds of each and the ratio second / first.
# Target (issue 21): at most 0.3x.
#
# The packages come from a registry mirror on a fake host (a network
# namespace, tests/fixtures/fakenet.sh: nothing leaves the machine during the
# measured runs), reached over modelled links, each measured in turn:
# RATES (default "none 50mbit 20mbit 10mbit": the bare veth, where a download costs
# next to nothing, then a tbf queue on the fake world's side of the veth)
# and RTT_MS (default 20: the mirror answers each request that much late;
# this kernel has no netem). The mirror is
# filled once, before anything is timed, from the npm registry this machine
# reaches (the lock file's tarballs, exactly), and Node.js and npm are
# installed in both containers from the Debian mirror; none of that is timed.
#   usage: tests/bench/caches-npm.sh [ROUNDS]   (needs tests/setup-incus.sh first)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
IMAGE=${CCI_TEST_IMAGE:-cci-test-base}
DEPS=${CCI_BENCH_DEPS:-'{"typescript": "5.6.3", "lodash": "4.17.21", "express": "4.21.1", "eslint": "9.14.0"}'}
RATES=${RATES:-none 50mbit 20mbit 10mbit}
RTT_MS=${RTT_MS:-20}
NS=cci-fakenet
MIRROR=198.51.100.30
PORT=8082
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
    [ -f "$work/server.pid" ] && kill "$(cat "$work/server.pid")" 2>/dev/null || true
    ip netns exec "$NS" tc qdisc del dev ccifake1 root 2>/dev/null || true
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
    incus exec "$n" -- install -d -o 1000 -g 1000 /home/code/app /home/code/mirror
    incus file push -q --uid 1000 --gid 1000 "$work/package.json" "$n/home/code/app/package.json"
done

# The mirror: the lock file's tarballs (`npm pack` names them NAME-VERSION.tgz,
# a scope's `@s/n` as s-n), served from the fake host; the lock file's
# `resolved` addresses pointed there (their integrity hashes are unchanged).
as_code "$one" "npm install --package-lock-only --no-audit --no-fund -q >/dev/null"
incus file pull -q "$one/home/code/app/package-lock.json" "$work/registry-lock.json"
python3 - "$work/registry-lock.json" > "$work/specs" <<'PY'
import json, sys
lock = json.load(open(sys.argv[1]))
for key, p in lock["packages"].items():
    if key and "resolved" in p:
        print(f'{key.rsplit("node_modules/", 1)[1]}@{p["version"]}')
PY
incus file push -q "$work/specs" "$one/home/code/mirror/specs"
as_code "$one" "cd ~/mirror && xargs npm pack -q < specs >/dev/null && rm specs"
incus file pull -q -r "$one/home/code/mirror" "$work/"
python3 - "$work/registry-lock.json" "http://$MIRROR:$PORT" "$work/mirror" > "$work/package-lock.json" <<'PY'
import json, os, sys
lock = json.load(open(sys.argv[1]))
for key, p in lock["packages"].items():
    if key and "resolved" in p:
        name = key.rsplit("node_modules/", 1)[1]
        tgz = f'{name.lstrip("@").replace("/", "-")}-{p["version"]}.tgz'
        assert os.path.exists(os.path.join(sys.argv[3], tgz)), tgz
        p["resolved"] = f"{sys.argv[2]}/{tgz}"
json.dump(lock, sys.stdout, indent=2)
PY
for n in "$one" "$two"; do
    incus file push -q --uid 1000 --gid 1000 "$work/package-lock.json" "$n/home/code/app/package-lock.json"
done
bash tests/fixtures/fakenet.sh up >/dev/null
cat > "$work/server.py" <<'PY'
import functools, http.server, sys, time
class Late(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        time.sleep(int(sys.argv[3]) / 1000)
        super().do_GET()
    def log_message(self, *a):
        pass
handler = functools.partial(Late, directory=sys.argv[4])
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), handler).serve_forever()
PY
ip netns exec "$NS" python3 "$work/server.py" "$MIRROR" "$PORT" "$RTT_MS" "$work/mirror" >/dev/null 2>&1 &
echo $! > "$work/server.pid"
sleep 1
cache=$(find "$work/caches" -maxdepth 3 -type d -name npm)
ci="rm -rf node_modules && npm ci --no-audit --no-fund --no-update-notifier -q >/dev/null"
rx() { incus exec "$1" -- cat /sys/class/net/eth0/statistics/rx_bytes; }
mirror=$(du -sb "$work/mirror" | cut -f1)
modules=
# One unmeasured round: npm's and the file system's first-run costs.
as_code "$one" "$ci"
as_code "$two" "$ci"
for rate in $RATES; do
    ip netns exec "$NS" tc qdisc del dev ccifake1 root 2>/dev/null || true
    if [ "$rate" != none ]; then
        ip netns exec "$NS" tc qdisc replace dev ccifake1 root tbf rate "$rate" burst 64kb latency 200ms
    fi
    a=() b=() ra=() rb=()
    for i in $(seq "$ROUNDS"); do
        find "$cache" -mindepth 1 -delete
        r=$(rx "$one"); t=$(now); as_code "$one" "$ci"; a+=("$(ms "$t" "$(now)")"); ra+=($(($(rx "$one") - r)))
        r=$(rx "$two"); t=$(now); as_code "$two" "$ci"; b+=("$(ms "$t" "$(now)")"); rb+=($(($(rx "$two") - r)))
    done
    if [ -z "$modules" ]; then
        modules=$(as_code "$two" "ls node_modules | wc -l")
        echo "project: $DEPS ($modules packages in node_modules; $mirror bytes of tarballs; shared npm cache after a round: $(du -sb "$cache" | cut -f1) bytes)"
    fi
    ma=$(printf '%s\n' "${a[@]}" | median)
    mb=$(printf '%s\n' "${b[@]}" | median)
    echo "link to the registry mirror: rate $rate, $RTT_MS ms per request"
    echo "  first npm ci (into the empty shared cache): ${ma} ms  (rounds: ${a[*]})"
    echo "  second npm ci, another slot (from the shared cache): ${mb} ms  (rounds: ${b[*]})"
    echo "  bytes received by the container: first ${ra[*]}; second ${rb[*]}"
    echo "  ratio second / first: $(echo "scale=2; $mb / $ma" | bc)x  (target <= 0.3x)"
done
