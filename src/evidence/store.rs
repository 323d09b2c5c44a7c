//! The ledger on disk: SQLite in WAL mode, one row per (UTC day, client label, profile,
//! layer, name) with its count and first and last sighting.
//!
//! Tamper evidence: every closed day (a day before today, at the first flush after it
//! ends) gets a digest, SHA-256 over the previous day's digest and that day's rows in key
//! order; `verify` recomputes the chain and names the first day that does not match.
//! A purge (GDPR erasure of one client) deletes the client's rows, records itself in
//! `purges`, and re-chains the days it touched, so the chain stays verifiable and says
//! that a purge happened.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::aggregate::{Layer, Row};

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
CREATE TABLE IF NOT EXISTS days (
    day TEXT PRIMARY KEY, digest TEXT NOT NULL, rows INTEGER NOT NULL, closed_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS anchor (
    id INTEGER PRIMARY KEY CHECK (id = 1), day TEXT NOT NULL, digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS purges (
    at INTEGER NOT NULL, day TEXT NOT NULL, client TEXT NOT NULL, rows INTEGER NOT NULL);
";

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
                Self::try_open(path)
            }
            Err(e) => Err(e),
        }
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

    fn sql(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes rows (adding to what is there) in one transaction, then closes the days
    /// before `today` that have no digest yet and deletes days older than `retention`.
    pub fn flush(
        &mut self,
        rows: &[Row],
        label: &dyn Fn(std::net::IpAddr) -> String,
        today: u32,
        retention_days: u32,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        {
            let mut up = tx
                .prepare_cached(
                    "INSERT INTO evidence (day, client, profile, layer, name, count, first, last)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (day, client, profile, layer, name) DO UPDATE SET
                       count = count + excluded.count,
                       first = min(first, excluded.first),
                       last = max(last, excluded.last)",
                )
                .map_err(sql)?;
            for r in rows {
                up.execute(params![
                    day_text(r.day),
                    label(r.client),
                    r.profile,
                    r.layer.name(),
                    r.name,
                    r.count as i64,
                    r.first as i64,
                    r.last as i64
                ])
                .map_err(sql)?;
            }
        }
        let cutoff = day_text(today.saturating_sub(retention_days));
        tx.execute("DELETE FROM evidence WHERE day < ?1", [&cutoff])
            .map_err(sql)?;
        // The chain goes on from the last day that leaves: its digest stays as the anchor
        // the first kept day was chained on.
        tx.execute(
            "INSERT INTO anchor (id, day, digest)
               SELECT 1, day, digest FROM days WHERE day < ?1 ORDER BY day DESC LIMIT 1
             ON CONFLICT (id) DO UPDATE SET day = excluded.day, digest = excluded.digest",
            [&cutoff],
        )
        .map_err(sql)?;
        tx.execute("DELETE FROM days WHERE day < ?1", [&cutoff])
            .map_err(sql)?;
        close_days(&tx, &day_text(today)).map_err(sql)?;
        tx.commit().map_err(sql)
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

    /// Rows between two days (inclusive, YYYY-MM-DD), optionally of one client and one
    /// profile, in key order.
    pub fn rows(
        &self,
        since: &str,
        until: &str,
        client: Option<&str>,
        profile: Option<&str>,
    ) -> Result<Vec<Stored>, StoreError> {
        let mut q = self
            .conn
            .prepare_cached(
                "SELECT day, client, profile, layer, name, count, first, last FROM evidence
                 WHERE day >= ?1 AND day <= ?2 AND (?3 IS NULL OR client = ?3)
                   AND (?4 IS NULL OR profile = ?4)
                 ORDER BY day, client, profile, layer, name",
            )
            .map_err(self.sql())?;
        let rows = q
            .query_map(params![since, until, client, profile], stored)
            .map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }

    /// The digest of the last closed day up to `until`, if any.
    pub fn last_digest(&self, until: &str) -> Result<Option<(String, String)>, StoreError> {
        self.conn
            .query_row(
                "SELECT day, digest FROM days WHERE day <= ?1 ORDER BY day DESC LIMIT 1",
                [until],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.sql())
    }

    /// Recomputes the digest chain: Ok(days checked), or Err(the first day whose rows
    /// do not give its recorded digest).
    pub fn verify(&self) -> Result<Result<usize, String>, StoreError> {
        let days: Vec<(String, String)> = {
            let mut q = self
                .conn
                .prepare("SELECT day, digest FROM days ORDER BY day")
                .map_err(self.sql())?;
            let r = q
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(self.sql())?;
            r.collect::<Result<_, _>>().map_err(self.sql())?
        };
        let mut previous = anchor(&self.conn).map_err(self.sql())?;
        for (day, recorded) in &days {
            let (digest, _) = digest_of(&self.conn, day, &previous).map_err(self.sql())?;
            if &digest != recorded {
                return Ok(Err(day.clone()));
            }
            previous = digest;
        }
        Ok(Ok(days.len()))
    }

    /// Erases one client's rows (GDPR erasure), records the purge, and re-chains the
    /// closed days from the first one it touched. Returns the rows deleted.
    pub fn purge(&mut self, client: &str) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        let first: Option<String> = tx
            .query_row(
                "SELECT min(day) FROM evidence WHERE client = ?1",
                [client],
                |r| r.get(0),
            )
            .map_err(sql)?;
        let n = tx
            .execute("DELETE FROM evidence WHERE client = ?1", [client])
            .map_err(sql)?;
        let now = crate::clock::unix_now();
        tx.execute(
            "INSERT INTO purges (at, day, client, rows) VALUES (?1, ?2, ?3, ?4)",
            params![
                now as i64,
                day_text((now / 86_400) as u32),
                client,
                n as i64
            ],
        )
        .map_err(sql)?;
        if let Some(first) = first {
            rechain(&tx, &first).map_err(sql)?;
        }
        tx.commit().map_err(sql)?;
        info!(client, rows = n, "evidence: client purged");
        Ok(n)
    }

    /// Purges recorded: (Unix time, client, rows).
    pub fn purges(&self) -> Result<Vec<(u64, String, u64)>, StoreError> {
        let mut q = self
            .conn
            .prepare("SELECT at, client, rows FROM purges ORDER BY at")
            .map_err(self.sql())?;
        let r = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get(1)?,
                    r.get::<_, i64>(2)? as u64,
                ))
            })
            .map_err(self.sql())?;
        r.collect::<Result<_, _>>().map_err(self.sql())
    }
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

