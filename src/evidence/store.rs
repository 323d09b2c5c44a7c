//! The ledger on disk: SQLite in WAL mode.
//!
//! - `evidence`: the days still open (today, and a day until the first flush after it
//!   ends), one row per (UTC day, client label, profile, layer, name) with its count and
//!   first and last sighting; a flush adds to the counts in place.
//! - `sealed`: every closed day as one compact block (src/evidence/block.rs): a year of
//!   rows fits in a few bytes each and is read back in a second.
//! - `days`: the digest chain. Tamper evidence: a closed day's digest is SHA-256 over the
//!   previous day's digest, the day's block before compression (its rows in key order,
//!   one canonical encoding) and any purge recorded that day; `verify` recomputes the
//!   chain and names the first day that does not match.
//! - `anchor`: the digest of the last day the retention removed, which the first kept
//!   day was chained on; `purges`: every erasure (GDPR), which re-chains the days it
//!   touched so the chain stays verifiable and says that a purge happened.
//! - `changes`: the policy history (toggles, rules, reloads, starts, stops: who, when,
//!   what), so a report says which policy was in force over its period. Not part of the
//!   digest chain: it records the configuration, not attempts.
//! - `breaks`: each time the file before this one was unreadable and set aside, so the
//!   attempts before that moment are not in this file. Reports show it, `report verify`
//!   names it, `/health` says it for a day and a metric counts it: a ledger started anew
//!   is never mistaken for a complete one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::aggregate::Row;
use super::block::{self, BlockError, DayRows};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("evidence file {path}: {source}")]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("evidence file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "evidence file {path}: the sealed day {day} cannot be read ({source}); `telesink report verify` names the first day that does not match"
    )]
    Block {
        path: PathBuf,
        day: String,
        source: BlockError,
    },
    #[error(
        "evidence file {path}: the digest chain breaks at {day}; a purge recomputes the digests and would hide that, so none was made. Keep a copy of the file for the investigation, then move it aside to start a new ledger"
    )]
    Broken { path: PathBuf, day: String },
    /// Nothing to erase: recording a purge of nobody would say an erasure happened.
    #[error("evidence file {path}: no client {client} in the ledger, nothing purged{choices}")]
    NoClient {
        path: PathBuf,
        client: String,
        choices: String,
    },
}

/// What went wrong inside a transaction, before the path is known to the message.
pub(super) enum Fail {
    Sql(rusqlite::Error),
    Block(String, BlockError),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Fail {
        Fail::Sql(e)
    }
}

impl Fail {
    fn at(self, path: &Path) -> StoreError {
        match self {
            Fail::Sql(source) => StoreError::Sql {
                path: path.to_owned(),
                source,
            },
            Fail::Block(day, source) => StoreError::Block {
                path: path.to_owned(),
                day,
                source,
            },
        }
    }
}

/// A row as written (the client is its label), and as reports show it: a report's line
/// is a row, or a group of rows with the fields not grouped by left empty.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stored {
    pub day: String,
    pub client: String,
    pub profile: String,
    pub layer: String,
    pub name: String,
    pub count: u64,
    /// Unix seconds.
    pub first_seen: u64,
    pub last_seen: u64,
}

/// One change of the policy in force, as the daemon made it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyChange {
    /// Unix seconds.
    pub at: u64,
    /// "uid 1000", "SIGHUP", "timer", "telesink".
    pub who: String,
    /// In words: "profile ads off for every group until 14:30 UTC (in 600 s)".
    pub what: String,
}

/// A new ledger was started here because the file before was unreadable.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Break {
    /// Unix seconds, and its UTC day.
    pub at: u64,
    pub day: String,
    /// Why the file before could not be read.
    pub reason: String,
    /// Where it was moved (it still holds the attempts before `at`).
    pub aside: String,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the ledger was started anew because the file before was unreadable ({}); the attempts before are in {}, not in this file",
            crate::clock::utc_time(self.at),
            self.reason,
            self.aside
        )
    }
}

/// The answer of `telesink report verify`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Verification {
    pub ok: bool,
    /// Closed days whose digests were recomputed and matched (when the chain holds).
    pub days: Option<usize>,
    /// The first day that does not match.
    pub first_bad_day: Option<String>,
    pub purges: Vec<(u64, String, u64)>,
    pub breaks: Vec<Break>,
}

