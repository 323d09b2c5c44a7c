//! What an error says when a name is not one telesink knows: the valid choices and the
//! nearest of them ("no profile named office-telemetry-strct; did you mean
//! office-telemetry-strict? profiles: ...").

/// Edit distance (insertions, deletions, substitutions), for short names.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The choice nearest to `input`, if it is near enough to be a typo of it (at most a
/// third of its length apart, and at least one edit).
pub fn nearest<'a>(input: &str, choices: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (input.chars().count() / 3).max(2);
    choices
        .into_iter()
        .map(|c| (distance(input, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

/// "; did you mean X? <what>: a, b, c" (or "; there are no <what>"), for the end of an
/// error message.
pub fn choices(input: &str, what: &str, all: &[String]) -> String {
    if all.is_empty() {
        return format!("; there are no {what}");
    }
    let near = nearest(input, all.iter().map(String::as_str))
        .map(|n| format!("; did you mean {n}?"))
        .unwrap_or_else(|| ";".to_owned());
    // A long list is cut, and says so.
    const SHOWN: usize = 30;
    let mut list = all
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if all.len() > SHOWN {
        list += &format!(" and {} more", all.len() - SHOWN);
    }
    format!("{near} {what}: {list}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_name_and_strangers_do_not() {
        let all = [
            "office-telemetry",
            "office-telemetry-strict",
            "windows-telemetry",
        ];
        assert_eq!(
            nearest("office-telemetry-strct", all),
            Some("office-telemetry-strict")
        );
        assert_eq!(nearest("office-telemtry", all), Some("office-telemetry"));
        assert_eq!(nearest("printer", all), None);
        let text = choices("wufb-managed", "groups", &["default".into()]);
        assert_eq!(text, "; groups: default");
        assert!(choices("x", "profiles", &[]).contains("there are no profiles"));
    }
}
