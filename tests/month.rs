//! A month on a real LAN, in minutes: per-device counts stay true and nothing grows
//! without bound (docs/METRICS.md, "What a client label is").
//!
//! Two throwaway namespaces: a gateway running the real binary (firewall on, real knotd
//! as its upstream) and a LAN of 220 devices, each a macvlan with a MAC of its own on one
//! veth. Each simulated day every active device gets a new IPv6 temporary address (RFC
//! 8981), asks for random names under blocked suffixes from its IPv4 address and two
//! IPv6 ones, and tries a blocked address (rejected by the firewall). Every 7 days DHCP
//! renumbers IPv4 (the dnsmasq lease file is rewritten); on day 15 a reload reorders the
//! profiles; 20 devices leave on day 10 and 20 new ones come on day 16, so 220 devices
//! pass through a bound of 205 labels. Days pass by the test clock (debug builds only:
//! `TELESINK_TEST_CLOCK`, src/clock.rs), which the ledger's days, device expiry and the
//! label bound all read.
//!
//! Asserted: every device's blocked and rejected counts exact in /metrics and in
//! `report --format json`, under its name (a `[[devices]]` name, a lease's host name, or
//! its MAC); no client="other"; the tables bounded; the ledger verifies. The figures are
//! printed (`cargo test --test month -- --nocapture`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::netns::require_root;
use common::{TempDir, bin};

const DEVICES: usize = 220;
/// Devices 180..200 leave after day 9; 200..220 come on day 16.
const LEAVE: std::ops::Range<usize> = 180..200;
const LATE: std::ops::Range<usize> = 200..220;
const DAYS: u64 = 30;
const MAX_LABELS: usize = 205;
/// Five days: the leavers are forgotten before the late devices come.
const FORGET_AFTER: u64 = 5 * 86_400;

fn active(i: usize, day: u64) -> bool {
    if LEAVE.contains(&i) {
        day <= 9
    } else if LATE.contains(&i) {
        day >= 16
    } else {
        true
    }
}

fn mac(i: usize) -> String {
    format!("02:00:5e:10:{:02x}:{:02x}", i / 256, i % 256)
}

/// DHCP's IPv4 address of device `i` in week `week`: a new permutation each week.
fn ipv4(i: usize, week: u64) -> String {
    format!("192.0.2.{}", 2 + (i + 37 * week as usize) % 240)
}

fn temp_v6(i: usize, day: u64) -> String {
    format!("2001:db8:1::{:x}:{:x}", 0x100 + day, i + 1)
}

/// The label a device must have: device 0 by `[[devices]]`, the first 200 by their
/// lease's host name, the late ones (no host name in their lease) by their MAC.
fn label(i: usize) -> String {
    match i {
        0 => "reception-pc".to_owned(),
        i if i < 200 => format!("dev-{i:03}"),
        i => mac(i),
    }
}

struct Lan {
    client: String,
    gateway: String,
    children: Vec<Child>,
}

impl Lan {
    /// A shell command in a namespace, stopping at the first failing command.
    fn sh(&self, ns: &str, script: &str) -> String {
        common::netns::sh(ns, &format!("set -e; {script}"))
    }

