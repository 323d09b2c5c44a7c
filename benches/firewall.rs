//! Firewall apply and readback at scale: 100,000 IPv4 + 20,000 IPv6 CIDRs (random, fixed
//! seed), applied as one batch, replaced as one batch, and the counters of 10,000
//! clients read back; then, through the firewall owner as the daemon applies (the
//! incremental path), with the nftables change listener and without it: a change that
//! leaves the firewall as it is, changes of k ranges, a toggle of a small profile and of
//! the big one (rules change, sets kept), and a whole write (what a restore does). Each
//! is timed with the owner idle (drained first), the owner's own time apart from what
//! the caller waited. Last, the real daemon with the same 100k CIDRs: the "live after" of
//! `telesink profile disable|enable` for a small CIDR profile and for the big one. Runs
//! itself inside `unshare -n` (a throwaway network namespace), needs root, sends no
//! traffic. `cargo bench --bench firewall`.

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

    // The daemon first, then the owner without the listener, then with it: an owner's
    // listener outlives its benchmark (its thread holds the owner's queue), and a
    // listener that is not ours is never paused for our commits.
    let daemon = if full { daemon_toggles(n4) } else { Vec::new() };
    let without = owner_rows(Kernel::spawn_without_listener(), &plan, runs);
    let with = owner_rows(Kernel::spawn(), &plan, runs);

    println!("CIDRs                 {n4} IPv4 ({r4} merged ranges) + {n6} IPv6 ({r6} ranges)");
    println!("apply into empty      {}", stats(&mut first));
    println!("replace in one batch  {}", stats(&mut replace));
    println!("read {seen} clients    {}", stats(&mut read));
    println!(
        "through the owner, idle (owner's own time; the caller's wait beyond it is queue time):"
    );
    println!("| change | with the change listener | without it |");
    println!("|---|---|---|");
    for ((what, a), (_, b)) in with.iter().zip(&without) {
        println!("| {what} | {a} | {b} |");
    }
    for (what, ms) in daemon {
        println!("daemon: {what}: live after {ms}");
    }
}

/// The owner's rows for one kernel: each change timed with the owner drained first.
fn owner_rows(kernel: Kernel, plan: &Plan, runs: usize) -> Vec<(String, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let base = Arc::new(plan.clone());
    kernel.apply_blocking(base.clone()).expect("install");
    // One change as the daemon sends it (incremental, or `whole` as a restore writes),
    // the owner idle before it starts.
    let timed_as =
        |whole: bool, p: Arc<Plan>, times: &mut Vec<Duration>, own: &mut Vec<Duration>| {
            kernel.drain_blocking().expect("drain");
            let t = Instant::now();
            let applied = match whole {
                true => runtime.block_on(kernel.reinstall(p, None)),
                false => runtime.block_on(kernel.apply(p, None)),
            };
            applied.expect("apply through the owner");
            times.push(t.elapsed());
            own.push(Duration::from_micros(
                kernel
                    .stats
                    .last_apply_us
                    .load(std::sync::atomic::Ordering::Relaxed),
            ));
        };
    let timed =
        |p, times: &mut Vec<Duration>, own: &mut Vec<Duration>| timed_as(false, p, times, own);
    // The owner's own time per change, and the median of what the caller waited beyond
    // it (the queue: jobs still running before this one).
    let row = |what: String, times: &mut Vec<Duration>, own: &mut Vec<Duration>| {
        let mut queue: Vec<Duration> = times
            .iter()
            .zip(own.iter())
            .map(|(t, o)| t.saturating_sub(*o))
            .collect();
        queue.sort_unstable();
        let q = queue[queue.len() / 2].as_secs_f64() * 1e3;
        (what, format!("{}; queue median {q:.2} ms", stats(own)))
    };
    let mut out = Vec::new();
    let (mut t, mut o) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(5) {
        timed(base.clone(), &mut t, &mut o);
    }
    out.push(row("firewall unchanged".into(), &mut t, &mut o));
    for k in [1usize, 10, 100, 1_000, 10_000] {
        let (mut t, mut o) = (Vec::new(), Vec::new());
        for run in 0..runs {
            // k of the IPv4 ranges move to another /32 of 198.18.0.0/15 (benchmark space,
            // outside every random range's prefix only by chance: merge decides), then back.
            let changed = Arc::new(with_moved_ranges(plan, k, run as u32));
            timed(changed, &mut t, &mut o);
            kernel.apply_blocking(base.clone()).expect("back");
        }
        let changed = with_moved_ranges(plan, k, 0);
        let elements: usize = match changed.change_from(plan) {
            plan::PlanChange::Elements(d) => d.iter().map(|x| x.remove.len() + x.add.len()).sum(),
            _ => 0,
        };
        out.push(row(
            format!("{k} ranges changed ({elements} elements)"),
            &mut t,
            &mut o,
        ));
    }
    // Toggles: a small profile's rules go and come back; the big profile's too. Both
    // keep every set (PlanChange::Rules).
    let with_small = Arc::new(with_small_profile(plan, true));
    let small_off = Arc::new(with_small_profile(plan, false));
    kernel
        .apply_blocking(with_small.clone())
        .expect("small profile");
    let (mut t, mut o) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        timed(small_off.clone(), &mut t, &mut o);
        timed(with_small.clone(), &mut t, &mut o);
    }
    out.push(row("toggle of a 2-range profile".into(), &mut t, &mut o));
    let big_off = Arc::new(without_rules_of(&with_small, "profile bench"));
    let (mut t, mut o) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        timed(big_off.clone(), &mut t, &mut o);
        timed(with_small.clone(), &mut t, &mut o);
    }
    out.push(row(
        "toggle of the 100k-range profile".into(),
        &mut t,
        &mut o,
    ));
    // A whole write, as a restore after `nft flush ruleset` does.
    let (mut t, mut o) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        timed_as(true, with_small.clone(), &mut t, &mut o);
    }
    out.push(row(
        "whole table written (a restore)".into(),
        &mut t,
        &mut o,
    ));
    kernel.remove_blocking().expect("remove");
    out
}

