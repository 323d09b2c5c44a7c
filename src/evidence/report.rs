//! `telesink report`: the ledger over a period summed day by day (totals, top lists,
//! trend, and the lines: every row or sums `--by` one field). Its text forms (table,
//! CSV, JSON, HTML) are in render.rs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::block::DayRows;
use super::store::{Store, StoreError, Stored, day_text};

/// What to report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Query {
    /// First and last day, YYYY-MM-DD (inclusive).
    pub since: String,
    pub until: String,
    pub client: Option<String>,
    pub profile: Option<String>,
    /// Group by "client", "name", "profile" or "day"; None: every row.
    pub by: Option<String>,
    /// The totals, top lists and trend only, no lines (the HTML page).
    #[serde(default)]
    pub summary: bool,
}

/// The report: the rows (grouped or not), the totals per profile and layer, and what
/// makes it evidence (the last closed day's digest, the purges).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub since: String,
    pub until: String,
    pub by: Option<String>,
    pub rows: Vec<Stored>,
    /// profile -> layer -> attempts.
    pub totals: BTreeMap<String, BTreeMap<String, u64>>,
    pub clients: usize,
    /// Over every row of the period, whatever `by` is: attempts per day, the clients and
    /// names with the most attempts (20 each), and the clients seen by an observed
    /// (log-only) profile, whose Office or Windows policy is evidently not applied.
    /// Blocked attempts per day, and the devices and endpoints with the most blocked
    /// attempts; observed ones (answered normally) apart, never mixed in.
    pub per_day: BTreeMap<String, u64>,
    pub top_clients: Vec<(String, u64)>,
    pub top_names: Vec<(String, u64)>,
    pub observed_clients: Vec<(String, u64)>,
    #[serde(default)]
    pub top_observed_names: Vec<(String, u64)>,
    /// The last closed day in the period and its digest (`telesink report verify`).
    pub last_digest: Option<(String, String)>,
    /// Purges recorded: (Unix time, client, rows).
    pub purges: Vec<(u64, String, u64)>,
    /// Times the ledger was started anew because the file before was unreadable: the
    /// attempts before each are not in this file.
    #[serde(default)]
    pub breaks: Vec<crate::evidence::Break>,
    /// Lines past `MAX_LINES` that this report does not hold (the sums above still
    /// count them): narrow the period or the client, or sum with `--by`.
    #[serde(default)]
    pub lines_left_out: u64,
    /// Policy changes recorded in the period (toggles, rules, reloads, starts and
    /// stops), oldest first.
    #[serde(default)]
    pub changes: Vec<crate::evidence::store::PolicyChange>,
    /// Where and when the report was made and the policy it describes; filled by the
    /// daemon or the CLI, which know the policy (this module does not).
    #[serde(default)]
    pub context: Option<Context>,
}

/// The layers that mean an attempt was stopped; `dns-observed` means it was answered.
pub const BLOCKED_LAYERS: [&str; 3] = ["dns-blocked", "firewall-rejected", "bypass"];

