//! A closed day of the ledger, sealed into one block: the day's client labels, profiles,
//! layers and names each written once (sorted), then the rows as columns of small
//! integers, compressed with zstd.
//!
//! Why a block and not a row per sighting: a row in SQLite costs 60 to 110 bytes with its
//! strings, its key and the b-tree around it; a year of 1,000 clients reaching 50 names
//! each day (18 million rows) came to 1.96 GiB that way and a report over it took 20 s.
//! A sealed day is written once and only ever read whole (reports, verify) or rewritten
//! whole (purge), so it needs no index of its own: a block holds it in a few bytes a row
//! and decodes at hundreds of MB/s. The open day stays in SQL rows, where a flush adds
//! to counts in place.
//!
//! The encoding is canonical (sorted dictionaries, rows in key order, one way to write
//! each number), so the same rows always give the same bytes: a day's digest is taken
//! over these bytes, before compression.

use std::collections::BTreeMap;
use std::io::Read;

use super::store::Stored;

const MAGIC: &[u8; 4] = b"TSD1";
/// A day decoded larger than this is refused rather than allocated: a day of the largest
/// ledger telesink writes (65,536 clients x 200 names x a few profiles) stays far below.
const MAX_RAW: u64 = 1 << 30;
/// zstd level: sealing happens once a day per file, decoding at every report, and the
/// decoding speed does not depend on the level.
const LEVEL: i32 = 9;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("not a sealed day (bad header)")]
    Magic,
    #[error("the block is cut short")]
    Truncated,
    #[error("a number in the block is out of range")]
    Number,
    #[error("a {0} index points past its dictionary")]
    Index(&'static str),
    #[error("a label in the block is not UTF-8")]
    Text,
    #[error("the block decodes to more than {MAX_RAW} bytes")]
    TooLarge,
    #[error("compression: {0}")]
    Zstd(std::io::Error),
}

/// One row of a day, its strings as indices into the day's dictionaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packed {
    pub client: u32,
    pub profile: u32,
    pub layer: u32,
    pub name: u32,
    pub count: u64,
    /// Unix seconds.
    pub first: u64,
    pub last: u64,
}

/// The rows of one UTC day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayRows {
    /// Days since 1970-01-01.
    pub day: u32,
    pub clients: Vec<String>,
    pub profiles: Vec<String>,
    pub layers: Vec<String>,
    pub names: Vec<String>,
    /// In key order: client, profile, layer, name (as strings; the dictionaries are
    /// sorted, so the indices sort the same way).
    pub rows: Vec<Packed>,
}

/// Builds the sorted dictionary of one field and each value's index in it.
fn dictionary<'a>(values: impl Iterator<Item = &'a str>) -> (Vec<String>, BTreeMap<&'a str, u32>) {
    let mut index: BTreeMap<&str, u32> = values.map(|v| (v, 0)).collect();
    let mut list = Vec::with_capacity(index.len());
    for (i, (v, slot)) in index.iter_mut().enumerate() {
        *slot = i as u32;
        list.push((*v).to_owned());
    }
    (list, index)
}

/// The entries of a dictionary that `used` still points at, in order, and where each old
/// index went.
fn still_used(dict: &[String], used: impl Iterator<Item = u32>) -> (Vec<String>, Vec<u32>) {
    let mut keep = vec![false; dict.len()];
    for i in used {
        keep[i as usize] = true;
    }
    let mut out = Vec::new();
    let mut moved = vec![u32::MAX; dict.len()];
    for (i, text) in dict.iter().enumerate() {
        if keep[i] {
            moved[i] = out.len() as u32;
            out.push(text.clone());
        }
    }
    (out, moved)
}

impl DayRows {
    /// The day's rows from stored rows (all of that day). Rows with the same key are
    /// added up, as the ledger's upsert would.
    pub fn from_stored(day: u32, rows: &[Stored]) -> DayRows {
        let (clients, ci) = dictionary(rows.iter().map(|r| r.client.as_str()));
        let (profiles, pi) = dictionary(rows.iter().map(|r| r.profile.as_str()));
        let (layers, li) = dictionary(rows.iter().map(|r| r.layer.as_str()));
        let (names, ni) = dictionary(rows.iter().map(|r| r.name.as_str()));
        let mut keyed: BTreeMap<(u32, u32, u32, u32), Packed> = BTreeMap::new();
        for r in rows {
            let p = Packed {
                client: ci[r.client.as_str()],
                profile: pi[r.profile.as_str()],
                layer: li[r.layer.as_str()],
                name: ni[r.name.as_str()],
                count: r.count,
                first: r.first_seen,
                last: r.last_seen,
            };
            keyed
                .entry((p.client, p.profile, p.layer, p.name))
                .and_modify(|q| {
                    q.count += p.count;
                    q.first = q.first.min(p.first);
                    q.last = q.last.max(p.last);
                })
                .or_insert(p);
        }
        DayRows {
            day,
            clients,
            profiles,
            layers,
            names,
            rows: keyed.into_values().collect(),
        }
    }

