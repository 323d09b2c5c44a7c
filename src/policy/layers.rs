//! A cluster node's toggles in two layers (src/cluster/, docs/CLUSTER.md): the site's
//! shared toggles as the store had them at a revision, and this node's own overrides
//! (`--local`), which the shared ones never overwrite. What is in force is `effective`:
//! the shared entries an override does not cover, then the overrides. Both layers carry
//! their expiries as absolute UTC times, so a timed revert happens on every node at its
//! time, with or without the store.

use serde::{Deserialize, Serialize};

use super::Toggles;
use super::runtime::NameRule;
use super::toggles::Toggle;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layers {
    /// The store's revision of the shared toggles held here (0: never read).
    pub revision: u64,
    pub shared: Toggles,
    /// This node's overrides: kept until cleared, never overwritten by the store.
    pub local: Toggles,
}

/// An override of profile P for every group covers P's shared entries for every group;
/// one for a group covers that group's.
fn covers(local: &Toggle, shared: &Toggle) -> bool {
    local.profile == shared.profile && (local.group.is_none() || local.group == shared.group)
}

fn covers_rule(local: &NameRule, shared: &NameRule) -> bool {
    local.name == shared.name && (local.group.is_none() || local.group == shared.group)
}

impl Layers {
    /// The toggles in force: the shared ones that no override covers, then the
    /// overrides (later entries win, so the overrides do).
    pub fn effective(&self) -> Toggles {
        let mut out = self.shared.clone();
        out.normalize();
        let mut local = self.local.clone();
        local.normalize();
        out.profiles
            .retain(|s| !local.profiles.iter().any(|l| covers(l, s)));
        out.observe
            .retain(|s| !local.observe.iter().any(|l| covers(l, s)));
        out.rules
            .retain(|s| !local.rules.iter().any(|l| covers_rule(l, s)));
        out.profiles.extend(local.profiles);
        out.observe.extend(local.observe);
        out.rules.extend(local.rules);
        out
    }

    /// Drops lapsed entries of both layers; true if any was dropped.
    pub fn expire(&mut self, now: u64) -> bool {
        let shared = self.shared.expire(now);
        self.local.expire(now) | shared
    }

    /// Whether anything is overridden here.
    pub fn has_overrides(&self) -> bool {
        !(self.local.profiles.is_empty()
            && self.local.observe.is_empty()
            && self.local.rules.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(profile: &str, group: Option<&str>, enabled: bool) -> Toggle {
        Toggle {
            profile: profile.into(),
            group: group.map(Into::into),
            enabled,
            until: None,
            by: None,
            why: None,
        }
    }

    /// An override wins over the shared entries it covers, and only those.
    #[test]
    fn overrides_cover_the_shared_entries_of_their_key() {
        let layers = Layers {
            revision: 7,
            shared: Toggles {
                profiles: vec![
                    t("tele", None, true),
                    t("tele", Some("finance"), true),
                    t("ads", None, false),
                ],
                ..Toggles::default()
            },
            local: Toggles {
                profiles: vec![t("tele", None, false)],
                ..Toggles::default()
            },
        };
        assert_eq!(
            layers.effective().profiles,
            [t("ads", None, false), t("tele", None, false)]
        );
        let group_only = Layers {
            local: Toggles {
                profiles: vec![t("tele", Some("finance"), false)],
                ..Toggles::default()
            },
            ..layers
        };
        assert_eq!(
            group_only.effective().profiles,
            [
                t("tele", None, true),
                t("ads", None, false),
                t("tele", Some("finance"), false)
            ]
        );
    }
}
