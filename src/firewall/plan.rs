//! The firewall as data: what `inet telesink` must contain for a policy snapshot.
//!
//! Pure and safe: derived from the same `Policy` the DNS answers come from, rendered as
//! nft text for `telesink firewall show`, and turned into one netlink batch by
//! `firewall::netlink`. Keeping the two apart means every rule decision is testable
//! without root, and the unsafe code only encodes what this module decided.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};

use crate::config::{DnsAction, FirewallConfig, FirewallVerdict};
use crate::policy::{AddressSet, Policy};

pub const TABLE: &str = "telesink";
/// Not "fwd" or "forward": those are nft keywords and break `nft -f` round trips.
pub const CHAIN_FORWARD: &str = "lan_forward";
pub const CHAIN_OUTPUT: &str = "gateway_output";
pub const CHAIN_DNAT: &str = "lan_dnat";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "4",
            Family::V6 => "6",
        }
    }
    fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }
    fn nft(self) -> (&'static str, &'static str) {
        match self {
            Family::V4 => ("ipv4", "ip"),
            Family::V6 => ("ipv6", "ip6"),
        }
    }
}

/// An inclusive address range, as u128 for both families.
pub type Range = (u128, u128);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetKind {
    /// Constant ranges: merged, sorted, neither overlapping nor touching.
    Interval(Vec<Range>),
    /// Addresses learned by shadow resolution, each with its remaining lifetime; the
    /// kernel drops them when it runs out unless a refresh extends it.
    Timed(Vec<(u128, Duration)>),
    /// Client addresses with a counter each, filled by the accounting rules. An address
    /// not seen for `idle_secs` (0: never) leaves the set, so the addresses a device
    /// stops using (a daily IPv6 temporary address, a DHCP lease that moved) free their
    /// place instead of filling the set for good.
    Accounting { size: u32, idle_secs: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    pub name: String,
    pub family: Family,
    pub kind: SetKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Forward,
    Output,
    /// A nat chain at prerouting, for redirecting DNS to telesink.
    Prerouting,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Accept,
    /// `update @set { ip saddr counter }`: counts, never decides. Kept in its own rule:
    /// a full set would otherwise end the rule before its verdict (a `dynset` that cannot
    /// add ends its rule: reproduced, and tested in tests/firewall.rs).
    Account {
        set: String,
    },
    RejectTcp,
    Reject,
    Drop,
    /// Destination NAT to the gateway's own address on the incoming interface.
    Redirect {
        port: u16,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp,
    Udp,
}

impl L4 {
    fn name(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
        }
    }
}

/// The interfaces a forwarded packet must come in on and go out on (None: any).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ifaces {
    pub iif: Option<String>,
    pub oif: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub hook: Hook,
    pub family: Family,
    pub via: Ifaces,
    /// Source must (or, when negated, must not) be in this set.
    pub saddr: Option<(String, bool)>,
    /// Destination must be in this set (any destination when None).
    pub daddr: Option<String>,
    pub l4: Option<L4>,
    pub dport: Option<u16>,
    /// Destination is not one of the gateway's own addresses (`fib daddr type != local`).
    pub not_local: bool,
    pub action: Action,
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub sets: Vec<SetSpec>,
    pub rules: Vec<RuleSpec>,
    pub forward: bool,
    pub output: bool,
    pub prerouting: bool,
}

/// Which clients a profile's rules apply to.
enum Scope {
    Everyone,
    /// Source in one of these sets, or (for the default group) in none of the group sets.
    Sets(Vec<(String, bool)>),
}

pub fn set_name(prefix: &str, name: &str, family: Family) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{prefix}{clean}_{}", family.suffix())
}

