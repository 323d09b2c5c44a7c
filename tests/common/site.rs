//! A site of two gateways in throwaway namespaces (issue 25): gateway A and B, a witness
//! W and a LAN client C on one bridge (192.0.2.0/24, documentation addresses only). Each
//! of A, B and W runs a nats-server of one three-server JetStream cluster; W also runs
//! knotd, the upstream; A and B run telesink with `[cluster]`, its firewall on (shadow
//! resolution for `tele`), and optionally keepalived moving the VIP 192.0.2.1. Every
//! process is ended by PID when the site is dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::netns::{attach_to_bridge, gateway_metrics, run, sh, telesink_table};
use super::{Telesink, TempDir};

pub const A_IP: &str = "192.0.2.11";
pub const B_IP: &str = "192.0.2.12";
pub const W_IP: &str = "192.0.2.13";
pub const CLIENT: &str = "192.0.2.50";
pub const VIP: &str = "192.0.2.1";
pub const SITE: &str = "lab";

/// The upstream's zones: tele.test and ads.test answer every name; shadow.test holds
/// the address a blocked name resolves to (learned by shadow resolution).
const ZONES: &[(&str, &str)] = &[
    (
        "tele.test",
        "$ORIGIN tele.test.\n$TTL 60\n@ SOA ns hostmaster 1 3600 600 86400 60\n@ NS ns\nns A 192.0.2.13\n* A 203.0.113.1\n",
    ),
    (
        "ads.test",
        "$ORIGIN ads.test.\n$TTL 60\n@ SOA ns hostmaster 1 3600 600 86400 60\n@ NS ns\nns A 192.0.2.13\n* A 203.0.113.2\n",
    ),
    (
        "shadow.test",
        "$ORIGIN shadow.test.\n$TTL 60\n@ SOA ns hostmaster 1 3600 600 86400 60\n@ NS ns\nns A 192.0.2.13\ncollector A 203.0.113.100\nx.suffix A 203.0.113.102\n",
    ),
];

pub struct Site {
    pub tag: String,
    pub dir: TempDir,
    /// (name, pid) of every server started, ended in reverse order on drop.
    servers: Vec<(String, Child)>,
    pub a: Option<Telesink>,
    pub b: Option<Telesink>,
}

pub fn ns(tag: &str, node: &str) -> String {
    format!("{tag}{node}")
}

impl Site {
    /// The namespaces, the NATS cluster and knotd; the gateways come with `start_gateway`.
    pub fn new() -> Site {
        static N: AtomicUsize = AtomicUsize::new(0);
        let tag = format!(
            "tc{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut site = Site {
            dir: TempDir::new("site"),
            tag: tag.clone(),
            servers: Vec::new(),
            a: None,
            b: None,
        };
        let sw = ns(&tag, "s");
        for n in ["s", "a", "b", "w", "c"] {
            run(&["ip", "netns", "add", &ns(&tag, n)]);
            sh(&ns(&tag, n), "ip link set lo up");
        }
        sh(&sw, "ip link add br0 type bridge; ip link set br0 up");
        for (n, ip) in [("a", A_IP), ("b", B_IP), ("w", W_IP), ("c", CLIENT)] {
            attach_to_bridge(
                &sw,
                &format!("p{n}"),
                &ns(&tag, n),
                "lan0",
                &format!("{ip}/24"),
            );
        }
        // The gateways' WAN side (the firewall names one).
        for n in ["a", "b"] {
            sh(
                &ns(&tag, n),
                "ip link add wan0 type veth peer name wan0p; ip link set wan0 up; ip link set wan0p up",
            );
        }
        for n in ["a", "b", "w"] {
            site.start_nats(n);
        }
        site.start_knot();
        site
    }

    pub fn ns(&self, node: &str) -> String {
        ns(&self.tag, node)
    }