/// What a report says of itself besides the counts (docs/EVIDENCE.md, "Reports").
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Context {
    /// The gateway's host name.
    pub gateway: String,
    /// Unix seconds.
    pub generated_at: u64,
    pub version: String,
    /// "the running daemon" or the ledger file read while it was down.
    pub source: String,
    /// The profiles as they stand at `generated_at`, with the groups each blocks for.
    pub profiles: Vec<ProfileInForce>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProfileInForce {
    pub name: String,
    pub description: String,
    pub blocks_for: Vec<String>,
    pub observed_for: Vec<String>,
    pub off_for: Vec<String>,
    /// What blocking it breaks (the profile's own warning).
    pub warning: Option<String>,
}

/// The profiles of a policy as they stand, with the groups each blocks for, observes
/// for, or is off for, and what blocking breaks (a report's context, and what a fleet's
/// gateway says was in force on a day).
pub fn profiles_in_force(policy: &crate::policy::Policy) -> Vec<ProfileInForce> {
    policy
        .profiles
        .iter()
        .enumerate()
        .filter(|(i, p)| policy.listed(*i) || p.name != crate::policy::runtime::RUNTIME_PROFILE)
        .map(|(i, p)| {
            let mut state = ProfileInForce {
                name: p.name.clone(),
                description: p.description.clone(),
                warning: p.warning.clone(),
                ..Default::default()
            };
            for g in &policy.groups {
                let list = if g.active & (1 << i) != 0 {
                    &mut state.blocks_for
                } else if g.logged & (1 << i) != 0 {
                    &mut state.observed_for
                } else {
                    &mut state.off_for
                };
                list.push(g.name.clone());
            }
            state
        })
        .collect()
}

impl Report {
    /// Attempts stopped (DNS, firewall, bypass) and attempts only observed, in the period.
    pub fn blocked_and_observed(&self) -> (u64, u64) {
        let mut out = (0, 0);
        for layers in self.totals.values() {
            for (layer, n) in layers {
                if BLOCKED_LAYERS.contains(&layer.as_str()) {
                    out.0 += n;
                } else {
                    out.1 += n;
                }
            }
        }
        out
    }
}

/// The lines one report holds at most. A year of every row of a large site is tens of
/// millions of lines, gigabytes in the daemon's memory and on the control socket; the
/// summary and `--by` cost the same whatever the period. A report past it says so
/// (JSON `lines_left_out`, the table's last line, the CLI's standard error), the daemon
/// logs it and counts it in `telesink_evidence_report_lines_left_out_total`.
pub const MAX_LINES: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("--by {0}: group by client, name, profile or day")]
    By(String),
    #[error(
        "not a day: {0:?} (write a date that exists, as 2026-11-01, or 30d for the last 30 days)"
    )]
    Day(String),
    #[error(
        "the period is empty: --since {since} is after --until {until} (a report covers since to until, both included)"
    )]
    EmptyPeriod { since: String, until: String },
    /// What was asked for, its value, and the valid choices (`suggest::choices`).
    #[error("no {0} {1} in the ledger or the config{2}")]
    Unknown(&'static str, String, String),
}

impl ReportError {
    /// A mistake in the question (400), not a failure to answer it.
    pub fn is_question(&self) -> bool {
        !matches!(self, ReportError::Store(_))
    }
}

impl Query {
    /// Days that exist, in order: a silent "0 attempts" for 2026-02-30 or for a period
    /// that ends before it starts would read as "nothing happened".
    pub fn validate(&self) -> Result<(), ReportError> {
        for day in [&self.since, &self.until] {
            let exists = crate::clock::day_number(day)
                .is_some_and(|n| crate::clock::utc_date(u64::from(n) * 86_400) == *day);
            if !exists {
                return Err(ReportError::Day(day.clone()));
            }
        }
        if self.since > self.until {
            return Err(ReportError::EmptyPeriod {
                since: self.since.clone(),
                until: self.until.clone(),
            });
        }
        Ok(())
    }
}

/// A report's period from `--since` (YYYY-MM-DD, or 30d for the last 30 days) and
/// `--until` (YYYY-MM-DD, default today): (since, until), days that exist, in order.
pub fn period(since: &str, until: Option<&str>) -> Result<(String, String), String> {
    let today = crate::clock::unix_now() / 86_400;
    let day = |text: &str| -> Result<String, String> {
        if let Some(n) = text.strip_suffix('d').and_then(|n| n.parse::<u64>().ok()) {
            return Ok(crate::clock::utc_date(today.saturating_sub(n) * 86_400));
        }
        let ok = text.len() == 10
            && text.bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            });
        if ok {
            Ok(text.to_owned())
        } else {
            Err(format!(
                "not a day: {text:?} (write 2026-11-01, or 30d for the last 30 days)"
            ))
        }
    };
    let q = Query {
        since: day(since)?,
        until: match until {
            Some(u) => day(u)?,
            None => crate::clock::utc_date(today * 86_400),
        },
        ..Default::default()
    };
    q.validate().map_err(|e| e.to_string())?;
    Ok((q.since, q.until))
}

