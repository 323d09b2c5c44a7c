//! The evidence ledger: which device tried to reach which telemetry endpoint, per UTC
//! day, kept for audits (docs/EVIDENCE.md), and the live view of verdicts (`tail`).
//!
//! Only evidence is kept: blocked and observed names, firewall rejects and bypass
//! attempts, per client label, profile and day. A forwarded name is never written
//! (it reaches the live view only, while someone watches). The query path counts into a
//! bounded in-memory aggregate and never waits on the disk; `flush` writes it to SQLite.

pub mod aggregate;
pub mod block;
pub mod outbox;
pub mod render;
pub mod report;
pub mod store;
pub mod tail;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tracing::{error, info, warn};

pub use aggregate::{Aggregate, Layer, Row};
pub use store::{Break, PolicyChange, Store, StoreError, Stored, Verification};

use crate::config::EvidenceConfig;

/// What the pipeline keeps of a query it answered on the full path, for the ledger and
/// the live view: made once per request, shared by every replay of the answer.
#[derive(Debug)]
pub struct Sighting {
    /// The name asked, lower case, no trailing dot.
    pub name: Box<str>,
    /// The rule that decided (`*.example.com`), recorded instead of the name once a
    /// client's day holds `names_per_client_day` names; None when it is the name itself.
    pub rule: Option<Box<str>>,
    /// The list and line of that rule (list index, line), for the live view.
    pub at: Option<(u16, u32)>,
}

impl Sighting {
    pub fn rule(&self) -> &str {
        self.rule.as_deref().unwrap_or(&self.name)
    }
}

/// Where the ledger lives: `[evidence] path`, else next to the state file.
pub fn path_of(cfg: &EvidenceConfig, state_file: &Path) -> PathBuf {
    cfg.path.clone().unwrap_or_else(|| {
        state_file
            .parent()
            .unwrap_or(Path::new("."))
            .join("evidence.sqlite")
    })
}

/// The ledger of a running daemon: the aggregate the pipeline counts into and the file
/// it is written to.
///
/// A failed write never loses what was counted: the rows go back into the aggregate,
/// the connection is dropped and the next flush opens the file anew (a connection SQLite
/// opened read-only, or one that hit a full disk, stays that way), and `/health` says
/// why while flushes fail. What is still unwritten when the daemon stops goes to a
/// recovery file beside the ledger, which the next start writes into it; only when
/// that cannot be written either are the attempts lost, and the stop says how many.
pub struct Ledger {
    pub aggregate: Arc<Aggregate>,
    path: PathBuf,
    /// None after a write error: the next flush opens the file anew.
    store: Mutex<Option<Store>>,
    retention_days: u32,
    pub flushes: AtomicU64,
    pub flush_failures: AtomicU64,
    pub last_flush_rows: AtomicU64,
    pub size_bytes: AtomicU64,
    /// Report lines past `report::MAX_LINES`, not sent.
    pub report_lines_left_out: AtomicU64,
    /// Times the file was opened anew after a write error.
    pub reopens: AtomicU64,
    /// Rows read back from recovery files into the ledger.
    pub recovered_rows: AtomicU64,
    /// Since when (Unix seconds) and why flushes fail; None while they succeed.
    failing: Mutex<Option<(u64, String)>>,
    /// The times this ledger was started anew over an unreadable file, and the last one.
    breaks: Mutex<(u64, Option<Break>)>,
    /// Policy changes not written yet (written with the next flush; the control plane
    /// never waits on the disk).
    changes: Mutex<Vec<PolicyChange>>,
    /// Whether the recovery files a stop left were looked for and written in (once per
    /// process, at the first flush that can write).
    recovered: std::sync::atomic::AtomicBool,
}

/// How long `/health` names a ledger started anew over an unreadable file.
const BREAK_HEALTH_SECS: u64 = 86_400;

impl Ledger {
    pub fn open(cfg: &EvidenceConfig, path: &Path) -> Result<Arc<Ledger>, StoreError> {
        let store = Store::open(path)?;
        let size = store.size();
        let breaks = store.breaks()?;
        let ledger = Arc::new(Ledger {
            aggregate: Arc::new(Aggregate::with_day_rows(
                cfg.names_per_client_day,
                cfg.max_pending_rows,
                cfg.max_day_rows,
            )),
            path: path.to_owned(),
            store: Mutex::new(Some(store)),
            retention_days: cfg.retention_days,
            flushes: AtomicU64::new(0),
            flush_failures: AtomicU64::new(0),
            last_flush_rows: AtomicU64::new(0),
            size_bytes: AtomicU64::new(size),
            report_lines_left_out: AtomicU64::new(0),
            reopens: AtomicU64::new(0),
            recovered_rows: AtomicU64::new(0),
            failing: Mutex::new(None),
            breaks: Mutex::new((breaks.len() as u64, breaks.last().cloned())),
            changes: Mutex::new(Vec::new()),
            recovered: std::sync::atomic::AtomicBool::new(false),
        });
        if let Some(b) = breaks.last() {
            warn!("evidence ledger {}: {b}", path.display());
        }
        Ok(ledger)
    }

