//! The control plane: profile toggles, log-only mode and reloads, applied to DNS and
//! firewall together.
//!
//! Every change goes the same way, one at a time: build the new snapshot (a toggle reuses
//! the name index, a reload reads config and lists), write the state file's temporary
//! copy, program the firewall in one atomic batch, commit the state file, and only then
//! swap the DNS snapshot. A failure at any step returns before the swap, so DNS and
//! firewall never disagree and the caller gets the error.

pub mod api;
pub mod client;
mod report;
pub mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tracing::{error, info, warn};

pub use report::{Change, ProfileState, Report, Status};
pub use state::StateFile;

use crate::config::LoadedConfig;
use crate::firewall::shadow::Shadow;
use crate::metrics::Shared;
use crate::policy::{Policy, Toggle, ToggleError, Toggles};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Toggle(#[from] ToggleError),
    #[error("firewall: {0}; nothing changed")]
    Firewall(String),
    #[error("{0}; nothing changed")]
    State(#[from] state::StateError),
    #[error("reload failed, the previous policy keeps serving:\n{0}")]
    Reload(String),
}

/// What a caller asks to change.
#[derive(Debug, Clone)]
pub enum Edit {
    Profile(Toggle),
    LogOnly { profile: String, on: bool },
}

pub struct Control {
    pub policy: Arc<ArcSwap<Policy>>,
    pub shared: Arc<Shared>,
    shadow: Option<Arc<Shadow>>,
    cfg: parking_lot::Mutex<Arc<LoadedConfig>>,
    config_path: PathBuf,
    pub state: StateFile,
    /// One change at a time: two admins toggling at once must not build on the same base.
    serial: tokio::sync::Mutex<()>,
    /// Wakes the expiry task when the set of timed toggles changed.
    changed: tokio::sync::Notify,
    pub started_unix: u64,
}

impl Control {
    pub fn new(
        policy: Arc<ArcSwap<Policy>>,
        shared: Arc<Shared>,
        shadow: Option<Arc<Shadow>>,
        cfg: LoadedConfig,
        config_path: PathBuf,
        state: StateFile,
    ) -> Self {
        Self {
            policy,
            shared,
            shadow,
            cfg: parking_lot::Mutex::new(Arc::new(cfg)),
            config_path,
            state,
            serial: tokio::sync::Mutex::new(()),
            changed: tokio::sync::Notify::new(),
            started_unix: crate::metrics::unix_now(),
        }
    }

    pub fn config(&self) -> Arc<LoadedConfig> {
        self.cfg.lock().clone()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Applies a toggle (or only reports what it would change, with `dry_run`).
    pub async fn edit(&self, edit: Edit, dry_run: bool) -> Result<Report, ControlError> {
        let started = Instant::now();
        let _one = self.serial.lock().await;
        let old = self.policy.load_full();
        let mut toggles = old.toggles.clone();
        toggles.expire(crate::metrics::unix_now());
        match &edit {
            Edit::Profile(t) => toggles.set(t.clone()),
            Edit::LogOnly { profile, on } => toggles.set_log_only(profile, *on),
        }
        let new = old.with_toggles(toggles, old.generation + 1)?;
        let mut report = Report::between(&old, &new, dry_run);
        if !dry_run {
            self.commit(new).await?;
            info!(?edit, generation = report.generation, "toggle applied");
        }
        report.ms = started.elapsed().as_secs_f64() * 1e3;
        Ok(report)
    }

    /// Re-reads config and lists (SIGHUP and `telesink reload`); toggles are kept, those
    /// naming a profile or group that no longer exists are dropped and logged.
    pub async fn reload(&self) -> Result<Report, ControlError> {
        let started = Instant::now();
        let _one = self.serial.lock().await;
        let old = self.policy.load_full();
        let generation = old.generation + 1;
        let path = self.config_path.clone();
        let mut toggles = old.toggles.clone();
        toggles.expire(crate::metrics::unix_now());
        // Compiling a big list takes a while: keep it off the threads that answer queries.
        let built = tokio::task::spawn_blocking(move || {
            let cfg = LoadedConfig::load(&path).map_err(|e| e.to_string())?;
            let base = crate::daemon::compile(&cfg, generation)?;
            for w in toggles.retain_known(&base) {
                warn!("{w}");
            }
            let new = base
                .with_toggles(toggles, generation)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((cfg, new))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        let (cfg, new) = match built {
            Ok(both) => both,
            Err(e) => {
                self.shared.mark_reload(false);
                error!("reload failed, the previous policy keeps serving:\n{e}");
                return Err(ControlError::Reload(e));
            }
        };
        let previous_cfg = std::mem::replace(&mut *self.cfg.lock(), Arc::new(cfg));
        let mut report = Report::between(&old, &new, false);
        if let Err(e) = self.commit(new).await {
            *self.cfg.lock() = previous_cfg;
            self.shared.mark_reload(false);
            error!("reload failed, the previous policy keeps serving: {e}");
            return Err(ControlError::Reload(e.to_string()));
        }
        self.shared.mark_reload(true);
        info!(generation, "reloaded");
        report.ms = started.elapsed().as_secs_f64() * 1e3;
        Ok(report)
    }

    /// State file, then firewall, then DNS; see the module comment.
    async fn commit(&self, new: Policy) -> Result<(), ControlError> {
        let old = self.policy.load_full();
        let pending = if new.toggles != old.toggles {
            Some(self.state.prepare(&new.toggles)?)
        } else {
            None
        };
        let new = Arc::new(new);
        let cfg = self.config();
        let accounting = {
            let (new, cfg, shadow) = (new.clone(), cfg.clone(), self.shadow.clone());
            tokio::task::spawn_blocking(move || {
                crate::daemon::program_firewall(&cfg, &new, shadow.as_deref())
            })
            .await
            .map_err(|e| ControlError::Firewall(e.to_string()))?
            .map_err(|e| ControlError::Firewall(e.to_string()))?
        };
        if let Some(pending) = pending
            && let Err(e) = pending.commit()
        {
            // The kernel already has the new table: put the old one back so the two
            // halves stay in step, then report.
            let shadow = self.shadow.clone();
            let restored = tokio::task::spawn_blocking(move || {
                crate::daemon::program_firewall(&cfg, &old, shadow.as_deref())
            })
            .await;
            if !matches!(restored, Ok(Ok(_))) {
                error!("could not restore the previous firewall table after a state file error");
            }
            return Err(e.into());
        }
        self.policy.store(new.clone());
        self.shared.accounting.store(Arc::new(accounting));
        if let Some(s) = &self.shadow {
            s.seed(&new);
        }
        self.changed.notify_one();
        Ok(())
    }

    /// Reverts timed toggles when their time is up, for as long as the daemon runs.
    pub async fn expire_forever(self: Arc<Self>) {
        loop {
            let next = self.policy.load().toggles.next_deadline();
            let now = crate::metrics::unix_now();
            let wait = next.map_or(std::time::Duration::from_secs(3600), |t| {
                std::time::Duration::from_millis(t.saturating_sub(now) * 1000)
            });
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.changed.notified() => continue,
            }
            if let Err(e) = self.expire_due().await {
                error!("timed toggle could not be reverted (retrying in 10 s): {e}");
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            }
        }
    }

    async fn expire_due(&self) -> Result<(), ControlError> {
        let _one = self.serial.lock().await;
        let old = self.policy.load_full();
        let mut toggles = old.toggles.clone();
        if !toggles.expire(crate::metrics::unix_now()) {
            return Ok(());
        }
        let new = old.with_toggles(toggles, old.generation + 1)?;
        for c in Report::between(&old, &new, false).changes {
            info!(
                profile = c.profile,
                group = c.group,
                from = c.from,
                to = c.to,
                "timed toggle lapsed"
            );
        }
        self.commit(new).await
    }

    pub fn status(&self) -> Status {
        Status::of(self)
    }

    pub fn profiles(&self) -> Vec<ProfileState> {
        ProfileState::all(&self.policy.load())
    }
}

/// The policy to start with: the config's, with the saved toggles that still apply.
pub fn initial(base: Policy, state: &StateFile) -> Policy {
    let mut toggles: Toggles = state.load();
    toggles.expire(crate::metrics::unix_now());
    for w in toggles.retain_known(&base) {
        warn!("{w}");
    }
    let generation = base.generation;
    match base.with_toggles(toggles, generation) {
        Ok(p) => p,
        Err(e) => {
            warn!("saved toggles not applied: {e}");
            base
        }
    }
}

/// Where the socket lives: the config's, else systemd's RuntimeDirectory, else
/// /run/telesink. The bool says whether the config named it (then failing is fatal).
pub fn socket_path(configured: Option<&Path>) -> (PathBuf, bool) {
    match configured {
        Some(p) => (p.to_owned(), true),
        None => (
            state::default_dir("RUNTIME_DIRECTORY", "/run/telesink").join("control.sock"),
            false,
        ),
    }
}
