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

# The server settings every unbound here shares: in the foreground, no privileges to
# drop, files in folder $1, loopback clients, loopback upstreams.
unbound_common() {
  cat <<U
  do-daemonize: no
  use-syslog: no
  logfile: ""
  username: ""
  chroot: ""
  directory: "$1"
  pidfile: ""
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  # unbound answers the special-use zone test. itself (NXDOMAIN) unless told not to.
  local-zone: "test." nodefault
U
}

# unbound's main config: FILE PORT UPSTREAM-PORT INCLUDE (the blocklist's local-zones).
unbound_main_conf() {
  cat > "$1" <<U
server:
  interface: 127.0.0.1
  port: $2
  num-threads: 1
$(unbound_common "$work")
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

# unbound as a DNS-over-TLS (port $1) and DNS-over-HTTPS (port $2) server for the name
# dns.bench, forwarding to knotd on $3, with a CA made here ($work/enc/ca.pem); ended at
# exit.
start_tls_server() {
  local enc=$work/enc; mkdir -p "$enc"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$enc/ca.key" -out "$enc/ca.pem" -days 2 -subj /CN=bench-ca 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$enc/srv.key" -out "$enc/srv.csr" -subj /CN=dns.bench 2>/dev/null
  printf 'subjectAltName=DNS:dns.bench\n' > "$enc/san"
  openssl x509 -req -in "$enc/srv.csr" -CA "$enc/ca.pem" -CAkey "$enc/ca.key" -CAcreateserial -out "$enc/srv.pem" -days 2 -extfile "$enc/san" 2>/dev/null
  cat > "$enc/server.conf" <<U
server:
  interface: 127.0.0.1@$1
  interface: 127.0.0.1@$2
  tls-port: $1
  https-port: $2
  tls-service-key: "$enc/srv.key"
  tls-service-pem: "$enc/srv.pem"
  http-endpoint: "/dns-query"
  num-threads: 1
$(unbound_common "$enc")
  incoming-num-tcp: 1000
  http-max-streams: 1000
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@$3
U
  unbound -d -c "$enc/server.conf" >"$enc/server.log" 2>&1 & pids+=($!)
  sleep 0.5
}
