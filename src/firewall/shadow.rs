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
use hickory_proto::rr::{Name, RData, RecordType};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::netlink;
use super::plan::{Family, learned_set};
use crate::config::ShadowConfig;
use crate::dns::upstream::Upstream;
use crate::lists::Reach;
use crate::policy::{Policy, Scope};

/// A name to learn: the profile that blocks it and the name.
pub struct Learn {
    pub profile: u16,
    pub name: Name,
}

pub struct Shadow {
    tx: mpsc::Sender<Learn>,
    cfg: ShadowConfig,
    /// Learned addresses by (set, address) with their expiry.
    addrs: Mutex<HashMap<(String, IpAddr), Instant>>,
    /// Held while anything is sent to the kernel, so a full apply (which carries the
    /// learned addresses) and an incremental update never interleave.
    pub kernel: Mutex<()>,
    pub added: AtomicU64,
    pub skipped_allow: AtomicU64,
}

impl Shadow {
    /// The queue is bounded: under a flood of blocked queries new names wait for the
    /// next query rather than growing memory.
    pub fn start(
        cfg: ShadowConfig,
        upstream: Arc<Upstream>,
        policy: Arc<ArcSwap<Policy>>,
    ) -> Arc<Shadow> {
        let (tx, rx) = mpsc::channel(4096);
        let shadow = Arc::new(Shadow {
            tx,
            cfg,
            addrs: Mutex::new(HashMap::new()),
            kernel: Mutex::new(()),
            added: AtomicU64::new(0),
            skipped_allow: AtomicU64::new(0),
        });
        tokio::spawn(run(shadow.clone(), rx, upstream, policy));
        shadow
    }

    /// Called by the pipeline for a name a shadow profile blocked; never waits.
    pub fn learn(&self, profile: u16, name: &Name) {
        let _ = self.tx.try_send(Learn {
            profile,
            name: name.clone(),
        });
    }

    /// Queues every exact blocked name of the shadow profiles (at start and reload).
    pub fn seed(&self, policy: &Policy) {
        let mut n = 0usize;
        for (name, rule) in policy.index.iter() {
            let Some(Scope::Profile(p)) = policy.lists.get(rule.list as usize).map(|l| l.scope)
            else {
                continue;
            };
            if rule.allow
                || rule.reach != Reach::Exact
                || !policy.profiles.get(p as usize).is_some_and(|pr| pr.shadow)
            {
                continue;
            }
            let queued = Name::from_ascii(format!("{name}."))
                .is_ok_and(|name| self.tx.try_send(Learn { profile: p, name }).is_ok());
            n += usize::from(queued);
        }
        info!(names = n, "shadow resolution: names queued");
    }

    /// The learned addresses of one set with their remaining lifetimes, for a full apply.
    pub fn snapshot(&self, set: &str) -> Vec<(u128, Duration)> {
        let now = Instant::now();
        self.addrs
            .lock()
            .iter()
            .filter(|((s, _), until)| s == set && **until > now + Duration::from_secs(1))
            .map(|((_, ip), until)| (key(*ip), *until - now))
            .collect()
    }
}

fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

async fn run(
    shadow: Arc<Shadow>,
    mut rx: mpsc::Receiver<Learn>,
    upstream: Arc<Upstream>,
    policy: Arc<ArcSwap<Policy>>,
) {
    // (profile, name) -> when to resolve it again.
    let mut due: HashMap<(u16, Name), Instant> = HashMap::new();
    let mut last_generation = policy.load().generation;
    loop {
        let next = due.values().min().copied();
        let learn = match next {
            Some(at) => tokio::select! {
                l = rx.recv() => l,
                _ = tokio::time::sleep_until(at.into()) => None,
            },
            None => rx.recv().await,
        };
        let generation = policy.load().generation;
        if generation != last_generation {
            // A reload re-seeds from the new lists; names no longer blocked stop being
            // refreshed and their addresses expire on their own.
            due.clear();
            last_generation = generation;
        }
        if let Some(l) = learn {
            let key = (l.profile, l.name);
            if due.get(&key).is_none_or(|at| *at <= Instant::now()) {
                due.insert(key, Instant::now());
            }
        }
        let now = Instant::now();
        let ready: Vec<(u16, Name)> = due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for (profile, name) in ready {
            let ttl = resolve_into(&shadow, &upstream, &policy.load(), profile, &name).await;
            // Resolve again before the addresses run out (at 80% of their lifetime).
            due.insert((profile, name), Instant::now() + ttl.mul_f32(0.8));
        }
    }
}

/// Resolves A and AAAA for a name and adds the addresses; returns their lifetime.
async fn resolve_into(
    shadow: &Shadow,
    upstream: &Upstream,
    policy: &Policy,
    profile: u16,
    name: &Name,
) -> Duration {
    let floor = Duration::from_secs(u64::from(shadow.cfg.min_ttl_secs.max(1)));
    let cap = Duration::from_secs(u64::from(
        shadow.cfg.max_ttl_secs.max(shadow.cfg.min_ttl_secs).max(1),
    ));
    let Some(p) = policy.profiles.get(profile as usize) else {
        return cap;
    };
    let mut lifetime = cap;
    let mut found: Vec<(IpAddr, Duration)> = Vec::new();
    for qtype in [RecordType::A, RecordType::AAAA] {
        let answer = match upstream.resolve(Query::query(name.clone(), qtype)).await {
            Ok(a) => a,
            Err(e) => {
                debug!(%name, %e, "shadow resolution failed");
                continue;
            }
        };
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
    let mut by_set: HashMap<String, Vec<(IpAddr, Duration)>> = HashMap::new();
    {
        let mut addrs = shadow.addrs.lock();
        let now = Instant::now();
        addrs.retain(|_, until| *until > now);
        for (ip, ttl) in found {
            if policy.allow_nets.contains(ip) {
                shadow.skipped_allow.fetch_add(1, Ordering::Relaxed);
                info!(%name, %ip, profile = %p.name, "shadow: address is in the allow set; not blocked");
                continue;
            }
            let family = if ip.is_ipv4() { Family::V4 } else { Family::V6 };
            let set = learned_set(&p.name, family);
            let k = (set.clone(), ip);
            if !addrs.contains_key(&k) && addrs.len() >= shadow.cfg.max_addresses {
                warn!(%ip, "shadow: max_addresses reached; address not added");
                continue;
            }
            addrs.insert(k, now + ttl);
            by_set.entry(set).or_default().push((ip, ttl));
        }
    }
    for (set, elements) in by_set {
        let family = if elements[0].0.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        };
        let n = elements.len() as u64;
        let result = {
            let _kernel = shadow.kernel.lock();
            netlink::update_timed(&set, family, &elements)
        };
        match result {
            Ok(()) => {
                shadow.added.fetch_add(n, Ordering::Relaxed);
                debug!(%name, set, n, "shadow: addresses learned");
            }
            Err(e) => warn!(%name, set, "shadow: could not add addresses: {e}"),
        }
    }
    lifetime
}
