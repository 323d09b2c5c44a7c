//! The compiled, immutable policy snapshot.
//!
//! One `Policy` holds everything a verdict needs: the name index of all lists, which list
//! belongs to which profile, each profile's answer mode, the client groups and which
//! profiles each group has on. The DNS pipeline reads it through an `ArcSwap` without
//! locks; a reload or toggle builds a new one and swaps the pointer, so a query sees either
//! the old or the new policy, never a mix. Toggles reuse the (large) name index through
//! an `Arc`, so they cost microseconds, not a list reload.

mod build;
mod clients;
pub mod devices;
mod explain;
pub mod ids;
mod index;
mod layers;
mod qname;
pub mod rate;
pub mod runtime;
mod toggles;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;

pub use build::{BuildOutcome, BuildProblem, Severity, build, list_search_path};
pub use clients::{ClientTable, canonical as canonical_ip};
pub use explain::{ExplainError, Explanation, WouldBlock, explain};
pub use index::{NameIndex, Rule};
pub use layers::Layers;
pub use qname::QName;
pub use toggles::{Toggle, ToggleError, Toggles, check as check_toggle, check_group};

use crate::lists::Reach;

/// At most this many profiles: a group's active set is a `u64` bit mask, which keeps the
/// per-query verdict free of allocation.
pub const MAX_PROFILES: usize = 64;
/// Profiles a config may define: the last bit is telesink's own `runtime` profile.
pub const MAX_CONFIG_PROFILES: usize = MAX_PROFILES - 1;

/// How a profile answers a name it blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A 0.0.0.0 / AAAA ::, NODATA for every other type.
    Null,
    Nxdomain,
    Nodata,
    Refused,
    /// Fixed addresses for A/AAAA (NODATA for a family without one), NODATA otherwise.
    Ip {
        v4: Option<Ipv4Addr>,
        v6: Option<Ipv6Addr>,
    },
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Null => "null",
            Mode::Nxdomain => "nxdomain",
            Mode::Nodata => "nodata",
            Mode::Refused => "refused",
            Mode::Ip { .. } => "ip",
        }
    }
}

/// The broadest range the firewall's accept set takes without `firewall.allow_broad`
/// (or `update-m365 --allow-broad`). Microsoft's broadest Optimize/Allow ranges are /13
/// (IPv4) and /35 (IPv6) in the 2025-2026 documents; a /12 or /24 bound leaves room for
/// growth and still refuses "everything" (0.0.0.0/0, ::/0) and whole regional blocks.
pub const MAX_ACCEPT_PREFIX_V4: u8 = 12;
pub const MAX_ACCEPT_PREFIX_V6: u8 = 24;

/// The bound an accept range is broader than, if it is.
pub fn too_broad(net: ipnet::IpNet) -> Option<u8> {
    match net {
        ipnet::IpNet::V4(n) if n.prefix_len() < MAX_ACCEPT_PREFIX_V4 => Some(MAX_ACCEPT_PREFIX_V4),
        ipnet::IpNet::V6(n) if n.prefix_len() < MAX_ACCEPT_PREFIX_V6 => Some(MAX_ACCEPT_PREFIX_V6),
        _ => None,
    }
}

/// Networks, merged: no two overlap or touch (what an nftables interval set needs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressSet {
    pub v4: Vec<ipnet::Ipv4Net>,
    pub v6: Vec<ipnet::Ipv6Net>,
}

impl AddressSet {
    /// A range of this set that `net` contains whole, if any (the set is aggregated:
    /// sorted, so one binary search finds the first range at or after `net`'s start).
    pub fn first_covered_by(&self, net: ipnet::IpNet) -> Option<ipnet::IpNet> {
        match net {
            ipnet::IpNet::V4(n) => {
                let at = self.v4.partition_point(|b| b.network() < n.network());
                self.v4
                    .get(at)
                    .filter(|b| n.contains(*b))
                    .map(|b| ipnet::IpNet::V4(*b))
            }
            ipnet::IpNet::V6(n) => {
                let at = self.v6.partition_point(|b| b.network() < n.network());
                self.v6
                    .get(at)
                    .filter(|b| n.contains(*b))
                    .map(|b| ipnet::IpNet::V6(*b))
            }
        }
    }