/// The plan plus a second, small profile (2 ranges) whose rules are there (`on`) or not;
/// its set stays either way, as the daemon's plans keep a profile's set when it is off.
fn with_small_profile(p: &Plan, on: bool) -> Plan {
    let mut out = p.clone();
    let name = plan::set_name("p_", "small", Family::V4);
    out.sets.push(SetSpec {
        name: name.clone(),
        family: Family::V4,
        kind: SetKind::Interval(vec![(0xcb00_7100, 0xcb00_71ff), (0xc633_6400, 0xc633_6400)]),
    });
    if on {
        out.rules.push(RuleSpec {
            hook: Hook::Forward,
            family: Family::V4,
            via: Ifaces {
                iif: Some("lan0".into()),
                oif: None,
            },
            saddr: None,
            daddr: Some(name),
            l4: None,
            dport: None,
            not_local: false,
            action: Action::Reject,
            comment: "profile small".into(),
        });
    }
    out
}

fn without_rules_of(p: &Plan, comment: &str) -> Plan {
    let mut out = p.clone();
    out.rules.retain(|r| r.comment != comment);
    out
}

/// The real daemon in this namespace with `n4` random IPv4 CIDRs in one profile and two
/// in another: what `telesink profile disable|enable` reports as live after, for each.
fn daemon_toggles(n4: usize) -> Vec<(String, String)> {
    let dir = std::env::temp_dir().join(format!("telesink-bench-fw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let mut r = Rng(0x0005_eed0_fb16);
    let mut big = String::new();
    for _ in 0..n4 {
        let len = 16 + (r.next() % 17) as u32;
        let start = (r.next() as u32) & (u32::MAX.checked_shl(32 - len).unwrap_or(0));
        big += &format!("{}/{len}\n", std::net::Ipv4Addr::from(start));
    }
    std::fs::write(dir.join("big.cidrs"), big).expect("write");
    std::fs::write(dir.join("small.cidrs"), "203.0.113.0/24\n198.51.100.0/32\n").expect("write");
    let cfg = dir.join("telesink.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[policy]\nlists_dir = \"{d}\"\n[firewall]\nenabled = true\nlan = [\"lo\"]\n[firewall.bypass]\nenabled = false\n[profiles.big]\nenabled = true\ncidrs = [\"big.cidrs\"]\n[profiles.small]\nenabled = true\ncidrs = [\"small.cidrs\"]\n[evidence]\nenabled = false\n[control]\nsocket = \"{d}/control.sock\"\nstate_file = \"{d}/state.json\"\n",
            d = dir.display()
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_telesink"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("TELESINK_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start telesink");
    let socket = dir.join("control.sock");
    let ctl = |args: &[&str]| -> Option<f64> {
        let out = Command::new(env!("CARGO_BIN_EXE_telesink"))
            .args(args)
            .arg("--json")
            .arg("--socket")
            .arg(&socket)
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.get("ms").and_then(serde_json::Value::as_f64)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Command::new(env!("CARGO_BIN_EXE_telesink"))
        .args(["status", "--socket"])
        .arg(&socket)
        .output()
        .map_or(true, |o| !o.status.success())
    {
        assert!(Instant::now() < deadline, "the daemon did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut out = Vec::new();
    for profile in ["small", "big"] {
        let mut times = Vec::new();
        for _ in 0..5 {
            for verb in ["disable", "enable"] {
                if let Some(ms) = ctl(&["profile", verb, profile]) {
                    times.push(Duration::from_secs_f64(ms / 1e3));
                }
            }
        }
        if !times.is_empty() {
            out.push((
                format!("toggle of profile {profile} ({} CIDRs installed)", n4 + 2),
                stats(&mut times),
            ));
        }
    }
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    out
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
                idle_secs: 0,
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
