//! The nftables firewall with real traffic, in throwaway network namespaces only.
//! Root is required (CI runs as root); elsewhere these tests skip loudly.

mod common;

use std::process::Command;
use std::time::Duration;

use common::netns::*;
use common::*;

const BLOCK: &str = "203.0.113.0/28\n203.0.113.7\n2001:db8:f::/124 # v6 range\n";
const ALLOW: &str = "203.0.113.7/32\n";

fn config(extra_firewall: &str, extra: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
[upstream]
servers = ["127.0.0.1:9"]
[policy]
lists_dir = "."
[firewall]
enabled = true
lan = ["lan0"]
wan = ["wan0"]
allow_cidrs = ["allow.cidrs"]
{extra_firewall}
[profiles.legacy-ip-telemetry]
enabled = true
cidrs = ["block.cidrs"]
{extra}"#
    )
}

fn write(dir: &TempDir, config: &str) -> std::path::PathBuf {
    dir.write("block.cidrs", BLOCK);
    dir.write("allow.cidrs", ALLOW);
    dir.write("telesink.toml", config)
}

/// Runs `telesink firewall ...` inside the gateway namespace.
fn fw(t: &Topology, args: &str, cfg: &std::path::Path) -> String {
    t.sh(
        &t.gateway,
        &format!("{} firewall {args} --config {}", bin(), cfg.display()),
    )
}

#[test]
fn blocked_ranges_are_rejected_allowed_pass_and_allow_wins() {
    if !require_root() {
        return;
    }
    let mut t = Topology::new();
    t.wan_listener();
    let dir = TempDir::new("fw");
    let cfg = write(&dir, &config("", ""));
    // Before the table: everything passes.
    assert_eq!(t.connect(&t.client, None, "203.0.113.5", 8080), "ok");
    fw(&t, "apply", &cfg);
    // From a LAN client through the gateway: reset at once, not a timeout.
    assert_eq!(t.connect(&t.client, None, "203.0.113.5", 8080), "refused");
    assert_eq!(t.connect(&t.client, None, "2001:db8:f::1", 8080), "refused");
    // From the gateway itself (output hook).
    assert_eq!(t.connect(&t.gateway, None, "203.0.113.5", 8080), "refused");
    // Outside the block ranges: passes.
    assert_eq!(t.connect(&t.client, None, "203.0.113.50", 8080), "ok");
    assert_eq!(t.connect(&t.client, None, "2001:db8:f::7", 8080), "refused");
    // In both the allow set and a block set: the allow set wins.
    assert_eq!(t.connect(&t.client, None, "203.0.113.7", 8080), "ok");
    assert_eq!(t.connect(&t.gateway, None, "203.0.113.7", 8080), "ok");
    // UDP and ICMP get icmpx admin-prohibited: ping fails fast.
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.client,
            "ping",
            "-c1",
            "-W1",
            "203.0.113.5",
        ])
        .output()
        .unwrap();
    assert!(!ping.status.success());
    // The ruleset reads as the plan says, with the profile named in comments.
    let listing = t.sh(&t.gateway, "nft list table inet telesink");
    assert!(
        listing.contains("comment \"profile legacy-ip-telemetry\""),
        "{listing}"
    );
    assert!(listing.contains("reject with tcp reset"), "{listing}");
    // Removing the table restores traffic.
    t.sh(&t.gateway, &format!("{} firewall remove", bin()));
    assert_eq!(t.connect(&t.client, None, "203.0.113.5", 8080), "ok");
}

#[test]
fn drop_verdict_times_out_instead_of_resetting() {
    if !require_root() {
        return;
    }
    let mut t = Topology::new();
    t.wan_listener();
    let dir = TempDir::new("fw");
    let cfg = write(&dir, &config("verdict = \"drop\"", ""));
    fw(&t, "apply", &cfg);
    assert_eq!(t.connect(&t.client, None, "203.0.113.5", 8080), "timeout");
}

#[test]
fn per_client_counters_match_the_attempts_and_a_full_set_still_blocks() {
    if !require_root() {
        return;
    }
    let mut t = Topology::new();
    t.wan_listener();
    let dir = TempDir::new("fw");
    // Room for one client only: the second must still be blocked, just not counted.
    let cfg = write(&dir, &config("accounting_clients = 1", ""));
    fw(&t, "apply", &cfg);
    for _ in 0..5 {
        assert_eq!(
            t.connect(&t.client, Some(CLIENT_IP), "203.0.113.5", 8080),
            "refused"
        );
    }
    for _ in 0..3 {
        assert_eq!(
            t.connect(&t.client, Some(CLIENT_IP2), "203.0.113.9", 8080),
            "refused"
        );
    }
    let counters = fw(&t, "counters", &cfg);
    let lines: Vec<&str> = counters
        .lines()
        .filter(|l| l.contains("acct_legacy_ip_telemetry_4"))
        .collect();
    assert_eq!(lines.len(), 1, "one client fits the set: {counters}");
    assert!(
        lines[0].contains(&format!("client={CLIENT_IP} packets=5 ")),
        "{counters}"
    );
}

#[test]
fn counters_for_many_clients_and_group_scoping() {
    if !require_root() {
        return;
    }
    let mut t = Topology::new();
    t.wan_listener();
    let dir = TempDir::new("fw");
    dir.write("lab.cidrs", "203.0.113.40/30\n");
    // "lab-only" applies to the lab group (192.0.2.3) alone.
    let extra = "[profiles.lab-only]\ncidrs = [\"lab.cidrs\"]\n[[groups]]\nname = \"lab\"\nclients = [\"192.0.2.3/32\"]\nenable = [\"lab-only\"]\n";
    let cfg = write(&dir, &config("", extra));
    fw(&t, "apply", &cfg);
    assert_eq!(
        t.connect(&t.client, Some(CLIENT_IP), "203.0.113.41", 8080),
        "ok"
    );
    assert_eq!(
        t.connect(&t.client, Some(CLIENT_IP2), "203.0.113.41", 8080),
        "refused"
    );
    // Both groups have the legacy profile.
    assert_eq!(
        t.connect(&t.client, Some(CLIENT_IP), "203.0.113.1", 8080),
        "refused"
    );
    assert_eq!(
        t.connect(&t.client, Some(CLIENT_IP2), "203.0.113.1", 8080),
        "refused"
    );
    let counters = fw(&t, "counters", &cfg);
    assert!(
        counters.contains(&format!(
            "set=acct_lab_only_4 client={CLIENT_IP2} packets=1 "
        )),
        "{counters}"
    );
    assert!(
        !counters.contains(&format!("set=acct_lab_only_4 client={CLIENT_IP} ")),
        "{counters}"
    );
    assert!(
        counters.contains(&format!(
            "set=acct_legacy_ip_telemetry_4 client={CLIENT_IP} packets=1 "
        )),
        "{counters}"
    );
}

#[test]
fn a_second_apply_replaces_the_table_and_replaces_under_traffic_leak_nothing() {
    if !require_root() {
        return;
    }
    let mut t = Topology::new();
    t.wan_listener();
    let dir = TempDir::new("fw");
    let cfg = write(&dir, &config("", ""));
    fw(&t, "apply", &cfg);
    let before = t.sh(&t.gateway, "nft list table inet telesink");
    let handles = "nft -a list table inet telesink | grep -E '^\\s*(table|set|chain) '";
    let handles_before = t.sh(&t.gateway, handles);
    fw(&t, "apply", &cfg);
    let after = t.sh(&t.gateway, "nft list table inet telesink");
    assert_eq!(before, after, "a second apply must replace, not duplicate");
    // Replaced in place: the same table, sets and chains (same handles), refilled. A
    // delete and re-add would give new handles, and on kernel 6.18 it leaks packets
    // while the new sets' lookup arrays are built (docs/ARCHITECTURE.md).
    assert_eq!(handles_before, t.sh(&t.gateway, handles));
    assert!(handles_before.contains("set "), "{handles_before}");
    // In place, a chain the plan drops goes and comes back with it; the rest stays put.
    let no_output = dir.write("no-output.toml", &config("output = false", ""));
    fw(&t, "apply", &no_output);
    let chains = "nft list table inet telesink";
    assert!(!t.sh(&t.gateway, chains).contains("hook output"));
    assert!(t.sh(&t.gateway, chains).contains("hook forward"));
    fw(&t, "apply", &cfg);
    assert_eq!(before, t.sh(&t.gateway, "nft list table inet telesink"));
    let table_handle = |listing: &str| listing.lines().next().map(str::to_owned);
    assert_eq!(
        table_handle(&handles_before),
        table_handle(&t.sh(&t.gateway, handles))
    );
    assert_eq!(
        t.sh(&t.gateway, "nft list tables")
            .lines()
            .filter(|l| l.contains("telesink"))
            .count(),
        1
    );

    // A client hammers a blocked address while the gateway replaces the table 100 times.
    let client = t.client.clone();
    let probe = std::thread::spawn(move || {
        let out = Command::new("ip")
            .args(["netns", "exec", &client, "python3", "-c", PROBE])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    });
    std::thread::sleep(Duration::from_millis(300));
    t.sh(
        &t.gateway,
        &format!(
            "for i in $(seq 100); do {} firewall apply --config {} >/dev/null || exit 1; done",
            bin(),
            cfg.display()
        ),
    );
    let result = probe.join().unwrap();
    let mut parts = result.split_whitespace().map(|x| x.parse::<u64>().unwrap());
    let (ok, attempts) = (parts.next().unwrap(), parts.next().unwrap());
    assert!(attempts > 100, "the probe made only {attempts} attempts");
    assert_eq!(
        ok, 0,
        "{ok} of {attempts} connections to a blocked address got through during 100 replaces"
    );
}

