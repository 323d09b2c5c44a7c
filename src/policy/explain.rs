//! "Why is this name blocked (or not) for this client?": the verdict with the rule, list
//! file and line that decided it, for `telesink explain`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Decision, Policy, QName, Verdict};

#[derive(Debug, Serialize, Deserialize)]
pub struct Explanation {
    pub name: String,
    pub client: IpAddr,
    /// Who the client is counted as (its device, or the address itself), with the kind;
    /// filled in by the daemon, which knows the neighbour table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub group: String,
    pub verdict: String,
    pub profile: Option<String>,
    pub mode: Option<String>,
    /// The deciding rule as written (`name` or `*.name`), where, and what it does.
    pub rule: Option<RuleAt>,
    /// A log-only profile that would have blocked the name (it is answered normally).
    pub log_only: Option<String>,
    /// Every other profile with a rule that would block the name, and why it does not.
    #[serde(default)]
    pub would_block: Vec<WouldBlock>,
    /// The `[[forward]]` zone the name is in: only exact rules block there, and it is
    /// forwarded to that zone's servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_zone: Option<String>,
}

/// A profile that would block the name but does not for this client.
#[derive(Debug, Serialize, Deserialize)]
pub struct WouldBlock {
    pub profile: String,
    /// "off for group G" (on for some other group), "off" (off everywhere), or
    /// "observed" (log-only: answered normally, counted).
    pub why_not: String,
    pub rule: RuleAt,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error("not a domain name: {0:?} (labels of letters, digits, '-' and '_', separated by dots)")]
    NotAName(String),
}