pub fn plan(policy: &Policy, cfg: &FirewallConfig) -> Plan {
    let mut p = Plan {
        forward: !cfg.lan.is_empty(),
        output: cfg.output,
        ..Plan::default()
    };
    // Forwarded traffic from each LAN interface, to each WAN interface when named.
    let wans: Vec<Option<String>> = if cfg.wan.is_empty() {
        vec![None]
    } else {
        cfg.wan.iter().cloned().map(Some).collect()
    };
    let ifaces: Vec<Ifaces> = cfg
        .lan
        .iter()
        .flat_map(|lan| {
            wans.iter().map(move |wan| Ifaces {
                iif: Some(lan.clone()),
                oif: wan.clone(),
            })
        })
        .collect();
    let families = [Family::V4, Family::V6];

    // Client group sets, needed when a profile is on for some groups only.
    let all_groups = policy.groups.iter().fold(0u64, |m, g| m | g.active);
    let scoped_somewhere = policy
        .profiles
        .iter()
        .enumerate()
        .any(|(i, pr)| (!pr.nets.is_empty() || pr.shadow) && !on_everywhere(policy, i));
    if scoped_somewhere && all_groups != 0 {
        for fam in families {
            for (g, _) in policy.groups.iter().enumerate().skip(1) {
                let nets = AddressSet::from_nets(policy.clients.nets_of(g as u16));
                p.sets
                    .push(interval(set_name("grp_", &g.to_string(), fam), fam, &nets));
            }
            let grouped = AddressSet::from_nets(policy.clients.grouped_nets());
            p.sets
                .push(interval(set_name("", "grouped", fam), fam, &grouped));
        }
    }

    // Bypass prevention comes first: it is narrowed by port, and a resolver's address
    // being in the allow set must not let DNS around the sinkhole.
    if cfg.bypass.enabled && !ifaces.is_empty() {
        bypass(&mut p, policy, cfg, &ifaces);
    }

    // The allow set comes next in every chain: shared Microsoft 365 and CDN addresses
    // must keep working whatever a block set says.
    for fam in families {
        let name = set_name("", "allow", fam);
        p.sets.push(interval(name.clone(), fam, &policy.allow_nets));
        let rule = |hook, via: Ifaces| RuleSpec {
            hook,
            family: fam,
            via,
            saddr: None,
            daddr: Some(name.clone()),
            l4: None,
            dport: None,
            not_local: false,
            action: Action::Accept,
            comment: "allow: accepted before every block set".into(),
        };
        p.rules
            .extend(ifaces.iter().map(|i| rule(Hook::Forward, i.clone())));
        if p.output {
            p.rules.push(rule(Hook::Output, Ifaces::default()));
        }
    }

    for (i, profile) in policy.profiles.iter().enumerate() {
        if profile.nets.is_empty() && !profile.shadow {
            continue;
        }
        let bit = 1u64 << i;
        let scope = if on_everywhere(policy, i) {
            Scope::Everyone
        } else {
            let mut sets: Vec<(String, bool)> = Vec::new();
            for (g, group) in policy.groups.iter().enumerate().skip(1) {
                if group.active & bit != 0 {
                    sets.push((format!("grp_{g}"), false));
                }
            }
            if policy.groups[0].active & bit != 0 {
                sets.push(("grouped".into(), true));
            }
            Scope::Sets(sets)
        };
        for fam in families {
            // The profile's own ranges, and (shadow) the addresses learned for its names.
            let mut targets = Vec::new();
            if !profile.nets.is_empty() {
                let block = set_name("p_", &profile.name, fam);
                p.sets.push(interval(block.clone(), fam, &profile.nets));
                targets.push(block);
            }
            if profile.shadow {
                let learned = learned_set(&profile.name, fam);
                p.sets.push(SetSpec {
                    name: learned.clone(),
                    family: fam,
                    kind: SetKind::Timed(Vec::new()),
                });
                targets.push(learned);
            }
            let acct = set_name("acct_", &profile.name, fam);
            p.sets.push(SetSpec {
                name: acct.clone(),
                family: fam,
                kind: SetKind::Accounting {
                    size: cfg.accounting_clients.max(1),
                    idle_secs: cfg.accounting_idle_secs,
                },
            });
            let sources: Vec<Option<(String, bool)>> = match &scope {
                Scope::Everyone => vec![None],
                Scope::Sets(sets) => sets
                    .iter()
                    .map(|(n, neg)| Some((format!("{n}_{}", fam.suffix()), *neg)))
                    .collect(),
            };
            let comment = format!("profile {}", profile.name);
            let verdicts: &[(bool, Action)] = match cfg.verdict {
                FirewallVerdict::Reject => &[(true, Action::RejectTcp), (false, Action::Reject)],
                FirewallVerdict::Drop => &[(false, Action::Drop)],
            };
            for (via, saddr, block) in ifaces
                .iter()
                .flat_map(|v| sources.iter().map(move |s| (v, s)))
                .flat_map(|(v, s)| targets.iter().map(move |t| (v, s, t)))
            {
                {
                    let base = RuleSpec {
                        hook: Hook::Forward,
                        family: fam,
                        via: via.clone(),
                        saddr: saddr.clone(),
                        daddr: Some(block.clone()),
                        l4: None,
                        dport: None,
                        not_local: false,
                        action: Action::Account { set: acct.clone() },
                        comment: comment.clone(),
                    };
                    p.rules.push(base.clone());
                    for (tcp, action) in verdicts {
                        p.rules.push(RuleSpec {
                            l4: tcp.then_some(L4::Tcp),
                            action: action.clone(),
                            ..base.clone()
                        });
                    }
                }
            }
            // The gateway's own traffic belongs to the default group.
            if p.output && policy.groups[0].active & bit != 0 {
                for (block, (tcp, action)) in targets
                    .iter()
                    .flat_map(|t| verdicts.iter().map(move |v| (t, v)))
                {
                    p.rules.push(RuleSpec {
                        hook: Hook::Output,
                        family: fam,
                        via: Ifaces::default(),
                        saddr: None,
                        daddr: Some(block.clone()),
                        l4: tcp.then_some(L4::Tcp),
                        dport: None,
                        not_local: false,
                        action: action.clone(),
                        comment: comment.clone(),
                    });
                }
            }
        }
    }
    p
}