pub struct Store {
    path: PathBuf,
    conn: Connection,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS evidence (
    day TEXT NOT NULL, client TEXT NOT NULL, profile TEXT NOT NULL, layer TEXT NOT NULL,
    name TEXT NOT NULL, count INTEGER NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
    PRIMARY KEY (day, client, profile, layer, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sealed (
    day TEXT PRIMARY KEY, rows INTEGER NOT NULL, block BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS days (
    day TEXT PRIMARY KEY, digest TEXT NOT NULL, rows INTEGER NOT NULL, closed_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS anchor (
    id INTEGER PRIMARY KEY CHECK (id = 1), day TEXT NOT NULL, digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS purges (
    at INTEGER NOT NULL, day TEXT NOT NULL, client TEXT NOT NULL, rows INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS breaks (
    at INTEGER NOT NULL, day TEXT NOT NULL, reason TEXT NOT NULL, aside TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    at INTEGER NOT NULL, day TEXT NOT NULL, who TEXT NOT NULL, what TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS day_policies (
    day TEXT NOT NULL, policy TEXT NOT NULL, UNIQUE (day, policy));
CREATE TABLE IF NOT EXISTS published (
    day TEXT PRIMARY KEY, digest TEXT NOT NULL, at INTEGER NOT NULL);
";

/// The file format (`PRAGMA user_version`): 2 seals closed days into blocks. A file of
/// format 1 kept closed days as rows; opening it un-closes them, and the next flush seals
/// them and computes their digests anew (logged).
const FORMAT: i64 = 2;

/// Adds a row to the open rows: counts add up, first and last widen.
const ADD_ROW: &str = "INSERT INTO evidence (day, client, profile, layer, name, count, first, last)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
    ON CONFLICT (day, client, profile, layer, name) DO UPDATE SET
      count = count + excluded.count,
      first = min(first, excluded.first),
      last = max(last, excluded.last)";

/// The UTC day of a day number (days since 1970-01-01) as the ledger writes it.
pub fn day_text(day: u32) -> String {
    crate::clock::utc_date(u64::from(day) * 86_400)
}

impl Store {
    /// Opens (or creates) the ledger. A file that is not a readable ledger is moved aside
    /// (`<file>.corrupt-<unix time>`) with a log line, and a new one is started: the
    /// evidence of the past is kept for inspection, and nothing else stops.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: path.to_owned(),
                source,
            })?;
        }
        match Self::try_open(path) {
            Ok(store) => Ok(store),
            Err(e) if path.exists() => {
                let aside = path.with_extension(format!("corrupt-{}", crate::clock::unix_now()));
                warn!(
                    "evidence file {} is unreadable ({e}); moved aside to {} and a new one started",
                    path.display(),
                    aside.display()
                );
                std::fs::rename(path, &aside).map_err(|source| StoreError::Io {
                    path: path.to_owned(),
                    source,
                })?;
                for ext in ["sqlite-wal", "sqlite-shm"] {
                    let _ = std::fs::remove_file(path.with_extension(ext));
                }
                let store = Self::try_open(path)?;
                let now = crate::clock::unix_now();
                store
                    .conn
                    .execute(
                        "INSERT INTO breaks (at, day, reason, aside) VALUES (?1, ?2, ?3, ?4)",
                        params![
                            now as i64,
                            day_text((now / 86_400) as u32),
                            e.to_string(),
                            aside.display().to_string()
                        ],
                    )
                    .map_err(|source| StoreError::Sql {
                        path: path.to_owned(),
                        source,
                    })?;
                Ok(store)
            }
            Err(e) => Err(e),
        }
    }

    /// Opens the ledger again after a write error (a file made read-only for a while, a
    /// full disk): a connection that SQLite opened read-only stays read-only, so only a
    /// new one can write once the cause is gone. Never sets the file aside: a file that
    /// cannot be written is not a corrupt one.
    pub fn reopen(path: &Path) -> Result<Store, StoreError> {
        Self::try_open(path)
    }

    fn try_open(path: &Path) -> Result<Store, StoreError> {
        let sql = |source| StoreError::Sql {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        // Reading the schema back proves the file is a database, not just openable.
        conn.query_row("SELECT count(*) FROM days", [], |r| r.get::<_, i64>(0))
            .map_err(sql)?;
        let format: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql)?;
        if format < FORMAT {
            let reopened = conn
                .execute(
                    "DELETE FROM days WHERE day NOT IN (SELECT day FROM sealed)",
                    [],
                )
                .map_err(sql)?;
            if reopened > 0 {
                info!(
                    "evidence file {}: format {format} upgraded to {FORMAT}; {reopened} closed days are sealed into blocks at the next flush and their digests computed anew",
                    path.display()
                );
            }
            conn.pragma_update(None, "user_version", FORMAT)
                .map_err(sql)?;
        }
        Ok(Store {
            path: path.to_owned(),
            conn,
        })
    }

    /// Opens an existing ledger read-only (reports while the daemon is down).
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|source| StoreError::Sql {
                path: path.to_owned(),
                source,
            })?;
        Ok(Store {
            path: path.to_owned(),
            conn,
        })
    }

    /// Writes rows (adding to what is there) in one transaction, then seals the days
    /// before `today` that are still open and deletes days older than `retention`.
    pub fn flush(
        &mut self,
        rows: &[Row],
        label: &dyn Fn(std::net::IpAddr) -> String,
        today: u32,
        retention_days: u32,
    ) -> Result<(), StoreError> {
        let labelled = labelled(rows, label);
        self.flush_labelled(&labelled, &[], today, retention_days)
    }

    /// The same for rows whose client is a label already (a recovery file's), with the
    /// policy changes recorded since the last flush, in the same transaction.
    pub fn flush_labelled(
        &mut self,
        rows: &[Stored],
        changes: &[PolicyChange],
        today: u32,
        retention_days: u32,
    ) -> Result<(), StoreError> {
        self.in_transaction(|tx| {
            add_changes_in(tx, changes)?;
            flush_in(tx, rows, today, retention_days)
        })
    }

    /// The policy changes of the days between two days (inclusive), oldest first.
    pub fn changes(&self, since: &str, until: &str) -> Result<Vec<PolicyChange>, StoreError> {
        self.read(|conn| {
            let mut q = conn.prepare(
                "SELECT at, who, what FROM changes WHERE day >= ?1 AND day <= ?2 ORDER BY at",
            )?;
            let r = q.query_map([since, until], |r| {
                Ok(PolicyChange {
                    at: r.get::<_, i64>(0)? as u64,
                    who: r.get(1)?,
                    what: r.get(2)?,
                })
            })?;
            Ok(r.collect::<Result<_, _>>()?)
        })
    }

    /// Every time the ledger was started anew, oldest first.
    pub fn breaks(&self) -> Result<Vec<Break>, StoreError> {
        self.read(|conn| {
            let mut q = conn.prepare("SELECT at, day, reason, aside FROM breaks ORDER BY at")?;
            let r = q.query_map([], |r| {
                Ok(Break {
                    at: r.get::<_, i64>(0)? as u64,
                    day: r.get(1)?,
                    reason: r.get(2)?,
                    aside: r.get(3)?,
                })
            })?;
            Ok(r.collect::<Result<_, _>>()?)
        })
    }

    /// The file's size in bytes (database and write-ahead log).
    pub fn size(&self) -> u64 {
        ["sqlite", "sqlite-wal"]
            .iter()
            .filter_map(|ext| std::fs::metadata(self.path.with_extension(ext)).ok())
            .map(|m| m.len())
            .sum::<u64>()
            .max(std::fs::metadata(&self.path).map_or(0, |m| m.len()))
    }

    /// Visits the days between two days (inclusive, YYYY-MM-DD) in order: a sealed day
    /// decoded from its block, an open day from its rows.
    pub fn each_day(
        &self,
        since: &str,
        until: &str,
        mut visit: impl FnMut(&DayRows),
    ) -> Result<(), StoreError> {
        self.read(|conn| each_day_in(conn, since, until, &mut visit))
    }

    /// The digest of the last closed day up to `until`, if any.
    pub fn last_digest(&self, until: &str) -> Result<Option<(String, String)>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .query_row(
                    "SELECT day, digest FROM days WHERE day <= ?1 ORDER BY day DESC LIMIT 1",
                    [until],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?)
        })
    }

    /// Recomputes the digest chain: Ok(days checked), or Err(the first day whose block
    /// does not give its recorded digest, cannot be read, or has rows beside it).
    pub fn verify(&self) -> Result<Result<usize, String>, StoreError> {
        self.read(verify_in)
    }

    /// What `telesink report verify` answers: the chain, the purges, and the breaks (each
    /// time the ledger was started anew over an unreadable file). `ok` only when the
    /// chain holds and the ledger was never started anew: a ledger that lost its past
    /// is not complete evidence, whatever its chain says.
    pub fn verification(&self) -> Result<Verification, StoreError> {
        let chain = self.verify()?;
        let breaks = self.breaks()?;
        Ok(Verification {
            ok: chain.is_ok() && breaks.is_empty(),
            days: chain.as_ref().ok().copied(),
            first_bad_day: chain.err(),
            purges: self.purges()?,
            breaks,
        })
    }

    /// Erases one client's rows (GDPR erasure), records the purge, and re-chains the
    /// closed days from the first one it touched. Returns the rows deleted. Refused on a
    /// chain that does not verify: re-chaining would hide where it broke.
    pub fn purge(&mut self, client: &str) -> Result<usize, StoreError> {
        if let Err(day) = self.verify()? {
            return Err(StoreError::Broken {
                path: self.path.clone(),
                day,
            });
        }
        let mut clients = std::collections::BTreeSet::new();
        self.each_day("0000-01-01", "9999-12-31", |day| {
            clients.extend(day.clients.iter().cloned());
        })?;
        if !clients.contains(client) {
            let all: Vec<String> = clients.into_iter().collect();
            return Err(StoreError::NoClient {
                path: self.path.clone(),
                client: client.to_owned(),
                choices: crate::suggest::choices(client, "clients", &all),
            });
        }
        let n = self.in_transaction(|tx| purge_in(tx, client))?;
        info!(client, rows = n, "evidence: client purged");
        Ok(n)
    }

    /// Purges recorded: (Unix time, client, rows).
    pub fn purges(&self) -> Result<Vec<(u64, String, u64)>, StoreError> {
        self.read(|conn| {
            let mut q = conn.prepare("SELECT at, client, rows FROM purges ORDER BY at")?;
            let r = q.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get(1)?,
                    r.get::<_, i64>(2)? as u64,
                ))
            })?;
            Ok(r.collect::<Result<_, _>>()?)
        })
    }

    /// Runs a read on the file, its failure told with the file's path.
    pub(super) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        f(&self.conn).map_err(|e| e.at(&self.path))
    }

    /// Runs `f` in one transaction: all of it is written, or none.
    pub(super) fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&Connection) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| Fail::from(e).at(&self.path))?;
        let out = f(&tx).map_err(|e| e.at(&self.path))?;
        tx.commit().map_err(|e| Fail::from(e).at(&self.path))?;
        Ok(out)
    }
}

