//! The evidence ledger: which device tried to reach which telemetry endpoint, per UTC
//! day, kept for audits (docs/EVIDENCE.md), and the live view of verdicts (`tail`).
//!
//! Only evidence is kept: blocked and observed names, firewall rejects and bypass
//! attempts, per client label, profile and day. A forwarded name is never written
//! (it reaches the live view only, while someone watches). The query path counts into a
//! bounded in-memory aggregate and never waits on the disk; `flush` writes it to SQLite.

pub mod aggregate;
pub mod block;
pub mod render;
pub mod report;
pub mod store;
pub mod tail;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

pub use aggregate::{Aggregate, Layer, Row};
pub use store::{Store, StoreError, Stored};

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
pub struct Ledger {
    pub aggregate: Arc<Aggregate>,
    store: Mutex<Store>,
    retention_days: u32,
    pub flushes: AtomicU64,
    pub flush_failures: AtomicU64,
    pub last_flush_rows: AtomicU64,
    pub size_bytes: AtomicU64,
    /// Report lines past `report::MAX_LINES`, not sent.
    pub report_lines_left_out: AtomicU64,
}

impl Ledger {
    pub fn open(cfg: &EvidenceConfig, path: &Path) -> Result<Arc<Ledger>, StoreError> {
        let store = Store::open(path)?;
        let size = store.size();
        Ok(Arc::new(Ledger {
            aggregate: Arc::new(Aggregate::new(
                cfg.names_per_client_day,
                cfg.max_pending_rows,
            )),
            store: Mutex::new(store),
            retention_days: cfg.retention_days,
            flushes: AtomicU64::new(0),
            flush_failures: AtomicU64::new(0),
            last_flush_rows: AtomicU64::new(0),
            size_bytes: AtomicU64::new(size),
            report_lines_left_out: AtomicU64::new(0),
        }))
    }

    /// Writes what was counted since the last flush, in one transaction; on failure the
    /// rows go back into the aggregate for the next flush. Blocking: call it off the
    /// runtime's workers.
    pub fn flush(&self, label: &dyn Fn(IpAddr) -> String) -> Result<usize, StoreError> {
        let today = (crate::clock::unix_now() / 86_400) as u32;
        let rows = self.aggregate.drain(today);
        let mut store = self.store.lock();
        match store.flush(&rows, label, today, self.retention_days) {
            Ok(()) => {
                self.flushes.fetch_add(1, Ordering::Relaxed);
                self.last_flush_rows
                    .store(rows.len() as u64, Ordering::Relaxed);
                self.size_bytes.store(store.size(), Ordering::Relaxed);
                Ok(rows.len())
            }
            Err(e) => {
                self.flush_failures.fetch_add(1, Ordering::Relaxed);
                drop(store);
                self.aggregate.restore(rows);
                Err(e)
            }
        }
    }

    /// Runs `f` on the file (reports, verify, purge), after a flush so nothing counted is
    /// missing from it.
    pub fn with_store<T, E: From<StoreError>>(
        &self,
        label: &dyn Fn(IpAddr) -> String,
        f: impl FnOnce(&mut Store) -> Result<T, E>,
    ) -> Result<T, E> {
        self.flush(label)?;
        let mut store = self.store.lock();
        let out = f(&mut store);
        self.size_bytes.store(store.size(), Ordering::Relaxed);
        out
    }
}