    /// The row with its strings, as reports show it; `day` is this day's text, made
    /// once per day by the caller.
    pub fn stored(&self, day: &str, p: &Packed) -> Stored {
        Stored {
            day: day.to_owned(),
            client: self.clients[p.client as usize].clone(),
            profile: self.profiles[p.profile as usize].clone(),
            layer: self.layers[p.layer as usize].clone(),
            name: self.names[p.name as usize].clone(),
            count: p.count,
            first_seen: p.first,
            last_seen: p.last,
        }
    }

    /// The day without one client's rows (erasure); None when it had none. Worked on
    /// the indices (a year of erasure touches every day): the dictionaries keep only
    /// what the remaining rows use, so the block is the one those rows would give.
    pub fn without_client(&self, client: &str) -> Option<DayRows> {
        let gone = self.clients.iter().position(|c| c == client)? as u32;
        let rows: Vec<Packed> = self
            .rows
            .iter()
            .filter(|p| p.client != gone)
            .copied()
            .collect();
        let (clients, ci) = still_used(&self.clients, rows.iter().map(|p| p.client));
        let (profiles, pi) = still_used(&self.profiles, rows.iter().map(|p| p.profile));
        let (layers, li) = still_used(&self.layers, rows.iter().map(|p| p.layer));
        let (names, ni) = still_used(&self.names, rows.iter().map(|p| p.name));
        let rows = rows
            .into_iter()
            .map(|p| Packed {
                client: ci[p.client as usize],
                profile: pi[p.profile as usize],
                layer: li[p.layer as usize],
                name: ni[p.name as usize],
                ..p
            })
            .collect();
        Some(DayRows {
            day: self.day,
            clients,
            profiles,
            layers,
            names,
            rows,
        })
    }

    /// The canonical bytes: what the digest is taken over, and what is compressed.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.rows.len() * 12);
        out.extend_from_slice(MAGIC);
        put(&mut out, u64::from(self.day));
        for dict in [&self.clients, &self.profiles, &self.layers, &self.names] {
            put(&mut out, dict.len() as u64);
            for v in dict {
                put(&mut out, v.len() as u64);
                out.extend_from_slice(v.as_bytes());
            }
        }
        put(&mut out, self.rows.len() as u64);
        // Columns, not rows: each column's numbers look alike, which is what the
        // compressor feeds on. Clients ascend, so their deltas are mostly 0.
        let mut previous = 0;
        for p in &self.rows {
            put(&mut out, u64::from(p.client.wrapping_sub(previous)));
            previous = p.client;
        }
        for p in &self.rows {
            put(&mut out, u64::from(p.profile));
        }
        for p in &self.rows {
            put(&mut out, u64::from(p.layer));
        }
        for p in &self.rows {
            put(&mut out, u64::from(p.name));
        }
        for p in &self.rows {
            put(&mut out, p.count);
        }
        let start = i128::from(self.day) * 86_400;
        for p in &self.rows {
            put(&mut out, zigzag(i128::from(p.first) - start));
        }
        for p in &self.rows {
            put(&mut out, zigzag(i128::from(p.last) - i128::from(p.first)));
        }
        out
    }

    pub fn decode(raw: &[u8]) -> Result<DayRows, BlockError> {
        let mut r = Reader { raw, at: 0 };
        if r.take(4)? != MAGIC {
            return Err(BlockError::Magic);
        }
        let day = u32::try_from(r.number()?).map_err(|_| BlockError::Number)?;
        let mut dicts: [Vec<String>; 4] = Default::default();
        for dict in &mut dicts {
            let n = r.count(1)?;
            dict.reserve(n);
            for _ in 0..n {
                let len = r.count(1)?;
                let text = std::str::from_utf8(r.take(len)?).map_err(|_| BlockError::Text)?;
                dict.push(text.to_owned());
            }
        }
        let [clients, profiles, layers, names] = dicts;
        // Seven numbers of at least one byte each per row.
        let n = r.count(7)?;
        let mut rows = vec![
            Packed {
                client: 0,
                profile: 0,
                layer: 0,
                name: 0,
                count: 0,
                first: 0,
                last: 0,
            };
            n
        ];
        let index = |v: u64, len: usize, what| match u32::try_from(v) {
            Ok(i) if (i as usize) < len => Ok(i),
            _ => Err(BlockError::Index(what)),
        };
        let mut client = 0u64;
        for p in &mut rows {
            client = client.checked_add(r.number()?).ok_or(BlockError::Number)?;
            p.client = index(client, clients.len(), "client")?;
        }
        for p in &mut rows {
            p.profile = index(r.number()?, profiles.len(), "profile")?;
        }
        for p in &mut rows {
            p.layer = index(r.number()?, layers.len(), "layer")?;
        }
        for p in &mut rows {
            p.name = index(r.number()?, names.len(), "name")?;
        }
        for p in &mut rows {
            p.count = r.number()?;
        }
        let start = i128::from(day) * 86_400;
        let seconds = |v: i128| u64::try_from(v).map_err(|_| BlockError::Number);
        for p in &mut rows {
            p.first = seconds(start + unzigzag(r.number()?))?;
        }
        for p in &mut rows {
            p.last = seconds(i128::from(p.first) + unzigzag(r.number()?))?;
        }
        if r.at != raw.len() {
            return Err(BlockError::Number);
        }
        Ok(DayRows {
            day,
            clients,
            profiles,
            layers,
            names,
            rows,
        })
    }
}

