//! What travels on the evidence streams: a gateway's closed day (`DayRecord`) and its
//! head (`HeadRecord`: the chain as its ledger has it now, and whether the ledger
//! verifies); a record too large for one message travels as parts (`PartRecord`). All
//! are JSON with a version; the centre refuses what does not parse, has another
//! version, claims a site or gateway its subject does not name, or carries a block that
//! does not decode or does not give its digest (`check`).

use base64::Engine;
use serde::{Deserialize, Serialize};

pub use super::parts::PartRecord;
use crate::evidence::block::{self, DayRows};
use crate::evidence::report::ProfileInForce;
use crate::evidence::store::{PolicyChange, chain_digest};

pub const VERSION: u32 = 1;

/// One message of the stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    Day(DayRecord),
    Head(HeadRecord),
    /// A piece of a record too large for one message (src/fleet/parts.rs).
    Part(PartRecord),
}

/// A closed UTC day of one gateway's ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DayRecord {
    pub version: u32,
    pub site: String,
    pub gateway: String,
    /// YYYY-MM-DD.
    pub day: String,
    /// Rows in the block (0: the gateway ran that day and nothing was recorded).
    pub rows: u64,
    /// The day's digest and the one it is chained on; None for a day without rows
    /// (nothing sealed, nothing chained).
    pub digest: Option<String>,
    pub previous: Option<String>,
    /// The sealed block as the ledger keeps it (zstd), base64.
    pub block: Option<String>,
    /// Erasures recorded that day: (Unix time, client, rows); part of the digest.
    pub purges: Vec<(u64, String, u64)>,
    /// The policies in force that day (each distinct one once).
    pub policies: Vec<Vec<ProfileInForce>>,
    /// The policy changes of that day (who, when, what), from the gateway's ledger.
    pub changes: Vec<PolicyChange>,
    /// The gateway's `metrics.client_labels`: what its client labels are.
    pub client_labels: String,
    /// Unix seconds.
    pub published_at: u64,
}

/// A gateway's ledger as it stands: sent at start and whenever its chain or its
/// verification changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadRecord {
    pub version: u32,
    pub site: String,
    pub gateway: String,
    /// Unix seconds.
    pub at: u64,
    /// The day the gateway still counts into (not closed, not sent).
    pub open_day: String,
    /// The ledger's digest chain now: (day, digest).
    pub chain: Vec<(String, String)>,
    /// The first day whose digest the ledger's own check does not reproduce; None when
    /// the chain holds.
    pub broken_at: Option<String>,
    /// Times the ledger was started anew over an unreadable file.
    pub breaks: u64,
    pub telesink: String,
}

/// A message the centre does not take, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// The stream's sequence number of the message.
    pub seq: u64,
    pub subject: String,
    pub why: String,
}

/// `telesink.evidence.<site>.<gateway>`: where a gateway sends.
pub fn subject(site: &str, gateway: &str) -> String {
    format!("{}.{site}.{gateway}", super::SUBJECT_PREFIX)
}

/// A day's rows, decoded from a record that passed `check`.
pub struct CheckedDay {
    pub record: DayRecord,
    /// None for a day without rows.
    pub rows: Option<DayRows>,
}

/// Reads one message: what it is, or why it is refused. `subject` is the message's
/// subject, which the hub's permissions tie to the site that sent it: a record that
/// claims another site or gateway is foreign.
/// A day outside `period` (YYYY-MM-DD, both included) is checked for its shape only and
/// its block is not kept: the report does not read it, and a year of a large fleet's
/// blocks need not be decoded for a month's report (its digests still chain).
pub fn check(
    subject: &str,
    payload: &[u8],
    period: Option<(&str, &str)>,
) -> Result<Checked, String> {
    let mut parts = subject.splitn(5, '.');
    let (Some("telesink"), Some("evidence"), Some(site), Some(gateway), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err("not a telesink evidence subject (telesink.evidence.<site>.<gateway>)".into());
    };
    let record: Record = serde_json::from_slice(payload)
        .map_err(|e| format!("not a telesink evidence record ({e})"))?;
    let (version, r_site, r_gateway) = match &record {
        Record::Day(d) => (d.version, &d.site, &d.gateway),
        Record::Head(h) => (h.version, &h.site, &h.gateway),
        Record::Part(p) => (p.version, &p.site, &p.gateway),
    };
    if version != VERSION {
        return Err(format!(
            "record version {version}, this telesink reads {VERSION}: upgrade the central telesink"
        ));
    }
    if r_site != site || r_gateway != gateway {
        return Err(format!(
            "foreign: the record says site {r_site} gateway {r_gateway}, its subject is site {site} gateway {gateway}"
        ));
    }
    match record {
        Record::Head(h) => Ok(Checked::Head(h)),
        Record::Day(d) => check_day(d, period).map(|d| Checked::Day(Box::new(d))),
        Record::Part(p) => p.shape().map(|()| Checked::Part(p)),
    }
}

pub enum Checked {
    Day(Box<CheckedDay>),
    Head(HeadRecord),
    /// To be put together with the others of its whole (`parts::Assembler`).
    Part(PartRecord),
}

fn check_day(mut d: DayRecord, period: Option<(&str, &str)>) -> Result<CheckedDay, String> {
    let number = crate::clock::day_number(&d.day)
        .filter(|n| crate::clock::utc_date(u64::from(*n) * 86_400) == d.day)
        .ok_or_else(|| format!("not a day: {:?}", d.day))?;
    // A day with rows has a block, its digest and the digest it is chained on; a day
    // without has none of them.
    let sealed = d.block.is_some() && d.digest.is_some() && d.previous.is_some();
    let empty = d.block.is_none() && d.digest.is_none() && d.previous.is_none() && d.rows == 0;
    if !sealed && !empty {
        return Err(format!(
            "day {}: a block needs its digest and the digest it is chained on",
            d.day
        ));
    }
    let outside =
        period.is_some_and(|(since, until)| d.day.as_str() < since || d.day.as_str() > until);
    let (Some(block64), Some(digest), Some(previous)) = (&d.block, &d.digest, &d.previous) else {
        return Ok(CheckedDay {
            record: d,
            rows: None,
        });
    };
    if outside {
        d.block = None;
        return Ok(CheckedDay {
            record: d,
            rows: None,
        });
    }
    let compressed = base64::engine::general_purpose::STANDARD
        .decode(block64)
        .map_err(|e| format!("day {}: the block is not base64 ({e})", d.day))?;
    let raw = block::decompress(&compressed)
        .map_err(|e| format!("day {}: the block does not decode ({e})", d.day))?;
    let rows = DayRows::decode(&raw)
        .map_err(|e| format!("day {}: the block does not decode ({e})", d.day))?;
    if rows.day != number {
        return Err(format!(
            "day {}: the block holds day {}",
            d.day,
            crate::evidence::store::day_text(rows.day)
        ));
    }
    if rows.rows.len() as u64 != d.rows {
        return Err(format!(
            "day {}: {} rows said, the block holds {}",
            d.day,
            d.rows,
            rows.rows.len()
        ));
    }
    let computed = chain_digest(previous, &raw, &d.purges);
    if &computed != digest {
        return Err(format!(
            "day {}: the block does not give its digest (says {}, gives {})",
            d.day,
            short(digest),
            short(&computed)
        ));
    }
    Ok(CheckedDay {
        record: d,
        rows: Some(rows),
    })
}

/// The first 16 hex digits of a digest, as messages show it.
pub fn short(digest: &str) -> &str {
    digest.get(..16).unwrap_or(digest)
}
