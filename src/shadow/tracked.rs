//! The names shadow resolution keeps resolving: bounded, in due order, and forgetting
//! what clients stopped asking. The exact names of the lists are seeded when the lists
//! change and stay; a name a client asked for (one under a suffix rule) is resolved again
//! only while clients keep asking for it, and forgotten `forget_asked` after they stop (its
//! learned addresses then expire with their timeouts). At most `max` names are tracked;
//! a new one past that is dropped and counted. Pure data over a caller's clock, so it is
//! tested with compressed time.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use hickory_proto::rr::Name;

/// A name of a profile (the profile's number, `policy::ids`, stable across reloads).
pub type Key = (u16, Name);

struct Entry {
    due: Instant,
    seq: u64,
    /// When a client last asked for it; None for a name of the lists (kept while they
    /// list it).
    asked: Option<Instant>,
}

pub struct Tracked {
    entries: HashMap<Key, Entry>,
    /// (due, sequence) -> key: the next one due in O(log n), never a scan.
    schedule: BTreeMap<(Instant, u64), Key>,
    next_seq: u64,
    max: usize,
    forget_asked: Duration,
}

/// What `add` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    New,
    Known,
    /// The bound was reached: not tracked.
    Dropped,
}

impl Tracked {
    pub fn new(max: usize, forget_asked: Duration) -> Self {
        Tracked {
            entries: HashMap::new(),
            schedule: BTreeMap::new(),
            next_seq: 0,
            max: max.max(1),
            forget_asked,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Tracks a name: `asked` when a client asked for it, else seeded from the lists. A
    /// new one is due now; a known one keeps its schedule (a name asked a thousand times
    /// is resolved once per lifetime of its addresses).
    pub fn add(&mut self, key: Key, asked: bool, now: Instant) -> Added {
        if let Some(e) = self.entries.get_mut(&key) {
            if asked && e.asked.is_some() {
                e.asked = Some(now);
            } else if !asked {
                // The lists name it now: kept whatever clients do.
                e.asked = None;
            }
            return Added::Known;
        }
        if self.entries.len() >= self.max {
            return Added::Dropped;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.schedule.insert((now, seq), key.clone());
        self.entries.insert(
            key,
            Entry {
                due: now,
                seq,
                asked: asked.then_some(now),
            },
        );
        Added::New
    }

    /// When the next name is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.schedule.keys().next().map(|(at, _)| *at)
    }

    /// The names due at `now`, taken off the schedule (each comes back with `again`).
    pub fn take_due(&mut self, now: Instant) -> Vec<Key> {
        let mut out = Vec::new();
        while let Some(entry) = self.schedule.first_entry() {
            if entry.key().0 > now {
                break;
            }
            out.push(entry.remove());
        }
        out
    }

    /// Puts a resolved name back, due at `at`; a name clients stopped asking for is
    /// forgotten instead (true).
    pub fn again(&mut self, key: Key, at: Instant, now: Instant) -> bool {
        let Some(e) = self.entries.get_mut(&key) else {
            return false;
        };
        if e.asked
            .is_some_and(|last| now.duration_since(last) >= self.forget_asked)
        {
            self.entries.remove(&key);
            return true;
        }
        e.due = at;
        self.schedule.insert((at, e.seq), key);
        false
    }

    /// Forgets every name (the lists changed; the new ones are seeded).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.schedule.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> Key {
        (1, Name::from_ascii(n).unwrap())
    }

    #[test]
    fn bounded_ordered_and_forgetting_what_clients_stopped_asking() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = Tracked::new(3, s(600));
        assert_eq!(t.add(key("list.example."), false, t0), Added::New);
        assert_eq!(t.add(key("a.asked.example."), true, t0), Added::New);
        assert_eq!(
            t.add(key("a.asked.example."), true, t0 + s(1)),
            Added::Known
        );
        assert_eq!(t.add(key("b.asked.example."), true, t0), Added::New);
        // The bound: a fourth is dropped, not tracked.
        assert_eq!(t.add(key("c.asked.example."), true, t0), Added::Dropped);
        assert_eq!(t.len(), 3);
        // Due in order, once each.
        assert_eq!(t.take_due(t0 + s(1)).len(), 3);
        assert!(t.take_due(t0 + s(2)).is_empty());
        // Resolved again at 300 s: all stay (asked within 600 s).
        for k in ["list.example.", "a.asked.example.", "b.asked.example."] {
            assert!(!t.again(key(k), t0 + s(300), t0 + s(2)));
        }
        assert_eq!(t.next_due(), Some(t0 + s(300)));
        // a is asked again at 500 s, b never: at 700 s b is forgotten, a and the list
        // name stay; room for a new name again.
        t.add(key("a.asked.example."), true, t0 + s(500));
        let due = t.take_due(t0 + s(700));
        assert_eq!(due.len(), 3);
        let forgotten: Vec<bool> = due
            .into_iter()
            .map(|k| t.again(k, t0 + s(1000), t0 + s(700)))
            .collect();
        assert_eq!(forgotten.iter().filter(|f| **f).count(), 1);
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.add(key("c.asked.example."), true, t0 + s(700)),
            Added::New
        );
        // The list name never expires, however long nobody asks.
        let due = t.take_due(t0 + s(10_000));
        for k in due {
            t.again(k, t0 + s(20_000), t0 + s(10_000));
        }
        assert!(t.entries.contains_key(&key("list.example.")));
    }
}
