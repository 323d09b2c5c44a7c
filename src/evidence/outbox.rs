//! What a gateway of a fleet sends to the centre (src/fleet/, docs/FLEET.md): every
//! closed day as it was sealed, with what proves it (its digest, the digest it was
//! chained on, the day's purges), the policies in force that day, and which days were
//! sent. The sending itself is the fleet's; the ledger only says what is due, so a
//! day is due until the centre's engine took it, however long the WAN is down.
//!
//! A day the daemon ran without a single attempt has no block (nothing to seal) but is
//! sent too, as a day with no rows: the centre can then tell "nothing was tried" from
//! "this gateway said nothing" (down, or cut off).

use rusqlite::{OptionalExtension, params};

use super::store::{Fail, PolicyChange, Store, StoreError, previous_digest, purges_of};

/// A closed day as it goes to the centre.
#[derive(Debug, Clone)]
pub struct DayOut {
    /// YYYY-MM-DD (UTC).
    pub day: String,
    /// None: the daemon ran that day and nothing was recorded.
    pub sealed: Option<SealedOut>,
    /// The policies in force that day (JSON of the profiles in force, each distinct one
    /// once, in the order they were first in force).
    pub policies: Vec<String>,
    pub changes: Vec<PolicyChange>,
    /// Erasures recorded that day: (Unix time, client, rows); part of the digest.
    pub purges: Vec<(u64, String, u64)>,
}

#[derive(Debug, Clone)]
pub struct SealedOut {
    pub digest: String,
    /// The digest this day is chained on (the day before's, or the retention's anchor).
    pub previous: String,
    /// The block as the ledger stores it (zstd).
    pub block: Vec<u8>,
    pub rows: u64,
}

impl DayOut {
    /// What the ledger remembers as sent: the digest, or "" for a day without rows.
    pub fn digest(&self) -> &str {
        self.sealed.as_ref().map_or("", |s| s.digest.as_str())
    }
}

impl Store {
    /// Records that the daemon ran on `today` under `policy` (the profiles in force, as
    /// JSON): the day is then due at the centre even without attempts, and says which
    /// policies were in force. Forgets what the retention forgets.
    pub fn note_day(
        &mut self,
        today: u32,
        policy: &str,
        retention_days: u32,
    ) -> Result<(), StoreError> {
        let day = super::store::day_text(today);
        let cutoff = super::store::day_text(today.saturating_sub(retention_days));
        self.in_transaction(|tx| {
            tx.prepare_cached("INSERT OR IGNORE INTO day_policies (day, policy) VALUES (?1, ?2)")?
                .execute(params![day, policy])?;
            tx.prepare_cached("DELETE FROM day_policies WHERE day < ?1")?
                .execute([&cutoff])?;
            tx.prepare_cached("DELETE FROM published WHERE day < ?1")?
                .execute([&cutoff])?;
            Ok(())
        })
    }

    /// The closed days not sent yet, or sent with another digest than they have now (a
    /// purge re-chained them, or a day was sealed again), oldest first, at most `max`. A
    /// day before `today` that still has open rows is not closed yet: the next flush
    /// seals it.
    pub fn unpublished(&self, today: u32, max: usize) -> Result<Vec<DayOut>, StoreError> {
        let today = super::store::day_text(today);
        self.read(|conn| {
            let days: Vec<String> = {
                let mut q = conn.prepare_cached(
                    "SELECT d FROM (SELECT day AS d FROM days UNION SELECT day AS d FROM day_policies)
                     WHERE d < ?1
                       AND NOT EXISTS (SELECT 1 FROM evidence e WHERE e.day = d)
                       AND coalesce((SELECT digest FROM days x WHERE x.day = d), '')
                           IS NOT (SELECT digest FROM published p WHERE p.day = d)
                     ORDER BY d LIMIT ?2",
                )?;
                let r = q.query_map(params![today, max as i64], |r| r.get(0))?;
                r.collect::<rusqlite::Result<_>>()?
            };
            days.into_iter().map(|d| day_out(conn, d)).collect()
        })
    }

    /// Records that the centre's engine took a day with this digest ("" for a day
    /// without rows).
    pub fn mark_published(&mut self, day: &str, digest: &str) -> Result<(), StoreError> {
        self.in_transaction(|tx| {
            tx.prepare_cached(
                "INSERT INTO published (day, digest, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (day) DO UPDATE SET digest = excluded.digest, at = excluded.at",
            )?
            .execute(params![day, digest, crate::clock::unix_now() as i64])?;
            Ok(())
        })
    }

    /// The digest chain as recorded: (day, digest), oldest first.
    pub fn chain(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|conn| {
            let mut q = conn.prepare_cached("SELECT day, digest FROM days ORDER BY day")?;
            let r = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(r.collect::<rusqlite::Result<_>>()?)
        })
    }
}

fn day_out(conn: &rusqlite::Connection, day: String) -> Result<DayOut, Fail> {
    let sealed: Option<(String, Vec<u8>, i64)> = conn
        .prepare_cached(
            "SELECT d.digest, s.block, s.rows FROM days d JOIN sealed s ON s.day = d.day
             WHERE d.day = ?1",
        )?
        .query_row([&day], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let sealed = match sealed {
        Some((digest, block, rows)) => Some(SealedOut {
            digest,
            previous: previous_digest(conn, &day)?,
            block,
            rows: rows as u64,
        }),
        None => None,
    };
    let policies: Vec<String> = {
        let mut q =
            conn.prepare_cached("SELECT policy FROM day_policies WHERE day = ?1 ORDER BY rowid")?;
        let r = q.query_map([&day], |r| r.get(0))?;
        r.collect::<rusqlite::Result<_>>()?
    };
    let changes: Vec<PolicyChange> = {
        let mut q =
            conn.prepare_cached("SELECT at, who, what FROM changes WHERE day = ?1 ORDER BY at")?;
        let r = q.query_map([&day], |r| {
            Ok(PolicyChange {
                at: r.get::<_, i64>(0)? as u64,
                who: r.get(1)?,
                what: r.get(2)?,
            })
        })?;
        r.collect::<rusqlite::Result<_>>()?
    };
    Ok(DayOut {
        purges: purges_of(conn, &day)?,
        day,
        sealed,
        policies,
        changes,
    })
}
