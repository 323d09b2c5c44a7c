//! `telesink fleet report`: every gateway's days as it sent them, summed over a period,
//! per site, gateway, device, profile, endpoint and day, with the findings of the
//! centre's check (verify.rs) and the policy each site had in force each day.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::hub::{CentralChange, Gathered};
use super::record::Refused;
use super::verify::{self, Finding, GatewayStatus};
use crate::evidence::report::{BLOCKED_LAYERS, MAX_LINES, ProfileInForce};
use crate::evidence::store::{PolicyChange, Stored, day_text};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FleetQuery {
    /// YYYY-MM-DD, inclusive.
    pub since: String,
    pub until: String,
    pub site: Option<String>,
    pub gateway: Option<String>,
    pub client: Option<String>,
    pub profile: Option<String>,
    /// site, gateway, client, name, profile or day; None: every row.
    pub by: Option<String>,
    /// The page: sums only, no lines.
    pub summary: bool,
}

/// One line: a row of a gateway's day, or a sum `--by` one field (the others empty):
/// the ledger's own line (`Stored`, as `telesink report` shows it) with where it came
/// from; JSON keeps one flat object per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetRow {
    pub site: String,
    pub gateway: String,
    #[serde(flatten)]
    pub row: Stored,
}

/// One site at a glance (the page's per-site view).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SiteView {
    pub site: String,
    pub gateways: Vec<String>,
    pub blocked: u64,
    pub observed: u64,
    /// Devices with any attempt.
    pub devices: usize,
    /// profile -> (blocked, observed).
    pub profiles: BTreeMap<String, (u64, u64)>,
    /// The devices with the most blocked attempts (20).
    pub top_devices: Vec<(String, u64)>,
    /// Days of the period with a finding (a gap, a break), by gateway.
    pub findings: usize,
}

/// The policy a gateway had in force over a run of days.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyRun {
    pub site: String,
    pub gateway: String,
    pub from: String,
    pub to: String,
    pub profiles: Vec<ProfileInForce>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetReport {
    pub since: String,
    pub until: String,
    pub by: Option<String>,
    pub generated_at: u64,
    pub version: String,
    pub rows: Vec<FleetRow>,
    pub lines_left_out: u64,
    /// profile -> layer -> attempts.
    pub totals: BTreeMap<String, BTreeMap<String, u64>>,
    pub blocked: u64,
    pub observed: u64,
    pub sites: Vec<SiteView>,
    /// Blocked attempts per day.
    pub per_day: BTreeMap<String, u64>,
    /// `site/device` with the most blocked attempts, and endpoints.
    pub top_devices: Vec<(String, u64)>,
    pub top_names: Vec<(String, u64)>,
    pub gateways: Vec<GatewayStatus>,
    pub findings: Vec<Finding>,
    pub refused: Vec<Refused>,
    pub policy: Vec<PolicyRun>,
    /// Policy changes the gateways recorded in the period, per gateway.
    pub changes: Vec<(String, String, PolicyChange)>,
    pub central_changes: Vec<CentralChange>,
    /// The erasures the gateways recorded in the period: (site, gateway, at, client, rows).
    pub purges: Vec<(String, String, u64, String, u64)>,
    /// Records read from the hub.
    pub records: u64,
}

