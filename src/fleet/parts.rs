//! A record too large for one message travels in parts. NATS refuses a message above
//! the server's `max_payload` (1 MiB unless set otherwise, at the site and at the hub
//! alike), and a large site's closed day can be larger (1,000 devices reaching 50 names
//! make a record of up to ~500 KiB a day). Without parts such a day could never be
//! sent, and every day after it would wait behind it.
//!
//! The gateway cuts the record's JSON into pieces of `PIECE` bytes; each part says the
//! whole's SHA-256, its index and how many parts there are. The centre puts them
//! together (`Assembler`) as they arrive, checks the whole's digest, and reads the whole
//! as it would one message. Parts that never became whole are a refusal only when the
//! gateway went on to send something else and the day did not arrive whole since: a
//! send cut short is made again from the first part (so the old parts are left over,
//! not lost), and the last parts of a day still on their way are in transit (the day
//! shows as not received yet).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::record::VERSION;

/// A record's JSON up to this size goes as one message: below NATS's default
/// `max_payload` (1 MiB) with room for the headers.
pub const WHOLE_MAX: usize = 512 * 1024;
/// The bytes of the whole in one part (base64 makes a message of ~350 KiB of it).
const PIECE: usize = 256 * 1024;
/// Parts of one record at most (256 MiB): a claim of more is refused before anything
/// is kept of it.
pub const MAX_PARTS: u32 = 1024;

/// One part of a record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartRecord {
    pub version: u32,
    pub site: String,
    pub gateway: String,
    /// The day the whole is a record of (YYYY-MM-DD).
    pub day: String,
    /// SHA-256 of the whole record's JSON, hex.
    pub whole: String,
    pub index: u32,
    pub count: u32,
    /// This part's bytes of the whole, base64.
    pub data: String,
}

impl PartRecord {
    /// The part's own checks, before anything of it is kept.
    pub fn shape(&self) -> Result<(), String> {
        if self.count < 2 || self.count > MAX_PARTS || self.index >= self.count {
            return Err(format!(
                "day {}: part {} of {} (a record is sent in 2 to {MAX_PARTS} parts)",
                self.day, self.index, self.count
            ));
        }
        if self.whole.len() != 64 || !self.whole.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "day {}: a part without the whole's digest",
                self.day
            ));
        }
        Ok(())
    }
}

/// SHA-256 of `bytes`, hex.
pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a record of `len` bytes fits in `MAX_PARTS` parts; the error says why not.
pub fn fits(day: &str, len: usize) -> Result<(), String> {
    if len.div_ceil(PIECE) > MAX_PARTS as usize {
        return Err(format!(
            "day {day} is a record of {} MiB, more than the centre takes ({MAX_PARTS} parts of {} KiB)",
            len >> 20,
            PIECE >> 10
        ));
    }
    Ok(())
}

/// The parts of `payload` (a record's JSON, larger than `WHOLE_MAX`).
pub fn split(site: &str, gateway: &str, day: &str, payload: &[u8]) -> Vec<PartRecord> {
    let whole = sha256(payload);
    let pieces: Vec<&[u8]> = payload.chunks(PIECE).collect();
    let count = pieces.len() as u32;
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| PartRecord {
            version: VERSION,
            site: site.to_owned(),
            gateway: gateway.to_owned(),
            day: day.to_owned(),
            whole: whole.clone(),
            index: i as u32,
            count,
            data: base64::engine::general_purpose::STANDARD.encode(piece),
        })
        .collect()
}

/// The parts of one whole seen so far.
struct Pending {
    day: String,
    count: u32,
    pieces: BTreeMap<u32, Vec<u8>>,
    /// The stream sequences of its first part (what a refusal names) and its last.
    first_seq: u64,
    last_seq: u64,
}

/// Puts parts together at the centre, per subject and whole.
#[derive(Default)]
pub struct Assembler {
    pending: BTreeMap<(String, String), Pending>,
    /// (subject, day) of every whole completed: a part left over for such a day was a
    /// send made again, not a loss.
    completed: BTreeSet<(String, String)>,
    /// Each subject's last message so far (`seen`).
    latest: BTreeMap<String, u64>,
}

/// What `Assembler::add` made of a part.
pub enum Added {
    /// More parts are needed.
    Waiting,
    /// The last part: the whole record's JSON.
    Whole(Vec<u8>),
}

impl Assembler {
    /// Every message read, parts or not, in stream order: what came after a part.
    pub fn seen(&mut self, subject: &str, seq: u64) {
        self.latest.insert(subject.to_owned(), seq);
    }

    /// Takes a part that passed `shape` (and the record's site and version checks).
    pub fn add(&mut self, seq: u64, subject: &str, part: PartRecord) -> Result<Added, String> {
        let piece = base64::engine::general_purpose::STANDARD
            .decode(&part.data)
            .map_err(|e| format!("day {}: a part that is not base64 ({e})", part.day))?;
        let key = (subject.to_owned(), part.whole.clone());
        let pending = self.pending.entry(key.clone()).or_insert_with(|| Pending {
            day: part.day.clone(),
            count: part.count,
            pieces: BTreeMap::new(),
            first_seq: seq,
            last_seq: seq,
        });
        if pending.count != part.count || pending.day != part.day {
            return Err(format!(
                "day {}: part {} says the whole has {} parts, an earlier part of it said {} parts of day {}",
                part.day, part.index, part.count, pending.count, pending.day
            ));
        }
        // A part sent twice (a send made again) is the same bytes: kept once.
        pending.pieces.entry(part.index).or_insert(piece);
        pending.last_seq = seq;
        if pending.pieces.len() < pending.count as usize {
            return Ok(Added::Waiting);
        }
        let Some(done) = self.pending.remove(&key) else {
            return Ok(Added::Waiting);
        };
        let whole: Vec<u8> = done.pieces.into_values().flatten().collect();
        if sha256(&whole) != part.whole {
            return Err(format!(
                "day {}: its {} parts do not give the digest they say",
                done.day, done.count
            ));
        }
        self.completed.insert((subject.to_owned(), done.day));
        Ok(Added::Whole(whole))
    }