/// DNS (53) and DoT (853) from LAN clients to anyone are forwarded only if they bypass
/// telesink (queries to the gateway itself are not forwarded), and HTTPS/QUIC to known
/// DoH resolvers is DNS in disguise. Each is rejected and counted per client and kind.
fn bypass(p: &mut Plan, policy: &Policy, cfg: &FirewallConfig, ifaces: &[Ifaces]) {
    let b = &cfg.bypass;
    let kinds: [(&str, bool, u16, bool); 3] = [
        ("dns", b.dns, 53, false),
        ("dot", b.dot, 853, false),
        ("doh", !policy.bypass_nets.is_empty(), 443, true),
    ];
    for fam in [Family::V4, Family::V6] {
        let doh_set = set_name("", "doh", fam);
        if !policy.bypass_nets.is_empty() {
            p.sets
                .push(interval(doh_set.clone(), fam, &policy.bypass_nets));
        }
        for (kind, on, port, to_doh) in kinds {
            if !on {
                continue;
            }
            let acct = set_name("bypass_", kind, fam);
            p.sets.push(SetSpec {
                name: acct.clone(),
                family: fam,
                kind: SetKind::Accounting {
                    size: cfg.accounting_clients.max(1),
                    idle_secs: cfg.accounting_idle_secs,
                },
            });
            for via in ifaces {
                for l4 in [L4::Tcp, L4::Udp] {
                    let base = RuleSpec {
                        hook: Hook::Forward,
                        family: fam,
                        via: via.clone(),
                        saddr: None,
                        daddr: to_doh.then(|| doh_set.clone()),
                        l4: Some(l4),
                        dport: Some(port),
                        not_local: false,
                        action: Action::Account { set: acct.clone() },
                        comment: format!("bypass {kind}"),
                    };
                    if kind == "dns" && b.dns_action == DnsAction::Redirect {
                        // Redirected before routing, so it never reaches the forward
                        // chain; queries already addressed to the gateway are left alone.
                        p.prerouting = true;
                        // Before routing there is no output interface to match on, so
                        // one rule pair per LAN interface, whatever the WANs.
                        if via.oif.as_ref() != wan_first(ifaces, via) {
                            continue;
                        }
                        let base = RuleSpec {
                            hook: Hook::Prerouting,
                            via: Ifaces {
                                iif: via.iif.clone(),
                                oif: None,
                            },
                            not_local: true,
                            ..base
                        };
                        p.rules.push(base.clone());
                        p.rules.push(RuleSpec {
                            action: Action::Redirect { port: 53 },
                            ..base
                        });
                        continue;
                    }
                    let verdict = match (cfg.verdict, l4) {
                        (FirewallVerdict::Drop, _) => Action::Drop,
                        (FirewallVerdict::Reject, L4::Tcp) => Action::RejectTcp,
                        (FirewallVerdict::Reject, L4::Udp) => Action::Reject,
                    };
                    p.rules.push(base.clone());
                    p.rules.push(RuleSpec {
                        action: verdict,
                        ..base
                    });
                }
            }
        }
    }
}

