//! The one immutable snapshot every part of the daemon works from: the policy (lists,
//! profiles, groups, toggles), the config it came from, and what derives from both: the
//! firewall plan and the shadow-resolution hand-off. It sits behind one `ArcSwap`; a
//! query, a scrape, a status call and the firewall owner each load it once and see one
//! consistent generation. Only the apply path (src/apply.rs) builds and swaps it.

use std::ops::Deref;
use std::sync::Arc;

use hickory_proto::rr::Name;
use tracing::{info, warn};

use crate::config::LoadedConfig;
use crate::firewall::Plan;
use crate::policy::{self, BuildOutcome, Policy};

/// Where the pipeline hands blocked names of shadow profiles (src/shadow.rs); a narrow
/// interface, so the DNS side never depends on the resolver that learns addresses.
pub trait Learner: Send + Sync {
    /// A name a shadow profile blocked for a client; never waits.
    fn learn(&self, profile: u16, name: &Name);
    /// The records of an answer the client was allowed to get: their addresses serve
    /// something the policy lets through and must never be blocked. Never waits.
    fn allowed(&self, answers: &[hickory_proto::rr::Record]);
    /// Queues every exact blocked name of the shadow profiles (start and reload); works
    /// in the background and never makes the caller wait.
    fn seed(&self, policy: &Policy);
}

pub struct Snapshot {
    pub policy: Policy,
    pub config: Arc<LoadedConfig>,
    /// The nftables table this snapshot wants; None when the firewall is off.
    pub plan: Option<Arc<Plan>>,
    /// Shadow resolution, running while a shadow profile exists and the firewall is on.
    pub learner: Option<Arc<dyn Learner>>,
}

impl Deref for Snapshot {
    type Target = Policy;
    fn deref(&self) -> &Policy {
        &self.policy
    }
}

impl Snapshot {
    /// Derives the plan from the policy and the config's firewall section.
    pub fn new(
        policy: Policy,
        config: Arc<LoadedConfig>,
        learner: Option<Arc<dyn Learner>>,
    ) -> Snapshot {
        let fw = &config.config.firewall;
        let plan = fw
            .enabled
            .then(|| Arc::new(crate::firewall::plan(&policy, fw)));
        Snapshot {
            policy,
            config,
            plan,
            learner,
        }
    }

    pub fn firewall_on(&self) -> bool {
        self.plan.is_some()
    }

    /// Whether this snapshot needs shadow resolution running.
    pub fn wants_shadow(policy: &Policy, config: &LoadedConfig) -> bool {
        config.config.firewall.enabled && policy.profiles.iter().any(|p| p.shadow)
    }
}

/// Builds a policy and logs what it found; the problems, one per line, if it cannot.
/// Start, reload and `telesink firewall apply` all come here, and `telesink check`
/// applies the same rules (`policy::build`), so they accept and refuse the same input.
pub fn compile(cfg: &LoadedConfig, generation: u64) -> Result<Policy, String> {
    let started = std::time::Instant::now();
    let BuildOutcome {
        policy,
        problems,
        warnings,
    } = policy::build(cfg, generation);
    for w in &warnings {
        warn!("{w}");
    }
    let skipped: Vec<_> = problems
        .iter()
        .filter(|p| p.severity == policy::Severity::SkippedLine)
        .collect();
    for p in skipped.iter().take(20) {
        warn!("skipped list line: {p}");
    }
    match policy {
        Some(policy) => {
            if !skipped.is_empty() {
                warn!(
                    "{} invalid list lines were skipped (telesink check lists them all)",
                    skipped.len()
                );
            }
            info!(
                generation,
                names = policy.total_names(),
                lists = policy.lists.len(),
                profiles = policy.profiles.len(),
                ms = started.elapsed().as_millis() as u64,
                "policy compiled"
            );
            Ok(policy)
        }
        None => Err(problems
            .iter()
            .filter(|p| p.severity == policy::Severity::Fatal)
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n")),
    }
}

/// The config's policy with the saved toggles that still apply: what start and
/// `telesink firewall apply` (early boot) both begin with.
///
/// What the state file may not hold (a rule telesink would refuse, more rules than
/// `max_rules`) is dropped and logged; the second value counts the rules dropped.
pub fn with_saved_toggles(
    base: Policy,
    state: &crate::state::StateFile,
    max_rules: usize,
    cluster: bool,
) -> (Policy, usize) {
    let (toggles, layers) = state.load_all();
    let now = crate::clock::unix_now();
    // A cluster node starts from the layers it saved; one that joins a cluster takes
    // its toggles as the shared ones it knows of (revision 0) until the store says
    // otherwise; one that left a cluster keeps what was in force.
    let mut layers = cluster.then(|| {
        layers.unwrap_or_else(|| crate::policy::Layers {
            shared: toggles.clone(),
            ..Default::default()
        })
    });
    let mut dropped = 0;
    let mut said = Vec::new();
    let mut clean = |t: &mut crate::policy::Toggles| {
        t.expire(now);
        let (s, d) = t.retain_valid(max_rules);
        dropped += d;
        said.extend(s);
        said.extend(t.retain_known(&base));
    };
    let toggles = match &mut layers {
        Some(l) => {
            clean(&mut l.central);
            clean(&mut l.shared);
            clean(&mut l.local);
            l.effective()
        }
        None => {
            let mut t = toggles;
            clean(&mut t);
            t
        }
    };
    for w in &said {
        warn!("{w}");
    }
    let generation = base.generation;
    match base.with_toggles(toggles, generation) {
        Ok(mut p) => {
            p.layers = layers;
            (p, dropped)
        }
        Err(e) => {
            warn!("saved toggles not applied: {e}");
            let mut base = base;
            base.layers = cluster.then(Default::default);
            (base, dropped)
        }
    }
}
