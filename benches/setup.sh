# Sourced by benches/peers.sh and benches/profile.sh: installs the Debian packages named
# in `want` that are missing, builds the release binary, makes a scratch folder `work`
# and ends every process in `pids` (by PID) when the script exits.
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

# unbound's main config: FILE PORT UPSTREAM-PORT INCLUDE (the blocklist's local-zones).
unbound_main_conf() {
  cat > "$1" <<U
server:
  interface: 127.0.0.1
  port: $2
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
  # unbound answers the special-use zone test. itself (NXDOMAIN) unless told not to.
  local-zone: "test." nodefault
  include: "$4"
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@$3
U
}

# knotd serving the workload's zone (bench.test) on 127.0.0.1:PORT, ended at exit.
start_knot() {
  cat > "$work/knot.conf" <<K
server:
    listen: 127.0.0.1@$1
    rundir: $work
database:
    storage: $work/kdb
zone:
  - domain: bench.test
    file: $work/zone
K
  knotd -c "$work/knot.conf" >/dev/null 2>&1 & pids+=($!)
  sleep 0.5
}