fn each_day_in(
    conn: &Connection,
    since: &str,
    until: &str,
    visit: &mut impl FnMut(&DayRows),
) -> Result<(), Fail> {
    let days: Vec<(String, bool)> = {
        let mut q = conn.prepare_cached(
            "SELECT day, 1 FROM sealed WHERE day >= ?1 AND day <= ?2
             UNION ALL
             SELECT DISTINCT day, 0 FROM evidence WHERE day >= ?1 AND day <= ?2
             ORDER BY 1, 2 DESC",
        )?;
        let r = q.query_map([since, until], |r| Ok((r.get(0)?, r.get(1)?)))?;
        r.collect::<Result<_, _>>()?
    };
    for (day, sealed) in days {
        let rows = if sealed {
            // Listed a moment ago in the same connection: it is there.
            let (raw, _) =
                sealed_day(conn, &day)?.ok_or(Fail::Sql(rusqlite::Error::QueryReturnedNoRows))?;
            DayRows::decode(&raw).map_err(|e| Fail::Block(day.clone(), e))?
        } else {
            open_day(conn, &day)?
        };
        visit(&rows);
    }
    Ok(())
}

fn add_changes_in(conn: &Connection, changes: &[PolicyChange]) -> Result<(), Fail> {
    let mut put =
        conn.prepare_cached("INSERT INTO changes (at, day, who, what) VALUES (?1, ?2, ?3, ?4)")?;
    for c in changes {
        put.execute(params![
            c.at as i64,
            day_text((c.at / 86_400) as u32),
            c.who,
            c.what
        ])?;
    }
    Ok(())
}

