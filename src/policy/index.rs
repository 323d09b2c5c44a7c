//! The compiled name index: every rule of every list in one compact, read-only table.
//!
//! Why not `HashSet<Box<str>>`: a million names cost +92 MiB that way (measured on this
//! machine kind with a plain set and a suffix walk; docs/BENCHMARKS.md has the index's own
//! figures). Here:
//! - all names live back to back in one byte arena, each followed by its line number as a
//!   LEB128 varint (two or three bytes), so "which line decided" costs no record space;
//! - each name's first rule is an 8-byte record stored inline in an open-addressing table
//!   sized to the final name count (load 0.8), not to the next power of two;
//! - a parallel array holds one tag byte per slot (occupied bit + 7 hash bits). A probe
//!   that finds nothing reads only tags, which are a few cache lines of a 1 MiB array,
//!   instead of following an index into a 10 MiB one: on big lists, where every access is
//!   a cache and TLB miss, this is what a lookup costs.
//!
//! The table is built once by `IndexBuilder::finish`, after every list is read, so slots
//! never move and the rare names with more than one rule keep the extra rules in a side
//! table keyed by slot.

use std::collections::HashMap;
use std::hash::BuildHasher;

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
const TAG_USED: u8 = 0x80;

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Record {
    off: u32,
    list: u16,
    len: u8,
    flags: u8,
}

/// Fixed seed: the table is built from admin-supplied lists, not from queries, so there
/// is nothing for a remote party to flood, and a fixed seed keeps builds reproducible.
type Hasher = foldhash::fast::FixedState;

fn hasher() -> Hasher {
    Hasher::with_seed(0x7e1e_517c)
}

/// Collects rules list by list; `finish` turns them into the read-only index.
pub struct IndexBuilder {
    arena: Vec<u8>,
    pending: Vec<Record>,
    /// Each pending name's hash, taken while the name is still in cache.
    hashes: Vec<u64>,
    hasher: Hasher,
    suffix_depths: u64,
}

pub struct NameIndex {
    arena: Vec<u8>,
    tags: Box<[u8]>,
    slots: Box<[Record]>,
    extra: HashMap<u32, Vec<Rule>>,
    names: usize,
    hasher: Hasher,
    /// Bit n set: some suffix rule has n labels (n >= 63 share bit 63). A query suffix of
    /// n labels is only probed for suffix rules when its bit is set.
    suffix_depths: u64,
}

impl IndexBuilder {
    /// `names` and `bytes` are estimates; they only avoid regrowing.
    pub fn with_capacity(names: usize, bytes: usize) -> Self {
        Self {
            arena: Vec::with_capacity(bytes),
            pending: Vec::with_capacity(names),
            hashes: Vec::with_capacity(names),
            hasher: hasher(),
            suffix_depths: 0,
        }
    }

    /// Adds a rule for `name` (lowercase, validated, no trailing dot). Names over 255
    /// bytes cannot be valid and are refused (returns false).
    pub fn insert(&mut self, name: &str, rule: Rule) -> bool {
        let (Ok(off), Ok(len)) = (u32::try_from(self.arena.len()), u8::try_from(name.len())) else {
            return false;
        };
        if rule.reach == Reach::Suffix {
            let labels = name.bytes().filter(|&b| b == b'.').count() + 1;
            self.suffix_depths |= 1 << labels.min(63);
        }
        self.hashes.push(self.hasher.hash_one(name.as_bytes()));
        self.arena.extend_from_slice(name.as_bytes());
        push_varint(&mut self.arena, rule.line);
        self.pending.push(Record {
            off,
            list: rule.list,
            len,
            flags: flags_of(&rule),
        });
        true
    }

