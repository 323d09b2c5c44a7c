//! The evidence ledger on loopback: exact counts per client in `telesink report`, what a
//! SIGKILL loses (at most one flush interval), tamper evidence (`report verify` after a
//! count is changed with sqlite3), erasure (`report purge`), the HTML page rendered by
//! headless Chromium, and the live view (`telesink tail`). The gateway test with firewall
//! rejects and bypass attempts is in tests/firewall.rs.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;
use telesink::evidence::block::{self, DayRows};

fn config(knot: &Knot, flush_secs: u64) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
[upstream]
servers = ["{}"]
[policy]
lists_dir = "."
[profiles.tele]
enabled = true
lists = ["tele.list"]
[profiles.strict]
observed = true
lists = ["strict.list"]
[evidence]
flush_secs = {flush_secs}
"#,
        knot.addr
    )
}

fn start(knot: &Knot, flush_secs: u64) -> Telesink {
    Telesink::start(
        &config(knot, flush_secs),
        &[
            ("tele.list", "*.blocked.test\n"),
            ("strict.list", "www.test\n"),
        ],
    )
}

/// `telesink report --format json` rows as (client, layer, name, count).
fn rows(ts_dir: &Path, extra: &[&str]) -> Vec<(String, String, String, u64)> {
    let since: &[&str] = if extra.contains(&"--since") {
        &[]
    } else {
        &["--since", "1d"]
    };
    let daemon = ts_dir.join("control.sock");
    let socket: Vec<&std::ffi::OsStr> = if extra.contains(&"--socket") {
        Vec::new()
    } else {
        vec!["--socket".as_ref(), daemon.as_os_str()]
    };
    let out = Command::new(bin())
        .args(["report", "--format", "json"])
        .args(since)
        .arg("--config")
        .arg(ts_dir.join("telesink.toml"))
        .args(socket)
        .args(extra)
        // As systemd gives it to the daemon: where the state (and the ledger) live.
        .env("STATE_DIRECTORY", ts_dir)
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut out: Vec<(String, String, String, u64)> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["client"].as_str().unwrap().to_owned(),
                r["layer"].as_str().unwrap().to_owned(),
                r["name"].as_str().unwrap().to_owned(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The rows as the file has them, never through a daemon.
fn file_rows(dir: &Path) -> Vec<(String, String, String, u64)> {
    let nowhere = dir.join("no-daemon-here.sock");
    rows(dir, &["--socket", nowhere.to_str().unwrap()])
}

fn ask(ts: &Telesink, from: &str, name: &str, times: usize) {
    for _ in 0..times {
        ts.q_from(from, name, RecordType::A);
    }
}

fn row(client: &str, layer: &str, name: &str, n: u64) -> (String, String, String, u64) {
    (client.into(), layer.into(), name.into(), n)
}

#[test]
fn blocked_and_observed_queries_of_two_clients_are_counted_exactly_and_survive_a_restart() {
    if !require("knotd") {
        return;
    }
    let knot = Knot::start("");
    let ts = start(&knot, 60);
    ask(&ts, "127.0.0.2", "a.blocked.test.", 3);
    ask(&ts, "127.0.0.2", "www.test.", 2);
    ask(&ts, "127.0.0.3", "b.blocked.test.", 1);
    ask(&ts, "127.0.0.3", "alias.test.", 4); // forwarded: never in the ledger
    let dir = ts.dir.path().to_owned();
    // From the daemon, before any flush: it includes what is not written yet.
    let want = vec![
        row("127.0.0.2", "dns-blocked", "a.blocked.test", 3),
        row("127.0.0.2", "dns-observed", "www.test", 2),
        row("127.0.0.3", "dns-blocked", "b.blocked.test", 1),
    ];
    assert_eq!(rows(&dir, &[]), want);
    // A restart keeps them, and new attempts add up.
    let dir = ts.stop();
    assert_eq!(
        rows(dir.path(), &[]),
        want,
        "read from the file with the daemon down"
    );
    let cfg = dir.path().join("telesink.toml");
    let ts = Telesink::start_with(dir, &cfg, &[]);
    ask(&ts, "127.0.0.2", "a.blocked.test.", 1);
    let got = rows(ts.dir.path(), &["--client", "127.0.0.2"]);
    assert_eq!(
        got,
        vec![
            row("127.0.0.2", "dns-blocked", "a.blocked.test", 4),
            row("127.0.0.2", "dns-observed", "www.test", 2),
        ]
    );
    // Grouped by client, CSV with its documented header.
    let out = Command::new(bin())
        .args([
            "report", "--format", "csv", "--by", "client", "--since", "1d", "--socket",
        ])
        .arg(ts.dir.path().join("control.sock"))
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        csv.lines().find(|l| !l.starts_with("# "))
            == Some("day,client,profile,layer,name,count,first_seen,last_seen"),
        "{csv}"
    );
    assert!(csv.contains(",127.0.0.2,,dns-blocked,,4,"), "{csv}");
}

#[test]
fn a_sigkill_loses_at_most_one_flush_interval() {
    if !require("knotd") {
        return;
    }
    let knot = Knot::start("");
    let ts = start(&knot, 1);
    ask(&ts, "127.0.0.2", "a.blocked.test.", 5);
    // Read the file itself, not the daemon (a report through the daemon flushes first):
    // the periodic flush must have written the five within a few intervals.
    let dir = ts.dir.path().to_owned();
    let in_file = || {
        file_rows(&dir)
            .iter()
            .find(|r| r.2 == "a.blocked.test")
            .map_or(0, |r| r.3)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_file() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(in_file(), 5, "the periodic flush did not write them");
    // Three more, then SIGKILL before the next flush can be relied on: at least what the
    // last flush wrote survives.
    ask(&ts, "127.0.0.2", "a.blocked.test.", 3);
    ts.signal("KILL");
    let dir = ts.stop();
    let after = file_rows(dir.path());
    assert!(
        after
            .iter()
            .any(|r| r.2 == "a.blocked.test" && (5..=8).contains(&r.3)),
        "after kill -9: {after:?}"
    );
}

#[test]
fn verify_finds_a_changed_count_and_purge_erases_a_client_verifiably() {
    if !require("knotd") || !require("sqlite3") {
        return;
    }
    let knot = Knot::start("");
    let ts = start(&knot, 60);
    ask(&ts, "127.0.0.2", "a.blocked.test.", 2);
    ask(&ts, "127.0.0.3", "b.blocked.test.", 1);
    let dir = ts.stop();
    let db = dir.path().join("evidence.sqlite");
    // Make the rows yesterday's, then let a flush close the day (the daemon closes days
    // before today at each flush).
    let sql = |q: &str| {
        let out = Command::new("sqlite3").arg(&db).arg(q).output().unwrap();
        assert!(out.status.success(), "{q}: {}", output_text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    sql("UPDATE evidence SET day = date('now', '-2 day')");
    let cfg = dir.path().join("telesink.toml");
    let ts = Telesink::start_with(dir, &cfg, &[]);
    ask(&ts, "127.0.0.2", "c.blocked.test.", 1);
    let verify = |ts: &Telesink| {
        let out = Command::new(bin())
            .args(["report", "--socket"])
            .arg(ts.dir.path().join("control.sock"))
            .arg("verify")
            .output()
            .unwrap();
        (out.status.success(), output_text(&out))
    };
    let (ok, text) = verify(&ts);
    assert!(ok, "{text}");
    assert!(text.contains("1 closed days verified"), "{text}");
    // Tampering with one count breaks the chain at that day. The closed day is sealed
    // into a block: taken out with sqlite3, one count changed (re-encoded well formed,
    // as a forger with telesink's own code would) and put back with sqlite3.
    let dir = ts.stop();
    let day = sql("SELECT day FROM days");
    let file = dir.path().join("day.block");
    let put_back = |bytes: &[u8]| {
        std::fs::write(&file, bytes).unwrap();
        sql(&format!(
            "UPDATE sealed SET block = readfile('{}') WHERE day = '{day}'",
            file.display()
        ));
    };
    sql(&format!(
        "SELECT writefile('{}', block) FROM sealed WHERE day = '{day}'",
        file.display()
    ));
    let honest = std::fs::read(&file).unwrap();
    let mut forged = DayRows::decode(&block::decompress(&honest).unwrap()).unwrap();
    let row = forged
        .rows
        .iter()
        .position(|p| {
            forged.clients[p.client as usize] == "127.0.0.2"
                && forged.names[p.name as usize] == "a.blocked.test"
        })
        .expect("the row is in the sealed day");
    assert_eq!(forged.rows[row].count, 2);
    forged.rows[row].count = 20;
    put_back(&block::compress(&forged.encode()).unwrap());
    let ts = Telesink::start_with(dir, &cfg, &[]);
    let (ok, text) = verify(&ts);
    assert!(!ok);
    assert!(
        text.contains(&format!("the digest chain breaks at {day}")),
        "{text}"
    );
    // The report reads what the file says (20): verify is what tells it was changed.
    let forged_rows = rows(ts.dir.path(), &["--since", "7d"]);
    assert!(
        forged_rows.iter().any(|r| r.0 == "127.0.0.2" && r.3 == 20),
        "{forged_rows:?}"
    );
    // A purge would recompute the digests and hide the break: refused.
    let out = Command::new(bin())
        .args(["report", "--socket"])
        .arg(ts.dir.path().join("control.sock"))
        .args(["purge", "--client", "127.0.0.3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains(&format!("the digest chain breaks at {day}")),
        "{}",
        output_text(&out)
    );
    let dir = ts.stop();
    put_back(&honest);
    let ts = Telesink::start_with(dir, &cfg, &[]);
    // Erasure: the client is gone, the purge is recorded, and the chain holds.
    let out = Command::new(bin())
        .args(["report", "--socket"])
        .arg(ts.dir.path().join("control.sock"))
        .args(["purge", "--client", "127.0.0.2"])
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("client 127.0.0.2: 2 rows erased"), "{text}");
    let left = rows(ts.dir.path(), &["--since", "7d"]);
    assert!(left.iter().all(|r| r.0 != "127.0.0.2"), "{left:?}");
    assert!(left.iter().any(|r| r.0 == "127.0.0.3"), "{left:?}");
    let (ok, text) = verify(&ts);
    assert!(ok, "{text}");
    let dir = ts.stop();
    assert_eq!(sql("SELECT client, rows FROM purges"), "127.0.0.2|2");
    drop(dir);
}

#[test]
fn pseudonymous_labels_never_write_an_address() {
    if !require("knotd") || !require("sqlite3") {
        return;
    }
    let knot = Knot::start("");
    let cfg = config(&knot, 60) + "[metrics]\nclient_labels = \"pseudonym\"\n";
    let ts = Telesink::start(
        &cfg,
        &[
            ("tele.list", "*.blocked.test\n"),
            ("strict.list", "www.test\n"),
        ],
    );
    ask(&ts, "127.0.0.2", "a.blocked.test.", 1);
    let dir = ts.stop();
    // The database and its write-ahead log, whichever holds the rows now.
    let mut bytes = std::fs::read(dir.path().join("evidence.sqlite")).unwrap();
    bytes.extend(std::fs::read(dir.path().join("evidence.sqlite-wal")).unwrap_or_default());
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("a.blocked.test"),
        "the row is not in the files read"
    );
    assert!(!text.contains("127.0.0.2"), "an address was written");
    let out = Command::new("sqlite3")
        .arg(dir.path().join("evidence.sqlite"))
        .arg("SELECT client FROM evidence")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .starts_with("h-")
    );
}

#[test]
fn the_html_report_renders_offline_in_chromium() {
    if !require("knotd") || !require("chromium") {
        return;
    }
    let knot = Knot::start("");
    let ts = start(&knot, 60);
    ask(&ts, "127.0.0.2", "a.blocked.test.", 3);
    ask(&ts, "127.0.0.3", "www.test.", 2);
    let page = ts.dir.path().join("report.html");
    let out = Command::new(bin())
        .args([
            "report", "--format", "html", "--by", "day", "--since", "1d", "--output",
        ])
        .arg(&page)
        .arg("--socket")
        .arg(ts.dir.path().join("control.sock"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("src="));
    let profile = ts.dir.path().join("chromium-profile");
    let chromium = |extra: &[&str]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(format!("file://{}", page.display()))
            .output()
            .unwrap()
    };
    let dom = chromium(&["--dump-dom"]);
    let text = String::from_utf8_lossy(&dom.stdout);
    // What a DPO signs: blocked and observed apart, never one total called "stopped".
    assert!(!text.contains("stopped at the gateway"), "{text}");
    assert!(
        text.contains("telemetry attempts blocked and observed at gateway"),
        "{text}"
    );
    assert!(
        text.contains("Blocked attempts (DNS sinkholed, firewall rejected, DNS bypass rejected)</th><td class=\"n\"><b>3</b>"),
        "{text}"
    );
    assert!(
        text.contains("Observed attempts (answered normally, NOT blocked: counted as a witness)</th><td class=\"n\"><b>2</b>"),
        "{text}"
    );
    // The legend, the context (UTC said, version, generation time), the policy in force
    // and its changes, what is not blocked, and how to verify.
    for want in [
        "What the layers mean",
        "the query was answered normally: the profile is only observed",
        "All times are UTC",
        &format!("by telesink {}", env!("CARGO_PKG_VERSION")),
        "from the running daemon",
        "Profiles in force at",
        "<td>tele</td><td></td><td>default</td>",
        "Changes of the policy in the period",
        "started (version",
        "What telesink does not block",
        "<b>strict</b> (only observed for default)",
        "telesink report verify --ledger FILE",
        "No erasure (purge) recorded",
        "Endpoints with the most blocked attempts",
        "Observed endpoints (answered normally, not blocked)",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    // Observed names are never among the blocked endpoints.
    let blocked_part = text
        .split("Endpoints with the most blocked attempts")
        .nth(1)
        .and_then(|t| t.split("Devices that still reach").next())
        .unwrap();
    assert!(!blocked_part.contains("www.test"), "{blocked_part}");
    assert!(text.contains("<svg"), "{text}");
    // The same statement in the CSV's header and in JSON.
    let csv = Command::new(bin())
        .args(["report", "--format", "csv", "--since", "1d", "--socket"])
        .arg(ts.dir.path().join("control.sock"))
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&csv.stdout);
    for want in [
        "# blocked attempts: 3 (layers dns-blocked, firewall-rejected, bypass)",
        "# observed attempts: 2 (layer dns-observed: answered normally, NOT blocked)",
        "# profile strict: blocks for [], observes for [default], off for []",
        "# change at ",
    ] {
        assert!(csv.contains(want), "{want} missing:\n{csv}");
    }
    assert_eq!(rows(ts.dir.path(), &[]).len(), 2);
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("evidence-report.png");
    let out = chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1000,2400",
    ]);
    assert!(shot.exists(), "{}", output_text(&out));
}

