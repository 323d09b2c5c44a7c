//! Compiling a `Policy` from the config and the list files it names.
//!
//! Everything a user can get wrong is collected as a `BuildProblem` with file:line, so
//! `telesink check` lists every mistake at once. Problems in the config itself are fatal;
//! a bad list line is fatal for `check` but only skipped (and counted) by `run`, so one
//! stray line in a third-party list does not take the resolver down.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;

use super::index::IndexBuilder;
use super::{
    ClientTable, Group, ListInfo, MAX_CONFIG_PROFILES, MAX_RULES_PER_NAME, Mode, Policy, Profile,
    Rule, Scope,
};
use crate::config::{LoadedConfig, Location, ModeName, ProfileConfig};
use crate::lists::{self, Guard, Reach};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The policy cannot be built.
    Fatal,
    /// One list line was skipped; the rest of the list loads.
    SkippedLine,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{at}: {message}")]
pub struct BuildProblem {
    pub at: Location,
    pub message: String,
    pub severity: Severity,
}

pub struct BuildOutcome {
    pub policy: Option<Policy>,
    pub problems: Vec<BuildProblem>,
    /// Not errors: what enabled profiles are known to break.
    pub warnings: Vec<String>,
}

impl BuildOutcome {
    pub fn skipped_lines(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::SkippedLine)
            .count()
    }
}

/// The groups, the client networks with their group, and the named hosts.
type GroupsBuilt = (
    Vec<Group>,
    Vec<(ipnet::IpNet, u16)>,
    Vec<(std::net::IpAddr, String)>,
);

struct Builder<'c> {
    cfg: &'c LoadedConfig,
    /// Folders a relative list path is looked up in, first match wins.
    search: Vec<PathBuf>,
    problems: Vec<BuildProblem>,
    index: IndexBuilder,
    lists: Vec<ListInfo>,
    guard: Guard,
}

/// Where relative list paths are looked up, so one config works from the repository and
/// installed:
/// 1. `<config dir>/blocklists`: admin overrides next to the config (/etc/telesink/blocklists);
/// 2. `<config dir>/<lists_dir>`: the repository layout (config/../blocklists);
/// 3. `<binary>/../share/telesink/blocklists`: the shipped lists (/usr/share/telesink/blocklists
///    for /usr/bin/telesink, /usr/local/share/... for `make install`).
pub fn list_search_path(config_dir: &Path, lists_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![config_dir.join("blocklists"), config_dir.join(lists_dir)];
    if let Some(prefix) = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.to_path_buf()))
    {
        dirs.push(prefix.join("share/telesink/blocklists"));
    }
    dirs
}

/// Settings that are valid but almost certainly not what the admin meant.
fn setting_warnings(cfg: &LoadedConfig) -> Vec<String> {
    let c = &cfg.config;
    let mut out = Vec::new();
    if c.firewall.enabled && c.firewall.lan.is_empty() {
        out.push(
            "firewall.enabled is true but firewall.lan names no interface: forwarded traffic is not filtered, only the gateway's own; name the LAN interfaces".to_owned(),
        );
    }
    if c.firewall.enabled {
        for iface in c.firewall.lan.iter().chain(&c.firewall.wan) {
            if !Path::new("/sys/class/net").join(iface).exists() {
                out.push(format!(
                    "firewall interface {iface} does not exist on this machine: its rules match nothing until it does (ip link shows the names)"
                ));
            }
        }
    }
    out.extend(crate::config::upstream::warnings(c));
    if c.upstream.timeout_ms == 0 {
        out.push(
            "upstream.timeout_ms = 0: every forwarded query fails at once with SERVFAIL; the default is 1800".to_owned(),
        );
    }
    out
}

/// For each profile that is on for some group: the Microsoft 365 Required names (with
/// their file:line) it would block with the allowlists in force, unless its `warning`
/// names them.
fn required_warnings(policy: &Policy, required: &[(String, Location)]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, p) in policy.profiles.iter().enumerate() {
        if !policy.groups.iter().any(|g| g.active & (1 << i) != 0) {
            continue;
        }
        for (name, at) in required {
            let Some(q) = super::QName::parse(name) else {
                continue;
            };
            let blocks = matches!(policy.verdict_for(1 << i, &q), super::Verdict::Block { .. });
            let named = p
                .warning
                .as_deref()
                .is_some_and(|w| w.contains(name.as_str()));
            if blocks && !named {
                out.push(format!(
                    "profile {} is on and blocks {name}, which Microsoft 365 marks Required ({at}); if that is intended, name it in the profile's warning",
                    p.name
                ));
            }
        }
    }
    out
}