    /// Builds the table. Rules are placed in the order they were added, so for a rule
    /// given twice the first line is the one `explain` reports.
    pub fn finish(self) -> NameIndex {
        let capacity = (self.pending.len() as u64 * 5 / 4 + 8) as usize;
        let mut index = NameIndex {
            arena: self.arena,
            tags: vec![0u8; capacity].into_boxed_slice(),
            slots: vec![Record::default(); capacity].into_boxed_slice(),
            extra: HashMap::new(),
            names: 0,
            hasher: hasher(),
            suffix_depths: self.suffix_depths,
        };
        // Names are placed in the order of their home slots, not in list order: each
        // placement is then next to the one before instead of a cache and TLB miss in
        // tables of several MiB (those misses were a third of a million-name reload).
        // A counting sort on the top bits of the home slot is stable, so a name's first
        // rule is still placed first.
        let shift = capacity.ilog2().saturating_sub(10);
        let mut starts = vec![0usize; (capacity >> shift) + 2];
        for &hash in &self.hashes {
            starts[(index.home(hash) >> shift) + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut ordered = vec![(0u64, Record::default()); self.pending.len()];
        for (&hash, &record) in self.hashes.iter().zip(&self.pending) {
            let at = &mut starts[index.home(hash) >> shift];
            ordered[*at] = (hash, record);
            *at += 1;
        }
        drop((self.hashes, self.pending));
        for (hash, record) in ordered {
            index.place(record, hash);
        }
        index.arena.shrink_to_fit();
        index
    }
}

impl NameIndex {
    fn place(&mut self, record: Record, hash: u64) {
        let name = name_of(&self.arena, &record);
        let tag = tag_of(hash);
        let mut i = self.home(hash);
        loop {
            match self.tags[i] {
                0 => {
                    self.tags[i] = tag;
                    self.slots[i] = record;
                    self.names += 1;
                    return;
                }
                t if t == tag && name_of(&self.arena, &self.slots[i]) == name => {
                    let rule = rule_of(&self.arena, &record);
                    self.add_to_existing(i, rule);
                    return;
                }
                _ => i = self.next(i),
            }
        }
    }

    fn add_to_existing(&mut self, slot: usize, rule: Rule) {
        let first = rule_of(&self.arena, &self.slots[slot]);
        let same = |r: &Rule| r.list == rule.list && r.reach == rule.reach && r.allow == rule.allow;
        if same(&first) {
            return;
        }
        self.slots[slot].flags |= F_MORE;
        let more = self.extra.entry(slot as u32).or_default();
        if !more.iter().any(same) {
            more.push(rule);
        }
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        // Multiply-shift maps the hash onto any table size, so the table need not be a
        // power of two (that alone would double its size at a million names).
        ((u128::from(hash) * self.tags.len() as u128) >> 64) as usize
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.tags.len() { 0 } else { i + 1 }
    }

    /// Number of distinct names.
    pub fn names(&self) -> usize {
        self.names
    }

    /// Calls `f` for every rule stored under exactly `name` (lowercase, no trailing dot).
    #[inline]
    pub fn for_each(&self, name: &[u8], mut f: impl FnMut(Rule)) {
        if self.tags.is_empty() {
            return;
        }
        let hash = self.hasher.hash_one(name);
        let tag = tag_of(hash);
        let mut i = self.home(hash);
        loop {
            match self.tags[i] {
                0 => return,
                t if t == tag && name_of(&self.arena, &self.slots[i]) == name => break,
                _ => i = self.next(i),
            }
        }
        let record = &self.slots[i];
        f(rule_of(&self.arena, record));
        if record.flags & F_MORE != 0 {
            for rule in self.extra.get(&(i as u32)).into_iter().flatten() {
                f(*rule);
            }
        }
    }

    /// Names with more than `max` rules, each with all its rules in the order added.
    pub fn crowded(&self, max: usize) -> Vec<(String, Vec<Rule>)> {
        self.extra
            .iter()
            .filter(|(_, more)| more.len() + 1 > max)
            .map(|(&slot, more)| {
                let record = &self.slots[slot as usize];
                let name = String::from_utf8_lossy(name_of(&self.arena, record)).into_owned();
                let mut rules = vec![rule_of(&self.arena, record)];
                rules.extend(more.iter().copied());
                (name, rules)
            })
            .collect()
    }

    /// Whether any suffix rule has this many labels; lets a lookup skip a level.
    #[inline]
    pub fn has_suffix_depth(&self, labels: usize) -> bool {
        self.suffix_depths & (1 << labels.min(63)) != 0
    }

    /// Every (name, rule) pair; for dry-run diffs and the firewall, never per query.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Rule)> + '_ {
        self.tags
            .iter()
            .enumerate()
            .filter(|(_, t)| **t != 0)
            .flat_map(move |(i, _)| {
                let r = &self.slots[i];
                let name = std::str::from_utf8(name_of(&self.arena, r)).unwrap_or("");
                let more = match (r.flags & F_MORE != 0, self.extra.get(&(i as u32))) {
                    (true, Some(v)) => v.as_slice(),
                    _ => &[],
                };
                std::iter::once(rule_of(&self.arena, r))
                    .chain(more.iter().copied())
                    .map(move |rule| (name, rule))
            })
    }
}

impl Default for NameIndex {
    fn default() -> Self {
        IndexBuilder::with_capacity(0, 0).finish()
    }
}

#[inline]
fn tag_of(hash: u64) -> u8 {
    // The low bits: the slot position comes from the high bits (multiply-shift).
    TAG_USED | (hash as u8 & 0x7f)
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

fn rule_of(arena: &[u8], record: &Record) -> Rule {
    let reach = if record.flags & F_SUFFIX != 0 {
        Reach::Suffix
    } else {
        Reach::Exact
    };
    Rule {
        list: record.list,
        line: read_varint(&arena[record.off as usize + record.len as usize..]),
        reach,
        allow: record.flags & F_ALLOW != 0,
    }
}

fn push_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(bytes: &[u8]) -> u32 {
    let mut v = 0u32;
    for (i, &b) in bytes.iter().take(5).enumerate() {
        v |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    v
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

    fn rules_of(index: &NameIndex, name: &str) -> Vec<Rule> {
        let mut seen = Vec::new();
        index.for_each(name.as_bytes(), |r| seen.push(r));
        seen
    }

    #[test]
    fn stores_several_rules_per_name_and_skips_duplicates() {
        let mut b = IndexBuilder::with_capacity(0, 0);
        b.insert("a.example", rule(0, 1, Reach::Exact, false));
        b.insert("a.example", rule(0, 9, Reach::Exact, false));
        b.insert("a.example", rule(1, 2, Reach::Suffix, true));
        b.insert("b.example", rule(0, 3, Reach::Suffix, false));
        let index = b.finish();
        assert_eq!(
            rules_of(&index, "a.example"),
            [
                rule(0, 1, Reach::Exact, false),
                rule(1, 2, Reach::Suffix, true)
            ]
        );
        assert!(rules_of(&index, "c.example").is_empty());
        assert_eq!(index.names(), 2);
        assert!(index.has_suffix_depth(2) && !index.has_suffix_depth(3));
        assert_eq!(index.iter().count(), 3);
    }

    #[test]
    fn every_name_is_found_with_its_line_and_absent_names_are_not() {
        let mut b = IndexBuilder::with_capacity(0, 0);
        let lines = [
            1u32,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            u32::MAX,
        ];
        for i in 0..20_000u32 {
            let line = lines[i as usize % lines.len()];
            assert!(b.insert(
                &format!("n{i}.example"),
                rule((i % 3) as u16, line, Reach::Exact, false)
            ));
        }
        let index = b.finish();
        assert_eq!(index.names(), 20_000);
        for i in 0..20_000u32 {
            let got = rules_of(&index, &format!("n{i}.example"));
            assert_eq!(
                got,
                [rule(
                    (i % 3) as u16,
                    lines[i as usize % lines.len()],
                    Reach::Exact,
                    false
                )]
            );
            assert!(rules_of(&index, &format!("m{i}.example")).is_empty());
        }
    }

    #[test]
    fn an_empty_index_finds_nothing() {
        assert!(rules_of(&NameIndex::default(), "a.example").is_empty());
    }
}
