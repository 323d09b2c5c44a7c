//! The compiled name index: every rule of every list in one compact table.
//!
//! Why not `HashSet<Box<str>>`: a million names cost +92 MiB that way (measured on this
//! machine kind, shared/reference/engineering-notes.md); this layout adds 46 MiB
//! (docs/BENCHMARKS.md). Here all names live back to back in one byte arena, each name's
//! first rule is an 8-byte record, and the hash table holds only `u32` indices into those
//! records. Line numbers (for `check` and "which line decided") cost one byte per record:
//! records are appended in file order, so a line is stored as the distance from the
//! previous record's line, with a full checkpoint every 64 records. Names that carry more
//! than one rule (the same name in two lists) keep the extra rules in a small side table;
//! that is rare in practice and keeps the common record small.

use std::hash::BuildHasher;

use std::collections::HashMap;

use hashbrown::HashTable;

use crate::lists::Reach;

/// One rule as the policy sees it: which list, which line, what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub list: u16,
    pub line: u32,
    pub reach: Reach,
    pub allow: bool,
}

const F_SUFFIX: u8 = 1;
const F_ALLOW: u8 = 2;
const F_MORE: u8 = 4;

#[derive(Clone, Copy)]
#[repr(C)]
struct Record {
    off: u32,
    list: u16,
    len: u8,
    flags: u8,
}

impl Record {
    fn rule(&self, line: u32) -> Rule {
        let reach = if self.flags & F_SUFFIX != 0 {
            Reach::Suffix
        } else {
            Reach::Exact
        };
        Rule {
            list: self.list,
            line,
            reach,
            allow: self.flags & F_ALLOW != 0,
        }
    }
}

/// Line numbers of the records, one byte each: the step from the previous record's line.
/// A step that does not fit (or goes backwards, at a list boundary) is `ESCAPE` and kept
/// whole in `far`. `checkpoints[k]` is the line of record `64 k`.
#[derive(Default)]
struct Lines {
    steps: Vec<u8>,
    checkpoints: Vec<u32>,
    far: HashMap<u32, u32>,
    last: u32,
}

const ESCAPE: u8 = u8::MAX;
const CHECKPOINT: usize = 64;

impl Lines {
    fn push(&mut self, index: usize, line: u32) {
        if index.is_multiple_of(CHECKPOINT) {
            self.checkpoints.push(line);
            self.steps.push(0);
        } else {
            match line
                .checked_sub(self.last)
                .and_then(|d| u8::try_from(d).ok())
            {
                Some(step) if step != ESCAPE => self.steps.push(step),
                _ => {
                    self.steps.push(ESCAPE);
                    self.far.insert(index as u32, line);
                }
            }
        }
        self.last = line;
    }

    fn get(&self, index: usize) -> u32 {
        let base = index - index % CHECKPOINT;
        let mut line = self
            .checkpoints
            .get(base / CHECKPOINT)
            .copied()
            .unwrap_or(0);
        for i in base + 1..=index {
            match self.steps.get(i) {
                Some(&ESCAPE) => line = self.far.get(&(i as u32)).copied().unwrap_or(0),
                Some(&step) => line += u32::from(step),
                None => break,
            }
        }
        line
    }

    fn shrink(&mut self) {
        self.steps.shrink_to_fit();
        self.checkpoints.shrink_to_fit();
    }
}

/// Fixed seed: the table is built from admin-supplied lists, not from queries, so there
/// is nothing for a remote party to flood, and a fixed seed keeps builds reproducible.
type Hasher = foldhash::fast::FixedState;

pub struct NameIndex {
    arena: Vec<u8>,
    records: Vec<Record>,
    lines: Lines,
    table: HashTable<u32>,
    extra: HashMap<u32, Vec<Rule>>,
    hasher: Hasher,
    /// Bit n set: some suffix rule has n labels (n >= 63 share bit 63). A query suffix of
    /// n labels is only probed for suffix rules when its bit is set.
    suffix_depths: u64,
}

impl Default for NameIndex {
    fn default() -> Self {
        Self::with_capacity(0, 0)
    }
}

impl NameIndex {
    pub fn with_capacity(names: usize, bytes: usize) -> Self {
        Self {
            arena: Vec::with_capacity(bytes),
            records: Vec::with_capacity(names),
            lines: Lines {
                steps: Vec::with_capacity(names),
                ..Lines::default()
            },
            table: HashTable::with_capacity(names),
            extra: HashMap::new(),
            hasher: Hasher::with_seed(0x7e1e_517c),
            suffix_depths: 0,
        }
    }

    /// Number of distinct names.
    pub fn names(&self) -> usize {
        self.records.len()
    }

    /// Adds a rule. Returns false when this exact rule (name, reach, allow, list) is
    /// already present: the first line wins so `explain` points at the first occurrence.
    pub fn insert(&mut self, name: &str, rule: Rule) -> bool {
        let bytes = name.as_bytes();
        let hash = self.hasher.hash_one(bytes);
        let (arena, records) = (&self.arena, &self.records);
        let found = self
            .table
            .find(hash, |&i| name_of(arena, &records[i as usize]) == bytes)
            .copied();
        if rule.reach == Reach::Suffix {
            let labels = bytes.iter().filter(|&&b| b == b'.').count() + 1;
            self.suffix_depths |= 1 << labels.min(63);
        }
        match found {
            Some(i) => self.add_to_existing(i, rule),
            None => {
                let (Ok(off), Ok(len)) =
                    (u32::try_from(self.arena.len()), u8::try_from(bytes.len()))
                else {
                    // Unreachable for validated names and lists under 4 GiB; refuse rather than wrap.
                    return false;
                };
                self.arena.extend_from_slice(bytes);
                let index = self.records.len() as u32;
                self.lines.push(self.records.len(), rule.line);
                self.records.push(Record {
                    off,
                    list: rule.list,
                    len,
                    flags: flags_of(&rule),
                });
                let (arena, records, hasher) = (&self.arena, &self.records, &self.hasher);
                self.table.insert_unique(hash, index, |&i| {
                    hasher.hash_one(name_of(arena, &records[i as usize]))
                });
                true
            }
        }
    }

