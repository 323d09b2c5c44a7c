//! "Why is this name blocked (or not) for this client?": the verdict with the rule, list
//! file and line that decided it, for `telesink explain`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Decision, Policy, QName, Verdict};
use crate::lists::Reach;

#[derive(Debug, Serialize, Deserialize)]
pub struct Explanation {
    pub name: String,
    pub client: IpAddr,
    pub group: String,
    pub verdict: String,
    pub profile: Option<String>,
    pub mode: Option<String>,
    /// The deciding rule as written (`name` or `*.name`), where, and what it does.
    pub rule: Option<RuleAt>,
    /// A log-only profile that would have blocked the name (it is answered normally).
    pub log_only: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RuleAt {
    pub rule: String,
    pub file: String,
    pub line: u32,
    pub allow: bool,
}

pub fn explain(policy: &Policy, name: &str, client: IpAddr) -> Option<Explanation> {
    let q = QName::parse(name)?;
    let g = policy.group_of(client);
    let group = policy
        .groups
        .get(g as usize)
        .map_or("default".into(), |gr| gr.name.clone());
    let rule_at = |d: &Decision| {
        let matched = String::from_utf8_lossy(q.suffix_at(d.at)).into_owned();
        RuleAt {
            rule: if d.rule.reach == Reach::Suffix {
                format!("*.{matched}")
            } else {
                matched
            },
            file: policy
                .lists
                .get(d.rule.list as usize)
                .map_or_else(String::new, |l| l.path.display().to_string()),
            line: d.rule.line,
            allow: d.rule.allow,
        }
    };
    let base = |verdict: &str| Explanation {
        name: q.as_str().to_owned(),
        client,
        group: group.clone(),
        verdict: verdict.to_owned(),
        profile: None,
        mode: None,
        rule: None,
        log_only: policy
            .would_block(g, &q)
            .and_then(|p| policy.profiles.get(p as usize))
            .map(|p| p.name.clone()),
    };
    Some(match policy.verdict(g, &q) {
        Verdict::Block { profile, by } => {
            let p = policy.profiles.get(profile as usize);
            Explanation {
                profile: p.map(|p| p.name.clone()),
                mode: p.map(|p| p.mode.name().to_owned()),
                rule: Some(rule_at(&by)),
                ..base("blocked")
            }
        }
        Verdict::Pass { allow: Some(d) } => Explanation {
            rule: Some(rule_at(&d)),
            ..base("allowed")
        },
        Verdict::Pass { allow: None } => base("forwarded"),
    })
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} for client {} (group {}): {}",
            self.name, self.client, self.group, self.verdict
        )?;
        if let (Some(p), Some(m)) = (&self.profile, &self.mode) {
            writeln!(f, "  profile: {p} (answer mode {m})")?;
        }
        match &self.rule {
            Some(r) => writeln!(
                f,
                "  {} rule: {}  at {}:{}",
                if r.allow { "allow" } else { "block" },
                r.rule,
                r.file,
                r.line
            ),
            None => writeln!(f, "  no rule matches: forwarded upstream"),
        }?;
        if let Some(p) = &self.log_only {
            writeln!(
                f,
                "  log-only: profile {p} would block it; answered normally and counted"
            )?;
        }
        Ok(())
    }
}
