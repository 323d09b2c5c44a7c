//! Shadow resolution: the firewall learns the addresses of names the DNS side blocks.
//!
//! Telemetry clients that already know an address (cached, or hard-coded next to the
//! name) connect without asking DNS. For profiles with `shadow = true`, telesink resolves
//! their blocked names itself, never handing the answers to a client, and puts the
//! addresses into the profile's timed `learned_*` set, which the firewall rejects like its
//! CIDR set. Names come from the lists (exact entries, at start and on reload) and from
//! client queries the pipeline blocks (which also covers names under suffix rules).
//! Addresses in the allow set are never added (shared CDN and Microsoft 365 addresses
//! must keep working); each one skipped is counted. Each address lives for its TTL, at
//! least `min_ttl_secs`, and the name is resolved again before that runs out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hickory_proto::op::Query;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::ShadowConfig;
use crate::dns::upstream::Upstream;
use crate::firewall::kernel::{Kernel, Learned};
use crate::firewall::plan::{ElementDiff, Family, learned_set};
use crate::lists::Reach;
use crate::policy::{Policy, Scope};
use crate::snapshot::{Learner, Snapshot};

mod tracked;

/// A name to learn: the profile that blocks it (its number, `Profile::id`: stable across
/// reloads, unlike its position), the name, and whether a client asked for it (else the
/// lists name it).
pub struct Learn {
    pub profile: u16,
    pub name: Name,
    pub asked: bool,
}

/// Counts that outlive one run of shadow resolution (a reload may stop and start it).
#[derive(Default)]
pub struct ShadowCounts {
    pub added: AtomicU64,
    pub skipped_allow: AtomicU64,
    /// Names not queued because the queue was full (a flood of blocked queries).
    pub queue_full: AtomicU64,
    /// Addresses not added because `max_addresses` were already learned.
    pub over_max: AtomicU64,
    /// Addresses not learned because an allowed answer had revealed them (shared).
    pub shared_skipped: AtomicU64,
    /// Learned addresses removed because an allowed answer revealed them.
    pub shared_removed: AtomicU64,
    /// Addresses not learned because they are never learned: upstreams, the resolvers
    /// of resolv.conf, the gateway's own addresses, `never_learn_cidrs`.
    pub never_learn_skipped: AtomicU64,
    /// Shared addresses not remembered because `max_shared_addresses` were.
    pub shared_not_remembered: AtomicU64,
    /// Names being resolved again and again now (a gauge), names not tracked because
    /// `max_names` were, and client-asked names forgotten because nobody asked again.
    pub names_tracked: AtomicU64,
    pub names_dropped: AtomicU64,
    pub names_forgotten: AtomicU64,
}

/// The handle the snapshot carries. Dropping the last one ends the resolving task: it
/// holds only the receiving end of the queue.
pub struct Shadow {
    tx: mpsc::Sender<Learn>,
    learned: Arc<LearnedAddrs>,
    shared: Arc<SharedAddrs>,
    counts: Arc<ShadowCounts>,
    kernel: Kernel,
}

/// Learned addresses, each with the learned sets it is in and when it expires there;
/// keyed by address, so an allowed answer can ask "is this one learned?" at once. The
/// firewall owner reads them for every full apply. Sharded by address, with the number
/// of entries kept apart: the query path (an allowed answer) locks one shard, and no
/// scan (expiry, a runtime allow, a full apply) holds more than one shard at a time.
pub struct LearnedAddrs {
    shards: Vec<Mutex<HashMap<IpAddr, Vec<Learnt>>>>,
    /// (address, set) entries held.
    total: std::sync::atomic::AtomicUsize,
}

const LEARNED_SHARDS: usize = 16;