    fn add_to_existing(&mut self, index: u32, rule: Rule) -> bool {
        let line = self.lines.get(index as usize);
        let record = &mut self.records[index as usize];
        let same = |r: &Rule| r.list == rule.list && r.reach == rule.reach && r.allow == rule.allow;
        if same(&record.rule(line)) {
            return false;
        }
        record.flags |= F_MORE;
        let more = self.extra.entry(index).or_default();
        if more.iter().any(same) {
            return false;
        }
        more.push(rule);
        true
    }

    /// Calls `f` for every rule stored under exactly `name` (lowercase, no trailing dot).
    #[inline]
    pub fn for_each(&self, name: &[u8], mut f: impl FnMut(Rule)) {
        let hash = self.hasher.hash_one(name);
        let Some(&i) = self.table.find(hash, |&i| {
            name_of(&self.arena, &self.records[i as usize]) == name
        }) else {
            return;
        };
        let record = &self.records[i as usize];
        f(record.rule(self.lines.get(i as usize)));
        if record.flags & F_MORE != 0 {
            for rule in self.extra.get(&i).into_iter().flatten() {
                f(*rule);
            }
        }
    }

    /// Whether any suffix rule has this many labels; lets a lookup skip a level.
    #[inline]
    pub fn has_suffix_depth(&self, labels: usize) -> bool {
        self.suffix_depths & (1 << labels.min(63)) != 0
    }

    /// Iterates every (name, rule) pair; used by dry-run diffs and the firewall, never per query.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Rule)> + '_ {
        self.records.iter().enumerate().flat_map(move |(i, r)| {
            let name = std::str::from_utf8(name_of(&self.arena, r)).unwrap_or("");
            let more = if r.flags & F_MORE != 0 {
                self.extra
                    .get(&(i as u32))
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
            } else {
                &[]
            };
            std::iter::once(r.rule(self.lines.get(i)))
                .chain(more.iter().copied())
                .map(move |rule| (name, rule))
        })
    }

    /// Trims spare capacity after loading, so RSS reflects what is used.
    pub fn shrink(&mut self) {
        self.arena.shrink_to_fit();
        self.records.shrink_to_fit();
        self.lines.shrink();
        let (arena, records, hasher) = (&self.arena, &self.records, &self.hasher);
        self.table
            .shrink_to_fit(|&i| hasher.hash_one(name_of(arena, &records[i as usize])));
    }
}

fn flags_of(rule: &Rule) -> u8 {
    let mut flags = 0;
    if rule.reach == Reach::Suffix {
        flags |= F_SUFFIX;
    }
    if rule.allow {
        flags |= F_ALLOW;
    }
    flags
}

#[inline]
fn name_of<'a>(arena: &'a [u8], record: &Record) -> &'a [u8] {
    let start = record.off as usize;
    &arena[start..start + record.len as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers_survive_the_compact_encoding() {
        let mut index = NameIndex::default();
        // Steps of 1, large jumps, and a new list starting again at line 1.
        let lines: Vec<u32> = (0..300)
            .map(|i| {
                if i == 150 {
                    1
                } else if i % 50 == 7 {
                    i * 1000
                } else {
                    i + 10
                }
            })
            .collect();
        for (i, &line) in lines.iter().enumerate() {
            let list = u16::from(i >= 150);
            assert!(index.insert(
                &format!("n{i}.example"),
                rule(list, line, Reach::Exact, false)
            ));
        }
        for (i, &line) in lines.iter().enumerate() {
            let mut got = None;
            index.for_each(format!("n{i}.example").as_bytes(), |r| got = Some(r.line));
            assert_eq!(got, Some(line), "record {i}");
        }
    }

    fn rule(list: u16, line: u32, reach: Reach, allow: bool) -> Rule {
        Rule {
            list,
            line,
            reach,
            allow,
        }
    }

    #[test]
    fn stores_several_rules_per_name_and_skips_duplicates() {
        let mut index = NameIndex::default();
        assert!(index.insert("a.example", rule(0, 1, Reach::Exact, false)));
        assert!(!index.insert("a.example", rule(0, 9, Reach::Exact, false)));
        assert!(index.insert("a.example", rule(1, 2, Reach::Suffix, true)));
        assert!(index.insert("b.example", rule(0, 3, Reach::Suffix, false)));
        let mut seen = Vec::new();
        index.for_each(b"a.example", |r| seen.push(r));
        assert_eq!(
            seen,
            [
                rule(0, 1, Reach::Exact, false),
                rule(1, 2, Reach::Suffix, true)
            ]
        );
        seen.clear();
        index.for_each(b"c.example", |r| seen.push(r));
        assert!(seen.is_empty());
        assert_eq!(index.names(), 2);
        assert!(index.has_suffix_depth(2) && !index.has_suffix_depth(3));
        assert_eq!(index.iter().count(), 3);
    }
}
