//! The evidence ledger's costs (docs/BENCHMARKS.md, "Evidence ledger"):
//! - a flush of 100,000 aggregate rows (one transaction);
//! - the file for a synthetic year of 1,000 clients x 50 names (every client reaching
//!   each of its names every day: 18.25 million rows), and `report` over that year.
//!
//! Run: `cargo bench --bench evidence` (without --bench, a 7-day smoke run).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use telesink::evidence::report::{Query, run};
use telesink::evidence::{Aggregate, Layer, Store};

const CLIENTS: u32 = 1000;
const NAMES: u32 = 50;
/// 2026-01-01 as days since 1970.
const FIRST_DAY: u32 = 20_454;

fn client(i: u32) -> IpAddr {
    IpAddr::from([10, 1, (i / 250) as u8, (i % 250) as u8 + 1])
}

fn name(i: u32) -> String {
    format!("telemetry-{i}.events.data.example.com")
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let days = if full { 365 } else { 7 };
    let dir = std::env::temp_dir().join(format!("telesink-bench-evidence-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let label = |ip: IpAddr| ip.to_string();
    let profiles: Vec<Arc<str>> = ["office-telemetry", "windows-telemetry"]
        .iter()
        .map(|p| Arc::from(*p))
        .collect();

    // 1. Flushing 100,000 rows.
    let path = dir.join("flush.sqlite");
    let mut store = Store::open(&path).unwrap();
    let agg = Aggregate::new(1000, 1_000_000);
    let now = u64::from(FIRST_DAY) * 86_400 + 3600;
    for c in 0..2000 {
        for n in 0..NAMES {
            agg.record(
                client(c),
                &profiles[(n % 2) as usize],
                Layer::DnsBlocked,
                &name(n),
                "*.x",
                3,
                now,
            );
        }
    }
    let rows = agg.drain(FIRST_DAY);
    let started = Instant::now();
    store.flush(&rows, &label, FIRST_DAY, 400).unwrap();
    println!(
        "flush of {} aggregate rows: {:.0} ms",
        rows.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    drop(store);

    // 2. A synthetic year, day by day as the daemon writes it (each day's rows in one
    //    flush; the next day's flush closes it).
    let path = dir.join("year.sqlite");
    let mut store = Store::open(&path).unwrap();
    let started = Instant::now();
    for d in 0..days {
        let day = FIRST_DAY + d;
        let t = u64::from(day) * 86_400;
        let rows: Vec<telesink::evidence::Row> = (0..CLIENTS)
            .flat_map(|c| {
                (0..NAMES).map(move |n| telesink::evidence::Row {
                    day,
                    client: client(c),
                    profile: if n % 2 == 0 {
                        "office-telemetry"
                    } else {
                        "windows-telemetry"
                    }
                    .into(),
                    layer: Layer::DnsBlocked,
                    name: name(n),
                    count: u64::from(1 + (c + n + d) % 40),
                    first: t + u64::from((c * 7 + n) % 3600),
                    last: t + 80_000 + u64::from(n),
                })
            })
            .collect();
        store.flush(&rows, &label, day + 1, 400).unwrap();
    }
    let written = started.elapsed().as_secs_f64();
    drop(store);
    let bytes: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("year.sqlite"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    println!(
        "{days} days x {CLIENTS} clients x {NAMES} names ({} rows): written in {written:.1} s, file {:.1} MiB ({:.1} bytes per row)",
        u64::from(days) * u64::from(CLIENTS * NAMES),
        bytes as f64 / 1048576.0,
        bytes as f64 / (f64::from(days) * f64::from(CLIENTS * NAMES))
    );
    let store = Store::open(&path).unwrap();
    for by in [Some("client"), Some("name"), None] {
        let q = Query {
            since: "2026-01-01".into(),
            until: "2026-12-31".into(),
            by: by.map(str::to_owned),
            ..Query::default()
        };
        let started = Instant::now();
        let r = run(&store, &q).unwrap();
        println!(
            "report over the period, by {}: {} lines in {:.2} s",
            by.unwrap_or("row"),
            r.rows.len(),
            started.elapsed().as_secs_f64()
        );
    }
    let started = Instant::now();
    let verified = store.verify().unwrap();
    println!(
        "verify of the chain ({:?} days): {:.2} s",
        verified,
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
