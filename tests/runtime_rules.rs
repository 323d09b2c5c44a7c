//! `telesink allow NAME` and `telesink block NAME`: runtime rules with the precedence of
//! list rules, per group, timed, kept across a restart, shown in status and explain.
//! (Their firewall half, the learned sets, is in tests/firewall.rs.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;

const CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:0"]
[upstream]
servers = ["UPSTREAM"]
[policy]
lists_dir = "."
allowlists = ["shared.allow"]
[metrics]
listen = "127.0.0.1:METRICS"
[profiles.tele]
enabled = true
lists = ["tele.list"]
[[groups]]
name = "finance"
clients = ["127.0.0.8/32"]
"#;

/// What a name gets from a client: "0.0.0.0" when sinkholed, else the first address.
fn answer(ts: &Telesink, from: &str, name: &str) -> String {
    let m = ts.q_from(from, name, RecordType::A);
    addrs(&m)
        .first()
        .cloned()
        .unwrap_or_else(|| format!("{:?}", m.metadata.response_code))
}

fn start(dir: TempDir, knot: &Knot, metrics: u16) -> Telesink {
    dir.write("tele.list", "*.blocked.example\nexact.example\n");
    dir.write("shared.allow", "*.shared.example\n");
    let cfg = dir.write(
        "telesink.toml",
        &CONFIG
            .replace("UPSTREAM", &knot.addr.to_string())
            .replace("METRICS", &metrics.to_string()),
    );
    Telesink::start_with(dir, &cfg, &[])
}

#[test]
fn runtime_rules_have_list_precedence_groups_timers_and_survive_a_restart() {
    if !require("knotd") {
        return;
    }
    let knot = Knot::start_zones(&[(".", ROOT_WILDCARD)]);
    let metrics = free_port();
    let ts = start(TempDir::new("rules"), &knot, metrics);
    let lo = "127.0.0.1";
    let ok = |args: &[&str]| {
        let (ok, out, err) = ts.ctl(args);
        assert!(ok, "{args:?}: {out}{err}");
        out
    };
    assert_eq!(answer(&ts, lo, "a.blocked.example"), "0.0.0.0");

    // An exact allow beats the list's suffix block; the suffix keeps blocking the rest.
    let out = ok(&["allow", "a.blocked.example"]);
    assert!(
        out.contains("runtime rule: allow a.blocked.example for every group"),
        "{out}"
    );
    assert_eq!(answer(&ts, lo, "a.blocked.example"), "203.0.113.1");
    assert_eq!(answer(&ts, lo, "b.blocked.example"), "0.0.0.0");
    // An exact block beats the global allowlist's suffix allow.
    ok(&["block", "x.shared.example"]);
    assert_eq!(answer(&ts, lo, "x.shared.example"), "0.0.0.0");
    assert_eq!(answer(&ts, lo, "y.shared.example"), "203.0.113.1");
    // A suffix allow does not beat the list's exact block (the more specific rule wins).
    ok(&["allow", "*.example"]);
    assert_eq!(answer(&ts, lo, "exact.example"), "0.0.0.0");
    ok(&["allow", "--remove", "*.example"]);
    // Per group: finance (127.0.0.8) only.
    ok(&["allow", "c.blocked.example", "--group", "finance"]);
    assert_eq!(answer(&ts, "127.0.0.8", "c.blocked.example"), "203.0.113.1");
    assert_eq!(answer(&ts, lo, "c.blocked.example"), "0.0.0.0");
    // Timed: lapses by itself.
    ok(&["block", "timed.example", "--for", "2s"]);
    assert_eq!(answer(&ts, lo, "timed.example"), "0.0.0.0");

    // status and explain say what is in force and why.
    let status = ok(&["status"]);
    assert!(
        status.contains("allow a.blocked.example for every group, until removed"),
        "{status}"
    );
    assert!(
        status.contains("allow c.blocked.example for group finance"),
        "{status}"
    );
    assert!(
        status.contains("block timed.example for every group, lapses in"),
        "{status}"
    );
    let explain = ok(&["explain", "x.shared.example", "--client", lo]);
    assert!(explain.contains("blocked"), "{explain}");
    assert!(explain.contains("profile: runtime"), "{explain}");
    assert!(
        explain.contains("runtime rule (telesink block, every group)"),
        "{explain}"
    );
    let explain = ok(&["explain", "c.blocked.example", "--client", "127.0.0.8"]);
    assert!(
        explain.contains(
            "allow rule: c.blocked.example  at runtime rule (telesink allow, group finance)"
        ),
        "{explain}"
    );
    let (_, body) = get(format!("127.0.0.1:{metrics}").parse().unwrap(), "/metrics");
    assert!(
        value(
            &body,
            "telesink_dns_blocked_total{client=\"127.0.0.1\",profile=\"runtime\"}"
        )
        .is_some_and(|n| n >= 2.0),
        "{body}"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    while answer(&ts, lo, "timed.example") == "0.0.0.0" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        answer(&ts, lo, "timed.example"),
        "203.0.113.1",
        "the timed block lapsed"
    );

    // Bad input: a clear error, nothing changed.
    let (fine, _, err) = ts.ctl(&["block", "not a name"]);
    assert!(!fine);
    assert!(err.contains("not a domain name or *.domain"), "{err}");
    let (fine, _, err) = ts.ctl(&["allow", "--remove", "never.example"]);
    assert!(!fine);
    assert!(err.contains("no runtime rule for never.example"), "{err}");
    let (fine, _, err) = ts.ctl(&["allow", "z.example", "--group", "nope"]);
    assert!(!fine);
    assert!(err.contains("no group named nope"), "{err}");

    // Kept across a restart, like toggles.
    let dir = ts.stop();
    let ts = start(dir, &knot, free_port());
    assert_eq!(answer(&ts, lo, "a.blocked.example"), "203.0.113.1");
    assert_eq!(answer(&ts, "127.0.0.8", "c.blocked.example"), "203.0.113.1");
    assert_eq!(answer(&ts, lo, "c.blocked.example"), "0.0.0.0");
    assert_eq!(answer(&ts, lo, "x.shared.example"), "0.0.0.0");
    // Removed: the list decides again.
    let (fine, out, err) = ts.ctl(&["allow", "--remove", "a.blocked.example"]);
    assert!(fine, "{out}{err}");
    assert!(
        out.contains("removed: runtime rule: allow a.blocked.example"),
        "{out}"
    );
    assert_eq!(answer(&ts, lo, "a.blocked.example"), "0.0.0.0");
}
