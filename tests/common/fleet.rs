//! A fleet in throwaway namespaces (issue 26): a hub H (one nats-server with JetStream,
//! domain `hub`, and knotd, the sites' upstream) and two sites A and B on a WAN bridge
//! (198.51.100.0/24); each site runs its own nats-server (domain `a` / `b`) as a leaf
//! node of the hub and one telesink with `[cluster] hub = "hub"`. A site's devices are
//! addresses of 192.0.2.0/24 on its namespace's loopback, asking telesink at 192.0.2.1:
//! both sites use the same addresses, as real sites do. Every process is ended by PID.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::netns::{attach_to_bridge, gateway_metrics, run, sh, telesink_table};
use super::site::wait;
use super::{Telesink, TempDir, bin};

pub const HUB_IP: &str = "198.51.100.1";

pub struct Fleet {
    pub tag: String,
    pub dir: TempDir,
    servers: Vec<(String, Child)>,
    pub gateways: Vec<(String, Telesink)>,
}

fn wan_ip(node: &str) -> &'static str {
    match node {
        "h" => HUB_IP,
        "a" => "198.51.100.11",
        _ => "198.51.100.12",
    }
}

impl Fleet {
    pub fn new() -> Fleet {
        static N: AtomicUsize = AtomicUsize::new(0);
        let tag = format!(
            "tf{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut f = Fleet {
            dir: TempDir::new("fleet"),
            tag,
            servers: Vec::new(),
            gateways: Vec::new(),
        };
        let sw = f.ns("s");
        for n in ["s", "h", "a", "b"] {
            run(&["ip", "netns", "add", &f.ns(n)]);
            sh(&f.ns(n), "ip link set lo up");
        }
        sh(&sw, "ip link add br0 type bridge; ip link set br0 up");
        for n in ["h", "a", "b"] {
            let cidr = format!("{}/24", wan_ip(n));
            attach_to_bridge(&sw, &format!("p{n}"), &f.ns(n), "wan0", &cidr);
        }
        // Each site's LAN: the gateway's address on lan0, its devices on loopback.
        for n in ["a", "b"] {
            sh(
                &f.ns(n),
                "ip link add lan0 type veth peer name lan0p; ip addr add 192.0.2.1/24 dev lan0; ip link set lan0 up; ip link set lan0p up",
            );
            for d in 50..53 {
                sh(&f.ns(n), &format!("ip addr add 192.0.2.{d}/32 dev lo"));
            }
        }
        f.start_hub();
        f.start_site_server("a");
        f.start_site_server("b");
        f
    }

    pub fn ns(&self, node: &str) -> String {
        format!("{}{node}", self.tag)
    }

