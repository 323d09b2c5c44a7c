//! Per-thread stripes for what the query path counts.
//!
//! Every answered query bumps counters (outcome, client, profile, the ledger's aggregate).
//! Kept in one shared place, each bump writes a cache line that the other cores' queries
//! write too, and the line moves between cores on every query. Striped by thread, each
//! receive thread writes only lines of its own: the stripe's lock is taken by its thread
//! on every query and by a reader only at scrape, sweep or flush time, so it is never
//! contended on the query path. Readers add the stripes up.
//!
//! A thread's stripe is its number (handed out once, at its first count) modulo the
//! stripe count; with more counting threads than stripes two threads share one, which is
//! still correct (the lock), only no longer free of sharing.

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Mutex, MutexGuard};

/// Enough for every receive thread and runtime worker of a large gateway.
pub const STRIPES: usize = 32;

/// One stripe on cache lines of its own (128 bytes: adjacent-line prefetch pairs lines).
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(Mutex<T>);

pub struct Striped<T> {
    stripes: Box<[Padded<T>]>,
}

impl<T: Default> Default for Striped<T> {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| Padded::default()).collect(),
        }
    }
}

impl<T> Striped<T> {
    /// The calling thread's stripe.
    #[inline]
    pub fn mine(&self) -> MutexGuard<'_, T> {
        self.stripes[thread_number() % self.stripes.len()].0.lock()
    }

    /// Every stripe in turn (for readers: one stripe locked at a time).
    pub fn each(&self, mut f: impl FnMut(&mut T)) {
        for stripe in self.stripes.iter() {
            f(&mut stripe.0.lock());
        }
    }

    /// The sum of what `f` reads from each stripe.
    pub fn sum(&self, f: impl Fn(&T) -> u64) -> u64 {
        self.stripes.iter().map(|s| f(&s.0.lock())).sum()
    }
}

/// This thread's number, handed out at its first call.
#[inline]
pub fn thread_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NUMBER: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    NUMBER.with(|n| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_count_into_stripes_of_their_own_and_readers_add_them_up() {
        let s: std::sync::Arc<Striped<u64>> = Default::default();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        *s.mine() += 1;
                    }
                    thread_number()
                })
            })
            .collect();
        let numbers: std::collections::BTreeSet<usize> =
            threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(numbers.len(), 4, "each thread has its own number");
        assert_eq!(s.sum(|n| *n), 4000);
        let mut touched = 0;
        s.each(|n| touched += usize::from(*n > 0));
        assert!(touched >= 2, "the threads did not share one stripe");
    }
}
