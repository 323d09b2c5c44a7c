//! Parsing of one blocklist or allowlist line.
//!
//! Accepted forms (documented in docs/LISTS.md):
//! - `name`            exact match
//! - `*.name`          the name and every subdomain, on a label boundary
//! - `||name^`         adblock syntax, same as `*.name`
//! - `@@||name^`       adblock exception: an allow rule (same reach as `*.name`)
//! - `0.0.0.0 a b c`   hosts lines (any IPv4/IPv6 address first); each name exact
//! - `#` and `!` start comments, also after an entry.

use std::borrow::Cow;

/// How far a rule reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reach {
    /// Only the name itself.
    Exact,
    /// The name and every name below it.
    Suffix,
}

/// One entry from a list line, before it is placed in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Lowercase, no trailing dot. Borrowed from the line unless it had to be lowercased:
    /// a million-line list then costs no allocation per line.
    pub name: Cow<'a, str>,
    pub reach: Reach,
    /// `@@` exceptions turn a line in a block list into an allow rule.
    pub allow: bool,
}

/// Why a line was rejected. The caller adds file:line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("invalid domain name {name:?}: {why}")]
    BadName { name: String, why: &'static str },
    #[error("unsupported adblock rule {0:?} (only ||name^ and @@||name^ are understood)")]
    Adblock(String),
    #[error("hosts line without a name")]
    HostsWithoutName,
}

/// Parses one line into zero or more entries (hosts lines may carry several names).
pub fn parse_line<'a>(raw: &'a str, out: &mut Vec<Entry<'a>>) -> Result<(), LineError> {
    let line = strip_comment(raw).trim();
    if line.is_empty() {
        return Ok(());
    }
    if let Some(rest) = line.strip_prefix("@@") {
        let name = adblock_name(rest).ok_or_else(|| LineError::Adblock(line.to_owned()))?;
        out.push(entry(name, Reach::Suffix, true)?);
        return Ok(());
    }
    if line.starts_with("||") {
        let name = adblock_name(line).ok_or_else(|| LineError::Adblock(line.to_owned()))?;
        out.push(entry(name, Reach::Suffix, false)?);
        return Ok(());
    }
    let mut words = line.split_ascii_whitespace();
    let Some(first) = words.next() else {
        return Ok(());
    };
    if is_address(first) {
        let before = out.len();
        for name in words {
            // Hosts files commonly carry these for the local machine itself.
            if matches!(
                name,
                "localhost" | "localhost.localdomain" | "local" | "broadcasthost"
            ) || name.starts_with("ip6-")
            {
                continue;
            }
            out.push(entry(name, Reach::Exact, false)?);
        }
        if out.len() == before && line.split_ascii_whitespace().count() == 1 {
            return Err(LineError::HostsWithoutName);
        }
        return Ok(());
    }
    if let Some(extra) = words.next() {
        return Err(LineError::BadName {
            name: format!("{first} {extra}"),
            why: "more than one word on a line that is not a hosts line",
        });
    }
    match first.strip_prefix("*.") {
        Some(name) => out.push(entry(name, Reach::Suffix, false)?),
        None => out.push(entry(first, Reach::Exact, false)?),
    }
    Ok(())
}

/// Byte classes for `plain_entry`: what a lowercase list name is made of.
const OTHER: u8 = 0;
const NAME: u8 = 1;
const HYPHEN: u8 = 2;
const DOT: u8 = 3;
const NEWLINE: u8 = 4;

static CLASS: [u8; 256] = {
    let mut t = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = match c {
            b'a'..=b'z' | b'0'..=b'9' | b'_' => NAME,
            b'-' => HYPHEN,
            b'.' => DOT,
            b'\n' => NEWLINE,
            _ => OTHER,
        };
        b += 1;
    }
    t
};

