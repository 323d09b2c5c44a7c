//! The per-client counts as /metrics shows them: by device, kept by recency.
//!
//! The query path counts by address into `dns::ClientCounts` (its thread's own stripe,
//! no lookup of who the address is); every sweep (each scrape, and every 10 s) moves those
//! counts here under the address's identity, so every address of one device adds to one
//! count however often it changes. The firewall's per-address kernel counters are folded
//! in the same way at each reading, by their growth, so an element that times out of
//! its set takes nothing away.
//!
//! Bounded by recency, not by arrival: at most `max` identities, and one not seen for
//! `forget_after` makes room (its series ends). `client="other"` only takes counts when
//! more than `max` identities were active within `forget_after`; that is counted and
//! said in /health and status.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::hold::HoldOnce;
use super::labels::Identity;
use crate::dns::client_counts::{ClientCounts, Counted};

/// Which per-client counter a firewall accounting set feeds: the metric, its label and
/// the label's value (a profile's name or a bypass kind).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AcctKey {
    pub metric: &'static str,
    pub label: &'static str,
    pub value: Arc<str>,
}

/// One accounting set's reading: its name, what it counts, and each address's packets.
pub struct Reading {
    pub set: Arc<str>,
    pub key: AcctKey,
    pub counts: Vec<(IpAddr, u64)>,
}

#[derive(Default)]
struct Inner {
    /// Each identity's last activity (Unix seconds).
    seen: HashMap<Identity, u64>,
    dns: HashMap<(Identity, Counted), u64>,
    firewall: HashMap<(Identity, AcctKey), u64>,
    other_dns: HashMap<Counted, u64>,
    other_firewall: HashMap<AcctKey, u64>,
    /// The last kernel reading of each (set, address).
    kernel: HashMap<(Arc<str>, IpAddr), u64>,
    /// Counts of addresses not known as a device's at their first sweep, waiting for
    /// the next one (src/devices/hold.rs).
    held: Vec<(IpAddr, Counted, u64)>,
}

pub struct Tally {
    inner: Mutex<Inner>,
    hold: HoldOnce,
    max: usize,
    forget_after: AtomicU64,
    /// Counts that went to client="other" because `max` identities were active.
    pub overflow: AtomicU64,
    /// When that last happened (Unix seconds; 0: never).
    pub last_overflow: AtomicU64,
    /// Identities forgotten because they were idle for `forget_after`.
    pub forgotten: AtomicU64,
}

impl Tally {
    pub fn new(max: usize, forget_after_secs: u64) -> Self {
        Self {
            inner: Mutex::default(),
            hold: HoldOnce::default(),
            max: max.max(1),
            forget_after: AtomicU64::new(forget_after_secs),
            overflow: AtomicU64::new(0),
            last_overflow: AtomicU64::new(0),
            forgotten: AtomicU64::new(0),
        }
    }

