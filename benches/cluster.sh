#!/usr/bin/env bash
# Two gateways, one policy (issue 25): how fast a change made on one gateway is in force
# on the other, how fast an address one gateway learned is in the other's learned set,
# and the DNS gap when the VIP moves. The site of tests/cluster.rs, with the release
# binary and the shipped contrib/keepalived/keepalived.conf (adverts every second, as
# shipped): throwaway namespaces, documentation addresses only, every process ended by
# PID at exit. Needs root.
#
#   bash benches/cluster.sh                 # N=40 changes and names, FAILOVERS=3 of each kind
#   N=100 FAILOVERS=5 bash benches/cluster.sh
#
# Toggle propagation is read from the two daemons' logs (one clock): the time A logs
# "shared change written ... revision=R" to the time B logs "shared state in force
# revision=R"; the CLI's round trip (until it returns, naming both nodes) beside it.
# Shadow convergence: a client asks A for a name under a suffix rule, each with its own
# address; the time until the address is in A's learned set and in B's (polled).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-40}; FAILOVERS=${FAILOVERS:-3}
want=(nats-server keepalived knot dnsutils python3 curl nftables iproute2)
source benches/setup.sh
[[ $(id -u) -eq 0 ]] || { echo "benches/cluster.sh needs root (namespaces, nftables)" >&2; exit 1; }
tag="tcb$$"
A=192.0.2.11 B=192.0.2.12 W=192.0.2.13 C=192.0.2.50 VIP=192.0.2.1
ns() { echo "$tag$1"; }
in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }
spawn() { # node log command...
  local n=$1 log=$2; shift 2
  ip netns exec "$(ns "$n")" "$@" >"$log" 2>&1 &
  pids+=($!)
}
teardown() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for n in s a b w c; do ip netns del "$(ns "$n")" 2>/dev/null || true; done
  rm -rf "$work"
}
trap teardown EXIT

