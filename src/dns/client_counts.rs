//! Blocked queries per client and profile, with the number of client labels bounded by
//! design: the first `max_clients` addresses get their own label, every later one counts
//! as `client="other"`, and how often that happened is itself counted. Never a domain
//! label. Sharded by address so two cores rarely meet on one lock; no allocation once a
//! client is known.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

const SHARDS: usize = 16;

/// Per client: blocked count per profile index (up to 64 profiles), then at 64 + index
/// the would-be blocks of log-only profiles, then at `RATE_LIMITED` the queries over the
/// client's rate limit.
type Counts = Box<[u64; SLOTS]>;
const SLOTS: usize = 129;
pub const RATE_LIMITED: usize = 128;

pub struct ClientCounts {
    max_clients: usize,
    known: AtomicUsize,
    shards: [Mutex<HashMap<IpAddr, Counts>>; SHARDS],
    other: Mutex<Counts>,
    pub overflow: AtomicU64,
}

impl ClientCounts {
    pub fn new(max_clients: usize) -> Self {
        Self {
            max_clients,
            known: AtomicUsize::new(0),
            shards: Default::default(),
            other: Mutex::new(Box::new([0; SLOTS])),
            overflow: AtomicU64::new(0),
        }
    }

    #[inline]
    pub fn blocked(&self, client: IpAddr, profile: u16) {
        self.count(client, (profile as usize).min(63));
    }

    /// A name a log-only profile would have blocked for this client.
    #[inline]
    pub fn logged(&self, client: IpAddr, profile: u16) {
        self.count(client, 64 + (profile as usize).min(63));
    }

    /// A query over the client's rate limit.
    #[inline]
    pub fn rate_limited(&self, client: IpAddr) {
        self.count(client, RATE_LIMITED);
    }

    fn count(&self, client: IpAddr, p: usize) {
        let shard = &self.shards[crate::host::client_shard(client, SHARDS)];
        let mut map = shard.lock();
        if let Some(counts) = map.get_mut(&client) {
            counts[p] += 1;
            return;
        }
        if self.known.load(Ordering::Relaxed) < self.max_clients {
            self.known.fetch_add(1, Ordering::Relaxed);
            let mut counts: Counts = Box::new([0; SLOTS]);
            counts[p] = 1;
            map.insert(client, counts);
            return;
        }
        drop(map);
        self.overflow.fetch_add(1, Ordering::Relaxed);
        self.other.lock()[p] += 1;
    }

    /// (client, slot, count) for every non-zero count; client None is "other"; slot is
    /// the profile index for blocks, 64 + the profile index for log-only would-be blocks,
    /// `RATE_LIMITED` for queries over the rate limit.
    pub fn snapshot(&self) -> Vec<(Option<IpAddr>, usize, u64)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            for (ip, counts) in shard.lock().iter() {
                push(&mut out, Some(*ip), counts);
            }
        }
        push(&mut out, None, &self.other.lock());
        out
    }
}

fn push(
    out: &mut Vec<(Option<IpAddr>, usize, u64)>,
    client: Option<IpAddr>,
    counts: &[u64; SLOTS],
) {
    for (p, &n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
        out.push((client, p, n));
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
        let snap = c.snapshot();
        let get = |client: Option<[u8; 4]>| {
            snap.iter()
                .find(|(c, p, _)| *c == client.map(IpAddr::from) && *p == 1)
                .map(|x| x.2)
        };
        assert_eq!(get(Some([192, 0, 2, 1])), Some(2));
        assert_eq!(get(Some([192, 0, 2, 2])), Some(1));
        assert_eq!(get(None), Some(2));
        assert_eq!(c.overflow.load(Ordering::Relaxed), 2);
    }
}
