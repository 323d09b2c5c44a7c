//! The in-memory aggregate the query path counts into: per UTC day, client address,
//! profile and layer, each name with its count and first and last sighting. The query
//! path never waits on the disk: it counts into its thread's own buffer and, for a name
//! already there, allocates nothing; the buffers are folded into the shards before every
//! flush and every reading of the counters; a task writes the counts to the ledger every
//! `flush_secs`.
//!
//! Bounded three times, each bound its own setting and counter: distinct names per (day,
//! client, profile, layer) (beyond it the rule that matched stands in for the name), rows
//! waiting for a flush (`max_pending_rows`: beyond it new attempts are dropped until the
//! next flush), and the day's rows remembered between flushes to hold the name cap
//! (`max_day_rows`: beyond it they are forgotten at a flush, which only loosens the name
//! cap; nothing counted is lost).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use hashbrown::HashTable;
use parking_lot::Mutex;

use super::Sighting;
use crate::stripe::Striped;

const SHARDS: usize = 16;

/// Where an attempt was stopped or seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    /// A DNS query answered with a sinkhole.
    DnsBlocked,
    /// A query a log-only (observed) profile would have blocked, answered normally.
    DnsObserved,
    /// Packets the firewall rejected (kernel counters, per client and profile).
    FirewallRejected,
    /// DNS sent around the gateway (plain DNS, DoT, DoH), stopped by the firewall.
    Bypass,
}

impl Layer {
    pub const ALL: [Layer; 4] = [
        Layer::DnsBlocked,
        Layer::DnsObserved,
        Layer::FirewallRejected,
        Layer::Bypass,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Layer::DnsBlocked => "dns-blocked",
            Layer::DnsObserved => "dns-observed",
            Layer::FirewallRejected => "firewall-rejected",
            Layer::Bypass => "bypass",
        }
    }

    pub fn parse(text: &str) -> Option<Layer> {
        Layer::ALL.into_iter().find(|l| l.name() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    day: u32,
    client: IpAddr,
    /// The profile's name (or the bypass kind), shared with the policy: a reload that
    /// reorders profiles cannot mislabel what was counted before it.
    profile: Arc<str>,
    layer: Layer,
}

#[derive(Debug, Clone, Copy)]
struct Counts {
    count: u64,
    first: u64,
    last: u64,
}

/// One row as the ledger stores it (the client still an address: the label is made when
/// it is written, by the same rules as the metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub day: u32,
    pub client: IpAddr,
    pub profile: String,
    pub layer: Layer,
    pub name: String,
    pub count: u64,
    pub first: u64,
    pub last: u64,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Key, HashMap<Box<str>, Counts, Fast>, Fast>,
    rows: usize,
}

type Fast = foldhash::fast::RandomState;

/// A row as a counting thread buffers it, until `fold`.
struct LocalRow {
    /// Arrival order in its thread's buffer: rows are folded in the order they came, so
    /// the names cap keeps the day's first names, as if counted straight into the shards.
    seq: u64,
    day: u32,
    client: IpAddr,
    profile: Arc<str>,
    layer: Layer,
    /// The name and rule, shared with the query's record: a new row copies nothing.
    seen: Arc<Sighting>,
    count: u64,
    first: u64,
    last: u64,
}

#[derive(Default)]
struct Local {
    rows: HashTable<LocalRow>,
    next: u64,
}

/// Rows a counting thread buffers at most between folds.
const LOCAL_ROWS: usize = 1024;

pub struct Aggregate {
    /// Per counting thread: what its queries counted since the last fold. The query path
    /// writes only its own stripe (no shared cache line, no reference count touched on a
    /// known row); the bounds below apply when the rows are folded into the shards.
    local: Striped<Local>,
    local_hasher: foldhash::fast::RandomState,
    shards: Vec<Mutex<Shard>>,
    names_cap: usize,
    /// Rows with a count waiting for a flush, at most.
    max_pending: usize,
    pending: AtomicUsize,
    /// Rows held in memory (waiting, and the day's remembered ones), at most after a
    /// flush.
    max_day_rows: usize,
    rows: AtomicUsize,
    capped: AtomicU64,
    dropped: AtomicU64,
    /// The day's rows forgotten at a flush because more than `max_day_rows` were held.
    pub day_rows_forgotten: AtomicU64,
}