    /// Runs `ip -batch` in a namespace.
    fn batch(&self, ns: &str, lines: &[String]) {
        if lines.is_empty() {
            return;
        }
        let mut ip = Command::new("ip");
        ip.args(["-n", ns, "-batch", "-"]);
        let out = common::with_stdin(ip, lines.join("\n").as_bytes());
        assert!(
            out.status.success(),
            "ip -batch in {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn new() -> Lan {
        let tag = format!("tsm{}", std::process::id());
        let lan = Lan {
            client: format!("{tag}c"),
            gateway: format!("{tag}g"),
            children: Vec::new(),
        };
        for ns in [&lan.client, &lan.gateway] {
            let ok = Command::new("ip")
                .args(["netns", "add", ns])
                .status()
                .unwrap();
            assert!(ok.success());
            lan.sh(ns, "ip link set lo up; echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad; echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad");
        }
        lan.batch(
            &lan.gateway,
            &[format!(
                "link add lan0 type veth peer name c0 netns {}",
                lan.client
            )],
        );
        // The gateway: the LAN, and the blocked destinations on a veth pair of its own so
        // they are forwarded (and rejected) rather than unroutable.
        lan.sh(&lan.gateway, "ip addr add 192.0.2.1/24 dev lan0; ip addr add 2001:db8:1::1/64 dev lan0 nodad; ip link set lan0 up; ip link add wan0 type veth peer name wan1; ip addr add 203.0.113.254/24 dev wan0; ip link set wan0 up; ip link set wan1 up; sysctl -qw net.ipv4.ip_forward=1; sysctl -qw net.ipv6.conf.all.forwarding=1");
        // The LAN: each device a macvlan with its own MAC. ARP answered only by the
        // interface that has the address, and sent from it, as separate machines would.
        lan.sh(&lan.client, "ip link set c0 up; sysctl -qw net.ipv4.conf.all.arp_ignore=1; sysctl -qw net.ipv4.conf.all.arp_announce=2; sysctl -qw net.ipv4.conf.default.arp_ignore=1; sysctl -qw net.ipv4.conf.default.arp_announce=2");
        let links: Vec<String> = (0..DEVICES)
            .flat_map(|i| {
                [
                    format!(
                        "link add mv{i} link c0 address {} type macvlan mode bridge",
                        mac(i)
                    ),
                    format!("link set mv{i} up"),
                ]
            })
            .collect();
        lan.batch(&lan.client, &links);
        lan
    }

    /// Gives each device active on `day` its IPv4 address of `week` (and its route
    /// out), taking last week's away.
    fn number(&self, week: u64, day: u64) {
        let mut lines = Vec::new();
        for i in (0..DEVICES).filter(|&i| active(i, day)) {
            if week > 0 && active(i, day - 1) {
                lines.push(format!("addr del {}/24 dev mv{i}", ipv4(i, week - 1)));
            }
            lines.push(format!("addr add {}/24 dev mv{i}", ipv4(i, week)));
            lines.push(format!(
                "route replace default via 192.0.2.1 dev mv{i} metric {}",
                100 + i
            ));
        }
        self.batch(&self.client, &lines);
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.client, &self.gateway] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// One day of a LAN's traffic, from the client namespace: DNS over UDP and TCP connects,
/// each from its device's interface and address. Prints what came back as JSON.
const CLIENT: &str = r#"
import json, random, socket, struct, sys
plan = json.load(sys.stdin)
out = {"answered": 0, "unanswered": [], "refused": 0, "not_refused": []}
def query(name, qid):
    b = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        b += bytes([len(label)]) + label.encode()
    return b + b"\x00" + struct.pack(">HH", 1, 1)
for kind, dev, src, dst, arg in plan:
    fam = socket.AF_INET6 if ":" in src else socket.AF_INET
    if kind == "dns":
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, 25, dev.encode())
        s.bind((src, 0))
        s.settimeout(3)
        qid = random.randrange(65536)
        got = False
        for attempt in range(2):
            s.sendto(query(arg, qid), (dst, 53))
            try:
                while True:
                    d = s.recv(4096)
                    if d[:2] == struct.pack(">H", qid):
                        # Every name here gets NOERROR: a sinkhole or knotd's answer.
                        got = (d[3] & 15) == 0
                        break
            except socket.timeout:
                pass
            if got:
                break
        if got:
            out["answered"] += 1
        else:
            out["unanswered"].append([dev, src, arg])
        s.close()
    else:
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, 25, dev.encode())
        s.bind((src, 0))
        s.settimeout(3)
        try:
            s.connect((dst, int(arg)))
            out["not_refused"].append([dev, src, "connected"])
        except ConnectionRefusedError:
            out["refused"] += 1
        except OSError as e:
            out["not_refused"].append([dev, src, str(e)])
        s.close()
print(json.dumps(out))
"#;

