//! The fleet's central report (docs/BENCHMARKS.md, "Fleet report", issue 26): two sites
//! of one gateway each, 30 days of 200 devices each reaching 10 endpoints of two
//! profiles (plus firewall rows), sealed by the real ledger, sent as the gateways send
//! them to the sites' streams on a real nats-server, sourced by the hub's stream; then
//! the release binary's `telesink fleet report` (table, CSV, JSON, HTML) and `verify`,
//! timed end to end (connect, read every record, check every chain, sum, render).
//! The budget is 2 s for the report.
//!
//! Run: `cargo bench --bench fleet` (needs nats-server; loopback only). Without
//! --bench (the test command runs every bench so), a 3-day, 20-device smoke run of the
//! same path whose debug-build times are printed, not held to the budget.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use telesink::evidence::Store;
use telesink::evidence::store::Stored;
use telesink::fleet::record::{HeadRecord, Record, VERSION};
use telesink::fleet::send::{Sender, day_record};

/// The issue's size; the smoke run's is (3, 20).
const FULL: (u32, u32) = (30, 200);
const NAMES: u32 = 10;
/// 2026-11-01 as days since 1970.
const FIRST_DAY: u32 = 20_393;
const BUDGET: Duration = Duration::from_secs(2);

fn ledger(path: &std::path::Path, site: &str, (days, devices): (u32, u32)) -> Store {
    let mut store = Store::open(path).expect("ledger");
    let policy = r#"[{"name":"office-telemetry","description":"","blocks_for":["default"],"observed_for":[],"off_for":[],"warning":null}]"#;
    for d in 0..days {
        let day = FIRST_DAY + d;
        let text = telesink::evidence::store::day_text(day);
        let t = u64::from(day) * 86_400 + 3600;
        let mut rows = Vec::new();
        for c in 0..devices {
            for n in 0..NAMES {
                rows.push(Stored {
                    day: text.clone(),
                    client: format!("{site}-laptop-{c}"),
                    profile: if n % 2 == 0 {
                        "office-telemetry"
                    } else {
                        "windows-telemetry"
                    }
                    .into(),
                    layer: "dns-blocked".into(),
                    name: format!("telemetry-{n}.events.data.example.com"),
                    count: u64::from(1 + (c * 7 + n * 13 + d) % 40),
                    first_seen: t,
                    last_seen: t + 3600,
                });
            }
            rows.push(Stored {
                day: text.clone(),
                client: format!("{site}-laptop-{c}"),
                profile: "office-telemetry".into(),
                layer: "firewall-rejected".into(),
                name: "-".into(),
                count: u64::from(1 + c % 5),
                first_seen: t,
                last_seen: t + 60,
            });
        }
        store.flush_labelled(&rows, &[], day, 400).expect("flush");
        store.note_day(day, policy, 400).expect("note");
    }
    // The day after the last seals it.
    store
        .flush_labelled(&[], &[], FIRST_DAY + days, 400)
        .expect("seal");
    store
}