/// The part of a profile's nftables set names that comes from the profile's name (as
/// `firewall::plan::set_name` makes it).
fn set_key(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

pub fn build(cfg: &LoadedConfig, generation: u64) -> BuildOutcome {
    let base = cfg.base_dir();
    let search = list_search_path(&base, &cfg.config.policy.lists_dir);
    let mut b = Builder {
        cfg,
        search,
        problems: Vec::new(),
        index: IndexBuilder::with_capacity(0, 0),
        lists: Vec::new(),
        guard: Guard::default(),
    };
    let profiles = b.profiles();
    // The control socket's group must exist where telesink runs; `run` would fail on it,
    // so `check` (and a reload) do too, at the key.
    if let Some(group) = &cfg.config.control.socket_group
        && crate::config::gid_of(group).is_none()
    {
        let at = cfg.text.find("socket_group").unwrap_or(0);
        b.fatal(
            at,
            format!(
                "control.socket_group: no group named {group} in /etc/group (create it with addgroup --system {group}, or leave the key out)"
            ),
        );
    }
    b.reserve();
    if let Some(guard) = &cfg.config.policy.guard {
        b.load_guard(guard);
    }
    for path in &cfg.config.policy.allowlists {
        b.load(path, Scope::Global, true);
    }
    // Profiles past the limit were refused by `profiles()`; only those within it load.
    let config_profiles = || {
        cfg.config
            .profiles
            .0
            .iter()
            .enumerate()
            .take(MAX_CONFIG_PROFILES)
    };
    for (i, (name, p)) in config_profiles() {
        for path in &p.lists {
            let before = b.lists.len();
            b.load(path, Scope::Profile(i as u16), false);
            let loaded = b.lists.get(before).map(|l| (l.path.clone(), l.entries));
            if let Some((file, entries)) = loaded
                && file.exists()
            {
                b.refuse_empty(
                    name.get_ref(),
                    p.allow_empty_lists,
                    path.span().start,
                    &file,
                    entries,
                );
            }
        }
        for path in &p.allowlists {
            b.load(path, Scope::Profile(i as u16), true);
        }
    }
    let mut profiles = profiles;
    for (i, (name, p)) in config_profiles() {
        let (nets, counts) = b.load_cidrs_counted(&p.cidrs);
        for (at, file, n) in counts {
            b.refuse_empty(name.get_ref(), p.allow_empty_lists, at, &file, n);
        }
        profiles[i].nets = nets;
    }
    // telesink's own profile for `telesink block`: last, so a list's profile is named
    // first when both block a name; on for every group; shadowed when any profile is, so
    // the firewall also stops a name blocked at 9:00 for clients that know its address.
    let runtime_profile = profiles.len() as u16;
    profiles.push(Profile {
        name: super::runtime::RUNTIME_PROFILE.to_owned(),
        key: super::runtime::RUNTIME_PROFILE.into(),
        id: super::ids::id_of(super::runtime::RUNTIME_PROFILE),
        description: "names blocked with `telesink block`".to_owned(),
        mode: Mode::Null,
        enabled: true,
        warning: None,
        ede_text: "blocked by a telesink runtime rule (telesink block)".to_owned(),
        nets: super::AddressSet::default(),
        shadow: profiles.iter().any(|p| p.shadow),
    });
    let bypass_nets = b.load_cidrs(&cfg.config.firewall.bypass.doh_cidrs);
    let mut allow_warnings = Vec::new();
    let allow_nets = b.load_allow_cidrs(&profiles, &bypass_nets, &mut allow_warnings);
    let never_learn_nets = b.load_cidrs(&cfg.config.firewall.shadow.never_learn_cidrs);
    let never_learn_zones = b.load_zones(&cfg.config.firewall.shadow.never_learn_zones);
    let forward_zones = b.forward_zones();
    let (groups, nets, host_names) = b.groups(&profiles);
    let rate = b.rate_rules(&host_names);
    let devices = b.devices();
    let mut warnings: Vec<String> = profiles
        .iter()
        .enumerate()
        .filter(|(i, _)| groups.iter().any(|g| g.active & (1 << i) != 0))
        .filter_map(|(_, p)| {
            p.warning
                .as_ref()
                .map(|w| format!("profile {} is on: {w}", p.name))
        })
        .collect();
    warnings.extend(setting_warnings(cfg));
    warnings.extend(allow_warnings);
    let required = cfg
        .config
        .policy
        .required
        .as_ref()
        .map(|path| b.load_names(path))
        .unwrap_or_default();

    let index = std::mem::replace(&mut b.index, IndexBuilder::with_capacity(0, 0)).finish();
    b.refuse_crowded_names(&index);
    let fatal = b.problems.iter().any(|p| p.severity == Severity::Fatal);
    let policy = (!fatal).then(|| Policy {
        generation,
        index: Arc::new(index),
        lists: Arc::new(b.lists),
        profiles,
        base_groups: Arc::new(groups.clone()),
        groups,
        toggles: super::Toggles::default(),
        layers: None,
        clients: ClientTable::new(nets, cfg.config.policy.allowed_clients.clone())
            .with_names(host_names)
            .with_devices(devices),
        allow_nets,
        bypass_nets,
        never_learn_nets,
        never_learn_zones: Arc::new(never_learn_zones),
        forward_zones: Arc::new(forward_zones),
        block_ttl: cfg.config.policy.block_ttl_secs,
        cname_cloaking: cfg.config.policy.cname_cloaking,
        rate: Arc::new(rate),
        runtime: Arc::default(),
        runtime_profile,
    });
    if let Some(p) = &policy {
        warnings.extend(required_warnings(p, &required));
    }
    BuildOutcome {
        policy,
        problems: b.problems,
        warnings,
    }
}

impl Builder<'_> {
    /// The rate limit's exemptions: each `exempt` entry resolved (an unknown name is an
    /// error at its line), and the gateway's own addresses when asked for.
    fn rate_rules(&mut self, hosts: &[(std::net::IpAddr, String)]) -> super::rate::RateRules {
        let c = &self.cfg.config.server.rate_limit;
        let mut exempt = Vec::new();
        for entry in &c.exempt {
            match super::rate::exempt_entry(entry.get_ref(), hosts) {
                Ok(net) => exempt.push(net),
                Err(message) => self.fatal(entry.span().start, message),
            }
        }
        if c.exempt_gateway {
            exempt.extend(
                crate::host::own_addresses()
                    .into_iter()
                    .map(ipnet::IpNet::from),
            );
        }
        super::rate::RateRules::new(c, exempt)
    }

    /// `[[devices]]`: each MAC must parse, and a MAC or network may name one device only.
    /// The lease files are checked here too, so `check`, start and reload agree.
    fn devices(&mut self) -> super::devices::DeviceBook {
        use super::devices::Mac;
        let mut by_mac: std::collections::HashMap<Mac, Arc<str>> = Default::default();
        let mut by_addr: Vec<(ipnet::IpNet, Arc<str>)> = Vec::new();
        let entries = self.cfg.config.devices.clone();
        for d in &entries {
            let name: Arc<str> = d.name.get_ref().trim().into();
            if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
                self.fatal(
                    d.name.span().start,
                    format!(
                        "device name {:?}: give 1 to 64 printable characters (it becomes the client label)",
                        d.name.get_ref()
                    ),
                );
                continue;
            }
            if d.macs.is_empty() && d.addresses.is_empty() {
                self.fatal(
                    d.name.span().start,
                    format!("device {name}: give macs = [\"aa:bb:cc:dd:ee:ff\"] or addresses = [\"198.51.100.7\"]"),
                );
            }
            for m in &d.macs {
                match Mac::parse(m.get_ref()) {
                    Some(mac) => {
                        if let Some(other) = by_mac.insert(mac, name.clone())
                            && other != name
                        {
                            self.fatal(
                                m.span().start,
                                format!("MAC {mac} names two devices: {other} and {name}; give it to one"),
                            );
                        }
                    }
                    None => self.fatal(
                        m.span().start,
                        format!(
                            "device {name}: {:?} is not a MAC address; write it as aa:bb:cc:dd:ee:ff",
                            m.get_ref()
                        ),
                    ),
                }
            }
            for net in &d.addresses {
                if let Some((_, other)) = by_addr.iter().find(|(n, _)| n.trunc() == net.trunc()) {
                    let message = format!(
                        "address {net} names two devices: {other} and {name}; give it to one"
                    );
                    self.fatal(d.name.span().start, message);
                }
                by_addr.push((net.trunc(), name.clone()));
            }
        }
        let lease_files = self.cfg.config.identity.lease_files.clone();
        for path in &lease_files {
            if !path.get_ref().is_absolute() {
                self.fatal(
                    path.span().start,
                    format!(
                        "lease file {}: give an absolute path (the daemon's folder is not the config's)",
                        path.get_ref().display()
                    ),
                );
            }
        }
        super::devices::DeviceBook::new(by_mac, by_addr)
    }

    /// The `[[forward]]` zones, and what is wrong with the upstream settings (refused
    /// here, so `check`, a start and a reload agree).
    fn forward_zones(&mut self) -> crate::lists::ZoneSet {
        let c = &self.cfg.config;
        for (key, message) in crate::config::upstream::problems(c) {
            let at = self.cfg.text.find(key).unwrap_or(0);
            self.fatal(at, message);
        }
        // `[cluster]` is checked here too, so `check`, a start and a reload agree.
        let cluster = c.cluster.as_ref().map(|k| k.problems()).unwrap_or_default();
        for (key, message) in cluster {
            let table = self.cfg.text.find("[cluster]").unwrap_or(0);
            let at = self.cfg.text[table..]
                .find(key)
                .map_or(table, |i| table + i);
            self.fatal(at, message);
        }
        let mut zones = crate::lists::ZoneSet::default();
        for f in &c.forward {
            let zone = f.zone.get_ref().trim_end_matches('.').to_ascii_lowercase();
            if !zone.is_empty() {
                zones.add(&zone);
            }
        }
        zones
    }

    fn fatal(&mut self, offset: usize, message: impl Into<String>) {
        self.problems.push(BuildProblem {
            at: self.cfg.at(offset),
            message: message.into(),
            severity: Severity::Fatal,
        });
    }

    /// The first folder of the search path that has the file; if none has it, the path in
    /// the configured lists_dir, so the error names the place the admin expects.
    fn resolve(&self, path: &Path) -> PathBuf {
        self.search
            .iter()
            .map(|dir| dir.join(path))
            .find(|p| p.is_file())
            .unwrap_or_else(|| self.search.get(1).unwrap_or(&self.search[0]).join(path))
    }

    /// Sizes the index from the files' byte counts, so a million-name load does not pay
    /// for repeated doubling (and twice the memory at its peak).
    fn reserve(&mut self) {
        let c = &self.cfg.config;
        let bytes: u64 = c
            .policy
            .allowlists
            .iter()
            .chain(
                c.profiles
                    .0
                    .iter()
                    .flat_map(|(_, p)| p.lists.iter().chain(&p.allowlists)),
            )
            .filter_map(|p| std::fs::metadata(self.resolve(p.get_ref())).ok())
            .map(|m| m.len())
            .sum();
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX / 64);
        // Measured on real lists: about one name per 24-40 bytes of file.
        self.index = IndexBuilder::with_capacity(bytes / 24, bytes);
    }

    fn profiles(&mut self) -> Vec<Profile> {
        let entries = &self.cfg.config.profiles.0;
        if entries.len() > MAX_CONFIG_PROFILES {
            let at = entries[MAX_CONFIG_PROFILES].0.span().start;
            self.fatal(
                at,
                format!("at most {MAX_CONFIG_PROFILES} profiles are supported (one more is telesink's own, runtime)"),
            );
        }
        let mut out = Vec::new();
        for (name, p) in entries.iter().take(MAX_CONFIG_PROFILES) {
            if name.get_ref() == super::runtime::RUNTIME_PROFILE {
                self.fatal(
                    name.span().start,
                    "the profile name runtime is telesink's own (it holds the blocks of `telesink block`); rename this one",
                );
            }
            if out.iter().any(|o: &Profile| o.name == *name.get_ref()) {
                self.fatal(
                    name.span().start,
                    format!("profile {} is defined twice", name.get_ref()),
                );
            }
            // nftables set names keep letters and digits and turn the rest into '_':
            // two profiles that map to one name would share (and fight over) one set.
            let key = set_key(name.get_ref());
            if let Some(other) = out.iter().find(|o: &&Profile| set_key(&o.name) == key) {
                self.fatal(
                    name.span().start,
                    format!(
                        "profiles {} and {} would get the same nftables set names (..._{key}_4); rename one",
                        other.name,
                        name.get_ref()
                    ),
                );
            }
            let mode = self.mode(name, p);
            out.push(Profile {
                name: name.get_ref().clone(),
                key: name.get_ref().as_str().into(),
                id: super::ids::id_of(name.get_ref()),
                description: p.description.clone(),
                mode,
                enabled: p.enabled,
                warning: p.warning.clone(),
                ede_text: format!("blocked by telesink profile {}", name.get_ref()),
                nets: super::AddressSet::default(),
                shadow: p.shadow,
            });
        }
        out
    }

    /// A name with more rules than a lookup keeps (`MAX_RULES_PER_NAME`) would have some
    /// silently ignored: an error at the rule that goes over, with its file:line.
    fn refuse_crowded_names(&mut self, index: &super::index::NameIndex) {
        for (name, rules) in index.crowded(MAX_RULES_PER_NAME) {
            let Some(over) = rules.get(MAX_RULES_PER_NAME) else {
                continue;
            };
            let file = self
                .lists
                .get(over.list as usize)
                .map(|l| l.path.clone())
                .unwrap_or_default();
            self.problems.push(BuildProblem {
                at: Location {
                    path: file,
                    line: over.line as usize,
                },
                message: format!(
                    "{name} has {} rules across the lists, more than the {MAX_RULES_PER_NAME} a lookup keeps; remove entries for it from some lists",
                    rules.len()
                ),
                severity: Severity::Fatal,
            });
        }
    }

    fn mode(&mut self, name: &Spanned<String>, p: &ProfileConfig) -> Mode {
        let at = p.mode.span().start.max(name.span().start);
        match p.mode.get_ref() {
            ModeName::Ip => {
                if p.ipv4.is_none() && p.ipv6.is_none() {
                    self.fatal(
                        at,
                        format!(
                            "profile {}: mode \"ip\" needs ipv4 and/or ipv6",
                            name.get_ref()
                        ),
                    );
                }
                return Mode::Ip {
                    v4: p.ipv4,
                    v6: p.ipv6,
                };
            }
            _ if p.ipv4.is_some() || p.ipv6.is_some() => {
                self.fatal(
                    at,
                    format!(
                        "profile {}: ipv4/ipv6 are only used with mode = \"ip\"",
                        name.get_ref()
                    ),
                );
            }
            _ => {}
        }
        match p.mode.get_ref() {
            ModeName::Null | ModeName::Ip => Mode::Null,
            ModeName::Nxdomain => Mode::Nxdomain,
            ModeName::Nodata => Mode::Nodata,
            ModeName::Refused => Mode::Refused,
        }
    }

    fn load_guard(&mut self, path: &Spanned<PathBuf>) {
        let file = self.resolve(path.get_ref());
        let mut problems = Vec::new();
        let mut guard = Guard::default();
        let read = lists::read_list(&file, &mut problems, |e, _| guard.add_zone(&e.name));
        self.take_read(path, &file, read, problems);
        self.guard = guard;
    }

    /// The names of a list (`*.name` as the name itself) with where each stands.
    fn load_names(&mut self, path: &Spanned<PathBuf>) -> Vec<(String, Location)> {
        let file = self.resolve(path.get_ref());
        let mut problems = Vec::new();
        let mut names = Vec::new();
        let read = lists::read_list(&file, &mut problems, |e, line| {
            names.push((
                e.name.into_owned(),
                Location {
                    path: file.clone(),
                    line: line as usize,
                },
            ))
        });
        self.take_read(path, &file, read, problems);
        names
    }

    fn load_zones(&mut self, paths: &[Spanned<PathBuf>]) -> crate::lists::ZoneSet {
        let mut zones = crate::lists::ZoneSet::default();
        for path in paths {
            let file = self.resolve(path.get_ref());
            let mut problems = Vec::new();
            let read = lists::read_list(&file, &mut problems, |e, _| zones.add(&e.name));
            self.take_read(path, &file, read, problems);
        }
        zones
    }

    fn load(&mut self, path: &Spanned<PathBuf>, scope: Scope, allowlist: bool) {
        let file = self.resolve(path.get_ref());
        let list = self.lists.len() as u16;
        let mut problems = Vec::new();
        let (mut entries, mut refused) = (0usize, Vec::new());
        let (index, guard) = (&mut self.index, &self.guard);
        let read = lists::read_list(&file, &mut problems, |e, line| {
            let allow = allowlist || e.allow;
            if !allow && e.reach == Reach::Suffix && guard.refuses_suffix(&e.name) {
                refused.push((line, e.name.into_owned()));
                return;
            }
            let rule = Rule {
                list,
                line,
                reach: e.reach,
                allow,
            };
            if index.insert(&e.name, rule) {
                entries += 1;
            }
        });
        for (line, name) in refused {
            problems.push(lists::ListProblem {
                at: Location { path: file.clone(), line: line as usize },
                message: format!(
                    "suffix rule *.{name} would block a shared zone on the guard list; list the exact names instead"
                ),
            });
        }
        let skipped = problems.len();
        self.take_read(path, &file, read, problems);
        self.lists.push(ListInfo {
            path: file,
            scope,
            allowlist,
            entries,
            skipped,
        });
    }

    fn load_cidrs(&mut self, paths: &[Spanned<PathBuf>]) -> super::AddressSet {
        self.load_cidrs_counted(paths).0
    }

    /// The firewall's accept set. It is matched before every block set, so one range too
    /// many switches the egress firewall off for it: a range broader than /12 (IPv4) or
    /// /24 (IPv6), or one that covers a range a profile or the DNS-bypass set blocks, is
    /// an error at its file:line, whatever wrote the file (an admin, `update-m365`, a
    /// tampered copy), unless `firewall.allow_broad = true` says it is meant (then a
    /// warning at every start, check and reload).
    fn load_allow_cidrs(
        &mut self,
        profiles: &[Profile],
        bypass: &super::AddressSet,
        warnings: &mut Vec<String>,
    ) -> super::AddressSet {
        let allow_broad = self.cfg.config.firewall.allow_broad;
        let mut nets = Vec::new();
        for path in &self.cfg.config.firewall.allow_cidrs {
            let file = self.resolve(path.get_ref());
            let mut problems = Vec::new();
            let mut found = Vec::new();
            let read = lists::read_cidrs(&file, &mut problems, |n, line| found.push((n, line)));
            self.take_read(path, &file, read, problems);
            for (net, line) in found {
                let mut why = Vec::new();
                if let Some(bound) = super::too_broad(net) {
                    why.push(format!("is broader than /{bound}"));
                }
                let blocked = profiles
                    .iter()
                    .map(|p| (p.name.as_str(), &p.nets))
                    .chain([("dns-bypass (firewall.bypass.doh_cidrs)", bypass)]);
                for (owner, set) in blocked {
                    if let Some(block) = set.first_covered_by(net) {
                        why.push(format!("covers {block}, which {owner} blocks"));
                        break;
                    }
                }
                if why.is_empty() {
                    nets.push(net);
                    continue;
                }
                let at = Location {
                    path: file.clone(),
                    line,
                };
                let message = format!(
                    "allow range {net} {}: the accept set is matched before every block set, so it would let that traffic past the firewall; narrow it, or set firewall.allow_broad = true if it is meant",
                    why.join(" and ")
                );
                if allow_broad {
                    warnings.push(format!(
                        "{at}: {message} (accepted: firewall.allow_broad = true)"
                    ));
                    nets.push(net);
                } else {
                    self.problems.push(BuildProblem {
                        at,
                        message,
                        severity: Severity::Fatal,
                    });
                }
            }
        }
        super::AddressSet::from_nets(nets)
    }

    /// The addresses, and per file (its config span and path) how many it held.
    fn load_cidrs_counted(
        &mut self,
        paths: &[Spanned<PathBuf>],
    ) -> (super::AddressSet, Vec<(usize, PathBuf, usize)>) {
        let mut nets = Vec::new();
        let mut counts = Vec::new();
        for path in paths {
            let file = self.resolve(path.get_ref());
            let mut problems = Vec::new();
            let before = nets.len();
            let read = lists::read_cidrs(&file, &mut problems, |n, _| nets.push(n));
            let ok = read.is_ok();
            self.take_read(path, &file, read, problems);
            if ok {
                counts.push((path.span().start, file, nets.len() - before));
            }
        }
        (super::AddressSet::from_nets(nets), counts)
    }

    /// An empty block or address list of a profile (a failed download, a truncated copy)
    /// would make it block nothing without a word: an error, unless the profile says
    /// its lists may be empty. Every profile, since a toggle can switch any of them on.
    fn refuse_empty(&mut self, profile: &str, allowed: bool, at: usize, file: &Path, n: usize) {
        if n == 0 && !allowed {
            self.fatal(
                at,
                format!(
                    "list {} has no entries, so profile {profile} would block nothing; fix the list, or set allow_empty_lists = true for the profile",
                    crate::config::normalized(file).display()
                ),
            );
        }
    }

    fn take_read(
        &mut self,
        path: &Spanned<PathBuf>,
        file: &Path,
        read: std::io::Result<()>,
        problems: Vec<lists::ListProblem>,
    ) {
        if let Err(e) = read {
            let message =
                if e.kind() == std::io::ErrorKind::NotFound && path.get_ref().is_relative() {
                    // A relative list is looked for in several folders: name them all, so
                    // the admin sees where to put it.
                    let searched: Vec<String> = self
                        .search
                        .iter()
                        .map(|d| crate::config::normalized(d).display().to_string())
                        .collect();
                    format!(
                        "cannot read list {}: not found in any of {}",
                        path.get_ref().display(),
                        searched.join(", ")
                    )
                } else {
                    format!(
                        "cannot read list {}: {e}",
                        crate::config::normalized(file).display()
                    )
                };
            self.fatal(path.span().start, message);
        }
        // One rule for start, `check` and reload: the same line is refused by all three,
        // or (skip_invalid_lines) skipped and reported by all three.
        let severity = if self.cfg.config.policy.skip_invalid_lines {
            Severity::SkippedLine
        } else {
            Severity::Fatal
        };
        self.problems
            .extend(problems.into_iter().map(|p| BuildProblem {
                at: p.at,
                message: p.message,
                severity,
            }));
    }

    fn groups(&mut self, profiles: &[Profile]) -> GroupsBuilt {
        let defaults = profiles
            .iter()
            .enumerate()
            .filter(|(_, p)| p.enabled)
            .fold(0u64, |m, (i, _)| m | 1 << i);
        let mut groups = vec![Group {
            name: "default".into(),
            active: defaults,
            logged: 0,
        }];
        let mut nets = Vec::new();
        let mut names = Vec::new();
        for g in &self.cfg.config.groups {
            let name = g.name.get_ref();
            let idx = match groups.iter().position(|x| x.name == *name) {
                Some(0) if g.clients.is_empty() => 0,
                Some(_) => {
                    self.fatal(
                        g.name.span().start,
                        format!("group {name} is defined twice (or \"default\" given clients)"),
                    );
                    continue;
                }
                None => {
                    groups.push(Group {
                        name: name.clone(),
                        active: defaults,
                        logged: 0,
                    });
                    groups.len() - 1
                }
            };
            let mut active = groups[idx].active;
            for (list, on) in [(&g.enable, true), (&g.disable, false)] {
                for p in list {
                    match profiles.iter().position(|x| x.name == *p.get_ref()) {
                        Some(i) if on => active |= 1 << i,
                        Some(i) => active &= !(1 << i),
                        None => self.fatal(
                            p.span().start,
                            format!("group {name}: no profile named {}", p.get_ref()),
                        ),
                    }
                }
            }
            groups[idx].active = active;
            nets.extend(g.clients.iter().map(|n| (n.trunc(), idx as u16)));
            for (host, &ip) in &g.hosts {
                nets.push((ipnet::IpNet::from(ip), idx as u16));
                names.push((ip, host.clone()));
            }
        }
        // `observed = true`: wherever the profile is not on, it is observed.
        let observed = self
            .cfg
            .config
            .profiles
            .0
            .iter()
            .take(MAX_CONFIG_PROFILES)
            .enumerate()
            .filter(|(_, (_, p))| p.observed)
            .fold(0u64, |m, (i, _)| m | 1 << i);
        for g in &mut groups {
            g.logged = observed & !g.active;
        }
        (groups, nets, names)
    }
}