fn config(dir: &Path, profiles_reversed: bool) -> String {
    let alpha = "[profiles.alpha]\nenabled = true\nshadow = true\nlists = [\"alpha.list\"]\n";
    let beta = "[profiles.beta]\nenabled = true\nlists = [\"beta.list\"]\n";
    let legacy = "[profiles.legacy]\nenabled = true\ncidrs = [\"legacy.cidrs\"]\n";
    let profiles = if profiles_reversed {
        [legacy, beta, alpha].concat()
    } else {
        [alpha, beta, legacy].concat()
    };
    format!(
        r#"[server]
listen = ["192.0.2.1:53", "[2001:db8:1::1]:53", "127.0.0.1:53"]
[upstream]
servers = ["127.0.0.1:5300"]
[policy]
lists_dir = "."
allowed_clients = ["192.0.2.0/24", "2001:db8:1::/64", "127.0.0.0/8"]
[firewall]
enabled = true
lan = ["lan0"]
accounting_idle_secs = 5
[metrics]
listen = "127.0.0.1:9153"
max_clients = {MAX_LABELS}
[identity]
forget_after_secs = {FORGET_AFTER}
lease_files = ["{leases}"]
[evidence]
flush_secs = 1
[[devices]]
name = "reception-pc"
macs = ["{mac0}"]
{profiles}"#,
        leases = dir.join("dnsmasq.leases").display(),
        mac0 = mac(0),
    )
}

/// dnsmasq's lease file for `week`: every active device with its address; the first
/// 200 with a host name.
fn leases(week: u64, day: u64) -> String {
    let mut out = String::new();
    for i in (0..DEVICES).filter(|&i| active(i, day)) {
        let name = if i < 200 {
            format!("dev-{i:03}")
        } else {
            "*".to_owned()
        };
        out += &format!("0 {} {} {name} *\n", mac(i), ipv4(i, week));
    }
    out
}

/// Runs a plan of queries and connections from the client namespace; every query must
/// get NOERROR and every connection a reject, else the failure is shown with the
/// gateway's neighbour entry for the address and the daemon's last lines.
fn run(lan: &Lan, plan: &[serde_json::Value], when: &str, log: &Path) {
    let mut python = Command::new("ip");
    python.args(["netns", "exec", &lan.client, "python3", "-c", CLIENT]);
    let plan = serde_json::to_string(plan).unwrap();
    let out = common::with_stdin(python, plan.as_bytes());
    let result: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{when}: {e}: {}", common::output_text(&out)));
    for (what, key) in [
        ("queries without an answer", "unanswered"),
        (
            "connections to a blocked address not rejected",
            "not_refused",
        ),
    ] {
        let failed = result[key].as_array().map_or(0, Vec::len);
        if failed > 0 {
            let src = result[key][0][1].as_str().unwrap_or("");
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            panic!(
                "{when}: {failed} {what}, the first: {}\ngateway's neighbour entry: {}\nlog: {}",
                result[key][0],
                lan.sh(&lan.gateway, &format!("ip neigh show to {src}")),
                tail.join("\n")
            );
        }
    }
}

fn scrape(lan: &Lan) -> String {
    lan.sh(
        &lan.gateway,
        "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9153/metrics').read().decode())\"",
    )
}

/// Waits until the ledger has flushed twice since now and holds nothing pending.
fn ledger_caught_up(lan: &Lan) {
    let read = |body: &str, series: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    let flushes = |body: &str| read(body, "telesink_evidence_flushes_total{result=\"ok\"}");
    let first = flushes(&scrape(lan));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let body = scrape(lan);
        if flushes(&body) >= first + 2.0 && read(&body, "telesink_evidence_pending_rows") == 0.0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the ledger did not catch up in 15 s:\n{body}"
        );
    }
}

