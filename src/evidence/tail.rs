//! The live view (`telesink tail`): verdicts as they happen, for troubleshooting. Never
//! written to disk, and only collected while someone watches: a `tail` polls for what
//! came after the last event it saw, and each poll keeps collection on for 10 s.
//!
//! A query never waits for the view: events go into a bounded ring under a `try_lock`;
//! when the ring is contended the event is dropped, when it is full the oldest one goes.
//! A reader that falls behind is told how many events it lost; both are counted.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Events kept for readers.
const RING: usize = 10_000;
/// Collection stays on this long after the last poll.
const WATCH_SECS: u64 = 10;

/// One verdict, as the view shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// Unix time in milliseconds.
    pub at_ms: u64,
    pub client: IpAddr,
    /// The client's label (its device, or the address as itself) and its kind, filled in
    /// when the view is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_kind: Option<String>,
    pub name: String,
    /// The outcome: blocked, forwarded, cached, refused, ...
    pub verdict: String,
    /// The profile that blocked (or observed) it.
    pub profile: Option<String>,
    /// The rule that decided, with its file:line.
    pub rule: Option<String>,
    /// Set when a log-only profile observed it.
    pub observed: bool,
}

#[derive(Default)]
pub struct Tail {
    ring: Mutex<VecDeque<Event>>,
    next: AtomicU64,
    watching: AtomicBool,
    last_poll: AtomicU64,
    /// Events not kept because the ring was busy.
    pub dropped: AtomicU64,
}

/// What a poll returns.
#[derive(Debug, Serialize, Deserialize)]
pub struct Batch {
    pub events: Vec<Event>,
    /// Events the reader missed since its last poll (it fell behind the ring).
    pub lost: u64,
    /// The seq to ask after next time.
    pub next: u64,
}

impl Tail {
    /// Whether anybody watches: the query path's only cost when nobody does.
    #[inline]
    pub fn watching(&self) -> bool {
        self.watching.load(Ordering::Relaxed)
    }

    /// Adds an event; never waits.
    pub fn push(&self, mut event: Event) {
        let Some(mut ring) = self.ring.try_lock() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        event.seq = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        if ring.len() >= RING {
            ring.pop_front();
        }
        ring.push_back(event);
    }

    /// The events after `after` (None: from now on), and how many of them the ring no
    /// longer has. Turns collection on for the next `WATCH_SECS`.
    pub fn poll(&self, after: Option<u64>) -> Batch {
        let now = crate::clock::unix_now();
        self.last_poll.store(now, Ordering::Relaxed);
        self.watching.store(true, Ordering::Relaxed);
        let ring = self.ring.lock();
        let newest = self.next.load(Ordering::Relaxed);
        let Some(after) = after else {
            return Batch {
                events: Vec::new(),
                lost: 0,
                next: newest,
            };
        };
        let oldest = ring.front().map_or(newest + 1, |e| e.seq);
        let lost = oldest.saturating_sub(after + 1);
        let events: Vec<Event> = ring.iter().filter(|e| e.seq > after).cloned().collect();
        Batch {
            next: events.last().map_or(after.max(newest), |e| e.seq),
            events,
            lost,
        }
    }

    /// Turns collection off when nobody polled for a while (called every few seconds).
    pub fn idle_check(&self) {
        let last = self.last_poll.load(Ordering::Relaxed);
        if self.watching() && crate::clock::unix_now().saturating_sub(last) > WATCH_SECS {
            self.watching.store(false, Ordering::Relaxed);
            self.ring.lock().clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str) -> Event {
        Event {
            seq: 0,
            at_ms: 0,
            client: IpAddr::from([192, 0, 2, 1]),
            device: None,
            client_kind: None,
            name: name.into(),
            verdict: "blocked".into(),
            profile: None,
            rule: None,
            observed: false,
        }
    }

    #[test]
    fn a_reader_gets_what_came_after_it_and_is_told_what_it_lost() {
        let t = Tail::default();
        assert!(!t.watching());
        let start = t.poll(None).next;
        assert!(t.watching());
        t.push(event("a"));
        t.push(event("b"));
        let b = t.poll(Some(start));
        assert_eq!(b.events.len(), 2);
        assert_eq!(b.lost, 0);
        for _ in 0..RING + 5 {
            t.push(event("flood"));
        }
        let c = t.poll(Some(b.next));
        assert_eq!(c.lost, 5);
        assert_eq!(c.events.len(), RING);
    }
}
