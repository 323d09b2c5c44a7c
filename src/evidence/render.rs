//! A report as text: the table for a terminal, CSV and JSON with stable columns
//! (docs/EVIDENCE.md), and one self-contained HTML page for a data-protection officer
//! (inline style and SVG, no external assets: it opens on an offline machine).

use std::fmt::Write as _;

use super::report::{MAX_LINES, Report};
use super::store::Stored;

/// The forms a report is written in (`telesink report`, `telesink fleet report`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Table,
    Csv,
    Json,
    Html,
}

impl ReportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportFormat::Table => "table",
            ReportFormat::Csv => "csv",
            ReportFormat::Json => "json",
            ReportFormat::Html => "html",
        }
    }
}

pub(crate) fn time(unix: u64) -> String {
    let secs = unix % 86_400;
    format!(
        "{} {:02}:{:02}:{:02}",
        crate::clock::utc_date(unix),
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The layers as the page's legend explains them.
const LEGEND: [(&str, &str, &str); 4] = [
    (
        "dns-blocked",
        "the DNS query was answered with a sinkhole: the device could not look the endpoint up",
        "yes",
    ),
    (
        "firewall-rejected",
        "packets to an address range or a learned address of a blocked name were rejected by the gateway's firewall",
        "yes",
    ),
    (
        "bypass",
        "DNS sent around the gateway (plain DNS, DNS over TLS or HTTPS to a public resolver) was rejected",
        "yes",
    ),
    (
        "dns-observed",
        "the query was answered normally: the profile is only observed, so the attempt is counted as a witness, not stopped",
        "no",
    ),
];

/// Columns of the table and CSV, in order (docs/EVIDENCE.md).
pub const COLUMNS: [&str; 8] = [
    "day",
    "client",
    "profile",
    "layer",
    "name",
    "count",
    "first_seen",
    "last_seen",
];

/// A line's cells, in the order of `COLUMNS` (the fleet's report adds its own two).
pub fn line_fields(l: &Stored) -> [String; 8] {
    [
        l.day.clone(),
        l.client.clone(),
        l.profile.clone(),
        l.layer.clone(),
        l.name.clone(),
        l.count.to_string(),
        time(l.first_seen),
        time(l.last_seen),
    ]
}

impl Report {
    pub fn table(&self) -> String {
        let (blocked, observed) = self.blocked_and_observed();
        let mut out = format!(
            "{} to {} (UTC days): {blocked} attempts blocked, {observed} observed (answered normally, not blocked), by {} devices\n",
            self.since, self.until, self.clients
        );
        let rows: Vec<[String; 8]> = self.rows.iter().map(line_fields).collect();
        let widths: Vec<usize> = (0..8)
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].len())
                    .chain([COLUMNS[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut emit = |cells: &[&str]| {
            let mut line = String::new();
            for (i, c) in cells.iter().enumerate() {
                let _ = write!(line, "{:<w$}  ", c, w = widths[i]);
            }
            out += line.trim_end();
            out += "\n";
        };
        emit(
            &COLUMNS
                .map(str::to_uppercase)
                .each_ref()
                .map(String::as_str),
        );
        for r in &rows {
            emit(&r.each_ref().map(String::as_str));
        }
        if self.lines_left_out > 0 {
            out += &self.left_out_note();
            out += "\n";
        }
        if let Some((day, digest)) = &self.last_digest {
            out += &format!("last closed day {day}, digest {digest}\n");
        }
        for (at, client, n) in &self.purges {
            out += &format!("purge at {}: client {client}, {n} rows erased\n", time(*at));
        }
        for b in &self.breaks {
            out += &format!("ledger break at {b}\n");
        }
        out
    }

    /// What a report past `MAX_LINES` says of itself.
    pub fn left_out_note(&self) -> String {
        format!(
            "{} more lines are not listed (a report holds at most {MAX_LINES}; the totals count them): narrow --since/--until or --client, or sum with --by",
            self.lines_left_out
        )
    }

    /// What the page says besides the counts, as `key: value` lines: the CSV's header
    /// (each behind `# `), so a spreadsheet copy carries the same statement.
    pub fn metadata(&self) -> Vec<String> {
        let (blocked, observed) = self.blocked_and_observed();
        let mut out = vec![self.title()];
        if let Some(c) = &self.context {
            out.push(format!("gateway: {}", c.gateway));
            out.push(format!(
                "generated: {}",
                crate::clock::utc_time(c.generated_at)
            ));
            out.push(format!("telesink: {}", c.version));
            out.push(format!("source: {}", c.source));
        }
        out.push(format!(
            "period: {} to {} (UTC days, both included)",
            self.since, self.until
        ));
        out.push(format!(
            "blocked attempts: {blocked} (layers dns-blocked, firewall-rejected, bypass)"
        ));
        out.push(format!(
            "observed attempts: {observed} (layer dns-observed: answered normally, NOT blocked)"
        ));
        for p in self.context.iter().flat_map(|c| &c.profiles) {
            out.push(format!(
                "profile {}: blocks for [{}], observes for [{}], off for [{}]{}",
                p.name,
                p.blocks_for.join(", "),
                p.observed_for.join(", "),
                p.off_for.join(", "),
                p.warning
                    .as_ref()
                    .filter(|_| !p.observed_for.is_empty() || !p.off_for.is_empty())
                    .map(|w| format!("; not blocked where off or observed; blocking it would: {w}"))
                    .unwrap_or_default()
            ));
        }
        for c in &self.changes {
            out.push(format!(
                "change at {} by {}: {}",
                crate::clock::utc_time(c.at),
                c.who,
                c.what
            ));
        }
        for (at, client, n) in &self.purges {
            out.push(format!(
                "purge at {} UTC: client {client}, {n} rows",
                time(*at)
            ));
        }
        for b in &self.breaks {
            out.push(format!("ledger break at {b}"));
        }
        match &self.last_digest {
            Some((day, digest)) => out.push(format!(
                "last closed day {day}, digest {digest} (check: telesink report verify)"
            )),
            None => out.push("no closed day in the period yet".to_owned()),
        }
        out
    }

    pub fn csv(&self) -> String {
        let mut out = String::new();
        for line in self.metadata() {
            // One line each: a value cannot start a CSV row of its own.
            out += &format!("# {}\n", line.replace(['\n', '\r'], " "));
        }
        out += &(COLUMNS.join(",") + "\n");
        for l in &self.rows {
            let cells: Vec<String> = line_fields(l).iter().map(|c| csv_cell(c)).collect();
            out += &cells.join(",");
            out += "\n";
        }
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The report's title: what it counts, and where.
    pub fn title(&self) -> String {
        let gateway = self.context.as_ref().map_or("the gateway".to_owned(), |c| {
            format!("gateway {}", c.gateway)
        });
        format!("telesink evidence report: telemetry attempts blocked and observed at {gateway}")
    }

    /// One self-contained page for a data-protection officer: it states only what is
    /// true (blocked and observed apart, what is not blocked said), with everything
    /// needed to check it, and prints on A4 with a page break before each part.
    pub fn html(&self) -> String {
        let (blocked, observed) = self.blocked_and_observed();
        let title = self.title();
        let mut page = String::new();
        let _ = write!(
            page,
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>
@page{{size:A4;margin:18mm}}
body{{font-family:sans-serif;margin:2em;color:#222;max-width:60em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:.3em .6em;text-align:left;vertical-align:top}}th{{background:#eee}}
td.n{{text-align:right}}h2{{margin-top:1.6em}}.small{{color:#555;font-size:.9em}}
.totals td{{font-size:1.2em}}.box{{border:2px solid #a33;padding:.6em 1em;margin:1em 0}}
@media print{{body{{margin:0}}section{{break-before:page}}section.first{{break-before:auto}}table,svg{{break-inside:avoid}}}}
</style></head><body><section class=\"first\"><h1>{t}</h1>",
            t = esc(&title)
        );
        match &self.context {
            Some(c) => {
                let _ = write!(
                    page,
                    "<p>Gateway <b>{}</b>. Period <b>{}</b> to <b>{}</b> (UTC days, both included). Generated <b>{}</b> by telesink {} from {}. All times are UTC.</p>",
                    esc(&c.gateway),
                    esc(&self.since),
                    esc(&self.until),
                    esc(&crate::clock::utc_time(c.generated_at)),
                    esc(&c.version),
                    esc(&c.source)
                );
            }
            None => {
                let _ = write!(
                    page,
                    "<p>Period <b>{}</b> to <b>{}</b> (UTC days, both included). All times are UTC.</p>",
                    esc(&self.since),
                    esc(&self.until)
                );
            }
        }
        let _ = write!(
            page,
            "<table class=\"totals\"><tr><th>Blocked attempts (DNS sinkholed, firewall rejected, DNS bypass rejected)</th><td class=\"n\"><b>{blocked}</b></td></tr><tr><th>Observed attempts (answered normally, NOT blocked: counted as a witness)</th><td class=\"n\"><b>{observed}</b></td></tr><tr><th>Devices with any attempt</th><td class=\"n\">{}</td></tr></table>",
            self.clients
        );
        page += "<h2>What the layers mean</h2><table><tr><th>layer</th><th>meaning</th><th>stopped?</th></tr>";
        for (layer, meaning, stopped) in LEGEND {
            let _ = write!(
                page,
                "<tr><td>{layer}</td><td>{meaning}</td><td>{stopped}</td></tr>"
            );
        }
        page += "</table>";
        page += "<h2>Totals per profile and layer</h2><table><tr><th>profile</th><th>layer</th><th>attempts</th><th>stopped?</th></tr>";
        for (profile, layers) in &self.totals {
            for (layer, n) in layers {
                let stopped = if super::report::BLOCKED_LAYERS.contains(&layer.as_str()) {
                    "yes"
                } else {
                    "no (observed)"
                };
                let _ = write!(
                    page,
                    "<tr><td>{}</td><td>{}</td><td class=\"n\">{n}</td><td>{stopped}</td></tr>",
                    esc(profile),
                    esc(layer)
                );
            }
        }
        page += "</table></section>";
        page += &self.policy_html();
        page += "<section><h2>Devices and endpoints</h2>";
        for (title, what, items) in [
            (
                "Devices with the most blocked attempts",
                "device",
                &self.top_clients,
            ),
            (
                "Endpoints with the most blocked attempts",
                "endpoint",
                &self.top_names,
            ),
            (
                "Devices that still reach observed endpoints (answered normally; their Office or Windows policy is evidently not applied)",
                "device",
                &self.observed_clients,
            ),
            (
                "Observed endpoints (answered normally, not blocked)",
                "endpoint",
                &self.top_observed_names,
            ),
        ] {
            let _ = write!(page, "<h3>{}</h3>", esc(title));
            if items.is_empty() {
                page += "<p class=\"small\">none</p>";
                continue;
            }
            let _ = write!(page, "<table><tr><th>{what}</th><th>attempts</th></tr>");
            for (k, n) in items.iter() {
                let _ = write!(page, "<tr><td>{}</td><td class=\"n\">{n}</td></tr>", esc(k));
            }
            page += "</table>";
        }
        page += "<h3>Blocked attempts per day</h3>";
        page += &self.trend_svg();
        page += "</section>";
        page += &self.integrity_html();
        page += "</body></html>\n";
        page
    }

    /// The profiles in force, the changes in the period, and what is not blocked.
    fn policy_html(&self) -> String {
        let mut page = String::from("<section><h2>The policy</h2>");
        match &self.context {
            Some(c) => {
                let _ = write!(
                    page,
                    "<h3>Profiles in force at {}</h3><table><tr><th>profile</th><th>what it covers</th><th>blocks for</th><th>observes for</th><th>off for</th></tr>",
                    esc(&crate::clock::utc_time(c.generated_at))
                );
                for p in &c.profiles {
                    let _ = write!(
                        page,
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&p.name),
                        esc(&p.description),
                        esc(&p.blocks_for.join(", ")),
                        esc(&p.observed_for.join(", ")),
                        esc(&p.off_for.join(", "))
                    );
                }
                page += "</table>";
            }
            None => {
                page += "<p class=\"small\">The profiles in force were not known when this report was made.</p>"
            }
        }
        page += "<h3>Changes of the policy in the period</h3>";
        if self.changes.is_empty() {
            page += "<p class=\"small\">No change recorded in the period.</p>";
        } else {
            page += "<table><tr><th>when (UTC)</th><th>who</th><th>what</th></tr>";
            for c in &self.changes {
                let _ = write!(
                    page,
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&crate::clock::utc_time(c.at)),
                    esc(&c.who),
                    esc(&c.what)
                );
            }
            page += "</table>";
        }
        page += "<div class=\"box\"><h3>What telesink does not block</h3><ul>";
        page += "<li>Observed attempts above were answered normally: they are counted, not stopped.</li>";
        page += "<li>Endpoints in no list of a profile that is on, and devices that do not use this gateway.</li>";
        for p in self.context.iter().flat_map(|c| &c.profiles) {
            if p.observed_for.is_empty() && p.off_for.is_empty() {
                continue;
            }
            let mut not = Vec::new();
            if !p.observed_for.is_empty() {
                not.push(format!("only observed for {}", p.observed_for.join(", ")));
            }
            if !p.off_for.is_empty() {
                not.push(format!("off for {}", p.off_for.join(", ")));
            }
            let what = [
                Some(p.description.as_str())
                    .filter(|d| !d.is_empty())
                    .map(esc),
                p.warning
                    .as_ref()
                    .map(|w| format!("blocking it would: {}", esc(w))),
            ];
            let what: Vec<String> = what.into_iter().flatten().collect();
            let _ = write!(
                page,
                "<li><b>{}</b> ({}){}{}</li>",
                esc(&p.name),
                esc(&not.join("; ")),
                if what.is_empty() { "" } else { ": " },
                what.join(". ")
            );
        }
        page += "</ul></div></section>";
        page
    }

    /// The digest, how to verify it, the purges and the breaks.
    fn integrity_html(&self) -> String {
        let mut page = String::from("<section><h2>Integrity of this evidence</h2>");
        match &self.last_digest {
            Some((day, digest)) => {
                let _ = write!(
                    page,
                    "<p>Last closed day in the period: {}, digest <code>{}</code>.</p>",
                    esc(day),
                    esc(digest)
                );
            }
            None => {
                page += "<p>No closed day in the period yet: today's counts are sealed into the digest chain after midnight UTC.</p>"
            }
        }
        page += "<p>Each closed day's digest covers the day before it, so a changed count breaks the chain from that day on. Check it on the gateway with <code>telesink report verify</code>, or on a copy of the ledger file with <code>telesink report verify --ledger FILE</code>; both also name every time the ledger had to be started anew.</p>";
        if self.purges.is_empty() {
            page += "<p class=\"small\">No erasure (purge) recorded.</p>";
        }
        for (at, client, n) in &self.purges {
            let _ = write!(
                page,
                "<p>Erasure (GDPR purge) at {} UTC: client {}, {n} rows.</p>",
                time(*at),
                esc(client)
            );
        }
        for b in &self.breaks {
            let _ = write!(
                page,
                "<p><strong>Ledger break</strong> at {}</p>",
                esc(&b.to_string())
            );
        }
        page += "</section>";
        page
    }

    /// Attempts per day as inline SVG bars.
    fn trend_svg(&self) -> String {
        let days = &self.per_day;
        if days.is_empty() {
            return "<p class=\"small\">No attempts in the period.</p>".to_owned();
        }
        let max = days.values().copied().max().unwrap_or(1).max(1);
        let (w, h, bar) = (40 * days.len().max(1) + 60, 180, 30);
        let mut svg = format!(
            "<svg width=\"{w}\" height=\"{}\" role=\"img\" aria-label=\"attempts per day\">",
            h + 40
        );
        for (i, (day, n)) in days.iter().enumerate() {
            let bh = (*n as f64 / max as f64 * h as f64).round() as usize;
            let x = 40 + i * 40;
            let _ = write!(
                svg,
                "<rect x=\"{x}\" y=\"{}\" width=\"{bar}\" height=\"{bh}\" fill=\"#3a6ea5\"><title>{} {n}</title></rect><text x=\"{x}\" y=\"{}\" font-size=\"9\">{}</text><text x=\"{x}\" y=\"{}\" font-size=\"9\">{n}</text>",
                h - bh + 10,
                esc(day),
                h + 25,
                esc(day.get(5..).unwrap_or(day)),
                (h - bh + 8).max(10),
            );
        }
        svg + "</svg>"
    }
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One CSV cell. A cell a spreadsheet would take for a formula (`=`, `+`, `-`, `@`, tab
/// or CR first: a client label or name comes from the network) gets a leading `'`, so it
/// is shown as text and never run (OWASP, "CSV injection").
pub(crate) fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r', '\'']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[cfg(test)]
mod csv_tests {
    #[test]
    fn formulas_are_written_as_text() {
        assert_eq!(
            super::csv_cell("=HYPERLINK(\"x\")"),
            "\"'=HYPERLINK(\"\"x\"\")\""
        );
        assert_eq!(super::csv_cell("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(super::csv_cell("+1"), "\"'+1\"");
        assert_eq!(super::csv_cell("-2"), "\"'-2\"");
        assert_eq!(super::csv_cell("a,b"), "\"a,b\"");
        assert_eq!(super::csv_cell("plain.example"), "plain.example");
    }
}
