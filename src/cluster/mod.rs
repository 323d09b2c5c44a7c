//! Two gateways, one policy: the site's runtime state in NATS JetStream key-value
//! buckets (docs/CLUSTER.md). An existing engine carries it; telesink only reads and
//! writes values:
//!
//! - `telesink_policy`, key `<site>.shared`: the shared toggles, log-only switches and
//!   runtime rules (`values::SharedDoc`), written by compare-and-swap on the revision;
//! - `telesink_nodes`, key `<site>.<node>`: each node's report (revision in force,
//!   generation, digests of config and lists, overrides);
//! - `telesink_learned`, key `<site>.<address>.<profile>`: learned shadow addresses
//!   with their expiry.
//!
//! Local truth first: every node enforces from its own state file; the store is where
//! the shared state comes from. On start and on every reconnect a node reads the shared
//! toggles at one revision and watches from the next (`sync.rs`), putting each change in
//! force through the one apply path (`Applier::adopt`), never restarting the resolver
//! or emptying a set. Expiry is evaluated locally from the UTC time in each entry, so a
//! timed revert happens during a partition too.

mod sync;
pub mod values;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use async_nats::jetstream::kv::{Store, UpdateErrorKind};
use tracing::{info, warn};

use crate::apply::{Applier, ApplyError, Edit};
use crate::cluster_status::ClusterStatus;
use crate::config::cluster::ClusterConfig;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "the cluster store cannot be reached ({0}): nothing changed. Check `telesink status` and the NATS servers in [cluster] servers; `--local` makes the change on this node only, as an override kept until cleared"
    )]
    Unreachable(String),
    #[error("the shared state in the store changed under {0} attempts in a row; try again")]
    Contended(usize),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(
        "written to the store at revision {0}, but this node has not applied it within {1} ms (see the log: a refused value, or a slow firewall)"
    )]
    NotApplied(u64, u64),
}

/// The buckets of one connection.
#[derive(Clone)]
struct Stores {
    policy: Store,
    nodes: Store,
    learned: Store,
}

/// The digests of a snapshot's config and lists, by the addresses of its config and
/// index: (config, index, (config digest, lists digest)).
type Digests = (usize, usize, (String, String));

/// What a shared change did: its revision, and which nodes had it in force within the
/// wait (`apply_wait_ms`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Written {
    pub revision: u64,
    pub applied: Vec<String>,
    pub pending: Vec<String>,
}

pub struct Cluster {
    cfg: ClusterConfig,
    pub status: Arc<ClusterStatus>,
    applier: Arc<Applier>,
    stores: ArcSwapOption<Stores>,
    /// Set when the first full read of the shared state is in force.
    first_sync: tokio::sync::watch::Sender<bool>,
    /// The JetStream context once connected (a fleet's evidence sender uses it).
    context: tokio::sync::watch::Sender<Option<async_nats::jetstream::Context>>,
    /// The digests of the config and lists in force, by the snapshot's config and index
    /// (computed again only when a reload changed them).
    digests: parking_lot::Mutex<Option<Digests>>,
}

impl Cluster {
    /// Starts the connection task. Connecting never blocks the start: a node whose
    /// store is away serves from its state file and says so.
    pub fn start(applier: Arc<Applier>, cfg: ClusterConfig) -> Option<Arc<Cluster>> {
        let status = applier.services.cluster.clone()?;
        let cluster = Arc::new(Cluster {
            cfg,
            status,
            applier,
            stores: ArcSwapOption::empty(),
            first_sync: tokio::sync::watch::Sender::new(false),
            context: tokio::sync::watch::Sender::new(None),
            digests: parking_lot::Mutex::default(),
        });
        tokio::spawn(sync::run(cluster.clone()));
        Some(cluster)
    }

