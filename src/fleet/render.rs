//! The fleet's report as text: a table for a terminal, CSV and JSON with stable
//! columns, and one self-contained HTML page with a view per site (docs/FLEET.md).

use std::fmt::Write as _;

use super::report::{FleetReport, FleetRow};
use crate::evidence::render::{COLUMNS, csv_cell, esc, line_fields, time};

/// The columns of `telesink report`, after where the line came from.
fn columns() -> Vec<&'static str> {
    let mut c = vec!["site", "gateway"];
    c.extend(COLUMNS);
    c
}

fn fields(r: &FleetRow) -> Vec<String> {
    let mut f = vec![r.site.clone(), r.gateway.clone()];
    f.extend(line_fields(&r.row));
    f
}

/// The profiles in force, in words: "tele blocks for [default]; ads blocks for []".
fn profiles_text(profiles: &[crate::evidence::report::ProfileInForce]) -> String {
    let each: Vec<String> = profiles
        .iter()
        .map(|x| {
            let observes = match x.observed_for.is_empty() {
                true => String::new(),
                false => format!(", observes for [{}]", x.observed_for.join(" ")),
            };
            format!(
                "{} blocks for [{}]{observes}",
                x.name,
                x.blocks_for.join(" ")
            )
        })
        .collect();
    each.join("; ")
}

impl FleetReport {
    pub fn title(&self) -> String {
        format!(
            "telemetry attempts blocked and observed across {} site(s), {} to {}",
            self.sites.len(),
            self.since,
            self.until
        )
    }

    /// The statement every form starts with: totals, per site, the findings.
    pub fn statement(&self) -> Vec<String> {
        let mut out = vec![
            format!(
                "fleet report {} to {} (UTC days), generated {} by telesink {} from {} records of the hub",
                self.since,
                self.until,
                time(self.generated_at),
                self.version,
                self.records
            ),
            format!(
                "blocked attempts: {} (stopped: DNS sinkhole, firewall reject, bypass stopped)",
                self.blocked
            ),
            format!(
                "observed attempts: {} (answered normally, counted as a witness; not stopped)",
                self.observed
            ),
        ];
        for s in &self.sites {
            out.push(format!(
                "site {}: gateways [{}], {} devices, {} blocked, {} observed, {} findings",
                s.site,
                s.gateways.join(", "),
                s.devices,
                s.blocked,
                s.observed,
                s.findings
            ));
        }
        for g in &self.gateways {
            out.push(format!(
                "gateway {}/{}: {} days sent ({} to {}), {} sealed days chained, {}{}",
                g.site,
                g.gateway,
                g.days_sent,
                g.first_day.as_deref().unwrap_or("-"),
                g.last_day.as_deref().unwrap_or("-"),
                g.days_verified,
                if g.verified {
                    "evidence verifies"
                } else {
                    "EVIDENCE DOES NOT VERIFY"
                },
                g.last_digest
                    .as_ref()
                    .map(|(d, h)| format!(", last digest {d} {h}"))
                    .unwrap_or_default()
            ));
        }
        for f in &self.findings {
            out.push(format!("finding {}/{}: {}", f.site, f.gateway, f.what));
        }
        for r in &self.refused {
            out.push(format!(
                "refused record {} on {}: {}",
                r.seq, r.subject, r.why
            ));
        }
        for p in &self.policy {
            out.push(format!(
                "policy at {}/{} {} to {}: {}",
                p.site,
                p.gateway,
                p.from,
                p.to,
                profiles_text(&p.profiles)
            ));
        }
        for (site, gw, c) in &self.changes {
            out.push(format!(
                "change at {site}/{gw} {} by {}: {}",
                time(c.at),
                c.who,
                c.what
            ));
        }
        for c in &self.central_changes {
            out.push(format!(
                "central policy revision {} at {} by {}: {}",
                c.revision,
                time(c.at),
                c.by,
                c.what
            ));
        }
        for (site, gw, at, client, rows) in &self.purges {
            out.push(format!(
                "purge at {site}/{gw} {}: client {client}, {rows} rows",
                time(*at)
            ));
        }
        if self.lines_left_out > 0 {
            out.push(format!(
                "{} lines left out (a report holds {}); narrow the period or sum with --by",
                self.lines_left_out,
                crate::evidence::report::MAX_LINES
            ));
        }
        out
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        for l in self.statement() {
            let _ = writeln!(out, "{l}");
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "{}", columns().join("\t"));
        for r in &self.rows {
            let _ = writeln!(out, "{}", fields(r).join("\t"));
        }
        out
    }

