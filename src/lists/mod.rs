//! Block and allow lists: reading files line by line, and the guard against suffix rules
//! on shared infrastructure zones.

mod guard;
mod parse;

use std::path::Path;

pub use guard::Guard;
pub use parse::{Entry, LineError, Reach, normalize, parse_line};

use crate::config::Location;

/// A problem found in a list file, with the line it is on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{at}: {message}")]
pub struct ListProblem {
    pub at: Location,
    pub message: String,
}

/// Reads a list file and hands every valid entry with its 1-based line number to `sink`.
/// Invalid lines are collected, not fatal: the caller decides (check fails, run skips).
pub fn read_list(
    path: &Path,
    problems: &mut Vec<ListProblem>,
    mut sink: impl FnMut(Entry<'_>, u32),
) -> Result<(), std::io::Error> {
    let text = std::fs::read_to_string(path)?;
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i as u32 + 1;
        entries.clear();
        match parse_line(line, &mut entries) {
            Ok(()) => entries.drain(..).for_each(|e| sink(e, line_no)),
            Err(e) => problems.push(ListProblem {
                at: Location {
                    path: path.to_owned(),
                    line: line_no as usize,
                },
                message: e.to_string(),
            }),
        }
    }
    Ok(())
}

/// Reads an address list: one CIDR or single address per line, `#` comments.
pub fn read_cidrs(
    path: &Path,
    problems: &mut Vec<ListProblem>,
    mut sink: impl FnMut(ipnet::IpNet),
) -> Result<(), std::io::Error> {
    let text = std::fs::read_to_string(path)?;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let parsed = line
            .parse::<ipnet::IpNet>()
            .or_else(|_| line.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => sink(net.trunc()),
            Err(_) => problems.push(ListProblem {
                at: Location {
                    path: path.to_owned(),
                    line: i + 1,
                },
                message: format!("not an address or CIDR: {line:?}"),
            }),
        }
    }
    Ok(())
}
