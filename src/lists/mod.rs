//! Block and allow lists: reading files line by line, and the guard against suffix rules
//! on shared infrastructure zones.

mod guard;
mod parse;

use std::path::Path;

pub use guard::{Guard, ZoneSet};
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
/// A line that is not UTF-8 is one such problem, not a reason to refuse the whole file.
pub fn read_list(
    path: &Path,
    problems: &mut Vec<ListProblem>,
    mut sink: impl FnMut(Entry<'_>, u32),
) -> Result<(), std::io::Error> {
    use std::io::Read;
    // Read in chunks through one reused buffer: reading a 30 MiB list whole cost more
    // in fresh-page faults than parsing it.
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 18];
    let (mut filled, mut line_no, mut eof) = (0usize, 0u32, false);
    loop {
        if filled == buf.len() {
            // A line longer than the buffer: only garbage is, but read it to report it.
            buf.resize(buf.len() * 2, 0);
        }
        let n = file.read(&mut buf[filled..])?;
        eof = eof || n == 0;
        filled += n;
        let complete = if eof {
            filled
        } else {
            buf[..filled]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1)
        };
        parse_lines(&buf[..complete], path, &mut line_no, problems, &mut sink);
        buf.copy_within(complete..filled, 0);
        filled -= complete;
        if eof {
            return Ok(());
        }
    }
}

/// Parses whole lines; `line_no` carries the count from one chunk to the next.
fn parse_lines(
    chunk: &[u8],
    path: &Path,
    line_no: &mut u32,
    problems: &mut Vec<ListProblem>,
    sink: &mut impl FnMut(Entry<'_>, u32),
) {
    // One UTF-8 check for the whole chunk, not one per line; a chunk with a bad byte
    // somewhere is taken line by line so that only that line is refused.
    if let Ok(text) = std::str::from_utf8(chunk) {
        for_each_line(text, line_no, problems, path, sink);
        return;
    }
    for line in chunk.split_inclusive(|&b| b == b'\n') {
        match std::str::from_utf8(line) {
            Ok(text) => for_each_line(text, line_no, problems, path, sink),
            Err(_) => {
                *line_no += 1;
                problems.push(ListProblem {
                    at: Location {
                        path: path.to_owned(),
                        line: *line_no as usize,
                    },
                    message: "not valid UTF-8".into(),
                });
            }
        }
    }
}

fn for_each_line<'a>(
    mut rest: &'a str,
    line_no: &mut u32,
    problems: &mut Vec<ListProblem>,
    path: &Path,
    sink: &mut impl FnMut(Entry<'a>, u32),
) {
    let mut entries = Vec::new();
    while !rest.is_empty() {
        *line_no += 1;
        // Plain names take the one-pass path; everything else the general parser.
        if let Some((entry, len)) = parse::plain_entry(rest) {
            sink(entry, *line_no);
            rest = rest.get(len + 1..).unwrap_or_default();
            continue;
        }
        let (line, next) = rest.split_once('\n').unwrap_or((rest, ""));
        rest = next;
        entries.clear();
        match parse_line(line, &mut entries) {
            Ok(()) => entries.drain(..).for_each(|e| sink(e, *line_no)),
            Err(e) => problems.push(ListProblem {
                at: Location {
                    path: path.to_owned(),
                    line: *line_no as usize,
                },
                message: e.to_string(),
            }),
        }
    }
}

/// Reads an address list: one CIDR or single address per line, `#` comments. `sink` gets
/// each range with its 1-based line number.
pub fn read_cidrs(
    path: &Path,
    problems: &mut Vec<ListProblem>,
    mut sink: impl FnMut(ipnet::IpNet, usize),
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
            Ok(net) => sink(net.trunc(), i + 1),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines cross the 256 KiB read boundaries, one line is longer than the buffer, one
    /// is not UTF-8, some end in CRLF and the last has no newline: every entry and every
    /// problem must still carry its own line number.
    #[test]
    fn chunked_reading_keeps_line_numbers() {
        let dir = std::env::temp_dir().join(format!("telesink-lists-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chunks.list");
        let mut text = Vec::new();
        let mut expected = Vec::new();
        let (long_at, bad_utf8_at) = (20_000u32, 30_000u32);
        for line in 1..=40_000u32 {
            match line {
                l if l == long_at => text.extend(vec![b'x'; 600_000]),
                l if l == bad_utf8_at => text.extend(b"caf\xe9.example"),
                l if l % 7 == 0 => {
                    text.extend(format!("  Name{l}.Example # upper case and a comment").bytes());
                    expected.push((format!("name{l}.example"), l));
                }
                l if l % 13 == 0 => {
                    text.extend(format!("crlf{l}.example\r").bytes());
                    expected.push((format!("crlf{l}.example"), l));
                }
                l => {
                    text.extend(format!("*.n{l}.example").bytes());
                    expected.push((format!("n{l}.example"), l));
                }
            }
            if line < 40_000 {
                text.push(b'\n');
            }
        }
        std::fs::write(&path, &text).unwrap();
        let (mut problems, mut got) = (Vec::new(), Vec::new());
        read_list(&path, &mut problems, |e, line| {
            got.push((e.name.into_owned(), line))
        })
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(got.len(), expected.len());
        assert_eq!(got, expected);
        let lines: Vec<usize> = problems.iter().map(|p| p.at.line).collect();
        assert_eq!(lines, [long_at as usize, bad_utf8_at as usize]);
        assert!(
            problems[1].message.contains("UTF-8"),
            "{}",
            problems[1].message
        );
    }
}
