#!/usr/bin/env bash
# Proxy mode against direct connections, side by side in one run, to a
# fast HTTP and HTTPS server on a fake host (a network namespace: no packet
# leaves the machine):
#   latency      N sequential requests from a restricted container (direct)
#                and from a proxy-mode one (through cci's proxy): p50 and
#                p99 of curl's time_total, and the difference (target:
#                at most +2 ms at p50, +10 ms at p99)
#   throughput   downloads of SIZE_MB over HTTP (the proxy reads the Host
#                header) and over HTTPS (a CONNECT tunnel whose SNI the
#                proxy checks), direct and proxied alternating, ROUNDS pairs
#                each: the median of the pairs' ratios (a pair runs back to
#                back, so the machine's drift cancels; one download alone
#                varies by 20 % here) and the median speeds (target: proxied
#                at least 0.8x)
#   concurrency  500 connections at once from 4 proxy-mode containers (125
#                each, 1 MB each): failures (target 0) and the proxy's
#                largest resident memory meanwhile (target under 50 MB)
#   usage: tests/bench/proxy-vs-direct.sh [N] [SIZE_MB] [ROUNDS]
#   (needs tests/setup-incus.sh first; about 4 minutes with the defaults)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-300}
SIZE_MB=${2:-1024}
ROUNDS=${3:-7}
TLS_PORT=8443
IMAGE=${CCI_TEST_IMAGE:-cci-test-base}
NS=cci-fakenet
HOST=198.51.100.20
PORT=8081
cargo build --release --quiet
CCI=$PWD/target/release/cci
work=$(mktemp -d)
names=()
cleanup() {
    for n in "${names[@]}"; do incus delete -f "$n" >/dev/null 2>&1 || true; done
    [ -f "$work/server.pid" ] && kill "$(cat "$work/server.pid")" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The proxy of this build, not one a debug build left running.
pkill -f "cci network proxy" || true
bash tests/fixtures/fakenet.sh up >/dev/null
bash tests/fixtures/fakenet.sh dns "bench.proxy.test=$HOST" >/dev/null
# The server: GET /N answers N bytes (Connection: close), in plain HTTP on
# PORT and in TLS (a certificate made here for the name) on TLS_PORT.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=bench.proxy.test \
    -addext subjectAltName=DNS:bench.proxy.test -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat >"$work/server.py" <<'EOF'
import socket, ssl, sys, threading
block = b"x" * (1 << 20)
def serve(c):
    try:
        head = b""
        while b"\r\n\r\n" not in head:
            d = c.recv(4096)
            if not d:
                return
            head += d
        path = head.split(b" ", 2)[1]
        n = int(path.rsplit(b"/", 1)[-1] or b"0")
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % n)
        while n > 0:
            k = min(n, len(block))
            c.sendall(block[:k])
            n -= k
    except OSError:
        pass
    finally:
        c.close()
def listen(port, tls):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(1024)
    while True:
        c, _ = s.accept()
        if tls:
            try:
                c = tls.wrap_socket(c, server_side=True)
            except OSError:
                c.close()
                continue
        threading.Thread(target=serve, args=(c,), daemon=True).start()
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(sys.argv[3], sys.argv[4])
threading.Thread(target=listen, args=(int(sys.argv[2]), tls), daemon=True).start()
listen(int(sys.argv[1]), None)
EOF
ip netns exec "$NS" python3 "$work/server.py" "$PORT" "$TLS_PORT" "$work/cert.pem" "$work/key.pem" >/dev/null 2>&1 &
echo $! >"$work/server.pid"
sleep 0.5

launch() { # NAME NETWORK-FLAGS...
    local n=$1
    shift
    names+=("$n")
    CCI_IMAGE=$IMAGE "$CCI" container launch "$IMAGE" "$n" "$@" --dns-server=198.51.100.53 >/dev/null
}
inside() { local n=$1; shift; incus exec "$n" -- bash -c "$*"; }
# Proxy-mode containers get the proxy variables in their environment;
# `incus exec` passes the instance's environment.* keys.
px=(--network proxy --allow "bench.proxy.test:$PORT" --allow "bench.proxy.test:$TLS_PORT")
launch cci-bench-direct --network restricted
launch cci-bench-px1 "${px[@]}"
for i in 2 3 4; do launch "cci-bench-px$i" "${px[@]}"; done
url=http://bench.proxy.test:$PORT
direct_url=http://$HOST:$PORT
tls_url=https://bench.proxy.test:$TLS_PORT
for n in cci-bench-direct cci-bench-px1; do incus file push "$work/cert.pem" "$n/root/bench-ca.pem" >/dev/null; done

