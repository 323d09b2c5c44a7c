//! `[evidence]`: the ledger of which device tried to reach which telemetry endpoint.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The SQLite file. Default: next to the state file, evidence.sqlite.
    pub path: Option<PathBuf>,
    /// The in-memory aggregate is written in one transaction this often (and at stop);
    /// a SIGKILL loses at most this much.
    #[serde(default = "default_flush")]
    pub flush_secs: u64,
    /// Days kept; older days are deleted at the first flush of a day.
    #[serde(default = "default_retention")]
    pub retention_days: u32,
    /// Distinct names kept per client, profile and day; beyond it the rule that matched
    /// (`*.events.data.microsoft.com`) is recorded instead of the name (counted).
    #[serde(default = "default_names")]
    pub names_per_client_day: usize,
    /// Rows waiting for a flush at most; beyond it new attempts are dropped until the
    /// next flush (counted: telesink_evidence_dropped_total).
    #[serde(default = "default_rows")]
    pub max_pending_rows: usize,
    /// The day's rows remembered between flushes (to hold names_per_client_day) at
    /// most; beyond it they are forgotten at the flush, which only loosens the name cap
    /// (counted: telesink_evidence_day_rows_forgotten_total). Memory, not evidence.
    #[serde(default = "default_day_rows")]
    pub max_day_rows: usize,
}

fn default_day_rows() -> usize {
    1_000_000
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: None,
            flush_secs: default_flush(),
            retention_days: default_retention(),
            names_per_client_day: default_names(),
            max_pending_rows: default_rows(),
            max_day_rows: default_day_rows(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_flush() -> u64 {
    60
}
/// A yearly compliance check looks back a year and a month.
fn default_retention() -> u32 {
    400
}
fn default_names() -> usize {
    200
}
fn default_rows() -> usize {
    500_000
}
