//! A number per profile name that stays the same for the life of the process, whatever
//! reloads do to the order of the profiles. Per-client counters are kept under it, so a
//! reload that inserts, removes or reorders a profile never moves old counts under
//! another profile's label (Prometheus would see false jumps and resets).
//!
//! A profile's position in the config changes with the config; its name does not. The
//! registry only grows (a counter of a removed profile keeps its series, as a Prometheus
//! counter must); it is bounded, and a name past the bound is counted, never silent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

/// Distinct profile names a process numbers at most (a config has at most 64 at a time;
/// this is room for a long life of renames).
pub const MAX_IDS: usize = 4096;
/// The number of every name past `MAX_IDS`: its counts go to `profile="other"`.
pub const OVERFLOW: u16 = u16::MAX;

fn names() -> &'static Mutex<Vec<Arc<str>>> {
    static NAMES: OnceLock<Mutex<Vec<Arc<str>>>> = OnceLock::new();
    NAMES.get_or_init(|| Mutex::new(Vec::new()))
}

/// Names that got `OVERFLOW` because the registry was full.
pub static OVERFLOWED: AtomicU64 = AtomicU64::new(0);

/// The name's number: the one it had before, or the next one.
pub fn id_of(name: &str) -> u16 {
    let mut names = names().lock();
    if let Some(i) = names.iter().position(|n| &**n == name) {
        return i as u16;
    }
    if names.len() >= MAX_IDS {
        if OVERFLOWED.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                "more than {MAX_IDS} distinct profile names in this process: counts of {name} and later ones go to profile=\"other\" until a restart"
            );
        }
        return OVERFLOW;
    }
    names.push(name.into());
    (names.len() - 1) as u16
}

/// Every name by number (one lock for a whole scrape).
pub fn all() -> Vec<Arc<str>> {
    names().lock().clone()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_name_keeps_its_number() {
        let a = super::id_of("ids-test-a");
        let b = super::id_of("ids-test-b");
        assert_ne!(a, b);
        assert_eq!(super::id_of("ids-test-a"), a);
        assert_eq!(&*super::all()[b as usize], "ids-test-b");
    }
}
