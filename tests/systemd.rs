//! systemd integration: the notification protocol for real (a NOTIFY_SOCKET of the test's
//! own), and the unit files checked offline by systemd-analyze.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;

fn next_message(sock: &UnixDatagram, timeout: Duration) -> Option<String> {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    // A signal to the test process may interrupt the read: read again.
    let n = loop {
        match sock.recv(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other.ok()?,
        }
    };
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Waits for a message that starts with `prefix`, skipping watchdog pings.
fn wait_for(sock: &UnixDatagram, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match next_message(sock, Duration::from_secs(10)) {
            Some(m) if m.starts_with(prefix) => return m,
            _ => {}
        }
    }
    panic!("no {prefix} notification");
}

#[test]
fn ready_reloading_watchdog_and_stopping_are_sent_at_the_right_moments() {
    if !require("knotd") {
        return;
    }
    let knot = Knot::start("");
    let dir = TempDir::new("notify");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    dir.write("block.list", "blocked.test\n");
    let cfg = dir.write(
        "telesink.toml",
        &format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"{}\"]\n[policy]\nlists_dir = \".\"\n[profiles.p]\nenabled = true\nlists = [\"block.list\"]\n",
            knot.addr
        ),
    );
    let env = [
        ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "200000"),
    ];
    let ts = Telesink::start_env(dir, &cfg, &[], &env);

    let ready = wait_for(&sock, "READY=1");
    assert!(
        ready.contains("STATUS=policy generation 1: 1 names; profiles on: p; firewall off"),
        "{ready}"
    );
    // Ready means answering, at once.
    assert_eq!(addrs(&ts.q("blocked.test", RecordType::A)), ["0.0.0.0"]);
    assert_eq!(addrs(&ts.q("www.test", RecordType::A)), ["192.0.2.10"]);

    // WATCHDOG_USEC=200ms: a ping every 100 ms, each after a real self-query.
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(1000) {
        if next_message(&sock, Duration::from_millis(300)).as_deref() == Some("WATCHDOG=1") {
            pings += 1;
        }
    }
    assert!(
        (6..=12).contains(&pings),
        "{pings} watchdog pings in 1 s at a 100 ms rate"
    );

    ts.signal("HUP");
    wait_for(&sock, "RELOADING=1");
    let again = wait_for(&sock, "READY=1");
    assert!(again.contains("STATUS=policy generation 2"), "{again}");
    // The two queries above came from one client, one of them blocked (the watchdog's
    // self-queries come from the same loopback address).
    assert!(again.contains("1 clients seen"), "{again}");
    assert!(
        again.contains(" blocked)") && again.contains("(1 blocked)"),
        "{again}"
    );

    ts.signal("TERM");
    wait_for(&sock, "STOPPING=1");
}

#[test]
fn no_watchdog_pings_without_watchdog_usec_and_none_for_another_pid() {
    if !require("knotd") {
        return;
    }
    let dir = TempDir::new("notify2");
    let sock_path = dir.path().join("n.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let cfg = dir.write(
        "telesink.toml",
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"127.0.0.1:9\"]\n",
    );
    let env = [
        ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "100000"),
        ("WATCHDOG_PID", "1"),
    ];
    let _ts = Telesink::start_env(dir, &cfg, &[], &env);
    wait_for(&sock, "READY=1");
    assert_eq!(
        next_message(&sock, Duration::from_millis(500)),
        None,
        "WATCHDOG_PID names another process"
    );
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every unit the package ships.
const UNITS: [&str; 4] = [
    "telesink.service",
    "telesink-early.service",
    "telesink-update-m365.service",
    "telesink-update-m365.timer",
];

/// A scratch root with the units and an executable at the paths they name, because
/// systemd-analyze checks that ExecStart points to a program.
fn scratch_root() -> TempDir {
    let dir = TempDir::new("units");
    for unit in UNITS {
        let text = std::fs::read_to_string(root().join("systemd").join(unit)).unwrap();
        dir.write(&format!("etc/systemd/system/{unit}"), &text);
    }
    dir.write("usr/bin/.keep", "");
    std::fs::copy(bin(), dir.path().join("usr/bin/telesink")).unwrap();
    // What the units depend on (targets, /bin/kill) comes from the host, copied in: the
    // host's own /usr/bin and unit folders are never written to.
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mkdir -p {r}/lib/systemd {r}/bin && cp -r /lib/systemd/system {r}/lib/systemd/ && cp /bin/kill {r}/bin/kill",
            r = dir.path().display()
        ))
        .status()
        .unwrap()
        .success();
    assert!(ok, "could not populate the scratch root");
    dir
}

#[test]
fn units_verify_without_a_word() {
    if !require("systemd-analyze") {
        return;
    }
    let dir = scratch_root();
    for unit in UNITS {
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(format!("--root={}", dir.path().display()))
            .arg(dir.path().join("etc/systemd/system").join(unit))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // systemd-analyze verify exits 0 even on unknown keys: any output is a finding.
        assert!(
            out.status.success() && text.trim().is_empty(),
            "{unit}:\n{text}"
        );
    }
}

#[test]
fn units_are_sandboxed_to_an_exposure_of_at_most_two() {
    if !require("systemd-analyze") {
        return;
    }
    let dir = scratch_root();
    for unit in UNITS.iter().filter(|u| u.ends_with(".service")) {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
            .arg(format!("--root={}", dir.path().display()))
            .arg(dir.path().join("etc/systemd/system").join(unit))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| {
                l.split("Overall exposure level for ")
                    .nth(1)?
                    .split(": ")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| {
                panic!(
                    "no score for {unit}:\n{text}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        assert!(score <= 2.0, "{unit}: exposure {score} > 2.0\n{text}");
    }
}

/// Debian's nftables.service runs `flush ruleset` at boot; the early firewall must come
/// after it or the fail-closed table is gone before the daemon starts.
#[test]
fn the_early_firewall_is_ordered_after_nftables_service() {
    let text = std::fs::read_to_string(root().join("systemd/telesink-early.service")).unwrap();
    let after: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("After="))
        .flat_map(str::split_whitespace)
        .collect();
    assert!(after.contains(&"nftables.service"), "After= is {after:?}");
    let before: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Before="))
        .flat_map(str::split_whitespace)
        .collect();
    assert!(
        before.contains(&"network-pre.target") && before.contains(&"telesink.service"),
        "Before= is {before:?}"
    );
}
