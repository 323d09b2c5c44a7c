//! Runtime toggles: profile switches an admin made with `telesink profile ...` and
//! `telesink log-only ...`, layered over the groups the config defines.
//!
//! They live apart from the config so a reload of the config keeps them, and they are
//! plain data (serde) so the control plane can persist them in its state file. Applying
//! them never touches the name index: a toggle builds a new snapshot that shares the index
//! through its `Arc`, which is why a toggle costs microseconds even with a million names.

use serde::{Deserialize, Serialize};

use super::runtime::{NameRule, RuntimeIndex};
use super::{Group, Policy};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toggles {
    /// Later entries win over earlier ones; a global entry (no group) comes before every
    /// group entry when applied, so "off for finance" survives "on everywhere".
    #[serde(default)]
    pub profiles: Vec<Toggle>,
    /// Older state files: profiles in log-only mode everywhere. Read, then kept as
    /// entries of `observe` (see `normalize`); never written.
    #[serde(default, skip_serializing)]
    pub log_only: Vec<String>,
    /// Log-only (observe) switches: `enabled` true observes the profile (it answers
    /// normally, counts what it would block, never blocks), false stops observing. Same
    /// order rules as `profiles`: global entries first, then group entries.
    #[serde(default)]
    pub observe: Vec<Toggle>,
    /// `telesink allow` / `telesink block` rules (src/policy/runtime.rs); a later rule
    /// for the same name and group replaces the earlier one.
    #[serde(default)]
    pub rules: Vec<NameRule>,
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
    /// Who made it ("uid 1000 on gw1") and why (`--why`): shown in status, carried
    /// between the nodes of a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl Toggle {
    fn same_key(&self, other: &Toggle) -> bool {
        self.profile == other.profile && self.group == other.group
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToggleError {
    #[error("{0}")]
    NoToggle(String),
    #[error(
        "runtime rules are limited to {max} ([control] max_runtime_rules): remove some with `telesink allow|block NAME --remove`, or put the names in a list file (docs/LISTS.md)"
    )]
    TooManyRules { max: usize },
    /// The name, and what to say of the valid ones (`suggest::choices`).
    #[error("no profile named {0}{1}")]
    NoProfile(String, String),
    #[error("no group named {0}{1}")]
    NoGroup(String, String),
    #[error("no runtime rule for {name}{}", .group.as_deref().map(|g| format!(" in group {g}")).unwrap_or_default())]
    NoRule { name: String, group: Option<String> },
}

/// Timed entries stack on standing ones: a timed entry replaces only the timed entry of
/// the same key, so when it lapses the standing one is in force again, exactly as
/// before; a standing entry replaces both (the admin's latest word for the key).
fn stack<T>(
    entries: &mut Vec<T>,
    new: T,
    same_key: impl Fn(&T, &T) -> bool,
    timed: fn(&T) -> bool,
) {
    let new_is_timed = timed(&new);
    entries.retain(|x| !(same_key(x, &new) && (!new_is_timed || timed(x))));
    entries.push(new);
}

impl Toggles {
    /// Records a toggle: a timed one over the standing one of the same profile and group
    /// (which is back when it lapses), a standing one instead of both.
    pub fn set(&mut self, t: Toggle) {
        stack(&mut self.profiles, t, Toggle::same_key, |x| {
            x.until.is_some()
        });
    }

    /// Records a log-only (observe) switch, stacked like `set`.
    pub fn set_log_only(&mut self, t: Toggle) {
        self.normalize();
        stack(&mut self.observe, t, Toggle::same_key, |x| {
            x.until.is_some()
        });
    }

    /// Records a runtime rule, stacked like `set` per name and group.
    pub fn set_rule(&mut self, r: NameRule) {
        stack(
            &mut self.rules,
            r,
            |a, b| a.name == b.name && a.group == b.group,
            |x| x.until.is_some(),
        );
    }

