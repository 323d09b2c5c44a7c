//! Throwaway network namespaces for firewall tests: client - gateway - wan over veth
//! pairs, documentation addresses only. Nothing here touches the host's own namespace
//! beyond creating and deleting these namespaces.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Root is needed for namespaces and nftables; without it the test skips (see `skip`).
pub fn require_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid0 = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"));
    let tools = ["ip", "nft", "python3"].iter().all(|t| super::require(t));
    if uid0 && tools {
        return true;
    }
    super::skip("firewall tests need root (network namespaces, nftables)");
    false
}

/// Runs a command; panics with its error output on failure.
pub fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a shell command (`sh -c`) in a namespace; panics on failure.
pub fn sh(ns: &str, script: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", script])
        .output()
        .expect("ip netns exec");
    assert!(
        out.status.success(),
        "in {ns}: {script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Joins namespace `ns` to the bridge `br0` of namespace `switch`: a veth whose end
/// `peer` is a port of the bridge and whose end `ifname` in `ns` has `cidr`, both up.
pub fn attach_to_bridge(switch: &str, peer: &str, ns: &str, ifname: &str, cidr: &str) {
    run(&[
        "ip", "-n", switch, "link", "add", peer, "type", "veth", "peer", "name", ifname, "netns",
        ns,
    ]);
    sh(
        switch,
        &format!("ip link set {peer} master br0; ip link set {peer} up"),
    );
    sh(
        ns,
        &format!("ip addr add {cidr} dev {ifname}; ip link set {ifname} up"),
    );
}

/// The telesink table of the gateway in namespace `ns` (empty when there is none).
pub fn telesink_table(ns: &str) -> String {
    sh(ns, "nft list table inet telesink 2>/dev/null || true")
}

/// The metrics of the gateway in namespace `ns` (its shipped test port, 9153).
pub fn gateway_metrics(ns: &str) -> String {
    sh(ns, "curl -s -m 2 http://127.0.0.1:9153/metrics || true")
}

pub struct Topology {
    pub client: String,
    pub gateway: String,
    pub wan: String,
    children: Vec<Child>,
}

pub const CLIENT_IP: &str = "192.0.2.2";
pub const CLIENT_IP2: &str = "192.0.2.3";
pub const GATEWAY_LAN: &str = "192.0.2.1";
pub const GATEWAY_WAN: &str = "198.51.100.1";
pub const WAN_IP: &str = "198.51.100.2";

impl Topology {
    /// client(c0: 192.0.2.2, .3; 2001:db8:1::2) -- (lan0: 192.0.2.1) gateway
    /// (wan0: 198.51.100.1) -- (w0: 198.51.100.2) wan, which also owns the test
    /// destinations 203.0.113.0/24 and 2001:db8:f::/64 on its loopback.
    pub fn new() -> Topology {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let tag = format!("ts{}x{n}", std::process::id());
        let t = Topology {
            client: format!("{tag}c"),
            gateway: format!("{tag}g"),
            wan: format!("{tag}w"),
            children: Vec::new(),
        };
        for ns in [&t.client, &t.gateway, &t.wan] {
            run(&["ip", "netns", "add", ns]);
            t.sh(ns, "ip link set lo up; for f in /proc/sys/net/ipv6/conf/*/accept_dad; do echo 0 > $f; done");
        }
        run(&[
            "ip", "-n", &t.gateway, "link", "add", "lan0", "type", "veth", "peer", "name", "c0",
            "netns", &t.client,
        ]);
        run(&[
            "ip", "-n", &t.gateway, "link", "add", "wan0", "type", "veth", "peer", "name", "w0",
            "netns", &t.wan,
        ]);
        t.sh(&t.client, "echo 0 > /proc/sys/net/ipv6/conf/c0/accept_dad; ip addr add 192.0.2.2/24 dev c0; ip addr add 192.0.2.3/24 dev c0; ip addr add 2001:db8:1::2/64 dev c0 nodad; ip link set c0 up; ip route add default via 192.0.2.1; ip -6 route add default via 2001:db8:1::1");
        t.sh(&t.gateway, "for i in lan0 wan0; do echo 0 > /proc/sys/net/ipv6/conf/$i/accept_dad; done; ip addr add 192.0.2.1/24 dev lan0; ip addr add 2001:db8:1::1/64 dev lan0 nodad; ip addr add 198.51.100.1/24 dev wan0; ip addr add 2001:db8:2::1/64 dev wan0 nodad; ip link set lan0 up; ip link set wan0 up; ip route add 203.0.113.0/24 via 198.51.100.2; ip -6 route add 2001:db8:f::/64 via 2001:db8:2::2; sysctl -qw net.ipv4.ip_forward=1; sysctl -qw net.ipv6.conf.all.forwarding=1");
        t.sh(&t.wan, "echo 0 > /proc/sys/net/ipv6/conf/w0/accept_dad; ip addr add 198.51.100.2/24 dev w0; ip addr add 2001:db8:2::2/64 dev w0 nodad; ip link set w0 up; ip addr add 203.0.113.0/24 dev lo; ip addr add 2001:db8:f::1/64 dev lo nodad; ip -6 addr add 2001:db8:f::7/64 dev lo nodad; ip route add 192.0.2.0/24 via 198.51.100.1; ip -6 route add 2001:db8:1::/64 via 2001:db8:2::1");
        t
    }

    /// Runs a shell command in a namespace; panics on failure.
    pub fn sh(&self, ns: &str, script: &str) -> String {
        sh(ns, script)
    }

    /// Starts a long-running process in a namespace; it is killed on drop.
    pub fn spawn(&mut self, ns: &str, args: &[&str]) -> &mut Child {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn in netns");
        self.children.push(child);
        self.children.last_mut().expect("just pushed")
    }

    /// A TCP server on every wan address, port 8080, that accepts and closes.
    pub fn wan_listener(&mut self) {
        let wan = self.wan.clone();
        self.spawn(&wan, &["python3", "-c", LISTENER]);
        // Wait until it accepts.
        for _ in 0..100 {
            if self.sh(&wan, "python3 -c \"import socket; s=socket.socket(); s.settimeout(0.2); print(s.connect_ex(('203.0.113.10', 8080)))\"").trim() == "0" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("wan listener did not start");
    }

    /// Sends one UDP datagram and waits for the echo: "ok", "refused" (ICMP unreachable
    /// from a reject) or "timeout".
    pub fn udp(&self, ns: &str, from: Option<&str>, dst: &str, port: u16) -> String {
        let bind = from.map_or(String::new(), |f| format!("s.bind(('{f}', 0));"));
        let fam = if dst.contains(':') {
            "socket.AF_INET6"
        } else {
            "socket.AF_INET"
        };
        let script = format!(
            "import socket\ns=socket.socket({fam}, socket.SOCK_DGRAM); s.settimeout(2); {bind}\ns.connect(('{dst}', {port}))\ntry:\n  s.send(b'x'); s.recv(10); print('ok')\nexcept socket.timeout: print('timeout')\nexcept OSError as e: print('refused' if e.errno in (111, 113) else 'error %d' % e.errno)"
        );
        self.sh(
            ns,
            &format!("python3 -c \"{}\"", script.replace('"', "\\\"")),
        )
        .trim()
        .to_owned()
    }

    /// Attempts a TCP connection from `ns`, optionally from a given source address:
    /// "ok", "refused" (a reset: rejected) or "timeout".
    pub fn connect(&self, ns: &str, from: Option<&str>, dst: &str, port: u16) -> String {
        let bind = from.map_or(String::new(), |f| format!("s.bind(('{f}', 0));"));
        let fam = if dst.contains(':') {
            "socket.AF_INET6"
        } else {
            "socket.AF_INET"
        };
        let script = format!(
            "import socket\ns=socket.socket({fam}); s.settimeout(2); {bind}\ntry:\n  s.connect(('{dst}', {port})); print('ok')\nexcept ConnectionRefusedError: print('refused')\nexcept socket.timeout: print('timeout')\nexcept OSError as e: print('error', e.errno)"
        );
        self.sh(
            ns,
            &format!("python3 -c \"{}\"", script.replace('"', "\\\"")),
        )
        .trim()
        .to_owned()
    }
}

/// TCP servers on 8080, 53, 853 and 443 that accept and close, and a UDP echo on 53,
/// on every wan address, IPv4 and IPv6.
const LISTENER: &str = "import socket,threading
def tcp(fam, addr, port):
    s=socket.socket(fam); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, port)); s.listen(512)
    while True:
        c,_=s.accept(); c.close()
def udp(fam, addr, port):
    s=socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, port))
    while True:
        d,a=s.recvfrom(2048); s.sendto(d,a)
for fam, addr in ((socket.AF_INET, '0.0.0.0'), (socket.AF_INET6, '::')):
    for port in (8080, 53, 853, 443):
        threading.Thread(target=tcp, args=(fam, addr, port), daemon=True).start()
    threading.Thread(target=udp, args=(fam, addr, 53), daemon=True).start()
threading.Event().wait()";

impl Drop for Topology {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.client, &self.gateway, &self.wan] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