/// The line almost every line of a big list is: a lowercase name, or `*.` and one, alone
/// on its line. Checked in a single pass over the bytes that also finds the line's end,
/// because at a million lines the general path (line splitting, trimming, comment search,
/// word splitting, then validation) was most of a reload.
///
/// Returns the entry and the length of the line without its newline, or `None` when the
/// line needs `parse_line`: anything else, including every line the general path would
/// refuse, so both paths accept and reject exactly the same lines.
pub fn plain_entry(text: &str) -> Option<(Entry<'_>, usize)> {
    let (reach, start) = match text.as_bytes() {
        [b'*', b'.', ..] => (Reach::Suffix, 2),
        _ => (Reach::Exact, 0),
    };
    let mut label_start = start;
    let mut i = start;
    let text_bytes = text.as_bytes();
    loop {
        // Letters and digits are nearly every byte: a tight loop over them, and the
        // checks only where a label or the line ends.
        while i < text_bytes.len() && CLASS[text_bytes[i] as usize] == NAME {
            i += 1;
        }
        let class = text_bytes.get(i).map_or(NEWLINE, |&b| CLASS[b as usize]);
        match class {
            HYPHEN if i == label_start => return None,
            HYPHEN => i += 1,
            DOT | NEWLINE => {
                let label = i - label_start;
                if label == 0 || label > 63 || text_bytes[i - 1] == b'-' {
                    return None;
                }
                if class == NEWLINE {
                    break;
                }
                i += 1;
                label_start = i;
            }
            _ => return None,
        }
    }
    let name = text.get(start..i)?;
    if name.len() > 253 {
        return None;
    }
    let entry = Entry {
        name: Cow::Borrowed(name),
        reach,
        allow: false,
    };
    Some((entry, i))
}

/// Whether a hosts line's first word is an address. Names never contain ':' and never
/// start like an IPv4 address parses, so only plausible words are parsed at all: a
/// million-name list then pays for no address parsing (it was 6% of a reload).
fn is_address(word: &str) -> bool {
    if word.contains(':') {
        word.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        word.as_bytes().first().is_some_and(u8::is_ascii_digit)
            && word.parse::<std::net::Ipv4Addr>().is_ok()
    }
}

/// `#` always starts a comment; `!` does only at the start of a line (adblock style),
/// because names never contain either.
fn strip_comment(line: &str) -> &str {
    let line = line.trim_start();
    if line.starts_with('!') {
        return "";
    }
    // A byte loop: list lines are short, and memchr's setup cost more than the scan.
    match line.bytes().position(|b| b == b'#') {
        Some(i) => &line[..i],
        None => line,
    }
}

/// `||name^` with an optional `$important`-free tail; anything with options or paths
/// is not a DNS rule and is refused rather than guessed at.
fn adblock_name(rule: &str) -> Option<&str> {
    let body = rule.strip_prefix("||")?;
    let body = body.strip_suffix('^').unwrap_or(body);
    if body.is_empty() || body.contains(['^', '/', '$', '*', '|']) {
        return None;
    }
    Some(body)
}

fn entry(name: &str, reach: Reach, allow: bool) -> Result<Entry<'_>, LineError> {
    let name = normalize(name)?;
    Ok(Entry { name, reach, allow })
}

/// Lowercases and validates a host name as lists write them: LDH labels, underscores
/// allowed (they occur in real service names), 1..=63 per label, <= 253 in total.
pub fn normalize(name: &str) -> Result<Cow<'_, str>, LineError> {
    let bad = |why| LineError::BadName {
        name: name.to_owned(),
        why,
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(bad("empty name"));
    }
    if trimmed.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    // One pass over the bytes (a reload of a million names spends most of its parsing
    // time here): label lengths, allowed characters, hyphens at label edges, uppercase.
    let bytes = trimmed.as_bytes();
    let mut label_start = 0;
    let mut upper = false;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'.' {
            check_label(&bytes[label_start..i]).map_err(bad)?;
            label_start = i + 1;
        } else if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(bad("only letters, digits, '-' and '_' are allowed"));
        } else {
            upper |= b.is_ascii_uppercase();
        }
    }
    check_label(&bytes[label_start..]).map_err(bad)?;
    if upper {
        Ok(Cow::Owned(trimmed.to_ascii_lowercase()))
    } else {
        Ok(Cow::Borrowed(trimmed))
    }
}

