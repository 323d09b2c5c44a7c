#!/usr/bin/env bash
# Latency of forwarding over TLS or HTTPS at a fixed rate, one telesink config variant
# after another, on loopback only: a DoT/DoH server (unbound, a CA made here) forwarding
# to knotd, every query a cache miss, dnsperf -Q RATE for SECS seconds.
#
#   bash benches/upstream-latency.sh "connections = 1" "connections = 2" "connections = 8"
#   UP="https://127.0.0.1:55443/dns-query#dns.bench" RATE=5000 bash benches/upstream-latency.sh ""
#
# Each argument is extra [upstream] lines; prints p50, p90 and p99 in microseconds.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-2000}; SECS=${SECS:-5}; UP=${UP:-tls://127.0.0.1:55853#dns.bench}
want=(dnsperf knot unbound python3 openssl)
source benches/setup.sh
python3 benches/workload.py "$work" 0 >/dev/null
start_knot 55501
start_tls_server 55853 55443 55501
for variant in "$@"; do
  cat > "$work/t.toml" <<T
[server]
listen = ["127.0.0.1:55520"]
[upstream]
servers = ["$UP"]
ca_file = "$work/enc/ca.pem"
$variant
[policy]
allowed_clients = ["127.0.0.0/8"]
[control]
socket = "$work/c.sock"
state_file = "$work/s.json"
T
  taskset -c 0 "$bin" run --config "$work/t.toml" >"$work/t.log" 2>&1 & p=$!; pids+=("$p")
  sleep 1
  taskset -c 1 dnsperf -s 127.0.0.1 -p 55520 -d "$work/miss.q" -l "$SECS" -Q "$RATE" -v 2>&1 | python3 -c "
import sys
lat = sorted(float(l.split()[-1]) for l in sys.stdin if l.startswith('> '))
p = lambda x: lat[min(len(lat) - 1, int(len(lat) * x))] * 1e6
print('[$variant]', 'p50', round(p(0.5)), 'p90', round(p(0.9)), 'p99', round(p(0.99)))"
  kill "$p"; wait "$p" 2>/dev/null || true
done