pub fn run(store: &Store, q: &Query) -> Result<Report, ReportError> {
    run_capped(store, q, MAX_LINES)
}

/// `run`, with the question checked: valid days, and a client or profile filter that
/// names one the ledger has (any day) or, for profiles, one of `profiles` (the config's):
/// a typo is an error naming the nearest, never a silent zero.
pub fn run_checked(store: &Store, q: &Query, profiles: &[String]) -> Result<Report, ReportError> {
    q.validate()?;
    let report = run(store, q)?;
    if report.totals.is_empty() && (q.client.is_some() || q.profile.is_some()) {
        let (clients, mut known) = labels(store)?;
        known.extend(profiles.iter().cloned());
        for (what, value, set) in [
            ("client", &q.client, clients),
            ("profile", &q.profile, known),
        ] {
            if let Some(v) = value
                && !set.contains(v)
            {
                let all: Vec<String> = set.into_iter().collect();
                let plural = if what == "client" {
                    "clients"
                } else {
                    "profiles"
                };
                return Err(ReportError::Unknown(
                    what,
                    v.clone(),
                    crate::suggest::choices(v, plural, &all),
                ));
            }
        }
    }
    Ok(report)
}

/// Every client label and profile the ledger holds, any day.
fn labels(store: &Store) -> Result<(BTreeSet<String>, BTreeSet<String>), ReportError> {
    let (mut clients, mut profiles) = (BTreeSet::new(), BTreeSet::new());
    store.each_day("0000-01-01", "9999-12-31", |day| {
        clients.extend(day.clients.iter().cloned());
        profiles.extend(day.profiles.iter().cloned());
    })?;
    Ok((clients, profiles))
}

fn run_capped(store: &Store, q: &Query, max_lines: usize) -> Result<Report, ReportError> {
    let by = match q.by.as_deref() {
        None => None,
        Some("client") => Some(By::Client),
        Some("name") => Some(By::Name),
        Some("profile") => Some(By::Profile),
        Some("day") => Some(By::Day),
        Some(other) => return Err(ReportError::By(other.to_owned())),
    };
    let mut sum = Summing::new(q, by, max_lines);
    store.each_day(&q.since, &q.until, |day| sum.add(day))?;
    let mut report = sum.finish(store.last_digest(&q.until)?, store.purges()?);
    report.breaks = store.breaks()?;
    report.changes = store.changes(&q.since, &q.until)?;
    Ok(report)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum By {
    Client,
    Name,
    Profile,
    Day,
}

/// Strings seen across the period, each given a number once: the sums run over
/// numbers, and a string is copied only into the lines of the report.
#[derive(Default)]
struct Interned {
    ids: HashMap<String, u32>,
    texts: Vec<String>,
}

impl Interned {
    fn id(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = self.texts.len() as u32;
        self.ids.insert(text.to_owned(), id);
        self.texts.push(text.to_owned());
        id
    }

    fn ids(&mut self, texts: &[String]) -> Vec<u32> {
        texts.iter().map(|t| self.id(t)).collect()
    }

    /// The 20 largest of per-id sums, ties in text order.
    fn top(&self, sums: &[u64]) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = sums
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .map(|(i, &n)| (self.texts[i].clone(), n))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(20);
        v
    }
}

fn bump(sums: &mut Vec<u64>, id: u32, n: u64) {
    let i = id as usize;
    if sums.len() <= i {
        sums.resize(i + 1, 0);
    }
    sums[i] += n;
}

/// One group of `--by`: its count and first and last sighting.
#[derive(Clone)]
struct Group {
    count: u64,
    first: u64,
    last: u64,
}

/// The report's sums over the days of the period, fed one day at a time.
struct Summing<'q> {
    q: &'q Query,
    by: Option<By>,
    clients: Interned,
    profiles: Interned,
    layers: Interned,
    names: Interned,
    days: Interned,
    /// (profile, layer) -> attempts.
    totals: HashMap<(u32, u32), u64>,
    per_client: Vec<u64>,
    per_name: Vec<u64>,
    observed: Vec<u64>,
    observed_names: Vec<u64>,
    per_day: BTreeMap<String, u64>,
    lines: Vec<Stored>,
    max_lines: usize,
    left_out: u64,
    /// (the id of the value grouped by, layer) -> sums.
    groups: HashMap<(u32, u32), Group>,
}

