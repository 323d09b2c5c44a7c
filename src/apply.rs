//! The one apply path. Start, SIGHUP and `telesink reload`, profile toggles, log-only,
//! timed reverts and `telesink firewall apply` all change the daemon's state here, and
//! only here, in the same order:
//!
//! 1. build the new snapshot (a toggle shares the name index; a reload reads config and
//!    lists off the serving threads);
//! 2. reconcile the kernel: install the snapshot's table in one atomic batch (only what
//!    differs from the installed one), or remove it when a change turned the firewall off
//!    (the firewall owner thread does the netlink work);
//! 3. start, keep or stop shadow resolution;
//! 4. commit the state file (written to a temporary file before step 2);
//! 5. swap the snapshot, which DNS, metrics and status read.
//!
//! A failure in 1-4 returns before 5 and undoes what 2 did, so DNS, firewall, state file
//! and status never disagree; the caller gets the error. One change runs at a time.
//! `daemon` and `control` use this module; it imports neither.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{error, info, warn};

use crate::clock::unix_now;
use crate::config::{ConfigError, LoadedConfig};
use crate::firewall::kernel::{Kernel, KernelError, Learned};
use crate::policy::runtime::NameRule;
use crate::policy::{Policy, Toggle, ToggleError};
use crate::services::Services;
use crate::shadow::{Context, LearnedAddrs, Shadow, SharedAddrs};
use crate::snapshot::{self, Learner, Snapshot};
use crate::state::{StateError, StateFile};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the policy has errors:\n{0}")]
    Policy(String),
    #[error(transparent)]
    Toggle(#[from] ToggleError),
    #[error("firewall: {0}; nothing changed (set firewall.enabled = false to run DNS alone)")]
    Firewall(#[from] KernelError),
    #[error("{0}; nothing changed")]
    State(#[from] StateError),
    /// The task doing the work ended abnormally (a panic): nothing was swapped.
    #[error("the {0} task failed: {1}; nothing changed")]
    Task(&'static str, String),
    #[error(transparent)]
    Services(#[from] crate::services::ServicesError),
    /// A shared change the cluster store did not take (src/cluster/), with the fix.
    #[error("{0}")]
    Cluster(String),
}

/// What a caller asks to change.
#[derive(Debug, Clone)]
pub enum Edit {
    Profile(Toggle),
    /// Observe (`enabled` true) or stop observing a profile; group and time as for a
    /// profile toggle.
    LogOnly(Toggle),
    /// `telesink allow` / `telesink block`: a runtime rule for a name.
    Rule(NameRule),
    /// Removes the runtime rule for a name and group.
    Unrule {
        name: String,
        group: Option<String>,
    },
    /// Removes a profile's toggles and log-only switches for a group (None: the entries
    /// for every group): back to the config.
    Reset {
        profile: String,
        group: Option<String>,
    },
}

impl Edit {
    /// Records who asks and why on the toggle or rule the edit makes.
    pub fn stamp(&mut self, by: String, why: Option<String>) {
        let (b, w) = match self {
            Edit::Profile(t) | Edit::LogOnly(t) => (&mut t.by, &mut t.why),
            Edit::Rule(r) => (&mut r.by, &mut r.why),
            Edit::Unrule { .. } | Edit::Reset { .. } => return,
        };
        *b = Some(by);
        *w = why.filter(|w| !w.trim().is_empty());
    }
}

impl std::fmt::Display for Edit {
    /// In words, for the log: "profile ads off for group finance until 14:30 UTC".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, t, state) = match self {
            Edit::Rule(r) => {
                let verb = if r.allow { "allow" } else { "block" };
                write!(f, "runtime rule: {verb} {}", r.name)?;
                write_scope(f, r.group.as_deref(), r.until)?;
                return Ok(());
            }
            Edit::Unrule { name, group } => {
                write!(f, "runtime rule for {name} removed")?;
                return write_scope(f, group.as_deref(), None);
            }
            Edit::Reset { profile, group } => {
                write!(f, "profile {profile} back to the config")?;
                return write_scope(f, group.as_deref(), None);
            }
            Edit::Profile(t) => ("profile", t, if t.enabled { "on" } else { "off" }),
            Edit::LogOnly(t) => (
                "log-only of profile",
                t,
                if t.enabled { "on" } else { "off" },
            ),
        };
        write!(f, "{what} {} {state}", t.profile)?;
        write_scope(f, t.group.as_deref(), t.until)
    }
}

/// " for group G until 14:30 UTC (in 600 s)", in words.
fn write_scope(
    f: &mut std::fmt::Formatter<'_>,
    group: Option<&str>,
    until: Option<u64>,
) -> std::fmt::Result {
    match group {
        Some(g) => write!(f, " for group {g}")?,
        None => write!(f, " for every group")?,
    }
    if let Some(until) = until {
        let secs = until % 86_400;
        write!(
            f,
            " until {:02}:{:02} UTC (in {} s)",
            secs / 3600,
            secs % 3600 / 60,
            until.saturating_sub(unix_now())
        )?;
    }
    Ok(())
}

/// The toggles in force, in words, for the log after a reload or start.
pub fn describe_toggles(t: &crate::policy::Toggles) -> Vec<String> {
    let profiles = t.profiles.iter().map(|x| Edit::Profile(x.clone()));
    let observe = t.observe.iter().map(|x| Edit::LogOnly(x.clone()));
    let rules = t.rules.iter().map(|x| Edit::Rule(x.clone()));
    profiles
        .chain(observe)
        .chain(rules)
        .map(|e| e.to_string())
        .collect()
}

/// The runtime rules in force, in words (for reports and the log).
pub fn describe_rules(t: &crate::policy::Toggles) -> Vec<String> {
    t.rules
        .iter()
        .map(|r| Edit::Rule(r.clone()).to_string())
        .collect()
}

/// Command-line replacements for parts of the config, kept for every reload so a trial
/// run does not fall back to the file's listeners and upstreams.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Vec<std::net::SocketAddr>,
    pub upstream: Vec<crate::config::upstream::ServerSpec>,
    pub metrics: Option<std::net::SocketAddr>,
}

impl Overrides {
    fn apply_to(&self, cfg: &mut LoadedConfig) {
        if !self.listen.is_empty() {
            cfg.config.server.listen = self.listen.clone();
        }
        if !self.upstream.is_empty() {
            cfg.config.upstream.servers = self.upstream.clone();
        }
    }
}

/// Loads a config with the command line's replacements.
pub fn load_config(path: &Path, overrides: &Overrides) -> Result<LoadedConfig, ConfigError> {
    let mut cfg = LoadedConfig::load(path)?;
    overrides.apply_to(&mut cfg);
    Ok(cfg)
}

/// The state file a config names (or the default place).
pub fn state_file(cfg: &LoadedConfig) -> StateFile {
    StateFile::new(crate::state::state_path(
        cfg.config.control.state_file.as_deref(),
    ))
}

/// What a boot begins with: the config's policy and the saved toggles. The daemon's start
/// and `telesink firewall apply` both build their first snapshot with this.
/// The second value counts the saved runtime rules that were dropped (invalid, or past
/// `[control] max_runtime_rules`).
pub fn boot_policy(cfg: &LoadedConfig) -> Result<(Policy, usize), ApplyError> {
    let base = snapshot::compile(cfg, 1).map_err(ApplyError::Policy)?;
    let max = cfg.config.control.max_runtime_rules;
    Ok(snapshot::with_saved_toggles(
        base,
        &state_file(cfg),
        max,
        cfg.config.cluster.is_some(),
    ))
}

/// `telesink firewall apply` with no daemon running (early boot): the same snapshot as a
/// start, installed by the same owner; nothing with the firewall off. Returns what it
/// did, for the admin.
pub fn apply_offline(cfg: LoadedConfig) -> Result<String, ApplyError> {
    let (policy, _) = boot_policy(&cfg)?;
    let snap = Snapshot::new(policy, Arc::new(cfg), None);
    let kernel = Kernel::spawn();
    match &snap.plan {
        Some(plan) => {
            kernel.apply_blocking(plan.clone())?;
            Ok(format!(
                "table inet {} applied ({} sets, {} rules; saved toggles included)",
                crate::firewall::plan::TABLE,
                plan.sets.len(),
                plan.rules.len()
            ))
        }
        None => {
            // Like a start with the firewall off: never remove a table that may be
            // another telesink's; say whether one is there.
            let there = crate::firewall::netlink::table_exists().unwrap_or(false);
            Ok(format!(
                "firewall.enabled is false: nothing applied{}",
                if there {
                    format!(
                        "; table inet {} is in the kernel and stays (telesink firewall remove deletes it)",
                        crate::firewall::plan::TABLE
                    )
                } else {
                    String::new()
                }
            ))
        }
    }
}

pub struct Applier {
    /// The running services, the snapshot in force among them: built at start, handed
    /// each new snapshot in `commit`.
    pub services: Arc<Services>,
    pub state: StateFile,
    config_path: PathBuf,
    overrides: Overrides,
    /// Learned addresses outlive a shadow restart; they expire on their own.
    learned: Arc<LearnedAddrs>,
    /// Addresses allowed answers revealed (never learned); outlive a shadow restart too.
    shared: Arc<SharedAddrs>,
    /// One change at a time: two admins toggling at once must not build on the same base.
    serial: tokio::sync::Mutex<()>,
    /// Wakes the expiry task when the set of timed toggles changed.
    pub changed: tokio::sync::Notify,
    /// Runtime rules refused at the cap or dropped from the state file at start.
    pub rules_refused: AtomicU64,
    /// Why the toggles in force are not in the state file (a timed revert applied while
    /// the file could not be written); None when they are. Retried by the expiry task.
    unsaved: parking_lot::Mutex<Option<String>>,
    /// The store revision in force (cluster nodes): a CLI change waits on it.
    revision: tokio::sync::watch::Sender<u64>,
}

/// Whether a change must be saved to take effect.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Save {
    /// An admin's change: not saved, not made (the caller hears why).
    Required,
    /// A timed revert: its time has come whether or not the disk agrees. Applied in
    /// memory, reported in /health and status, and saved when the file can be written.
    /// (Not saving it loses nothing: a lapsed toggle in the file is dropped at load.)
    BestEffort,
}