    /// Writes what was counted since the last flush, and any recovery file a stop left,
    /// in one transaction each; on failure the rows go back into the aggregate for the
    /// next flush, which opens the file anew. Blocking: call it off the runtime's workers.
    /// Rows of a client `hold` names stay for the next flush (an address whose device is
    /// not known yet: src/audit.rs).
    pub fn flush(
        &self,
        label: &dyn Fn(IpAddr) -> String,
        hold: &dyn Fn(IpAddr) -> bool,
    ) -> Result<usize, StoreError> {
        let today = (crate::clock::unix_now() / 86_400) as u32;
        let (held, rows): (Vec<Row>, Vec<Row>) = self
            .aggregate
            .drain(today)
            .into_iter()
            .partition(|r| hold(r.client));
        if !held.is_empty() {
            self.aggregate.restore(held);
        }
        let retention = self.retention_days;
        let changes = std::mem::take(&mut *self.changes.lock());
        let written = self.write(|store| {
            self.recover(store, today)?;
            store.flush_labelled(&store::labelled(&rows, label), &changes, today, retention)
        });
        match written {
            Ok(()) => {
                self.flushes.fetch_add(1, Ordering::Relaxed);
                self.last_flush_rows
                    .store(rows.len() as u64, Ordering::Relaxed);
                Ok(rows.len())
            }
            Err(e) => {
                self.aggregate.restore(rows);
                let mut pending = self.changes.lock();
                let newer = std::mem::replace(&mut *pending, changes);
                pending.extend(newer);
                Err(e)
            }
        }
    }

    /// Records that the daemon runs today under these profiles (`report::Context`'s
    /// `profiles`, as JSON): the day is then due at a fleet's centre even without
    /// attempts (src/evidence/outbox.rs). Blocking.
    pub fn note_day(&self, policy: &str) -> Result<(), StoreError> {
        let today = (crate::clock::unix_now() / 86_400) as u32;
        self.write(|store| store.note_day(today, policy, self.retention_days))
    }