/// Compresses the canonical bytes for the file.
pub fn compress(raw: &[u8]) -> Result<Vec<u8>, BlockError> {
    zstd::bulk::compress(raw, LEVEL).map_err(BlockError::Zstd)
}

/// The canonical bytes of a stored block, bounded by `MAX_RAW`.
pub fn decompress(block: &[u8]) -> Result<Vec<u8>, BlockError> {
    let decoder = zstd::stream::read::Decoder::with_buffer(block).map_err(BlockError::Zstd)?;
    let mut raw = Vec::new();
    decoder
        .take(MAX_RAW + 1)
        .read_to_end(&mut raw)
        .map_err(BlockError::Zstd)?;
    if raw.len() as u64 > MAX_RAW {
        return Err(BlockError::TooLarge);
    }
    Ok(raw)
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i128) -> u64 {
    let v = v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i128 {
    i128::from(((v >> 1) as i64) ^ -((v & 1) as i64))
}

struct Reader<'a> {
    raw: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BlockError> {
        let end = self.at.checked_add(n).ok_or(BlockError::Truncated)?;
        let bytes = self.raw.get(self.at..end).ok_or(BlockError::Truncated)?;
        self.at = end;
        Ok(bytes)
    }

    fn number(&mut self) -> Result<u64, BlockError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.raw.get(self.at).ok_or(BlockError::Truncated)?;
            self.at += 1;
            v |= u64::from(b & 0x7f)
                .checked_shl(shift)
                .ok_or(BlockError::Number)?;
            if b & 0x80 == 0 {
                // One way to write each number: no trailing zero groups.
                if b == 0 && shift > 0 {
                    return Err(BlockError::Number);
                }
                return Ok(v);
            }
        }
        Err(BlockError::Number)
    }

    /// A count of items of at least `min_bytes` each, no more than the bytes left can
    /// hold: a hostile count cannot make us allocate.
    fn count(&mut self, min_bytes: usize) -> Result<usize, BlockError> {
        let n = usize::try_from(self.number()?).map_err(|_| BlockError::Number)?;
        if n.saturating_mul(min_bytes) > self.raw.len() - self.at {
            return Err(BlockError::Truncated);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(client: &str, name: &str, count: u64, first: u64, last: u64) -> Stored {
        Stored {
            day: super::super::store::day_text(20_000),
            client: client.into(),
            profile: "office".into(),
            layer: "dns-blocked".into(),
            name: name.into(),
            count,
            first_seen: first,
            last_seen: last,
        }
    }

    #[test]
    fn a_day_round_trips_canonically_and_hostile_blocks_are_refused() {
        let t = 20_000 * 86_400;
        let rows = [
            stored("b", "x.test", 3, t + 5, t + 9),
            stored("a", "y.test", 1, t + 1, t + 1),
            stored("a", "x.test", 2, t + 86_399, t + 86_399),
            stored("b", "x.test", 1, t + 2, t + 20),
        ];
        let day = DayRows::from_stored(20_000, &rows);
        // Sorted, duplicates added up.
        assert_eq!(day.rows.len(), 3);
        let text = super::super::store::day_text(20_000);
        let back: Vec<Stored> = day.rows.iter().map(|p| day.stored(&text, p)).collect();
        assert_eq!(back[0].name, "x.test");
        assert_eq!(back[0].client, "a");
        assert_eq!(
            (back[2].count, back[2].first_seen, back[2].last_seen),
            (4, t + 2, t + 20)
        );
        let raw = day.encode();
        // The same rows in another order give the same bytes.
        let mut reversed = rows.to_vec();
        reversed.reverse();
        assert_eq!(DayRows::from_stored(20_000, &reversed).encode(), raw);
        let block = compress(&raw).unwrap();
        assert_eq!(DayRows::decode(&decompress(&block).unwrap()).unwrap(), day);
        // Cut short, a bad index, a bad header, garbage: errors, not panics.
        assert!(DayRows::decode(&raw[..raw.len() - 1]).is_err());
        assert!(DayRows::decode(b"TSD0").is_err());
        assert!(decompress(b"not zstd").is_err());
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x55;
            let _ = DayRows::decode(&bad);
        }
        let mut huge = MAGIC.to_vec();
        put(&mut huge, 20_000);
        put(&mut huge, u64::MAX >> 1);
        assert!(DayRows::decode(&huge).is_err());
        // Erasure of one client.
        let without = day.without_client("a").unwrap();
        assert_eq!(without.clients, vec!["b".to_owned()]);
        assert_eq!(without.rows.len(), 1);
        // What the rows left would give from scratch (a name only "a" used is gone).
        let left: Vec<Stored> = rows.iter().filter(|r| r.client != "a").cloned().collect();
        assert_eq!(without, DayRows::from_stored(20_000, &left));
        assert_eq!(without.names, vec!["x.test".to_owned()]);
        assert!(day.without_client("c").is_none());
    }
}