impl Default for LearnedAddrs {
    fn default() -> Self {
        LearnedAddrs {
            shards: (0..LEARNED_SHARDS).map(|_| Mutex::default()).collect(),
            total: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

/// One learned address in one set: until when, and the name it was learned for (so a
/// runtime allow of that name can take it out at once).
struct Learnt {
    set: String,
    until: Instant,
    name: Name,
}

impl LearnedAddrs {
    /// Takes out every address learned for a name `allowed` says is now allowed; returns
    /// the removals for the kernel, per set. The apply path sends them with the change
    /// that allowed the name, so DNS and the learned sets change together.
    /// What `forget` would take out, without taking it: the apply path sends these to
    /// the kernel first, so a kernel error leaves the map as it was.
    pub fn forgettable(&self, allowed: &impl Fn(&Name) -> bool) -> Vec<ElementDiff> {
        let mut by_set: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for shard in &self.shards {
            for (ip, sets) in shard.lock().iter() {
                for l in sets.iter().filter(|l| allowed(&l.name)) {
                    by_set.entry(l.set.clone()).or_default().push(*ip);
                }
            }
        }
        removals(by_set)
    }

    pub fn forget(&self, allowed: impl Fn(&Name) -> bool) -> Vec<ElementDiff> {
        let mut by_set: HashMap<String, Vec<IpAddr>> = HashMap::new();
        self.retain(|ip, l| {
            let gone = allowed(&l.name);
            if gone {
                by_set.entry(l.set.clone()).or_default().push(ip);
            }
            !gone
        });
        removals(by_set)
    }

    fn shard(&self, ip: IpAddr) -> &Mutex<HashMap<IpAddr, Vec<Learnt>>> {
        &self.shards[crate::host::client_shard(ip, LEARNED_SHARDS)]
    }

    /// Keeps the entries `keep` says, one shard at a time.
    fn retain(&self, mut keep: impl FnMut(IpAddr, &Learnt) -> bool) {
        for shard in &self.shards {
            let mut gone = 0;
            let mut addrs = shard.lock();
            addrs.retain(|ip, sets| {
                let before = sets.len();
                sets.retain(|l| keep(*ip, l));
                gone += before - sets.len();
                !sets.is_empty()
            });
            self.total.fetch_sub(gone, Ordering::Relaxed);
        }
    }

    /// Lets expired entries go (their kernel elements time out on their own).
    fn sweep(&self, now: Instant) {
        self.retain(|_, l| l.until > now);
    }

    /// Takes every set entry of an address out (an allowed answer revealed it).
    fn take(&self, ip: IpAddr) -> Option<Vec<Learnt>> {
        let sets = self.shard(ip).lock().remove(&ip)?;
        self.total.fetch_sub(sets.len(), Ordering::Relaxed);
        Some(sets)
    }

    /// Learns an address into a set until `until`, or renews it; false when it is new
    /// and `max` entries are held.
    fn learn(&self, ip: IpAddr, set: &str, until: Instant, name: &Name, max: usize) -> bool {
        let mut addrs = self.shard(ip).lock();
        let sets = addrs.entry(ip).or_default();
        if let Some(l) = sets.iter_mut().find(|l| l.set == set) {
            l.until = until;
            return true;
        }
        if self.total.load(Ordering::Relaxed) >= max {
            if sets.is_empty() {
                addrs.remove(&ip);
            }
            return false;
        }
        sets.push(Learnt {
            set: set.to_owned(),
            until,
            name: name.clone(),
        });
        self.total.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// Element removals, one diff per set.
fn removals(by_set: HashMap<String, Vec<IpAddr>>) -> Vec<ElementDiff> {
    by_set
        .into_iter()
        .map(|(set, ips)| ElementDiff {
            family: if ips[0].is_ipv4() {
                Family::V4
            } else {
                Family::V6
            },
            set,
            remove: ips.iter().map(|ip| (key(*ip), false)).collect(),
            add: Vec::new(),
        })
        .collect()
}

impl Learned for LearnedAddrs {
    fn remaining(&self, set: &str) -> Vec<(u128, Duration)> {
        let now = Instant::now();
        let soon = now + Duration::from_secs(1);
        let mut out = Vec::new();
        for shard in &self.shards {
            for (ip, sets) in shard.lock().iter() {
                for l in sets {
                    if l.set == set && l.until > soon {
                        out.push((key(*ip), l.until - now));
                    }
                }
            }
        }
        out
    }
}

/// Addresses that answers to allowed names revealed, with when that was last seen plus
/// `shared_memory_secs`. Such an address serves something the policy lets through (a CDN
/// front end, a collector shared with cloud save): it is never learned, and removed from
/// the learned sets the moment an allowed answer shows it. Sharded, bounded.
pub struct SharedAddrs {
    shards: Vec<Mutex<HashMap<IpAddr, Instant>>>,
    memory: Duration,
    max_per_shard: usize,
}

const SHARED_SHARDS: usize = 16;

impl SharedAddrs {
    pub fn new(memory: Duration, max: usize) -> Self {
        SharedAddrs {
            shards: (0..SHARED_SHARDS).map(|_| Mutex::default()).collect(),
            memory,
            max_per_shard: max.div_ceil(SHARED_SHARDS).max(1),
        }
    }

    fn shard(&self, ip: IpAddr) -> &Mutex<HashMap<IpAddr, Instant>> {
        let h = match ip {
            IpAddr::V4(a) => u32::from(a) as usize,
            IpAddr::V6(a) => (u128::from(a) ^ (u128::from(a) >> 64)) as usize,
        };
        &self.shards[h.wrapping_mul(0x9e37_79b9) % SHARED_SHARDS]
    }

    /// Remembers (or refreshes) an address; false when the shard was full of live
    /// entries and it could not be remembered.
    fn saw(&self, ip: IpAddr, now: Instant) -> bool {
        let mut shard = self.shard(ip).lock();
        if !shard.contains_key(&ip) && shard.len() >= self.max_per_shard {
            shard.retain(|_, until| *until > now);
            if shard.len() >= self.max_per_shard {
                return false;
            }
        }
        shard.insert(ip, now + self.memory);
        true
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.shard(ip)
            .lock()
            .get(&ip)
            .is_some_and(|until| *until > Instant::now())
    }
}

/// Names waiting to be resolved. Bounded: under a flood of blocked queries new names
/// wait for the next query rather than growing memory; what does not fit is counted.
const QUEUE: usize = 4096;

/// What the resolving task needs besides its queue.
pub struct Context {
    pub cfg: ShadowConfig,
    pub upstream: Arc<Upstream>,
    pub current: Arc<ArcSwap<Snapshot>>,
    pub kernel: Kernel,
    pub counts: Arc<ShadowCounts>,
    pub shared: Arc<SharedAddrs>,
    /// A cluster node shares what it learns (src/cluster/).
    pub share: Option<Arc<crate::cluster_status::ClusterStatus>>,
}

impl Shadow {
    pub fn start(ctx: Context, learned: Arc<LearnedAddrs>) -> Arc<Shadow> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let counts = ctx.counts.clone();
        let (shared, kernel) = (ctx.shared.clone(), ctx.kernel.clone());
        tokio::spawn(run(ctx, learned.clone(), rx));
        Arc::new(Shadow {
            tx,
            learned,
            shared,
            counts,
            kernel,
        })
    }

    pub fn learned(&self) -> Arc<LearnedAddrs> {
        self.learned.clone()
    }
}

impl Learner for Shadow {
    /// Called by the pipeline for a name a shadow profile blocked; never waits.
    fn learn(&self, profile: u16, name: &Name) {
        let queued = self.tx.try_send(Learn {
            profile,
            name: name.clone(),
            asked: true,
        });
        if queued.is_err() {
            self.counts.queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Remembers the addresses an allowed answer carries as shared, and takes any of them
    /// that was learned out of the learned sets at once (in a task of its own: the query
    /// path never waits on the kernel).
    fn allowed(&self, answers: &[Record]) {
        let now = Instant::now();
        let mut revealed: Vec<(IpAddr, Vec<Learnt>)> = Vec::new();
        for record in answers {
            let ip = match &record.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                _ => continue,
            };
            if !self.shared.saw(ip, now) {
                self.counts
                    .shared_not_remembered
                    .fetch_add(1, Ordering::Relaxed);
            }
            if let Some(sets) = self.learned.take(ip) {
                revealed.push((ip, sets));
            }
        }
        if revealed.is_empty() {
            return;
        }
        let (kernel, counts) = (self.kernel.clone(), self.counts.clone());
        tokio::spawn(async move {
            let mut by_set: HashMap<String, Vec<IpAddr>> = HashMap::new();
            for (ip, sets) in revealed {
                for l in sets {
                    by_set.entry(l.set).or_default().push(ip);
                }
            }
            let diffs = removals(by_set);
            let n: usize = diffs.iter().map(|d| d.remove.len()).sum();
            match kernel.update_elements(diffs.clone()).await {
                Ok(()) => {
                    counts.shared_removed.fetch_add(n as u64, Ordering::Relaxed);
                    for d in &diffs {
                        info!(
                            set = d.set,
                            n = d.remove.len(),
                            "shadow: an allowed answer revealed learned addresses as shared; removed"
                        );
                    }
                }
                Err(e) => warn!("shadow: could not remove shared addresses: {e}"),
            }
        });
    }

    /// Queues the exact blocked names of the shadow profiles, waiting for room in a task
    /// of its own, so a list of any size is seeded whole (the queue stays bounded).
    fn seed(&self, policy: &Policy) {
        let names: Vec<(u16, Name)> = policy
            .index
            .iter()
            .filter_map(|(name, rule)| {
                let Some(Scope::Profile(p)) = policy.lists.get(rule.list as usize).map(|l| l.scope)
                else {
                    return None;
                };
                let profile = policy.profiles.get(p as usize)?;
                if rule.allow || rule.reach != Reach::Exact || !profile.shadow {
                    return None;
                }
                Some((profile.id, Name::from_ascii(format!("{name}.")).ok()?))
            })
            .chain(
                policy
                    .runtime
                    .exact_blocks()
                    .filter(|_| {
                        policy
                            .profiles
                            .get(policy.runtime_profile as usize)
                            .is_some_and(|p| p.shadow)
                    })
                    .filter_map(|name| {
                        let runtime = policy.profiles.get(policy.runtime_profile as usize)?;
                        Some((runtime.id, Name::from_ascii(format!("{name}.")).ok()?))
                    }),
            )
            .collect();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let total = names.len();
            let mut n = 0usize;
            for (profile, name) in names {
                let learn = Learn {
                    profile,
                    name,
                    asked: false,
                };
                if tx.send(learn).await.is_err() {
                    break;
                }
                n += 1;
            }
            info!(names = n, of = total, "shadow resolution: names queued");
        });
    }
}

/// Addresses shadow resolution must never learn, whatever a blocked name resolves to:
/// the upstreams it forwards to, the resolvers of resolv.conf and the gateway's own
/// addresses. Learning one would cut the gateway off from DNS or from itself. Read at
/// each resolution, so a changed WAN address or resolv.conf counts at once.
fn never_learn(upstream: &Upstream, snapshot: &Snapshot) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = upstream.addresses();
    let resolv_conf = &snapshot.config.config.upstream.resolv_conf;
    out.extend(
        crate::dns::upstream::from_resolv_conf(resolv_conf, &[])
            .iter()
            .map(|s| s.ip()),
    );
    out.extend(crate::host::own_addresses());
    out
}

fn family_of(ip: IpAddr) -> Family {
    if ip.is_ipv4() { Family::V4 } else { Family::V6 }
}

fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

async fn run(ctx: Context, learned: Arc<LearnedAddrs>, mut rx: mpsc::Receiver<Learn>) {
    let forget_asked = Duration::from_secs(ctx.cfg.forget_asked_after_secs.max(1));
    let mut tracked = tracked::Tracked::new(ctx.cfg.max_names, forget_asked);
    // Expired learned entries are let go once a minute, a shard at a time, not at every
    // resolution under one lock.
    let mut swept = Instant::now();
    // The lists the names came from: a reload with other lists re-seeds; a toggle, which
    // shares the lists, changes nothing here.
    // A weak handle: it keeps the old index's address from being reused (so a new one
    // can never look like it), not its contents.
    let mut lists = Arc::downgrade(&ctx.current.load().index);
    loop {
        let learn = match tracked.next_due() {
            Some(at) => tokio::select! {
                l = rx.recv() => match l {
                    Some(l) => Some(l),
                    None => return,
                },
                _ = tokio::time::sleep_until(at.into()) => None,
            },
            // Every handle dropped: the snapshot in force has no shadow profile.
            None => match rx.recv().await {
                Some(l) => Some(l),
                None => return,
            },
        };
        let index = ctx.current.load().index.clone();
        if !std::sync::Weak::ptr_eq(&lists, &Arc::downgrade(&index)) {
            // Names no longer listed stop being refreshed; their addresses expire.
            tracked.clear();
            lists = Arc::downgrade(&index);
        }
        drop(index);
        let now = Instant::now();
        if now.duration_since(swept) >= Duration::from_secs(60) {
            learned.sweep(now);
            swept = now;
        }
        if let Some(l) = learn
            && tracked.add((l.profile, l.name), l.asked, now) == tracked::Added::Dropped
        {
            ctx.counts.names_dropped.fetch_add(1, Ordering::Relaxed);
        }
        for (profile, name) in tracked.take_due(now) {
            let snapshot = ctx.current.load_full();
            let ttl = resolve_into(&ctx, &learned, &snapshot, profile, &name).await;
            // Resolve again before the addresses run out (at 80% of their lifetime).
            let now = Instant::now();
            if tracked.again((profile, name), now + ttl.mul_f32(0.8), now) {
                ctx.counts.names_forgotten.fetch_add(1, Ordering::Relaxed);
            }
        }
        ctx.counts
            .names_tracked
            .store(tracked.len() as u64, Ordering::Relaxed);
    }
}

/// Takes in learned addresses another node of the cluster shared: each one this node
/// would have learned itself (a shadow profile of that name, not in the allow set,
/// never-learn or shared), into its profile's learned set until its time, the same
/// timeouts as its own. Returns how many went in and how many were refused.
pub async fn adopt_shared(
    learned: &LearnedAddrs,
    shared: &SharedAddrs,
    kernel: &Kernel,
    upstream: &Upstream,
    policy: &Snapshot,
    max: usize,
    items: Vec<crate::cluster_status::SharedLearn>,
) -> (u64, u64) {
    let now_unix = crate::clock::unix_now();
    let now = Instant::now();
    // The addresses this node never learns (its upstreams and resolvers, its own): an
    // address another node learned is checked as if it had been learned here.
    let never = never_learn(upstream, policy);
    let mut refused = 0u64;
    let mut by_set: HashMap<String, Vec<(IpAddr, Duration)>> = HashMap::new();
    for item in items {
        let profile = policy
            .profiles
            .iter()
            .find(|p| p.name == item.profile && p.shadow);
        let left = Duration::from_secs(item.expires_at.saturating_sub(now_unix));
        let name = Name::from_ascii(format!("{}.", item.name)).ok();
        let (Some(p), Some(name)) = (profile, name) else {
            refused += 1;
            continue;
        };
        let ip = item.addr;
        if left < Duration::from_secs(1)
            || policy.allow_nets.contains(ip)
            || policy.never_learn_nets.contains(ip)
            || shared.contains(ip)
            || never.contains(&ip)
        {
            refused += 1;
            continue;
        }
        let set = learned_set(&p.name, family_of(ip));
        if !learned.learn(ip, &set, now + left, &name, max) {
            refused += 1;
            continue;
        }
        by_set.entry(set).or_default().push((ip, left));
    }
    let mut added = 0u64;
    for (set, elements) in by_set {
        let family = family_of(elements[0].0);
        let n = elements.len() as u64;
        match kernel.update_timed(set.clone(), family, elements).await {
            Ok(()) => added += n,
            Err(e) => warn!(set, "cluster: could not add shared learned addresses: {e}"),
        }
    }
    (added, refused)
}

/// Resolves A and AAAA for a name and adds the addresses; returns their lifetime.
async fn resolve_into(
    ctx: &Context,
    learned: &LearnedAddrs,
    policy: &Policy,
    profile: u16,
    name: &Name,
) -> Duration {
    let floor = Duration::from_secs(u64::from(ctx.cfg.min_ttl_secs.max(1)));
    let cap = Duration::from_secs(u64::from(
        ctx.cfg.max_ttl_secs.max(ctx.cfg.min_ttl_secs).max(1),
    ));
    // By number: a reload may have moved the profile since the name was queued.
    let Some(p) = policy.profiles.iter().find(|p| p.id == profile) else {
        return cap;
    };
    // A name served from shared hosting (never_learn_zones): its addresses belong to
    // everyone on that front end. DNS blocks the name; the firewall never learns it.
    let lower = name.to_lowercase().to_ascii();
    let lower = lower.trim_end_matches('.');
    if let Some(zone) = policy.never_learn_zones.covering(lower) {
        ctx.counts
            .never_learn_skipped
            .fetch_add(1, Ordering::Relaxed);
        info!(%name, zone, profile = %p.name, "shadow: the name is in a shared-hosting zone; never learned");
        return cap;
    }
    // A name a runtime rule allows (for any group): the clients allowed it must reach its
    // addresses, and the learned sets are per profile, not per group.
    if let Some(q) = crate::policy::QName::parse(lower)
        && policy.runtime.allows_anywhere(&q)
    {
        ctx.counts
            .never_learn_skipped
            .fetch_add(1, Ordering::Relaxed);
        info!(%name, profile = %p.name, "shadow: a runtime rule allows the name; never learned");
        return cap;
    }
    let mut lifetime = cap;
    let mut found: Vec<(IpAddr, Duration)> = Vec::new();
    for qtype in [RecordType::A, RecordType::AAAA] {
        let answer = match ctx
            .upstream
            .resolve(Query::query(name.clone(), qtype), Default::default())
            .await
        {
            Ok(a) => a,
            Err(e) => {
                debug!(%name, %e, "shadow resolution failed");
                continue;
            }
        };
        // An answer whose CNAME chain passes through shared hosting: same reason.
        let via_shared = answer.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) => {
                let t = target.0.to_lowercase().to_ascii();
                policy
                    .never_learn_zones
                    .covering(t.trim_end_matches('.'))
                    .map(str::to_owned)
            }
            _ => None,
        });
        if let Some(zone) = via_shared {
            ctx.counts
                .never_learn_skipped
                .fetch_add(1, Ordering::Relaxed);
            info!(%name, zone, profile = %p.name, "shadow: the answer's CNAME chain passes through a shared-hosting zone; never learned");
            continue;
        }
        for record in &answer.answers {
            let ip = match &record.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                _ => continue,
            };
            let ttl = Duration::from_secs(u64::from(record.ttl)).clamp(floor, cap);
            lifetime = lifetime.min(ttl);
            found.push((ip, ttl));
        }
    }
    let never = never_learn(&ctx.upstream, &ctx.current.load());
    let mut by_set: HashMap<String, Vec<(IpAddr, Duration)>> = HashMap::new();
    {
        let now = Instant::now();
        for (ip, ttl) in found {
            if policy.allow_nets.contains(ip) {
                ctx.counts.skipped_allow.fetch_add(1, Ordering::Relaxed);
                info!(%name, %ip, profile = %p.name, "shadow: address is in the allow set; not blocked");
                continue;
            }
            if policy.never_learn_nets.contains(ip) || never.contains(&ip) {
                ctx.counts
                    .never_learn_skipped
                    .fetch_add(1, Ordering::Relaxed);
                info!(%name, %ip, profile = %p.name, "shadow: address is never learned (an upstream, the gateway's own, or never_learn_cidrs); not blocked");
                continue;
            }
            if ctx.shared.contains(ip) {
                ctx.counts.shared_skipped.fetch_add(1, Ordering::Relaxed);
                info!(%name, %ip, profile = %p.name, "shadow: an allowed name resolves to this address too; not blocked");
                continue;
            }
            let family = if ip.is_ipv4() { Family::V4 } else { Family::V6 };
            let set = learned_set(&p.name, family);
            if !learned.learn(ip, &set, now + ttl, name, ctx.cfg.max_addresses) {
                ctx.counts.over_max.fetch_add(1, Ordering::Relaxed);
                warn!(%ip, "shadow: max_addresses reached; address not added");
                continue;
            }
            by_set.entry(set).or_default().push((ip, ttl));
        }
    }
    for (set, elements) in by_set {
        let family = family_of(elements[0].0);
        let n = elements.len() as u64;
        let shared: Vec<(IpAddr, Duration)> = match &ctx.share {
            Some(_) => elements.clone(),
            None => Vec::new(),
        };
        match ctx.kernel.update_timed(set.clone(), family, elements).await {
            Ok(()) => {
                ctx.counts.added.fetch_add(n, Ordering::Relaxed);
                debug!(%name, set, n, "shadow: addresses learned");
                if let Some(share) = &ctx.share {
                    let now = crate::clock::unix_now();
                    let name = name.to_ascii();
                    for (addr, ttl) in shared {
                        share.offer(crate::cluster_status::SharedLearn {
                            addr,
                            profile: p.name.clone(),
                            name: name.trim_end_matches('.').to_owned(),
                            expires_at: now + ttl.as_secs(),
                            node: share.node.clone(),
                        });
                    }
                }
            }
            Err(e) => warn!(%name, set, "shadow: could not add addresses: {e}"),
        }
    }
    lifetime
}