    /// Runs `f` on the file without a flush (the fleet's sender reads what is due and
    /// records what was sent). A failure here is not a failed flush: it is the caller's
    /// to say. Blocking.
    pub fn with_file<T>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self.store.lock();
        let store = match slot.as_mut() {
            Some(store) => store,
            None => slot.insert(Store::reopen(&self.path)?),
        };
        f(store)
    }

    /// Records a change of the policy in force (written with the next flush).
    pub fn record_change(&self, who: &str, what: String) {
        self.changes.lock().push(PolicyChange {
            at: crate::clock::unix_now(),
            who: who.to_owned(),
            what,
        });
    }

    /// Runs `f` on the file, opening it anew first if the last write failed; a failure
    /// drops the connection and is kept for `/health` until a write succeeds.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self.store.lock();
        let result = match slot.as_mut() {
            Some(store) => f(store),
            None => Store::reopen(&self.path).and_then(|mut store| {
                let out = f(&mut store);
                if out.is_ok() {
                    self.reopens.fetch_add(1, Ordering::Relaxed);
                    info!(
                        "evidence ledger {} opened anew after a write error; writing again",
                        self.path.display()
                    );
                    *slot = Some(store);
                }
                out
            }),
        };
        match &result {
            Ok(_) => {
                if let Some(store) = slot.as_ref() {
                    self.size_bytes.store(store.size(), Ordering::Relaxed);
                }
                if let Some((since, _)) = self.failing.lock().take() {
                    info!(
                        "evidence ledger {}: writing again after {} s of failures",
                        self.path.display(),
                        crate::clock::unix_now().saturating_sub(since)
                    );
                }
            }
            Err(e) => {
                self.flush_failures.fetch_add(1, Ordering::Relaxed);
                *slot = None;
                let mut failing = self.failing.lock();
                let since = failing.as_ref().map_or(crate::clock::unix_now(), |f| f.0);
                *failing = Some((since, e.to_string()));
            }
        }
        result
    }

    /// Runs `f` on the file (reports, verify, purge), after a flush so nothing counted is
    /// missing from it.
    pub fn with_store<T, E: From<StoreError>>(
        &self,
        label: &dyn Fn(IpAddr) -> String,
        f: impl FnOnce(&mut Store) -> Result<T, E>,
    ) -> Result<T, E> {
        self.flush(label, &|_| false)?;
        let mut slot = self.store.lock();
        // The flush just succeeded, so the connection is there.
        let store = match slot.as_mut() {
            Some(store) => store,
            None => slot.insert(Store::reopen(&self.path)?),
        };
        let out = f(store);
        self.size_bytes.store(store.size(), Ordering::Relaxed);
        out
    }

    /// Why the ledger is not what it should be, for `/health`: flushes failing now, or a
    /// ledger started anew over an unreadable file in the last day.
    pub fn health(&self) -> Vec<String> {
        let now = crate::clock::unix_now();
        let mut why = Vec::new();
        if let Some((since, error)) = self.failing.lock().as_ref() {
            why.push(format!(
                "the evidence ledger cannot be written for {} s ({error}); {} rows wait in memory and are written when it can be",
                now.saturating_sub(*since),
                self.aggregate.pending()
            ));
        }
        if let Some(b) = &self.breaks.lock().1
            && now.saturating_sub(b.at) < BREAK_HEALTH_SECS
        {
            why.push(format!("evidence ledger: {b}"));
        }
        why
    }

    /// Whether the last write succeeded.
    pub fn writable(&self) -> bool {
        self.failing.lock().is_none()
    }

    /// Times the ledger was started anew over an unreadable file (its `breaks`).
    pub fn breaks(&self) -> u64 {
        self.breaks.lock().0
    }

    /// At stop: the last flush; what it could not write goes to a recovery file beside
    /// the ledger (written into it at the next start). Returns what to tell the admin.
    pub fn stop(&self, label: &dyn Fn(IpAddr) -> String) -> Result<String, String> {
        let error = match self.flush(label, &|_| false) {
            Ok(n) => return Ok(format!("evidence: {n} rows written at stop")),
            Err(e) => e,
        };
        let rows = self.aggregate.drain(u32::MAX);
        let attempts: u64 = rows.iter().map(|r| r.count).sum();
        // The policy history is not evidence of attempts: said, not saved.
        let changes = std::mem::take(&mut *self.changes.lock()).len();
        if changes > 0 {
            warn!(
                "evidence: {changes} policy change records (the report's history) could not be written and are lost; the journal has them"
            );
        }
        let stored = store::labelled(&rows, label);
        let file = self.recovery_file(crate::clock::unix_now());
        let written = serde_json::to_vec(&stored)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::durable::write(&file, &bytes));
        match written {
            Ok(()) => Ok(format!(
                "evidence: the ledger cannot be written ({error}); {} rows ({attempts} attempts) saved to {}, written into the ledger at the next start",
                rows.len(),
                file.display()
            )),
            Err(e) => Err(format!(
                "evidence: the ledger cannot be written ({error}) and neither can {} ({e}): {attempts} attempts in {} rows are lost",
                file.display(),
                rows.len()
            )),
        }
    }

    /// `<ledger>.recovery-<unix time>.json` beside the ledger.
    fn recovery_file(&self, at: u64) -> PathBuf {
        self.path.with_extension(format!("recovery-{at}.json"))
    }

    /// Recovery files left by a stop whose last flush failed.
    fn recovery_files(&self) -> Vec<PathBuf> {
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
        let (Some(dir), Some(stem)) = (self.path.parent(), stem) else {
            return Vec::new();
        };
        let prefix = format!("{stem}.recovery-");
        let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        }) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".json"))
            })
            .collect();
        files.sort();
        files
    }

    /// Writes recovery files into the ledger (in the caller's write) and removes them.
    /// A file that does not parse is left where it is and said, never deleted.
    fn recover(&self, store: &mut Store, today: u32) -> Result<(), StoreError> {
        // Only a stop writes them, so one look per process is enough.
        if self.recovered.load(Ordering::Relaxed) {
            return Ok(());
        }
        for file in self.recovery_files() {
            let rows: Vec<Stored> = match std::fs::read(&file)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(rows) => rows,
                Err(e) => {
                    warn!(
                        "evidence: recovery file {} cannot be read ({e}); left in place",
                        file.display()
                    );
                    continue;
                }
            };
            store.flush_labelled(&rows, &[], today, self.retention_days)?;
            let attempts: u64 = rows.iter().map(|r| r.count).sum();
            self.recovered_rows
                .fetch_add(rows.len() as u64, Ordering::Relaxed);
            if let Err(e) = std::fs::remove_file(&file) {
                // Written already: leaving it would count it twice at the next start.
                error!(
                    "evidence: recovery file {} was written into the ledger but cannot be removed ({e}); remove it by hand before the next start",
                    file.display()
                );
            }
            info!(
                "evidence: {} rows ({attempts} attempts) from recovery file {} written into the ledger",
                rows.len(),
                file.display()
            );
        }
        self.recovered.store(true, Ordering::Relaxed);
        Ok(())
    }
}