    /// Removes every toggle and log-only switch of `profile` for `group` (None: the
    /// entries for every group), standing and timed: the config's setting is back.
    pub fn reset(&mut self, profile: &str, group: Option<&str>) -> Result<(), ToggleError> {
        self.normalize();
        let before = self.profiles.len() + self.observe.len();
        let keep = |t: &Toggle| !(t.profile == profile && t.group.as_deref() == group);
        self.profiles.retain(keep);
        self.observe.retain(keep);
        if self.profiles.len() + self.observe.len() == before {
            let scope = group.map_or("every group".to_owned(), |g| format!("group {g}"));
            let standing: Vec<String> = self
                .profiles
                .iter()
                .chain(&self.observe)
                .map(|t| {
                    format!(
                        "{} ({})",
                        t.profile,
                        t.group
                            .as_deref()
                            .map_or("every group".to_owned(), |g| format!("group {g}"))
                    )
                })
                .collect();
            let listed = if standing.is_empty() {
                "there are none".to_owned()
            } else {
                format!("toggles in force: {}", standing.join(", "))
            };
            return Err(ToggleError::NoToggle(format!(
                "{profile} has no runtime toggle for {scope}: it is as the config says; {listed}"
            )));
        }
        Ok(())
    }

    /// Refuses more runtime rules than `max` (`[control] max_runtime_rules`).
    pub fn check_rule_cap(&self, max: usize) -> Result<(), ToggleError> {
        match self.rules.len() > max {
            true => Err(ToggleError::TooManyRules { max }),
            false => Ok(()),
        }
    }

    /// What a state file may hold: runtime rules whose name is a rule telesink would
    /// take from the CLI (anything else was not written by telesink), and at most `max`
    /// of them, the first ones kept. Returns what was dropped, in words, and how many.
    pub fn retain_valid(&mut self, max: usize) -> (Vec<String>, usize) {
        let mut said = Vec::new();
        let before = self.rules.len();
        let mut bad = 0usize;
        self.rules.retain(|r| {
            let fine = super::runtime::normalize(&r.name).is_ok_and(|n| n == r.name);
            if !fine {
                bad += 1;
                if bad <= 10 {
                    said.push(format!(
                        "runtime rule {:?} dropped: not a domain name or *.domain",
                        r.name
                    ));
                }
            }
            fine
        });
        if bad > 10 {
            said.push(format!(
                "{} more runtime rules dropped: not a domain name or *.domain",
                bad - 10
            ));
        }
        if self.rules.len() > max {
            said.push(format!(
                "the state file holds {} runtime rules, more than [control] max_runtime_rules = {max}: the last {} are not restored (raise the limit, or put the names in a list file)",
                self.rules.len(),
                self.rules.len() - max
            ));
            self.rules.truncate(max);
        }
        (said, before - self.rules.len())
    }

    /// Removes the runtime rule for this name and group.
    pub fn remove_rule(&mut self, name: &str, group: Option<&str>) -> Result<(), ToggleError> {
        let before = self.rules.len();
        self.rules
            .retain(|x| !(x.name == name && x.group.as_deref() == group));
        if self.rules.len() == before {
            return Err(ToggleError::NoRule {
                name: name.to_owned(),
                group: group.map(str::to_owned),
            });
        }
        Ok(())
    }

    /// Folds log-only entries of an older state file into `observe`.
    pub fn normalize(&mut self) {
        for profile in std::mem::take(&mut self.log_only) {
            self.observe
                .retain(|x| !(x.profile == profile && x.group.is_none()));
            self.observe.push(Toggle {
                profile,
                group: None,
                enabled: true,
                until: None,
                by: None,
                why: None,
            });
        }
    }

    /// Drops toggles whose time is up; true if any was dropped.
    pub fn expire(&mut self, now: u64) -> bool {
        let before = self.profiles.len() + self.observe.len() + self.rules.len();
        self.profiles.retain(|t| t.until.is_none_or(|u| u > now));
        self.observe.retain(|t| t.until.is_none_or(|u| u > now));
        self.rules.retain(|t| t.until.is_none_or(|u| u > now));
        self.profiles.len() + self.observe.len() + self.rules.len() != before
    }

