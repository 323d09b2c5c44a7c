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

fn profile_of(n: u32) -> &'static str {
    if n.is_multiple_of(2) {
        "office-telemetry"
    } else {
        "windows-telemetry"
    }
}

/// xorshift64*: the same pseudo-random year on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Writes a year as the daemon would: each day's rows in one flush, sealed by the next.
fn write_year(
    path: &std::path::Path,
    days: u32,
    row: &dyn Fn(u32, u32, u32, u64) -> telesink::evidence::Row,
) {
    let label = |ip: IpAddr| ip.to_string();
    let mut store = Store::open(path).unwrap();
    for d in 0..days {
        let t = u64::from(FIRST_DAY + d) * 86_400;
        let mut rows: Vec<telesink::evidence::Row> = (0..CLIENTS)
            .flat_map(|c| (0..NAMES).map(move |n| (c, n)))
            .map(|(c, n)| row(d, c, n, t))
            .collect();
        // Two picks of one name by a client are one row, as the aggregate would give.
        rows.sort_by(|a, b| (a.client, &a.name).cmp(&(b.client, &b.name)));
        rows.dedup_by(|a, b| a.client == b.client && a.name == b.name);
        store.flush(&rows, &label, FIRST_DAY + d + 1, 400).unwrap();
    }
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
    //    flush; the next day's flush seals it). The regular year repeats one pattern
    //    (each client the same 50 names, counts and times from a formula): that is the
    //    year the issue names. The irregular one gives each client 50 of 2,000 names,
    //    and counts and times at random: what compression cannot guess, closer to a
    //    real site.
    let regular = |d: u32, c: u32, n: u32, t: u64| telesink::evidence::Row {
        day: FIRST_DAY + d,
        client: client(c),
        profile: profile_of(n).into(),
        layer: Layer::DnsBlocked,
        name: name(n),
        count: u64::from(1 + (c + n + d) % 40),
        first: t + u64::from((c * 7 + n) % 3600),
        last: t + 80_000 + u64::from(n),
    };
    let irregular = |d: u32, c: u32, n: u32, t: u64| {
        let mut rng = Rng(u64::from(d) << 40 ^ u64::from(c) << 20 ^ u64::from(n) ^ 0x9e37_79b9);
        let named = (Rng(u64::from(c) << 20 ^ u64::from(n) ^ 0x51ed).next() % 2000) as u32;
        let first = t + rng.next() % 86_000;
        telesink::evidence::Row {
            day: FIRST_DAY + d,
            client: client(c),
            profile: profile_of(named).into(),
            layer: Layer::DnsBlocked,
            name: name(named),
            // Mostly a few, now and then hundreds.
            count: 1 + (rng.next() % 40) * (1 + rng.next() % 100) / 10,
            first,
            last: first + rng.next() % (86_400 - (first - t)),
        }
    };
    for (kind, make) in [
        (
            "regular",
            &regular as &dyn Fn(u32, u32, u32, u64) -> telesink::evidence::Row,
        ),
        ("irregular", &irregular),
    ] {
        let path = dir.join(format!("{kind}.sqlite"));
        let started = Instant::now();
        write_year(&path, days, make);
        let written = started.elapsed().as_secs_f64();
        let bytes: u64 = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{kind}.sqlite"))
            })
            .map(|e| e.metadata().map_or(0, |m| m.len()))
            .sum();
        println!(
            "{kind} year, {days} days x {CLIENTS} clients x {NAMES} names ({} rows): written in {written:.1} s, file {:.1} MiB ({:.1} bytes per row)",
            u64::from(days) * u64::from(CLIENTS * NAMES),
            bytes as f64 / 1048576.0,
            bytes as f64 / (f64::from(days) * f64::from(CLIENTS * NAMES))
        );
    }
    for kind in ["regular", "irregular"] {
        let path = dir.join(format!("{kind}.sqlite"));
        let mut store = Store::open(&path).unwrap();
        // The reports an auditor asks for: the page (summary only), each grouping, and
        // every row of the year (18 million lines built in memory).
        for (by, summary) in [
            (None, true),
            (Some("client"), false),
            (Some("name"), false),
            (Some("profile"), false),
            (Some("day"), false),
            (None, false),
        ] {
            let q = Query {
                since: "2026-01-01".into(),
                until: "2026-12-31".into(),
                by: by.map(str::to_owned),
                summary,
                ..Query::default()
            };
            let started = Instant::now();
            let r = run(&store, &q).unwrap();
            println!(
                "{kind}: report over the period, {}: {} lines, {} attempts, in {:.2} s",
                match (by, summary) {
                    (_, true) => "summary (the HTML page)".to_owned(),
                    (Some(by), _) => format!("by {by}"),
                    (None, _) => "every row".to_owned(),
                },
                r.rows.len(),
                r.totals.values().flat_map(|l| l.values()).sum::<u64>(),
                started.elapsed().as_secs_f64()
            );
        }
        let q = Query {
            since: "2026-01-01".into(),
            until: "2026-12-31".into(),
            client: Some(label(client(7))),
            ..Query::default()
        };
        let started = Instant::now();
        let r = run(&store, &q).unwrap();
        println!(
            "{kind}: report over the period for one client: {} lines in {:.2} s",
            r.rows.len(),
            started.elapsed().as_secs_f64()
        );
        let started = Instant::now();
        let verified = store.verify().unwrap();
        println!(
            "{kind}: verify of the chain ({:?} days): {:.2} s",
            verified,
            started.elapsed().as_secs_f64()
        );
        let started = Instant::now();
        let erased = store.purge(&label(client(7))).unwrap();
        println!(
            "{kind}: purge of one client ({erased} rows over the year), re-chained: {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