/// Connects to a blocked address in a loop for 6 seconds; prints "connected attempts".
const PROBE: &str = "import socket,time
end=time.time()+6
ok=n=0
while time.time()<end:
    s=socket.socket(); s.settimeout(1)
    try:
        s.connect(('203.0.113.5',8080)); ok+=1
    except OSError:
        pass
    s.close(); n+=1
print(ok, n)";

/// The daemon in the gateway namespace, killed on drop if the test fails before it stops it.
struct Daemon {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(t: &Topology, dir: &TempDir, cfg: &std::path::Path) -> Daemon {
        Self::start_env(t, dir, cfg, &[])
    }

    fn start_env(
        t: &Topology,
        dir: &TempDir,
        cfg: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Daemon {
        let log = dir.path().join("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &t.gateway, bin(), "run", "--config"])
            .arg(cfg)
            .env("NO_COLOR", "1")
            .env("RUNTIME_DIRECTORY", dir.path())
            .env("STATE_DIRECTORY", dir.path())
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon { child, log };
        for _ in 0..200 {
            if d.log().lines().any(|l| l.ends_with("ready")) {
                return d;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon not ready:\n{}", d.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) -> (bool, String) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let ok = self.child.wait().unwrap().success();
        (ok, self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn daemon_programs_the_table_before_ready_and_keeps_or_removes_it_on_exit() {
    if !require_root() {
        return;
    }
    let t = Topology::new();
    for (on_exit, expect_table) in [("keep", true), ("remove", false)] {
        let dir = TempDir::new("fwd");
        let cfg = write(&dir, &config(&format!("on_exit = \"{on_exit}\""), ""));
        let daemon = Daemon::start(&t, &dir, &cfg);
        let log = daemon.log();
        let programmed = log
            .find("firewall table inet telesink programmed")
            .unwrap_or_else(|| panic!("{log}"));
        assert!(
            programmed < log.find("ready").unwrap(),
            "the table must be programmed before ready:\n{log}"
        );
        assert!(t.sh(&t.gateway, "nft list tables").contains("telesink"));
        let (ok, log) = daemon.stop();
        assert!(ok, "{log}");
        let has = t.sh(&t.gateway, "nft list tables").contains("telesink");
        assert_eq!(has, expect_table, "on_exit = {on_exit}:\n{log}");
        t.sh(
            &t.gateway,
            "nft delete table inet telesink 2>/dev/null || true",
        );
    }
}

#[test]
fn without_cap_net_admin_the_daemon_says_so_clearly() {
    if !require_root() {
        return;
    }
    let t = Topology::new();
    let dir = TempDir::new("fwcap");
    let cfg = write(&dir, &config("", ""));
    // Drop CAP_NET_ADMIN from the bounding set (capsh), keep root otherwise.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.gateway,
            "timeout",
            "10",
            "capsh",
            "--drop=cap_net_admin",
            "--",
            "-c",
        ])
        .arg(format!("exec {} run --config {}", bin(), cfg.display()))
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("firewall") && err.contains("needs CAP_NET_ADMIN"),
        "{err}"
    );
}

#[test]
fn dns_dot_and_doh_that_bypass_telesink_are_rejected_and_counted_per_client() {
    if !require_root() {
        return;
    }
    let mut t = Topology::new();
    t.wan_listener();
    let dir = TempDir::new("fwb");
    dir.write(
        "doh.cidrs",
        "203.0.113.53\n2001:db8:f::53 # a v6 DoH address\n",
    );
    let cfg = write(
        &dir,
        &config("[firewall.bypass]\ndoh_cidrs = [\"doh.cidrs\"]", ""),
    );
    t.sh(&t.wan, "ip -6 addr add 2001:db8:f::53/64 dev lo nodad");
    // Without the table, all of it works.
    assert_eq!(t.udp(&t.client, None, WAN_IP, 53), "ok");
    assert_eq!(t.connect(&t.client, None, "203.0.113.53", 443), "ok");
    fw(&t, "apply", &cfg);
    assert_eq!(
        t.udp(&t.client, Some(CLIENT_IP), WAN_IP, 53),
        "refused",
        "plain DNS to an outside resolver"
    );
    assert_eq!(
        t.connect(&t.client, Some(CLIENT_IP), WAN_IP, 53),
        "refused",
        "DNS over TCP"
    );
    assert_eq!(
        t.connect(&t.client, Some(CLIENT_IP), WAN_IP, 853),
        "refused",
        "DoT"
    );
    assert_eq!(
        t.connect(&t.client, Some(CLIENT_IP), "203.0.113.53", 443),
        "refused",
        "DoH"
    );
    assert_eq!(
        t.connect(&t.client, None, "2001:db8:f::53", 443),
        "refused",
        "DoH over IPv6"
    );
    // HTTPS to anyone else is untouched.
    assert_eq!(
        t.connect(&t.client, Some(CLIENT_IP), "203.0.113.54", 443),
        "ok"
    );
    // The gateway itself may still ask outside resolvers (bypass rules are forward-only).
    assert_eq!(t.udp(&t.gateway, None, WAN_IP, 53), "ok");
    let counters = fw(&t, "counters", &cfg);
    for (set, n) in [
        ("bypass_dns_4", 2),
        ("bypass_dot_4", 1),
        ("bypass_doh_4", 1),
    ] {
        let want = format!("set={set} client={CLIENT_IP} packets={n} ");
        assert!(counters.contains(&want), "missing {want:?} in:\n{counters}");
    }
    assert!(
        counters.contains("set=bypass_doh_6 client=2001:db8:1::2 packets=1 "),
        "{counters}"
    );
}

#[test]
fn the_shipped_gateway_config_programs_a_working_firewall() {
    if !require_root() {
        return;
    }
    let mut t = Topology::new();
    t.wan_listener();
    let cfg = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.toml");
    fw(&t, "apply", &cfg);
    // The documentation topology uses the same interface names as config/gateway.toml.
    assert_eq!(t.connect(&t.client, None, WAN_IP, 853), "refused", "DoT");
    assert_eq!(
        t.udp(&t.client, None, WAN_IP, 53),
        "refused",
        "DNS around telesink"
    );
    assert_eq!(
        t.connect(&t.client, None, "203.0.113.80", 443),
        "ok",
        "ordinary HTTPS"
    );
    let listing = t.sh(&t.gateway, "nft list table inet telesink");
    assert!(listing.contains("oifname \"wan0\""), "{listing}");
    assert!(listing.contains("set allow_4"), "{listing}");
}

#[test]
fn ready_is_sent_to_systemd_only_once_the_table_exists() {
    if !require_root() {
        return;
    }
    let t = Topology::new();
    let dir = TempDir::new("fwready");
    let cfg = write(&dir, &config("", ""));
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let daemon = Daemon::start_env(
        &t,
        &dir,
        &cfg,
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
    );
    let mut buf = [0u8; 2048];
    // A signal to this test process (another test's child exiting) may interrupt the
    // read: it is tried again, as any careful reader does.
    let recv = |buf: &mut [u8]| loop {
        match sock.recv(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    };
    let n = recv(&mut buf).expect("a notification");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        msg.starts_with("READY=1") && msg.contains("firewall on"),
        "{msg}"
    );
    // The moment READY=1 arrives, the table is in the kernel.
    assert!(
        t.sh(&t.gateway, "nft list tables")
            .contains("table inet telesink")
    );
    // After a reload that turns the firewall off, the status line says so: it describes
    // the snapshot in force, not the start-up config.
    std::fs::write(
        &cfg,
        config("", "").replace("enabled = true\nlan", "enabled = false\nlan"),
    )
    .unwrap();
    Command::new("kill")
        .args(["-HUP", &daemon.child.id().to_string()])
        .status()
        .unwrap();
    let mut after = String::new();
    for _ in 0..3 {
        let n = recv(&mut buf).expect("a notification after the reload");
        after = String::from_utf8_lossy(&buf[..n]).into_owned();
        if after.starts_with("READY=1") {
            break;
        }
    }
    assert!(
        after.starts_with("READY=1") && after.contains("firewall off"),
        "{after}"
    );
    drop(daemon);
    t.sh(
        &t.gateway,
        "nft delete table inet telesink 2>/dev/null || true",
    );
}

const SHADOW_ZONE: &str = "$ORIGIN shadow.test.
$TTL 2
@          SOA ns hostmaster 1 3600 600 86400 2
@          NS  ns
ns         A   198.51.100.2
collector  A   203.0.113.100
collector  AAAA 2001:db8:f::100
x.suffix   A   203.0.113.102
shared     A   203.0.113.7
cloudsave  A   203.0.113.100
solo       A   203.0.113.101
collector2 A   203.0.113.103
cloudsave2 A   203.0.113.103
evil       A   198.51.100.2
own        A   198.51.100.1
frontdoor  A   203.0.113.106
blob1.hosting A 203.0.113.104
front      CNAME x.hosting.shadow.test.
x.hosting  A   203.0.113.105
";

/// A real authoritative upstream for shadow.test in the wan namespace, on
/// 198.51.100.2:5353; answers before this returns. Keep the folder while it runs.
fn wan_knot(t: &mut Topology) -> TempDir {
    let knot_dir = TempDir::new("shknot");
    let zone = knot_dir.write("shadow.zone", SHADOW_ZONE);
    let conf = knot_dir.write(
        "knot.conf",
        &format!(
            "server:\n    listen: 198.51.100.2@5353\n    rundir: {d}\ndatabase:\n    storage: {d}/db\nzone:\n  - domain: shadow.test\n    file: {z}\n",
            d = knot_dir.path().display(),
            z = zone.display()
        ),
    );
    let wan = t.wan.clone();
    t.spawn(&wan, &["knotd", "-c", conf.to_str().unwrap()]);
    let mut up = false;
    for _ in 0..100 {
        if t.sh(
            &t.gateway,
            "dig +short +time=1 +tries=1 -p 5353 @198.51.100.2 collector.shadow.test A || true",
        )
        .trim()
            == "203.0.113.100"
        {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(up, "knotd did not answer in the wan namespace");
    knot_dir
}

#[test]
fn shadow_resolution_blocks_direct_connections_to_blocked_names_and_lets_them_expire() {
    if !require_root() || !require("knotd") || !require("dig") {
        return;
    }
    let mut t = Topology::new();
    t.wan_listener();
    t.sh(&t.wan, "ip -6 addr add 2001:db8:f::100/64 dev lo nodad");
    let _knot_dir = wan_knot(&mut t);

    let dir = TempDir::new("shadow");
    dir.write(
        "tele.list",
        "collector.shadow.test\nshared.shadow.test\n*.suffix.shadow.test\n",
    );
    dir.write("allow.cidrs", ALLOW);
    let cfg_text = |list: &str| {
        shadow_config(list, true).replace(
            "[firewall.shadow]\nmin_ttl_secs = 30\nmax_ttl_secs = 30",
            "allow_cidrs = [\"allow.cidrs\"]\n[firewall.shadow]\nmin_ttl_secs = 2\nmax_ttl_secs = 2",
        )
    };
    let cfg = dir.write("telesink.toml", &cfg_text("tele.list"));
    let daemon = Daemon::start_env(
        &t,
        &dir,
        &cfg,
        &[("TELESINK_LOG", "info,telesink=debug,hickory_server=warn")],
    );
    let until = |what: &str, dst: &str, want: &str| {
        for _ in 0..60 {
            if t.connect(&t.client, None, dst, 8080) == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{what}: {dst} never became {want}\n{}", daemon.log());
    };
    // Exact names from the list are learned at start: connecting by address is rejected.
    until("learned from the list", "203.0.113.100", "refused");
    until("learned from the list (IPv6)", "2001:db8:f::100", "refused");
    let set = t.sh(&t.gateway, "nft list set inet telesink learned_tele_4");
    assert!(
        set.contains("203.0.113.100") && set.contains("expires"),
        "{set}"
    );
    // A name under a suffix rule is learned when a client asks for it (and gets 0.0.0.0).
    assert_eq!(t.connect(&t.client, None, "203.0.113.102", 8080), "ok");
    assert_eq!(
        t.sh(&t.client, "dig +short @192.0.2.1 x.suffix.shadow.test A")
            .trim(),
        "0.0.0.0"
    );
    until("learned from a client query", "203.0.113.102", "refused");
    // An address in the allow set is never added, and that is said.
    assert_eq!(t.connect(&t.client, None, "203.0.113.7", 8080), "ok");
    assert!(
        daemon.log().contains("address is in the allow set"),
        "{}",
        daemon.log()
    );
    // Refreshed while blocked: still rejected after several lifetimes of 2 s.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(t.connect(&t.client, None, "203.0.113.100", 8080), "refused");
    // Once the name leaves the list, nothing refreshes it and the address expires.
    dir.write("other.list", "unrelated.shadow.test\n");
    std::fs::write(&cfg, cfg_text("other.list")).unwrap();
    Command::new("kill")
        .args(["-HUP", &daemon.child.id().to_string()])
        .status()
        .unwrap();
    until(
        "expired after the name left the list",
        "203.0.113.100",
        "ok",
    );
}

#[test]
fn dns_to_an_outside_resolver_can_be_redirected_to_telesink_and_is_counted() {
    if !require_root() || !require("dig") {
        return;
    }
    let mut t = Topology::new();
    // The wan "resolver" only echoes datagrams and accepts TCP: it cannot answer a query.
    t.wan_listener();
    let dir = TempDir::new("redir");
    dir.write("redir.list", "collector.redir.test\n");
    let cfg = dir.write(
        "telesink.toml",
        r#"[server]
listen = ["192.0.2.1:53"]
[upstream]
servers = ["127.0.0.1:9"]
[policy]
lists_dir = "."
allowed_clients = ["192.0.2.0/24"]
[firewall]
enabled = true
lan = ["lan0"]
wan = ["wan0"]
[firewall.bypass]
dns_action = "redirect"
[profiles.p]
enabled = true
lists = ["redir.list"]
"#,
    );
    let daemon = Daemon::start(&t, &dir, &cfg);
    // Asked of an outside server, answered by telesink, over UDP and over TCP.
    let udp = t.sh(
        &t.client,
        "dig +short +time=2 +tries=1 @198.51.100.2 collector.redir.test A",
    );
    assert_eq!(udp.trim(), "0.0.0.0", "{}", daemon.log());
    let tcp = t.sh(
        &t.client,
        "dig +tcp +short +time=2 +tries=1 @198.51.100.2 collector.redir.test A",
    );
    assert_eq!(tcp.trim(), "0.0.0.0", "{}", daemon.log());
    // Asking the gateway itself is not a bypass attempt.
    assert_eq!(
        t.sh(&t.client, "dig +short @192.0.2.1 collector.redir.test A")
            .trim(),
        "0.0.0.0"
    );
    let counters = fw(&t, "counters", &cfg);
    assert!(
        counters.contains(&format!("set=bypass_dns_4 client={CLIENT_IP} packets=2 ")),
        "{counters}"
    );
    // DoT is still rejected in redirect mode.
    assert_eq!(t.connect(&t.client, None, WAN_IP, 853), "refused");
}

#[test]
fn firewall_rejects_per_client_reach_the_metrics() {
    if !require_root() {
        return;
    }
    let mut t = Topology::new();
    t.wan_listener();
    let dir = TempDir::new("fwmetrics");
    let cfg = write(
        &dir,
        &config("", "[metrics]\nlisten = \"127.0.0.1:9153\"\n"),
    );
    let daemon = Daemon::start(&t, &dir, &cfg);
    for _ in 0..3 {
        assert_eq!(
            t.connect(&t.client, Some(CLIENT_IP), "203.0.113.5", 8080),
            "refused"
        );
    }
    assert_eq!(t.udp(&t.client, Some(CLIENT_IP), WAN_IP, 53), "refused");
    let body = t.sh(
        &t.gateway,
        "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9153/metrics').read().decode())\"",
    );
    // The client is on-link: it is counted as its device, by the MAC the gateway's
    // neighbour table has for it (docs/METRICS.md, "What a client label is").
    let mac = t
        .sh(&t.client, "cat /sys/class/net/c0/address")
        .trim()
        .to_owned();
    let want = format!(
        "telesink_firewall_rejects_total{{client=\"{mac}\",profile=\"legacy-ip-telemetry\"}} 3"
    );
    assert!(
        body.contains(&want),
        "missing {want}:\n{body}\n{}",
        daemon.log()
    );
    let bypass = format!("telesink_bypass_attempts_total{{client=\"{mac}\",kind=\"dns\"}} 1");
    assert!(body.contains(&bypass), "missing {bypass}:\n{body}");
    let kind = format!("telesink_client_info{{client=\"{mac}\",kind=\"device\"}} 1");
    assert!(body.contains(&kind), "missing {kind}:\n{body}");
}

/// A runtime toggle reaches the firewall in the same change as DNS: disabling the profile
/// opens its ranges, log-only keeps them open, enabling closes them again.
#[test]
fn profile_toggles_and_log_only_apply_to_the_firewall() {
    if !require_root() {
        return;
    }
    let mut t = Topology::new();
    t.wan_listener();
    let dir = TempDir::new("fwt");
    let cfg = write(&dir, &config("", ""));
    let daemon = Daemon::start(&t, &dir, &cfg);
    let ctl = |args: &str| {
        let sock = dir.path().join("control.sock");
        t.sh(
            &t.gateway,
            &format!("{} {args} --socket {}", bin(), sock.display()),
        )
    };
    assert_eq!(t.connect(&t.client, None, "203.0.113.5", 8080), "refused");
    let dry = ctl("profile disable legacy-ip-telemetry --dry-run --json");
    // 203.0.113.7 lies inside 203.0.113.0/28: merged, two ranges remain.
    assert!(dry.contains("\"cidrs\": 2"), "{dry}");
    assert_eq!(t.connect(&t.client, None, "203.0.113.5", 8080), "refused");
    ctl("profile disable legacy-ip-telemetry");
    assert_eq!(t.connect(&t.client, None, "203.0.113.5", 8080), "ok");
    ctl("profile enable legacy-ip-telemetry");
    assert_eq!(t.connect(&t.client, None, "203.0.113.5", 8080), "refused");
    ctl("log-only legacy-ip-telemetry on");
    assert_eq!(t.connect(&t.client, None, "203.0.113.5", 8080), "ok");
    ctl("log-only legacy-ip-telemetry off");
    assert_eq!(t.connect(&t.client, None, "203.0.113.5", 8080), "refused");
    stop_and_clean(&t, daemon);
}

/// A gateway for one test: namespaces with the wan listener, a folder, and the config
/// written with the block and allow lists.
fn gateway(
    tag: &str,
    extra_firewall: &str,
    extra: &str,
) -> (Topology, TempDir, std::path::PathBuf) {
    let mut t = Topology::new();
    t.wan_listener();
    let dir = TempDir::new(tag);
    let cfg = write(&dir, &config(extra_firewall, extra));
    (t, dir, cfg)
}

/// Runs a control command against the daemon in the gateway namespace.
fn ctl_in(t: &Topology, dir: &TempDir, args: &str) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", &t.gateway, bin()])
        .args(args.split_whitespace())
        .arg("--socket")
        .arg(dir.path().join("control.sock"))
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Stops the daemon (it must exit cleanly) and deletes the table it kept.
fn stop_and_clean(t: &Topology, daemon: Daemon) {
    let (ok, log) = daemon.stop();
    assert!(ok, "{log}");
    t.sh(
        &t.gateway,
        "nft delete table inet telesink 2>/dev/null || true",
    );
}

fn table_exists(t: &Topology) -> bool {
    t.sh(&t.gateway, "nft list tables")
        .contains("inet telesink")
}

/// A connect loop from the client to a blocked address: each attempt's start time (Unix
/// seconds) and whether it got through. Paced at about one attempt per 2 ms, bounded by
/// `secs` and 10,000 attempts.
const CONNECT_LOOP: &str = "import socket,time,sys
end=time.time()+float(sys.argv[1]); n=0
while time.time()<end and n<10000:
  time.sleep(0.002)
  s=socket.socket(); s.settimeout(0.3); t=time.time(); n+=1
  try: s.connect(('203.0.113.5',8080)); r='ok'
  except ConnectionRefusedError: r='rejected'
  except Exception: r='timeout'
  s.close(); print('%.4f %s' % (t, r), flush=True)";

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Debian's nftables.service runs `flush ruleset`; an admin may delete the table by hand.
/// Either way the daemon puts its table back from the snapshot in force, counts it and
/// says so; the connect loop measures how long blocking was off.
#[test]
fn a_flushed_ruleset_or_a_deleted_table_is_restored_under_traffic() {
    if !require_root() || !require("curl") {
        return;
    }
    let (t, dir, cfg) = gateway("fwrestore", "", "[metrics]\nlisten = \"127.0.0.1:9153\"\n");
    let daemon = Daemon::start(&t, &dir, &cfg);
    assert_eq!(t.connect(&t.client, None, "203.0.113.5", 8080), "refused");
    let out = dir.path().join("loop.txt");
    let script = dir.write("loop.py", CONNECT_LOOP);
    let client = t.client.clone();
    let mut looper = Command::new("ip")
        .args(["netns", "exec", &client, "python3"])
        .arg(&script)
        .arg("7")
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let mut events = Vec::new();
    for how in ["nft flush ruleset", "nft delete table inet telesink"] {
        events.push((how, unix_now()));
        t.sh(&t.gateway, how);
        std::thread::sleep(Duration::from_millis(2500));
        assert!(table_exists(&t), "{how}: not restored\n{}", daemon.log());
    }
    looper.wait().unwrap();
    let lines = std::fs::read_to_string(&out).unwrap();
    let attempts: Vec<(f64, &str)> = lines
        .lines()
        .filter_map(|l| {
            let (t, r) = l.split_once(' ')?;
            Some((t.parse().ok()?, r))
        })
        .collect();
    assert!(attempts.len() > 50, "too few attempts:\n{lines}");
    eprintln!(
        "connect loop: {} attempts from {:.3} to {:.3}; events at {:?}",
        attempts.len(),
        attempts[0].0,
        attempts[attempts.len() - 1].0,
        events
    );
    for (i, (how, at)) in events.iter().enumerate() {
        let next = events.get(i + 1).map_or(f64::MAX, |e| e.1);
        let window: Vec<&(f64, &str)> = attempts
            .iter()
            .filter(|(t, _)| *t >= *at && *t < next)
            .collect();
        let passed: Vec<f64> = window
            .iter()
            .filter(|(_, r)| *r == "ok")
            .map(|(t, _)| t - at)
            .collect();
        let open_for = passed.iter().cloned().fold(0.0, f64::max);
        eprintln!(
            "restore figures: {how}: {} of {} attempts passed, the last {:.0} ms after the event",
            passed.len(),
            window.len(),
            open_for * 1e3
        );
        assert!(
            open_for < 1.0,
            "{how}: connections passed for {open_for:.3} s (target: under 1 s)\n{}",
            daemon.log()
        );
        let after: Vec<&&(f64, &str)> = window.iter().filter(|(t, _)| t - at > 1.0).collect();
        assert!(
            !after.is_empty() && after.iter().all(|(_, r)| *r == "rejected"),
            "{how}: blocking not back a second later: {after:?}"
        );
    }
    let log = daemon.log();
    assert!(
        log.matches("restored").count() >= 2,
        "two restores must be logged:\n{log}"
    );
    let metrics = t.sh(&t.gateway, "curl -s http://127.0.0.1:9153/metrics");
    let restores: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("telesink_firewall_restores_total ")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no restores counter:\n{metrics}"));
    assert!(restores >= 2.0, "{metrics}");
    stop_and_clean(&t, daemon);
}

/// A reload that turns the firewall off removes the table and `status` says off; one that
/// turns it on again programs it; `on_exit` is the one in the config in force at exit.
#[test]
fn a_reload_reconciles_the_firewall_with_the_config_in_force() {
    if !require_root() {
        return;
    }
    let (t, dir, cfg) = gateway("fwreload", "on_exit = \"keep\"", "");
    let daemon = Daemon::start(&t, &dir, &cfg);
    assert_eq!(t.connect(&t.client, None, "203.0.113.5", 8080), "refused");
    std::fs::write(
        &cfg,
        config("on_exit = \"keep\"", "").replace("enabled = true\nlan", "enabled = false\nlan"),
    )
    .unwrap();
    let (ok, out) = ctl_in(&t, &dir, "reload");
    assert!(ok, "{out}");
    assert!(!table_exists(&t), "firewall turned off, table still there");
    assert_eq!(t.connect(&t.client, None, "203.0.113.5", 8080), "ok");
    let (_, status) = ctl_in(&t, &dir, "status --json");
    assert!(status.contains("\"firewall\": \"off\""), "{status}");
    std::fs::write(&cfg, config("on_exit = \"remove\"", "")).unwrap();
    let (ok, out) = ctl_in(&t, &dir, "reload");
    assert!(ok, "{out}");
    assert!(table_exists(&t));
    assert_eq!(t.connect(&t.client, None, "203.0.113.5", 8080), "refused");
    let (_, status) = ctl_in(&t, &dir, "status --json");
    assert!(status.contains("\"firewall\": \"on\""), "{status}");
    let (ok, log) = daemon.stop();
    assert!(ok, "{log}");
    assert!(
        !table_exists(&t),
        "on_exit = remove came with the reload:\n{log}"
    );
}

/// `telesink firewall apply` (the early-boot unit) builds the same snapshot as the daemon:
/// a profile an admin switched off stays off at boot; while the daemon runs it asks the
/// daemon instead of replacing its table.
#[test]
fn firewall_apply_uses_the_saved_toggles_and_defers_to_a_running_daemon() {
    if !require_root() {
        return;
    }
    let (t, dir, cfg) = gateway("fwboot", "on_exit = \"keep\"", "");
    let daemon = Daemon::start(&t, &dir, &cfg);
    let (ok, out) = ctl_in(&t, &dir, "profile disable legacy-ip-telemetry");
    assert!(ok, "{out}");
    assert_eq!(t.connect(&t.client, None, "203.0.113.5", 8080), "ok");
    let applied = t.sh(
        &t.gateway,
        &format!(
            "RUNTIME_DIRECTORY={d} STATE_DIRECTORY={d} {} firewall apply --config {}",
            bin(),
            cfg.display(),
            d = dir.path().display()
        ),
    );
    assert!(applied.contains("running daemon"), "{applied}");
    assert_eq!(
        t.connect(&t.client, None, "203.0.113.5", 8080),
        "ok",
        "firewall apply re-blocked a profile the daemon has off"
    );
    let (ok, log) = daemon.stop();
    assert!(ok, "{log}");
    // Boot: no daemon, the table from the config plus the saved toggles.
    t.sh(&t.gateway, "nft delete table inet telesink");
    let applied = t.sh(
        &t.gateway,
        &format!(
            "RUNTIME_DIRECTORY={d} STATE_DIRECTORY={d} {} firewall apply --config {}",
            bin(),
            cfg.display(),
            d = dir.path().display()
        ),
    );
    assert!(table_exists(&t), "{applied}");
    assert_eq!(
        t.connect(&t.client, None, "203.0.113.5", 8080),
        "ok",
        "the saved toggle was ignored at boot: {applied}"
    );
    t.sh(
        &t.gateway,
        "nft delete table inet telesink 2>/dev/null || true",
    );
}

/// A reload that changes a few ranges sends only those set elements (the rest of the
/// table is not rewritten), and one that changes nothing sends nothing; traffic follows
/// the new ranges exactly.
#[test]
fn a_reload_changes_only_the_elements_that_differ() {
    if !require_root() {
        return;
    }
    let (t, dir, cfg) = gateway("fwdiff", "", "");
    let daemon = Daemon::start(&t, &dir, &cfg);
    assert_eq!(t.connect(&t.client, None, "203.0.113.10", 8080), "refused");
    assert_eq!(t.connect(&t.client, None, "203.0.113.20", 8080), "ok");
    dir.write(
        "block.cidrs",
        "203.0.113.0/29\n203.0.113.16/28\n2001:db8:f::/124\n",
    );
    let (ok, out) = ctl_in(&t, &dir, "reload");
    assert!(ok, "{out}");
    let log = daemon.log();
    assert!(
        log.contains("firewall: only set elements changed"),
        "the reload rewrote the table:\n{log}"
    );
    assert_eq!(t.connect(&t.client, None, "203.0.113.5", 8080), "refused");
    assert_eq!(t.connect(&t.client, None, "203.0.113.10", 8080), "ok");
    assert_eq!(t.connect(&t.client, None, "203.0.113.20", 8080), "refused");
    let table = t.sh(&t.gateway, "nft list table inet telesink");
    assert!(
        table.contains("203.0.113.0/29") && table.contains("203.0.113.16/28"),
        "{table}"
    );
    assert!(!table.contains("203.0.113.0/28"), "{table}");
    let (ok, out) = ctl_in(&t, &dir, "reload");
    assert!(ok, "{out}");
    assert!(
        daemon
            .log()
            .contains("firewall unchanged: nothing sent to the kernel"),
        "{}",
        daemon.log()
    );
    stop_and_clean(&t, daemon);
}

/// The shadow-resolution config used below: a profile over `list`, `shadow` as given.
fn shadow_config(list: &str, shadow: bool) -> String {
    format!(
        r#"[server]
listen = ["192.0.2.1:53"]
[upstream]
servers = ["198.51.100.2:5353"]
[policy]
lists_dir = "."
allowed_clients = ["192.0.2.0/24", "127.0.0.0/8"]
[firewall]
enabled = true
lan = ["lan0"]
wan = ["wan0"]
[firewall.shadow]
min_ttl_secs = 30
max_ttl_secs = 30
[profiles.tele]
enabled = true
shadow = {shadow}
lists = ["{list}"]
"#
    )
}

/// A reload that turned `shadow` on created the learned sets but nothing filled them:
/// shadow resolution only started with the daemon. The apply path starts it now.
#[test]
fn a_reload_that_turns_shadow_on_starts_shadow_resolution() {
    if !require_root() || !require("knotd") || !require("dig") {
        return;
    }
    let mut t = Topology::new();
    t.wan_listener();
    let _knot = wan_knot(&mut t);
    let dir = TempDir::new("shreload");
    dir.write("tele.list", "collector.shadow.test\n");
    let cfg = dir.write("telesink.toml", &shadow_config("tele.list", false));
    let daemon = Daemon::start(&t, &dir, &cfg);
    assert_eq!(t.connect(&t.client, None, "203.0.113.100", 8080), "ok");
    std::fs::write(&cfg, shadow_config("tele.list", true)).unwrap();
    let (ok, out) = ctl_in(&t, &dir, "reload");
    assert!(ok, "{out}");
    let mut refused = false;
    for _ in 0..50 {
        if t.connect(&t.client, None, "203.0.113.100", 8080) == "refused" {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        refused,
        "shadow did not start with the reload:\n{}",
        daemon.log()
    );
    let (_, status) = ctl_in(&t, &dir, "status --json");
    assert!(status.contains("\"shadow\": {"), "{status}");
    // And a reload that turns it off stops it: the learned set goes with the plan.
    std::fs::write(&cfg, shadow_config("tele.list", false)).unwrap();
    let (ok, out) = ctl_in(&t, &dir, "reload");
    assert!(ok, "{out}");
    assert_eq!(t.connect(&t.client, None, "203.0.113.100", 8080), "ok");
    assert!(
        daemon.log().contains("shadow resolution stopped"),
        "{}",
        daemon.log()
    );
    stop_and_clean(&t, daemon);
}

/// Seeding used to stop at the queue's 4,096 places without a word; every exact name of
/// a big list is queued now (the seeding waits for room).
#[test]
fn shadow_seeding_queues_every_name_of_a_big_list() {
    if !require_root() || !require("knotd") || !require("dig") {
        return;
    }
    let mut t = Topology::new();
    // knotd answers NXDOMAIN for these at once, which is what drains the queue here.
    let _knot = wan_knot(&mut t);
    let dir = TempDir::new("shseed");
    let names: String = (0..6000)
        .map(|i| format!("n{i}.seed.shadow.test\n"))
        .collect();
    dir.write("tele.list", &names);
    let cfg = dir.write("telesink.toml", &shadow_config("tele.list", true));
    let daemon = Daemon::start(&t, &dir, &cfg);
    let mut queued = None;
    for _ in 0..300 {
        queued = daemon
            .log()
            .lines()
            .find(|l| l.contains("shadow resolution: names queued"))
            .map(str::to_owned);
        if queued.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let line = queued.unwrap_or_else(|| panic!("seeding did not finish:\n{}", daemon.log()));
    assert!(line.contains("names=6000 of=6000"), "{line}");
    stop_and_clean(&t, daemon);
}

/// The lists' exact names are queued for shadow resolution when the lists change, not
/// at every toggle (each toggle re-queued every listed name: two upstream queries per
/// name and toggle); the names tracked are in status.
#[test]
fn shadow_seeds_when_the_lists_change_not_at_every_toggle() {
    if !require_root() || !require("knotd") || !require("dig") {
        return;
    }
    let mut t = Topology::new();
    let _knot = wan_knot(&mut t);
    let dir = TempDir::new("shtoggle");
    dir.write(
        "tele.list",
        "a.seed.shadow.test
b.seed.shadow.test
",
    );
    dir.write(
        "ads.list",
        "banner.ads.test
",
    );
    let with_ads = |list: &str| {
        shadow_config(list, true)
            + "[profiles.ads]
enabled = true
lists = [\"ads.list\"]\n"
    };
    let cfg = dir.write("telesink.toml", &with_ads("tele.list"));
    let daemon = Daemon::start(&t, &dir, &cfg);
    let seeded = |n: usize| {
        for _ in 0..100 {
            if daemon
                .log()
                .matches("shadow resolution: names queued")
                .count()
                >= n
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("not seeded {n} times:\n{}", daemon.log());
    };
    seeded(1);
    for verb in ["disable", "enable", "disable", "enable"] {
        let (ok, out) = ctl_in(&t, &dir, &format!("profile {verb} ads"));
        assert!(ok, "{out}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let log = daemon.log();
    assert_eq!(
        log.matches("shadow resolution: names queued").count(),
        1,
        "{log}"
    );
    let (_, status) = ctl_in(&t, &dir, "status --json");
    assert!(status.contains("\"names_tracked\": 2"), "{status}");
    // A reload with another list seeds again.
    dir.write(
        "tele.list",
        "a.seed.shadow.test
b.seed.shadow.test
c.seed.shadow.test
",
    );
    let (ok, out) = ctl_in(&t, &dir, "reload");
    assert!(ok, "{out}");
    seeded(2);
    stop_and_clean(&t, daemon);
}

/// A shadow-resolution gateway: namespaces with the wan listener, knotd for shadow.test,
/// and a folder. Keep the returned knot folder while the test runs.
fn shadow_gateway(tag: &str) -> (Topology, TempDir, TempDir) {
    let mut t = Topology::new();
    t.wan_listener();
    let knot = wan_knot(&mut t);
    (t, TempDir::new(tag), knot)
}

/// `dig +short` for an A record through the gateway, from the client namespace.
fn dig_a(t: &Topology, name: &str) -> String {
    t.sh(
        &t.client,
        &format!("dig +short +time=2 +tries=1 @192.0.2.1 {name} A"),
    )
    .trim()
    .to_owned()
}

/// Shadow resolution never blocks an address that an allowed name uses, in either order,
/// and never the upstream: a blocked name learned at start loses its address the moment
/// an allowed answer shows it (target: within 1 s), a blocked name whose address an
/// allowed answer showed first is never learned, a blocked name on its own address stays
/// rejected, and a blocked name that resolves to the upstream is never learned.
#[test]
fn shadow_never_blocks_an_address_an_allowed_name_uses() {
    if !require_root() || !require("knotd") || !require("dig") {
        return;
    }
    let (t, dir, _knot) = shadow_gateway("shshared");
    dir.write(
        "tele.list",
        "collector.shadow.test\nsolo.shadow.test\nevil.shadow.test\nown.shadow.test\nfrontdoor.shadow.test\n",
    );
    dir.write("shared.cidrs", "203.0.113.106/32\n");
    let cfg = dir.write(
        "telesink.toml",
        &shadow_config("tele.list", true).replace(
            "[firewall.shadow]\n",
            "[firewall.shadow]\nnever_learn_cidrs = [\"shared.cidrs\"]\n",
        ),
    );
    let daemon = Daemon::start(&t, &dir, &cfg);
    let until = |what: &str, dst: &str, want: &str| {
        for _ in 0..100 {
            if t.connect(&t.client, None, dst, 8080) == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{what}: {dst} never became {want}\n{}", daemon.log());
    };
    until("learned at start", "203.0.113.100", "refused");
    until("learned at start", "203.0.113.101", "refused");
    // The upstream's own address, returned for a blocked name, is never learned: DNS and
    // the upstream stay reachable.
    assert_eq!(t.connect(&t.client, None, "198.51.100.2", 8080), "ok");
    assert!(
        daemon.log().contains("shadow: address is never learned"),
        "{}",
        daemon.log()
    );
    // Nor the gateway's own address, nor one in never_learn_cidrs (the shared ranges);
    // checked in the learned set at the end, once every name was resolved.
    assert_eq!(t.connect(&t.client, None, "203.0.113.106", 8080), "ok");
    // Learned first, then revealed by an allowed answer: removed at once.
    let dig = |name: &str| dig_a(&t, name);
    assert_eq!(dig("cloudsave.shadow.test"), "203.0.113.100");
    // Watched in the kernel set itself (a cheap `nft list`), then proven by a connect.
    let answered = std::time::Instant::now();
    let mut removed_after = None;
    while answered.elapsed() < Duration::from_secs(5) {
        let set = t.sh(&t.gateway, "nft list set inet telesink learned_tele_4");
        if !set.contains("203.0.113.100") {
            removed_after = Some(answered.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let removed_after = removed_after.unwrap_or_else(|| {
        panic!(
            "the shared address stayed in the learned set after the allowed answer\n{}",
            daemon.log()
        )
    });
    eprintln!(
        "shared address removed from the kernel set {} ms after the allowed answer",
        removed_after.as_millis()
    );
    assert!(removed_after < Duration::from_secs(1), "{removed_after:?}");
    assert_eq!(t.connect(&t.client, None, "203.0.113.100", 8080), "ok");
    // A blocked name on an address of its own stays rejected.
    assert_eq!(t.connect(&t.client, None, "203.0.113.101", 8080), "refused");
    // Allowed first, then blocked: the address is never learned.
    assert_eq!(dig("cloudsave2.shadow.test"), "203.0.113.103");
    dir.write(
        "tele.list",
        "collector.shadow.test\nsolo.shadow.test\nevil.shadow.test\ncollector2.shadow.test\n",
    );
    let (ok, out) = ctl_in(&t, &dir, "reload");
    assert!(ok, "{out}");
    let mut skipped = false;
    for _ in 0..50 {
        if daemon
            .log()
            .contains("an allowed name resolves to this address too")
        {
            skipped = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        skipped,
        "collector2 was not resolved and skipped\n{}",
        daemon.log()
    );
    assert_eq!(t.connect(&t.client, None, "203.0.113.103", 8080), "ok");
    let (_, status) = ctl_in(&t, &dir, "status --json");
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let sh = &v["shadow"];
    assert!(sh["shared_removed"].as_u64() >= Some(1), "{status}");
    assert!(sh["shared_skipped"].as_u64() >= Some(1), "{status}");
    // The upstream, the gateway's own address and the never_learn_cidrs one.
    assert!(sh["never_learn_skipped"].as_u64() >= Some(3), "{status}");
    let learned = t.sh(&t.gateway, "nft list set inet telesink learned_tele_4");
    for never in ["198.51.100.1", "198.51.100.2", "203.0.113.106"] {
        assert!(!learned.contains(never), "{never} learned: {learned}");
    }
    stop_and_clean(&t, daemon);
}

/// Names in shared-hosting zones (never_learn_zones), and answers whose CNAME chain passes
/// through one, are blocked by DNS but never learned: their addresses serve every tenant
/// of the front end. A blocked name outside them is still learned.
#[test]
fn shadow_never_learns_names_in_shared_hosting_zones() {
    if !require_root() || !require("knotd") || !require("dig") {
        return;
    }
    let (t, dir, _knot) = shadow_gateway("shzones");
    dir.write(
        "tele.list",
        "blob1.hosting.shadow.test\nfront.shadow.test\nsolo.shadow.test\n",
    );
    dir.write("hosting.list", "*.hosting.shadow.test\n");
    let cfg = dir.write(
        "telesink.toml",
        &shadow_config("tele.list", true).replace(
            "[firewall.shadow]\n",
            "[firewall.shadow]\nnever_learn_zones = [\"hosting.list\"]\n",
        ),
    );
    let daemon = Daemon::start(&t, &dir, &cfg);
    let mut learned = false;
    for _ in 0..100 {
        if t.connect(&t.client, None, "203.0.113.101", 8080) == "refused" {
            learned = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        learned,
        "solo.shadow.test was not learned\n{}",
        daemon.log()
    );
    assert_eq!(t.connect(&t.client, None, "203.0.113.104", 8080), "ok");
    assert_eq!(t.connect(&t.client, None, "203.0.113.105", 8080), "ok");
    let log = daemon.log();
    assert!(
        log.contains("the name is in a shared-hosting zone"),
        "{log}"
    );
    assert!(
        log.contains("CNAME chain passes through a shared-hosting zone"),
        "{log}"
    );
    // DNS still blocks both names.
    let dig = |name: &str| dig_a(&t, name);
    assert_eq!(dig("blob1.hosting.shadow.test"), "0.0.0.0");
    assert_eq!(dig("front.shadow.test"), "0.0.0.0");
    stop_and_clean(&t, daemon);
}

/// `firewall counters` with no table used to fail with a bare netlink error per set.
#[test]
fn firewall_counters_without_a_table_say_so() {
    if !require_root() {
        return;
    }
    let t = Topology::new();
    let dir = TempDir::new("fwnocount");
    let cfg = write(&dir, &config("", ""));
    let counters = |extra: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", &t.gateway, bin(), "firewall", "counters"])
            .args(extra)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap()
    };
    let out = counters(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("there is no table inet telesink"), "{err}");
    // The same for scripts.
    let out = counters(&["--json"]);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("there is no table inet telesink"),
        "{v}"
    );
}

/// `telesink init` writes a gateway config from the LAN interface's real addresses; it
/// passes check, and the daemon runs on it and answers the LAN.
#[test]
fn init_writes_a_working_gateway_config_from_the_interfaces() {
    if !require_root() || !require("dig") {
        return;
    }
    let t = Topology::new();
    let dir = TempDir::new("init");
    let cfg = dir.path().join("telesink.toml");
    let out = t.sh(
        &t.gateway,
        &format!(
            "{} init --lan lan0 --wan wan0 --output {}",
            bin(),
            cfg.display()
        ),
    );
    assert!(
        out.contains("DNS listens on     192.0.2.1:53, [2001:db8:1::1]:53"),
        "{out}"
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        text.contains("allowed_clients = [\"127.0.0.0/8\", \"::1/128\", \"192.0.2.0/24\", \"2001:db8:1::/64\"]"),
        "{text}"
    );
    assert!(
        text.contains("lan = [\"lan0\"]") && text.contains("wan = [\"wan0\"]"),
        "{text}"
    );
    // Its own header, not the example's; the opt-in profiles are there, off.
    assert!(
        text.starts_with(
            "# telesink on this gateway, written by `telesink init --lan lan0 --wan wan0`"
        ),
        "{text}"
    );
    assert!(!text.contains("cp /usr/share/doc"), "{text}");
    assert!(
        text.contains("[profiles.ms-app-analytics]\ndescription = \"Application Insights, App Center and 1DS analytics SDK collectors in apps\"\nenabled = false"),
        "{text}"
    );
    // An AD site: its domain and the LAN's reverse zones to the DCs, which are exempt
    // from the rate limit; what is written passes check (init runs it).
    let ad = dir.path().join("ad.toml");
    let out = t.sh(
        &t.gateway,
        &format!(
            "{} init --lan lan0 --ad-domain corp.example --dc 192.0.2.53,192.0.2.54 --output {}",
            bin(),
            ad.display()
        ),
    );
    assert!(
        out.contains("to the DCs         corp.example, 2.0.192.in-addr.arpa, 0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"),
        "{out}"
    );
    let text = std::fs::read_to_string(&ad).unwrap();
    assert!(
        text.contains(
            "[[forward]]\nzone = \"corp.example\"\nservers = [\"192.0.2.53:53\", \"192.0.2.54:53\"]"
        ) && text.contains("exempt = [\"192.0.2.53\", \"192.0.2.54\"]"),
        "{text}"
    );
    // The same interface twice, and one that is not there, are refused with the way out.
    let scratch = dir.path().join("refused.toml");
    let refused = |args: &str| {
        t.sh(
            &t.gateway,
            &format!(
                "{} init {args} --output {} 2>&1 || true",
                bin(),
                scratch.display()
            ),
        )
    };
    let out = refused("--lan lan0 --wan lan0");
    assert!(out.contains("--lan and --wan are both lan0"), "{out}");
    let out = refused("--lan lan9");
    assert!(
        out.contains(
            "interface lan9 does not exist; did you mean lan0? ip link shows: lan0, lo, wan0"
        ),
        "{out}"
    );
    // It refuses to overwrite what is there.
    let again = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.gateway,
            bin(),
            "init",
            "--lan",
            "lan0",
            "--output",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not overwriting"));
    // The daemon runs on it, the firewall included, and answers the LAN.
    let daemon = Daemon::start(&t, &dir, &cfg);
    assert_eq!(
        dig_a(&t, "nexus.officeapps.live.com"),
        "0.0.0.0",
        "{}",
        daemon.log()
    );
    assert!(
        t.sh(&t.gateway, "nft list tables")
            .contains("inet telesink")
    );
    stop_and_clean(&t, daemon);
}

/// A start with the firewall off never changes the kernel (the table may be another
/// telesink's, a trial run beside the real one), but says loudly that one is there.
#[test]
fn a_start_with_the_firewall_off_leaves_an_existing_table_and_warns() {
    if !require_root() {
        return;
    }
    let t = Topology::new();
    let dir = TempDir::new("fwoffstart");
    let cfg = write(&dir, &config("", ""));
    fw(&t, "apply", &cfg);
    assert!(table_exists(&t));
    std::fs::write(
        &cfg,
        config("", "").replace("enabled = true\nlan", "enabled = false\nlan"),
    )
    .unwrap();
    let daemon = Daemon::start(&t, &dir, &cfg);
    assert!(
        table_exists(&t),
        "a start with the firewall off removed a table"
    );
    assert!(
        daemon
            .log()
            .contains("firewall.enabled is false, but table inet telesink is in the kernel"),
        "{}",
        daemon.log()
    );
    let (ok, log) = daemon.stop();
    assert!(ok, "{log}");
    assert!(
        table_exists(&t),
        "stopping with the firewall off removed a table"
    );
    t.sh(
        &t.gateway,
        "nft delete table inet telesink 2>/dev/null || true",
    );
}

/// `telesink allow` and `telesink block` change DNS and the learned sets in one change:
/// when `allow` returns, a name that shadow resolution had learned answers and its
/// address is reachable; a name blocked at runtime is blocked in DNS and its address
/// learned for the firewall (telesink's own `runtime` profile).
#[test]
fn runtime_rules_change_dns_and_the_learned_sets_together() {
    if !require_root() || !require("knotd") || !require("dig") {
        return;
    }
    let (t, dir, _knot) = shadow_gateway("rtrules");
    dir.write("tele.list", "solo.shadow.test\n");
    let cfg = dir.write("telesink.toml", &shadow_config("tele.list", true));
    let daemon = Daemon::start(&t, &dir, &cfg);
    let refused_soon = |addr: &str| {
        (0..100).any(|_| {
            let r = t.connect(&t.client, None, addr, 8080) == "refused";
            if !r {
                std::thread::sleep(Duration::from_millis(50));
            }
            r
        })
    };
    assert!(
        refused_soon("203.0.113.101"),
        "solo.shadow.test was not learned\n{}",
        daemon.log()
    );
    assert_eq!(dig_a(&t, "solo.shadow.test"), "0.0.0.0");

    let (ok, out) = ctl_in(&t, &dir, "allow solo.shadow.test");
    assert!(ok, "{out}");
    assert!(
        out.contains("runtime rule: allow solo.shadow.test for every group"),
        "{out}"
    );
    // No waiting: the command returned after both halves changed.
    assert_eq!(t.connect(&t.client, None, "203.0.113.101", 8080), "ok");
    assert_eq!(dig_a(&t, "solo.shadow.test"), "203.0.113.101");
    assert!(
        daemon
            .log()
            .contains("learned addresses of names a runtime rule allows removed")
    );

    let (ok, out) = ctl_in(&t, &dir, "block collector2.shadow.test");
    assert!(ok, "{out}");
    assert_eq!(dig_a(&t, "collector2.shadow.test"), "0.0.0.0");
    assert!(
        refused_soon("203.0.113.103"),
        "collector2.shadow.test was not learned\n{}",
        daemon.log()
    );
    let set = t.sh(&t.gateway, "nft list set inet telesink learned_runtime_4");
    assert!(set.contains("203.0.113.103"), "{set}");
    stop_and_clean(&t, daemon);
}

/// A runtime allow whose removal of learned addresses fails in the kernel (injected)
/// changes nothing: DNS still blocks, the address is still in the learned set and
/// refused, the state file has no rule. Before, the learned map was edited before the
/// kernel call, and the new table stayed in the kernel while DNS kept the old policy.
#[test]
fn a_runtime_allow_that_the_kernel_refuses_changes_nothing() {
    if !require_root() || !require("knotd") || !require("dig") {
        return;
    }
    let (t, dir, _knot) = shadow_gateway("rtfail");
    dir.write("tele.list", "solo.shadow.test\n");
    let cfg = dir.write("telesink.toml", &shadow_config("tele.list", true));
    let daemon = Daemon::start_env(&t, &dir, &cfg, &[("TELESINK_FAILPOINTS", "forget-allowed")]);
    let refused_soon = (0..100).any(|_| {
        let r = t.connect(&t.client, None, "203.0.113.101", 8080) == "refused";
        if !r {
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    });
    assert!(refused_soon, "not learned\n{}", daemon.log());
    let (ok, out) = ctl_in(&t, &dir, "allow solo.shadow.test");
    assert!(!ok, "{out}");
    assert!(
        out.contains("failure injected at forget-allowed") && out.contains("nothing changed"),
        "{out}"
    );
    assert_eq!(dig_a(&t, "solo.shadow.test"), "0.0.0.0");
    assert_eq!(t.connect(&t.client, None, "203.0.113.101", 8080), "refused");
    let set = t.sh(&t.gateway, "nft list set inet telesink learned_tele_4");
    assert!(set.contains("203.0.113.101"), "{set}");
    let state = std::fs::read_to_string(dir.path().join("state.json")).unwrap_or_default();
    assert!(!state.contains("solo.shadow.test"), "{state}");
    let (_, status) = ctl_in(&t, &dir, "status --json");
    assert!(status.contains("\"rules\": []"), "{status}");
    stop_and_clean(&t, daemon);
}

/// The evidence ledger on a gateway: DNS blocks, observed queries, firewall rejects and
/// bypass attempts of two clients, with exact counts in `telesink report --format json`,
/// from the daemon and, after a restart, again (new attempts adding up).
#[test]
fn the_ledger_records_every_layer_per_client_exactly_across_a_restart() {
    if !require_root() || !require("knotd") || !require("dig") {
        return;
    }
    let (t, dir, _knot) = shadow_gateway("ledger");
    dir.write("tele.list", "collector.shadow.test\n");
    dir.write("tele.cidrs", "203.0.113.5/32\n");
    dir.write("strict.list", "cloudsave.shadow.test\n");
    let cfg = dir.write(
        "telesink.toml",
        &shadow_config("tele.list", false).replace(
            "lists = [\"tele.list\"]\n",
            // Both client addresses are on one interface, so one device: this test
            // counts per address (device identity off); tests/month.rs counts devices.
            "lists = [\"tele.list\"]\ncidrs = [\"tele.cidrs\"]\n[profiles.strict]\nobserved = true\nlists = [\"strict.list\"]\n[firewall.bypass]\nenabled = true\ndns = true\n[evidence]\nflush_secs = 1\n[identity]\ndevices = false\n",
        ),
    );
    let daemon = Daemon::start(&t, &dir, &cfg);
    let dig_from = |from: &str, name: &str, n: usize| {
        for _ in 0..n {
            t.sh(
                &t.client,
                &format!("dig +short +time=2 +tries=1 -b {from} @192.0.2.1 {name} A >/dev/null"),
            );
        }
    };
    let connect_from = |from: &str, n: usize| {
        for _ in 0..n {
            assert_eq!(
                t.connect(&t.client, Some(from), "203.0.113.5", 8080),
                "refused"
            );
        }
    };
    dig_from(CLIENT_IP, "collector.shadow.test", 3);
    dig_from(CLIENT_IP, "cloudsave.shadow.test", 2);
    connect_from(CLIENT_IP, 4);
    assert_eq!(t.udp(&t.client, Some(CLIENT_IP), WAN_IP, 53), "refused");
    dig_from(CLIENT_IP2, "collector.shadow.test", 1);
    connect_from(CLIENT_IP2, 2);
    let report = |dir: &TempDir| {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &t.gateway,
                bin(),
                "report",
                "--format",
                "json",
                "--since",
                "1d",
                "--config",
            ])
            .arg(dir.path().join("telesink.toml"))
            .arg("--socket")
            .arg(dir.path().join("control.sock"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut rows: Vec<String> = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {} {}",
                    r["client"].as_str().unwrap(),
                    r["layer"].as_str().unwrap(),
                    r["profile"].as_str().unwrap(),
                    r["name"].as_str().unwrap(),
                    r["count"]
                )
            })
            .collect();
        rows.sort();
        rows
    };
    let want = [
        "192.0.2.2 bypass bypass dns 1",
        "192.0.2.2 dns-blocked tele collector.shadow.test 3",
        "192.0.2.2 dns-observed strict cloudsave.shadow.test 2",
        "192.0.2.2 firewall-rejected tele - 4",
        "192.0.2.3 dns-blocked tele collector.shadow.test 1",
        "192.0.2.3 firewall-rejected tele - 2",
    ];
    assert_eq!(report(&dir), want, "{}", daemon.log());
    let (ok, log) = daemon.stop();
    assert!(ok, "{log}");
    // The table stays (on_exit = keep) with its counters: the restart must not count
    // them again, and new attempts add up.
    let daemon = Daemon::start(&t, &dir, &cfg);
    connect_from(CLIENT_IP2, 1);
    dig_from(CLIENT_IP2, "collector.shadow.test", 1);
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want[4] = "192.0.2.3 dns-blocked tele collector.shadow.test 2".into();
    want[5] = "192.0.2.3 firewall-rejected tele - 3".into();
    assert_eq!(report(&dir), want, "{}", daemon.log());
    stop_and_clean(&t, daemon);
}

/// Per-client accounting survives address churn: an address not seen for
/// `accounting_idle_secs` leaves the set and frees its place (here 1 place, 2 s: time
/// compressed), and a full set is said in /health and a metric, never silently. Before,
/// the first `accounting_clients` addresses held the set for good.
#[test]
fn accounting_frees_idle_addresses_and_says_when_it_is_full() {
    if !require_root() || !require("curl") {
        return;
    }
    let (t, dir, cfg) = gateway(
        "fwacct",
        "accounting_clients = 1\naccounting_idle_secs = 2\n",
        "[metrics]\nlisten = \"127.0.0.1:9153\"\n",
    );
    let daemon = Daemon::start(&t, &dir, &cfg);
    let counted = || {
        let out = t.sh(
            &t.gateway,
            &format!(
                "{} firewall counters --json --config {}",
                bin(),
                cfg.display()
            ),
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["counters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["set"].as_str().unwrap().starts_with("acct_"))
            .map(|c| c["client"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let curl = |path: &str| t.sh(&t.gateway, &format!("curl -s http://127.0.0.1:9153{path}"));
    assert_eq!(
        t.connect(&t.client, Some(CLIENT_IP), "203.0.113.5", 8080),
        "refused"
    );
    assert_eq!(counted(), [CLIENT_IP]);
    // The second address is blocked all the same, not counted: the set is full, and
    // that is said.
    assert_eq!(
        t.connect(&t.client, Some(CLIENT_IP2), "203.0.113.5", 8080),
        "refused"
    );
    assert_eq!(counted(), [CLIENT_IP]);
    let metrics = curl("/metrics");
    assert!(
        metrics.contains("telesink_firewall_accounting_sets_full 1"),
        "{metrics}"
    );
    let health = curl("/health");
    assert!(
        health.contains("firewall accounting sets full: acct_legacy_ip_telemetry_4 (1)"),
        "{health}"
    );
    // The first address goes idle and leaves; the second is counted now.
    std::thread::sleep(Duration::from_millis(3000));
    assert!(counted().is_empty(), "{:?}", counted());
    assert_eq!(
        t.connect(&t.client, Some(CLIENT_IP2), "203.0.113.5", 8080),
        "refused"
    );
    assert_eq!(counted(), [CLIENT_IP2]);
    stop_and_clean(&t, daemon);
}
