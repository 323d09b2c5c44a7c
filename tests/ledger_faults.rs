//! The evidence ledger on an unlucky disk, with the real binary: a file made read-only
//! (`chattr +i`) while the daemon runs and across a stop, and a file that is garbage at
//! start. Nothing counted is lost in silence: flushes recover once the file is writable,
//! /health says why while they fail, a stop that cannot write leaves a recovery file the
//! next start writes in, and a ledger started anew is a metric, a /health reason, a line
//! in `report` and a break that `report verify` names.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;

fn config(knot: &Knot, metrics: u16) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"{}\"]\n[policy]\nlists_dir = \".\"\n[profiles.tele]\nenabled = true\nlists = [\"tele.list\"]\n[evidence]\nflush_secs = 1\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n",
        knot.addr
    )
}

/// A daemon blocking *.blocked.test, flushing every second, with /metrics and /health.
fn start(knot: &Knot) -> (Telesink, std::net::SocketAddr) {
    let port = free_port();
    let ts = Telesink::start(&config(knot, port), &[("tele.list", "*.blocked.test\n")]);
    (ts, format!("127.0.0.1:{port}").parse().unwrap())
}

fn ask(ts: &Telesink, name: &str, times: usize) {
    for _ in 0..times {
        assert_eq!(
            addrs(&ts.q_from("127.0.0.2", name, RecordType::A)),
            ["0.0.0.0"]
        );
    }
}

/// Attempts of 127.0.0.2 at `name` in `telesink report` (through the daemon if it runs).
fn count(dir: &Path, name: &str) -> u64 {
    let out = Command::new(bin())
        .args(["report", "--format", "json", "--since", "1d", "--config"])
        .arg(dir.join("telesink.toml"))
        .arg("--socket")
        .arg(dir.join("control.sock"))
        .env("STATE_DIRECTORY", dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"] == name)
        .map(|r| r["count"].as_u64().unwrap())
        .sum()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_ledger_that_was_read_only_recovers_and_a_stop_loses_nothing() {
    if !require("knotd") || !require("chattr") {
        return;
    }
    let knot = Knot::start("");
    let (ts, metrics) = start(&knot);
    ask(&ts, "a.blocked.test.", 1);
    assert_eq!(count(ts.dir.path(), "a.blocked.test"), 1);
    let dir = ts.stop();
    let ledger = dir.path().join("evidence.sqlite");

    // Read-only from the start: SQLite opens it read-only, every flush fails.
    let lock = Immutable::set(&ledger);
    let cfg = dir.path().join("telesink.toml");
    let ts = Telesink::start_with(dir, &cfg, &[]);
    ask(&ts, "a.blocked.test.", 50);
    wait_for("/health to name the ledger", || {
        let (status, body) = get(metrics, "/health");
        status == 503 && body.contains("the evidence ledger cannot be written")
    });
    let (_, m) = get(metrics, "/metrics");
    assert_eq!(value(&m, "telesink_evidence_writable"), Some(0.0), "{m}");
    // Writable again: the next flush opens the file anew and writes what waited.
    drop(lock);
    wait_for("/health to be ready again", || {
        get(metrics, "/health").0 == 200
    });
    let (_, m) = get(metrics, "/metrics");
    assert_eq!(value(&m, "telesink_evidence_writable"), Some(1.0), "{m}");
    assert!(
        value(&m, "telesink_evidence_reopens_total").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
    assert!(ts.wait_log("opened anew after a write error", Duration::from_secs(1)));
    assert_eq!(count(ts.dir.path(), "a.blocked.test"), 51);

    // Read-only again, then a stop: what waits goes to a recovery file, and the next
    // start writes it into the ledger.
    // The open connection writes into the write-ahead log: that one is locked too.
    ask(&ts, "a.blocked.test.", 30);
    let lock = Immutable::set(&ledger);
    let wal = Immutable::set(&ledger.with_extension("sqlite-wal"));
    wait_for("a failed flush", || get(metrics, "/health").0 == 503);
    let log = ts.log.clone();
    let dir = ts.stop();
    let said = log.lock().unwrap().clone();
    assert!(said.contains("30 attempts) saved to"), "{said}");
    drop(wal);
    drop(lock);
    let ts = Telesink::start_with(dir, &cfg, &[]);
    assert_eq!(count(ts.dir.path(), "a.blocked.test"), 81);
    assert!(ts.wait_log("from recovery file", Duration::from_secs(5)));
    let leftovers: Vec<_> = std::fs::read_dir(ts.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("recovery"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A stop that can write neither the ledger nor a recovery file says what is lost.
    ask(&ts, "a.blocked.test.", 7);
    let _ledger_lock = Immutable::set(&ledger);
    let _wal_lock = Immutable::set(&ledger.with_extension("sqlite-wal"));
    let _dir_lock = Immutable::set(ts.dir.path());
    let log = ts.log.clone();
    let dir = ts.stop();
    let said = log.lock().unwrap().clone();
    assert!(said.contains("7 attempts in 1 rows are lost"), "{said}");
    drop(_dir_lock);
    drop(_wal_lock);
    drop(_ledger_lock);
    drop(dir);
}

#[test]
fn a_corrupt_ledger_set_aside_is_said_everywhere() {
    if !require("knotd") {
        return;
    }
    let knot = Knot::start("");
    let (ts, metrics) = start(&knot);
    ask(&ts, "a.blocked.test.", 3);
    assert_eq!(count(ts.dir.path(), "a.blocked.test"), 3);
    let dir = ts.stop();
    std::fs::write(dir.path().join("evidence.sqlite"), vec![0x5a; 8192]).unwrap();
    for ext in ["sqlite-wal", "sqlite-shm"] {
        let _ = std::fs::remove_file(dir.path().join("evidence").with_extension(ext));
    }
    let cfg = dir.path().join("telesink.toml");
    let ts = Telesink::start_with(dir, &cfg, &[]);
    ask(&ts, "a.blocked.test.", 1);
    let (status, body) = get(metrics, "/health");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("the ledger was started anew"), "{body}");
    let (_, m) = get(metrics, "/metrics");
    assert_eq!(
        value(&m, "telesink_evidence_ledger_breaks"),
        Some(1.0),
        "{m}"
    );
    // The report says it, and so does verify, which fails.
    let out = Command::new(bin())
        .args(["report", "--since", "1d", "--socket"])
        .arg(ts.dir.path().join("control.sock"))
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(
        text.contains("ledger break at") && text.contains(".corrupt-"),
        "{text}"
    );
    let out = Command::new(bin())
        .args(["report", "--socket"])
        .arg(ts.dir.path().join("control.sock"))
        .arg("verify")
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("ledger break at") && text.contains("not in this file"),
        "{text}"
    );
    // The file set aside is still there, for the investigation.
    let aside = std::fs::read_dir(ts.dir.path())
        .unwrap()
        .flatten()
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("evidence.corrupt-")
        });
    assert!(aside);
}