impl Aggregate {
    pub fn new(names_cap: usize, max_pending: usize) -> Self {
        Self::with_day_rows(names_cap, max_pending, usize::MAX)
    }

    pub fn with_day_rows(names_cap: usize, max_pending: usize, max_day_rows: usize) -> Self {
        Aggregate {
            local: Striped::default(),
            local_hasher: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            names_cap: names_cap.max(1),
            max_pending: max_pending.max(1),
            pending: AtomicUsize::new(0),
            max_day_rows: max_day_rows.max(1),
            rows: AtomicUsize::new(0),
            capped: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            day_rows_forgotten: AtomicU64::new(0),
        }
    }

    /// One more row waits for the flush, if the bound allows; else the attempt is
    /// dropped and counted.
    fn take_pending(&self, n: u64) -> bool {
        if self.pending.load(Ordering::Relaxed) >= self.max_pending {
            self.dropped.fetch_add(n, Ordering::Relaxed);
            return false;
        }
        self.pending.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Counts `n` attempts of `client` at `name` (`rule`: the rule that matched, recorded
    /// instead of the name once the day holds `names_cap` names) at Unix time `now`.
    ///
    /// Into the calling thread's buffer (src/stripe.rs), which `fold` moves into the
    /// shards: before every drain and every reading of the counters. A buffer holds at
    /// most `LOCAL_ROWS` rows; a new row beyond that goes to the shards directly.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn record(
        &self,
        client: IpAddr,
        profile: &Arc<str>,
        layer: Layer,
        name: &str,
        rule: &str,
        n: u64,
        now: u64,
    ) {
        let seen = || {
            Arc::new(Sighting {
                name: name.into(),
                rule: (rule != name).then(|| rule.into()),
                at: None,
            })
        };
        self.count(client, profile, layer, name, seen, n, now);
    }

    /// `record` for a query's sighting (the name and rule it was decided by): a new row
    /// shares it instead of copying the name.
    #[inline]
    pub fn record_seen(
        &self,
        client: IpAddr,
        profile: &Arc<str>,
        layer: Layer,
        seen: &Arc<Sighting>,
        n: u64,
        now: u64,
    ) {
        self.count(client, profile, layer, &seen.name, || seen.clone(), n, now);
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn count(
        &self,
        client: IpAddr,
        profile: &Arc<str>,
        layer: Layer,
        name: &str,
        seen: impl FnOnce() -> Arc<Sighting>,
        n: u64,
        now: u64,
    ) {
        let day = (now / 86_400) as u32;
        let hash = self.local_hasher.hash_one((
            day,
            client,
            Arc::as_ptr(profile) as *const u8,
            layer,
            name,
        ));
        let mut local = self.local.mine();
        let found = local.rows.find_mut(hash, |r| {
            r.day == day
                && r.client == client
                && Arc::ptr_eq(&r.profile, profile)
                && r.layer == layer
                && *r.seen.name == *name
        });
        if let Some(r) = found {
            r.count += n;
            r.last = r.last.max(now);
            return;
        }
        if local.rows.len() >= LOCAL_ROWS {
            // A full buffer is not folded here: folding a thousand rows on the query
            // path stalled the queries behind it (p99 at 20,000 qps with a million-name
            // list went from about 1 ms to 5 ms). This row goes to the shards as it
            // would without buffers; the buffer waits for the next reading or flush.
            drop(local);
            let s = seen();
            self.record_in_shards(
                client,
                profile,
                layer,
                s.name.clone(),
                s.rule(),
                n,
                now,
                now,
            );
            return;
        }
        local.next += 1;
        let row = LocalRow {
            seq: local.next,
            day,
            client,
            profile: profile.clone(),
            layer,
            seen: seen(),
            count: n,
            first: now,
            last: now,
        };
        local.rows.insert_unique(hash, row, |r| {
            self.local_hasher.hash_one((
                r.day,
                r.client,
                Arc::as_ptr(&r.profile) as *const u8,
                r.layer,
                &*r.seen.name,
            ))
        });
    }

    /// Moves every thread's buffered counts into the shards, where the bounds apply.
    pub fn fold(&self) {
        let mut rows = Vec::new();
        self.local.each(|l| rows.extend(l.rows.drain()));
        self.fold_rows(rows);
    }

    fn fold_rows(&self, mut rows: Vec<LocalRow>) {
        rows.sort_unstable_by_key(|r| (r.first, r.seq));
        for r in rows {
            self.record_in_shards(
                r.client,
                &r.profile,
                r.layer,
                r.seen.name.clone(),
                r.seen.rule(),
                r.count,
                r.first,
                r.last,
            );
        }
    }

    /// Counts `n` attempts seen from `first` to `now` into the shards, under the bounds.
    #[allow(clippy::too_many_arguments)]
    fn record_in_shards(
        &self,
        client: IpAddr,
        profile: &Arc<str>,
        layer: Layer,
        name: Box<str>,
        rule: &str,
        n: u64,
        first: u64,
        now: u64,
    ) {
        let key = Key {
            day: (now / 86_400) as u32,
            client,
            profile: profile.clone(),
            layer,
        };
        let shard = &self.shards[crate::host::client_shard(client, SHARDS)];
        let mut shard = shard.lock();
        let shard = &mut *shard;
        let names = shard.map.entry(key).or_default();
        // A remembered row of the day (count 0 since the last flush) waits again.
        let bump = |c: &mut Counts| {
            if c.count == 0 && !self.take_pending(n) {
                return;
            }
            c.count += n;
            c.first = c.first.min(first);
            c.last = c.last.max(now);
        };
        if let Some(c) = names.get_mut(&*name) {
            return bump(c);
        }
        let stored = if names.len() >= self.names_cap {
            self.capped.fetch_add(n, Ordering::Relaxed);
            if let Some(c) = names.get_mut(rule) {
                return bump(c);
            }
            rule.into()
        } else {
            name
        };
        if !self.take_pending(n) {
            return;
        }
        self.rows.fetch_add(1, Ordering::Relaxed);
        shard.rows += 1;
        names.insert(
            stored,
            Counts {
                count: n,
                first,
                last: now,
            },
        );
    }

    /// The rows counted since the last drain. The names of `today` stay (with zero
    /// counts), so the per-day name cap holds across flushes, unless more than
    /// `max_day_rows` are held: then they are forgotten (counted); older days are let go.
    pub fn drain(&self, today: u32) -> Vec<Row> {
        self.fold();
        let out = self.drain_rows(today);
        // Each row drained was one waiting (rows counted meanwhile into a drained shard
        // stay counted as waiting).
        let _ = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(out.len()))
            });
        if self.rows.load(Ordering::Relaxed) > self.max_day_rows {
            let mut forgotten = 0;
            for shard in &self.shards {
                let mut shard = shard.lock();
                forgotten += shard.rows;
                shard.rows = 0;
                shard.map.clear();
            }
            self.rows.fetch_sub(forgotten, Ordering::Relaxed);
            self.day_rows_forgotten
                .fetch_add(forgotten as u64, Ordering::Relaxed);
            tracing::warn!(
                "evidence: {forgotten} rows of the day forgotten after the flush ([evidence] max_day_rows = {}): the per-client name cap starts over for today; nothing counted is lost",
                self.max_day_rows
            );
        }
        out
    }

    fn drain_rows(&self, today: u32) -> Vec<Row> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock();
            let shard = &mut *shard;
            let mut freed = 0;
            shard.map.retain(|key, names| {
                for (name, c) in names.iter_mut().filter(|(_, c)| c.count > 0) {
                    out.push(Row {
                        day: key.day,
                        client: key.client,
                        profile: key.profile.to_string(),
                        layer: key.layer,
                        name: name.to_string(),
                        count: c.count,
                        first: c.first,
                        last: c.last,
                    });
                    c.count = 0;
                }
                let keep = key.day >= today;
                if !keep {
                    freed += names.len();
                }
                keep
            });
            shard.rows -= freed;
            self.rows.fetch_sub(freed, Ordering::Relaxed);
        }
        out
    }

    /// Puts rows back after a failed write, so the next flush retries them.
    pub fn restore(&self, rows: Vec<Row>) {
        for r in rows {
            let profile: Arc<str> = r.profile.into();
            let name = r.name.into_boxed_str();
            self.record_in_shards(
                r.client,
                &profile,
                r.layer,
                name.clone(),
                &name,
                r.count,
                r.first,
                r.last,
            );
        }
    }

    /// Rows waiting for a flush now (for the metrics and /health; folds first).
    pub fn pending(&self) -> usize {
        self.fold();
        self.pending.load(Ordering::Relaxed)
    }

    /// Rows held in memory now: waiting, and the day's remembered ones (folds first).
    pub fn held(&self) -> usize {
        self.fold();
        self.rows.load(Ordering::Relaxed)
    }

    /// Names recorded as their rule because the client's day was at `names_cap`.
    pub fn capped(&self) -> u64 {
        self.fold();
        self.capped.load(Ordering::Relaxed)
    }

    /// Attempts not recorded because `max_pending` rows were waiting for a flush.
    pub fn dropped(&self) -> u64 {
        self.fold();
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_beyond_the_cap_count_as_their_rule_and_drains_are_deltas() {
        let a = Aggregate::new(2, 100);
        let p: Arc<str> = "office".into();
        let c = IpAddr::from([192, 0, 2, 1]);
        let day = 20_000 * 86_400;
        for name in ["a.x.com", "b.x.com", "c.x.com", "d.x.com", "a.x.com"] {
            a.record(c, &p, Layer::DnsBlocked, name, "*.x.com", 1, day + 5);
        }
        let mut rows = a.drain(20_000);
        rows.sort_by(|x, y| x.name.cmp(&y.name));
        let got: Vec<(&str, u64)> = rows.iter().map(|r| (r.name.as_str(), r.count)).collect();
        assert_eq!(got, [("*.x.com", 2), ("a.x.com", 2), ("b.x.com", 1)]);
        assert_eq!(a.capped(), 2);
        // The next drain has only what came since.
        a.record(c, &p, Layer::DnsBlocked, "b.x.com", "*.x.com", 3, day + 9);
        let rows = a.drain(20_000);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].count, rows[0].first, rows[0].last),
            (3, day + 5, day + 9)
        );
        // A new day lets the old one go.
        assert!(a.drain(20_001).is_empty());
        assert_eq!((a.pending(), a.held()), (0, 0));
    }

    #[test]
    fn rows_beyond_the_bound_are_dropped_and_counted() {
        let a = Aggregate::new(100, 2);
        let p: Arc<str> = "office".into();
        for i in 0..5u8 {
            a.record(
                IpAddr::from([192, 0, 2, i]),
                &p,
                Layer::DnsBlocked,
                "n.x",
                "n.x",
                1,
                0,
            );
        }
        assert_eq!(a.pending(), 2);
        assert_eq!(a.dropped(), 3);
        // The day's remembered rows are their own bound: past it they are forgotten at
        // the flush, counted, and nothing waiting is lost.
        let b = Aggregate::with_day_rows(100, 100, 3);
        for i in 0..5u8 {
            b.record(
                IpAddr::from([192, 0, 2, i]),
                &p,
                Layer::DnsBlocked,
                "n.x",
                "n.x",
                1,
                0,
            );
        }
        assert_eq!(b.drain(0).len(), 5);
        assert_eq!(b.day_rows_forgotten.load(Ordering::Relaxed), 5);
        assert_eq!(b.held(), 0);
    }

    /// `max_rows` bounds rows waiting for a flush, not the day's distinct rows: after a
    /// flush, new names are taken again (they were dropped until midnight before).
    #[test]
    fn the_pending_bound_frees_at_each_flush() {
        let a = Aggregate::new(100, 2);
        let p: Arc<str> = "office".into();
        let c = IpAddr::from([192, 0, 2, 1]);
        let day = 20_000u64 * 86_400;
        a.record(c, &p, Layer::DnsBlocked, "a.x", "a.x", 1, day);
        a.record(c, &p, Layer::DnsBlocked, "b.x", "b.x", 1, day);
        assert_eq!(a.drain(20_000).len(), 2);
        a.record(c, &p, Layer::DnsBlocked, "c.x", "c.x", 1, day + 1);
        a.record(c, &p, Layer::DnsBlocked, "d.x", "d.x", 1, day + 1);
        let rows = a.drain(20_000);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(a.dropped(), 0);
        // A third waiting row is over the bound: dropped and counted.
        for name in ["e.x", "f.x", "g.x"] {
            a.record(c, &p, Layer::DnsBlocked, name, name, 1, day + 2);
        }
        assert_eq!(a.dropped(), 1);
        assert_eq!(a.drain(20_000).len(), 2);
    }
}
