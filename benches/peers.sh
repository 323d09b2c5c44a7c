#!/usr/bin/env bash
# Side-by-side baseline for issue 7: telesink, unbound and dnsmasq answering the same
# blocklist and the same cached names, one after another, on loopback only.
#   bash benches/peers.sh            # NAMES=1000 RUNS=3 SECS=10 by default
# Each server is pinned to core 0 and dnsperf to core 1. For every server and workload it
# reports the median, min and max queries per second of RUNS runs, the server's CPU time
# per answered query (from /proc, so it holds even when dnsperf is the bottleneck) and
# its RSS, then the ratio telesink/peer. Not yet measured here: latency percentiles,
# the 1M-name list, start-up time, toggles and reloads under load (see docs/BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
NAMES=${NAMES:-1000}; RUNS=${RUNS:-3}; SECS=${SECS:-10}
want=(dnsperf unbound dnsmasq-base knot)
missing=()
for p in "${want[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
if ((${#missing[@]})); then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
cargo build --release --locked -q
bin=$PWD/target/release/telesink
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# Workload, fixed seed: NAMES blocked names (5% suffix rules), and 1000 names of a zone
# served by knotd that every resolver caches after a warm-up.
python3 - "$work" "$NAMES" <<'PY'
import random, sys
work, n = sys.argv[1], int(sys.argv[2])
r = random.Random(20261126)
words = ["ads","track","metrics","telemetry","stats","pixel","cdn","api","events","collect","beacon","log"]
tlds = ["com","net","org","io","de","nl"]
names, seen = [], set()
while len(names) < n:
    name = f"{r.choice(words)}{r.randrange(1000)}.{r.choice(words)}-{r.randrange(100000)}.{r.choice(tlds)}"
    if name not in seen:
        seen.add(name); names.append(name)
suffix = set(range(0, n, 20))
with open(f"{work}/block.list", "w") as f:
    for i, name in enumerate(names):
        f.write(("*." if i in suffix else "") + name + "\n")
with open(f"{work}/unbound-block.conf", "w") as f:
    f.write("server:\n")
    for name in names:
        f.write(f'  local-zone: "{name}." always_null\n')
with open(f"{work}/dnsmasq-block.conf", "w") as f:
    for name in names:
        f.write(f"address=/{name}/0.0.0.0\naddress=/{name}/::\n")
with open(f"{work}/blocked.q", "w") as f:
    for i, name in enumerate(names):
        f.write(f"{'sub.' if i in suffix else ''}{name} A\n")
with open(f"{work}/zone", "w") as f:
    f.write("$ORIGIN bench.test.\n$TTL 3600\n@ SOA ns h 1 3600 600 86400 3600\n@ NS ns\nns A 127.0.0.1\n")
    for i in range(1000):
        f.write(f"h{i} A 192.0.2.{i % 250 + 1}\n")
with open(f"{work}/cached.q", "w") as f:
    for i in range(1000):
        f.write(f"h{i}.bench.test A\n")
PY

kport=55301
cat > "$work/knot.conf" <<K
server:
    listen: 127.0.0.1@$kport
    rundir: $work
database:
    storage: $work/kdb
zone:
  - domain: bench.test
    file: $work/zone
K
knotd -c "$work/knot.conf" >/dev/null 2>&1 & pids+=($!)

cat > "$work/telesink.toml" <<T
[server]
listen = ["127.0.0.1:55302"]
[upstream]
servers = ["127.0.0.1:$kport"]
[policy]
lists_dir = "$work"
allowed_clients = ["127.0.0.0/8"]
[profiles.bench]
enabled = true
lists = ["block.list"]
T
cat > "$work/unbound.conf" <<U
server:
  interface: 127.0.0.1
  port: 55303
  num-threads: 1
  do-daemonize: no
  use-syslog: no
  logfile: ""
  username: ""
  chroot: ""
  directory: "$work"
  pidfile: ""
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  include: "$work/unbound-block.conf"
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@$kport
U

start() { # name port command...
  local name=$1 port=$2; shift 2
  taskset -c 0 "$@" >"$work/$name.log" 2>&1 & local pid=$!
  pids+=($pid)
  for _ in $(seq 100); do
    dig +short +time=1 +tries=1 -p "$port" @127.0.0.1 h1.bench.test A >/dev/null 2>&1 && { echo "$pid"; return; }
    sleep 0.1
  done
  echo "$name did not start" >&2; cat "$work/$name.log" >&2; exit 1
}
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

results="$work/results"
: > "$results"
run_server() { # name port command...
  local name=$1 port=$2; shift 2
  local pid; pid=$(start "$name" "$port" "$@")
  taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$work/cached.q" -l 2 >/dev/null 2>&1 || true  # warm the cache
  for workload in blocked cached; do
    for run in $(seq "$RUNS"); do
      local t0; t0=$(cpu_ticks "$pid")
      local out; out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$work/$workload.q" -l "$SECS" -c 8 -q 200 2>&1)
      local t1; t1=$(cpu_ticks "$pid")
      local qps; qps=$(awk '/Queries per second:/ {print $4}' <<<"$out")
      local done_q; done_q=$(awk '/Queries completed:/ {print $3}' <<<"$out")
      local us; us=$(python3 -c "print(round(($t1-$t0)*1e6/$(getconf CLK_TCK)/max($done_q,1),2))")
      echo "$name $workload $run $qps $us" >> "$results"
    done
  done
  local rss; rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  echo "$name rss 0 $rss 0" >> "$results"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

run_server telesink 55302 "$bin" run --config "$work/telesink.toml"
run_server unbound 55303 unbound -d -c "$work/unbound.conf"
run_server dnsmasq 55304 dnsmasq -k --port=55304 --listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts \
  --server=127.0.0.1#$kport --cache-size=10000 --conf-file="$work/dnsmasq-block.conf" --user=root

python3 - "$results" "$NAMES" "$RUNS" "$SECS" <<'PY'
import sys, statistics, subprocess, platform
rows = [l.split() for l in open(sys.argv[1])]
names, runs, secs = sys.argv[2:5]
def med(server, workload, col):
    v = [float(r[col]) for r in rows if r[0] == server and r[1] == workload]
    return (statistics.median(v), min(v), max(v)) if v else (0, 0, 0)
def ver(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0].strip()
    except Exception:
        return "?"
print(f"# Side-by-side: {names}-name blocklist, {runs} runs x {secs} s, servers on core 0, dnsperf on core 1\n")
print(f"machine: {platform.machine()}, {open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip()}, kernel {platform.release()}")
print(f"versions: {ver(['target/release/telesink','--version'])}; {ver(['unbound','-V'])}; {ver(['dnsmasq','--version'])}; {ver(['dnsperf','-h'])[:40]}\n")
print("| server | workload | QPS median [min-max] | CPU us/query | ratio telesink/peer (QPS) |")
print("|---|---|---|---|---|")
for w in ["blocked", "cached"]:
    t = med("telesink", w, 3)[0]
    for s in ["telesink", "unbound", "dnsmasq"]:
        q = med(s, w, 3); c = med(s, w, 4)
        ratio = "-" if s == "telesink" or q[0] == 0 else f"{t / q[0]:.2f}"
        print(f"| {s} | {w} | {q[0]:.0f} [{q[1]:.0f}-{q[2]:.0f}] | {c[0]:.2f} | {ratio} |")
print("\n| server | RSS after the runs |\n|---|---|")
for s in ["telesink", "unbound", "dnsmasq"]:
    r = [float(x[3]) for x in rows if x[0] == s and x[1] == "rss"]
    print(f"| {s} | {r[0]/1024:.1f} MiB |" if r else f"| {s} | ? |")
PY