    /// When the next timed toggle lapses.
    pub fn next_deadline(&self) -> Option<u64> {
        self.profiles
            .iter()
            .chain(&self.observe)
            .filter_map(|t| t.until)
            .chain(self.rules.iter().filter_map(|r| r.until))
            .min()
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
        self.normalize();
        self.observe
            .retain(|t| match check(policy, &t.profile, t.group.as_deref()) {
                Ok(()) => true,
                Err(e) => {
                    dropped.push(format!("log-only of {} dropped: {e}", t.profile));
                    false
                }
            });
        self.rules.retain(|r| match &r.group {
            Some(g) if !policy.base_groups.iter().any(|x| x.name == *g) => {
                dropped.push(format!(
                    "runtime rule for {} dropped: no group named {g}",
                    r.name
                ));
                false
            }
            _ => true,
        });
        dropped
    }
}

/// Global entries first, then group entries: "off for finance" survives "on everywhere";
/// within each, standing entries before timed ones, so a timed entry is in force over
/// the standing one of its key until it lapses.
fn ordered(toggles: &[Toggle]) -> impl Iterator<Item = &Toggle> {
    let pass = |global: bool, timed: bool| {
        toggles
            .iter()
            .filter(move |t| t.group.is_none() == global && t.until.is_some() == timed)
    };
    pass(true, false)
        .chain(pass(true, true))
        .chain(pass(false, false))
        .chain(pass(false, true))
}

/// That the profile and (if given) the group exist; if not, the error names the valid
/// ones and the nearest.
pub fn check(policy: &Policy, profile: &str, group: Option<&str>) -> Result<(), ToggleError> {
    if !policy.profiles.iter().any(|p| p.name == profile) {
        let names: Vec<String> = policy.profiles.iter().map(|p| p.name.clone()).collect();
        return Err(ToggleError::NoProfile(
            profile.to_owned(),
            crate::suggest::choices(profile, "profiles", &names),
        ));
    }
    match group {
        Some(g) => check_group(policy, g),
        None => Ok(()),
    }
}

/// That the group exists; if not, the error names the groups and the nearest.
pub fn check_group(policy: &Policy, group: &str) -> Result<(), ToggleError> {
    if policy.base_groups.iter().any(|x| x.name == group) {
        return Ok(());
    }
    let names: Vec<String> = policy.base_groups.iter().map(|g| g.name.clone()).collect();
    Err(ToggleError::NoGroup(
        group.to_owned(),
        crate::suggest::choices(group, "groups", &names),
    ))
}

impl Policy {
    /// `toggles` without its last standing profile or log-only entry when that entry
    /// changes nothing the config does not already say (`profile enable X` for a profile
    /// the config has on, or to undo a `disable`): such an entry would only override a
    /// later edit of the config, unseen.
    pub fn without_redundant(&self, toggles: Toggles, log_only: bool) -> Toggles {
        let mut without = toggles.clone();
        let list = if log_only {
            &mut without.observe
        } else {
            &mut without.profiles
        };
        match list.last() {
            Some(t) if t.until.is_none() => {
                list.pop();
            }
            _ => return toggles,
        }
        let states = |t: &Toggles| {
            self.with_toggles(t.clone(), self.generation).ok().map(|p| {
                p.groups
                    .iter()
                    .map(|g| (g.active, g.logged))
                    .collect::<Vec<_>>()
            })
        };
        match (states(&toggles), states(&without)) {
            (Some(a), Some(b)) if a == b => without,
            _ => toggles,
        }
    }

