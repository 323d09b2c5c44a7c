//! What happened to each query, counted without locks. The metrics endpoint (and the
//! shutdown summary) read these; labels stay bounded because the outcome is an enum.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Distinct client addresses remembered for STATUS; beyond this, "at least" is reported.
const CLIENTS_MAX: usize = 65_536;
const CLIENT_SHARDS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Forwarded,
    Cached,
    Blocked,
    Refused,
    ServFail,
    FormErr,
    NotImp,
    /// Answered by telesink itself (special-use names, BADVERS).
    Local,
    /// Over the client's rate limit: dropped, or REFUSED with EDE 18.
    RateLimited,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Forwarded,
        Outcome::Cached,
        Outcome::Blocked,
        Outcome::Refused,
        Outcome::ServFail,
        Outcome::FormErr,
        Outcome::NotImp,
        Outcome::Local,
        Outcome::RateLimited,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Cached => "cached",
            Outcome::Blocked => "blocked",
            Outcome::Refused => "refused",
            Outcome::ServFail => "servfail",
            Outcome::FormErr => "formerr",
            Outcome::NotImp => "notimp",
            Outcome::Local => "local",
            Outcome::RateLimited => "rate_limited",
        }
    }
}

#[derive(Default)]
pub struct Outcomes {
    counts: [AtomicU64; 9],
    clients: [Mutex<HashSet<IpAddr>>; CLIENT_SHARDS],
}

impl Outcomes {
    #[inline]
    pub fn record(&self, outcome: Outcome) {
        self.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Remembers a client address (bounded), for "clients seen" in STATUS.
    #[inline]
    pub fn saw(&self, client: IpAddr) {
        let shard = crate::host::client_shard(client, CLIENT_SHARDS);
        let mut set = self.clients[shard].lock();
        if set.len() < CLIENTS_MAX / CLIENT_SHARDS {
            set.insert(client);
        }
    }

    pub fn clients_seen(&self) -> usize {
        self.clients.iter().map(|s| s.lock().len()).sum()
    }

    pub fn total(&self) -> u64 {
        Outcome::ALL.iter().map(|o| self.get(*o)).sum()
    }

    pub fn get(&self, outcome: Outcome) -> u64 {
        self.counts[outcome as usize].load(Ordering::Relaxed)
    }

    pub fn summary(&self) -> String {
        Outcome::ALL
            .iter()
            .map(|o| format!("{}={}", o.name(), self.get(*o)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