    /// Parts that never became whole, of days that did not arrive whole either, after
    /// which the gateway sent something else: (sequence of the first part, subject,
    /// why). A day's latest parts with nothing after them are in transit, not refused.
    pub fn unfinished(self) -> Vec<(u64, String, String)> {
        let Assembler {
            pending,
            completed,
            latest,
        } = self;
        // The latest set of parts per (subject, day): an earlier one was sent again.
        let mut newest: BTreeMap<(String, String), u64> = BTreeMap::new();
        for ((subject, _), p) in &pending {
            let e = newest.entry((subject.clone(), p.day.clone())).or_default();
            *e = (*e).max(p.last_seq);
        }
        pending
            .into_iter()
            .filter(|((subject, _), p)| {
                let key = (subject.clone(), p.day.clone());
                !completed.contains(&key)
                    && newest.get(&key) == Some(&p.last_seq)
                    && latest.get(subject).is_some_and(|l| *l > p.last_seq)
            })
            .map(|((subject, _), p)| {
                let why = format!(
                    "day {}: {} of its {} parts arrived, then the gateway sent other records",
                    p.day,
                    p.pieces.len(),
                    p.count
                );
                (p.first_seq, subject, why)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn parts_in_any_order_give_the_whole_once() {
        let whole = payload(PIECE * 2 + 10);
        let mut parts = split("a", "gw", "2026-12-01", &whole);
        assert_eq!(parts.len(), 3);
        parts.reverse();
        let mut a = Assembler::default();
        let mut got = None;
        for (seq, p) in parts.iter().cloned().enumerate() {
            p.shape().unwrap();
            if let Added::Whole(w) = a.add(seq as u64, "s", p).unwrap() {
                got = Some(w);
            }
        }
        assert_eq!(got.as_deref(), Some(&whole[..]));
        assert!(a.unfinished().is_empty());
    }

    #[test]
    fn a_changed_part_or_a_missing_one_is_named() {
        let whole = payload(PIECE + 1);
        let mut parts = split("a", "gw", "2026-12-01", &whole);
        let mut a = Assembler::default();
        let forged = base64::engine::general_purpose::STANDARD.encode(b"x");
        parts[1].data = forged;
        assert!(matches!(
            a.add(1, "s", parts[0].clone()),
            Ok(Added::Waiting)
        ));
        let err = a.add(2, "s", parts[1].clone()).err().unwrap();
        assert!(err.contains("do not give the digest"), "{err}");

        // The first part alone, last on its subject: in transit.
        let parts = split("a", "gw", "2026-12-02", &whole);
        let mut a = Assembler::default();
        a.seen("s", 7);
        assert!(matches!(
            a.add(7, "s", parts[0].clone()),
            Ok(Added::Waiting)
        ));
        assert!(a.unfinished().is_empty());
        // ... and with another record after it: a part is missing.
        let mut a = Assembler::default();
        a.seen("s", 7);
        assert!(matches!(
            a.add(7, "s", parts[0].clone()),
            Ok(Added::Waiting)
        ));
        a.seen("s", 8);
        let left = a.unfinished();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, 7);
        assert!(left[0].2.contains("1 of its 2 parts arrived"), "{:?}", left);
    }

    #[test]
    fn a_send_cut_short_and_made_again_is_no_loss() {
        let first = payload(PIECE + 1);
        let mut again = first.clone();
        again[0] ^= 1;
        let mut a = Assembler::default();
        let cut = split("a", "gw", "2026-12-03", &first);
        a.seen("s", 1);
        assert!(matches!(a.add(1, "s", cut[0].clone()), Ok(Added::Waiting)));
        let again = split("a", "gw", "2026-12-03", &again);
        // The send made again, still on its way: neither set is a refusal.
        a.seen("s", 2);
        assert!(matches!(
            a.add(2, "s", again[0].clone()),
            Ok(Added::Waiting)
        ));
        let mut b = Assembler::default();
        std::mem::swap(&mut a, &mut b);
        assert!(b.unfinished().is_empty());
        // ... and arrived whole.
        a.seen("s", 1);
        let _ = a.add(1, "s", cut[0].clone()).unwrap();
        for (i, p) in again.into_iter().enumerate() {
            a.seen("s", 2 + i as u64);
            let _ = a.add(2 + i as u64, "s", p).unwrap();
        }
        a.seen("s", 9);
        assert!(a.unfinished().is_empty());
    }

    #[test]
    fn a_record_beyond_the_parts_is_not_cut() {
        let most = MAX_PARTS as usize * PIECE;
        assert!(fits("2026-12-01", most).is_ok());
        let err = fits("2026-12-01", most + 1).unwrap_err();
        assert!(
            err.contains("more than the centre takes (1024 parts of 256 KiB)"),
            "{err}"
        );
    }

    #[test]
    fn claims_beyond_the_bounds_are_refused() {
        let mut p = split("a", "gw", "2026-12-01", &payload(PIECE + 1))[0].clone();
        p.count = MAX_PARTS + 1;
        assert!(p.shape().is_err());
        p.count = 2;
        p.index = 2;
        assert!(p.shape().is_err());
        p.index = 0;
        p.whole = "zz".into();
        assert!(p.shape().is_err());
    }
}