    fn spawn(&mut self, name: &str, node: &str, args: &[&str]) {
        let log = self.dir.path().join(format!("{name}.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(node)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log")))
            .spawn()
            .expect("spawn in netns");
        self.servers.push((name.to_owned(), child));
    }

    fn start_hub(&mut self) {
        // The shipped hub config, with this test's folder and a second site's user.
        let shipped = contrib("contrib/nats/hub.conf");
        let start = shipped
            .find("    {\n      user: a")
            .expect("site a's entry");
        let end = shipped[start..].find("\n    }\n").expect("its end") + start + 7;
        let entry_a = &shipped[start..end];
        let entry_b = entry_a
            .replace("user: a", "user: b")
            .replace("site-a", "site-b")
            .replace("$JS.a.API", "$JS.b.API");
        let hub = shipped
            .replace(
                "/var/lib/nats/hub",
                &self.dir.path().join("js-hub").display().to_string(),
            )
            .replace(entry_a, &format!("{entry_a}{entry_b}"));
        assert!(
            hub.contains("user: b") && hub.contains("$JS.b.API"),
            "{hub}"
        );
        let conf = self.dir.write("nats-hub.conf", &hub);
        self.spawn(
            "nats-hub",
            "h",
            &["nats-server", "-c", conf.to_str().expect("path")],
        );
        // knotd: the sites' upstream.
        let d = self.dir.path().join("knot");
        std::fs::create_dir_all(d.join("db")).expect("knot dir");
        let mut kc = format!(
            "server:\n    listen: {HUB_IP}@53\n    rundir: {d}\ndatabase:\n    storage: {d}/db\nlog:\n  - target: stderr\n    any: warning\nzone:\n",
            d = d.display()
        );
        for origin in ["tele.test", "ads.test", "ok.test"] {
            let path = d.join(format!("{origin}.zone"));
            std::fs::write(
                &path,
                format!("$ORIGIN {origin}.\n$TTL 60\n@ SOA ns hostmaster 1 3600 600 86400 60\n@ NS ns\nns A {HUB_IP}\n* A 203.0.113.5\n"),
            )
            .expect("zone");
            kc.push_str(&format!(
                "  - domain: {origin}\n    file: {}\n",
                path.display()
            ));
        }
        let kpath = d.join("knot.conf");
        std::fs::write(&kpath, kc).expect("knot.conf");
        self.spawn(
            "knotd",
            "h",
            &["knotd", "-c", kpath.to_str().expect("path")],
        );
        let h = self.ns("h");
        wait("the hub's nats-server", Duration::from_secs(10), || {
            sh(
                &h,
                &format!(
                    "timeout 1 bash -c '</dev/tcp/{HUB_IP}/4222' 2>/dev/null && echo up || true"
                ),
            )
            .contains("up")
        });
    }

    fn start_site_server(&mut self, site: &str) {
        let conf = self.dir.write(
            &format!("nats-{site}.conf"),
            &contrib("contrib/nats/site.conf")
                .replace(
                    "/var/lib/nats/site",
                    &self
                        .dir
                        .path()
                        .join(format!("js-{site}"))
                        .display()
                        .to_string(),
                )
                .replace("site-a", &format!("site-{site}"))
                .replace("domain: a", &format!("domain: {site}"))
                .replace("nats-leaf://a:", &format!("nats-leaf://{site}:")),
        );
        self.spawn(
            &format!("nats-{site}"),
            site,
            &["nats-server", "-c", conf.to_str().expect("path")],
        );
        let ns = self.ns(site);
        wait("a site's nats-server", Duration::from_secs(10), || {
            sh(
                &ns,
                "timeout 1 bash -c '</dev/tcp/127.0.0.1/4222' 2>/dev/null && echo up || true",
            )
            .contains("up")
        });
    }

    /// `telesink fleet ...` run at the centre (in the hub's namespace).
    pub fn fleet(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns("h"), bin(), "fleet", "--hub"])
            .arg(format!("nats://{HUB_IP}:4222"))
            .args(["--user", "admin", "--password", "CHANGE-admin-password"])
            .args(args)
            .output()
            .expect("telesink fleet");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The fleet's config (the same file every gateway has), for central edits.
    pub fn fleet_config(&self) -> PathBuf {
        self.write_lists();
        self.dir.write("fleet.toml", &self.config("a", "address"))
    }

    fn write_lists(&self) {
        self.dir
            .write("tele.list", "nexus.tele.test\nsettings.tele.test\n");
        self.dir.write("ads.list", "banner.ads.test\n");
        self.dir.write("ads.cidrs", "203.0.113.200/32\n");
    }

    pub fn config(&self, site: &str, labels: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/fleet/gateway.toml"),
        )
        .expect("tests/fixtures/fleet/gateway.toml")
        .replace("@SITE@", site)
        .replace("@LABELS@", labels)
        .replace("@DIR@", &self.dir.path().display().to_string())
    }

    /// The file a site's gateway reads its test clock from (seconds to add).
    pub fn clock(&self, site: &str) -> PathBuf {
        self.dir.path().join(format!("clock-{site}"))
    }

    pub fn set_clock(&self, site: &str, offset: u64) {
        std::fs::write(self.clock(site), offset.to_string()).expect("clock");
    }

    /// Starts a site's telesink (its folder kept across restarts: `gw-<site>`).
    pub fn start_gateway(&mut self, site: &str, labels: &str, dir: Option<TempDir>) {
        self.write_lists();
        let dir = dir.unwrap_or_else(|| TempDir::new(&format!("gw-{site}")));
        let cfg = dir.write("telesink.toml", &self.config(site, labels));
        if !self.clock(site).exists() {
            self.set_clock(site, 0);
        }
        let clock = self.clock(site).display().to_string();
        let prefix = ["ip", "netns", "exec", &self.ns(site)];
        let ts = Telesink::start_under(&prefix, dir, &cfg, &[], &[("TELESINK_TEST_CLOCK", &clock)]);
        self.gateways.push((site.to_owned(), ts));
    }

    pub fn stop_gateway(&mut self, site: &str) -> TempDir {
        let i = self
            .gateways
            .iter()
            .position(|(s, _)| s == site)
            .expect("gateway");
        let (_, ts) = self.gateways.remove(i);
        ts.stop()
    }

    pub fn gw(&self, site: &str) -> &Telesink {
        &self
            .gateways
            .iter()
            .find(|(s, _)| s == site)
            .expect("gateway")
            .1
    }

    /// Asks the site's gateway for `name` from device 192.0.2.`device`: the rcode.
    pub fn ask(&self, site: &str, device: u8, name: &str) -> String {
        sh(
            &self.ns(site),
            &format!(
                "dig +time=1 +tries=1 -b 192.0.2.{device} @192.0.2.1 {name} A | grep -Eo 'status: [A-Z]+' || echo 'status: TIMEOUT'"
            ),
        )
        .trim()
        .trim_start_matches("status: ")
        .to_owned()
    }

    pub fn table(&self, site: &str) -> String {
        telesink_table(&self.ns(site))
    }

    pub fn metrics(&self, site: &str) -> String {
        gateway_metrics(&self.ns(site))
    }

    /// Cuts a site from the hub (its leaf connection, port 7422) or heals it; DNS to the
    /// upstream stays. In a table of the test's own, in that namespace only.
    pub fn cut(&self, site: &str, cut: bool) {
        let script = match cut {
            true => {
                "nft add table inet cut; nft add chain inet cut out '{ type filter hook output priority 0; }'; nft add chain inet cut in '{ type filter hook input priority 0; }'; nft add rule inet cut out tcp dport 7422 drop; nft add rule inet cut in tcp sport 7422 drop"
            }
            false => "nft delete table inet cut",
        };
        sh(&self.ns(site), script);
    }

    /// Publishes raw bytes on a subject at a site's server (plain NATS protocol, no
    /// client library: a hostile or broken publisher), and waits for the server's PONG.
    pub fn publish_raw(&self, site: &str, subject: &str, payload: &[u8]) -> String {
        let file = self.dir.write("raw.bin", "");
        std::fs::write(&file, payload).expect("payload");
        let script = format!(
            "python3 - <<'PY'\nimport socket\ns=socket.create_connection(('127.0.0.1',4222),timeout=3)\ns.recv(4096)\nbody=open('{}','rb').read()\ns.sendall(b'CONNECT {{\"verbose\":false,\"pedantic\":false}}\\r\\nPUB {subject} '+str(len(body)).encode()+b'\\r\\n'+body+b'\\r\\nPING\\r\\n')\nout=b''\nwhile b'PONG' not in out and b'-ERR' not in out:\n    d=s.recv(4096)\n    if not d: break\n    out+=d\nprint(out.decode(errors='replace'))\nPY",
            file.display()
        );
        sh(&self.ns(site), &script)
    }

    /// A request from a client of a site's server (plain NATS protocol): the reply's
    /// payload, or "" when none came within two seconds (a subject the site's leaf user
    /// may not use gets none: the hub drops it).
    pub fn request_raw(&self, site: &str, subject: &str, payload: &str) -> String {
        let script = format!(
            "python3 - <<'PY'\nimport socket,time\ns=socket.create_connection(('127.0.0.1',4222),timeout=3)\ns.recv(4096)\nbody=b'{payload}'\ns.sendall(b'CONNECT {{\"verbose\":false}}\\r\\nSUB _INBOX.raw 1\\r\\nPUB {subject} _INBOX.raw '+str(len(body)).encode()+b'\\r\\n'+body+b'\\r\\n')\ns.settimeout(0.2)\nout=b''\nend=time.time()+2\nwhile time.time()<end and b'MSG _INBOX.raw' not in out:\n    try:\n        d=s.recv(65536)\n    except socket.timeout:\n        continue\n    if not d: break\n    out+=d\ni=out.find(b'MSG _INBOX.raw')\nprint(out[i:].decode(errors='replace') if i>=0 else '')\nPY"
        );
        sh(&self.ns(site), &script).trim().to_owned()
    }

    pub fn log(&self, what: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{what}.log"))).unwrap_or_default()
    }
}

/// A shipped file of the repository.
pub fn contrib(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (site, ts) in &self.gateways {
                eprintln!("---- telesink {site} ----\n{}", ts.log_text());
            }
            for l in ["nats-hub", "nats-a", "nats-b"] {
                let text = self.log(l);
                let tail: Vec<&str> = text.lines().rev().take(25).collect();
                eprintln!("---- {l} ----");
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        self.gateways.clear();
        while let Some((_, mut child)) = self.servers.pop() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for n in ["s", "h", "a", "b"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .status();
        }
    }
}
