//! The control plane: profile toggles, log-only mode and reloads as the admin asks for
//! them, over the socket API (`api.rs`). Every change goes through the one apply path
//! (src/apply.rs); this module turns its results into reports and runs the expiry of
//! timed toggles.

pub mod api;
pub mod client;
mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tracing::{error, info};

pub use crate::apply::Edit;
use crate::apply::{Applier, ApplyError};
use crate::services::Services;
use crate::snapshot::Snapshot;
pub use report::{Change, ProfileState, Report, Status, evidence_context};

pub type ControlError = ApplyError;

pub struct Control {
    pub applier: Arc<Applier>,
    /// What the status and the live view read (the same services the applier owns).
    pub services: Arc<Services>,
    pub started_unix: u64,
    /// The evidence ledger (None with `[evidence] enabled = false`).
    pub audit: Option<Arc<crate::audit::Audit>>,
    /// The cluster connection (`[cluster]`): shared changes go to the store.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// What the evidence endpoints answer with when there is no ledger.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error(
        "the evidence ledger is off ([evidence] enabled = false) or could not be opened (see the log)"
    )]
    Off,
    #[error(transparent)]
    Report(#[from] crate::evidence::report::ReportError),
    #[error(transparent)]
    Store(#[from] crate::evidence::StoreError),
    #[error("the evidence task failed: {0}")]
    Task(String),
}

impl Control {
    pub fn new(
        applier: Arc<Applier>,
        audit: Option<Arc<crate::audit::Audit>>,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Self {
        Self {
            services: applier.services.clone(),
            applier,
            started_unix: crate::clock::unix_now(),
            audit,
            cluster,
        }
    }

    /// Runs `f` on the ledger file after a flush (so the report includes what was counted
    /// and not yet written), off the runtime's workers.
    pub async fn evidence<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut crate::evidence::Store) -> Result<T, EvidenceError> + Send + 'static,
    ) -> Result<T, EvidenceError> {
        let audit = self.audit.clone().ok_or(EvidenceError::Off)?;
        tokio::task::spawn_blocking(move || {
            // The kernel's counters too, so a report has every attempt up to now.
            audit.read_firewall();
            audit.ledger.with_store(&|ip| audit.label(ip), f)
        })
        .await
        .map_err(|e| EvidenceError::Task(e.to_string()))?
    }

    /// Records a change of the policy in force in the evidence ledger's history (who,
    /// when, what), for reports; nothing without a ledger.
    pub fn record_change(&self, who: &str, what: String) {
        if let Some(a) = &self.audit {
            a.ledger.record_change(who, what);
        }
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.services.current.load_full()
    }

    pub fn config_path(&self) -> &Path {
        self.applier.config_path()
    }

    /// Applies a toggle (or only reports what it would change, with `dry_run`). Runs to
    /// completion in a task of its own even if the caller gives up waiting.
    /// `by`: who asks ("uid 1000 on gw1"), for the store's record of the last change.
    /// On a cluster node a change goes to the site's shared state in the store
    /// (src/cluster/) and returns once this node has it in force, naming the nodes that
    /// do; `local` makes it an override of this node's instead.
    pub async fn edit(
        self: &Arc<Self>,
        edit: Edit,
        dry_run: bool,
        local: bool,
        by: String,
    ) -> Result<Report, ControlError> {
        let started = Instant::now();
        if let Some(cluster) = self.cluster.clone()
            && !local
            && !dry_run
        {
            let old = self.current();
            let written = to_completion("shared change", async move {
                cluster.write(edit, by).await.map_err(|e| match e {
                    crate::cluster::ClusterError::Apply(a) => a,
                    other => ApplyError::Cluster(other.to_string()),
                })
            })
            .await?;
            let applied = crate::apply::Applied {
                old,
                new: self.current(),
            };
            let mut report = report_of(applied, false).await?;
            report.cluster = Some(written);
            report.ms = started.elapsed().as_secs_f64() * 1e3;
            return Ok(report);
        }
        let applier = self.applier.clone();
        let applied = to_completion(
            "change",
            async move { applier.edit(edit, dry_run, local).await },
        )
        .await?;
        let mut report = report_of(applied, dry_run).await?;
        report.local = local && self.cluster.is_some();
        report.ms = started.elapsed().as_secs_f64() * 1e3;
        Ok(report)
    }

    /// Re-reads config and lists (SIGHUP and `telesink reload`), to completion.
    pub async fn reload(self: &Arc<Self>) -> Result<Report, ControlError> {
        let started = Instant::now();
        let applier = self.applier.clone();
        let applied = to_completion("reload", async move { applier.reload().await }).await?;
        let mut report = report_of(applied, false).await?;
        report.ms = started.elapsed().as_secs_f64() * 1e3;
        Ok(report)
    }

    /// Installs the table in force again (`telesink firewall apply` while running).
    pub async fn reapply_firewall(self: &Arc<Self>) -> Result<Arc<Snapshot>, ControlError> {
        let applier = self.applier.clone();
        to_completion("firewall apply", async move { applier.reapply().await }).await
    }

    /// Reverts timed toggles when their time is up, for as long as the daemon runs, and
    /// saves the toggles in force again while a revert could not save them.
    pub async fn expire_forever(self: Arc<Self>) {
        const RETRY: std::time::Duration = std::time::Duration::from_secs(10);
        loop {
            let next = self.current().toggles.next_deadline();
            let now = crate::clock::unix_now();
            let mut wait = next.map_or(std::time::Duration::from_secs(3600), |t| {
                std::time::Duration::from_millis(t.saturating_sub(now) * 1000)
            });
            if self.applier.unsaved().is_some() {
                wait = wait.min(RETRY);
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.applier.changed.notified() => continue,
            }
            if self.applier.unsaved().is_some() {
                self.applier.save_again().await;
            }
            match self.applier.expire_due().await {
                Ok(Some(applied)) => {
                    let Ok(report) = report_of(applied, false).await else {
                        continue;
                    };
                    for c in report.changes {
                        let what = format!(
                            "timed toggle lapsed: profile {} for group {}: {} -> {}",
                            c.profile, c.group, c.from, c.to
                        );
                        info!("{what}");
                        self.record_change("timer", what);
                    }
                    for r in report.rules {
                        self.record_change("timer", format!("timed rule lapsed: {r}"));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    error!("timed toggle could not be reverted (retrying in 10 s): {e}");
                    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                }
            }
        }
    }

    pub fn status(&self) -> Status {
        Status::of(self)
    }

    pub fn profiles(&self) -> Vec<ProfileState> {
        ProfileState::all(&self.current())
    }
}

/// The report of a change, computed off the workers (it walks every profile, group and
/// runtime rule of both snapshots).
async fn report_of(applied: crate::apply::Applied, dry_run: bool) -> Result<Report, ApplyError> {
    tokio::task::spawn_blocking(move || {
        let mut report = Report::between(&applied.old, &applied.new, dry_run);
        report.restart_needed = crate::config::restart::restart_only_changes(
            &applied.old.config.config,
            &applied.new.config.config,
        );
        report
    })
    .await
    .map_err(|e| ApplyError::Task("report", e.to_string()))
}

/// Runs a change in a task of its own, so it completes (or fails cleanly) even when the
/// caller stops waiting: an admin's dropped connection never leaves a change half done.
async fn to_completion<T: Send + 'static>(
    what: &'static str,
    change: impl std::future::Future<Output = Result<T, ApplyError>> + Send + 'static,
) -> Result<T, ApplyError> {
    tokio::spawn(change)
        .await
        .map_err(|e| ApplyError::Task(what, e.to_string()))?
}

/// Where the socket lives: the config's, else systemd's RuntimeDirectory, else
/// /run/telesink. The bool says whether the config named it (then failing is fatal).
pub fn socket_path(configured: Option<&Path>) -> (PathBuf, bool) {
    match configured {
        Some(p) => (p.to_owned(), true),
        None => (
            crate::state::default_dir("RUNTIME_DIRECTORY", "/run/telesink").join("control.sock"),
            false,
        ),
    }
}