/// The timed set holding the learned addresses of a shadow profile's blocked names.
pub fn learned_set(profile: &str, family: Family) -> String {
    set_name("learned_", profile, family)
}

impl Plan {
    /// Puts the currently learned addresses (with their remaining lifetimes) into the
    /// plan's timed sets, so a full apply does not forget them.
    pub fn fill_learned(&mut self, learned: impl Fn(&str) -> Vec<(u128, Duration)>) {
        for set in &mut self.sets {
            if let SetKind::Timed(elements) = &mut set.kind {
                *elements = learned(&set.name);
            }
        }
    }
}

/// The first WAN interface paired with this LAN interface (None when no WAN is named).
fn wan_first<'a>(ifaces: &'a [Ifaces], via: &Ifaces) -> Option<&'a String> {
    ifaces
        .iter()
        .find(|i| i.iif == via.iif)
        .and_then(|i| i.oif.as_ref())
}

fn on_everywhere(policy: &Policy, profile: usize) -> bool {
    policy.groups.iter().all(|g| g.active & (1 << profile) != 0)
}

fn interval(name: String, family: Family, nets: &AddressSet) -> SetSpec {
    let ranges = match family {
        Family::V4 => merge(nets.v4.iter().map(v4_range)),
        Family::V6 => merge(nets.v6.iter().map(v6_range)),
    };
    SetSpec {
        name,
        family,
        kind: SetKind::Interval(ranges),
    }
}

fn v4_range(n: &Ipv4Net) -> Range {
    (
        u128::from(u32::from(n.network())),
        u128::from(u32::from(n.broadcast())),
    )
}

fn v6_range(n: &Ipv6Net) -> Range {
    (u128::from(n.network()), u128::from(n.broadcast()))
}

/// Sorts and merges ranges so that none overlap or touch: the kernel rejects overlapping
/// interval elements and aborts the whole batch.
/// How an interval set's ranges are written as kernel elements: (key, is an END
/// element). The kernel wants [start, end+1) pairs, and an END element at address 0 when
/// the first range does not start there (what nft itself sends). Merged ranges never
/// touch, so every key is unique and the list is sorted.
pub fn interval_elements(ranges: &[Range], family: Family) -> Vec<(u128, bool)> {
    let max = match family {
        Family::V4 => u128::from(u32::MAX),
        Family::V6 => u128::MAX,
    };
    let mut out = Vec::with_capacity(ranges.len() * 2 + 1);
    if ranges.first().is_some_and(|r| r.0 != 0) {
        out.push((0, true));
    }
    for &(start, end) in ranges {
        out.push((start, false));
        if end < max {
            out.push((end + 1, true));
        }
    }
    out
}

/// The elements to take out of and put into one interval set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementDiff {
    pub set: String,
    pub family: Family,
    pub remove: Vec<(u128, bool)>,
    pub add: Vec<(u128, bool)>,
}

/// What it takes to go from the installed plan to a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanChange {
    /// The kernel already holds the new plan.
    Nothing,
    /// Same chains, rules and sets; only interval sets' elements differ.
    Elements(Vec<ElementDiff>),
    /// The rules (or chains, or which sets exist) differ, but every set both plans have
    /// is of the same kind: the chains are flushed and refilled, sets only one plan has
    /// are added or deleted, and the sets both have are kept as they are in the kernel
    /// apart from their element differences, all in one transaction. A toggle is such a
    /// change: it costs its rules and the elements that really change, never a refill
    /// of 100k ranges that stay (whose per-element work was a second on some hosts).
    Rules {
        diffs: Vec<ElementDiff>,
        /// Names of the sets both plans have: left in place (learned and accounting
        /// sets keep their elements and counters).
        kept: Vec<String>,
    },
    /// A set both plans have changed its kind or family: the table is rewritten in place.
    Structure,
}

