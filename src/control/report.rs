//! What the control API answers: status, profile states, and the report of a change
//! (the same for a dry run and a real one, so a dry run shows exactly what would happen).

use std::collections::HashSet;

use serde::Serialize;

use super::Control;
use crate::policy::{Group, Policy, Scope, Toggle};

#[derive(Debug, Serialize)]
pub struct Report {
    pub dry_run: bool,
    /// Generation the change produces (or would produce).
    pub generation: u64,
    pub changes: Vec<Change>,
    /// Runtime rules added, replaced or removed, in words.
    pub rules: Vec<String>,
    /// Time from request to the new snapshot serving (or to the dry run's answer).
    pub ms: f64,
    /// Changed settings that only a restart applies (a reload keeps their old value).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restart_needed: Vec<&'static str>,
    /// A cluster node: the change's revision in the store and which nodes have it in
    /// force; None for one box and for `--local`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::Written>,
    /// An override of this node's only (`--local`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
}

/// One profile changing state for one group.
#[derive(Debug, Serialize)]
pub struct Change {
    pub profile: String,
    pub group: String,
    pub from: &'static str,
    pub to: &'static str,
    /// Names the profile's block lists hold: the names that start or stop being blocked.
    pub names: usize,
    /// Address ranges the firewall starts or stops rejecting.
    pub cidrs: usize,
    /// Who is affected: the group's networks and hosts.
    pub clients: Vec<String>,
}

fn state_of(g: &Group, p: usize) -> &'static str {
    if g.active & (1 << p) != 0 {
        "on"
    } else if g.logged & (1 << p) != 0 {
        "log-only"
    } else {
        "off"
    }
}

fn names_of(policy: &Policy, p: usize) -> usize {
    policy
        .lists
        .iter()
        .filter(|l| l.scope == Scope::Profile(p as u16) && !l.allowlist)
        .map(|l| l.entries)
        .sum()
}

fn clients_of(policy: &Policy, g: usize) -> Vec<String> {
    if g == 0 {
        return vec!["every client not in a group".into()];
    }
    policy
        .clients
        .nets_of(g as u16)
        .map(|n| match policy.clients.name_of(n.addr()) {
            Some(name) if n.prefix_len() == n.max_prefix_len() => format!("{name} ({})", n.addr()),
            _ => n.to_string(),
        })
        .collect()
}

