//! What happened to each query, counted without locks. The metrics endpoint (and the
//! shutdown summary) read these; labels stay bounded because the outcome is an enum.

use std::sync::atomic::{AtomicU64, Ordering};

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
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Forwarded,
        Outcome::Cached,
        Outcome::Blocked,
        Outcome::Refused,
        Outcome::ServFail,
        Outcome::FormErr,
        Outcome::NotImp,
        Outcome::Local,
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
        }
    }
}

#[derive(Default)]
pub struct Outcomes {
    counts: [AtomicU64; 8],
}

impl Outcomes {
    #[inline]
    pub fn record(&self, outcome: Outcome) {
        self.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
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