#[test]
fn tail_shows_verdicts_as_they_happen_forwarded_names_included() {
    if !require("knotd") {
        return;
    }
    let knot = Knot::start("");
    let ts = start(&knot, 60);
    let socket = ts.dir.path().join("control.sock");
    let mut child = Command::new(bin())
        .args(["tail", "--json", "--count", "3", "--socket"])
        .arg(&socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Give the first poll time to switch collection on, then ask.
    std::thread::sleep(Duration::from_millis(600));
    ask(&ts, "127.0.0.2", "a.blocked.test.", 1);
    ask(&ts, "127.0.0.2", "www.test.", 1);
    ask(&ts, "127.0.0.3", "alias.test.", 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["name"], "a.blocked.test");
    assert_eq!(lines[0]["verdict"], "blocked");
    assert_eq!(lines[0]["profile"], "tele");
    assert!(
        lines[0]["rule"]
            .as_str()
            .unwrap()
            .contains("*.blocked.test at "),
        "{lines:?}"
    );
    assert!(
        lines[0]["rule"].as_str().unwrap().contains("tele.list:1"),
        "{lines:?}"
    );
    assert_eq!(lines[1]["observed"], true);
    // Forwarded names reach the live view, never the ledger.
    assert_eq!(lines[2]["name"], "alias.test");
    assert_eq!(lines[2]["verdict"], "forwarded");
}

/// A ledger that cannot be opened leaves DNS running, and /health and the log say so.
#[test]
fn a_ledger_that_cannot_be_opened_is_reported_and_dns_goes_on() {
    if !require("knotd") {
        return;
    }
    let knot = Knot::start("");
    let port = free_port();
    // A path below a file: no folder can be made there, whoever runs the test.
    let cfg = config(&knot, 60).replace(
        "[evidence]\n",
        "[evidence]\npath = \"/proc/self/status/evidence.sqlite\"\n",
    ) + &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let ts = Telesink::start(
        &cfg,
        &[
            ("tele.list", "*.blocked.test\n"),
            ("strict.list", "www.test\n"),
        ],
    );
    assert!(ts.wait_log(
        "evidence ledger unavailable, nothing is recorded",
        Duration::from_secs(2)
    ));
    let m = ts.q_from("127.0.0.2", "a.blocked.test.", RecordType::A);
    assert_eq!(addrs(&m), ["0.0.0.0"]);
    let (status, body) = get(format!("127.0.0.1:{port}").parse().unwrap(), "/health");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("the evidence ledger could not be opened"),
        "{body}"
    );
}