    pub fn csv(&self) -> String {
        let mut out = String::new();
        for l in self.statement() {
            let _ = writeln!(out, "# {}", l.replace('\n', " "));
        }
        let _ = writeln!(out, "{}", columns().join(","));
        for r in &self.rows {
            let cells: Vec<String> = fields(r).iter().map(|c| csv_cell(c)).collect();
            let _ = writeln!(out, "{}", cells.join(","));
        }
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// One page: the fleet's totals and findings, then a part per site.
    pub fn html(&self) -> String {
        let mut p = String::new();
        let _ = write!(
            p,
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>
@page{{size:A4;margin:18mm}}
body{{font-family:sans-serif;margin:2em;color:#222;max-width:60em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:.3em .6em;text-align:left;vertical-align:top}}th{{background:#eee}}
td.n{{text-align:right}}.box{{border:2px solid #a33;padding:.6em 1em;margin:1em 0}}.ok{{color:#262}}
@media print{{body{{margin:0}}section{{break-before:page}}section.first{{break-before:auto}}table{{break-inside:avoid}}}}
</style></head><body><section class=\"first\"><h1>{t}</h1>",
            t = esc(&self.title())
        );
        let _ = write!(
            p,
            "<p>Period <b>{}</b> to <b>{}</b> (UTC days, both included). Generated <b>{}</b> by telesink {} from {} records of the hub. All times are UTC.</p>",
            esc(&self.since),
            esc(&self.until),
            esc(&time(self.generated_at)),
            esc(&self.version),
            self.records
        );
        let _ = write!(
            p,
            "<table><tr><th>blocked attempts (stopped)</th><td class=\"n\" id=\"blocked\">{}</td></tr><tr><th>observed attempts (answered normally, not stopped)</th><td class=\"n\" id=\"observed\">{}</td></tr></table>",
            self.blocked, self.observed
        );
        let problems: Vec<&super::verify::Finding> = self.findings.iter().collect();
        if problems.is_empty() && self.refused.is_empty() {
            p.push_str("<p class=\"ok\" id=\"verdict\">Every gateway's evidence verifies, and every gateway sent every day of the period.</p>");
        } else {
            p.push_str(
                "<div class=\"box\" id=\"findings\"><h2>What the evidence does not show</h2><ul>",
            );
            for f in problems {
                let _ = write!(
                    p,
                    "<li><b>{}/{}</b>: {}</li>",
                    esc(&f.site),
                    esc(&f.gateway),
                    esc(&f.what)
                );
            }
            for r in &self.refused {
                let _ = write!(
                    p,
                    "<li>record {} on {} refused: {}</li>",
                    r.seq,
                    esc(&r.subject),
                    esc(&r.why)
                );
            }
            p.push_str("</ul></div>");
        }
        p.push_str("<h2>Sites</h2><table><tr><th>site</th><th>gateways</th><th>devices</th><th>blocked</th><th>observed</th><th>findings</th></tr>");
        for s in &self.sites {
            let _ = write!(
                p,
                "<tr><td><a href=\"#site-{id}\">{n}</a></td><td>{g}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                s.devices,
                s.blocked,
                s.observed,
                s.findings,
                id = esc(&s.site),
                n = esc(&s.site),
                g = esc(&s.gateways.join(", "))
            );
        }
        p.push_str("</table><h2>Gateways and their evidence</h2><table><tr><th>site/gateway</th><th>days sent</th><th>sealed days chained</th><th>last digest</th><th>verified</th></tr>");
        for g in &self.gateways {
            let _ = write!(
                p,
                "<tr><td>{}/{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&g.site),
                esc(&g.gateway),
                g.days_sent,
                g.days_verified,
                esc(&g
                    .last_digest
                    .as_ref()
                    .map(|(d, h)| format!("{d} {h}"))
                    .unwrap_or_default()),
                if g.verified { "yes" } else { "<b>NO</b>" }
            );
        }
        p.push_str("</table>");
        if !self.central_changes.is_empty() {
            p.push_str("<h2>Central policy changes</h2><table><tr><th>revision</th><th>when</th><th>who</th><th>what</th></tr>");
            for c in &self.central_changes {
                let _ = write!(
                    p,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    c.revision,
                    esc(&time(c.at)),
                    esc(&c.by),
                    esc(&c.what)
                );
            }
            p.push_str("</table>");
        }
        p.push_str("</section>");
        for s in &self.sites {
            let _ = write!(
                p,
                "<section id=\"site-{}\"><h2>Site {}</h2>",
                esc(&s.site),
                esc(&s.site)
            );
            let _ = write!(
                p,
                "<p>{} blocked and {} observed attempts by {} devices through gateways {}.</p>",
                s.blocked,
                s.observed,
                s.devices,
                esc(&s.gateways.join(", "))
            );
            p.push_str("<table><tr><th>profile</th><th>blocked</th><th>observed</th></tr>");
            for (name, (b, o)) in &s.profiles {
                let _ = write!(
                    p,
                    "<tr><td>{}</td><td class=\"n\">{b}</td><td class=\"n\">{o}</td></tr>",
                    esc(name)
                );
            }
            p.push_str("</table><h3>Devices with the most blocked attempts</h3><table><tr><th>device</th><th>blocked</th></tr>");
            for (d, n) in &s.top_devices {
                let _ = write!(p, "<tr><td>{}</td><td class=\"n\">{n}</td></tr>", esc(d));
            }
            p.push_str("</table><h3>Policy in force</h3><table><tr><th>gateway</th><th>days</th><th>profiles</th></tr>");
            for run in self.policy.iter().filter(|r| r.site == s.site) {
                let _ = write!(
                    p,
                    "<tr><td>{}</td><td>{} to {}</td><td>{}</td></tr>",
                    esc(&run.gateway),
                    esc(&run.from),
                    esc(&run.to),
                    esc(&profiles_text(&run.profiles))
                );
            }
            p.push_str("</table>");
            let site_findings: Vec<&super::verify::Finding> =
                self.findings.iter().filter(|f| f.site == s.site).collect();
            if !site_findings.is_empty() {
                p.push_str("<h3>Findings</h3><ul>");
                for f in site_findings {
                    let _ = write!(p, "<li>{}: {}</li>", esc(&f.gateway), esc(&f.what));
                }
                p.push_str("</ul>");
            }
            p.push_str("</section>");
        }
        p.push_str("</body></html>\n");
        p
    }
}