echo "latency: $N requests each" >&2
lat() { # NAME URL
    inside "$1" "for i in \$(seq $N); do curl -s -o /dev/null -w '%{time_total}\n' $2/100; done" |
        sort -n | awk '{a[NR]=$1*1000} END {printf "%.2f %.2f\n", a[int(NR*0.5)], a[int(NR*0.99)]}'
}
read -r d50 d99 < <(lat cci-bench-direct "$direct_url")
read -r p50 p99 < <(lat cci-bench-px1 "$url")

echo "throughput: $SIZE_MB MB, $ROUNDS pairs over HTTP and $ROUNDS over HTTPS" >&2
bytes=$((SIZE_MB * 1024 * 1024))
# NAME URL [CURL-ARGS...]: bytes per second. The direct HTTPS download
# reaches the address with the same name, so both send the same SNI.
speed() {
    local n=$1 u=$2
    shift 2
    inside "$n" "curl -s --cacert /root/bench-ca.pem $* -o /dev/null -w '%{speed_download}' $u/$bytes"
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (a[int((NR+1)/2)] + a[int(NR/2)+1]) / 2}'; }
# KIND DIRECT-URL PROXIED-URL [DIRECT-CURL-ARGS]: prints "direct proxied ratio".
pairs() {
    local ds=() ps=() rs=() d p
    for _ in $(seq "$ROUNDS"); do
        d=$(speed cci-bench-direct "$2" "${4:-}")
        p=$(speed cci-bench-px1 "$3")
        ds+=("$d") ps+=("$p") rs+=("$(echo "scale=4; $p / $d" | bc)")
    done
    echo "$1 pairs (proxied/direct): ${rs[*]}" >&2
    echo "$(median "${ds[@]}") $(median "${ps[@]}") $(median "${rs[@]}")"
}
read -r sd sp sr < <(pairs http "$direct_url" "$url")
read -r td tp tr < <(pairs https "$tls_url" "$tls_url" "--resolve bench.proxy.test:$TLS_PORT:$HOST")

echo "concurrency: 4 x 125 connections of 1 MB" >&2
pid=$(pgrep -f "cci network proxy" | head -1)
peak=0
( while kill -0 "$pid" 2>/dev/null; do grep VmRSS "/proc/$pid/status" | awk '{print $2}'; sleep 0.1; done ) >"$work/rss" &
sampler=$!
loads=()
for i in 1 2 3 4; do
    inside "cci-bench-px$i" "for k in \$(seq 125); do curl -s -o /dev/null -w '%{http_code}\n' --max-time 60 $url/1048576 & done; wait" >"$work/codes$i" &
    loads+=($!)
done
wait "${loads[@]}" || true
kill "$sampler" 2>/dev/null || true
ok=$(cat "$work"/codes* | grep -c '^200$' || true)
peak=$(sort -n "$work/rss" | tail -1)

echo "latency ms (p50 / p99):   direct $d50 / $d99   proxied $p50 / $p99   added $(echo "$p50 - $d50" | bc) / $(echo "$p99 - $d99" | bc)   (target <= 2 / 10)"
mbs() { printf '%.0f' "$(echo "$1 / 1048576" | bc -l)"; }
echo "throughput HTTP ($SIZE_MB MB):    direct $(mbs "$sd") MB/s   proxied $(mbs "$sp") MB/s   ratio $(printf %.2f "$sr")   (median of $ROUNDS pairs; target >= 0.8)"
echo "throughput HTTPS ($SIZE_MB MB):   direct $(mbs "$td") MB/s   proxied $(mbs "$tp") MB/s   ratio $(printf %.2f "$tr")   (median of $ROUNDS pairs; target >= 0.8)"
echo "concurrency: $ok of 500 answered 200 (target 500); proxy peak memory $((peak / 1024)) MB (target < 50)"