impl FleetReport {
    /// True when every gateway's evidence holds and nothing was refused.
    pub fn verified(&self) -> bool {
        self.refused.is_empty()
            && self.gateways.iter().all(|g| g.verified)
            && !self
                .findings
                .iter()
                .any(|f| f.kind == verify::Kind::SiteSilent)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FleetReportError {
    #[error("--by {0}: group by site, gateway, client, name, profile or day")]
    By(String),
    #[error("no {0} {1} in what the hub holds{2}")]
    Unknown(&'static str, String, String),
}

fn top(map: HashMap<String, u64>) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = map.into_iter().filter(|(_, n)| *n > 0).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(20);
    v
}

type GroupKey = (String, String, String, String, String, String, String);

pub fn build(
    gathered: &Gathered,
    central: Vec<CentralChange>,
    q: &FleetQuery,
) -> Result<FleetReport, FleetReportError> {
    let by = q.by.as_deref();
    if let Some(b) = by
        && !["site", "gateway", "client", "name", "profile", "day"].contains(&b)
    {
        return Err(FleetReportError::By(b.to_owned()));
    }
    check_filter(gathered, q)?;
    let wanted_sites: Vec<String> = gathered
        .sites
        .iter()
        .filter(|s| q.site.as_ref().is_none_or(|w| w == *s))
        .cloned()
        .collect();
    let chosen: BTreeMap<(String, String), &verify::GatewayEvidence> = gathered
        .gateways
        .iter()
        .filter(|((s, g), _)| {
            q.site.as_ref().is_none_or(|w| w == s) && q.gateway.as_ref().is_none_or(|w| w == g)
        })
        .map(|(k, v)| (k.clone(), v))
        .collect();
    // A site with no gateway at all is a finding of its own (not when one gateway
    // was asked for).
    let mut findings = match q.gateway {
        None => verify::silent_sites(&gathered.gateways, &wanted_sites),
        Some(_) => Vec::new(),
    };
    let (gateways, mut found) = verify::check(&chosen, &q.since, &q.until);
    findings.append(&mut found);

    let mut totals: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let (mut blocked, mut observed) = (0u64, 0u64);
    let mut sites: BTreeMap<String, SiteView> = BTreeMap::new();
    let mut site_devices: BTreeMap<String, (BTreeSet<String>, HashMap<String, u64>)> =
        BTreeMap::new();
    let mut per_day: BTreeMap<String, u64> = BTreeMap::new();
    let mut devices: HashMap<String, u64> = HashMap::new();
    let mut names: HashMap<String, u64> = HashMap::new();
    let mut rows = Vec::new();
    let mut left_out = 0u64;
    let mut groups: BTreeMap<GroupKey, (u64, u64, u64)> = BTreeMap::new();
    let mut policy = Vec::new();
    let mut changes = Vec::new();
    let mut purges = Vec::new();
    for site in &wanted_sites {
        sites.entry(site.clone()).or_insert_with(|| SiteView {
            site: site.clone(),
            ..Default::default()
        });
    }
    for ((site, gateway), g) in &chosen {
        let view = sites.entry(site.clone()).or_insert_with(|| SiteView {
            site: site.clone(),
            ..Default::default()
        });
        view.gateways.push(gateway.clone());
        let mut run: Option<PolicyRun> = None;
        for (day, d) in g.days.range(q.since.clone()..=q.until.clone()) {
            for c in &d.record.changes {
                changes.push((site.clone(), gateway.clone(), c.clone()));
            }
            for (at, client, n) in &d.record.purges {
                purges.push((site.clone(), gateway.clone(), *at, client.clone(), *n));
            }
            let last = d.record.policies.last().cloned().unwrap_or_default();
            match &mut run {
                Some(r) if d.record.policies.len() == 1 && profiles_eq(&r.profiles, &last) => {
                    r.to = day.clone();
                }
                _ => {
                    if let Some(r) = run.take() {
                        policy.push(r);
                    }
                    run = Some(PolicyRun {
                        site: site.clone(),
                        gateway: gateway.clone(),
                        from: day.clone(),
                        to: day.clone(),
                        profiles: last,
                    });
                }
            }
            let Some(rows_of) = &d.rows else { continue };
            let text = day_text(rows_of.day);
            let client_of =
                |p: &crate::evidence::block::Packed| rows_of.clients[p.client as usize].as_str();
            for p in &rows_of.rows {
                let client = client_of(p);
                let profile = rows_of.profiles[p.profile as usize].as_str();
                if q.client.as_deref().is_some_and(|c| c != client)
                    || q.profile.as_deref().is_some_and(|f| f != profile)
                {
                    continue;
                }
                let layer = rows_of.layers[p.layer as usize].as_str();
                let name = rows_of.names[p.name as usize].as_str();
                *totals
                    .entry(profile.to_owned())
                    .or_default()
                    .entry(layer.to_owned())
                    .or_default() += p.count;
                let is_blocked = BLOCKED_LAYERS.contains(&layer);
                let entry = view.profiles.entry(profile.to_owned()).or_default();
                let (sd, st) = site_devices.entry(site.clone()).or_default();
                sd.insert(client.to_owned());
                if is_blocked {
                    blocked += p.count;
                    view.blocked += p.count;
                    entry.0 += p.count;
                    *per_day.entry(text.clone()).or_default() += p.count;
                    *devices.entry(format!("{site}/{client}")).or_default() += p.count;
                    *st.entry(client.to_owned()).or_default() += p.count;
                    if layer != "bypass" && name != "-" {
                        *names.entry(name.to_owned()).or_default() += p.count;
                    }
                } else {
                    observed += p.count;
                    view.observed += p.count;
                    entry.1 += p.count;
                }
                if q.summary {
                    continue;
                }
                match by {
                    None if rows.len() < MAX_LINES => rows.push(FleetRow {
                        site: site.clone(),
                        gateway: gateway.clone(),
                        row: Stored {
                            day: text.clone(),
                            client: client.to_owned(),
                            profile: profile.to_owned(),
                            layer: layer.to_owned(),
                            name: name.to_owned(),
                            count: p.count,
                            first_seen: p.first,
                            last_seen: p.last,
                        },
                    }),
                    None => left_out += 1,
                    Some(b) => {
                        let e = String::new;
                        let key: GroupKey = match b {
                            "site" => (site.clone(), e(), e(), e(), e(), layer.into(), e()),
                            "gateway" => (
                                site.clone(),
                                gateway.clone(),
                                e(),
                                e(),
                                e(),
                                layer.into(),
                                e(),
                            ),
                            "client" => (
                                site.clone(),
                                e(),
                                e(),
                                client.into(),
                                e(),
                                layer.into(),
                                e(),
                            ),
                            "name" => (e(), e(), e(), e(), e(), layer.into(), name.into()),
                            "profile" => (e(), e(), e(), e(), profile.into(), layer.into(), e()),
                            _ => (e(), e(), text.clone(), e(), e(), layer.into(), e()),
                        };
                        let g = groups.entry(key).or_insert((0, u64::MAX, 0));
                        g.0 += p.count;
                        g.1 = g.1.min(p.first);
                        g.2 = g.2.max(p.last);
                    }
                }
            }
        }
        if let Some(r) = run.take() {
            policy.push(r);
        }
    }
    for (key, (count, first, last)) in groups {
        let (site, gateway, day, client, profile, layer, name) = key;
        rows.push(FleetRow {
            site,
            gateway,
            row: Stored {
                day,
                client,
                profile,
                layer,
                name,
                count,
                first_seen: first,
                last_seen: last,
            },
        });
    }
    for view in sites.values_mut() {
        if let Some((set, per)) = site_devices.remove(&view.site) {
            view.devices = set.len();
            view.top_devices = top(per);
        }
        view.findings = findings.iter().filter(|f| f.site == view.site).count();
    }
    let central_changes = central
        .into_iter()
        .filter(|c| {
            let day = crate::clock::utc_date(c.at);
            c.at == 0 || (day >= q.since && day <= q.until)
        })
        .collect();
    Ok(FleetReport {
        since: q.since.clone(),
        until: q.until.clone(),
        by: q.by.clone(),
        generated_at: crate::clock::unix_now(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        rows,
        lines_left_out: left_out,
        totals,
        blocked,
        observed,
        sites: sites.into_values().collect(),
        per_day,
        top_devices: top(devices),
        top_names: top(names),
        gateways,
        findings,
        refused: gathered.refused.clone(),
        policy,
        changes,
        central_changes,
        purges,
        records: gathered.records,
    })
}

fn profiles_eq(a: &[ProfileInForce], b: &[ProfileInForce]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.name == y.name
                && x.blocks_for == y.blocks_for
                && x.observed_for == y.observed_for
                && x.off_for == y.off_for
        })
}

/// A site, gateway, client or profile filter that names nothing the hub holds is an
/// error naming the nearest, never a silent zero.
fn check_filter(gathered: &Gathered, q: &FleetQuery) -> Result<(), FleetReportError> {
    let mut sites: BTreeSet<String> = gathered.sites.iter().cloned().collect();
    let mut gateways = BTreeSet::new();
    let mut clients = BTreeSet::new();
    let mut profiles = BTreeSet::new();
    for ((s, g), e) in &gathered.gateways {
        sites.insert(s.clone());
        gateways.insert(g.clone());
        for d in e.days.values() {
            if let Some(r) = &d.rows {
                clients.extend(r.clients.iter().cloned());
                profiles.extend(r.profiles.iter().cloned());
            }
            for p in d.record.policies.iter().flatten() {
                profiles.insert(p.name.clone());
            }
        }
    }
    for (what, plural, value, set) in [
        ("site", "sites", &q.site, sites),
        ("gateway", "gateways", &q.gateway, gateways),
        ("client", "clients", &q.client, clients),
        ("profile", "profiles", &q.profile, profiles),
    ] {
        if let Some(v) = value
            && !set.contains(v)
        {
            let all: Vec<String> = set.into_iter().collect();
            return Err(FleetReportError::Unknown(
                what,
                v.clone(),
                crate::suggest::choices(v, plural, &all),
            ));
        }
    }
    Ok(())
}