    fn ip_of(node: &str) -> &'static str {
        match node {
            "a" => A_IP,
            "b" => B_IP,
            _ => W_IP,
        }
    }

    fn spawn(&mut self, name: &str, node: &str, args: &[&str], log: Option<PathBuf>) {
        let stderr = match &log {
            Some(p) => Stdio::from(std::fs::File::create(p).expect("log file")),
            None => Stdio::null(),
        };
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(node)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn in netns");
        self.servers.push((name.to_owned(), child));
    }

    /// One of the three JetStream servers: clients on :4222, routes on :6222.
    pub fn start_nats(&mut self, node: &str) {
        let ip = Self::ip_of(node);
        let store = self.dir.path().join(format!("js-{node}"));
        let routes: Vec<String> = ["a", "b", "w"]
            .iter()
            .map(|n| format!("nats-route://{}:6222", Self::ip_of(n)))
            .collect();
        let conf = self.dir.write(
            &format!("nats-{node}.conf"),
            &format!(
                "server_name: {node}\nlisten: {ip}:4222\nhttp: 127.0.0.1:8222\njetstream {{ store_dir: \"{}\" }}\ncluster {{\n  name: {SITE}\n  listen: {ip}:6222\n  routes: [{}]\n}}\n",
                store.display(),
                routes.join(", ")
            ),
        );
        let log = self.dir.path().join(format!("nats-{node}.log"));
        self.spawn(
            &format!("nats-{node}"),
            node,
            &["nats-server", "-c", conf.to_str().expect("path")],
            Some(log),
        );
    }

    /// Ends one server by its PID (SIGKILL), as a crash would.
    pub fn kill_server(&mut self, name: &str) {
        if let Some(i) = self.servers.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.servers.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn start_knot(&mut self) {
        let d = self.dir.path().join("knot");
        std::fs::create_dir_all(d.join("db")).expect("knot dir");
        let mut conf = format!(
            "server:\n    listen: {W_IP}@53\n    rundir: {d}\ndatabase:\n    storage: {d}/db\nlog:\n  - target: stderr\n    any: warning\nzone:\n",
            d = d.display()
        );
        for (origin, text) in ZONES {
            let path = d.join(format!("{origin}.zone"));
            std::fs::write(&path, text).expect("zone");
            conf.push_str(&format!(
                "  - domain: {origin}\n    file: {}\n",
                path.display()
            ));
        }
        let conf_path = d.join("knot.conf");
        std::fs::write(&conf_path, conf).expect("knot.conf");
        self.spawn(
            "knotd",
            "w",
            &["knotd", "-c", conf_path.to_str().expect("path")],
            None,
        );
        let w = self.ns("w");
        wait("knotd to answer", Duration::from_secs(10), || {
            sh(
                &w,
                &format!("dig +short +time=1 +tries=1 @{W_IP} collector.shadow.test A || true"),
            )
            .trim()
                == "203.0.113.100"
        });
    }

    /// The config of gateway `node` ("a" or "b"): the same policy on both, its own name
    /// (tests/fixtures/cluster/gateway.toml, which benches/cluster.sh uses too).
    pub fn config(&self, node: &str) -> String {
        let template = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/cluster/gateway.toml"),
        )
        .expect("tests/fixtures/cluster/gateway.toml");
        let other = if node == "a" { "b" } else { "a" };
        template
            .replace("@OWN@", Self::ip_of(node))
            .replace("@OTHER@", Self::ip_of(other))
            .replace("@NODE@", node)
            .replace("@DIR@", &self.dir.path().display().to_string())
    }

    /// Starts telesink on gateway `node` in its namespace, its folder `gw-<node>`; it is
    /// ready (and has read the shared state) when this returns.
    pub fn start_gateway(&mut self, node: &str) {
        self.dir.write(
            "tele.list",
            "nexus.tele.test\nother.tele.test\ncollector.shadow.test\n*.suffix.shadow.test\n",
        );
        self.dir.write("ads.list", "banner.ads.test\n");
        self.dir.write("ads.cidrs", "203.0.113.200/32\n");
        let dir = TempDir::new(&format!("gw-{node}"));
        let cfg = dir.write("telesink.toml", &self.config(node));
        let prefix = ["ip", "netns", "exec", &self.ns(node)];
        let ts = Telesink::start_under(&prefix, dir, &cfg, &[], &[]);
        match node {
            "a" => self.a = Some(ts),
            _ => self.b = Some(ts),
        }
    }

    pub fn gw(&self, node: &str) -> &Telesink {
        match node {
            "a" => self.a.as_ref(),
            _ => self.b.as_ref(),
        }
        .expect("gateway started")
    }

    /// The rcode (and address, if any) a client gets from `server` for `name`.
    pub fn ask(&self, server: &str, name: &str) -> String {
        let out = sh(
            &self.ns("c"),
            &format!(
                "dig +time=1 +tries=1 @{server} {name} A | grep -Eo 'status: [A-Z]+' || echo 'status: TIMEOUT'"
            ),
        );
        out.trim().trim_start_matches("status: ").to_owned()
    }

    /// The first address a client gets from `server` for `name`.
    pub fn address(&self, server: &str, name: &str) -> String {
        sh(
            &self.ns("c"),
            &format!("dig +short +time=1 +tries=1 @{server} {name} A || true"),
        )
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
    }

    /// A gateway's metrics, read in its namespace.
    pub fn metrics(&self, node: &str) -> String {
        gateway_metrics(&self.ns(node))
    }

    /// A gateway's whole nftables table.
    pub fn table(&self, node: &str) -> String {
        telesink_table(&self.ns(node))
    }

    /// The elements of a gateway's learned set for `tele`, IPv4.
    pub fn learned(&self, node: &str) -> String {
        sh(
            &self.ns(node),
            "nft list set inet telesink learned_tele_4 2>/dev/null || true",
        )
    }

    /// Cuts gateway `node` off from the store: its NATS client and route traffic to the
    /// other servers is dropped (its own server is then a minority of one), while DNS
    /// and the LAN stay up. In a table of the test's own, in that namespace only.
    pub fn partition(&self, node: &str, cut: bool) {
        let script = match cut {
            true => {
                "nft add table inet partition; nft add chain inet partition out '{ type filter hook output priority 0; }'; nft add chain inet partition in '{ type filter hook input priority 0; }'; nft add rule inet partition out oifname lan0 tcp dport '{ 4222, 6222 }' drop; nft add rule inet partition out oifname lan0 tcp sport '{ 4222, 6222 }' drop; nft add rule inet partition in iifname lan0 tcp dport '{ 4222, 6222 }' drop; nft add rule inet partition in iifname lan0 tcp sport '{ 4222, 6222 }' drop"
            }
            false => "nft delete table inet partition",
        };
        sh(&self.ns(node), script);
    }

    /// Starts keepalived on both gateways: VRRPv3 on lan0, unicast between them, the
    /// VIP 192.0.2.1, A preferred; each tracks telesink's /health.
    pub fn start_keepalived(&mut self) {
        for (node, ip, peer, priority) in [("a", A_IP, B_IP, 150), ("b", B_IP, A_IP, 100)] {
            let conf = self.dir.write(
                &format!("keepalived-{node}.conf"),
                &keepalived_conf(node, ip, peer, priority),
            );
            let p = self.dir.path().display().to_string();
            let log = self.dir.path().join(format!("keepalived-{node}.log"));
            self.spawn(
                &format!("keepalived-{node}"),
                node,
                &[
                    "keepalived",
                    "--dont-fork",
                    "--log-console",
                    "--vrrp",
                    "-f",
                    conf.to_str().expect("path"),
                    "-p",
                    &format!("{p}/ka-{node}.pid"),
                    "-r",
                    &format!("{p}/ka-vrrp-{node}.pid"),
                    "-c",
                    &format!("{p}/ka-chk-{node}.pid"),
                ],
                Some(log),
            );
        }
    }

    /// Which gateway holds the VIP now ("a", "b", or "" for none).
    pub fn vip_holder(&self) -> String {
        for n in ["a", "b"] {
            if sh(&self.ns(n), "ip -4 addr show dev lan0 2>/dev/null || true")
                .contains(&format!("{VIP}/"))
            {
                return n.to_owned();
            }
        }
        String::new()
    }

    pub fn log(&self, what: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{what}.log"))).unwrap_or_default()
    }

    /// Everything the site ran, for a failing test's output.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for (name, ts) in [("a", &self.a), ("b", &self.b)] {
            if let Some(ts) = ts {
                out += &format!("---- telesink {name} ----\n{}\n", ts.log_text());
            }
        }
        for l in ["keepalived-a", "keepalived-b", "nats-a", "nats-b", "nats-w"] {
            let text = self.log(l);
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out += &format!("---- {l} (last lines) ----\n");
            for line in tail.into_iter().rev() {
                out += line;
                out += "\n";
            }
        }
        out
    }
}