impl<'q> Summing<'q> {
    fn new(q: &'q Query, by: Option<By>, max_lines: usize) -> Summing<'q> {
        Summing {
            q,
            by,
            clients: Interned::default(),
            profiles: Interned::default(),
            layers: Interned::default(),
            names: Interned::default(),
            days: Interned::default(),
            totals: HashMap::new(),
            per_client: Vec::new(),
            per_name: Vec::new(),
            observed: Vec::new(),
            observed_names: Vec::new(),
            per_day: BTreeMap::new(),
            lines: Vec::new(),
            max_lines,
            left_out: 0,
            groups: HashMap::new(),
        }
    }

    fn add(&mut self, day: &DayRows) {
        // The filters as the day's own indices (its dictionaries are sorted); a day
        // without the client or profile asked for has nothing to add.
        let local = |dict: &[String], want: &Option<String>| match want {
            None => Ok(None),
            Some(w) => dict
                .binary_search(w)
                .map(|i| Some(i as u32))
                .map_err(|_| ()),
        };
        let (Ok(client), Ok(profile)) = (
            local(&day.clients, &self.q.client),
            local(&day.profiles, &self.q.profile),
        ) else {
            return;
        };
        // The row loop sums into arrays of the day's own indices (no hashing per row),
        // folded into the period's sums once the day is done.
        let day_text = day_text(day.day);
        let layers = day.layers.len();
        let observed = day.layers.iter().position(|l| l == "dns-observed");
        // Firewall rows name no endpoint ("-"), bypass rows name their kind ("doh"):
        // neither is an endpoint for the top list.
        let no_name = day.names.iter().position(|n| n == "-");
        let bypass = day.layers.iter().position(|l| l == "bypass");
        let keys = match self.by {
            Some(By::Client) => day.clients.len(),
            Some(By::Name) => day.names.len(),
            Some(By::Profile) => day.profiles.len(),
            Some(By::Day) => 1,
            None => 0,
        };
        let grouping = !self.q.summary && self.by.is_some();
        let mut totals = vec![0u64; day.profiles.len() * layers];
        let mut per_client = vec![0u64; day.clients.len()];
        let mut per_name = vec![0u64; day.names.len()];
        let mut observed_names = vec![0u64; day.names.len()];
        let mut seen_observed = vec![0u64; day.clients.len()];
        let mut groups = vec![
            Group {
                count: 0,
                first: u64::MAX,
                last: 0,
            };
            if grouping { keys * layers } else { 0 }
        ];
        let mut day_total = 0;
        let mut any = false;
        for p in &day.rows {
            if client.is_some_and(|c| c != p.client) || profile.is_some_and(|f| f != p.profile) {
                continue;
            }
            any = true;
            let layer = p.layer as usize;
            totals[p.profile as usize * layers + layer] += p.count;
            // Blocked and observed are summed apart: an observed attempt was answered.
            if observed == Some(layer) {
                seen_observed[p.client as usize] += p.count;
                observed_names[p.name as usize] += p.count;
            } else {
                per_client[p.client as usize] += p.count;
                day_total += p.count;
                if bypass != Some(layer) {
                    per_name[p.name as usize] += p.count;
                }
            }
            if self.q.summary {
                continue;
            }
            let key = match self.by {
                None if self.lines.len() < self.max_lines => {
                    self.lines.push(day.stored(&day_text, p));
                    continue;
                }
                None => {
                    self.left_out += 1;
                    continue;
                }
                Some(By::Client) => p.client,
                Some(By::Name) => p.name,
                Some(By::Profile) => p.profile,
                Some(By::Day) => 0,
            };
            let g = &mut groups[key as usize * layers + layer];
            g.count += p.count;
            g.first = g.first.min(p.first);
            g.last = g.last.max(p.last);
        }
        if !any {
            return;
        }
        let client_ids = self.clients.ids(&day.clients);
        let profile_ids = self.profiles.ids(&day.profiles);
        let layer_ids = self.layers.ids(&day.layers);
        let name_ids = self.names.ids(&day.names);
        let day_id = [self.days.id(&day_text)];
        let key_ids: &[u32] = match self.by {
            Some(By::Client) => &client_ids,
            Some(By::Name) => &name_ids,
            Some(By::Profile) => &profile_ids,
            Some(By::Day) => &day_id,
            None => &[],
        };
        for (i, &n) in totals.iter().enumerate().filter(|&(_, &n)| n > 0) {
            *self
                .totals
                .entry((profile_ids[i / layers], layer_ids[i % layers]))
                .or_default() += n;
        }
        for (i, &n) in per_client.iter().enumerate().filter(|&(_, &n)| n > 0) {
            bump(&mut self.per_client, client_ids[i], n);
        }
        for (i, &n) in seen_observed.iter().enumerate().filter(|&(_, &n)| n > 0) {
            bump(&mut self.observed, client_ids[i], n);
        }
        for (i, &n) in per_name.iter().enumerate().filter(|&(_, &n)| n > 0) {
            if no_name != Some(i) {
                bump(&mut self.per_name, name_ids[i], n);
            }
        }
        for (i, &n) in observed_names.iter().enumerate().filter(|&(_, &n)| n > 0) {
            bump(&mut self.observed_names, name_ids[i], n);
        }
        for (i, g) in groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.first != u64::MAX)
        {
            let sum = self
                .groups
                .entry((key_ids[i / layers], layer_ids[i % layers]))
                .or_insert(Group {
                    count: 0,
                    first: u64::MAX,
                    last: 0,
                });
            sum.count += g.count;
            sum.first = sum.first.min(g.first);
            sum.last = sum.last.max(g.last);
        }
        if day_total > 0 {
            *self.per_day.entry(day_text).or_default() += day_total;
        }
    }

