//! What happened to each query, counted per thread (src/stripe.rs). The metrics endpoint
//! (and the shutdown summary) add the stripes up; labels stay bounded because the outcome
//! is an enum.

use std::collections::HashSet;
use std::net::IpAddr;

use super::pipeline::Path;
use crate::stripe::Striped;

/// Distinct client addresses remembered for STATUS, per counting thread; beyond this,
/// "at least" is reported.
const CLIENTS_MAX: usize = 65_536;

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

/// Per thread (src/stripe.rs): what its queries came to, and the client it counted last
/// with the addresses it has seen.
#[derive(Default)]
struct Local {
    counts: [u64; 9],
    /// Answered queries by the path that answered them (`Path as usize`).
    paths: [u64; 3],
    last: Option<IpAddr>,
    clients: HashSet<IpAddr, foldhash::fast::RandomState>,
}

#[derive(Default)]
pub struct Outcomes {
    stripes: Striped<Local>,
}

impl Outcomes {
    #[inline]
    pub fn record(&self, outcome: Outcome) {
        self.stripes.mine().counts[outcome as usize] += 1;
    }

    /// One query of `client` that came to `outcome`; the client is remembered (bounded)
    /// for "clients seen" in STATUS. One stripe lock for both.
    #[inline]
    pub fn answered(&self, outcome: Outcome, client: IpAddr, path: Path) {
        let mut local = self.stripes.mine();
        local.counts[outcome as usize] += 1;
        local.paths[path as usize] += 1;
        // A thread mostly serves the client it served last: no set lookup then.
        if local.last != Some(client) {
            local.last = Some(client);
            if local.clients.len() < CLIENTS_MAX {
                local.clients.insert(client);
            }
        }
    }

    /// Distinct addresses, at most CLIENTS_MAX ("at least" beyond).
    pub fn clients_seen(&self) -> usize {
        let mut all: HashSet<IpAddr, foldhash::fast::RandomState> = HashSet::default();
        self.stripes.each(|l| all.extend(l.clients.iter().copied()));
        all.len().min(CLIENTS_MAX)
    }

    pub fn total(&self) -> u64 {
        Outcome::ALL.iter().map(|o| self.get(*o)).sum()
    }

    /// Answered queries that took `path`.
    pub fn by_path(&self, path: Path) -> u64 {
        self.stripes.sum(|l| l.paths[path as usize])
    }

    pub fn get(&self, outcome: Outcome) -> u64 {
        self.stripes.sum(|l| l.counts[outcome as usize])
    }

    pub fn summary(&self) -> String {
        Outcome::ALL
            .iter()
            .map(|o| format!("{}={}", o.name(), self.get(*o)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
