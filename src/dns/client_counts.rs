//! Blocked queries per client address and profile (by the profile's number, stable
//! across reloads: src/policy/ids.rs), as the query path counts them: one lock of the
//! counting thread's own stripe (src/stripe.rs), no lookup of which device the address is. `drain` hands the counts on (to
//! src/devices/tally.rs, which keeps them by device) and forgets addresses that counted
//! nothing since the drain before, so this table holds only the addresses active between
//! two sweeps, at most the bound it is built with (src/services.rs: 16 x `max_clients`;
//! beyond it `client="other"`, counted; an address
//! counted by two threads takes two places). No allocation once a client is known.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::stripe::Striped;

type Table = HashMap<IpAddr, Counts, foldhash::fast::RandomState>;

/// Per client: at `2 * id` the blocks of the profile numbered `id` (`policy::ids`: a
/// number per profile name, stable across reloads), at `2 * id + 1` the would-be blocks
/// of it in log-only mode; and the queries over the client's rate limit. Grown to the
/// highest number seen (about 2 x 64 for a config); allocation only when it grows.
#[derive(Default)]
struct Counts {
    profiles: Vec<u64>,
    rate_limited: u64,
    /// Counted since the last drain.
    touched: bool,
    /// When the address came (an arrival number): a drain hands the addresses on in the
    /// order they came, whichever thread's stripe counted them, so the labels' bound
    /// (src/devices/tally.rs) goes to the first comers.
    arrived: u64,
}

impl Counts {
    fn bump(&mut self, slot: Slot) {
        self.touched = true;
        match slot {
            Slot::RateLimited => self.rate_limited += 1,
            Slot::Profile(i) => {
                if self.profiles.len() <= i {
                    self.profiles.resize(i + 1, 0);
                }
                self.profiles[i] += 1;
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Slot {
    Profile(usize),
    RateLimited,
}

/// What one counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counted {
    /// Blocked by the profile with this number.
    Blocked(u16),
    /// Would have been blocked by the profile with this number, in log-only mode.
    Logged(u16),
    RateLimited,
}

pub struct ClientCounts {
    max_clients: usize,
    known: AtomicUsize,
    arrivals: AtomicU64,
    /// Per counting thread (src/stripe.rs): a client served by two threads has an
    /// entry in each, added up by the reader.
    shards: Striped<Table>,
    other: Mutex<Counts>,
    pub overflow: AtomicU64,
}

impl ClientCounts {
    pub fn new(max_clients: usize) -> Self {
        Self {
            max_clients,
            known: AtomicUsize::new(0),
            arrivals: AtomicU64::new(0),
            shards: Default::default(),
            other: Mutex::new(Counts::default()),
            overflow: AtomicU64::new(0),
        }
    }

    /// A query sinkholed by the profile numbered `id` (`Profile::id`).
    #[inline]
    pub fn blocked(&self, client: IpAddr, id: u16) {
        self.count(client, Slot::Profile(2 * id as usize));
    }

    /// A name the profile numbered `id`, in log-only mode, would have blocked.
    #[inline]
    pub fn logged(&self, client: IpAddr, id: u16) {
        self.count(client, Slot::Profile(2 * id as usize + 1));
    }

    /// A query over the client's rate limit.
    #[inline]
    pub fn rate_limited(&self, client: IpAddr) {
        self.count(client, Slot::RateLimited);
    }

    fn count(&self, client: IpAddr, slot: Slot) {
        let mut map = self.shards.mine();
        if let Some(counts) = map.get_mut(&client) {
            counts.bump(slot);
            return;
        }
        if self.known.load(Ordering::Relaxed) < self.max_clients {
            self.known.fetch_add(1, Ordering::Relaxed);
            let mut counts = Counts {
                arrived: self.arrivals.fetch_add(1, Ordering::Relaxed),
                ..Counts::default()
            };
            counts.bump(slot);
            map.insert(client, counts);
            return;
        }
        drop(map);
        self.overflow.fetch_add(1, Ordering::Relaxed);
        self.other.lock().bump(slot);
    }

    /// Hands every count since the last drain to `f` (client None is "other") and sets
    /// it to zero; an address that counted nothing since the drain before leaves the
    /// table. The counts' memory is kept, so a client that goes on asking allocates
    /// nothing.
    pub fn drain(&self, f: &mut dyn FnMut(Option<IpAddr>, Counted, u64)) {
        let mut moved: Vec<(u64, IpAddr, Counted, u64)> = Vec::new();
        self.shards.each(|map| {
            let before = map.len();
            map.retain(|ip, counts| {
                if !counts.touched {
                    return false;
                }
                let arrived = counts.arrived;
                emit(
                    &mut |_, what, n| moved.push((arrived, *ip, what, n)),
                    None,
                    counts,
                );
                true
            });
            self.known.fetch_sub(before - map.len(), Ordering::Relaxed);
        });
        moved.sort_by_key(|m| m.0);
        for (_, ip, what, n) in moved {
            f(Some(ip), what, n);
        }
        emit(f, None, &mut self.other.lock());
    }
}

/// Hands the non-zero counts on and zeroes them.
fn emit(
    f: &mut dyn FnMut(Option<IpAddr>, Counted, u64),
    client: Option<IpAddr>,
    counts: &mut Counts,
) {
    counts.touched = false;
    for (i, n) in counts
        .profiles
        .iter_mut()
        .enumerate()
        .filter(|(_, n)| **n > 0)
    {
        let n = std::mem::take(n);
        let id = (i / 2) as u16;
        let what = if i % 2 == 0 {
            Counted::Blocked(id)
        } else {
            Counted::Logged(id)
        };
        f(client, what, n);
    }
    if counts.rate_limited > 0 {
        f(
            client,
            Counted::RateLimited,
            std::mem::take(&mut counts.rate_limited),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_beyond_the_bound_count_as_other() {
        let c = ClientCounts::new(2);
        for last in 1..=4u8 {
            c.blocked(IpAddr::from([192, 0, 2, last]), 1);
        }
        c.blocked(IpAddr::from([192, 0, 2, 1]), 1);
        let mut snap = Vec::new();
        c.drain(&mut |ip, what, n| snap.push((ip, what, n)));
        let get = |snap: &[(Option<IpAddr>, Counted, u64)], client: Option<[u8; 4]>| {
            snap.iter()
                .find(|(c, p, _)| *c == client.map(IpAddr::from) && *p == Counted::Blocked(1))
                .map(|x| x.2)
        };
        assert_eq!(get(&snap, Some([192, 0, 2, 1])), Some(2));
        assert_eq!(get(&snap, Some([192, 0, 2, 2])), Some(1));
        assert_eq!(get(&snap, None), Some(2));
        assert_eq!(c.overflow.load(Ordering::Relaxed), 2);
        // Drained: zero, and the addresses idle since then leave, making room.
        c.blocked(IpAddr::from([192, 0, 2, 1]), 1);
        let mut again = Vec::new();
        c.drain(&mut |ip, what, n| again.push((ip, what, n)));
        assert_eq!(
            again,
            vec![(Some(IpAddr::from([192, 0, 2, 1])), Counted::Blocked(1), 1)]
        );
        c.drain(&mut |_, _, _| {});
        c.blocked(IpAddr::from([192, 0, 2, 3]), 1);
        c.blocked(IpAddr::from([192, 0, 2, 4]), 1);
        let mut third = Vec::new();
        c.drain(&mut |ip, what, n| third.push((ip, what, n)));
        assert!(third.iter().all(|r| r.0.is_some()), "{third:?}");
    }
}