/// Sums of a metric's samples by client label.
fn by_client(body: &str, metric: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in body
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
    {
        let client = line
            .split("client=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_owned();
        let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        *out.entry(client).or_default() += v as u64;
    }
    out
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn wait_log(log: &Path, needle: &str) {
    for _ in 0..400 {
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(needle)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "no {needle:?} in the log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn status(dir: &Path) -> serde_json::Value {
    let out = Command::new(bin())
        .args(["status", "--json", "--socket"])
        .arg(dir.join("control.sock"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::output_text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_month_on_a_lan_counts_devices_exactly_and_stays_bounded() {
    if !require_root() || !common::require("knotd") {
        return;
    }
    let mut lan = Lan::new();
    let dir = TempDir::new("month");
    dir.write("alpha.list", "*.alpha.test\n");
    dir.write("beta.list", "*.beta.test\n");
    dir.write("legacy.cidrs", "203.0.113.4/30\n");
    dir.write("dnsmasq.leases", &leases(0, 0));
    let clock = dir.write("clock", "0");
    let cfg = dir.write("telesink.toml", &config(dir.path(), false));
    // knotd in the gateway namespace: every forwarded name resolves (shadow resolution
    // resolves the blocked ones too).
    let zone = dir.write("root.zone", common::ROOT_WILDCARD);
    let knot_conf = dir.write(
        "knot.conf",
        &format!(
            "server:\n    listen: 127.0.0.1@5300\n    rundir: {d}\ndatabase:\n    storage: {d}/knotdb\nlog:\n  - target: stderr\n    any: warning\nzone:\n  - domain: \".\"\n    file: {}\n",
            zone.display(),
            d = dir.path().display()
        ),
    );
    let knot = Command::new("ip")
        .args(["netns", "exec", &lan.gateway, "knotd", "-c"])
        .arg(&knot_conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    lan.children.push(knot);
    lan.number(0, 0);

    let log = dir.path().join("log");
    let daemon = Command::new("ip")
        .args(["netns", "exec", &lan.gateway, bin(), "run", "--config"])
        .arg(&cfg)
        .env("NO_COLOR", "1")
        .env("RUNTIME_DIRECTORY", dir.path())
        .env("STATE_DIRECTORY", dir.path())
        .env("TELESINK_TEST_CLOCK", &clock)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = daemon.id();
    lan.children.push(daemon);
    wait_log(&log, "ready");
    let started = telesink::clock::unix_now();

    let mut expect_dns: BTreeMap<String, u64> = BTreeMap::new();
    let mut expect_fw: BTreeMap<String, u64> = BTreeMap::new();
    let mut addresses_used = 0usize;
    let mut rss = Vec::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for day in 0..DAYS {
        let week = day / 7;
        if day > 0 {
            // The day turns: the ledger's day, device expiry and the label bound see it.
            std::fs::write(&clock, (day * 86_400).to_string()).unwrap();
            wait_log(&log, &format!("time moved {} s ahead", day * 86_400));
        }
        if day > 0 && day % 7 == 0 {
            // DHCP renumbers: new addresses, a new lease file. Clients announce a new
            // address (gratuitous ARP, RFC 5227); the test flushes the gateway's IPv4
            // neighbour entries instead, which the kernel then learns anew.
            lan.number(week, day);
            std::fs::write(dir.path().join("dnsmasq.leases"), leases(week, day)).unwrap();
            lan.sh(&lan.gateway, "ip -4 neigh flush dev lan0");
        }
        if day == 10 {
            let gone: Vec<String> = LEAVE
                .flat_map(|i| {
                    [
                        format!("addr flush dev mv{i}"),
                        format!("link set mv{i} down"),
                    ]
                })
                .collect();
            lan.batch(&lan.client, &gone);
        }
        if day == 16 {
            // The late devices join, with leases but no host names.
            let mut lines = Vec::new();
            for i in LATE {
                lines.push(format!("addr add {}/24 dev mv{i}", ipv4(i, week)));
                lines.push(format!(
                    "route replace default via 192.0.2.1 dev mv{i} metric {}",
                    100 + i
                ));
            }
            lan.batch(&lan.client, &lines);
            std::fs::write(dir.path().join("dnsmasq.leases"), leases(week, day)).unwrap();
        }
        if day == 15 {
            // A reload that reorders the profiles: no count may move.
            std::fs::write(&cfg, config(dir.path(), true)).unwrap();
            let out = Command::new(bin())
                .args(["reload", "--socket"])
                .arg(dir.path().join("control.sock"))
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", common::output_text(&out));
        }
        // A new temporary address per device per day; yesterday's goes. The gateway's
        // kernel forgets a departed address's neighbour entry after gc_stale_time (60 s)
        // and refuses new entries past gc_thresh3 (1,024, for the whole host: sends then
        // fail with EINVAL, docs/METRICS.md); a day here lasts seconds, so the test
        // flushes the gateway's IPv6 entries each morning. telesink keeps what it
        // learned (its own table, by recency).
        let mut lines = Vec::new();
        for i in (0..DEVICES).filter(|&i| active(i, day)) {
            lines.push(format!("addr add {}/64 dev mv{i} nodad", temp_v6(i, day)));
            addresses_used += 1;
            if day >= 1 && active(i, day - 1) {
                lines.push(format!("addr del {}/64 dev mv{i}", temp_v6(i, day - 1)));
            }
        }
        lan.batch(&lan.client, &lines);
        lan.sh(&lan.gateway, "ip -6 neigh flush dev lan0");

        let mut plan = Vec::new();
        for i in (0..DEVICES).filter(|&i| active(i, day)) {
            let dev = format!("mv{i}");
            let v4 = ipv4(i, week);
            let v6 = temp_v6(i, day);
            let r = next();
            for (src, dst, suffix) in [
                (&v4, "192.0.2.1", "alpha"),
                (&v6, "2001:db8:1::1", "beta"),
                (&v6, "2001:db8:1::1", "alpha"),
            ] {
                let name = format!("t{:x}.{suffix}.test", (r ^ next()) % 1_000_000);
                plan.push(serde_json::json!(["dns", dev, src, dst, name]));
            }
            plan.push(serde_json::json!(["tcp", dev, v4, "203.0.113.5", "443"]));
            // An allowed name now and then: forwarded to knotd, counted nowhere here.
            if r % 10 == 0 {
                plan.push(serde_json::json!([
                    "dns",
                    dev,
                    v4,
                    "192.0.2.1",
                    "intranet.example"
                ]));
            }
            *expect_dns.entry(label(i)).or_default() += 3;
            *expect_fw.entry(label(i)).or_default() += 1;
        }
        run(&lan, &plan, &format!("day {day}"), &log);
        // The day's counts reach the tally (the scrape sweeps) and the ledger before the
        // next day renumbers anything: two flushes after the day's traffic (the first may
        // hold a new address's rows for one round, src/devices/hold.rs; both read the
        // firewall's counters) and nothing pending. Waited for, not slept: a fixed 1.5 s
        // held on one build and not on another (tokio's timer, 2026-12-07).
        let body = scrape(&lan);
        ledger_caught_up(&lan);
        if day == 3 || day == DAYS - 1 {
            rss.push((day, rss_kib(pid)));
        }
        if day == 20 {
            // Mid-month: the late devices have labels of their own, nothing is "other".
            let blocked = by_client(&body, "telesink_dns_blocked_total");
            assert!(blocked.contains_key(&label(LATE.start)), "{body}");
            assert!(!blocked.contains_key("other"), "{body}");
        }
    }

    // `tail` and `explain` name the device too. A watcher first (collection is on only
    // while someone polls), then one more blocked query from dev-001's IPv4 address.
    let sock = dir.path().join("control.sock");
    let watcher = Command::new(bin())
        .args(["tail", "--count", "1", "--json", "--socket"])
        .arg(&sock)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let v4 = ipv4(1, (DAYS - 1) / 7);
    run(
        &lan,
        &[serde_json::json!([
            "dns",
            "mv1",
            v4,
            "192.0.2.1",
            "last.alpha.test"
        ])],
        "the tail query",
        &log,
    );
    *expect_dns.entry(label(1)).or_default() += 1;
    let seen = watcher.wait_with_output().unwrap();
    let event: serde_json::Value = serde_json::from_slice(&seen.stdout)
        .unwrap_or_else(|e| panic!("tail: {e}: {}", common::output_text(&seen)));
    assert_eq!(event["device"], "dev-001", "{event}");
    assert_eq!(event["client_kind"], "device", "{event}");
    assert_eq!(event["client"], v4.as_str(), "{event}");
    let out = Command::new(bin())
        .args(["explain", "x.alpha.test", "--client", &v4, "--config"])
        .arg(&cfg)
        .arg("--socket")
        .arg(&sock)
        .output()
        .unwrap();
    let text = common::output_text(&out);
    assert!(text.contains("counted as: dev-001 (device)"), "{text}");
    std::thread::sleep(Duration::from_millis(1500));

    // /metrics: every device's counts exact, under its name, nothing "other".
    let body = scrape(&lan);
    let dns = by_client(&body, "telesink_dns_blocked_total");
    let fw = by_client(&body, "telesink_firewall_rejects_total");
    // The devices that left on day 10 were forgotten after forget_after_secs: their
    // series ended (the ledger keeps what they did, below).
    let gone: Vec<String> = LEAVE.map(label).collect();
    let present = |m: &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
        m.iter()
            .filter(|(k, _)| !gone.contains(k))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    let diff = |got: &BTreeMap<String, u64>, want: &BTreeMap<String, u64>| -> Vec<String> {
        let keys: std::collections::BTreeSet<&String> = got.keys().chain(want.keys()).collect();
        keys.into_iter()
            .filter(|k| got.get(*k) != want.get(*k))
            .map(|k| format!("{k}: {:?} (want {:?})", got.get(k), want.get(k)))
            .collect()
    };
    assert_eq!(
        diff(&dns, &present(&expect_dns)),
        Vec::<String>::new(),
        "DNS blocked per device in /metrics"
    );
    assert_eq!(
        diff(&fw, &present(&expect_fw)),
        Vec::<String>::new(),
        "firewall rejects per device in /metrics"
    );
    assert_eq!(
        common::value(&body, "telesink_client_label_overflow_total"),
        Some(0.0),
        "{body}"
    );
    assert!(
        body.contains("telesink_client_info{client=\"dev-001\",kind=\"device\"} 1"),
        "{body}"
    );
    // Per profile, across the reorder: alpha got 2 per device-day, beta 1, legacy the
    // rejects.
    let alpha: u64 = body
        .lines()
        .filter(|l| l.starts_with("telesink_dns_blocked_total{") && l.contains("profile=\"alpha\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum();
    // (Less the one query for the tail, an alpha name.)
    let all = present(&expect_dns).values().sum::<u64>();
    assert_eq!((alpha - 1) * 3, (all - 1) * 2);

    // The ledger: the same counts per device, and it verifies.
    let today = telesink::clock::utc_date(started);
    let until = telesink::clock::utc_date(started + (DAYS + 2) * 86_400);
    let out = Command::new(bin())
        .args([
            "report", "--format", "json", "--since", &today, "--until", &until,
        ])
        .arg("--config")
        .arg(&cfg)
        .arg("--socket")
        .arg(dir.path().join("control.sock"))
        .env("STATE_DIRECTORY", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::output_text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut ledger_dns: BTreeMap<String, u64> = BTreeMap::new();
    let mut ledger_fw: BTreeMap<String, u64> = BTreeMap::new();
    let mut days = std::collections::BTreeSet::new();
    for r in report["rows"].as_array().unwrap() {
        let client = r["client"].as_str().unwrap().to_owned();
        let n = r["count"].as_u64().unwrap();
        days.insert(r["day"].as_str().unwrap().to_owned());
        match r["layer"].as_str().unwrap() {
            "dns-blocked" => *ledger_dns.entry(client).or_default() += n,
            "firewall-rejected" => *ledger_fw.entry(client).or_default() += n,
            _ => {}
        }
    }
    assert_eq!(
        diff(&ledger_dns, &expect_dns),
        Vec::<String>::new(),
        "DNS blocked per device in the ledger"
    );
    assert_eq!(
        diff(&ledger_fw, &expect_fw),
        Vec::<String>::new(),
        "firewall rejects per device in the ledger"
    );
    assert!(days.len() >= DAYS as usize, "ledger days: {days:?}");
    let verify = Command::new(bin())
        .args(["report", "verify", "--config"])
        .arg(&cfg)
        .env("STATE_DIRECTORY", dir.path())
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", common::output_text(&verify));

    // Bounded: labels within the bound though 220 devices passed; addresses within what
    // forget_after keeps (each active device: IPv4, a few temporary IPv6, link-local).
    let st = status(dir.path());
    let d = &st["devices"];
    let n = |k: &str| d[k].as_u64().unwrap();
    assert!(n("labels") <= MAX_LABELS as u64, "{d}");
    assert_eq!(n("other_counts"), 0, "{d}");
    assert!(n("addresses") <= 200 * 12, "{d}");
    assert_eq!(n("leased_addresses"), 200, "{d}");
    let tracked = st["shadow"]["names_tracked"].as_u64().unwrap_or(0);
    let (rss_early, rss_late) = (rss[0].1, rss[1].1);
    println!(
        "month: {DEVICES} devices ({} at most at once), {addresses_used} temporary IPv6 addresses and 5 IPv4 numberings over {DAYS} days; \
         tables at the end: {} addresses, {} devices, {} labels (bound {MAX_LABELS}), {} leased; shadow names tracked {tracked}; \
         RSS day 3 {rss_early} KiB, day {} {rss_late} KiB; ledger days {}",
        200,
        n("addresses"),
        n("devices"),
        n("labels"),
        n("leased_addresses"),
        DAYS - 1,
        days.len(),
    );
    // Memory: a month's growth of the tables is small against the process.
    assert!(
        rss_late < rss_early + 64 * 1024,
        "RSS grew from {rss_early} to {rss_late} KiB"
    );
}