impl Report {
    pub fn between(old: &Policy, new: &Policy, dry_run: bool) -> Self {
        let mut changes = Vec::new();
        for (gi, (og, ng)) in old.groups.iter().zip(&new.groups).enumerate() {
            for (pi, profile) in new.profiles.iter().enumerate() {
                let (from, to) = (state_of(og, pi), state_of(ng, pi));
                if from != to {
                    changes.push(Change {
                        profile: profile.name.clone(),
                        group: ng.name.clone(),
                        from,
                        to,
                        names: names_of(new, pi),
                        cidrs: profile.nets.v4.len() + profile.nets.v6.len(),
                        clients: clients_of(new, gi),
                    });
                }
            }
        }
        // Compared by hash: a state file may hold max_runtime_rules rules (10,000 by
        // default), and a list scan per rule made every toggle quadratic in them.
        let describe = |t: &crate::policy::Toggles| crate::apply::describe_rules(t);
        let (before, after) = (describe(&old.toggles), describe(&new.toggles));
        let (had, has): (HashSet<&String>, HashSet<&String>) =
            (before.iter().collect(), after.iter().collect());
        let mut rules: Vec<String> = after.iter().filter(|r| !had.contains(r)).cloned().collect();
        rules.extend(
            before
                .iter()
                .filter(|r| !has.contains(r))
                .map(|r| format!("removed: {r}")),
        );
        Self {
            cluster: None,
            local: false,
            dry_run,
            generation: new.generation,
            changes,
            rules,
            ms: 0.0,
            restart_needed: Vec::new(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct GroupState {
    pub group: String,
    pub state: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ProfileState {
    pub name: String,
    pub description: String,
    pub mode: &'static str,
    pub names: usize,
    pub cidrs: usize,
    pub shadow: bool,
    pub log_only: bool,
    pub warning: Option<String>,
    pub groups: Vec<GroupState>,
    /// Runtime toggles of this profile, with their expiry.
    pub toggles: Vec<Toggle>,
    /// Its runtime log-only switches, with their expiry.
    pub log_only_toggles: Vec<Toggle>,
}

impl ProfileState {
    pub fn all(policy: &Policy) -> Vec<Self> {
        policy
            .profiles
            .iter()
            .enumerate()
            .map(|(pi, p)| Self {
                name: p.name.clone(),
                description: p.description.clone(),
                mode: p.mode.name(),
                names: names_of(policy, pi),
                cidrs: p.nets.v4.len() + p.nets.v6.len(),
                shadow: p.shadow,
                log_only: policy.groups.iter().any(|g| g.logged & (1 << pi) != 0),
                warning: p.warning.clone(),
                groups: policy
                    .groups
                    .iter()
                    .map(|g| GroupState {
                        group: g.name.clone(),
                        state: state_of(g, pi),
                    })
                    .collect(),
                toggles: policy
                    .toggles
                    .profiles
                    .iter()
                    .filter(|t| t.profile == p.name)
                    .cloned()
                    .collect(),
                log_only_toggles: policy
                    .toggles
                    .observe
                    .iter()
                    .filter(|t| t.profile == p.name)
                    .cloned()
                    .collect(),
            })
            .collect()
    }
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub config: String,
    pub generation: u64,
    pub uptime_secs: u64,
    pub names: usize,
    pub lists: usize,
    /// "on", "off", or "degraded" while the table is missing and being restored.
    pub firewall: &'static str,
    /// Times the table was put back after another process removed or flushed it.
    pub firewall_restores: u64,
    /// Shadow resolution: running, and what it learned or left out.
    pub shadow: Option<ShadowStatus>,
    pub queries: u64,
    pub blocked: u64,
    pub clients_seen: usize,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub last_reload_unix: u64,
    /// Client identity: devices and addresses known, labels held and their bound, and
    /// what went to client="other".
    pub devices: crate::devices::DeviceStatus,
    /// Per group: the profiles on, and those in log-only mode.
    pub groups: Vec<GroupProfiles>,
    pub toggles: Vec<Toggle>,
    /// Runtime log-only switches, with their expiry.
    pub log_only: Vec<Toggle>,
    /// `telesink allow` / `telesink block` rules in force.
    pub rules: Vec<crate::policy::runtime::NameRule>,
    pub state_file: String,
    /// Why the toggles in force are not in the state file (a timed revert applied while
    /// it could not be written; retried every 10 s); absent when they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_unsaved: Option<String>,
    /// Runtime rules refused at `[control] max_runtime_rules` or dropped from the state
    /// file at start.
    pub rules_refused: u64,
    /// A cluster node: the store, the revision in force, the overrides, every node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterView>,
}

#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub site: String,
    pub node: String,
    pub connected: bool,
    /// The store revision of the shared state in force here.
    pub revision: u64,
    pub last_contact_unix: u64,
    pub last_sync_unix: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// This node's overrides (`--local`): never overwritten by the shared state.
    pub overrides: Vec<String>,
    /// Values in the store refused here (logged with the reason).
    pub refused: u64,
    pub learned_published: u64,
    pub learned_imported: u64,
    pub learned_unshared: u64,
    pub learned_refused: u64,
    /// Every node as it last reported, this one included.
    pub nodes: Vec<NodeView>,
    /// Nodes whose config or lists differ from this node's.
    pub mismatched: Vec<String>,
    /// Every runtime setting in force, with where it comes from: `central` (a fleet's
    /// hub), `site` (the site's shared state) or `node` (`--local`).
    pub settings: Vec<(String, String)>,
    /// A fleet's gateway: the central revision in force and what was sent to the centre.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetView>,
}

#[derive(Debug, Serialize)]
pub struct FleetView {
    pub hub: String,
    pub central_revision: u64,
    pub days_sent: u64,
    pub days_due: u64,
    pub heads_sent: u64,
    pub failures: u64,
    pub last_sent_unix: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct NodeView {
    pub node: String,
    pub revision: u64,
    pub generation: u64,
    /// Milliseconds since its last report.
    pub last_contact_ms: u64,
    pub config_digest: String,
    pub lists_digest: String,
    pub overrides: Vec<String>,
}

impl ClusterView {
    fn of(c: &crate::cluster_status::ClusterStatus, policy: &Policy, hub: Option<&str>) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let now_ms = crate::clock::unix_millis();
        // Two statements: the nodes' lock is let go before `mismatched` takes it.
        let mismatched = c.mismatched(now_ms, 60_000);
        let nodes: Vec<NodeView> = c
            .nodes
            .lock()
            .values()
            .map(|n| NodeView {
                node: n.node.clone(),
                revision: n.revision,
                generation: n.generation,
                last_contact_ms: now_ms.saturating_sub(n.at_ms),
                config_digest: n.config_digest.clone(),
                lists_digest: n.lists_digest.clone(),
                overrides: n.overrides.clone(),
            })
            .collect();
        ClusterView {
            site: c.site.clone(),
            node: c.node.clone(),
            connected: c.is_connected(),
            revision: policy.layers.as_ref().map_or(0, |l| l.revision),
            last_contact_unix: c.last_contact_unix.load(Relaxed),
            last_sync_unix: c.last_sync_unix.load(Relaxed),
            last_error: c.last_error.lock().clone(),
            overrides: policy
                .layers
                .as_ref()
                .map(|l| crate::apply::describe_toggles(&l.local))
                .unwrap_or_default(),
            refused: c.refused.load(Relaxed),
            learned_published: c.learned_published.load(Relaxed),
            learned_imported: c.learned_imported.load(Relaxed),
            learned_unshared: c.learned_unshared.load(Relaxed),
            learned_refused: c.learned_refused.load(Relaxed),
            nodes,
            mismatched,
            settings: policy
                .layers
                .as_ref()
                .map(|l| {
                    l.sourced()
                        .into_iter()
                        .flat_map(|(t, origin)| {
                            crate::apply::describe_toggles(&t)
                                .into_iter()
                                .map(move |d| (d, origin.to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            fleet: hub.map(|hub| FleetView {
                hub: hub.to_owned(),
                central_revision: policy.layers.as_ref().map_or(0, |l| l.central_revision),
                days_sent: c.fleet.days_sent.load(Relaxed),
                days_due: c.fleet.days_due.load(Relaxed),
                heads_sent: c.fleet.heads_sent.load(Relaxed),
                failures: c.fleet.failures.load(Relaxed),
                last_sent_unix: c.fleet.last_sent_unix.load(Relaxed),
                last_error: c.fleet.last_error.lock().clone(),
            }),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ShadowStatus {
    pub added: u64,
    pub skipped_allow: u64,
    pub queue_full: u64,
    pub over_max: u64,
    pub shared_skipped: u64,
    pub shared_removed: u64,
    pub never_learn_skipped: u64,
    /// Names resolved again and again now, not tracked at max_names, and forgotten
    /// because clients stopped asking.
    pub names_tracked: u64,
    pub names_dropped: u64,
    pub names_forgotten: u64,
}

#[derive(Debug, Serialize)]
pub struct GroupProfiles {
    pub group: String,
    pub on: Vec<String>,
    pub log_only: Vec<String>,
}

impl Status {
    pub fn of(c: &Control) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let policy = c.current();
        let s = &c.services;
        let a = &c.applier;
        let kernel = &s.kernel.stats;
        let named = |mask: u64| -> Vec<String> {
            policy
                .profiles
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0 && policy.listed(*i))
                .map(|(_, p)| p.name.clone())
                .collect()
        };
        Self {
            version: env!("CARGO_PKG_VERSION"),
            config: c.config_path().display().to_string(),
            generation: policy.generation,
            uptime_secs: crate::clock::unix_now().saturating_sub(c.started_unix),
            names: policy.total_names(),
            lists: policy.lists.len(),
            firewall: s.firewall_state(),
            firewall_restores: kernel.restores.load(Relaxed),
            shadow: policy.learner.is_some().then(|| {
                let n = &s.shadow_counts;
                ShadowStatus {
                    added: n.added.load(Relaxed),
                    skipped_allow: n.skipped_allow.load(Relaxed),
                    queue_full: n.queue_full.load(Relaxed),
                    over_max: n.over_max.load(Relaxed),
                    shared_skipped: n.shared_skipped.load(Relaxed),
                    shared_removed: n.shared_removed.load(Relaxed),
                    never_learn_skipped: n.never_learn_skipped.load(Relaxed),
                    names_tracked: n.names_tracked.load(Relaxed),
                    names_dropped: n.names_dropped.load(Relaxed),
                    names_forgotten: n.names_forgotten.load(Relaxed),
                }
            }),
            queries: s.outcomes.total(),
            blocked: s.outcomes.get(crate::dns::Outcome::Blocked),
            clients_seen: s.outcomes.clients_seen(),
            reloads_ok: s.reloads.ok.load(Relaxed),
            reloads_failed: s.reloads.failed.load(Relaxed),
            last_reload_unix: s.reloads.last_unix.load(Relaxed),
            devices: s.devices.status(&policy),
            groups: policy
                .groups
                .iter()
                .map(|g| GroupProfiles {
                    group: g.name.clone(),
                    on: named(g.active),
                    log_only: named(g.logged),
                })
                .collect(),
            toggles: policy.toggles.profiles.clone(),
            log_only: policy.toggles.observe.clone(),
            rules: policy.toggles.rules.clone(),
            state_file: a.state.path.display().to_string(),
            state_unsaved: a.unsaved(),
            rules_refused: a.rules_refused.load(Relaxed),
            cluster: s.cluster.as_ref().map(|k| {
                let snap = s.current.load();
                let hub = snap
                    .config
                    .config
                    .cluster
                    .as_ref()
                    .and_then(|c| c.hub.clone());
                ClusterView::of(k, &policy, hub.as_deref())
            }),
        }
    }
}

/// What a report says of the policy it describes: the profiles as they stand now, with
/// the groups each blocks for, observes for, or is off for, and what blocking breaks.
pub fn evidence_context(policy: &Policy, source: &str) -> crate::evidence::report::Context {
    let profiles = crate::evidence::report::profiles_in_force(policy);
    crate::evidence::report::Context {
        gateway: crate::host::name(),
        generated_at: crate::clock::unix_now(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        source: source.to_owned(),
        profiles,
    }
}
