//! The per-query work that is not the DNS message itself (verdict, log-only check,
//! outcome and per-client counters) allocates nothing once a client is known: a counting
//! allocator proves it, so a change that adds an allocation there fails here.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::IpAddr;

use telesink::config::LoadedConfig;
use telesink::dns::ClientCounts;
use telesink::dns::{Outcome, Outcomes};
use telesink::policy::{self, QName, Toggles, Verdict};

struct Counting;

thread_local! {
    // Per thread, so other tests running in parallel do not count.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

#[test]
fn the_per_query_policy_and_metrics_path_does_not_allocate() {
    let dir = std::env::temp_dir().join(format!("telesink-noalloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.list"), "blocked.test\n*.suffix.test\n").unwrap();
    std::fs::write(dir.join("b.list"), "logged.test\n").unwrap();
    std::fs::write(
        dir.join("t.toml"),
        "[policy]\nlists_dir = \".\"\n[profiles.a]\nenabled = true\nlists = [\"a.list\"]\n[profiles.b]\nenabled = true\nlists = [\"b.list\"]\n",
    )
    .unwrap();
    let cfg = LoadedConfig::load(&dir.join("t.toml")).unwrap();
    let base = policy::build(&cfg, 1).policy.unwrap();
    let mut toggles = Toggles::default();
    toggles.set_log_only(telesink::policy::Toggle {
        profile: "b".into(),
        group: None,
        enabled: true,
        until: None,
    });
    let policy = base.with_toggles(toggles, 2).unwrap();
    let names: Vec<QName> = [
        "blocked.test",
        "x.y.suffix.test",
        "logged.test",
        "free.test",
    ]
    .iter()
    .map(|n| QName::parse(n).unwrap())
    .collect();
    let counts = ClientCounts::new(10);
    let outcomes = Outcomes::default();
    let client: IpAddr = "192.0.2.7".parse().unwrap();
    // Counters are kept under each profile's number (stable across reloads), as the
    // pipeline does. The first sight of a client may allocate its counters; later
    // queries must not.
    let id = |p: u16| policy.profiles[p as usize].id;
    counts.blocked(client, id(0));
    counts.logged(client, id(1));
    outcomes.saw(client);

    let mut blocked = 0;
    let mut logged = 0;
    let n = allocations(|| {
        for _ in 0..10_000 {
            for name in &names {
                let group = policy.group_of(client);
                match policy.verdict(group, name) {
                    Verdict::Block { profile, .. } => {
                        counts.blocked(client, id(profile));
                        blocked += 1;
                    }
                    Verdict::Pass { .. } => {
                        if let Some(p) = policy.would_block(group, name) {
                            counts.logged(client, id(p));
                            logged += 1;
                        }
                    }
                }
                outcomes.record(Outcome::Blocked);
                outcomes.saw(client);
            }
        }
    });
    assert_eq!((blocked, logged), (20_000, 10_000));
    assert_eq!(n, 0, "{n} allocations on the per-query path");
    let _ = std::fs::remove_dir_all(dir);
}

/// The evidence aggregate, for a name already in it: the query path's whole cost for the
/// ledger is one shard lock, no allocation.
#[test]
fn counting_a_known_name_into_the_evidence_aggregate_does_not_allocate() {
    use std::sync::Arc;
    use telesink::evidence::{Aggregate, Layer};
    let agg = Aggregate::new(200, 1000);
    let profile: Arc<str> = "office-telemetry".into();
    let client: IpAddr = "192.0.2.7".parse().unwrap();
    let now = 1_796_083_200;
    agg.record(
        client,
        &profile,
        Layer::DnsBlocked,
        "nexus.officeapps.live.com",
        "nexus.officeapps.live.com",
        1,
        now,
    );
    let n = allocations(|| {
        for i in 0..10_000 {
            agg.record(
                client,
                &profile,
                Layer::DnsBlocked,
                "nexus.officeapps.live.com",
                "nexus.officeapps.live.com",
                1,
                now + i,
            );
        }
    });
    assert_eq!(n, 0, "{n} allocations counting a known name");
    assert_eq!(agg.drain((now / 86_400) as u32)[0].count, 10_001);
}
