//! Policy load and lookup with a 1,000,000-name list (5% suffix rules), fixed seed.
//! Run: `cargo bench --bench policy`. Reports load time, RSS added and ns per verdict.

use std::time::Instant;

use telesink::config::LoadedConfig;
use telesink::policy::{self, QName, Verdict};

#[path = "common/workload.rs"]
mod workload;

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and then a small
    // list keeps the smoke run quick while still exercising the whole path.
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("TELESINK_BENCH_NAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 2_000 });
    let dir = std::env::temp_dir().join(format!("telesink-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let names = workload::write_list(&dir.join("big.list"), n, 0x5eed_1234_abcd_9876);
    let file_bytes = std::fs::metadata(dir.join("big.list")).unwrap().len();
    std::fs::write(
        dir.join("t.toml"),
        "[policy]\nlists_dir = \".\"\n[profiles.big]\nenabled = true\nlists = [\"big.list\"]\n",
    )
    .unwrap();
    let cfg = LoadedConfig::load(&dir.join("t.toml")).unwrap();

    let before = rss_kib();
    let t = Instant::now();
    let outcome = policy::build(&cfg, 1);
    let mut loads = vec![t.elapsed()];
    let policy = outcome.policy.expect("policy builds");
    let after = rss_kib();
    // This machine's timings vary from run to run: more loads, and the median of them.
    for generation in 2..=if full { 7 } else { 2 } {
        let t = Instant::now();
        let again = policy::build(&cfg, generation);
        loads.push(t.elapsed());
        drop(again);
    }
    loads.sort();

    // Lookups: blocked exact names, subdomains of suffix rules, and misses, interleaved.
    let mut queries = Vec::new();
    for (i, (nm, suffix)) in names.iter().enumerate().step_by(7).take(300_000) {
        let q = match (i % 3, suffix) {
            (0, true) => format!("a.b.{nm}"),
            (0, false) | (1, _) => nm.clone(),
            _ => format!("miss{i}.example.org"),
        };
        queries.push(QName::parse(&q).unwrap());
    }
    let t = Instant::now();
    let mut blocked = 0usize;
    for _ in 0..3 {
        for q in &queries {
            if matches!(policy.verdict(0, q), Verdict::Block { .. }) {
                blocked += 1;
            }
        }
    }
    let per = t.elapsed().as_nanos() as f64 / (3 * queries.len()) as f64;
    println!(
        "names in list        {n} ({} suffix rules), file {:.1} MiB",
        n / 20,
        file_bytes as f64 / 1048576.0
    );
    println!("distinct names       {}", policy.total_names());
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    println!(
        "load (parse+index)   median {:.0} ms [{:.0}-{:.0}] ({} loads)",
        ms(loads[loads.len() / 2]),
        ms(loads[0]),
        ms(loads[loads.len() - 1]),
        loads.len()
    );
    println!(
        "RSS added            {:.1} MiB",
        (after.saturating_sub(before)) as f64 / 1024.0
    );
    println!(
        "verdict              {per:.0} ns/lookup ({} lookups, {blocked} blocked)",
        3 * queries.len()
    );
    let _ = std::fs::remove_dir_all(dir);
}