for n in s a b w c; do ip netns add "$(ns "$n")"; in_ns "$n" ip link set lo up; done
in_ns s ip link add br0 type bridge; in_ns s ip link set br0 up
for pair in a:$A b:$B w:$W c:$C; do
  n=${pair%%:*} ip=${pair#*:}
  ip -n "$(ns s)" link add "p$n" type veth peer name lan0 netns "$(ns "$n")"
  in_ns s ip link set "p$n" master br0; in_ns s ip link set "p$n" up
  in_ns "$n" ip addr add "$ip/24" dev lan0; in_ns "$n" ip link set lan0 up
done
for n in a b; do in_ns "$n" ip link add wan0 type veth peer name wan0p; in_ns "$n" ip link set wan0 up; done

# The store: three JetStream servers (the gateways and the witness).
for pair in a:$A b:$B w:$W; do
  n=${pair%%:*} ip=${pair#*:}
  cat > "$work/nats-$n.conf" <<C
server_name: $n
listen: $ip:4222
jetstream { store_dir: "$work/js-$n" }
cluster { name: bench, listen: $ip:6222, routes: [nats-route://$A:6222, nats-route://$B:6222, nats-route://$W:6222] }
C
  spawn "$n" "$work/nats-$n.log" nats-server -c "$work/nats-$n.conf"
done

# The upstream: n1..nN.learn.shadow.test each with its own address.
mkdir -p "$work/knot/db"
{
  printf '$ORIGIN shadow.test.\n$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 60\n@ NS ns\nns A %s\n' "$W"
  for i in $(seq "$N"); do printf 'n%s.learn A 203.0.113.%s\n' "$i" "$i"; done
} > "$work/knot/shadow.zone"
printf '$ORIGIN ads.test.\n$TTL 60\n@ SOA ns hostmaster 1 3600 600 86400 60\n@ NS ns\nns A %s\n* A 203.0.113.250\n' "$W" > "$work/knot/ads.zone"
cat > "$work/knot/knot.conf" <<K
server:
    listen: $W@53
    rundir: $work/knot
database:
    storage: $work/knot/db
zone:
  - domain: shadow.test
    file: $work/knot/shadow.zone
  - domain: ads.test
    file: $work/knot/ads.zone
K
spawn w "$work/knot.log" knotd -c "$work/knot/knot.conf"

printf 'collector.shadow.test\n*.learn.shadow.test\n' > "$work/tele.list"
printf 'banner.ads.test\n' > "$work/ads.list"
printf '203.0.113.200/32\n' > "$work/ads.cidrs"
gateway_conf() { # node own other: the tests' gateway config, with its files here
  mkdir -p "$work/gw-$1"
  sed -e "s|@OWN@|$2|g; s|@OTHER@|$3|g; s|@NODE@|$1|; s|@DIR@|$work|; s|site = \"lab\"|site = \"bench\"|" \
    tests/fixtures/cluster/gateway.toml > "$work/gw-$1/telesink.toml"
  printf '[control]\nsocket = "%s"\nstate_file = "%s"\n[evidence]\nenabled = false\n' \
    "$work/gw-$1/control.sock" "$work/gw-$1/state.json" >> "$work/gw-$1/telesink.toml"
}
gateway_conf a $A $B; gateway_conf b $B $A
declare -A gw_pid
start_gateway() { # node
  local log=$work/gw-$1/log
  : > "$log"
  ip netns exec "$(ns "$1")" env NO_COLOR=1 TELESINK_LOG=info "$bin" run --config "$work/gw-$1/telesink.toml" >"$log" 2>&1 &
  gw_pid[$1]=$!; pids+=($!)
  for _ in $(seq 600); do grep -q ' ready$' "$log" && return; sleep 0.05; done
  echo "telesink on $1 did not start:"; cat "$log"; exit 1
}
start_gateway a; start_gateway b
ctl() { local n=$1; shift; "$bin" "$@" --socket "$work/gw-$n/control.sock"; }

# keepalived as shipped, with this site's addresses.
for spec in a:$A:$B:150 b:$B:$A:100; do
  IFS=: read -r n ip peer prio <<<"$spec"
  sed -e "s/router_id gw1/router_id gw$n/; s/priority 150/priority $prio/" \
      -e "s/unicast_src_ip 10.0.0.2/unicast_src_ip $ip/; s/^    10.0.0.3$/    $peer/; s#10.0.0.1/24 dev lan0#$VIP/24 dev lan0#" \
      contrib/keepalived/keepalived.conf > "$work/keepalived-$n.conf"
  spawn "$n" "$work/keepalived-$n.log" keepalived --dont-fork --log-console --vrrp -f "$work/keepalived-$n.conf" \
    -p "$work/ka-$n.pid" -r "$work/ka-vrrp-$n.pid" -c "$work/ka-chk-$n.pid"
done
holder() { for n in a b; do in_ns "$n" ip -4 addr show dev lan0 | grep -q "$VIP/" && { echo "$n"; return; }; done; echo none; }
wait_holder() { for _ in $(seq 300); do [[ $(holder) == "$1" ]] && return; sleep 0.1; done; echo "the VIP never went to $1" >&2; exit 1; }
wait_holder a

echo "== toggle propagation: $N changes made on A"
for i in $(seq "$N"); do
  if ((i % 2)); then verb=disable; else verb=enable; fi
  s=$(date +%s%N); ctl a profile "$verb" ads >/dev/null; e=$(date +%s%N)
  echo "$(( (e - s) / 1000 ))" >> "$work/cli-us"
done
sleep 1.5
python3 - "$work/gw-a/log" "$work/gw-b/log" "$work/cli-us" > "$work/toggle.txt" <<'PY'
import re, sys, datetime
def stamps(path, pattern):
    out = {}
    for line in open(path):
        m = re.search(pattern, line)
        if m:
            t = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
            out.setdefault(int(m.group(1)), t)
    return out
written = stamps(sys.argv[1], r"shared change written: .* revision=(\d+)")
applied = stamps(sys.argv[2], r"shared state in force revision=(\d+)")
lags = sorted((applied[r] - t) * 1000 for r, t in written.items() if r in applied)
cli = sorted(int(x) / 1000 for x in open(sys.argv[3]))
q = lambda v, p: v[min(len(v) - 1, int(p * len(v)))]
print(f"toggles {len(written)}, in force on B {len(lags)}: A written -> B in force p50 {q(lags, .5):.1f} ms, p99 {q(lags, .99):.1f} ms, max {lags[-1]:.1f} ms")
print(f"CLI round trip (until both nodes named) p50 {q(cli, .5):.1f} ms, p99 {q(cli, .99):.1f} ms")
PY
cat "$work/toggle.txt"

echo "== shadow convergence: $N names asked of A, learned, shared"
for i in $(seq "$N"); do
  s=$(date +%s%N)
  in_ns c dig +short +time=1 +tries=1 "@$VIP" "n$i.learn.shadow.test" A >/dev/null
  ta="" tb=""
  for _ in $(seq 400); do
    now=$(date +%s%N)
    [[ -z $ta ]] && in_ns a nft list set inet telesink learned_tele_4 | grep -q "203.0.113.$i " && ta=$now
    [[ -z $tb ]] && in_ns b nft list set inet telesink learned_tele_4 | grep -q "203.0.113.$i " && tb=$now
    [[ -n $ta && -n $tb ]] && break
    sleep 0.002
  done
  echo "$(( (ta - s) / 1000 )) $(( (tb - s) / 1000 ))" >> "$work/shadow-us"
done
python3 - "$work/shadow-us" <<'PY'
import sys
rows = [tuple(int(x) / 1000 for x in l.split()) for l in open(sys.argv[1])]
q = lambda v, p: sorted(v)[min(len(v) - 1, int(p * len(v)))]
a = [r[0] for r in rows]; b = [r[1] for r in rows]; d = [r[1] - r[0] for r in rows]
print(f"names {len(rows)}: query -> A's set p50 {q(a,.5):.1f} ms p99 {q(a,.99):.1f}; query -> B's set p50 {q(b,.5):.1f} ms p99 {q(b,.99):.1f}; A's set -> B's set p50 {q(d,.5):.1f} ms p99 {q(d,.99):.1f} (polled: nft listing takes a few ms)")
PY

echo "== failover under a query stream to the VIP (a query every 20 ms, 250 ms timeout)"
cat > "$work/stream.py" <<'PY'
import json, random, socket, struct, sys, time
server, name, want, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
q0 = b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\0' + struct.pack('>HH', 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.25)
sent = answered = 0; last = first = time.monotonic(); gap = 0.0; end = first + secs
while time.monotonic() < end:
    qid = random.randrange(65536); t = time.monotonic()
    s.sendto(struct.pack('>HHHHHH', qid, 0x0100, 1, 0, 0, 0) + q0, (server, 53)); sent += 1
    try:
        while True:
            data, _ = s.recvfrom(4096)
            if struct.unpack('>H', data[:2])[0] == qid: break
        if data[3] & 15 == want:
            now = time.monotonic(); answered += 1; gap = max(gap, now - last); last = now
    except socket.timeout:
        pass
    time.sleep(max(0, 0.02 - (time.monotonic() - t)))
gap = max(gap, time.monotonic() - last)
print(json.dumps({"sent": sent, "answered": answered, "gap_ms": round(gap * 1000)}))
PY
failover() { # kind
  in_ns c python3 "$work/stream.py" "$VIP" banner.ads.test 3 8 > "$work/stream.out" &
  local sp=$!
  sleep 1
  case $1 in
    kill) kill -9 "${gw_pid[a]}" ;;
    link) in_ns a ip link set lan0 down ;;
  esac
  wait "$sp"
  echo "$1 $(cat "$work/stream.out") holder=$(holder)" | tee -a "$work/failover.txt"
  case $1 in
    kill) start_gateway a ;;
    link) in_ns a ip link set lan0 up ;;
  esac
  wait_holder a
  sleep 2
}
ctl a profile enable ads >/dev/null 2>&1 || true
for kind in kill link; do for _ in $(seq "$FAILOVERS"); do failover "$kind"; done; done
python3 - "$work/failover.txt" <<'PY'
import json, sys, statistics
by = {}
for line in open(sys.argv[1]):
    kind, rest = line.split(" ", 1)
    f = json.loads(rest[:rest.index("}") + 1])
    by.setdefault(kind, []).append(f)
for kind, fs in by.items():
    gaps = [f["gap_ms"] for f in fs]; lost = [f["sent"] - f["answered"] for f in fs]
    what = {"kill": "SIGKILL of telesink on the VIP holder", "link": "the VIP holder's link down"}[kind]
    print(f"{what}: gap median {statistics.median(gaps):.0f} ms [{min(gaps)}-{max(gaps)}], queries lost median {statistics.median(lost):.0f} of ~{fs[0]['sent']} [{min(lost)}-{max(lost)}]")
PY
