//! Firewall apply and readback at scale: 100,000 IPv4 + 20,000 IPv6 CIDRs (random, fixed
//! seed), applied as one batch, replaced as one batch, and the counters of 10,000
//! clients read back; then, through the firewall owner as the daemon applies, a change that
//! leaves the firewall as it is and changes of k ranges (the incremental path). Runs itself inside `unshare -n` (a throwaway network namespace),
//! needs root, sends no traffic. `cargo bench --bench firewall`.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use telesink::firewall::kernel::Kernel;
use telesink::firewall::netlink;
use telesink::firewall::plan::{
    self, Action, Family, Hook, Ifaces, Plan, RuleSpec, SetKind, SetSpec,
};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let is_root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !is_root {
        println!("firewall bench skipped: needs root for a network namespace");
        return;
    }
    if std::env::var("TELESINK_BENCH_NETNS").is_err() {
        let me = std::env::current_exe().expect("own path");
        let status = Command::new("unshare")
            .arg("-n")
            .arg(me)
            .args(std::env::args().skip(1))
            .env("TELESINK_BENCH_NETNS", "1")
            .status()
            .expect("unshare");
        std::process::exit(status.code().unwrap_or(1));
    }
    let (n4, n6, clients, runs) = if full {
        (100_000, 20_000, 10_000, 5)
    } else {
        (1_000, 200, 100, 1)
    };

    let mut r = Rng(0x0f1e_2d3c_4b5a_6978);
    let v4 = plan::merge((0..n4).map(|_| {
        let len = 16 + (r.next() % 17) as u32;
        let start = (r.next() as u32) & (u32::MAX.checked_shl(32 - len).unwrap_or(0));
        let end = start | (u32::MAX.checked_shr(len).unwrap_or(0));
        (u128::from(start), u128::from(end))
    }));
    let base6 = 0x2001_0db8u128 << 96;
    let v6 = plan::merge((0..n6).map(|_| {
        let len = 48 + (r.next() % 81) as u32;
        let host = (u128::from(r.next()) << 64 | u128::from(r.next())) & !(u128::MAX << 96);
        let start = (base6 | host) & (u128::MAX.checked_shl(128 - len).unwrap_or(0));
        let end = start | u128::MAX.checked_shr(len).unwrap_or(0);
        (start, end)
    }));
    let (r4, r6) = (v4.len(), v6.len());
    let plan = bench_plan(v4, v6, clients);

    let mut first = Vec::new();
    let mut replace = Vec::new();
    for _ in 0..runs {
        let _ = netlink::remove();
        let t = Instant::now();
        netlink::apply(&plan).expect("apply");
        first.push(t.elapsed());
        let t = Instant::now();
        netlink::apply(&plan).expect("replace");
        replace.push(t.elapsed());
    }

    // 10,000 clients in the IPv6 accounting set, each with a counter, via nft itself.
    let mut els = String::from("add element inet telesink acct_bench_6 { ");
    for i in 0..clients {
        if i > 0 {
            els.push_str(", ");
        }
        els.push_str(&format!(
            "2001:db8:c::{:x}:{:x} counter packets {} bytes {}",
            i >> 16,
            i & 0xffff,
            i + 1,
            60 * (i + 1)
        ));
    }
    els.push_str(" }\n");
    let path = std::env::temp_dir().join(format!("telesink-bench-els-{}.nft", std::process::id()));
    std::fs::write(&path, els).expect("write");
    let ok = Command::new("nft")
        .arg("-f")
        .arg(&path)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let _ = std::fs::remove_file(&path);
    assert!(ok, "nft could not add the client elements");
    let mut read = Vec::new();
    let mut seen = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let counts = netlink::read_accounting("acct_bench_6", Family::V6).expect("read");
        read.push(t.elapsed());
        seen = counts.len();
        assert_eq!(
            counts.iter().map(|c| c.packets).sum::<u64>(),
            (clients as u64) * (clients as u64 + 1) / 2
        );
    }
    let _ = netlink::remove();

    // Through the firewall owner, as the daemon applies: the table installed once, then a
    // change that leaves the firewall as it is, then changes of k ranges.
    let kernel = Kernel::spawn();
    let base = Arc::new(plan.clone());
    kernel.apply_blocking(base.clone()).expect("install");
    let mut unchanged = Vec::new();
    for _ in 0..runs.max(5) {
        let t = Instant::now();
        kernel.apply_blocking(base.clone()).expect("same plan");
        unchanged.push(t.elapsed());
    }
    let mut curve = Vec::new();
    for k in [1usize, 10, 100, 1_000, 10_000] {
        let mut times = Vec::new();
        for run in 0..runs {
            // k of the IPv4 ranges move to another /32 of 198.18.0.0/15 (benchmark space,
            // outside every random range's prefix only by chance: merge decides), then back.
            let changed = Arc::new(with_moved_ranges(&plan, k, run as u32));
            let t = Instant::now();
            kernel.apply_blocking(changed).expect("k changed");
            times.push(t.elapsed());
            kernel.apply_blocking(base.clone()).expect("back");
        }
        let changed = with_moved_ranges(&plan, k, 0);
        let t = Instant::now();
        let diff = changed.change_from(&plan);
        let diff_ms = t.elapsed().as_secs_f64() * 1e3;
        let elements = match &diff {
            plan::PlanChange::Elements(d) => d.iter().map(|x| x.remove.len() + x.add.len()).sum(),
            _ => 0,
        };
        curve.push((
            k,
            format!(
                "{} ({elements} elements; of that, the diff in telesink {diff_ms:.1} ms)",
                stats(&mut times)
            ),
        ));
    }
    kernel.remove_blocking().expect("remove");

    println!("CIDRs                 {n4} IPv4 ({r4} merged ranges) + {n6} IPv6 ({r6} ranges)");
    println!("apply into empty      {}", stats(&mut first));
    println!("replace in one batch  {}", stats(&mut replace));
    println!("read {seen} clients    {}", stats(&mut read));
    println!(
        "apply, firewall unchanged (owner)   {}",
        stats(&mut unchanged)
    );
    for (k, s) in curve {
        println!("apply, {k:>6} ranges changed (owner) {s}");
    }
}

