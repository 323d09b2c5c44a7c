//! Runtime toggles: profile switches an admin made with `telesink profile ...` and
//! `telesink log-only ...`, layered over the groups the config defines.
//!
//! They live apart from the config so a reload of the config keeps them, and they are
//! plain data (serde) so the control plane can persist them in its state file. Applying
//! them never touches the name index: a toggle builds a new snapshot that shares the index
//! through its `Arc`, which is why a toggle costs microseconds even with a million names.

use serde::{Deserialize, Serialize};

use super::{Group, Policy};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toggles {
    /// Later entries win over earlier ones; a global entry (no group) comes before every
    /// group entry when applied, so "off for finance" survives "on everywhere".
    #[serde(default)]
    pub profiles: Vec<Toggle>,
    /// Profiles in log-only mode: they answer normally and count what they would block.
    #[serde(default)]
    pub log_only: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toggle {
    pub profile: String,
    /// None: every group.
    #[serde(default)]
    pub group: Option<String>,
    pub enabled: bool,
    /// Unix time (seconds) at which the toggle lapses and the config's setting returns.
    #[serde(default)]
    pub until: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToggleError {
    #[error("no profile named {0}")]
    NoProfile(String),
    #[error("no group named {0}")]
    NoGroup(String),
}

impl Toggles {
    /// Records a toggle, replacing an earlier one for the same profile and group.
    pub fn set(&mut self, t: Toggle) {
        self.profiles
            .retain(|x| !(x.profile == t.profile && x.group == t.group));
        self.profiles.push(t);
    }

    pub fn set_log_only(&mut self, profile: &str, on: bool) {
        self.log_only.retain(|p| p != profile);
        if on {
            self.log_only.push(profile.to_owned());
        }
    }

    /// Drops toggles whose time is up; true if any was dropped.
    pub fn expire(&mut self, now: u64) -> bool {
        let before = self.profiles.len();
        self.profiles.retain(|t| t.until.is_none_or(|u| u > now));
        self.profiles.len() != before
    }

    /// When the next timed toggle lapses.
    pub fn next_deadline(&self) -> Option<u64> {
        self.profiles.iter().filter_map(|t| t.until).min()
    }

    /// Drops toggles that name a profile or group the policy does not have (after a config
    /// change removed it); returns what was dropped, for the log.
    pub fn retain_known(&mut self, policy: &Policy) -> Vec<String> {
        let mut dropped = Vec::new();
        self.profiles
            .retain(|t| match check(policy, &t.profile, t.group.as_deref()) {
                Ok(()) => true,
                Err(e) => {
                    dropped.push(format!("toggle of {} dropped: {e}", t.profile));
                    false
                }
            });
        self.log_only.retain(|p| match check(policy, p, None) {
            Ok(()) => true,
            Err(e) => {
                dropped.push(format!("log-only {p} dropped: {e}"));
                false
            }
        });
        dropped
    }
}

/// That the profile and (if given) the group exist.
pub fn check(policy: &Policy, profile: &str, group: Option<&str>) -> Result<(), ToggleError> {
    if !policy.profiles.iter().any(|p| p.name == profile) {
        return Err(ToggleError::NoProfile(profile.to_owned()));
    }
    match group {
        Some(g) if !policy.base_groups.iter().any(|x| x.name == g) => {
            Err(ToggleError::NoGroup(g.to_owned()))
        }
        _ => Ok(()),
    }
}

impl Policy {
    /// A new snapshot: this one's index, lists and clients, with `toggles` applied to the
    /// config's groups. Unknown names are an error, so a typo never half-applies.
    pub fn with_toggles(&self, toggles: Toggles, generation: u64) -> Result<Policy, ToggleError> {
        for t in &toggles.profiles {
            check(self, &t.profile, t.group.as_deref())?;
        }
        for p in &toggles.log_only {
            check(self, p, None)?;
        }
        let bit = |name: &str| {
            self.profiles
                .iter()
                .position(|p| p.name == name)
                .map_or(0, |i| 1u64 << i)
        };
        let mut groups: Vec<Group> = self.base_groups.as_ref().clone();
        let ordered = toggles
            .profiles
            .iter()
            .filter(|t| t.group.is_none())
            .chain(toggles.profiles.iter().filter(|t| t.group.is_some()));
        for t in ordered {
            let b = bit(&t.profile);
            for g in groups
                .iter_mut()
                .filter(|g| t.group.as_deref().is_none_or(|name| name == g.name))
            {
                g.active = if t.enabled {
                    g.active | b
                } else {
                    g.active & !b
                };
            }
        }
        let logged = toggles.log_only.iter().fold(0u64, |m, p| m | bit(p));
        for g in &mut groups {
            g.logged = g.active & logged;
            g.active &= !logged;
        }
        let mut next = self.clone();
        next.groups = groups;
        next.toggles = toggles;
        next.generation = generation;
        Ok(next)
    }
}