/// Runs CPU or disk work of the control plane on the blocking pool, never on the
/// workers that answer queries and serve the sockets.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, ApplyError> + Send + 'static,
) -> Result<T, ApplyError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApplyError::Task(what, e.to_string()))?
}

/// The snapshots before and after a change, for the caller's report.
pub struct Applied {
    pub old: Arc<Snapshot>,
    pub new: Arc<Snapshot>,
}

impl Applier {
    /// Builds the first snapshot from the config and the saved toggles and applies it:
    /// the firewall is in force before any listener answers.
    pub async fn start(
        config_path: PathBuf,
        overrides: Overrides,
        cfg: LoadedConfig,
    ) -> Result<Arc<Applier>, ApplyError> {
        // This daemon holds the state lock (crate::instance): what a killed run left
        // behind is no change in progress.
        state_file(&cfg).clean_stale_temporaries();
        let (policy, rules_dropped) = boot_policy(&cfg)?;
        let c = &cfg.config;
        let state = state_file(&cfg);
        let shared = Arc::new(SharedAddrs::new(
            std::time::Duration::from_secs(u64::from(c.firewall.shadow.shared_memory_secs)),
            c.firewall.shadow.max_shared_addresses,
        ));
        let cfg = Arc::new(cfg);
        let first = Arc::new(Snapshot::new(policy.clone(), cfg.clone(), None));
        let services = Services::build(&cfg, first)?;
        let applier = Arc::new(Applier {
            services: Arc::new(services),
            state,
            config_path,
            overrides,
            learned: Arc::default(),
            shared,
            serial: tokio::sync::Mutex::new(()),
            changed: tokio::sync::Notify::new(),
            rules_refused: AtomicU64::new(rules_dropped as u64),
            unsaved: parking_lot::Mutex::new(None),
            revision: tokio::sync::watch::Sender::new(0),
        });
        applier
            .services
            .reloads
            .last_unix
            .store(unix_now(), Ordering::Relaxed);
        applier.commit(None, policy, cfg, Save::Required).await?;
        Ok(applier)
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Applies a toggle, or only builds what it would change (`dry_run`). On a cluster
    /// node, `local` makes it an override of this node's (kept until cleared, never
    /// overwritten by the store); without it, it edits the shared layer, which only a
    /// dry run does here: a real shared change goes to the store (src/cluster/) and
    /// comes back through `adopt`.
    pub async fn edit(
        &self,
        edit: Edit,
        dry_run: bool,
        local: bool,
    ) -> Result<Applied, ApplyError> {
        let _one = self.serial.lock().await;
        let old = self.services.current.load_full();
        let (base, said) = (old.clone(), edit.to_string());
        let built = blocking("change", move || {
            let now = unix_now();
            let generation = base.generation + 1;
            match base.layers.clone() {
                None => {
                    let mut toggles = base.toggles.clone();
                    toggles.expire(now);
                    let toggles = edit_toggles(&base, toggles, edit, true)?;
                    Ok(rebuild(&base, toggles, None, generation)?)
                }
                Some(mut layers) => {
                    layers.expire(now);
                    match local {
                        true => layers.local = edit_toggles(&base, layers.local, edit, false)?,
                        false => layers.shared = edit_toggles(&base, layers.shared, edit, true)?,
                    }
                    Ok(rebuild(
                        &base,
                        layers.effective(),
                        Some(layers),
                        generation,
                    )?)
                }
            }
        })
        .await;
        let policy = match built {
            Err(e @ ApplyError::Toggle(ToggleError::TooManyRules { .. })) => {
                self.rules_refused.fetch_add(1, Ordering::Relaxed);
                warn!("refused: {said}: {e}");
                return Err(e);
            }
            other => other?,
        };
        if dry_run {
            let config = old.config.clone();
            let new = blocking("dry run", move || Ok(Snapshot::new(policy, config, None))).await?;
            return Ok(Applied {
                old,
                new: Arc::new(new),
            });
        }
        let new = self
            .commit(Some(&old), policy, old.config.clone(), Save::Required)
            .await?;
        let scope = if local && new.layers.is_some() {
            " (an override of this node's)"
        } else {
            ""
        };
        info!(generation = new.generation, "applied: {said}{scope}");
        Ok(Applied { old, new })
    }

    /// Puts the site's shared toggles at a store revision in force (src/cluster/), over
    /// this node's overrides. A value naming a profile or group this node does not have
    /// is refused whole: nothing changes, the caller logs and counts it. None: nothing
    /// to do (not a cluster node, or that revision is already in force).
    pub async fn adopt(
        &self,
        shared: crate::policy::Toggles,
        revision: u64,
    ) -> Result<Option<Applied>, ApplyError> {
        self.adopt_layer(shared, revision, |l| (&mut l.shared, &mut l.revision))
            .await
    }

    /// Puts a fleet's central toggles at a revision of the site's mirror in force
    /// (src/cluster/, docs/FLEET.md), under the site's and this node's entries: the
    /// same path and the same refusals as `adopt`.
    pub async fn adopt_central(
        &self,
        central: crate::policy::Toggles,
        revision: u64,
    ) -> Result<Option<Applied>, ApplyError> {
        self.adopt_layer(central, revision, |l| {
            (&mut l.central, &mut l.central_revision)
        })
        .await
    }

    /// One layer of a cluster node's toggles (`which` picks it and its revision) at a
    /// revision, through the one apply path.
    async fn adopt_layer(
        &self,
        mut toggles: crate::policy::Toggles,
        revision: u64,
        which: fn(&mut crate::policy::Layers) -> (&mut crate::policy::Toggles, &mut u64),
    ) -> Result<Option<Applied>, ApplyError> {
        // What lapsed here has lapsed: the store keeps a lapsed entry until the next
        // write, and reading it again must not count as a change.
        toggles.expire(unix_now());
        let _one = self.serial.lock().await;
        let old = self.services.current.load_full();
        let Some(mut layers) = old.layers.clone() else {
            return Ok(None);
        };
        let (held, at) = which(&mut layers);
        if revision < *at || (revision == *at && toggles == *held) {
            return Ok(None);
        }
        *held = toggles;
        *at = revision;
        let base = old.clone();
        let policy = blocking("shared change", move || {
            layers.expire(unix_now());
            Ok(rebuild(
                &base,
                layers.effective(),
                Some(layers),
                base.generation + 1,
            )?)
        })
        .await?;
        // Not saved is not refused: the site decided it; the file catches up (retried).
        let new = self
            .commit(Some(&old), policy, old.config.clone(), Save::BestEffort)
            .await?;
        Ok(Some(Applied { old, new }))
    }

    /// Learned addresses another node shared: into this node's learned sets, with the
    /// checks its own learning makes; nothing while the firewall or shadow is off.
    /// Returns (taken in, refused).
    pub async fn import_learned(
        &self,
        items: Vec<crate::cluster_status::SharedLearn>,
    ) -> (u64, u64) {
        let snap = self.services.current.load_full();
        if !Snapshot::wants_shadow(&snap, &snap.config) {
            return (0, items.len() as u64);
        }
        let max = snap.config.config.firewall.shadow.max_addresses;
        crate::shadow::adopt_shared(
            &self.learned,
            &self.shared,
            &self.services.kernel,
            &self.services.upstream,
            &snap,
            max,
            items,
        )
        .await
    }

    /// The store revision in force here, as it changes (0 for one box).
    pub fn revisions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// Re-reads config and lists; toggles are kept, those naming a profile or group that
    /// no longer exists are dropped and logged.
    pub async fn reload(&self) -> Result<Applied, ApplyError> {
        let _one = self.serial.lock().await;
        let result = self.reload_locked().await;
        let counter = if result.is_ok() {
            &self.services.reloads.ok
        } else {
            &self.services.reloads.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        match &result {
            Ok(a) => {
                self.services
                    .reloads
                    .last_unix
                    .store(unix_now(), Ordering::Relaxed);
                info!(generation = a.new.generation, "reloaded");
                let kept = crate::config::restart::restart_only_changes(
                    &a.old.config.config,
                    &a.new.config.config,
                );
                if !kept.is_empty() {
                    warn!(
                        "changed settings that only a restart applies, running with their old values until then: {}",
                        kept.join(", ")
                    );
                }
                for t in describe_toggles(&a.new.toggles) {
                    info!("runtime toggle kept across the reload: {t}");
                }
            }
            Err(e) => error!("reload failed, the previous policy keeps serving:\n{e}"),
        }
        result
    }

    async fn reload_locked(&self) -> Result<Applied, ApplyError> {
        let old = self.services.current.load_full();
        let generation = old.generation + 1;
        let (path, overrides) = (self.config_path.clone(), self.overrides.clone());
        let mut toggles = old.toggles.clone();
        let mut layers = old.layers.clone();
        toggles.expire(unix_now());
        // Compiling a big list takes a while: keep it off the threads that answer queries.
        let built = tokio::task::spawn_blocking(move || {
            let cfg = load_config(&path, &overrides)?;
            let base = snapshot::compile(&cfg, generation).map_err(ApplyError::Policy)?;
            // A reload that adds or removes `[cluster]` takes effect at restart (the
            // store connection is made at start): the layers stay as they were.
            if let Some(l) = &mut layers {
                l.expire(unix_now());
                let mut said = l.shared.retain_known(&base);
                said.extend(l.local.retain_known(&base));
                for w in said {
                    warn!("{w}");
                }
                toggles = l.effective();
            } else {
                for w in toggles.retain_known(&base) {
                    warn!("{w}");
                }
            }
            let policy = rebuild(&base, toggles, layers, generation)?;
            Ok::<_, ApplyError>((cfg, policy))
        })
        .await
        .map_err(|e| ApplyError::Task("reload", e.to_string()))??;
        let (cfg, policy) = built;
        // `[[forward]]` zones reload with the policy that reads them (exact rules only
        // in them): built first, so a reload that cannot build them changes nothing.
        let zones = self
            .services
            .upstream
            .prepare_zones(&cfg.config)
            .map_err(|e| ApplyError::Services(e.into()))?;
        let new = self
            .commit(Some(&old), policy, Arc::new(cfg), Save::Required)
            .await?;
        self.services.upstream.replace_zones(zones);
        Ok(Applied { old, new })
    }

    /// Reverts the timed toggles whose time is up, even while the state file cannot be
    /// written (`Save::BestEffort`).
    pub async fn expire_due(&self) -> Result<Option<Applied>, ApplyError> {
        let _one = self.serial.lock().await;
        let old = self.services.current.load_full();
        let now = unix_now();
        let mut toggles = old.toggles.clone();
        let mut layers = old.layers.clone();
        let lapsed = match &mut layers {
            Some(l) => {
                let lapsed = l.expire(now);
                toggles = l.effective();
                lapsed
            }
            None => toggles.expire(now),
        };
        if !lapsed {
            return Ok(None);
        }
        let base = old.clone();
        let policy = blocking("timed revert", move || {
            Ok(rebuild(&base, toggles, layers, base.generation + 1)?)
        })
        .await?;
        let new = self
            .commit(Some(&old), policy, old.config.clone(), Save::BestEffort)
            .await?;
        Ok(Some(Applied { old, new }))
    }

    /// Why the toggles in force are not saved, if they are not.
    pub fn unsaved(&self) -> Option<String> {
        self.unsaved.lock().clone()
    }

    /// Writes the toggles in force to the state file after a revert could not (the
    /// expiry task calls it every 10 s while `unsaved` says so).
    pub async fn save_again(&self) {
        let _one = self.serial.lock().await;
        let snap = self.services.current.load_full();
        let (state, toggles, layers) = (
            self.state.clone(),
            snap.toggles.clone(),
            snap.layers.clone(),
        );
        let saved = blocking("state file", move || {
            Ok(state.prepare_with(&toggles, layers.as_ref())?.commit()?)
        })
        .await;
        self.saved(match saved {
            Ok(None) => Ok(()),
            Ok(Some(unsynced)) => Err(unsynced.to_string()),
            Err(e) => Err(e.to_string()),
        });
    }

    /// Records whether the toggles in force are in the state file.
    fn saved(&self, result: Result<(), String>) {
        let mut unsaved = self.unsaved.lock();
        match result {
            Ok(()) => {
                if unsaved.take().is_some() {
                    info!("state file {} written again", self.state.path.display());
                }
            }
            Err(e) => {
                if unsaved.is_none() {
                    error!(
                        "the toggles in force cannot be saved ({e}); they apply now and are saved when the file can be written (retrying every 10 s)"
                    );
                }
                *unsaved = Some(e);
            }
        }
    }

    /// Writes the table of the snapshot in force again, whole (`telesink firewall apply`
    /// while running); nothing with the firewall off.
    pub async fn reapply(&self) -> Result<Arc<Snapshot>, ApplyError> {
        let _one = self.serial.lock().await;
        let snap = self.services.current.load_full();
        if let Some(plan) = &snap.plan {
            self.services
                .kernel
                .reinstall(plan.clone(), self.learned_for(&snap))
                .await?;
        }
        Ok(snap)
    }

    /// Steps 2-5 of the module comment for a policy built in step 1. The state file's
    /// write and the plan's derivation run on the blocking pool.
    async fn commit(
        &self,
        old: Option<&Arc<Snapshot>>,
        policy: Policy,
        cfg: Arc<LoadedConfig>,
        save: Save,
    ) -> Result<Arc<Snapshot>, ApplyError> {
        // A start (no old snapshot) has just read the toggles from the state file.
        let pending = match old {
            Some(o) if o.toggles != policy.toggles || o.layers != policy.layers => {
                let (state, toggles) = (self.state.clone(), policy.toggles.clone());
                let layers = policy.layers.clone();
                let prepared = blocking("state file", move || {
                    Ok(state.prepare_with(&toggles, layers.as_ref())?)
                });
                match prepared.await {
                    Ok(p) => Some(p),
                    Err(e) if save == Save::BestEffort => {
                        self.saved(Err(e.to_string()));
                        None
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => None,
        };
        let wants_shadow = Snapshot::wants_shadow(&policy, &cfg);
        let kept = old.and_then(|o| o.learner.clone());
        let mut new = blocking("change", move || Ok(Snapshot::new(policy, cfg, None))).await?;
        self.reconcile(old.map(|o| o.as_ref()), &new).await?;
        if old.is_some_and(|o| o.toggles.rules != new.toggles.rules)
            && let Err(e) = self.forget_allowed(&new).await
        {
            // Nothing of the learned map changed; the kernel has the new table: put the
            // old one back, so DNS, firewall and state file still agree.
            self.undo(old, &new).await;
            return Err(e);
        }
        let started_shadow = wants_shadow && kept.is_none();
        new.learner = match (wants_shadow, kept) {
            (true, Some(running)) => Some(running),
            (true, None) => Some(self.start_shadow(&new)),
            (false, _) => None,
        };
        if let Some(pending) = pending {
            let committed = blocking("state file", move || Ok(pending.commit()?)).await;
            match committed {
                Ok(None) => self.saved(Ok(())),
                // The new file is in place, only its folder entry is not synced: the
                // change stands (a restart reads the new file), said and retried.
                Ok(Some(unsynced)) => self.saved(Err(format!(
                    "{unsynced} (the new file is in place, but a power cut may bring the old one back)"
                ))),
                Err(e) if save == Save::BestEffort => self.saved(Err(e.to_string())),
                Err(e) => {
                    // The kernel already has the new table: put the old one back so the
                    // halves stay in step, then report.
                    self.undo(old, &new).await;
                    return Err(e);
                }
            }
        }
        let new = Arc::new(new);
        // The services take what they can of the new snapshot (device identity's
        // settings and lease files) in the same change; nothing here can fail.
        self.services.take(&new);
        self.services.current.store(new.clone());
        self.revision
            .send_replace(new.layers.as_ref().map_or(0, |l| l.revision));
        if started_shadow {
            info!("shadow resolution started");
        } else if old.is_some_and(|o| o.learner.is_some()) && new.learner.is_none() {
            info!("shadow resolution stopped: no shadow profile with the firewall on");
        }
        // Seeded when the lists change (or a runtime block rule does), not at every
        // toggle: a toggle shares the lists, and re-queueing every exact name each time
        // cost two upstream queries per listed name and toggle.
        let lists_changed = old.is_none_or(|o| {
            !Arc::ptr_eq(&o.index, &new.index) || o.toggles.rules != new.toggles.rules
        });
        if started_shadow || lists_changed {
            self.seed_shadow(&new);
        }
        self.changed.notify_one();
        Ok(new)
    }

    /// Puts the previous snapshot's table back after a later step of a change failed.
    async fn undo(&self, old: Option<&Arc<Snapshot>>, new: &Snapshot) {
        if let Some(o) = old
            && let Err(e) = self.reconcile(Some(new), o).await
        {
            error!("could not restore the previous firewall table after a failed change: {e}");
        }
    }

    /// Takes the addresses learned for names a runtime rule now allows out of the learned
    /// sets, in the change that allowed them: `telesink allow` returns once both DNS and
    /// the firewall let the name through.
    /// Two steps, so a kernel error edits nothing: the removals are computed first, sent,
    /// and only then taken out of the learned map.
    async fn forget_allowed(&self, new: &Snapshot) -> Result<(), ApplyError> {
        let runtime = new.policy.runtime.clone();
        let allowed = move |name: &hickory_proto::rr::Name| {
            crate::policy::QName::parse(&name.to_ascii())
                .is_some_and(|q| runtime.allows_anywhere(&q))
        };
        let diffs = self.learned.forgettable(&allowed);
        if diffs.is_empty() {
            return Ok(());
        }
        if new.firewall_on() {
            if crate::failpoint::hit("forget-allowed") {
                return Err(ApplyError::Firewall(KernelError::Netlink(
                    crate::firewall::netlink::NetlinkError::Send(crate::failpoint::error(
                        "forget-allowed",
                    )),
                )));
            }
            self.services.kernel.update_elements(diffs.clone()).await?;
        }
        self.learned.forget(&allowed);
        let n: usize = diffs.iter().map(|d| d.remove.len()).sum();
        info!(
            n,
            "learned addresses of names a runtime rule allows removed from the learned sets"
        );
        Ok(())
    }

    /// The learned addresses a full write of this snapshot's table carries.
    fn learned_for(&self, snap: &Snapshot) -> Option<Arc<dyn Learned>> {
        Snapshot::wants_shadow(snap, &snap.config).then(|| self.learned.clone() as Arc<dyn Learned>)
    }

    /// Makes the kernel match `new`: its table, or none.
    async fn reconcile(&self, old: Option<&Snapshot>, new: &Snapshot) -> Result<(), ApplyError> {
        let learned = self.learned_for(new);
        match (&new.plan, old) {
            (Some(plan), _) => {
                let started = std::time::Instant::now();
                self.services.kernel.apply(plan.clone(), learned).await?;
                info!(
                    sets = plan.sets.len(),
                    rules = plan.rules.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "firewall table inet {} programmed",
                    crate::firewall::plan::TABLE
                );
            }
            (None, Some(o)) if o.firewall_on() => {
                self.services.kernel.remove().await?;
                info!(
                    "firewall turned off: table inet {} removed",
                    crate::firewall::plan::TABLE
                );
            }
            (None, Some(_)) => {}
            (None, None) => {
                // A start with the firewall off never changes the kernel: the table there
                // may be another telesink's (a trial run beside the real one). One left by
                // an earlier run (on_exit = "keep") or by early boot would go on blocking
                // while status says off, so it is said, loudly, with the fix. Without
                // CAP_NET_ADMIN (a DNS-only trial run) nothing can be read, and that is fine.
                if let Ok(true) = self.services.kernel.exists().await {
                    warn!(
                        "firewall.enabled is false, but table inet {} is in the kernel (left by an earlier run with on_exit = \"keep\", by telesink-early, or another telesink's): it keeps blocking; remove it with `telesink firewall remove` if it is not in use",
                        crate::firewall::plan::TABLE
                    );
                }
            }
        }
        Ok(())
    }

    fn start_shadow(&self, snap: &Snapshot) -> Arc<dyn Learner> {
        Shadow::start(
            Context {
                cfg: snap.config.config.firewall.shadow.clone(),
                upstream: self.services.upstream.clone(),
                current: self.services.current.clone(),
                kernel: self.services.kernel.clone(),
                counts: self.services.shadow_counts.clone(),
                shared: self.shared.clone(),
                share: self.services.cluster.clone().filter(|_| {
                    snap.config
                        .config
                        .cluster
                        .as_ref()
                        .is_some_and(|c| c.share_learned)
                }),
            },
            self.learned.clone(),
        ) as Arc<dyn Learner>
    }

    /// Queues the exact names of the shadow profiles (in the background).
    fn seed_shadow(&self, snap: &Snapshot) {
        if let Some(learner) = &snap.learner {
            learner.seed(&snap.policy);
        }
    }

    /// The firewall as status, `/health` and the systemd status line report it.
    pub fn firewall_state(&self) -> &'static str {
        self.services.firewall_state()
    }

    /// The `on_exit` of the config in force, applied at stop.
    pub async fn stop(&self) {
        let snap = self.services.current.load_full();
        if !snap.firewall_on() {
            return;
        }
        match snap.config.config.firewall.on_exit {
            crate::config::OnExit::Keep => {
                info!("firewall table kept: blocking stays in force while telesink is down")
            }
            crate::config::OnExit::Remove => match self.services.kernel.remove().await {
                Ok(()) => info!("firewall table removed"),
                Err(e) => error!("could not remove the firewall table: {e}"),
            },
        }
    }
}

/// A change's new toggles: `edit` applied to `toggles` with the checks every change
/// gets (the profile and group exist, the rule cap). `redundant`: drop a standing entry
/// that only says what the config says (see `Policy::without_redundant`). The cluster's
/// writer applies an edit to the shared toggles with this too, so a change is the same
/// whichever node makes it.
pub fn edit_toggles(
    base: &Snapshot,
    mut toggles: crate::policy::Toggles,
    edit: Edit,
    redundant: bool,
) -> Result<crate::policy::Toggles, ApplyError> {
    match edit {
        Edit::Profile(t) => {
            crate::policy::check_toggle(base, &t.profile, t.group.as_deref())?;
            toggles.set(t);
            if redundant {
                toggles = base.without_redundant(toggles, false);
            }
        }
        Edit::LogOnly(t) => {
            crate::policy::check_toggle(base, &t.profile, t.group.as_deref())?;
            toggles.set_log_only(t);
            if redundant {
                toggles = base.without_redundant(toggles, true);
            }
        }
        Edit::Reset { profile, group } => {
            crate::policy::check_toggle(base, &profile, group.as_deref())?;
            toggles.reset(&profile, group.as_deref())?;
        }
        Edit::Rule(r) => {
            if let Some(g) = &r.group {
                crate::policy::check_group(base, g)?;
            }
            toggles.set_rule(r);
            toggles.check_rule_cap(base.config.config.control.max_runtime_rules)?;
        }
        Edit::Unrule { name, group } => toggles.remove_rule(&name, group.as_deref())?,
    }
    Ok(toggles)
}

/// A snapshot's policy: `base`'s index and groups with `toggles` applied, and the
/// layers they came from (cluster nodes).
fn rebuild(
    base: &Policy,
    toggles: crate::policy::Toggles,
    layers: Option<crate::policy::Layers>,
    generation: u64,
) -> Result<Policy, ToggleError> {
    let mut p = base.with_toggles(toggles, generation)?;
    p.layers = layers;
    Ok(p)
}
