//! The centre's check of what the gateways sent: every gateway's days chained as its
//! ledger chained them, its head against what it sent, and the days it said nothing
//! for. A finding names the site, the gateway and the day, in words a DPO can act on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::record::{CheckedDay, HeadRecord, short};

/// Everything one gateway sent.
pub struct GatewayEvidence {
    pub site: String,
    pub gateway: String,
    /// The first record of each day: what was sent first is the evidence (a later one
    /// with another digest is a finding, never a silent replacement).
    pub days: BTreeMap<String, CheckedDay>,
    /// Later records of a day with another digest: (day, digest first sent, digest now).
    pub resent: Vec<(String, String, String)>,
    /// The last head sent.
    pub head: Option<HeadRecord>,
}

impl GatewayEvidence {
    pub fn new(site: &str, gateway: &str) -> Self {
        GatewayEvidence {
            site: site.to_owned(),
            gateway: gateway.to_owned(),
            days: BTreeMap::new(),
            resent: Vec::new(),
            head: None,
        }
    }

    /// Takes a checked day: the first of its day is kept.
    pub fn add_day(&mut self, day: CheckedDay) {
        let d = day.record.day.clone();
        match self.days.get(&d) {
            None => {
                self.days.insert(d, day);
            }
            Some(first) => {
                let (a, b) = (
                    first.record.digest.clone().unwrap_or_default(),
                    day.record.digest.clone().unwrap_or_default(),
                );
                // A day sent empty and sealed later (the clock set back) is completed,
                // not altered: the sealed one is the day's evidence.
                if first.rows.is_none() && a.is_empty() {
                    self.days.insert(d, day);
                } else if a != b {
                    self.resent.push((d, a, b));
                }
            }
        }
    }
}

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The gateway's chain of sent days does not hold.
    ChainBroken,
    /// The ledger now differs from what the gateway sent.
    AlteredAfterSending,
    /// The gateway's own check of its ledger fails, or it was started anew.
    LedgerBroken,
    /// A day in the period the gateway sent nothing for.
    NothingSent,
    /// A day the gateway still counts into, or has not been heard of since.
    StillOpen,
    /// A site the hub sources that no gateway sent anything from.
    SiteSilent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: Kind,
    pub site: String,
    pub gateway: String,
    pub day: Option<String>,
    pub what: String,
}

/// How one gateway's evidence stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStatus {
    pub site: String,
    pub gateway: String,
    /// Closed days sent (with rows or without).
    pub days_sent: usize,
    /// Sealed days whose digest and chaining were checked and hold.
    pub days_verified: usize,
    pub first_day: Option<String>,
    pub last_day: Option<String>,
    /// Unix seconds of the last head (the gateway's last word).
    pub last_heard: Option<u64>,
    /// The digest of the last sealed day sent.
    pub last_digest: Option<(String, String)>,
    /// True when nothing below is wrong with this gateway's chain or ledger.
    pub verified: bool,
    pub client_labels: String,
}

/// The sites the hub sources that no gateway sent anything from.
pub fn silent_sites(
    gateways: &BTreeMap<(String, String), GatewayEvidence>,
    sites: &[String],
) -> Vec<Finding> {
    sites
        .iter()
        .filter(|site| !gateways.keys().any(|(s, _)| s == *site))
        .map(|site| Finding {
            kind: Kind::SiteSilent,
            site: site.clone(),
            gateway: "-".into(),
            day: None,
            what: format!(
                "site {site}: the hub sources it, and no gateway of it has sent anything (not connected yet, or its gateways have no [cluster] hub)"
            ),
        })
        .collect()
}

/// Checks each gateway of the report's choice: its status, and the findings of the
/// period [since, until] (days as YYYY-MM-DD), oldest first per gateway.
pub fn check(
    gateways: &BTreeMap<(String, String), &GatewayEvidence>,
    since: &str,
    until: &str,
) -> (Vec<GatewayStatus>, Vec<Finding>) {
    let mut statuses = Vec::new();
    let mut findings = Vec::new();
    for g in gateways.values() {
        let (status, mut found) = check_gateway(g, since, until);
        statuses.push(status);
        findings.append(&mut found);
    }
    (statuses, findings)
}