/// keepalived for gateway `node`: the shipped contrib/keepalived/keepalived.conf with
/// this site's addresses, and VRRP adverts every 200 ms instead of every second (so a
/// link-down failover takes well under a second here).
pub fn keepalived_conf(node: &str, ip: &str, peer: &str, priority: u8) -> String {
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/keepalived/keepalived.conf"),
    )
    .expect("contrib/keepalived/keepalived.conf");
    let out = shipped
        .replace("router_id gw1", &format!("router_id gw{node}"))
        .replace("priority 150", &format!("priority {priority}"))
        .replace("advert_int 1\n", "advert_int 0.2\n")
        .replace("unicast_src_ip 10.0.0.2", &format!("unicast_src_ip {ip}"))
        .replace("    10.0.0.3\n", &format!("    {peer}\n"))
        .replace("10.0.0.1/24 dev lan0", &format!("{VIP}/24 dev lan0"));
    assert!(
        out.contains(&format!("unicast_src_ip {ip}")) && out.contains("advert_int 0.2"),
        "the shipped keepalived.conf changed shape:\n{out}"
    );
    out
}

/// Polls `ok` every 20 ms until it holds; panics naming `what` after `limit`.
pub fn wait(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: not within {limit:?}");
}

impl Drop for Site {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.dump());
        }
        // telesink first (it removes its table), then keepalived (SIGTERM: its VRRP child
        // ends with it), then the servers.
        drop(self.a.take());
        drop(self.b.take());
        while let Some((name, mut child)) = self.servers.pop() {
            if name.starts_with("keepalived") {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if child.try_wait().ok().flatten().is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for n in ["s", "a", "b", "w", "c"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .status();
        }
    }
}
