//! The control plane against the real daemon (release build) with a 1,000,000-name list:
//! - start-up: time from exec until the first blocked answer, and the daemon's RSS;
//! - toggle: from sending `profile disable` over the socket until a query sees the new
//!   answer (end to end), and the daemon's own figure for the change;
//! - scrape: GET /metrics with 1000 clients x 8 profiles of blocked counts.
//!
//! Run: `cargo bench --bench control` (without --bench, a 2,000-name smoke run).

#[path = "common/workload.rs"]
mod workload;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROFILES: usize = 8;
const CLIENTS: usize = 1000;

/// A query for `name` A; returns (rcode, answer count).
fn ask(server: SocketAddr, from: [u8; 4], name: &str) -> (u8, u16) {
    let sock = UdpSocket::bind((std::net::Ipv4Addr::from(from), 0)).expect("bind client address");
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    sock.send_to(&q, server).unwrap();
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf).expect("an answer");
    assert!(n >= 12);
    (buf[3] & 0x0f, u16::from_be_bytes([buf[6], buf[7]]))
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn stats(v: &mut [f64]) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "median {:.2} [min {:.2}, max {:.2}] (n={})",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1],
        v.len()
    )
}

/// Kills the daemon when the benchmark ends, also on a panic.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 1_000_000 } else { 2_000 };
    // Even: the last round enables the profile again.
    let rounds = if full { 20 } else { 4 };
    let clients = if full { CLIENTS } else { 50 };
    let dir = std::env::temp_dir().join(format!("telesink-bench-ctl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let names = workload::write_list(&dir.join("big.list"), n, 0x5eed_1234_abcd_9876);
    let big = names.iter().find(|(_, suffix)| !suffix).unwrap().0.clone();
    let mut config = String::from(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nresolv_conf = \"/nonexistent\"\n[policy]\nlists_dir = \".\"\nallowed_clients = [\"127.0.0.0/8\"]\n[metrics]\nmax_clients = 1000\n[profiles.big]\nenabled = true\nlists = [\"big.list\"]\n",
    );
    for p in 1..PROFILES {
        std::fs::write(dir.join(format!("p{p}.list")), format!("p{p}.bench.test\n")).unwrap();
        config += &format!("[profiles.p{p}]\nenabled = true\nlists = [\"p{p}.list\"]\n");
    }
    std::fs::write(dir.join("t.toml"), config).unwrap();

    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_telesink"))
        .args(["run", "--config"])
        .arg(dir.join("t.toml"))
        .args(["--metrics", "127.0.0.1:0"])
        .env("RUNTIME_DIRECTORY", &dir)
        .env("STATE_DIRECTORY", &dir)
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start telesink");
    let stderr = child.stderr.take().unwrap();
    let child = Daemon(child);
    // Keep draining the daemon's log after "ready": a closed pipe would fail its writes.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut udp, mut metrics) = (None, None);
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        if let Some(a) = line.split("listening on udp ").nth(1) {
            udp = a.trim().parse::<SocketAddr>().ok();
        }
        if let Some(a) = line.split("metrics listening on ").nth(1) {
            metrics = a.trim().parse::<SocketAddr>().ok();
        }
        if line.ends_with("ready") {
            break;
        }
    }
    let (udp, metrics) = (udp.expect("udp port"), metrics.expect("metrics port"));
    let (rcode, answers) = ask(udp, [127, 0, 0, 1], &big);
    assert_eq!(
        (rcode, answers),
        (0, 1),
        "the first list name must be blocked"
    );
    let first_answer = started.elapsed();
    let rss = rss_mib(child.0.id());

    // Toggle: the time until a client sees it. Not blocked and no upstream = SERVFAIL.
    let socket = dir.join("control.sock");
    let (mut live, mut reported) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let (enable, want) = if i % 2 == 0 { (false, 2) } else { (true, 0) };
        let t = Instant::now();
        let body = serde_json::json!({ "enabled": enable });
        let report =
            telesink::control::client::request(&socket, "POST", "/v1/profiles/big", Some(&body))
                .expect("toggle");
        while ask(udp, [127, 0, 0, 1], &big).0 != want {}
        live.push(t.elapsed().as_secs_f64() * 1e3);
        reported.push(report["ms"].as_f64().unwrap_or(0.0));
    }

    // Scrape: one blocked query per client and profile, then time the scrapes.
    for c in 0..clients {
        let from = [127, 1, (c / 250) as u8, (c % 250) as u8 + 1];
        ask(udp, from, &big);
        for p in 1..PROFILES {
            ask(udp, from, &format!("p{p}.bench.test"));
        }
    }
    let mut scrape = Vec::new();
    let mut series = 0;
    for _ in 0..20 {
        let t = Instant::now();
        let text = http_get(metrics, "/metrics");
        scrape.push(t.elapsed().as_secs_f64() * 1e3);
        series = text
            .lines()
            .filter(|l| l.starts_with("telesink_dns_blocked_total{"))
            .count();
    }
    assert!(series >= clients * PROFILES, "only {series} series");

    println!("names in list                  {n}");
    println!(
        "start until first answer       {:.0} ms",
        first_answer.as_secs_f64() * 1e3
    );
    println!("daemon RSS after load          {rss:.1} MiB");
    println!("toggle live (end to end) ms    {}", stats(&mut live));
    println!("toggle (daemon's figure) ms    {}", stats(&mut reported));
    println!(
        "scrape {clients} clients x {PROFILES} profiles ({series} series) ms  {}",
        stats(&mut scrape)
    );
    drop(child);
    let _ = std::fs::remove_dir_all(dir);
}