    fn finish(
        self,
        last_digest: Option<(String, String)>,
        purges: Vec<(u64, String, u64)>,
    ) -> Report {
        let rows = match self.by {
            None => self.lines,
            Some(by) => {
                let keys = match by {
                    By::Client => &self.clients,
                    By::Name => &self.names,
                    By::Profile => &self.profiles,
                    By::Day => &self.days,
                };
                let mut out: Vec<Stored> = self
                    .groups
                    .iter()
                    .map(|(&(key, layer), g)| {
                        let key = keys.texts[key as usize].clone();
                        let mut line = Stored {
                            day: String::new(),
                            client: String::new(),
                            profile: String::new(),
                            layer: self.layers.texts[layer as usize].clone(),
                            name: String::new(),
                            count: g.count,
                            first_seen: g.first,
                            last_seen: g.last,
                        };
                        match by {
                            By::Client => line.client = key,
                            By::Name => line.name = key,
                            By::Profile => line.profile = key,
                            By::Day => line.day = key,
                        }
                        line
                    })
                    .collect();
                let key = |l: &Stored| {
                    [&l.day, &l.client, &l.profile, &l.name, &l.layer].map(|s| s.clone())
                };
                out.sort_by_key(key);
                // Largest first, but days in order (a trend).
                if by != By::Day {
                    out.sort_by_key(|l| std::cmp::Reverse(l.count));
                }
                out
            }
        };
        let mut totals: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (&(profile, layer), &n) in &self.totals {
            *totals
                .entry(self.profiles.texts[profile as usize].clone())
                .or_default()
                .entry(self.layers.texts[layer as usize].clone())
                .or_default() += n;
        }
        Report {
            since: self.q.since.clone(),
            until: self.q.until.clone(),
            by: self.q.by.clone(),
            rows,
            totals,
            // Devices with any attempt, blocked or observed.
            clients: (0..self.per_client.len().max(self.observed.len()))
                .filter(|&i| {
                    self.per_client.get(i).copied().unwrap_or(0)
                        + self.observed.get(i).copied().unwrap_or(0)
                        > 0
                })
                .count(),
            per_day: self.per_day,
            top_clients: self.clients.top(&self.per_client),
            top_names: self.names.top(&self.per_name),
            observed_clients: self.clients.top(&self.observed),
            top_observed_names: self.names.top(&self.observed_names),
            last_digest,
            purges,
            breaks: Vec::new(),
            lines_left_out: self.left_out,
            changes: Vec::new(),
            context: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::{Layer, Row};
    use std::net::IpAddr;

    #[test]
    fn sealed_and_open_days_sum_alike_and_a_report_past_its_lines_says_so() {
        let dir = std::env::temp_dir().join(format!("telesink-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = Store::open(&dir.join("evidence.sqlite")).unwrap();
        let row = |day: u32, client: u8, layer, name: &str, count| Row {
            day,
            client: IpAddr::from([192, 0, 2, client]),
            profile: "office".into(),
            layer,
            name: name.into(),
            count,
            first: u64::from(day) * 86_400 + 10,
            last: u64::from(day) * 86_400 + 20,
        };
        let rows = [
            row(20_000, 1, Layer::DnsBlocked, "a.x", 3),
            row(20_000, 2, Layer::DnsObserved, "b.x", 2),
            row(20_001, 1, Layer::DnsBlocked, "a.x", 4),
            row(20_001, 1, Layer::FirewallRejected, "-", 5),
            row(20_001, 2, Layer::Bypass, "doh", 1),
        ];
        // 20_000 is sealed by the flush of 20_001; 20_001 stays open.
        store
            .flush(&rows, &|ip| ip.to_string(), 20_001, 400)
            .unwrap();
        let q = |by: Option<&str>, summary| Query {
            since: day_text(20_000),
            until: day_text(20_001),
            by: by.map(str::to_owned),
            summary,
            ..Query::default()
        };
        let all = run_capped(&store, &q(None, false), 3).unwrap();
        assert_eq!((all.rows.len(), all.lines_left_out), (3, 2));
        assert!(all.table().contains("2 more lines are not listed"));
        assert_eq!(all.totals["office"]["dns-blocked"], 7);
        assert_eq!(all.totals["office"]["firewall-rejected"], 5);
        assert_eq!(all.clients, 2);
        // Blocked attempts per day: the observed ones (2 on the first day) apart.
        assert_eq!(all.per_day.values().copied().collect::<Vec<_>>(), [3, 10]);
        assert_eq!(all.top_clients[0], ("192.0.2.1".to_owned(), 12));
        // "-" (a firewall row) and "doh" (a bypass row's kind) are no endpoints, and an
        // observed name (answered normally) is no blocked endpoint: it has its own list.
        assert_eq!(all.top_names, [("a.x".to_owned(), 7)]);
        assert_eq!(all.top_observed_names, [("b.x".to_owned(), 2)]);
        assert_eq!(all.observed_clients, [("192.0.2.2".to_owned(), 2)]);
        let by = run(&store, &q(Some("name"), false)).unwrap();
        let a: Vec<_> = by.rows.iter().filter(|l| l.name == "a.x").collect();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].count, 7);
        assert_eq!(a[0].first_seen, 20_000 * 86_400 + 10);
        assert_eq!(a[0].last_seen, 20_001 * 86_400 + 20);
        let days = run(&store, &q(Some("day"), false)).unwrap();
        assert_eq!(days.rows[0].day, day_text(20_000));
        let summary = run(&store, &q(Some("client"), true)).unwrap();
        assert!(summary.rows.is_empty());
        assert_eq!(summary.totals, all.totals);
        let one = run(
            &store,
            &Query {
                client: Some("192.0.2.2".into()),
                ..q(None, false)
            },
        )
        .unwrap();
        assert_eq!(one.rows.len(), 2);
        assert!(matches!(
            run(&store, &q(Some("week"), false)),
            Err(ReportError::By(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