/// Rows with their client labelled, as they are written.
pub fn labelled(rows: &[Row], label: &dyn Fn(std::net::IpAddr) -> String) -> Vec<Stored> {
    rows.iter()
        .map(|r| Stored {
            day: day_text(r.day),
            client: label(r.client),
            profile: r.profile.clone(),
            layer: r.layer.name().to_owned(),
            name: r.name.clone(),
            count: r.count,
            first_seen: r.first,
            last_seen: r.last,
        })
        .collect()
}

fn flush_in(
    conn: &Connection,
    rows: &[Stored],
    today: u32,
    retention_days: u32,
) -> Result<(), Fail> {
    // A row of a day already sealed (the clock set back, or rows put back after a failed
    // flush across midnight) reopens that day: its block goes back into rows, and the
    // chain is recomputed from it once it is sealed again; unless the chain was broken
    // already: recomputing it would hide where.
    let mut late = Vec::new();
    for day in rows
        .iter()
        .map(|r| r.day.as_str())
        .collect::<BTreeSet<&str>>()
    {
        if conn
            .prepare_cached("SELECT 1 FROM sealed WHERE day = ?1")?
            .exists([day])?
        {
            late.push(day.to_owned());
        }
    }
    let broken = match late.is_empty() {
        true => None,
        false => verify_in(conn)?.err(),
    };
    for day in &late {
        unseal(conn, day)?;
    }
    {
        let mut up = conn.prepare_cached(ADD_ROW)?;
        for r in rows {
            up.execute(params![
                r.day,
                r.client,
                r.profile,
                r.layer,
                r.name,
                r.count as i64,
                r.first_seen as i64,
                r.last_seen as i64
            ])?;
        }
    }
    let cutoff = day_text(today.saturating_sub(retention_days));
    conn.execute("DELETE FROM evidence WHERE day < ?1", [&cutoff])?;
    conn.execute("DELETE FROM sealed WHERE day < ?1", [&cutoff])?;
    conn.execute("DELETE FROM changes WHERE day < ?1", [&cutoff])?;
    // The chain goes on from the last day that leaves: its digest stays as the anchor
    // the first kept day was chained on.
    conn.execute(
        "INSERT INTO anchor (id, day, digest)
           SELECT 1, day, digest FROM days WHERE day < ?1 ORDER BY day DESC LIMIT 1
         ON CONFLICT (id) DO UPDATE SET day = excluded.day, digest = excluded.digest",
        [&cutoff],
    )?;
    conn.execute("DELETE FROM days WHERE day < ?1", [&cutoff])?;
    close_days(conn, &day_text(today))?;
    match (late.first(), broken) {
        (Some(from), None) => rechain(conn, from)?,
        (Some(_), Some(at)) => warn!(
            "evidence: the digest chain was broken at {at} before rows arrived for a sealed day; it is not recomputed, so `telesink report verify` keeps showing the break"
        ),
        (None, _) => {}
    }
    Ok(())
}

