#!/usr/bin/env bash
# Where a server's CPU per query goes, user space against kernel: telesink and unbound
# side by side, alternating, on loopback only.
#
#   bash benches/cpu-split.sh                  # WL="blocked cached mix" RUNS=3 SECS=4
#
# Both servers pinned to core 0, dnsperf on core 1 (as in benches/peers.sh). For each
# run: QPS, and the server's user and system CPU time per answered query (utime and
# stime from /proc/PID/stat). On a host where the kernel's loopback UDP path is most of
# every server's cost, this shows what is left to win in user space.
set -euo pipefail
cd "$(dirname "$0")/.."
WL=${WL:-blocked cached mix}; RUNS=${RUNS:-3}; SECS=${SECS:-4}
want=(dnsperf unbound knot dnsutils python3)
source benches/setup.sh
python3 benches/workload.py "$work" 0
start_knot 55321
cat > "$work/telesink.toml" <<T
[server]
listen = ["127.0.0.1:55322"]
[upstream]
servers = ["127.0.0.1:55321"]
[policy]
lists_dir = "$work"
allowed_clients = ["127.0.0.0/8"]
[profiles.bench]
enabled = true
lists = ["small.list"]
[control]
socket = "$work/control.sock"
state_file = "$work/state.json"
T
unbound_main_conf "$work/unbound.conf" 55323 55321 "$work/unbound-small.conf"
taskset -c 0 "$bin" run --config "$work/telesink.toml" >"$work/telesink.log" 2>&1 & tpid=$!; pids+=("$tpid")
taskset -c 0 unbound -d -c "$work/unbound.conf" >"$work/unbound.log" 2>&1 & upid=$!; pids+=("$upid")
sleep 2
for port in 55322 55323; do taskset -c 1 dnsperf -s 127.0.0.1 -p $port -d "$work/cached.q" -l 2 >/dev/null 2>&1 || true; done
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
echo "| workload | server | run | QPS | user us/query | system us/query |"
echo "|---|---|---|---|---|---|"
for wl in $WL; do
  for run in $(seq "$RUNS"); do
    for s in "telesink:$tpid:55322" "unbound:$upid:55323"; do
      IFS=: read -r name pid port <<<"$s"
      read -r u0 s0 < <(ticks "$pid")
      out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$work/$wl.q" -l "$SECS" -c 8 -q 200 2>&1)
      read -r u1 s1 < <(ticks "$pid")
      n=$(awk '/Queries completed:/ {print $3}' <<<"$out"); q=$(awk '/Queries per second:/ {print $4}' <<<"$out")
      python3 -c "n=max($n,1); print('| $wl | $name | $run | %.0f | %.2f | %.2f |' % ($q, ($u1-$u0)*1e6/$hz/n, ($s1-$s0)*1e6/$hz/n))"
    done
  done
done
