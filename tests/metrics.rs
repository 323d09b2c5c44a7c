//! The Prometheus endpoint: per-client counts match the queries sent, labels stay
//! bounded, and promtool accepts the exposition.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use hickory_proto::rr::RecordType;

fn start(max_clients: usize) -> Option<(Knot, Telesink, SocketAddr)> {
    if !require("knotd") {
        return None;
    }
    let knot = Knot::start("");
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"{}\"]\n[policy]\nlists_dir = \".\"\n[profiles.p]\nenabled = true\nlists = [\"block.list\"]\n[metrics]\nmax_clients = {max_clients}\n",
        knot.addr
    );
    let dir = TempDir::new("metrics");
    dir.write("block.list", "blocked.test\n");
    let cfg = dir.write("telesink.toml", &config);
    let ts = Telesink::start_with(dir, &cfg, &["--metrics", "127.0.0.1:0"]);
    let log = ts.log_text();
    let addr = log
        .lines()
        .find_map(|l| l.split("metrics listening on ").nth(1)?.trim().parse().ok())
        .expect("metrics address in the log");
    Some((knot, ts, addr))
}

#[test]
fn per_client_blocked_counts_match_what_was_sent() {
    let Some((_k, ts, addr)) = start(1000) else {
        return;
    };
    for _ in 0..3 {
        assert_eq!(
            addrs(&ts.q_from("127.0.0.1", "blocked.test", RecordType::A)),
            ["0.0.0.0"]
        );
    }
    for _ in 0..2 {
        assert_eq!(
            addrs(&ts.q_from("127.0.0.2", "blocked.test", RecordType::AAAA)),
            ["::"]
        );
    }
    assert_eq!(addrs(&ts.q("www.test", RecordType::A)), ["192.0.2.10"]);
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        value(
            &body,
            "telesink_dns_blocked_total{client=\"127.0.0.1\",profile=\"p\"}"
        ),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        value(
            &body,
            "telesink_dns_blocked_total{client=\"127.0.0.2\",profile=\"p\"}"
        ),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        value(&body, "telesink_dns_queries_total{outcome=\"blocked\"}"),
        Some(5.0),
        "{body}"
    );
    assert_eq!(
        value(&body, "telesink_dns_queries_total{outcome=\"forwarded\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(&body, "telesink_policy_generation"),
        Some(1.0),
        "{body}"
    );
    assert!(!body.contains("blocked.test"), "never a domain label");
    let (status, health) = get(addr, "/health");
    assert_eq!((status, health.trim()), (200, "ready"));
    assert_eq!(get(addr, "/nope").0, 404);
    if require("promtool") {
        let mut promtool = std::process::Command::new("promtool");
        promtool.args(["check", "metrics"]);
        let out = with_stdin(promtool, body.as_bytes());
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn clients_beyond_max_clients_are_counted_as_other() {
    let Some((_k, ts, addr)) = start(1) else {
        return;
    };
    ts.q_from("127.0.0.1", "blocked.test", RecordType::A);
    for from in ["127.0.0.2", "127.0.0.3"] {
        ts.q_from(from, "blocked.test", RecordType::A);
    }
    let (_, body) = get(addr, "/metrics");
    assert_eq!(
        value(
            &body,
            "telesink_dns_blocked_total{client=\"127.0.0.1\",profile=\"p\"}"
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(
            &body,
            "telesink_dns_blocked_total{client=\"other\",profile=\"p\"}"
        ),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        value(&body, "telesink_client_label_overflow_total"),
        Some(2.0),
        "{body}"
    );
    assert!(!body.contains("127.0.0.3"), "{body}");
    // Said, not only counted: /health and status name it.
    let (code, health) = get(addr, "/health");
    assert_eq!(code, 503, "{health}");
    assert!(
        health.contains("than [metrics] max_clients (1): some were counted as client=\"other\""),
        "{health}"
    );
    let (ok, status, err) = ts.ctl(&["status"]);
    assert!(ok, "{err}");
    assert!(
        status.contains("2 counts went to client=\"other\""),
        "{status}"
    );
}

#[test]
fn a_real_prometheus_server_scrapes_the_series() {
    let Some((_k, ts, addr)) = start(1000) else {
        return;
    };
    if !require("prometheus") {
        return;
    }
    for _ in 0..4 {
        ts.q_from("127.0.0.2", "blocked.test", RecordType::A);
    }
    let dir = TempDir::new("prom");
    let port = free_port();
    let conf = dir.write(
        "prometheus.yml",
        &format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: telesink\n    static_configs:\n      - targets: ['{addr}']\n"),
    );
    let mut prom = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", conf.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start prometheus");
    let api: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The target shows up after a few seconds: poll, never sleep a fixed time.
    let query = "/api/v1/query?query=telesink_dns_blocked_total%7Bclient%3D%22127.0.0.2%22%7D";
    let mut last = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let found = loop {
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
        let Ok(mut s) = TcpStream::connect(api) else {
            continue;
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = write!(
            s,
            "GET {query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        last.clear();
        let _ = s.read_to_string(&mut last);
        if last.contains("\"profile\":\"p\"") && last.contains("\"4\"") {
            break true;
        }
    };
    let _ = prom.kill();
    let _ = prom.wait();
    assert!(
        found,
        "Prometheus never returned the series; last answer:\n{last}"
    );
}

/// Every answered query is counted by outcome, FORMERR too: one whose body hickory cannot
/// decode is answered by the UDP path itself and used to go uncounted.
#[test]
fn formerr_answers_are_counted_by_outcome() {
    let Some((_knot, ts, addr)) = start(10) else {
        return;
    };
    let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    // A header that claims one question, followed by a label that runs past the end.
    let mut truncated = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    truncated.extend([40, b'a', b'b']);
    // A header with no question at all.
    let empty = vec![0x12, 0x35, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
    for p in [&truncated, &empty, &truncated] {
        let reply = udp_raw(ts.udp, lo, p).expect("an answer");
        assert_eq!(reply[3] & 0x0f, 1, "FORMERR expected");
    }
    let (_, body) = get(addr, "/metrics");
    assert_eq!(
        value(&body, "telesink_dns_queries_total{outcome=\"formerr\"}"),
        Some(3.0),
        "{body}"
    );
}

/// `/health` said ready while every forwarded query failed (the upstream unreachable).
/// It now reports what recent upstream queries say (an answer clears it).
#[test]
fn health_reports_upstreams_that_do_not_answer() {
    let dir = TempDir::new("health");
    dir.write("block.list", "blocked.test\n");
    // Port 9 on loopback: nothing listens, every query fails at once.
    let cfg = dir.write(
        "telesink.toml",
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"127.0.0.1:9\"]\ntimeout_ms = 300\n[policy]\nlists_dir = \".\"\n[profiles.p]\nenabled = true\nlists = [\"block.list\"]\n",
    );
    let ts = Telesink::start_with(dir, &cfg, &["--metrics", "127.0.0.1:0"]);
    let log = ts.log_text();
    let addr: SocketAddr = log
        .lines()
        .find_map(|l| l.split("metrics listening on ").nth(1)?.trim().parse().ok())
        .expect("metrics address in the log");
    let (status, body) = get(addr, "/health");
    assert_eq!((status, body.trim()), (200, "ready"), "before any query");
    for i in 0..4 {
        let _ = ts.q(&format!("n{i}.example"), RecordType::A);
    }
    let (status, body) = get(addr, "/health");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no upstream has answered yet"), "{body}");
}

/// CPU time (user + system) of a process so far, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime
    // the 13th, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

/// When accept() fails (out of descriptors, EMFILE), both HTTP accept loops used to try
/// again at once, forever: a core at 100% while a connection waited. They back off now.
/// The descriptor limit is lowered under the running daemon (`prlimit`), so accept fails
/// while the connection stays queued, as on a gateway that ran out of descriptors.
#[test]
fn accept_loops_back_off_when_accept_fails() {
    if !require("prlimit") {
        return;
    }
    let Some((_knot, ts, addr)) = start(10) else {
        return;
    };
    let pid = ts.pid();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    // The soft limit only: raising it back needs no privilege.
    let limit = |n: usize| {
        let ok = std::process::Command::new("prlimit")
            .args(["--pid", &pid.to_string(), &format!("--nofile={n}:")])
            .status()
            .unwrap()
            .success();
        assert!(ok, "prlimit failed");
    };
    limit(open.saturating_sub(1).max(3));
    let _waiting = TcpStream::connect(addr).unwrap();
    let _control = std::os::unix::net::UnixStream::connect(ts.dir.path().join("control.sock"));
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_secs(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_secs(pid) - before;
    limit(1024);
    assert!(
        used < 0.5,
        "the daemon spun: {used:.2} s of CPU in 2 s while accept failed\n{}",
        ts.log_text()
    );
    assert!(
        ts.wait_log("accept failed", Duration::from_secs(2)),
        "{}",
        ts.log_text()
    );
    // With descriptors back, the endpoint answers again.
    let (status, _) = get(addr, "/health");
    assert_eq!(status, 200);
}

/// 200 idle connections to the metrics port used to keep /health and Prometheus out (4
/// slots, 10 s timeout). Idle connections are now evicted, oldest first, for new ones.
#[test]
fn health_and_scrape_answer_while_200_idle_connections_are_open() {
    let Some((_knot, _ts, addr)) = start(10) else {
        return;
    };
    let idle: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    assert!(idle.len() >= 150, "only {} connections opened", idle.len());
    for _ in 0..5 {
        let (status, body) = get(addr, "/health");
        assert_eq!((status, body.trim()), (200, "ready"));
    }
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("telesink_dns_queries_total"), "{body}");
    drop(idle);
}

/// A reload that inserts a profile and reorders the others moves no per-client count
/// under another profile's label: each series only grows, and promtool's own PromQL
/// engine, fed the scrapes before and after, finds no reset and no false rise.
#[test]
fn a_reload_that_reorders_profiles_moves_no_count() {
    if !require("knotd") || !require("promtool") {
        return;
    }
    let knot = Knot::start("");
    let profile = |name: &str, on: &str| {
        format!("[profiles.{name}]\nenabled = {on}\nlists = [\"{name}.list\"]\n")
    };
    let config = |profiles: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"{}\"]\n[policy]\nlists_dir = \".\"\n{profiles}",
            knot.addr
        )
    };
    let dir = TempDir::new("metrics-reorder");
    for name in ["a", "b", "c"] {
        dir.write(&format!("{name}.list"), &format!("{name}.blocked.test\n"));
    }
    let cfg = dir.write(
        "telesink.toml",
        &config(&(profile("a", "true") + &profile("b", "true"))),
    );
    let ts = Telesink::start_with(dir, &cfg, &["--metrics", "127.0.0.1:0"]);
    let log = ts.log_text();
    let addr: SocketAddr = log
        .lines()
        .find_map(|l| l.split("metrics listening on ").nth(1)?.trim().parse().ok())
        .unwrap();
    let ask = |name: &str, n: usize| {
        for _ in 0..n {
            ts.q_from("127.0.0.2", name, RecordType::A);
        }
    };
    ask("a.blocked.test", 3);
    ask("b.blocked.test", 5);
    let series =
        |p: &str| format!("telesink_dns_blocked_total{{client=\"127.0.0.2\",profile=\"{p}\"}}");
    let (_, before) = get(addr, "/metrics");
    assert_eq!(value(&before, &series("a")), Some(3.0), "{before}");
    assert_eq!(value(&before, &series("b")), Some(5.0), "{before}");
    // c inserted first, b and a swapped.
    std::fs::write(
        &cfg,
        config(&(profile("c", "true") + &profile("b", "true") + &profile("a", "true"))),
    )
    .unwrap();
    let (ok, out, err) = ts.ctl(&["reload"]);
    assert!(ok, "{out}{err}");
    ask("c.blocked.test", 1);
    let (_, after) = get(addr, "/metrics");
    assert_eq!(value(&after, &series("a")), Some(3.0), "{after}");
    assert_eq!(value(&after, &series("b")), Some(5.0), "{after}");
    assert_eq!(value(&after, &series("c")), Some(1.0), "{after}");
    // The two scrapes a minute apart, as Prometheus would store them: no resets, and
    // a and b did not rise.
    let point = |body: &str, p: &str| value(body, &series(p)).unwrap_or(0.0);
    let mut input = String::from(
        "rule_files: []\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n",
    );
    for p in ["a", "b", "c"] {
        input += &format!(
            "      - series: 'telesink_dns_blocked_total{{client=\"127.0.0.2\",profile=\"{p}\"}}'\n        values: '{} {}'\n",
            point(&before, p),
            point(&after, p)
        );
    }
    input += "    promql_expr_test:\n";
    for p in ["a", "b"] {
        input += &format!(
            "      - expr: resets(telesink_dns_blocked_total{{profile=\"{p}\"}}[5m]) + increase(telesink_dns_blocked_total{{profile=\"{p}\"}}[5m])\n        eval_time: 1m\n        exp_samples:\n          - labels: '{{client=\"127.0.0.2\",profile=\"{p}\"}}'\n            value: 0\n"
        );
    }
    let tests = ts.dir.path().join("reorder-test.yml");
    std::fs::write(&tests, &input).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["test", "rules"])
        .arg(&tests)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{input}", output_text(&out));
}
