//! The nftables change listener is paused while telesink commits (so the kernel does not
//! describe every element of our own commits to it), and nothing another process does
//! meanwhile is missed: the ruleset's generation tells, and the table is written again.
//! Runs itself inside `unshare -n`, a throwaway network namespace; needs root.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::netns::require_root;
use telesink::firewall::events::generation;
use telesink::firewall::kernel::Kernel;
use telesink::firewall::plan::{Action, Family, Hook, Ifaces, Plan, RuleSpec, SetKind, SetSpec};

const NAME: &str = "commits_of_others_while_telesink_commits_are_never_missed";

fn nft(script: &str) -> String {
    let out = Command::new("nft")
        .args(script.split(' '))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nft {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One interval set with `ranges` and a rule rejecting it.
fn plan(ranges: Vec<(u128, u128)>) -> Plan {
    let set = "p_t_4".to_owned();
    Plan {
        forward: true,
        sets: vec![SetSpec {
            name: set.clone(),
            family: Family::V4,
            kind: SetKind::Interval(ranges),
        }],
        rules: vec![RuleSpec {
            hook: Hook::Forward,
            family: Family::V4,
            via: Ifaces::default(),
            saddr: None,
            daddr: Some(set),
            l4: None,
            dport: None,
            not_local: false,
            action: Action::Reject,
            comment: "profile t".into(),
        }],
        ..Plan::default()
    }
}

#[test]
fn commits_of_others_while_telesink_commits_are_never_missed() {
    if !require_root() {
        return;
    }
    if std::env::var_os("TELESINK_TEST_NETNS").is_none() {
        let status = Command::new("unshare")
            .arg("-n")
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture"])
            .env("TELESINK_TEST_NETNS", "1")
            .status()
            .unwrap();
        assert!(status.success(), "the test in its namespace failed");
        return;
    }
    // Every committed transaction moves the generation by one.
    let g0 = generation().unwrap();
    nft("add table inet other");
    assert_eq!(generation().unwrap(), g0.wrapping_add(1));

    let kernel = Kernel::spawn();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = 0xcb00_7100u128; // 203.0.113.0
    let step = |i: u128| Arc::new(plan(vec![(base, base + i % 200)]));
    runtime.block_on(kernel.apply(step(0), None)).unwrap();
    // Another process commits all the time while telesink applies changes.
    let other = std::thread::spawn(|| {
        for i in 0..400 {
            nft(&format!("add table inet other{i}"));
        }
    });
    // Whole writes are the big commits the listener is paused for.
    let started = Instant::now();
    let mut applied = 0u128;
    while !other.is_finished() && started.elapsed() < Duration::from_secs(60) {
        applied += 1;
        runtime
            .block_on(kernel.reinstall(step(applied), None))
            .unwrap();
    }
    other.join().unwrap();
    kernel.drain_blocking().unwrap();
    let unheard = kernel
        .stats
        .unheard
        .load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{applied} applies, {unheard} with commits of another process in between");
    assert!(
        unheard > 0,
        "no commit of another process fell into one of ours"
    );
    // The table is what the last plan says.
    let last = base + applied % 200;
    let listed = nft("list set inet telesink p_t_4");
    // As nft prints the one element: a range that is exactly a prefix as the prefix
    // (203.0.113.0-203.0.113.3 is 203.0.113.0/30), a single address as itself.
    let count = last - base + 1;
    let element = if count == 1 {
        "203.0.113.0".to_owned()
    } else if count.is_power_of_two() {
        format!("203.0.113.0/{}", 32 - count.trailing_zeros())
    } else {
        format!("203.0.113.0-{}", std::net::Ipv4Addr::from(last as u32))
    };
    let want = format!("elements = {{ {element} }}");
    assert!(listed.contains(&want), "{want} not in\n{listed}");
    // And tampering outside our commits is heard and undone.
    nft("flush set inet telesink p_t_4");
    let deadline = Instant::now() + Duration::from_secs(2);
    while !nft("list set inet telesink p_t_4").contains(&want) {
        assert!(
            Instant::now() < deadline,
            "the flushed set was not restored"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