    /// The site's JetStream, once the connection is made (it then fails over and
    /// reconnects by itself).
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let mut rx = self.context.subscribe();
        loop {
            if let Some(js) = rx.borrow_and_update().clone() {
                return js;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// Waits (at most `start_wait_secs`) for the shared state to be in force, so a node
    /// that comes back answers with what changed while it was away. False: it was not.
    pub async fn wait_first_sync(&self) -> bool {
        let wait = Duration::from_secs(self.cfg.start_wait_secs);
        let mut rx = self.first_sync.subscribe();
        matches!(
            tokio::time::timeout(wait, rx.wait_for(|done| *done)).await,
            Ok(Ok(_))
        )
    }

    /// Makes a change to the site's shared state: read the shared toggles, apply the
    /// edit with the checks every change gets (against this node's policy), write them
    /// back if nobody wrote in between (compare-and-swap on the revision, retried), then
    /// wait until this node has it in force and report which other nodes do.
    pub async fn write(&self, edit: Edit, by: String) -> Result<Written, ClusterError> {
        const ATTEMPTS: usize = 5;
        let stores = self
            .stores
            .load_full()
            .ok_or_else(|| ClusterError::Unreachable("not connected yet".into()))?;
        let key = values::policy_key(&self.cfg.site);
        let said = edit.to_string();
        let mut written = None;
        for _ in 0..ATTEMPTS {
            let entry = stores.policy.entry(key.clone()).await.map_err(|e| {
                self.failed();
                ClusterError::Unreachable(e.to_string())
            })?;
            let snap = self.applier.services.current.load_full();
            // The shared toggles as the store has them; one that does not parse is
            // replaced by what this node has in force as the shared layer (the admin's
            // change repairs it).
            let (base, revision) = match &entry {
                Some(e) => match values::decode_doc(&key, e.revision, &e.value) {
                    // One this node refuses (an unknown profile or group) is no base.
                    Ok(doc) if snap.with_toggles(doc.toggles.clone(), 0).is_ok() => {
                        (doc.toggles, e.revision)
                    }
                    Ok(_) => {
                        warn!(
                            "cluster: the stored shared state names what this node does not have; this change replaces it"
                        );
                        (shared_layer(&snap), e.revision)
                    }
                    Err(refused) => {
                        warn!(
                            "cluster: the stored shared state is refused ({refused}); this change replaces it"
                        );
                        (shared_layer(&snap), e.revision)
                    }
                },
                None => (shared_layer(&snap), 0),
            };
            let mut base = base;
            base.expire(crate::clock::unix_now());
            let edit = edit.clone();
            let toggles = crate::apply::edit_toggles(&snap, base, edit, true)?;
            let doc = values::SharedDoc::new(toggles, by.clone(), said.clone());
            let bytes = serde_json::to_vec(&doc).unwrap_or_default().into();
            let put = match revision {
                0 => stores.policy.create(&key, bytes).await.map_err(|e| {
                    (
                        e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists,
                        e.to_string(),
                    )
                }),
                r => stores.policy.update(&key, bytes, r).await.map_err(|e| {
                    (
                        e.kind() == UpdateErrorKind::WrongLastRevision,
                        e.to_string(),
                    )
                }),
            };
            match put {
                Ok(rev) => {
                    written = Some((rev, doc.toggles));
                    break;
                }
                // Someone wrote in between: read again, apply the edit to theirs.
                Err((true, _)) => continue,
                Err((false, e)) => {
                    self.failed();
                    return Err(ClusterError::Unreachable(e));
                }
            }
        }
        let (revision, toggles) = written.ok_or(ClusterError::Contended(ATTEMPTS))?;
        self.status
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        info!(revision, "cluster: shared change written: {said} by {by}");
        // In force here before the command returns: put in force now rather than when
        // the watch brings it back (a watch whose server just lost its leadership may
        // take seconds to resume); `adopt` ignores the revision when the watch was first.
        if let Err(e) = self.applier.adopt(toggles, revision).await {
            return Err(ClusterError::Apply(e));
        }
        let wait_ms = 5_000;
        let mut rx = self.applier.revisions();
        let here: bool = tokio::time::timeout(
            Duration::from_millis(wait_ms),
            rx.wait_for(|r| *r >= revision),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if !here {
            return Err(ClusterError::NotApplied(revision, wait_ms));
        }
        Ok(self.applied_by(revision).await)
    }

    /// Which nodes of the site report the revision in force, waiting up to
    /// `apply_wait_ms` for the others (a node reports at once when it applies).
    async fn applied_by(&self, revision: u64) -> Written {
        let until = Instant::now() + Duration::from_millis(self.cfg.apply_wait_ms);
        loop {
            let now_ms = crate::clock::unix_millis();
            let (mut applied, mut pending) = (Vec::new(), Vec::new());
            for n in self.status.nodes.lock().values() {
                // Nodes not heard of for a minute are gone or away; status shows them.
                if n.node != self.status.node && now_ms.saturating_sub(n.at_ms) > 60_000 {
                    continue;
                }
                if n.revision >= revision || n.node == self.status.node {
                    applied.push(n.node.clone());
                } else {
                    pending.push(n.node.clone());
                }
            }
            if !applied.contains(&self.status.node) {
                applied.push(self.status.node.clone());
            }
            if pending.is_empty() || Instant::now() >= until {
                return Written {
                    revision,
                    applied,
                    pending,
                };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn failed(&self) {
        self.status
            .write_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The shared layer this node has in force (what a write starts from when the store
/// has none, or one that is refused).
fn shared_layer(snap: &crate::snapshot::Snapshot) -> crate::policy::Toggles {
    snap.layers
        .as_ref()
        .map(|l| l.shared.clone())
        .unwrap_or_default()
}

/// The part of a config that must be the same on every node of a site: what decides
/// verdicts and the firewall (`[policy]`, `[profiles]`, `[groups]`, `[firewall]`,
/// `[[forward]]`, `[[devices]]`), not what is each node's own (listeners, paths, the
/// node's name, its upstreams).
fn policy_part(text: &str) -> String {
    const SHARED: [&str; 6] = [
        "policy", "profiles", "groups", "firewall", "forward", "devices",
    ];
    match text.parse::<toml::Table>() {
        Ok(mut t) => {
            t.retain(|k, _| SHARED.contains(&k));
            t.to_string()
        }
        Err(_) => text.to_owned(),
    }
}

/// The digests of the config text and of the list files in force (the first 16 hex
/// digits of SHA-256), which every node reports: config and lists come from config
/// management, and nodes of one site that differ are said in status and the metrics.
async fn digests(cluster: &Cluster, snap: &Arc<crate::snapshot::Snapshot>) -> (String, String) {
    let id = (
        Arc::as_ptr(&snap.config) as usize,
        Arc::as_ptr(&snap.index) as usize,
    );
    if let Some((c, i, d)) = cluster.digests.lock().clone()
        && (c, i) == id
    {
        return d;
    }
    let snap = snap.clone();
    let d = tokio::task::spawn_blocking(move || {
        use sha2::{Digest, Sha256};
        let hex = |h: Sha256| {
            h.finalize()
                .iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let mut config = Sha256::new();
        config.update(policy_part(&snap.config.text).as_bytes());
        let mut lists = Sha256::new();
        for l in snap.lists.iter() {
            lists.update(l.path.to_string_lossy().as_bytes());
            lists.update(std::fs::read(&l.path).unwrap_or_default());
        }
        (hex(config), hex(lists))
    })
    .await
    .unwrap_or_default();
    *cluster.digests.lock() = Some((id.0, id.1, d.clone()));
    *cluster.status.digests.lock() = d.clone();
    d
}

#[cfg(test)]
mod tests {
    use super::policy_part;

    /// Nodes of a site differ in their listeners, upstreams, paths and name; the digest
    /// covers only what decides verdicts and the firewall.
    #[test]
    fn the_config_digest_leaves_each_nodes_own_settings_out() {
        let node = |listen: &str, name: &str, lan: &str| {
            format!(
                "[server]\nlisten = [\"{listen}\"]\n[profiles.tele]\nlists = [\"t.list\"]\n[firewall]\nlan = [\"{lan}\"]\n[cluster]\nservers = [\"nats://192.0.2.1:4222\"]\nnode = \"{name}\"\n"
            )
        };
        let a = policy_part(&node("192.0.2.11:53", "gw1", "lan0"));
        assert_eq!(a, policy_part(&node("192.0.2.12:53", "gw2", "lan0")));
        assert_ne!(a, policy_part(&node("192.0.2.11:53", "gw1", "lan1")));
        assert!(
            a.contains("[profiles.tele]") && !a.contains("listen"),
            "{a}"
        );
    }
}