fn check_label(label: &[u8]) -> Result<(), &'static str> {
    match label {
        [] => Err("empty label"),
        l if l.len() > 63 => Err("label longer than 63 characters"),
        [b'-', ..] | [.., b'-'] => Err("a label may not start or end with '-'"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Vec<Entry<'_>>, LineError> {
        let mut out = Vec::new();
        parse_line(line, &mut out).map(|()| out)
    }

    fn e(name: &str, reach: Reach, allow: bool) -> Entry<'_> {
        Entry {
            name: Cow::Borrowed(name),
            reach,
            allow,
        }
    }

    #[test]
    fn every_format() {
        assert_eq!(
            parse("Nexus.OfficeApps.live.com").unwrap(),
            [e("nexus.officeapps.live.com", Reach::Exact, false)]
        );
        assert_eq!(
            parse("*.vortex.data.microsoft.com # WSB-spy").unwrap(),
            [e("vortex.data.microsoft.com", Reach::Suffix, false)]
        );
        assert_eq!(
            parse("||ads.example^").unwrap(),
            [e("ads.example", Reach::Suffix, false)]
        );
        assert_eq!(
            parse("@@||ok.example^").unwrap(),
            [e("ok.example", Reach::Suffix, true)]
        );
        assert_eq!(
            parse("0.0.0.0 a.example b.example # two").unwrap(),
            [
                e("a.example", Reach::Exact, false),
                e("b.example", Reach::Exact, false)
            ]
        );
        assert_eq!(
            parse("127.0.0.1 c.example").unwrap(),
            [e("c.example", Reach::Exact, false)]
        );
        assert_eq!(
            parse(":: d.example").unwrap(),
            [e("d.example", Reach::Exact, false)]
        );
        assert_eq!(parse("127.0.0.1 localhost").unwrap(), []);
        assert_eq!(parse("  # comment").unwrap(), []);
        assert_eq!(parse("! adblock comment").unwrap(), []);
        assert_eq!(parse("").unwrap(), []);
        assert_eq!(
            parse("trailing.dot.").unwrap(),
            [e("trailing.dot", Reach::Exact, false)]
        );
    }

    /// The one-pass path must take every plain line and agree with the general parser
    /// on every line it takes; a tiny xorshift generator covers the edges (hyphens at
    /// label ends, empty and long labels, stray bytes) without a fixed list of cases.
    #[test]
    fn plain_path_agrees_with_the_general_parser() {
        let agrees = |line: &str| {
            let mut general = Vec::new();
            let ok = parse_line(line, &mut general).is_ok();
            let with_newline = format!("{line}\nnext.example");
            for text in [line, with_newline.as_str()] {
                if let Some((entry, len)) = plain_entry(text) {
                    assert_eq!(len, line.len(), "{line:?}");
                    assert!(ok, "fast path took a line the parser refuses: {line:?}");
                    assert_eq!(general, [entry], "{line:?}");
                }
            }
        };
        for line in [
            "a.example",
            "*.vortex.data.microsoft.com",
            "x_y.example",
            "a-b.example",
        ] {
            assert!(plain_entry(line).is_some(), "{line:?}");
            agrees(line);
        }
        let long_label = format!("{}.example", "a".repeat(63));
        assert!(plain_entry(&long_label).is_some());
        for line in [
            "",
            "-a.example",
            "a-.example",
            "a..example",
            "trailing.",
            "*.",
            "*",
            "Upper.example",
            "a.example # c",
            "a.example\r",
            " a.example",
            "0.0.0.0 a.example",
            "||a.example^",
            &format!("{}.example", "a".repeat(64)),
            &format!("{}a", "a.".repeat(127)),
        ] {
            agrees(line);
        }
        let alphabet = b"ab9-._*.\r #A";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 12) as usize;
            let line: String = (0..len)
                .map(|i| {
                    alphabet[((state >> (i * 4 + 8)) % alphabet.len() as u64) as usize] as char
                })
                .collect();
            agrees(&line);
        }
    }

    #[test]
    fn rejects_what_it_cannot_honour() {
        assert!(matches!(parse("bad..name"), Err(LineError::BadName { .. })));
        assert!(matches!(
            parse("spa ce.example"),
            Err(LineError::BadName { .. })
        ));
        assert!(matches!(
            parse("-lead.example"),
            Err(LineError::BadName { .. })
        ));
        assert!(matches!(
            parse("||ads.example^$third-party"),
            Err(LineError::Adblock(_))
        ));
        assert!(matches!(
            parse("||ads.example/path^"),
            Err(LineError::Adblock(_))
        ));
        assert!(matches!(parse("0.0.0.0"), Err(LineError::HostsWithoutName)));
        assert!(matches!(
            parse("ex*ample.com"),
            Err(LineError::BadName { .. })
        ));
        assert!(matches!(
            parse(&"a".repeat(64)),
            Err(LineError::BadName { .. })
        ));
    }
}