impl SetSpec {
    /// The set with no elements: what declares a set that stays as it is in the kernel.
    pub fn declaration(&self) -> SetSpec {
        let kind = match &self.kind {
            SetKind::Interval(_) => SetKind::Interval(Vec::new()),
            SetKind::Timed(_) => SetKind::Timed(Vec::new()),
            SetKind::Accounting { size, idle_secs } => SetKind::Accounting {
                size: *size,
                idle_secs: *idle_secs,
            },
        };
        SetSpec {
            name: self.name.clone(),
            family: self.family,
            kind,
        }
    }
}

/// Whether two sets of the same name can stay in the kernel as they are (their elements
/// aside).
fn same_kind(n: &SetSpec, o: &SetSpec) -> bool {
    n.name == o.name
        && n.family == o.family
        && match (&n.kind, &o.kind) {
            (SetKind::Interval(_), SetKind::Interval(_))
            | (SetKind::Timed(_), SetKind::Timed(_)) => true,
            (
                SetKind::Accounting {
                    size: a,
                    idle_secs: x,
                },
                SetKind::Accounting {
                    size: b,
                    idle_secs: y,
                },
            ) => a == b && x == y,
            _ => false,
        }
}

impl Plan {
    /// Compares with the plan installed before. Learned (timed) sets are never diffed:
    /// shadow resolution keeps their contents current by itself.
    pub fn change_from(&self, old: &Plan) -> PlanChange {
        let same_rules = self.forward == old.forward
            && self.output == old.output
            && self.prerouting == old.prerouting
            && self.rules == old.rules;
        let same_sets = self.sets.len() == old.sets.len()
            && self
                .sets
                .iter()
                .zip(&old.sets)
                .all(|(n, o)| same_kind(n, o));
        let mut kept = Vec::new();
        let mut diffs = Vec::new();
        for n in &self.sets {
            let Some(o) = old.sets.iter().find(|o| o.name == n.name) else {
                continue;
            };
            if !same_kind(n, o) {
                return PlanChange::Structure;
            }
            kept.push(n.name.clone());
            let (SetKind::Interval(new), SetKind::Interval(old)) = (&n.kind, &o.kind) else {
                continue;
            };
            if new == old {
                continue;
            }
            let (remove, add) = sorted_difference(
                &interval_elements(old, n.family),
                &interval_elements(new, n.family),
            );
            diffs.push(ElementDiff {
                set: n.name.clone(),
                family: n.family,
                remove,
                add,
            });
        }
        match (same_rules && same_sets, diffs.is_empty()) {
            (true, true) => PlanChange::Nothing,
            (true, false) => PlanChange::Elements(diffs),
            (false, _) => PlanChange::Rules { diffs, kept },
        }
    }
}

/// One interval-set element: its key and whether it is an END element.
pub type Element = (u128, bool);

/// (in `old` only, in `new` only) of two sorted lists with unique keys.
fn sorted_difference(old: &[Element], new: &[Element]) -> (Vec<Element>, Vec<Element>) {
    let (mut remove, mut add) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            // Keys are unique within a list, so (key, end) orders both lists.
            (Some(a), Some(b)) if a < b => {
                remove.push(*a);
                i += 1;
            }
            (Some(_), Some(b)) => {
                add.push(*b);
                j += 1;
            }
            (Some(a), None) => {
                remove.push(*a);
                i += 1;
            }
            (None, Some(b)) => {
                add.push(*b);
                j += 1;
            }
            (None, None) => break,
        }
    }
    (remove, add)
}