/// The servers this bench started, ended by PID however it ends.
struct Servers(Vec<std::process::Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for s in &mut self.0 {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let size = if full { FULL } else { (3, 20) };
    let (days, devices) = size;
    if Command::new("nats-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("fleet bench: nats-server is not installed (.ci/setup bench installs it)");
        std::process::exit(1);
    }
    let dir = std::env::temp_dir().join(format!("telesink-fleet-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    // The hub, and one site server (domain "site") as its leaf node holding both
    // sites' streams: the records cross a leaf connection as they do in production.
    let port = 55_330;
    let start = |name: &str, text: String| {
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(&conf, text).expect("conf");
        Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server")
    };
    let servers = Servers(vec![
        start(
            "hub",
            format!(
                "server_name: hub\nlisten: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\", domain: hub }}\nleafnodes {{ listen: 127.0.0.1:{} }}\n",
                dir.join("js-hub").display(),
                port + 1
            ),
        ),
        start(
            "site",
            format!(
                "server_name: site\nlisten: 127.0.0.1:{}\njetstream {{ store_dir: \"{}\", domain: site }}\nleafnodes {{ remotes: [ {{ url: \"nats-leaf://127.0.0.1:{}\" }} ] }}\n",
                port + 2,
                dir.join("js-site").display(),
                port + 1
            ),
        ),
    ]);
    let url = format!("nats://127.0.0.1:{port}");
    let site_url = format!("nats://127.0.0.1:{}", port + 2);
    let made = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let records = rt.block_on(async {
        let connect = |u: String| async move {
            loop {
                match async_nats::connect(u.as_str()).await {
                    Ok(c) => break async_nats::jetstream::new(c),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        };
        let hub_js = connect(url.clone()).await;
        let js = connect(site_url.clone()).await;
        // The site's leaf connection up: the hub's request for its stream info answers.
        let probe = telesink::fleet::streams::site_stream(&js, "probe", 1).await;
        probe.expect("a site stream");
        let deadline = Instant::now() + Duration::from_secs(30);
        while async_nats::jetstream::with_domain(hub_js.client(), "site")
            .get_stream("telesink_evidence_probe")
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the site's leaf connection");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let sites = [
            ("a".to_owned(), "site".to_owned()),
            ("b".to_owned(), "site".to_owned()),
        ];
        for (site, _) in &sites {
            telesink::fleet::streams::site_stream(&js, site, 1)
                .await
                .expect("site stream");
        }
        telesink::fleet::streams::hub_evidence(&hub_js, &sites, 1)
            .await
            .expect("hub stream");
        let mut n = 0u64;
        for (site, _) in &sites {
            let store = ledger(&dir.join(format!("{site}.sqlite")), site, size);
            let who = Sender {
                site: site.clone(),
                gateway: format!("gw-{site}"),
                client_labels: "pseudonym".into(),
                replicas: 1,
                settle: Duration::ZERO,
            };
            let subject = telesink::fleet::record::subject(site, &who.gateway);
            let due = store.unpublished(FIRST_DAY + days, 100).expect("due");
            assert_eq!(due.len(), days as usize);
            let mut records: Vec<Record> = due
                .iter()
                .map(|d| Record::Day(day_record(&who, d)))
                .collect();
            records.push(Record::Head(HeadRecord {
                version: VERSION,
                site: site.clone(),
                gateway: who.gateway.clone(),
                at: u64::from(FIRST_DAY + days) * 86_400,
                open_day: telesink::evidence::store::day_text(FIRST_DAY + days),
                chain: store.chain().expect("chain"),
                broken_at: None,
                breaks: 0,
                telesink: "bench".into(),
            }));
            for record in &records {
                let bytes = serde_json::to_vec(record).expect("json");
                js.publish(subject.clone(), bytes.into())
                    .await
                    .expect("publish")
                    .await
                    .expect("ack");
                n += 1;
            }
        }
        let mut hub = hub_js
            .get_stream("telesink_evidence")
            .await
            .expect("hub stream");
        let deadline = Instant::now() + Duration::from_secs(60);
        while hub.info().await.expect("info").state.messages < n {
            let info = hub.info().await.expect("info");
            let have = info.state.messages;
            assert!(
                Instant::now() < deadline,
                "the hub did not source every record: {have} of {n}; {:?}",
                info.sources
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        n
    });
    println!(
        "fleet: {records} records ({} sites x {days} days x {devices} devices x {} rows) sent and sourced in {:.1} s",
        2,
        NAMES + 1,
        made.elapsed().as_secs_f64()
    );
    let since = telesink::evidence::store::day_text(FIRST_DAY);
    let until = telesink::evidence::store::day_text(FIRST_DAY + days - 1);
    let bin = env!("CARGO_BIN_EXE_telesink");
    let mut over = false;
    for (what, extra) in [
        ("report table", vec!["report", "--format", "table"]),
        ("report csv", vec!["report", "--format", "csv"]),
        ("report json", vec!["report", "--format", "json"]),
        ("report html", vec!["report", "--format", "html"]),
        ("report --by site", vec!["report", "--by", "site"]),
        ("verify", vec!["verify"]),
    ] {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..5 {
            let start = Instant::now();
            let out = Command::new(bin)
                .args(["fleet", "--hub", &url])
                .args(&extra)
                .args(["--since", &since, "--until", &until])
                .output()
                .expect("telesink fleet");
            times.push(start.elapsed());
            assert!(
                out.status.success(),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            size = out.stdout.len();
        }
        times.sort();
        let median = times[times.len() / 2];
        let ratio = median.as_secs_f64() / BUDGET.as_secs_f64();
        over |= full && what.starts_with("report") && median > BUDGET;
        println!(
            "{what:<18} median {:>7.1} ms  (min {:.1}, max {:.1})  {:>6.2}x of the 2 s budget  output {} KiB",
            median.as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3,
            ratio,
            size / 1024
        );
    }
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{}",
        match (full, over) {
            (false, _) => "smoke run (a debug build; `cargo bench --bench fleet` measures)",
            (true, true) => "BUDGET OVER",
            (true, false) => "BUDGET OK",
        }
    );
    if over {
        std::process::exit(1);
    }
}
