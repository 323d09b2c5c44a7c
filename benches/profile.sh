#!/usr/bin/env bash
# Where telesink's CPU goes under load: `perf record` of the release binary while dnsperf
# sends one workload of benches/peers.sh, on loopback only.
#
#   bash benches/profile.sh                 # WORKLOAD=blocked SECS=10 CONFIG=default
#   WORKLOAD=mix bash benches/profile.sh
#   WORKLOAD=big-blocked BIG=1000000 bash benches/profile.sh
#   CONFIG=bare bash benches/profile.sh     # ledger, limiter and device identity off
#   WORKLOAD=miss UPSTREAM=dot bash benches/profile.sh   # forwarding over TLS (or doh)
#
# The server runs pinned to core 0, dnsperf on core 1 (as in peers.sh), the profile is
# of the server's process only (software clock: this VM has no hardware counters). The
# report is perf's flat list of symbols by self time, then the split between kernel,
# telesink and libraries; docs/BENCHMARKS.md keeps the top entries.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKLOAD=${WORKLOAD:-blocked}; SECS=${SECS:-10}; BIG=${BIG:-0}; CONFIG=${CONFIG:-default}; TOP=${TOP:-30}
UPSTREAM=${UPSTREAM:-udp}
want=(dnsperf knot unbound dnsutils linux-perf python3 openssl)
source benches/setup.sh
python3 benches/workload.py "$work" "$BIG"
tag=small; [[ $WORKLOAD == big-blocked ]] && tag=big

kport=55311
start_knot "$kport"
cat > "$work/telesink.toml" <<T
[server]
listen = ["127.0.0.1:55312"]
[upstream]
servers = ["127.0.0.1:$kport"]
[policy]
lists_dir = "$work"
allowed_clients = ["127.0.0.0/8"]
[profiles.bench]
enabled = true
lists = ["$tag.list"]
[control]
socket = "$work/control.sock"
state_file = "$work/state.json"
T
case $UPSTREAM in
  dot) start_tls_server 55853 55443 "$kport"; sed -i "s|servers = .*|servers = [\"tls://127.0.0.1:55853#dns.bench\"]\nca_file = \"$work/enc/ca.pem\"|" "$work/telesink.toml" ;;
  doh) start_tls_server 55853 55443 "$kport"; sed -i "s|servers = .*|servers = [\"https://127.0.0.1:55443/dns-query#dns.bench\"]\nca_file = \"$work/enc/ca.pem\"|" "$work/telesink.toml" ;;
esac
if [[ $CONFIG == bare ]]; then
  printf '[identity]\ndevices = false\n[evidence]\nenabled = false\n[server.rate_limit]\nenabled = false\n' >> "$work/telesink.toml"
fi
taskset -c 0 "$bin" run --config "$work/telesink.toml" >"$work/telesink.log" 2>&1 & pid=$!; pids+=("$pid")
for _ in $(seq 3000); do
  [[ $(dig +short +time=1 +tries=1 -p 55312 @127.0.0.1 h1.bench.test A 2>/dev/null | tail -1) == 192.0.2.2 ]] && break
  sleep 0.01
done
taskset -c 1 dnsperf -s 127.0.0.1 -p 55312 -d "$work/cached.q" -l 2 >/dev/null 2>&1 || true  # warm the cache
data=$PWD/target/perf-$WORKLOAD-$CONFIG-$UPSTREAM.data  # kept for perf report
perf record -q -e cpu-clock -F 4999 -g -p "$pid" -o "$data" -- sleep "$SECS" >/dev/null 2>&1 &
rec=$!
taskset -c 1 dnsperf -s 127.0.0.1 -p 55312 -d "$work/$WORKLOAD.q" -l "$SECS" -c 8 -q 200 2>&1 | grep -E "Queries per second|Queries completed"
wait "$rec" || true
echo
echo "## self time by symbol (top $TOP), $WORKLOAD, $CONFIG configuration"
perf report -i "$data" --no-children --sort sym --stdio -q 2>/dev/null \
  | grep -E '^ +[0-9.]+%' | head -n "$TOP"
echo
echo "## by object"
perf report -i "$data" --no-children --sort dso --stdio -q 2>&1 | grep -E '%' | head -10