pub fn merge(ranges: impl Iterator<Item = Range>) -> Vec<Range> {
    let mut v: Vec<Range> = ranges.collect();
    v.sort_unstable();
    let mut out: Vec<Range> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

pub fn addr(family: Family, v: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

impl fmt::Display for Plan {
    /// The plan in nft syntax, as `nft list table inet telesink` would show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "table inet {TABLE} {{")?;
        for s in &self.sets {
            write!(
                f,
                "\tset {} {{\n\t\ttype {}\n",
                s.name,
                s.family.addr_type()
            )?;
            match &s.kind {
                SetKind::Interval(ranges) => {
                    writeln!(f, "\t\tflags interval")?;
                    if !ranges.is_empty() {
                        let mut els = String::new();
                        for (i, (a, b)) in ranges.iter().enumerate() {
                            let sep = if i == 0 { "" } else { ", " };
                            if a == b {
                                let _ = write!(els, "{sep}{}", addr(s.family, *a));
                            } else {
                                let _ = write!(
                                    els,
                                    "{sep}{}-{}",
                                    addr(s.family, *a),
                                    addr(s.family, *b)
                                );
                            }
                        }
                        writeln!(f, "\t\telements = {{ {els} }}")?;
                    }
                }
                SetKind::Accounting { size, idle_secs: 0 } => {
                    writeln!(f, "\t\tsize {size}\n\t\tflags dynamic")?
                }
                SetKind::Accounting { size, idle_secs } => writeln!(
                    f,
                    "\t\tsize {size}\n\t\tflags dynamic,timeout\n\t\ttimeout {idle_secs}s"
                )?,
                SetKind::Timed(elements) => {
                    writeln!(f, "\t\tflags timeout")?;
                    if !elements.is_empty() {
                        let els: Vec<String> = elements
                            .iter()
                            .map(|(a, t)| {
                                format!("{} timeout {}s", addr(s.family, *a), t.as_secs().max(1))
                            })
                            .collect();
                        writeln!(f, "\t\telements = {{ {} }}", els.join(", "))?;
                    }
                }
            }
            writeln!(f, "\t}}")?;
        }
        for (hook, name, on) in [
            (Hook::Prerouting, CHAIN_DNAT, self.prerouting),
            (Hook::Forward, CHAIN_FORWARD, self.forward),
            (Hook::Output, CHAIN_OUTPUT, self.output),
        ] {
            if !on {
                continue;
            }
            let (kind, h, prio) = match hook {
                Hook::Prerouting => ("nat", "prerouting", "dstnat"),
                Hook::Forward => ("filter", "forward", "filter"),
                Hook::Output => ("filter", "output", "filter"),
            };
            writeln!(
                f,
                "\tchain {name} {{\n\t\ttype {kind} hook {h} priority {prio}; policy accept;"
            )?;
            for r in self.rules.iter().filter(|r| r.hook == hook) {
                writeln!(f, "\t\t{r}")?;
            }
            writeln!(f, "\t}}")?;
        }
        writeln!(f, "}}")
    }
}

impl fmt::Display for RuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (proto, kw) = self.family.nft();
        if let Some(i) = &self.via.iif {
            write!(f, "iifname \"{i}\" ")?;
        }
        if let Some(o) = &self.via.oif {
            write!(f, "oifname \"{o}\" ")?;
        }
        write!(f, "meta nfproto {proto} ")?;
        if let Some((set, neg)) = &self.saddr {
            write!(f, "{kw} saddr {}@{set} ", if *neg { "!= " } else { "" })?;
        }
        if let Some(set) = &self.daddr {
            write!(f, "{kw} daddr @{set} ")?;
        }
        if let Some(l4) = self.l4 {
            write!(f, "meta l4proto {} ", l4.name())?;
            if let Some(port) = self.dport {
                write!(f, "{} dport {port} ", l4.name())?;
            }
        }
        if self.not_local {
            write!(f, "fib daddr type != local ")?;
        }
        match &self.action {
            Action::Accept => write!(f, "accept")?,
            Action::Account { set } => write!(f, "update @{set} {{ {kw} saddr counter }}")?,
            Action::RejectTcp => write!(f, "counter reject with tcp reset")?,
            Action::Reject => write!(f, "counter reject with icmpx admin-prohibited")?,
            Action::Drop => write!(f, "counter drop")?,
            Action::Redirect { port } => write!(f, "counter redirect to :{port}")?,
        }
        write!(f, " comment \"{}\"", self.comment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_set(ranges: Vec<Range>) -> Plan {
        Plan {
            sets: vec![SetSpec {
                name: "cidr_p_4".into(),
                family: Family::V4,
                kind: SetKind::Interval(ranges),
            }],
            forward: true,
            ..Plan::default()
        }
    }

    #[test]
    fn a_plan_diff_is_nothing_elements_or_structure() {
        let old = one_set(vec![(10, 20), (40, 50)]);
        assert_eq!(
            one_set(vec![(10, 20), (40, 50)]).change_from(&old),
            PlanChange::Nothing
        );
        // One range grows, one is added: only their boundary elements move.
        let PlanChange::Elements(d) = one_set(vec![(10, 30), (40, 50), (60, 60)]).change_from(&old)
        else {
            panic!("expected an element change");
        };
        assert_eq!(d[0].remove, [(21, true)]);
        assert_eq!(d[0].add, [(31, true), (60, false), (61, true)]);
        // A range that now starts where the old one's END element was: same key, other kind.
        let PlanChange::Elements(d) = one_set(vec![(21, 30)]).change_from(&one_set(vec![(10, 20)]))
        else {
            panic!("expected an element change");
        };
        assert_eq!(d[0].remove, [(10, false), (21, true)]);
        assert_eq!(d[0].add, [(21, false), (31, true)]);
        // A set renamed is one set gone and one new: rules change, nothing is kept.
        let mut renamed = one_set(vec![(10, 20)]);
        renamed.sets[0].name = "cidr_q_4".into();
        assert_eq!(
            renamed.change_from(&old),
            PlanChange::Rules {
                diffs: vec![],
                kept: vec![]
            }
        );
        // Rules differ, the set stays: kept, with only its element changes.
        let mut no_forward = one_set(vec![(10, 20), (40, 50), (60, 60)]);
        no_forward.forward = false;
        let PlanChange::Rules { diffs, kept } = no_forward.change_from(&old) else {
            panic!("expected a rules change");
        };
        assert_eq!(kept, ["cidr_p_4"]);
        assert_eq!(diffs[0].add, [(60, false), (61, true)]);
        // A set that changes kind cannot be kept.
        let mut timed = old.clone();
        timed.sets[0].kind = SetKind::Timed(Vec::new());
        assert_eq!(timed.change_from(&old), PlanChange::Structure);
    }

    #[test]
    fn merge_joins_overlapping_and_touching_ranges_only() {
        let got = merge([(10, 20), (0, 5), (6, 8), (15, 30), (40, 50)].into_iter());
        assert_eq!(got, [(0, 8), (10, 30), (40, 50)]);
        assert_eq!(
            merge([(0, u128::MAX), (5, 6)].into_iter()),
            [(0, u128::MAX)]
        );
    }
}

/// One accounting set of a plan and the per-client counter it feeds.
#[derive(Debug, Clone)]
pub struct AcctSet {
    pub set: String,
    pub family: Family,
    /// (metric name, label name, label value): a profile's rejects or a bypass kind.
    pub metric: &'static str,
    pub label: &'static str,
    pub value: std::sync::Arc<str>,
}

/// The accounting sets of a plan, with the counter each one feeds (the metrics and the
/// evidence ledger read the same sets).
pub fn accounting_sets(plan: &Plan, policy: &Policy) -> Vec<AcctSet> {
    use crate::metric_names::{BYPASS_ATTEMPTS, FIREWALL_REJECTS};
    let mut out = Vec::new();
    for set in plan
        .sets
        .iter()
        .filter(|s| matches!(s.kind, SetKind::Accounting { .. }))
    {
        let profile = policy
            .profiles
            .iter()
            .find(|p| set_name("acct_", &p.name, set.family) == set.name)
            .map(|p| (FIREWALL_REJECTS, "profile", p.name.as_str()));
        let bypass = ["dns", "dot", "doh"]
            .into_iter()
            .find(|k| set_name("bypass_", k, set.family) == set.name)
            .map(|k| (BYPASS_ATTEMPTS, "kind", k));
        if let Some((metric, label, value)) = profile.or(bypass) {
            out.push(AcctSet {
                set: set.name.clone(),
                family: set.family,
                metric,
                label,
                value: value.into(),
            });
        }
    }
    out
}