/// SHA-256 over the previous digest and the day's rows and purges, in key order; with the
/// day's row count.
fn digest_of(conn: &Connection, day: &str, previous: &str) -> rusqlite::Result<(String, i64)> {
    let mut h = Sha256::new();
    h.update(previous.as_bytes());
    h.update(b"\n");
    let mut q = conn.prepare_cached(
        "SELECT day, client, profile, layer, name, count, first, last FROM evidence
         WHERE day = ?1 ORDER BY client, profile, layer, name",
    )?;
    let mut n = 0;
    for row in q.query_map([day], stored)? {
        let r = row?;
        h.update(
            format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                r.day, r.client, r.profile, r.layer, r.name, r.count, r.first_seen, r.last_seen
            )
            .as_bytes(),
        );
        n += 1;
    }
    let mut q = conn
        .prepare_cached("SELECT at, client, rows FROM purges WHERE day = ?1 ORDER BY at, client")?;
    for row in q.query_map([day], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })? {
        let (at, client, rows) = row?;
        h.update(format!("purge\t{at}\t{client}\t{rows}\n").as_bytes());
    }
    let digest = h.finalize();
    Ok((digest.iter().map(|b| format!("{b:02x}")).collect(), n))
}

/// The digest of the closed day before `day`: the anchor for the first day kept.
fn previous_digest(conn: &Connection, day: &str) -> rusqlite::Result<String> {
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

/// Gives every day before `today` that has rows or purges and no digest its digest.
fn close_days(conn: &Connection, today: &str) -> rusqlite::Result<()> {
    let open: Vec<String> = {
        let mut q = conn.prepare(
            "SELECT DISTINCT day FROM (SELECT day FROM evidence UNION SELECT day FROM purges)
             WHERE day < ?1 AND day NOT IN (SELECT day FROM days) ORDER BY day",
        )?;
        let r = q.query_map([today], |r| r.get(0))?;
        r.collect::<Result<_, _>>()?
    };
    for day in open {
        let (digest, rows) = digest_of(conn, &day, &previous_digest(conn, &day)?)?;
        conn.execute(
            "INSERT INTO days (day, digest, rows, closed_at) VALUES (?1, ?2, ?3, ?4)",
            params![day, digest, rows, crate::clock::unix_now() as i64],
        )?;
    }
    Ok(())
}

/// Recomputes the digests of the closed days from `from` on (after a purge).
fn rechain(conn: &Connection, from: &str) -> rusqlite::Result<()> {
    let days: Vec<String> = {
        let mut q = conn.prepare("SELECT day FROM days WHERE day >= ?1 ORDER BY day")?;
        let r = q.query_map([from], |r| r.get(0))?;
        r.collect::<Result<_, _>>()?
    };
    for day in days {
        let (digest, rows) = digest_of(conn, &day, &previous_digest(conn, &day)?)?;
        conn.execute(
            "UPDATE days SET digest = ?2, rows = ?3 WHERE day = ?1",
            params![day, digest, rows],
        )?;
    }
    Ok(())
}

/// The layer names, for the docs and reports.
pub fn layers() -> impl Iterator<Item = &'static str> {
    Layer::ALL.into_iter().map(Layer::name)
}

#[cfg(test)]
mod tests {
    use super::*;
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
        // Tampering with a count breaks the chain at that day.
        s.conn
            .execute(
                "UPDATE evidence SET count = 4 WHERE client = '192.0.2.1' AND day = ?1",
                [day_text(20_000)],
            )
            .unwrap();
        assert_eq!(s.verify().unwrap(), Err(day_text(20_000)));
        s.conn
            .execute(
                "UPDATE evidence SET count = 5 WHERE client = '192.0.2.1' AND day = ?1",
                [day_text(20_000)],
            )
            .unwrap();
        // A purge erases the client, is recorded, and the chain still verifies.
        assert_eq!(s.purge("192.0.2.1").unwrap(), 2);
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