    pub fn from_nets(nets: impl IntoIterator<Item = ipnet::IpNet>) -> Self {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for net in nets {
            match net {
                ipnet::IpNet::V4(n) => v4.push(n),
                ipnet::IpNet::V6(n) => v6.push(n),
            }
        }
        Self {
            v4: ipnet::Ipv4Net::aggregate(&v4),
            v6: ipnet::Ipv6Net::aggregate(&v6),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.v4.iter().any(|n| n.contains(&a)),
            IpAddr::V6(a) => self.v6.iter().any(|n| n.contains(&a)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    /// The name, shared: the evidence ledger counts under it without allocating.
    pub key: Arc<str>,
    /// The name's number for the life of the process (`policy::ids`): per-client
    /// counters are kept under it, never under the profile's position.
    pub id: u16,
    pub description: String,
    pub mode: Mode,
    /// The config's default: on for every group that does not switch it off.
    pub enabled: bool,
    pub warning: Option<String>,
    /// Text of the RFC 8914 EDE attached to its answers; built once, not per query.
    pub ede_text: String,
    /// Destinations the firewall rejects for clients that have this profile on.
    pub nets: AddressSet,
    /// Whether the addresses of the names it blocks are learned for the firewall.
    pub shadow: bool,
}

/// Which profiles a list's rules speak for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A global allowlist: its allow rules override every profile.
    Global,
    Profile(u16),
}

#[derive(Debug, Clone)]
pub struct ListInfo {
    pub path: PathBuf,
    pub scope: Scope,
    /// An allowlist (every line allows) or a block list (lines block, `@@` lines allow).
    pub allowlist: bool,
    pub entries: usize,
    pub skipped: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    /// Bit i set: profile i blocks for this group (DNS and firewall).
    pub active: u64,
    /// Bit i set: profile i is on in log-only mode for this group: it answers normally
    /// and only counts what it would have blocked. Never overlaps `active`.
    pub logged: u64,
}

/// Where a rule matched: the rule and the name it is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub rule: Rule,
    /// Byte offset into the queried name where the matching rule's name starts.
    pub at: u8,
}

impl Decision {
    /// The rule as written in a list (`name` or `*.name`), for the name it decided.
    pub fn rule_text(&self, q: &QName) -> String {
        let matched = String::from_utf8_lossy(q.suffix_at(self.at));
        if self.rule.reach == Reach::Suffix {
            format!("*.{matched}")
        } else {
            matched.into_owned()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not blocked. `allow` is the allow rule that won over a block, if one did.
    Pass {
        allow: Option<Decision>,
    },
    Block {
        profile: u16,
        by: Decision,
    },
}

#[derive(Clone)]
pub struct Policy {
    /// Increases with every swap; shown in the SOA serial and the metrics.
    pub generation: u64,
    pub index: Arc<NameIndex>,
    pub lists: Arc<Vec<ListInfo>>,
    pub profiles: Vec<Profile>,
    pub groups: Vec<Group>,
    /// The groups as the config alone defines them; runtime toggles apply on top of these.
    pub base_groups: Arc<Vec<Group>>,
    /// The runtime toggles this snapshot was built with (in a cluster: what the layers
    /// make of them, `Layers::effective`).
    pub toggles: Toggles,
    /// In a cluster (`[cluster]`): the site's shared toggles at a store revision and this
    /// node's own overrides; None for one box.
    pub layers: Option<Layers>,
    pub clients: ClientTable,
    /// Destinations the firewall accepts before any block set.
    pub allow_nets: AddressSet,
    /// Public DoH resolvers' addresses, for the firewall's bypass prevention.
    pub bypass_nets: AddressSet,
    /// Addresses shadow resolution never learns (`firewall.shadow.never_learn_cidrs`).
    pub never_learn_nets: AddressSet,
    /// Zones whose names shadow resolution never learns (`never_learn_zones`).
    pub never_learn_zones: Arc<crate::lists::ZoneSet>,
    /// `[[forward]]` zones (Active Directory): their names are blocked by exact rules
    /// only, never by a list's suffix rule (`*.example` must not take down a domain).
    pub forward_zones: Arc<crate::lists::ZoneSet>,
    pub block_ttl: u32,
    pub cname_cloaking: bool,
    /// The per-client query rate limit: its rate and who is exempt.
    pub rate: Arc<rate::RateRules>,
    /// `telesink allow` / `telesink block` rules, read beside the name index.
    pub runtime: Arc<runtime::RuntimeIndex>,
    /// Index of telesink's own profile `runtime`, which holds the runtime blocks.
    pub runtime_profile: u16,
}

impl Policy {
    /// The group a client belongs to: the most specific configured network, else default.
    #[inline]
    pub fn group_of(&self, ip: IpAddr) -> u16 {
        self.clients.group_of(ip)
    }

    #[inline]
    pub fn is_allowed_client(&self, ip: IpAddr) -> bool {
        self.clients.is_allowed(ip)
    }

    /// The verdict for `name` as seen by `group`.
    ///
    /// Rules are tried from the most specific to the least: exact rules on the name, suffix
    /// rules on the name, then suffix rules on each parent. Each profile is decided by the
    /// first tier that holds a rule for it (a global allow rule speaks for all profiles); on
    /// a tie within a tier, allow wins. The name is blocked when any active profile's
    /// deciding rule blocks; among several, the first profile in config order is reported.
    pub fn verdict(&self, group: u16, name: &QName) -> Verdict {
        let mask = self.groups.get(group as usize).map_or(0, |g| g.active);
        self.verdict_in(Some(group), mask, name)
    }

    /// For a name that passed: the log-only profile that would have blocked it, if any.
    /// Costs nothing unless the client's group has a log-only profile on.
    #[inline]
    pub fn would_block(&self, group: u16, name: &QName) -> Option<u16> {
        self.would_block_by(group, name).map(|(p, _)| p)
    }

    /// `would_block` with the rule that would have blocked.
    #[inline]
    pub fn would_block_by(&self, group: u16, name: &QName) -> Option<(u16, Decision)> {
        let mask = self.groups.get(group as usize).map_or(0, |g| g.logged);
        if mask == 0 {
            return None;
        }
        match self.verdict_in(Some(group), mask, name) {
            Verdict::Block { profile, by } => Some((profile, by)),
            Verdict::Pass { .. } => None,
        }
    }

    /// "file:line" of a rule, or "runtime rule" for `telesink allow|block`.
    pub fn rule_place(&self, list: u16, line: u32) -> String {
        match list {
            runtime::RUNTIME_ALLOW | runtime::RUNTIME_BLOCK => "runtime rule".to_owned(),
            _ => self.lists.get(list as usize).map_or_else(
                || "?".to_owned(),
                |l| format!("{}:{line}", l.path.display()),
            ),
        }
    }

    /// The verdict with the profiles of `mask` on, as any group sees it: the lists and the
    /// runtime rules for every group (`check`'s view).
    pub fn verdict_for(&self, mask: u64, name: &QName) -> Verdict {
        self.verdict_in(None, mask, name)
    }

    /// The verdict with the profiles of `mask` on, with the runtime rules of `group`.
    pub fn verdict_in(&self, group: Option<u16>, mask: u64, name: &QName) -> Verdict {
        let mut undecided = mask;
        if undecided == 0 || name.is_root() {
            return Verdict::Pass { allow: None };
        }
        let mut found = Found::default();
        let mut allow_seen = None;
        let exact_only =
            !self.forward_zones.is_empty() && self.forward_zones.covering(name.as_str()).is_some();
        for (depth, at) in name.suffix_starts().enumerate() {
            if exact_only && depth > 0 {
                break;
            }
            // A parent level can only hold suffix rules: skip it when no suffix rule has
            // that many labels. Saves a hash probe (a cache miss on big lists) per level.
            let labels = name.label_count() - depth;
            if depth > 0
                && !self.index.has_suffix_depth(labels)
                && !self.runtime.has_suffix_depth(labels)
            {
                continue;
            }
            found.len = 0;
            self.index
                .for_each(name.suffix_at(at), |rule| found.push(rule));
            self.runtime
                .for_each(name.suffix_at(at), group, |rule| found.push(rule));
            if found.len == 0 {
                continue;
            }
            // The full name has two tiers (exact, then suffix); parents only the suffix tier.
            let tiers: &[Reach] = if exact_only {
                &[Reach::Exact]
            } else if depth == 0 {
                &[Reach::Exact, Reach::Suffix]
            } else {
                &[Reach::Suffix]
            };
            for &reach in tiers {
                let rules = found.rules().filter(|r| r.reach == reach);
                if let Some(v) = self.decide(rules, at, &mut undecided, &mut allow_seen) {
                    return v;
                }
            }
        }
        Verdict::Pass { allow: allow_seen }
    }

    /// Applies one tier of rules to the undecided profiles. Returns the verdict once one
    /// is certain: a block, or every profile decided by allow rules.
    fn decide<'r>(
        &self,
        rules: impl Iterator<Item = &'r Rule>,
        at: u8,
        undecided: &mut u64,
        allow_seen: &mut Option<Decision>,
    ) -> Option<Verdict> {
        let mut allow_mask = 0u64;
        let mut block_mask = 0u64;
        let mut blockers: [Option<(u16, Rule)>; FOUND_MAX] = [None; FOUND_MAX];
        for rule in rules {
            match self.scope_of(rule.list) {
                Some(Scope::Global) if rule.allow => {
                    allow_mask = u64::MAX;
                    if allow_seen.is_none() && *undecided != 0 {
                        *allow_seen = Some(Decision { rule: *rule, at });
                    }
                }
                Some(Scope::Profile(p)) if rule.allow => {
                    allow_mask |= 1 << p;
                    if allow_seen.is_none() && *undecided & (1 << p) != 0 {
                        *allow_seen = Some(Decision { rule: *rule, at });
                    }
                }
                Some(Scope::Profile(p)) => {
                    block_mask |= 1 << p;
                    if let Some(slot) = blockers.iter_mut().find(|s| s.is_none()) {
                        *slot = Some((p, *rule));
                    }
                }
                // A block rule in a global allowlist cannot be written; unknown lists are ignored.
                Some(Scope::Global) | None => {}
            }
        }
        let blocked = *undecided & block_mask & !allow_mask;
        if blocked != 0 {
            let profile = blocked.trailing_zeros() as u16;
            let (_, rule) = blockers
                .iter()
                .flatten()
                .find(|(p, _)| *p == profile)
                .copied()?;
            return Some(Verdict::Block {
                profile,
                by: Decision { rule, at },
            });
        }
        *undecided &= !(allow_mask | block_mask);
        (*undecided == 0).then_some(Verdict::Pass { allow: *allow_seen })
    }

    /// The profile with this number (`Profile::id`): a reload may have moved it since
    /// the number was taken, never renumbered it. A scan of at most 65 profiles.
    pub fn profile_by_id(&self, id: u16) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.id == id)
    }

