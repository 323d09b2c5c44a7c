//! A cluster node's toggles in layers (src/cluster/, docs/CLUSTER.md, docs/FLEET.md): a
//! fleet's central toggles as the site's mirror had them at a revision, the site's
//! shared toggles as the store had them at a revision, and this node's own overrides
//! (`--local`). A lower layer never overwrites a higher one: what is in force is
//! `effective`, the central entries the site and the node do not cover, then the
//! site's entries the node does not cover, then the node's. Both layers carry
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
    /// A fleet's central toggles (`[cluster] hub`) and the revision of the central key
    /// they are at (0: never read). Empty outside a fleet.
    #[serde(default)]
    pub central_revision: u64,
    #[serde(default)]
    pub central: Toggles,
}

/// Where an entry in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Central,
    Site,
    Node,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Central => "central",
            Origin::Site => "site",
            Origin::Node => "node",
        })
    }
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
    /// The toggles in force: the central ones that neither the site nor the node
    /// covers, then the site's that the node does not cover, then the node's (later
    /// entries win).
    pub fn effective(&self) -> Toggles {
        let mut out = Toggles::default();
        for (t, _) in self.sourced() {
            out.profiles.extend(t.profiles);
            out.observe.extend(t.observe);
            out.rules.extend(t.rules);
        }
        out
    }

    /// The entries in force, each layer's apart with where they come from (status
    /// says it per entry).
    pub fn sourced(&self) -> Vec<(Toggles, Origin)> {
        let mut layers = [
            (self.central.clone(), Origin::Central),
            (self.shared.clone(), Origin::Site),
            (self.local.clone(), Origin::Node),
        ];
        for (t, _) in &mut layers {
            t.normalize();
        }
        for upper in 1..layers.len() {
            let (lower, rest) = layers.split_at_mut(upper);
            let above = &rest[0].0;
            for (t, _) in lower.iter_mut() {
                t.profiles
                    .retain(|s| !above.profiles.iter().any(|l| covers(l, s)));
                t.observe
                    .retain(|s| !above.observe.iter().any(|l| covers(l, s)));
                t.rules
                    .retain(|s| !above.rules.iter().any(|l| covers_rule(l, s)));
            }
        }
        layers.into()
    }

    /// Drops lapsed entries of both layers; true if any was dropped.
    pub fn expire(&mut self, now: u64) -> bool {
        let central = self.central.expire(now);
        let shared = self.shared.expire(now);
        self.local.expire(now) | shared | central
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
            ..Layers::default()
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

    /// Central entries count where neither the site nor the node has one of their own.
    #[test]
    fn central_entries_are_the_lowest_layer() {
        let layers = Layers {
            central: Toggles {
                profiles: vec![t("tele", None, false), t("ads", None, false)],
                ..Toggles::default()
            },
            shared: Toggles {
                profiles: vec![t("ads", None, true)],
                ..Toggles::default()
            },
            local: Toggles {
                profiles: vec![t("tele", Some("lab"), true)],
                ..Toggles::default()
            },
            ..Layers::default()
        };
        assert_eq!(
            layers.effective().profiles,
            [
                t("tele", None, false),
                t("ads", None, true),
                t("tele", Some("lab"), true)
            ]
        );
        let origins: Vec<(usize, Origin)> = layers
            .sourced()
            .iter()
            .map(|(t, o)| (t.profiles.len(), *o))
            .collect();
        assert_eq!(
            origins,
            [(1, Origin::Central), (1, Origin::Site), (1, Origin::Node)]
        );
    }
}
