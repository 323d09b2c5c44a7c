//! The guard: shared zones (CDNs, Microsoft's parent zones) that must never be blocked by
//! a suffix rule, because everything below them would go dark with them.

use std::collections::HashSet;

/// Holds every guarded zone and all of its parents, so one lookup answers
/// "is this suffix rule on or above a guarded zone?".
#[derive(Debug, Default, Clone)]
pub struct Guard {
    covered: HashSet<String>,
}

impl Guard {
    pub fn add_zone(&mut self, zone: &str) {
        let mut rest = zone;
        loop {
            self.covered.insert(rest.to_owned());
            match rest.split_once('.') {
                Some((_, parent)) => rest = parent,
                None => break,
            }
        }
    }

    /// True when a suffix block rule on `name` would cover a guarded zone.
    pub fn refuses_suffix(&self, name: &str) -> bool {
        self.covered.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_the_zone_and_its_parents_only() {
        let mut g = Guard::default();
        g.add_zone("blob.core.windows.net");
        assert!(g.refuses_suffix("blob.core.windows.net"));
        assert!(g.refuses_suffix("core.windows.net"));
        assert!(g.refuses_suffix("net"));
        assert!(!g.refuses_suffix("x.blob.core.windows.net"));
        assert!(!g.refuses_suffix("windows.com"));
    }
}