fn check_gateway(g: &GatewayEvidence, since: &str, until: &str) -> (GatewayStatus, Vec<Finding>) {
    let mut out = Vec::new();
    let finding = |kind, day: Option<&str>, what: String| Finding {
        kind,
        site: g.site.clone(),
        gateway: g.gateway.clone(),
        day: day.map(str::to_owned),
        what,
    };
    // 1. The chain as sent: each sealed day chained on the last sealed day before it.
    let mut previous: Option<(&str, &str)> = None;
    let mut verified = 0;
    for (day, d) in &g.days {
        let (Some(digest), Some(prev)) = (&d.record.digest, &d.record.previous) else {
            continue;
        };
        match previous {
            Some((pday, pdigest)) if pdigest != prev => {
                out.push(finding(
                    Kind::ChainBroken,
                    Some(day),
                    format!(
                        "day {day} is chained on {}, but the day before it that was sent ({pday}) has digest {}: the ledger was changed between the two",
                        short(prev),
                        short(pdigest)
                    ),
                ));
            }
            _ => verified += 1,
        }
        previous = Some((day, digest));
    }
    // 2. What was sent again with another digest.
    for (day, first, now) in &g.resent {
        out.push(finding(
            Kind::AlteredAfterSending,
            Some(day),
            format!(
                "day {day}: the gateway's ledger was altered after the day was sent: it sent the day again with another digest ({} first, {} now); the report counts what was sent first (a purge on the gateway re-sends days too: see the purges listed)",
                short(first),
                short(now)
            ),
        ));
    }
    // 3. The ledger as its head says it stands.
    if let Some(h) = &g.head {
        for (day, digest) in &h.chain {
            if let Some(sent) = g.days.get(day).and_then(|d| d.record.digest.as_ref())
                && sent != digest
                && !g.resent.iter().any(|(d, _, now)| d == day && now == digest)
            {
                out.push(finding(
                    Kind::AlteredAfterSending,
                    Some(day),
                    format!(
                        "day {day}: the gateway's ledger now has digest {}, it sent {}: the ledger was altered after the day was sent",
                        short(digest),
                        short(sent)
                    ),
                ));
            }
        }
        if let Some(day) = &h.broken_at {
            out.push(finding(
                Kind::LedgerBroken,
                Some(day),
                format!("the gateway's own check of its ledger fails at {day} (`telesink report verify` on it names it)"),
            ));
        }
        if h.breaks > 0 {
            out.push(finding(
                Kind::LedgerBroken,
                None,
                format!(
                    "the gateway's ledger was started anew {} time(s) over an unreadable file: what it held before is not in this evidence",
                    h.breaks
                ),
            ));
        }
    }
    // 4. The days of the period it said nothing for.
    let open_from = g.head.as_ref().map(|h| h.open_day.as_str());
    let last_heard = g.head.as_ref().map(|h| h.at);
    let mut day = crate::clock::day_number(since).unwrap_or(0);
    let end = crate::clock::day_number(until).unwrap_or(0);
    while day <= end {
        let text = crate::evidence::store::day_text(day);
        if !g.days.contains_key(&text) {
            match open_from {
                Some(open) if text.as_str() >= open => out.push(finding(
                    Kind::StillOpen,
                    Some(&text),
                    format!(
                        "{text} is not closed at this gateway yet, or not received: it last reported at {} (open day {open})",
                        crate::clock::utc_time(last_heard.unwrap_or(0))
                    ),
                )),
                _ => out.push(finding(
                    Kind::NothingSent,
                    Some(&text),
                    format!("the gateway sent nothing for {text}: it was not running, or its ledger could not be written that day"),
                )),
            }
        }
        day += 1;
    }
    let sealed: Vec<(&String, &CheckedDay)> = g
        .days
        .iter()
        .filter(|(_, d)| d.record.digest.is_some())
        .collect();
    let status = GatewayStatus {
        site: g.site.clone(),
        gateway: g.gateway.clone(),
        days_sent: g.days.len(),
        days_verified: verified,
        first_day: g.days.keys().next().cloned(),
        last_day: g.days.keys().next_back().cloned(),
        last_heard,
        last_digest: sealed
            .last()
            .and_then(|(d, c)| Some(((*d).clone(), c.record.digest.clone()?))),
        verified: !out.iter().any(|f| {
            matches!(
                f.kind,
                Kind::AlteredAfterSending | Kind::LedgerBroken | Kind::ChainBroken
            )
        }),
        client_labels: g
            .days
            .values()
            .next_back()
            .map(|d| d.record.client_labels.clone())
            .unwrap_or_default(),
    };
    (status, out)
}
