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

/// Zones, and the question "is this name at or below one of them?": names served from
/// shared hosting (storage stamps, app services, traffic managers) whose addresses
/// shadow resolution must never learn.
/// foldhash, not SipHash: with `[[forward]]` zones the set is asked once per label of
/// every query.
#[derive(Debug, Default, Clone)]
pub struct ZoneSet {
    zones: HashSet<String, foldhash::fast::RandomState>,
}

impl ZoneSet {
    pub fn add(&mut self, zone: &str) {
        self.zones.insert(zone.to_owned());
    }

    /// The zone of the set that `name` (lowercase, no trailing dot) is at or below.
    pub fn covering(&self, name: &str) -> Option<&str> {
        let mut rest = name;
        loop {
            if let Some(z) = self.zones.get(rest) {
                return Some(z.as_str());
            }
            rest = rest.split_once('.')?.1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zone_covers_itself_and_what_is_below_it_only() {
        let mut z = ZoneSet::default();
        z.add("blob.core.windows.net");
        assert_eq!(
            z.covering("x.blob.core.windows.net"),
            Some("blob.core.windows.net")
        );
        assert_eq!(
            z.covering("blob.core.windows.net"),
            Some("blob.core.windows.net")
        );
        assert_eq!(z.covering("core.windows.net"), None);
        assert_eq!(z.covering("xblob.core.windows.net"), None);
    }

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
