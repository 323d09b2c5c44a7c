//! The per-query work that is not the DNS message itself (verdict, log-only check,
//! outcome and per-client counters) allocates nothing once a client is known: a counting
//! allocator proves it, so a change that adds an allocation there fails here.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::IpAddr;

use telesink::config::LoadedConfig;
use telesink::dns::ClientCounts;
use telesink::dns::pipeline::Path;
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
        by: None,
        why: None,
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
    outcomes.answered(Outcome::Blocked, client, Path::Full);

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
                outcomes.answered(Outcome::Blocked, client, Path::Full);
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

/// The whole per-query path of a repeated request on the UDP listener, with every
/// default-on feature doing its per-query work: the rate limiter (the client not exempt,
/// every query through its bucket), the replay of a kept answer, the outcome, client and
/// answer-path counters, the evidence ledger's aggregate and the cache-hit count. Device
/// identity does nothing per query (src/devices/: applied when counts are read). Once
/// the client and the names are known, none of it allocates.
#[test]
fn a_replayed_answer_allocates_nothing_with_every_default_feature_on() {
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use telesink::dns::pipeline::{Pipeline, QueryRecord};
    use telesink::dns::ratelimit::{Admit, Limiter};
    use telesink::dns::udp::Replayer;
    use telesink::evidence::Aggregate;
    use telesink::snapshot::Snapshot;

    let dir = std::env::temp_dir().join(format!("telesink-noalloc-udp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.list"), "blocked.test\n").unwrap();
    std::fs::write(
        dir.join("t.toml"),
        "[policy]\nlists_dir = \".\"\nallowed_clients = [\"192.0.2.0/24\"]\n[profiles.a]\nenabled = true\nlists = [\"a.list\"]\n\
         [server.rate_limit]\nexempt_gateway = false\nqueries_per_sec = 100000000\nburst = 100000000\n",
    )
    .unwrap();
    let cfg = LoadedConfig::load(&dir.join("t.toml")).unwrap();
    let policy = policy::build(&cfg, 1).policy.unwrap();
    assert!(policy.rate.enabled, "the rate limiter is on by default");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let snapshot = Arc::new(Snapshot::new(policy, Arc::new(cfg), None));
    let pipeline = Pipeline {
        policy: Arc::new(arc_swap::ArcSwap::new(snapshot)),
        cache: Arc::new(telesink::dns::cache::Cache::new(
            100,
            telesink::dns::cache::Limits {
                min_ttl: 0,
                max_ttl: 86_400,
                negative_max_ttl: 3600,
            },
        )),
        clients: Arc::new(ClientCounts::new(100)),
        upstream: Arc::new(telesink::dns::upstream::Upstream::plain(
            vec!["127.0.0.1:9".parse().unwrap()],
            Duration::from_secs(1),
        )),
        forward_slots: Arc::new(tokio::sync::Semaphore::new(10)),
        udp_payload_max: 1232,
        outcomes: Arc::new(Outcomes::default()),
        limiter: Arc::new(Limiter::new(1000)),
        evidence: Some(Arc::new(Aggregate::new(200, 100_000))),
        tail: Default::default(),
    };
    let client: IpAddr = "192.0.2.7".parse().unwrap();
    let query = |name: &str| {
        let mut p = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            p.push(l.len() as u8);
            p.extend_from_slice(l.as_bytes());
        }
        p.extend_from_slice(&[0, 0, 1, 0, 1]);
        p
    };
    let policy = pipeline.policy.load_full();
    let mut replayer = Replayer::new(2);
    // A blocked name's first answer (the direct path), kept; a cache hit's record kept.
    let blocked = query("blocked.test");
    let (bytes, record) = pipeline
        .answer_direct(&policy, &blocked, client)
        .expect("a blocked name is answered from its bytes");
    assert!(record.sighting.is_some() && record.blocked.is_some());
    replayer.keep(&blocked, &bytes, record);
    let cached = query("www.example.test");
    let hit = QueryRecord {
        generation: policy.generation,
        group: policy.group_of(client),
        replayable: true,
        until: Some(Instant::now() + Duration::from_secs(3600)),
        ..QueryRecord::new(Outcome::Cached)
    };
    replayer.keep(&cached, &bytes, hit);
    let mut out = Vec::with_capacity(1500);
    // First sight of the client and the name may allocate (its counters, its row).
    for packet in [&blocked, &cached] {
        assert_eq!(pipeline.admit(&policy, client), Admit::Yes);
        assert!(replayer.replay(&pipeline, &policy, packet, client, &mut out));
    }
    let n = allocations(|| {
        for _ in 0..10_000 {
            for packet in [&blocked, &cached] {
                let policy = pipeline.policy.load();
                assert_eq!(pipeline.admit(&policy, client), Admit::Yes);
                assert!(replayer.replay(&pipeline, &policy, packet, client, &mut out));
            }
        }
    });
    assert_eq!(n, 0, "{n} allocations on the replay path");
    assert_eq!(pipeline.outcomes.get(Outcome::Blocked), 10_001);
    assert_eq!(pipeline.outcomes.get(Outcome::Cached), 10_001);
    let rows = pipeline.evidence.as_ref().unwrap().drain(0);
    assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 10_001);
    let _ = std::fs::remove_dir_all(dir);
}