    /// A new snapshot: this one's index, lists and clients, with `toggles` applied to the
    /// config's groups. Unknown names are an error, so a typo never half-applies.
    pub fn with_toggles(
        &self,
        mut toggles: Toggles,
        generation: u64,
    ) -> Result<Policy, ToggleError> {
        toggles.normalize();
        for t in toggles.profiles.iter().chain(&toggles.observe) {
            check(self, &t.profile, t.group.as_deref())?;
        }
        for r in &toggles.rules {
            if let Some(g) = &r.group {
                check_group(self, g)?;
            }
        }
        let bit = |name: &str| {
            self.profiles
                .iter()
                .position(|p| p.name == name)
                .map_or(0, |i| 1u64 << i)
        };
        let mut groups: Vec<Group> = self.base_groups.as_ref().clone();
        for t in ordered(&toggles.profiles) {
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
        // A profile switched on is no longer observed by the config's `observed`; a
        // log-only switch then decides: observed never blocks.
        for g in &mut groups {
            g.logged &= !g.active;
        }
        for t in ordered(&toggles.observe) {
            let b = bit(&t.profile);
            for g in groups
                .iter_mut()
                .filter(|g| t.group.as_deref().is_none_or(|name| name == g.name))
            {
                if t.enabled {
                    g.logged |= b;
                    g.active &= !b;
                } else {
                    g.logged &= !b;
                }
            }
        }
        let mut next = self.clone();
        next.runtime = std::sync::Arc::new(RuntimeIndex::build(&toggles.rules, |g| {
            self.base_groups
                .iter()
                .position(|x| x.name == g)
                .map(|i| i as u16)
        }));
        next.groups = groups;
        next.toggles = toggles;
        next.generation = generation;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_file_of_the_old_log_only_form_still_loads() {
        let mut t: Toggles =
            serde_json::from_str(r#"{"profiles": [], "log_only": ["tele"]}"#).unwrap();
        t.normalize();
        assert_eq!(
            t.observe,
            [Toggle {
                profile: "tele".into(),
                group: None,
                enabled: true,
                until: None,
                by: None,
                why: None,
            }]
        );
        // Written back in the new form only.
        let text = serde_json::to_string(&t).unwrap();
        assert!(!text.contains("log_only"), "{text}");
    }

    fn toggle(enabled: bool, until: Option<u64>) -> Toggle {
        Toggle {
            profile: "p".into(),
            group: None,
            enabled,
            until,
            by: None,
            why: None,
        }
    }

    /// A timed toggle over a standing one: the revert restores the standing one; a new
    /// standing toggle replaces both.
    #[test]
    fn timed_toggles_stack_on_standing_ones() {
        let mut t = Toggles::default();
        t.set(toggle(true, None));
        t.set(toggle(false, Some(100)));
        t.set(toggle(false, Some(200)));
        assert_eq!(t.profiles, [toggle(true, None), toggle(false, Some(200))]);
        assert!(t.expire(300));
        assert_eq!(t.profiles, [toggle(true, None)]);
        t.set(toggle(false, Some(400)));
        t.set(toggle(false, None));
        assert_eq!(t.profiles, [toggle(false, None)]);
    }

    #[test]
    fn state_files_keep_valid_rules_up_to_the_cap() {
        let rule = |name: &str| NameRule {
            name: name.into(),
            allow: true,
            group: None,
            until: None,
            by: None,
            why: None,
        };
        let mut t = Toggles {
            rules: vec![
                rule("a.example"),
                rule("bad name!"),
                rule("*.b.example"),
                rule("c.example"),
            ],
            ..Toggles::default()
        };
        let (said, dropped) = t.retain_valid(2);
        assert_eq!(dropped, 2);
        assert_eq!(t.rules, [rule("a.example"), rule("*.b.example")]);
        assert!(said[0].contains("\"bad name!\" dropped"), "{said:?}");
        assert!(said[1].contains("max_runtime_rules = 2"), "{said:?}");
        assert!(t.check_rule_cap(2).is_ok());
        t.set_rule(rule("d.example"));
        assert_eq!(
            t.check_rule_cap(2),
            Err(ToggleError::TooManyRules { max: 2 })
        );
    }
}