/// The open rows of one day.
fn open_day(conn: &Connection, day: &str) -> Result<DayRows, Fail> {
    let mut q = conn.prepare_cached(
        "SELECT day, client, profile, layer, name, count, first, last FROM evidence
         WHERE day = ?1",
    )?;
    let rows = q
        .query_map([day], stored)?
        .collect::<rusqlite::Result<Vec<Stored>>>()?;
    let number = crate::clock::day_number(day)
        .ok_or_else(|| Fail::Block(day.to_owned(), BlockError::Number))?;
    Ok(DayRows::from_stored(number, &rows))
}

/// A sealed day's canonical bytes and its row count, if the day is sealed.
pub(super) fn sealed_day(conn: &Connection, day: &str) -> Result<Option<(Vec<u8>, i64)>, Fail> {
    let found: Option<(Vec<u8>, i64)> = conn
        .prepare_cached("SELECT block, rows FROM sealed WHERE day = ?1")?
        .query_row([day], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match found {
        None => Ok(None),
        Some((block, rows)) => block::decompress(&block)
            .map(|raw| Some((raw, rows)))
            .map_err(|e| Fail::Block(day.to_owned(), e)),
    }
}

/// Writes a day's block (replacing what was sealed for it); returns its canonical bytes.
fn write_block(conn: &Connection, day: &str, rows: &DayRows) -> Result<Vec<u8>, Fail> {
    let raw = rows.encode();
    let compressed = block::compress(&raw).map_err(|e| Fail::Block(day.to_owned(), e))?;
    conn.prepare_cached(
        "INSERT INTO sealed (day, rows, block) VALUES (?1, ?2, ?3)
         ON CONFLICT (day) DO UPDATE SET rows = excluded.rows, block = excluded.block",
    )?
    .execute(params![day, rows.rows.len() as i64, compressed])?;
    Ok(raw)
}

/// Moves a sealed day back into rows and takes its digest away; false if it was not
/// sealed.
fn unseal(conn: &Connection, day: &str) -> Result<bool, Fail> {
    let Some((raw, _)) = sealed_day(conn, day)? else {
        return Ok(false);
    };
    let rows = DayRows::decode(&raw).map_err(|e| Fail::Block(day.to_owned(), e))?;
    let mut put = conn.prepare_cached(ADD_ROW)?;
    for p in &rows.rows {
        let r = rows.stored(day, p);
        put.execute(params![
            r.day,
            r.client,
            r.profile,
            r.layer,
            r.name,
            r.count as i64,
            r.first_seen as i64,
            r.last_seen as i64
        ])?;
    }
    conn.execute("DELETE FROM sealed WHERE day = ?1", [day])?;
    conn.execute("DELETE FROM days WHERE day = ?1", [day])?;
    warn!(
        day,
        "evidence: rows arrived for a sealed day; the day is sealed again and the chain recomputed from it"
    );
    Ok(true)
}

fn stored(r: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
    Ok(Stored {
        day: r.get(0)?,
        client: r.get(1)?,
        profile: r.get(2)?,
        layer: r.get(3)?,
        name: r.get(4)?,
        count: r.get::<_, i64>(5)? as u64,
        first_seen: r.get::<_, i64>(6)? as u64,
        last_seen: r.get::<_, i64>(7)? as u64,
    })
}

/// SHA-256 over the previous digest, the day's canonical block and its purges.
fn digest_of(conn: &Connection, day: &str, previous: &str, raw: &[u8]) -> Result<String, Fail> {
    Ok(chain_digest(previous, raw, &purges_of(conn, day)?))
}

/// The purges recorded on a day: (Unix time, client, rows), in the digest's order.
pub(super) fn purges_of(conn: &Connection, day: &str) -> Result<Vec<(u64, String, u64)>, Fail> {
    let mut q = conn
        .prepare_cached("SELECT at, client, rows FROM purges WHERE day = ?1 ORDER BY at, client")?;
    let rows = q.query_map([day], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)? as u64,
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A closed day's digest: SHA-256 over the digest it is chained on, its canonical block
/// and its purges. One function for the ledger and for whoever checks a copy of a day
/// (`telesink fleet verify` has the published block, not the file).
pub fn chain_digest(previous: &str, raw: &[u8], purges: &[(u64, String, u64)]) -> String {
    let mut h = Sha256::new();
    h.update(previous.as_bytes());
    h.update(b"\n");
    h.update(raw);
    for (at, client, rows) in purges {
        h.update(format!("purge\t{at}\t{client}\t{rows}\n").as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest of the closed day before `day`: the anchor for the first day kept.
pub(super) fn previous_digest(conn: &Connection, day: &str) -> rusqlite::Result<String> {
    let previous = conn
        .query_row(
            "SELECT digest FROM days WHERE day < ?1 ORDER BY day DESC LIMIT 1",
            [day],
            |r| r.get(0),
        )
        .optional()?;
    match previous {
        Some(d) => Ok(d),
        None => anchor(conn),
    }
}

/// The digest of the last day the retention removed ("" while none was removed).
fn anchor(conn: &Connection) -> rusqlite::Result<String> {
    Ok(conn
        .query_row("SELECT digest FROM anchor WHERE id = 1", [], |r| r.get(0))
        .optional()?
        .unwrap_or_default())
}

/// Seals every day before `today` that has rows or purges and no digest.
fn close_days(conn: &Connection, today: &str) -> Result<(), Fail> {
    let open: Vec<String> = {
        let mut q = conn.prepare(
            "SELECT DISTINCT day FROM (SELECT day FROM evidence UNION SELECT day FROM purges)
             WHERE day < ?1 AND day NOT IN (SELECT day FROM days) ORDER BY day",
        )?;
        let r = q.query_map([today], |r| r.get(0))?;
        r.collect::<Result<_, _>>()?
    };
    for day in open {
        let rows = open_day(conn, &day)?;
        let raw = write_block(conn, &day, &rows)?;
        conn.execute("DELETE FROM evidence WHERE day = ?1", [&day])?;
        let digest = digest_of(conn, &day, &previous_digest(conn, &day)?, &raw)?;
        conn.execute(
            "INSERT INTO days (day, digest, rows, closed_at) VALUES (?1, ?2, ?3, ?4)",
            params![
                day,
                digest,
                rows.rows.len() as i64,
                crate::clock::unix_now() as i64
            ],
        )?;
    }
    Ok(())
}

/// Recomputes the digests of the closed days from `from` on (after a purge or a day
/// sealed again).
fn rechain(conn: &Connection, from: &str) -> Result<(), Fail> {
    let days: Vec<String> = {
        let mut q = conn.prepare("SELECT day FROM days WHERE day >= ?1 ORDER BY day")?;
        let r = q.query_map([from], |r| r.get(0))?;
        r.collect::<Result<_, _>>()?
    };
    for day in days {
        let (raw, rows) = sealed_day(conn, &day)?.unwrap_or_default();
        let digest = digest_of(conn, &day, &previous_digest(conn, &day)?, &raw)?;
        conn.execute(
            "UPDATE days SET digest = ?2, rows = ?3 WHERE day = ?1",
            params![day, digest, rows],
        )?;
    }
    Ok(())
}

fn verify_in(conn: &Connection) -> Result<Result<usize, String>, Fail> {
    let days: Vec<(String, String)> = {
        let mut q = conn.prepare("SELECT day, digest FROM days ORDER BY day")?;
        let r = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        r.collect::<Result<_, _>>()?
    };
    let mut loose = conn.prepare("SELECT 1 FROM evidence WHERE day = ?1 LIMIT 1")?;
    let mut previous = anchor(conn)?;
    for (day, recorded) in &days {
        // A block that is gone or does not decode, or rows slipped in beside a sealed
        // day (reports would count them), break the chain as a changed count does.
        let raw = match sealed_day(conn, day) {
            Ok(Some((raw, _))) if DayRows::decode(&raw).is_ok() => raw,
            Ok(_) | Err(Fail::Block(..)) => return Ok(Err(day.clone())),
            Err(e) => return Err(e),
        };
        if loose.exists([day])? || &digest_of(conn, day, &previous, &raw)? != recorded {
            return Ok(Err(day.clone()));
        }
        previous = recorded.clone();
    }
    Ok(Ok(days.len()))
}

fn purge_in(conn: &Connection, client: &str) -> Result<usize, Fail> {
    let mut first: Option<String> = conn.query_row(
        "SELECT min(day) FROM evidence WHERE client = ?1",
        [client],
        |r| r.get(0),
    )?;
    let mut n = conn.execute("DELETE FROM evidence WHERE client = ?1", [client])?;
    let sealed: Vec<String> = {
        let mut q = conn.prepare("SELECT day FROM sealed ORDER BY day")?;
        let r = q.query_map([], |r| r.get(0))?;
        r.collect::<Result<_, _>>()?
    };
    for day in sealed {
        let Some((raw, _)) = sealed_day(conn, &day)? else {
            continue;
        };
        let rows = DayRows::decode(&raw).map_err(|e| Fail::Block(day.clone(), e))?;
        if let Some(kept) = rows.without_client(client) {
            n += rows.rows.len() - kept.rows.len();
            write_block(conn, &day, &kept)?;
            if first.as_ref().is_none_or(|f| &day < f) {
                first = Some(day);
            }
        }
    }
    let now = crate::clock::unix_now();
    conn.execute(
        "INSERT INTO purges (at, day, client, rows) VALUES (?1, ?2, ?3, ?4)",
        params![
            now as i64,
            day_text((now / 86_400) as u32),
            client,
            n as i64
        ],
    )?;
    if let Some(first) = first {
        rechain(conn, &first)?;
    }
    Ok(n)
}

#[cfg(test)]
impl Store {
    /// Rows between two days (inclusive, YYYY-MM-DD), optionally of one client and one
    /// profile, in key order.
    fn rows(
        &self,
        since: &str,
        until: &str,
        client: Option<&str>,
        profile: Option<&str>,
    ) -> Result<Vec<Stored>, StoreError> {
        let mut out = Vec::new();
        self.each_day(since, until, |day| {
            let text = day_text(day.day);
            out.extend(day.rows.iter().map(|p| day.stored(&text, p)).filter(|r| {
                client.is_none_or(|c| r.client == c) && profile.is_none_or(|p| r.profile == p)
            }));
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::Layer;
    use std::net::IpAddr;

    fn row(day: u32, last: u8, name: &str, count: u64) -> Row {
        Row {
            day,
            client: IpAddr::from([192, 0, 2, last]),
            profile: "office".into(),
            layer: Layer::DnsBlocked,
            name: name.into(),
            count,
            first: u64::from(day) * 86_400,
            last: u64::from(day) * 86_400 + 1,
        }
    }

    #[test]
    fn flushes_add_up_days_close_into_a_chain_and_purges_rechain() {
        let dir = std::env::temp_dir().join(format!("telesink-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("evidence.sqlite");
        let mut s = Store::open(&path).unwrap();
        let label = |ip: IpAddr| ip.to_string();
        s.flush(
            &[row(20_000, 1, "a.x", 2), row(20_000, 2, "a.x", 1)],
            &label,
            20_000,
            400,
        )
        .unwrap();
        s.flush(&[row(20_000, 1, "a.x", 3)], &label, 20_000, 400)
            .unwrap();
        s.flush(&[row(20_001, 1, "b.x", 1)], &label, 20_002, 400)
            .unwrap();
        let rows = s
            .rows("1970-01-01", "9999-12-31", Some("192.0.2.1"), None)
            .unwrap();
        assert_eq!(rows[0].count, 5);
        assert_eq!(s.verify().unwrap(), Ok(2));
        // Sealed: the closed days left the row table.
        let open: i64 = s
            .conn
            .query_row("SELECT count(*) FROM evidence", [], |r| r.get(0))
            .unwrap();
        assert_eq!(open, 0);
        // Tampering with a count (the block rewritten, well formed) breaks the chain at
        // that day, and so does a row slipped in beside it; a purge refuses to hide it.
        let d0 = day_text(20_000);
        let block = |s: &Store| {
            let (raw, _) = sealed_day(&s.conn, &d0).ok().flatten().unwrap();
            DayRows::decode(&raw).unwrap()
        };
        let honest = block(&s);
        let mut forged = honest.clone();
        forged.rows[0].count = 4;
        write_block(&s.conn, &d0, &forged).ok().unwrap();
        assert_eq!(s.verify().unwrap(), Err(d0.clone()));
        assert!(matches!(
            s.purge("192.0.2.2"),
            Err(StoreError::Broken { .. })
        ));
        write_block(&s.conn, &d0, &honest).ok().unwrap();
        assert_eq!(s.verify().unwrap(), Ok(2));
        s.conn
            .execute(
                "INSERT INTO evidence VALUES (?1, '192.0.2.9', 'office', 'dns-blocked', 'z.x', 1, 0, 0)",
                [&d0],
            )
            .unwrap();
        assert_eq!(s.verify().unwrap(), Err(d0.clone()));
        s.conn
            .execute("DELETE FROM evidence WHERE client = '192.0.2.9'", [])
            .unwrap();
        s.conn
            .execute("UPDATE sealed SET block = x'00' WHERE day = ?1", [&d0])
            .unwrap();
        assert_eq!(s.verify().unwrap(), Err(d0.clone()));
        write_block(&s.conn, &d0, &honest).ok().unwrap();
        // A late row for a sealed day reopens it: counted, sealed again, chain holds.
        s.flush(&[row(20_000, 2, "a.x", 4)], &label, 20_002, 400)
            .unwrap();
        let late = s.rows(&d0, &d0, Some("192.0.2.2"), None).unwrap();
        assert_eq!(late[0].count, 5);
        assert_eq!(s.verify().unwrap(), Ok(2));
        // ... but a late row does not re-chain over a break: it stays visible.
        let d1 = day_text(20_001);
        let (raw, _) = sealed_day(&s.conn, &d1).ok().flatten().unwrap();
        let mut later = DayRows::decode(&raw).unwrap();
        later.rows[0].count += 1;
        write_block(&s.conn, &d1, &later).ok().unwrap();
        s.flush(&[row(20_000, 2, "a.x", 1)], &label, 20_002, 400)
            .unwrap();
        assert_eq!(s.verify().unwrap(), Err(d1.clone()));
        later.rows[0].count -= 1;
        write_block(&s.conn, &d1, &later).ok().unwrap();
        rechain(&s.conn, &d0).ok().unwrap();
        assert_eq!(s.verify().unwrap(), Ok(2));
        // A purge erases the client, is recorded, and the chain still verifies.
        assert_eq!(s.purge("192.0.2.1").unwrap(), 2);
        assert!(block(&s).clients.iter().all(|c| c != "192.0.2.1"));
        assert!(
            s.rows("1970-01-01", "9999-12-31", Some("192.0.2.1"), None)
                .unwrap()
                .is_empty()
        );
        assert_eq!(s.verify().unwrap(), Ok(2));
        assert_eq!(s.purges().unwrap().len(), 1);
        // Days past the retention go, and the chain of the days kept still verifies.
        // (20_300 closes chained on 20_001; then 20_000 and 20_001 pass the retention.)
        s.flush(&[row(20_300, 3, "c.x", 1)], &label, 20_301, 400)
            .unwrap();
        s.flush(&[], &label, 20_402, 400).unwrap();
        let kept = s.rows("1970-01-01", "9999-12-31", None, None).unwrap();
        assert!(kept.iter().all(|r| r.day == day_text(20_300)), "{kept:?}");
        assert_eq!(s.verify().unwrap(), Ok(1));
        // A file of format 1 (closed days kept as rows, digests over text) is upgraded:
        // its closed days are sealed at the next flush and chained anew.
        s.conn
            .execute_batch(&format!(
                "INSERT INTO evidence VALUES ('{d}', '192.0.2.4', 'office', 'dns-blocked', 'd.x', 7, 0, 0);
                 INSERT INTO days VALUES ('{d}', 'old text digest', 1, 0);
                 PRAGMA user_version = 0;",
                d = day_text(20_350)
            ))
            .unwrap();
        drop(s);
        let mut s = Store::open(&path).unwrap();
        s.flush(&[], &label, 20_402, 400).unwrap();
        assert_eq!(s.verify().unwrap(), Ok(2));
        assert_eq!(
            s.rows(&day_text(20_350), &day_text(20_350), None, None)
                .unwrap()[0]
                .count,
            7
        );
        // A file that is no database is set aside and a new ledger started.
        drop(s);
        std::fs::write(
            &path,
            b"not a database at all, just text that is long enough",
        )
        .unwrap();
        let _ = std::fs::remove_file(path.with_extension("sqlite-wal"));
        let s = Store::open(&path).unwrap();
        assert!(
            s.rows("1970-01-01", "9999-12-31", None, None)
                .unwrap()
                .is_empty()
        );
        assert!(std::fs::read_dir(&dir).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .contains("corrupt-")
        }));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
