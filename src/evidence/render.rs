//! A report as text: the table for a terminal, CSV and JSON with stable columns
//! (docs/EVIDENCE.md), and one self-contained HTML page for a data-protection officer
//! (inline style and SVG, no external assets: it opens on an offline machine).

use std::fmt::Write as _;

use super::report::{MAX_LINES, Report};
use super::store::Stored;

fn time(unix: u64) -> String {
    let secs = unix % 86_400;
    format!(
        "{} {:02}:{:02}:{:02}",
        crate::clock::utc_date(unix),
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

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

fn fields(l: &Stored) -> [String; 8] {
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
        let mut out = format!(
            "{} to {}: {} attempts by {} clients\n",
            self.since,
            self.until,
            self.totals.values().flat_map(|l| l.values()).sum::<u64>(),
            self.clients
        );
        let rows: Vec<[String; 8]> = self.rows.iter().map(fields).collect();
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

    pub fn csv(&self) -> String {
        let mut out = COLUMNS.join(",") + "\n";
        for l in &self.rows {
            let cells: Vec<String> = fields(l).iter().map(|c| csv_cell(c)).collect();
            out += &cells.join(",");
            out += "\n";
        }
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// One self-contained page for a data-protection officer.
    pub fn html(&self, title: &str) -> String {
        let total: u64 = self.totals.values().flat_map(|l| l.values()).sum();
        let mut page = String::new();
        let _ = write!(
            page,
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>
body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:.3em .6em;text-align:left}}th{{background:#eee}}
td.n{{text-align:right}}h2{{margin-top:1.6em}}.small{{color:#555;font-size:.9em}}
</style></head><body><h1>{t}</h1><p>Period {s} to {u}: <b>{total}</b> attempts by <b>{c}</b> devices.</p>",
            t = esc(title),
            s = esc(&self.since),
            u = esc(&self.until),
            c = self.clients
        );
        page += "<h2>Totals per profile and layer</h2><table><tr><th>profile</th><th>layer</th><th>attempts</th></tr>";
        for (profile, layers) in &self.totals {
            for (layer, n) in layers {
                let _ = write!(
                    page,
                    "<tr><td>{}</td><td>{}</td><td class=\"n\">{n}</td></tr>",
                    esc(profile),
                    esc(layer)
                );
            }
        }
        page += "</table>";
        for (title, what, items) in [
            ("Top devices", "device", &self.top_clients),
            ("Top endpoints", "endpoint", &self.top_names),
            (
                "Devices that still reach observed endpoints (their policy is not applied)",
                "device",
                &self.observed_clients,
            ),
        ] {
            let _ = write!(page, "<h2>{}</h2>", esc(title));
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
        page += "<h2>Per day</h2>";
        page += &self.trend_svg();
        match &self.last_digest {
            Some((day, digest)) => {
                let _ = write!(
                    page,
                    "<p class=\"small\">Last closed day in the period: {}, digest <code>{}</code> (check with <code>telesink report verify</code>).</p>",
                    esc(day),
                    esc(digest)
                );
            }
            None => page += "<p class=\"small\">No closed day in the period yet.</p>",
        }
        for (at, client, n) in &self.purges {
            let _ = write!(
                page,
                "<p class=\"small\">Erasure at {}: client {}, {n} rows.</p>",
                time(*at),
                esc(client)
            );
        }
        for b in &self.breaks {
            let _ = write!(
                page,
                "<p class=\"small\"><strong>Ledger break</strong> at {}</p>",
                esc(&b.to_string())
            );
        }
        page += "</body></html>\n";
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

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One CSV cell. A cell a spreadsheet would take for a formula (`=`, `+`, `-`, `@`, tab
/// or CR first: a client label or name comes from the network) gets a leading `'`, so it
/// is shown as text and never run (OWASP, "CSV injection").
fn csv_cell(s: &str) -> String {
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