    pub fn set_forget_after(&self, secs: u64) {
        self.forget_after.store(secs, Ordering::Relaxed);
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Identities held (each active within forget_after).
    pub fn len(&self) -> usize {
        self.inner.lock().seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves the query path's counts in, under each address's identity. An address not
    /// known as a device's the first time waits one sweep (src/devices/hold.rs; only
    /// with `identity_on`).
    pub fn sweep(
        &self,
        counts: &ClientCounts,
        who: &mut dyn FnMut(IpAddr) -> Identity,
        identity_on: bool,
        now: u64,
    ) {
        let mut moved: Vec<(Option<IpAddr>, Counted, u64)> = Vec::new();
        counts.drain(&mut |ip, what, n| moved.push((ip, what, n)));
        let held = std::mem::take(&mut self.inner.lock().held);
        moved.extend(held.into_iter().map(|(ip, what, n)| (Some(ip), what, n)));
        // Who each address is, before the lock: `who` takes the device registry's.
        let ids: Vec<(Option<IpAddr>, Option<Identity>, Counted, u64)> = moved
            .into_iter()
            .map(|(ip, what, n)| (ip, ip.map(&mut *who), what, n))
            .collect();
        let mut inner = self.inner.lock();
        self.expire(&mut inner, now);
        let mut ready = Vec::with_capacity(ids.len());
        self.hold.next_round();
        for (ip, id, what, n) in ids {
            if let (Some(ip), Some(id)) = (ip, &id)
                && self.hold.hold(ip, id, identity_on)
            {
                inner.held.push((ip, what, n));
                continue;
            }
            ready.push((id, what, n));
        }
        for (id, what, n) in ready {
            match id.filter(|id| self.admit(&mut inner, *id, now)) {
                Some(id) => *inner.dns.entry((id, what)).or_default() += n,
                None => {
                    if id.is_some() {
                        self.overflowed(n, now);
                    }
                    *inner.other_dns.entry(what).or_default() += n;
                }
            }
        }
    }

    /// Folds a reading of the firewall's counters in by their growth since the last one.
    /// An address no longer in a set that was read has left it (its element timed out):
    /// what it counted stays counted.
    pub fn fold_firewall(
        &self,
        readings: Vec<Reading>,
        who: &mut dyn FnMut(IpAddr) -> Identity,
        now: u64,
    ) {
        let mut grown: Vec<(IpAddr, AcctKey, u64)> = Vec::new();
        {
            let mut inner = self.inner.lock();
            let read: std::collections::HashSet<Arc<str>> =
                readings.iter().map(|r| r.set.clone()).collect();
            let mut fresh: HashMap<(Arc<str>, IpAddr), u64> = HashMap::new();
            for r in readings {
                for (ip, packets) in r.counts {
                    let before = inner.kernel.get(&(r.set.clone(), ip)).copied();
                    // A counter that went down is a new element (or a table written anew).
                    let delta = match before {
                        Some(b) if packets >= b => packets - b,
                        _ => packets,
                    };
                    fresh.insert((r.set.clone(), ip), packets);
                    if delta > 0 {
                        grown.push((ip, r.key.clone(), delta));
                    }
                }
            }
            inner.kernel.retain(|(set, _), _| !read.contains(set));
            inner.kernel.extend(fresh);
        }
        let ids: Vec<(Identity, AcctKey, u64)> = grown
            .into_iter()
            .map(|(ip, key, n)| (who(ip), key, n))
            .collect();
        let mut inner = self.inner.lock();
        for (id, key, n) in ids {
            if self.admit(&mut inner, id, now) {
                *inner.firewall.entry((id, key)).or_default() += n;
            } else {
                self.overflowed(n, now);
                *inner.other_firewall.entry(key).or_default() += n;
            }
        }
    }

    /// Every DNS count: (identity, or None for "other"; what; count).
    pub fn dns_rows(&self) -> Vec<(Option<Identity>, Counted, u64)> {
        let inner = self.inner.lock();
        let mut out: Vec<_> = inner
            .dns
            .iter()
            .map(|((id, what), n)| (Some(*id), *what, *n))
            .collect();
        out.extend(inner.other_dns.iter().map(|(what, n)| (None, *what, *n)));
        out
    }

    /// Every firewall count, likewise.
    pub fn firewall_rows(&self) -> Vec<(Option<Identity>, AcctKey, u64)> {
        let inner = self.inner.lock();
        let mut out: Vec<_> = inner
            .firewall
            .iter()
            .map(|((id, key), n)| (Some(*id), key.clone(), *n))
            .collect();
        out.extend(
            inner
                .other_firewall
                .iter()
                .map(|(key, n)| (None, key.clone(), *n)),
        );
        out
    }

    fn overflowed(&self, n: u64, now: u64) {
        self.overflow.fetch_add(n, Ordering::Relaxed);
        self.last_overflow.store(now, Ordering::Relaxed);
    }

    /// Whether `id` has (or now gets) its own counts.
    fn admit(&self, inner: &mut Inner, id: Identity, now: u64) -> bool {
        if let Some(last) = inner.seen.get_mut(&id) {
            *last = now;
            return true;
        }
        if inner.seen.len() >= self.max {
            self.expire(inner, now);
        }
        if inner.seen.len() >= self.max {
            return false;
        }
        inner.seen.insert(id, now);
        true
    }

    /// Forgets identities idle for `forget_after`, with their counts.
    fn expire(&self, inner: &mut Inner, now: u64) {
        let keep_after = now.saturating_sub(self.forget_after.load(Ordering::Relaxed));
        let before = inner.seen.len();
        inner.seen.retain(|_, last| *last >= keep_after);
        if inner.seen.len() == before {
            return;
        }
        self.forgotten
            .fetch_add((before - inner.seen.len()) as u64, Ordering::Relaxed);
        let seen = std::mem::take(&mut inner.seen);
        inner.dns.retain(|(id, _), _| seen.contains_key(id));
        inner.firewall.retain(|(id, _), _| seen.contains_key(id));
        inner.seen = seen;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::devices::Mac;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn addresses_of_one_device_add_up_and_idle_ones_make_room() {
        let counts = ClientCounts::new(100);
        let tally = Tally::new(2, 100);
        let dev = Identity::Device(Mac([2, 0, 0, 0, 0, 1]));
        let mut who = |a: IpAddr| {
            if a == ip(3) {
                Identity::Address(a)
            } else {
                dev
            }
        };
        // One device on two addresses, a day apart; one address-only client.
        counts.blocked(ip(1), 1);
        tally.sweep(&counts, &mut who, true, 1000);
        counts.blocked(ip(2), 1);
        counts.blocked(ip(2), 1);
        counts.blocked(ip(3), 1);
        tally.sweep(&counts, &mut who, true, 1010);
        // ip(3) is new and not a device's: held for one sweep.
        assert!(
            tally
                .dns_rows()
                .iter()
                .all(|r| r.0 != Some(Identity::Address(ip(3))))
        );
        tally.sweep(&counts, &mut who, true, 1010);
        let rows = tally.dns_rows();
        let of = |id: Option<Identity>| {
            rows.iter()
                .filter(|r| r.0 == id && r.1 == Counted::Blocked(1))
                .map(|r| r.2)
                .sum::<u64>()
        };
        assert_eq!(of(Some(dev)), 3);
        assert_eq!(of(Some(Identity::Address(ip(3)))), 1);
        // Both places taken by active clients: a newcomer is "other", counted.
        counts.blocked(ip(4), 1);
        let mut who4 = |a: IpAddr| Identity::Address(a);
        tally.sweep(&counts, &mut who4, true, 1050);
        tally.sweep(&counts, &mut who4, true, 1050);
        assert_eq!(tally.overflow.load(Ordering::Relaxed), 1);
        // Past forget_after for the device (last seen 1010): it makes room.
        counts.blocked(ip(4), 1);
        counts.blocked(ip(3), 1);
        tally.sweep(&counts, &mut who4, true, 1105);
        counts.blocked(ip(5), 1);
        tally.sweep(&counts, &mut who4, true, 1111);
        tally.sweep(&counts, &mut who4, true, 1111);
        let rows = tally.dns_rows();
        assert!(rows.iter().all(|r| r.0 != Some(dev)), "{rows:?}");
        assert!(rows.iter().any(|r| r.0 == Some(Identity::Address(ip(5)))));
        assert_eq!(tally.forgotten.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn firewall_counts_survive_elements_timing_out() {
        let tally = Tally::new(10, 1000);
        let dev = Identity::Device(Mac([2, 0, 0, 0, 0, 1]));
        let mut who = |_| dev;
        let key = AcctKey {
            metric: "m",
            label: "profile",
            value: "p".into(),
        };
        let reading = |counts: Vec<(IpAddr, u64)>| {
            vec![Reading {
                set: "acct_p_v4".into(),
                key: key.clone(),
                counts,
            }]
        };
        tally.fold_firewall(reading(vec![(ip(1), 5)]), &mut who, 1);
        tally.fold_firewall(reading(vec![(ip(1), 7), (ip(2), 1)]), &mut who, 2);
        // ip(1)'s element timed out; it comes back from zero later.
        tally.fold_firewall(reading(vec![(ip(2), 1)]), &mut who, 3);
        tally.fold_firewall(reading(vec![(ip(2), 1), (ip(1), 2)]), &mut who, 4);
        let rows = tally.firewall_rows();
        assert_eq!(rows, vec![(Some(dev), key, 10)]);
    }
}