    /// Whether profile `i` is worth naming among the profiles on: all but telesink's own
    /// `runtime` profile while no `telesink block` rule exists.
    pub fn listed(&self, i: usize) -> bool {
        i != self.runtime_profile as usize || self.runtime.has_blocks()
    }

    /// Which profiles a rule of this list speaks for; runtime rules are no list file.
    #[inline]
    fn scope_of(&self, list: u16) -> Option<Scope> {
        match list {
            runtime::RUNTIME_ALLOW => Some(Scope::Global),
            runtime::RUNTIME_BLOCK => Some(Scope::Profile(self.runtime_profile)),
            _ => self.lists.get(list as usize).map(|l| l.scope),
        }
    }

    /// Number of index entries (names) each list contributed, for logs and metrics.
    pub fn total_names(&self) -> usize {
        self.index.names()
    }
}

/// The most rules one name may carry across all lists. A lookup keeps them in a fixed
/// array, so the per-query path allocates nothing; the compiler refuses a name with more
/// (with file:line), so none is ever dropped silently.
pub const MAX_RULES_PER_NAME: usize = 8;
/// List rules and runtime rules under one name: a name carries at most four runtime rules
/// for one group (exact and suffix, for every group and for its own), since a new rule
/// replaces the one for the same name and group.
const FOUND_MAX: usize = MAX_RULES_PER_NAME + 4;

/// The rules stored under one name.
#[derive(Default)]
struct Found {
    rules: [Option<Rule>; FOUND_MAX],
    len: usize,
}

impl Found {
    fn push(&mut self, rule: Rule) {
        if let Some(slot) = self.rules.get_mut(self.len) {
            *slot = Some(rule);
            self.len += 1;
        }
    }
    fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules[..self.len].iter().flatten()
    }
}
