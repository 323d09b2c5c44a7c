//! Runtime name rules: `telesink allow NAME` and `telesink block NAME`, for "co-authoring
//! stopped for finance at 9:00" without editing a list and reloading.
//!
//! They are toggles (persisted in the state file, timed, per group) that the verdict reads
//! beside the lists' name index, with the same precedence as list rules: the most
//! specific rule decides (exact, then the longest suffix), and allow wins a tie. A
//! runtime allow speaks for every profile, like a global allowlist; a runtime block is a
//! rule of telesink's own profile `runtime`, which is on for every group. A rule with a
//! group applies to that group's clients only.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::QName;
use super::index::Rule;
use crate::lists::Reach;

/// List ids of the runtime rules in a `Rule`: they are no list file, so they sit past any
/// list index the compiler can hand out.
pub const RUNTIME_ALLOW: u16 = u16::MAX;
pub const RUNTIME_BLOCK: u16 = u16::MAX - 1;
/// The profile that holds runtime blocks.
pub const RUNTIME_PROFILE: &str = "runtime";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameRule {
    /// `name` (that name only) or `*.name` (it and every name below), lower case.
    pub name: String,
    pub allow: bool,
    /// None: every group.
    #[serde(default)]
    pub group: Option<String>,
    /// Unix time (seconds) at which the rule lapses.
    #[serde(default)]
    pub until: Option<u64>,
    /// Who made it ("uid 1000 on gw1") and why (`--why`): shown in status, carried
    /// between the nodes of a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error(
        "not a domain name or *.domain: {0:?} (labels of letters, digits, '-' and '_', separated by dots)"
    )]
    NotAName(String),
    #[error(
        "{0} is an address, not a name: runtime rules take names; to block an address or range put it in a profile's .cidrs list (docs/LISTS.md)"
    )]
    Address(String),
}

/// The rule's name as stored and matched: lower case, no trailing dot, `*.` kept.
pub fn normalize(text: &str) -> Result<String, RuleError> {
    let bad = || RuleError::NotAName(text.to_owned());
    // "192.168.1.1" has the form of a name of four numeric labels; what was meant is the
    // address, which a name rule never matches.
    if text
        .trim_end_matches('.')
        .parse::<std::net::IpAddr>()
        .is_ok()
        || text.trim_end_matches('.').parse::<ipnet::IpNet>().is_ok()
    {
        return Err(RuleError::Address(text.to_owned()));
    }
    let (suffix, name) = match text.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if !super::explain::valid_name(name) {
        return Err(bad());
    }
    let q = QName::parse(name)
        .filter(|q| !q.is_root())
        .ok_or_else(bad)?;
    Ok(if suffix {
        format!("*.{}", q.as_str())
    } else {
        q.as_str().to_owned()
    })
}

fn split(rule: &str) -> (Reach, &str) {
    match rule.strip_prefix("*.") {
        Some(name) => (Reach::Suffix, name),
        None => (Reach::Exact, rule),
    }
}

struct Entry {
    rule: Rule,
    /// The group index it applies to; None: every group.
    group: Option<u16>,
}

/// The runtime rules of one snapshot, keyed like the name index.
#[derive(Default)]
pub struct RuntimeIndex {
    map: HashMap<Box<[u8]>, Vec<Entry>>,
    /// Bit n: a suffix rule whose name has n labels (as the name index keeps it).
    suffix_depths: u64,
    blocks: usize,
}

impl std::fmt::Debug for RuntimeIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RuntimeIndex({} names)", self.map.len())
    }
}

impl RuntimeIndex {
    /// `group_of` maps a group name to its index (rules naming an unknown group were
    /// dropped before). Each rule's `line` is its position in `rules`, from 1.
    ///
    /// A standing rule under a timed one of the same name and group is not in force
    /// until the timed one lapses (src/policy/toggles.rs, "stack").
    pub fn build(rules: &[NameRule], group_of: impl Fn(&str) -> Option<u16>) -> Self {
        let mut out = RuntimeIndex::default();
        let timed: std::collections::HashSet<(&str, Option<&str>)> = rules
            .iter()
            .filter(|r| r.until.is_some())
            .map(|r| (r.name.as_str(), r.group.as_deref()))
            .collect();
        for (i, r) in rules.iter().enumerate() {
            if r.until.is_none() && timed.contains(&(r.name.as_str(), r.group.as_deref())) {
                continue;
            }
            let (reach, name) = split(&r.name);
            let group = match &r.group {
                Some(g) => match group_of(g) {
                    Some(idx) => Some(idx),
                    None => continue,
                },
                None => None,
            };
            out.blocks += usize::from(!r.allow);
            if reach == Reach::Suffix {
                let labels = name.split('.').count();
                out.suffix_depths |= 1 << labels.min(63);
            }
            out.map
                .entry(name.as_bytes().into())
                .or_default()
                .push(Entry {
                    rule: Rule {
                        list: if r.allow {
                            RUNTIME_ALLOW
                        } else {
                            RUNTIME_BLOCK
                        },
                        line: i as u32 + 1,
                        reach,
                        allow: r.allow,
                    },
                    group,
                });
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether any runtime block rule exists (the `runtime` profile then does something).
    pub fn has_blocks(&self) -> bool {
        self.blocks > 0
    }

    #[inline]
    pub fn has_suffix_depth(&self, labels: usize) -> bool {
        self.suffix_depths & (1 << labels.min(63)) != 0
    }

    /// The rules stored under `name` that apply to `group` (None: rules for every group
    /// only, as `check` and the firewall see them).
    #[inline]
    pub fn for_each(&self, name: &[u8], group: Option<u16>, mut f: impl FnMut(Rule)) {
        if self.map.is_empty() {
            return;
        }
        if let Some(entries) = self.map.get(name) {
            for e in entries {
                if e.group.is_none() || e.group == group {
                    f(e.rule);
                }
            }
        }
    }

    /// Whether a runtime allow rule of any group matches the name: shadow resolution never
    /// learns such a name's addresses (the firewall's learned sets are per profile, not
    /// per group, and a client allowed the name must reach its addresses).
    pub fn allows_anywhere(&self, name: &QName) -> bool {
        if self.map.is_empty() {
            return false;
        }
        name.suffix_starts().enumerate().any(|(depth, at)| {
            self.map.get(name.suffix_at(at)).is_some_and(|entries| {
                entries
                    .iter()
                    .any(|e| e.rule.allow && (depth == 0 || e.rule.reach == Reach::Suffix))
            })
        })
    }

    /// The exact names runtime blocks (for shadow resolution's seeding).
    pub fn exact_blocks(&self) -> impl Iterator<Item = &str> + '_ {
        self.map.iter().filter_map(|(name, entries)| {
            entries
                .iter()
                .any(|e| !e.rule.allow && e.rule.reach == Reach::Exact)
                .then(|| std::str::from_utf8(name).ok())
                .flatten()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_and_garbage_is_refused() {
        assert_eq!(
            normalize("Teams.Microsoft.com.").unwrap(),
            "teams.microsoft.com"
        );
        assert_eq!(normalize("*.Example.org").unwrap(), "*.example.org");
        for bad in [
            "",
            ".",
            "a..b",
            "*.",
            "exa mple.com",
            "http://x.com",
            "*.*.x.com",
        ] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
        for address in ["192.168.1.1", "2001:db8::1", "192.0.2.0/24"] {
            assert_eq!(normalize(address), Err(RuleError::Address(address.into())));
        }
    }
}
