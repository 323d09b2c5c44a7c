//! "Never clear text unasked", counted by the kernel: telesink, unbound (DoT and DoH)
//! and knotd run in a network namespace of their own whose nftables output chain counts
//! every packet to port 53. Under `strict` the counter stays at zero whether the
//! encrypted server answers, shows a certificate for another name, or is gone; under
//! `opportunistic` a certificate is still never retried in clear text, and a server that
//! is gone is (the counter moves: the check can see clear text when there is some).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{require_root, sh};
use common::tls::{Pki, SERVER_NAME, unbound_conf};
use common::*;

const KNOT_PORT: u16 = 5302;
const TLS_PORT: u16 = 8853;
const HTTPS_PORT: u16 = 8443;

struct Namespace {
    name: String,
    children: Vec<Child>,
}

impl Namespace {
    fn new() -> Namespace {
        let name = format!("tsenc{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        sh(&name, "ip link set lo up");
        sh(
            &name,
            "nft add table inet cleartext && nft add chain inet cleartext out '{ type filter hook output priority 0; }' && nft add rule inet cleartext out meta l4proto '{ tcp, udp }' th dport 53 counter",
        );
        Namespace {
            name,
            children: Vec::new(),
        }
    }

    fn spawn(&mut self, args: &[&str]) -> usize {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn in the namespace");
        self.children.push(child);
        self.children.len() - 1
    }

    fn kill(&mut self, i: usize) {
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
    }

    /// Packets to port 53 that left any socket in the namespace.
    fn cleartext_packets(&self) -> u64 {
        let out = sh(&self.name, "nft list chain inet cleartext out");
        out.split("counter packets ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("the counter")
    }

    /// kdig inside the namespace: the answer's status and addresses.
    fn ask(&self, port: u16, name: &str) -> String {
        sh(
            &self.name,
            &format!(
                "kdig @127.0.0.1 -p {port} +retry=0 +timeout=4 {name} A | grep -E 'status:|^{name}' || true"
            ),
        )
    }

    fn wait_for(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sh(&self.name, &format!("{script} && echo up || true")).contains("up") {
            assert!(Instant::now() < deadline, "{what} did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn strict_never_sends_a_query_in_clear_text_and_opportunistic_only_when_asked() {
    if !require_root() || !require("knotd") || !require("unbound") || !require("kdig") {
        return;
    }
    let mut ns = Namespace::new();
    let dir = TempDir::new("enc-ns");
    let zone = dir.write("test.zone", ZONE);
    let knot_conf = dir.write(
        "knot.conf",
        &format!(
            "server:\n    listen: 127.0.0.1@{KNOT_PORT}\n    rundir: {d}\ndatabase:\n    storage: {d}\nzone:\n  - domain: test\n    file: {z}\n",
            d = dir.path().display(),
            z = zone.display()
        ),
    );
    ns.spawn(&["knotd", "-c", &knot_conf.to_string_lossy()]);
    ns.wait_for(
        "knotd",
        &format!(
            "kdig @127.0.0.1 -p {KNOT_PORT} +retry=0 +timeout=1 ns.test SOA | grep -q NOERROR"
        ),
    );
    let pki = Pki::new();
    let good = pki.issue("good", SERVER_NAME, false);
    let conf = dir.write(
        "unbound.conf",
        &unbound_conf(
            &good,
            dir.path(),
            TLS_PORT,
            HTTPS_PORT,
            format!("127.0.0.1:{KNOT_PORT}").parse().unwrap(),
        ),
    );
    let unbound = ns.spawn(&["unbound", "-d", "-c", &conf.to_string_lossy()]);
    ns.wait_for(
        "unbound",
        &format!(
            "kdig @127.0.0.1 -p {TLS_PORT} +tls +retry=0 +timeout=1 www.test A | grep -q NOERROR"
        ),
    );
    // knotd and unbound talk on other ports: nothing so far.
    assert_eq!(ns.cleartext_packets(), 0);

    let ns_name = ns.name.clone();
    let telesink = |servers: &str, extra: &str| {
        let cfg_dir = TempDir::new("enc-ns-ts");
        let cfg = cfg_dir.write(
            "telesink.toml",
            &format!(
                "[server]\nlisten = [\"127.0.0.1:5300\"]\n[upstream]\nservers = [{servers}]\nca_file = \"{}\"\ntimeout_ms = 800\n{extra}\n[cache]\nsize = 0\n",
                pki.ca_file.display()
            ),
        );
        Telesink::start_under(&["ip", "netns", "exec", &ns_name], cfg_dir, &cfg, &[], &[])
    };
    let dot = format!("\"tls://127.0.0.1:{TLS_PORT}#{SERVER_NAME}\"");
    let doh = format!("\"https://127.0.0.1:{HTTPS_PORT}/dns-query#{SERVER_NAME}\"");
    let wrong = format!("\"tls://127.0.0.1:{TLS_PORT}#wrong.test\"");

    // Strict (the default with encrypted servers): answers, then refusals, no port 53.
    for servers in [&dot, &doh] {
        let ts = telesink(servers, "");
        let got = ns.ask(5300, "www.test");
        assert!(
            got.contains("NOERROR") && got.contains("192.0.2.10"),
            "{servers}: {got}"
        );
        drop(ts);
    }
    let ts = telesink(&wrong, "");
    assert!(ns.ask(5300, "www.test").contains("SERVFAIL"));
    drop(ts);
    let ts = telesink(&wrong, "encryption = \"opportunistic\"");
    assert!(ns.ask(5300, "www.test").contains("SERVFAIL"));
    drop(ts);
    assert_eq!(ns.cleartext_packets(), 0, "a query went out in clear text");

    // The server goes away: strict still sends nothing in clear text.
    ns.kill(unbound);
    for servers in [&dot, &doh] {
        let ts = telesink(servers, "");
        assert!(ns.ask(5300, "www.test").contains("SERVFAIL"));
        drop(ts);
    }
    assert_eq!(ns.cleartext_packets(), 0, "a query went out in clear text");

    // Opportunistic, asked for by the admin: now the query goes to port 53 (and the
    // counter shows it, so the zeros above are real).
    let ts = telesink(&dot, "encryption = \"opportunistic\"");
    let _ = ns.ask(5300, "www.test");
    drop(ts);
    assert!(ns.cleartext_packets() > 0, "the fallback was not seen");
}