/// The plan with its first `k` IPv4 ranges replaced by single addresses elsewhere.
fn with_moved_ranges(p: &Plan, k: usize, salt: u32) -> Plan {
    let mut out = p.clone();
    if let Some(SetSpec {
        kind: SetKind::Interval(ranges),
        ..
    }) = out.sets.first_mut()
    {
        let moved: Vec<plan::Range> = ranges
            .iter()
            .take(k)
            .enumerate()
            .map(|(i, _)| {
                let a = u128::from(0xc612_0000u32 + ((i as u32 * 7 + salt) & 0xffff));
                (a, a)
            })
            .collect();
        let kept = ranges.iter().skip(k).copied();
        *ranges = plan::merge(kept.chain(moved));
    }
    out
}

fn stats(v: &mut [Duration]) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "min {:.1} ms, median {:.1} ms, max {:.1} ms ({} runs)",
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(v[v.len() - 1]),
        v.len()
    )
}

fn bench_plan(v4: Vec<plan::Range>, v6: Vec<plan::Range>, clients: usize) -> Plan {
    let mut p = Plan {
        forward: true,
        output: true,
        ..Plan::default()
    };
    for (fam, ranges) in [(Family::V4, v4), (Family::V6, v6)] {
        let block = plan::set_name("p_", "bench", fam);
        let acct = plan::set_name("acct_", "bench", fam);
        p.sets.push(SetSpec {
            name: block.clone(),
            family: fam,
            kind: SetKind::Interval(ranges),
        });
        p.sets.push(SetSpec {
            name: acct.clone(),
            family: fam,
            kind: SetKind::Accounting {
                size: clients as u32 * 2,
            },
        });
        let base = RuleSpec {
            hook: Hook::Forward,
            family: fam,
            via: Ifaces {
                iif: Some("lan0".into()),
                oif: None,
            },
            saddr: None,
            daddr: Some(block),
            l4: None,
            dport: None,
            not_local: false,
            action: Action::Account { set: acct },
            comment: "profile bench".into(),
        };
        p.rules.push(base.clone());
        p.rules.push(RuleSpec {
            action: Action::Reject,
            ..base
        });
    }
    p
}