/// Whether text is a host name a client could ask for: labels of 1-63 letters, digits,
/// '-' or '_', at most 253 characters, an optional trailing dot.
pub(super) fn valid_name(text: &str) -> bool {
    let t = text.strip_suffix('.').unwrap_or(text);
    !t.is_empty()
        && t.len() <= 253
        && t.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RuleAt {
    pub rule: String,
    pub file: String,
    pub line: u32,
    pub allow: bool,
}

/// "runtime rule (telesink allow, group finance, lapses at 14:30 UTC)" for the rule at
/// position `line` (from 1) of the snapshot's runtime rules.
fn runtime_origin(policy: &Policy, line: u32) -> String {
    let Some(r) = policy.toggles.rules.get((line as usize).wrapping_sub(1)) else {
        return "runtime rule".to_owned();
    };
    let mut out = format!(
        "runtime rule (telesink {}, {}",
        if r.allow { "allow" } else { "block" },
        r.group
            .as_deref()
            .map_or("every group".to_owned(), |g| format!("group {g}"))
    );
    if let Some(until) = r.until {
        let secs = until % 86_400;
        out += &format!(", lapses at {:02}:{:02} UTC", secs / 3600, secs % 3600 / 60);
    }
    out + ")"
}

impl RuleAt {
    /// file:line, or the runtime rule's description (it has no line).
    pub fn place(&self) -> String {
        if self.line == 0 {
            self.file.clone()
        } else {
            format!("{}:{}", self.file, self.line)
        }
    }
}

pub fn explain(policy: &Policy, name: &str, client: IpAddr) -> Result<Explanation, ExplainError> {
    let not_a_name = || ExplainError::NotAName(name.to_owned());
    if !valid_name(name) {
        return Err(not_a_name());
    }
    let q = QName::parse(name).ok_or_else(not_a_name)?;
    let g = policy.group_of(client);
    let group = policy
        .groups
        .get(g as usize)
        .map_or("default".into(), |gr| gr.name.clone());
    let rule_at = |d: &Decision| RuleAt {
        rule: d.rule_text(&q),
        file: match d.rule.list {
            super::runtime::RUNTIME_ALLOW | super::runtime::RUNTIME_BLOCK => {
                runtime_origin(policy, d.rule.line)
            }
            list => policy
                .lists
                .get(list as usize)
                .map_or_else(String::new, |l| l.path.display().to_string()),
        },
        line: match d.rule.list {
            super::runtime::RUNTIME_ALLOW | super::runtime::RUNTIME_BLOCK => 0,
            _ => d.rule.line,
        },
        allow: d.rule.allow,
    };
    let base = |verdict: &str| Explanation {
        name: q.as_str().to_owned(),
        client,
        device: None,
        group: group.clone(),
        verdict: verdict.to_owned(),
        profile: None,
        mode: None,
        rule: None,
        log_only: policy
            .would_block(g, &q)
            .and_then(|p| policy.profiles.get(p as usize))
            .map(|p| p.name.clone()),
        would_block: Vec::new(),
        forward_zone: policy.forward_zones.covering(q.as_str()).map(str::to_owned),
    };
    // Every profile not enforcing for this group, alone: would it block the name?
    let enforcing = policy.groups.get(g as usize).map_or(0, |gr| gr.active);
    let observed = policy.groups.get(g as usize).map_or(0, |gr| gr.logged);
    let would_block: Vec<WouldBlock> = (0..policy.profiles.len())
        .filter(|&i| enforcing & (1 << i) == 0)
        .filter_map(|i| {
            let Verdict::Block { by, .. } = policy.verdict_in(Some(g), 1 << i, &q) else {
                return None;
            };
            let p = &policy.profiles[i];
            let why_not = if observed & (1 << i) != 0 {
                "observed (log-only: answered normally, counted)".to_owned()
            } else if policy.groups.iter().any(|gr| gr.active & (1 << i) != 0) {
                format!("off for group {group}")
            } else {
                "off".to_owned()
            };
            Some(WouldBlock {
                profile: p.name.clone(),
                why_not,
                rule: rule_at(&by),
            })
        })
        .collect();
    if !policy.is_allowed_client(client) {
        return Ok(Explanation {
            would_block,
            ..base("refused: the client is outside policy.allowed_clients and gets REFUSED")
        });
    }
    Ok(match policy.verdict(g, &q) {
        Verdict::Block { profile, by } => {
            let p = policy.profiles.get(profile as usize);
            Explanation {
                profile: p.map(|p| p.name.clone()),
                mode: p.map(|p| p.mode.name().to_owned()),
                rule: Some(rule_at(&by)),
                would_block,
                ..base("blocked")
            }
        }
        Verdict::Pass { allow: Some(d) } => Explanation {
            rule: Some(rule_at(&d)),
            would_block,
            ..base("allowed")
        },
        Verdict::Pass { allow: None } => Explanation {
            would_block,
            ..base("forwarded")
        },
    })
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} for client {} (group {}): {}",
            self.name, self.client, self.group, self.verdict
        )?;
        if let Some(d) = &self.device {
            writeln!(f, "  counted as: {d}")?;
        }
        if let (Some(p), Some(m)) = (&self.profile, &self.mode) {
            writeln!(f, "  profile: {p} (answer mode {m})")?;
        }
        match &self.rule {
            Some(r) => writeln!(
                f,
                "  {} rule: {}  at {}",
                if r.allow { "allow" } else { "block" },
                r.rule,
                r.place()
            ),
            None if self.verdict == "forwarded" && self.forward_zone.is_none() => {
                writeln!(
                    f,
                    "  no rule of a profile on for this group matches: forwarded upstream"
                )
            }
            None if self.verdict == "forwarded" => writeln!(
                f,
                "  no exact rule of a profile on for this group matches: forwarded to the zone's servers"
            ),
            None => Ok(()),
        }?;
        for w in &self.would_block {
            writeln!(
                f,
                "  profile {} would block it ({}), but is {}",
                w.profile,
                format_args!("{} at {}", w.rule.rule, w.rule.place()),
                w.why_not
            )?;
        }
        if let Some(z) = &self.forward_zone {
            writeln!(
                f,
                "  in [[forward]] zone {z}: only exact rules block here, list suffix rules do not"
            )?;
        }
        if let Some(p) = &self.log_only {
            writeln!(
                f,
                "  log-only: profile {p} would block it; answered normally and counted"
            )?;
        }
        Ok(())
    }
}
