//! The compiled name index: every rule of every list in one compact table.
//!
//! Why not `HashSet<String>`: a million names would cost ~90 MiB that way (measured, see
//! docs/BENCHMARKS.md). Here all names live back to back in one byte arena, each rule is a
//! 12-byte record, and the hash table holds only `u32` indices into those records, so a
//! million names cost about 40 bytes each including the table. Names that carry more than
//! one rule (the same name in two lists) keep the extra rules in a small side table; that
//! is rare in practice and keeps the common record small.

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
    line: u32,
    list: u16,
    len: u8,
    flags: u8,
}

impl Record {
    fn rule(&self) -> Rule {
        Rule {
            list: self.list,
            line: self.line,
            reach: if self.flags & F_SUFFIX != 0 {
                Reach::Suffix
            } else {
                Reach::Exact
            },
            allow: self.flags & F_ALLOW != 0,
        }
    }
}

/// Fixed seed: the table is built from admin-supplied lists, not from queries, so there
/// is nothing for a remote party to flood, and a fixed seed keeps builds reproducible.
type Hasher = foldhash::fast::FixedState;

pub struct NameIndex {
    arena: Vec<u8>,
    records: Vec<Record>,
    table: HashTable<u32>,
    extra: HashMap<u32, Vec<Rule>>,
    hasher: Hasher,
    /// The deepest suffix rule in labels: names with more labels than this need not be
    /// probed at their longest suffixes.
    max_suffix_labels: usize,
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
            table: HashTable::with_capacity(names),
            extra: HashMap::new(),
            hasher: Hasher::with_seed(0x7e1e_517c),
            max_suffix_labels: 0,
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
            self.max_suffix_labels = self
                .max_suffix_labels
                .max(bytes.iter().filter(|&&b| b == b'.').count() + 1);
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
                self.records.push(Record {
                    off,
                    line: rule.line,
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
        let record = &mut self.records[index as usize];
        let same = |r: &Rule| r.list == rule.list && r.reach == rule.reach && r.allow == rule.allow;
        if same(&record.rule()) {
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
        f(record.rule());
        if record.flags & F_MORE != 0 {
            for rule in self.extra.get(&i).into_iter().flatten() {
                f(*rule);
            }
        }
    }

    pub fn max_suffix_labels(&self) -> usize {
        self.max_suffix_labels
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
            std::iter::once(r.rule())
                .chain(more.iter().copied())
                .map(move |rule| (name, rule))
        })
    }

    /// Trims spare capacity after loading, so RSS reflects what is used.
    pub fn shrink(&mut self) {
        self.arena.shrink_to_fit();
        self.records.shrink_to_fit();
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
        assert_eq!(index.max_suffix_labels(), 2);
        assert_eq!(index.iter().count(), 3);
    }
}
