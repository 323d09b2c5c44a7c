//! The running services: everything the daemon serves with besides the snapshot (the
//! cache, the rate limiter, the counters, device identity, the upstreams, the ledger,
//! the live view, the kernel table's owner), built by one function at start and owned by
//! the apply path (`apply::Applier::services`), which hands each new snapshot to the
//! services that take it (`take`) in the same change that swaps it. What a service
//! cannot take without a restart is named by the reload's answer
//! (src/config/restart.rs).
//!
//! The pipeline, the metrics scrape, `/health`, the control API and the evidence feed
//! read from here; none of them holds the applier. `apply` imports this module, this
//! module imports neither `apply` nor `metrics` nor `control`.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;
use tracing::{error, info, warn};

use crate::config::LoadedConfig;
use crate::devices::{Devices, Identity, Kind};
use crate::dns::cache::{Cache, Limits};
use crate::dns::ratelimit::Limiter;
use crate::dns::upstream::Upstream;
use crate::dns::{ClientCounts, Outcomes};
use crate::evidence::Ledger;
use crate::evidence::tail::Tail;
use crate::firewall::kernel::Kernel;
use crate::shadow::ShadowCounts;
use crate::snapshot::Snapshot;

#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error(transparent)]
    Labels(#[from] crate::devices::KeyError),
    #[error(transparent)]
    Upstream(#[from] crate::dns::upstream::SetupError),
}

/// Reload outcomes, for status and metrics.
#[derive(Default)]
pub struct Reloads {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub last_unix: AtomicU64,
}

pub struct Services {
    /// The snapshot in force; only the apply path stores into it.
    pub current: Arc<ArcSwap<Snapshot>>,
    pub kernel: Kernel,
    pub upstream: Arc<Upstream>,
    pub cache: Arc<Cache>,
    pub limiter: Arc<Limiter>,
    pub outcomes: Arc<Outcomes>,
    /// Blocked and observed queries by client address, as the query path counts them.
    pub clients: Arc<ClientCounts>,
    pub devices: Arc<Devices>,
    /// The evidence ledger; None when off or when it could not be opened
    /// (`ledger_missing` tells the two apart).
    pub ledger: Option<Arc<Ledger>>,
    pub ledger_missing: bool,
    pub tail: Arc<Tail>,
    pub shadow_counts: Arc<ShadowCounts>,
    pub reloads: Reloads,
    /// Forwarding slots: only a cache miss waits on an upstream, at most this many.
    pub forward_slots: Arc<Semaphore>,
    pub max_in_flight: usize,
    /// The connection slots of every listener that holds connections.
    pub listeners: crate::slots::Listeners,
    /// What the cluster connection knows (`[cluster]`; None for one box).
    pub cluster: Option<Arc<crate::cluster_status::ClusterStatus>>,
}

impl Services {
    /// Builds every service from the start's config; `first` is the snapshot the apply
    /// path is about to put in force.
    pub fn build(cfg: &LoadedConfig, first: Arc<Snapshot>) -> Result<Services, ServicesError> {
        let c = &cfg.config;
        let state_path = crate::state::state_path(c.control.state_file.as_deref());
        let upstreams = if c.upstream.servers.is_empty() {
            crate::dns::upstream::from_resolv_conf(&c.upstream.resolv_conf, &c.server.listen)
                .into_iter()
                .map(crate::config::upstream::ServerSpec::udp)
                .collect()
        } else {
            c.upstream.servers.clone()
        };
        if upstreams.is_empty() {
            warn!(
                "no upstream resolver: blocked names are answered, everything else gets SERVFAIL"
            );
        }
        let shown: Vec<String> = upstreams.iter().map(ToString::to_string).collect();
        info!(upstreams = ?shown, forward_zones = c.forward.len(), "forwarding");
        let settings = crate::dns::upstream::Settings::of(c, upstreams)?;
        let upstream = Arc::new(Upstream::new(&settings)?);
        // The evidence ledger. A file that is not a ledger is set aside inside `open`;
        // one that cannot be opened at all (a folder telesink may not write) leaves DNS
        // and the firewall running, says so in the log and in /health.
        let ledger = if c.evidence.enabled {
            let path = crate::evidence::path_of(&c.evidence, &state_path);
            match Ledger::open(&c.evidence, &path) {
                Ok(l) => {
                    info!("evidence ledger {}", path.display());
                    Some(l)
                }
                Err(e) => {
                    error!(
                        "evidence ledger unavailable, nothing is recorded: {e} (set [evidence] path to a folder telesink may write)"
                    );
                    None
                }
            }
        } else {
            None
        };
        let key_file = c.metrics.pseudonym_key_file.clone().unwrap_or_else(|| {
            state_path
                .parent()
                .unwrap_or(Path::new("."))
                .join("client-label.key")
        });
        let labels = crate::devices::Labeler::new(c.metrics.client_labels, &key_file)?;
        let max_in_flight = c.server.max_in_flight.max(1);
        Ok(Services {
            current: Arc::new(ArcSwap::new(first)),
            kernel: Kernel::spawn(),
            upstream,
            cache: Arc::new(Cache::new(
                c.cache.size,
                Limits {
                    min_ttl: c.cache.min_ttl_secs,
                    max_ttl: c.cache.max_ttl_secs,
                    negative_max_ttl: c.cache.negative_max_ttl_secs,
                },
            )),
            limiter: Arc::new(Limiter::new(c.server.rate_limit.max_clients)),
            outcomes: Arc::default(),
            // Addresses counted between two sweeps (10 s): every address of max_clients
            // devices, several each (IPv4, temporary IPv6), with room to spare.
            clients: Arc::new(ClientCounts::new(
                c.metrics.max_clients.saturating_mul(16).max(16_384),
            )),
            devices: Arc::new(Devices::new(c, labels)),
            ledger_missing: c.evidence.enabled && ledger.is_none(),
            ledger,
            tail: Arc::default(),
            shadow_counts: Arc::default(),
            reloads: Reloads::default(),
            forward_slots: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            listeners: crate::slots::Listeners::default(),
            cluster: c.cluster.as_ref().map(|k| {
                Arc::new(crate::cluster_status::ClusterStatus::new(
                    k.site.clone(),
                    k.node_name(),
                ))
            }),
        })
    }

    /// The apply path's step for the services: each takes what it can of the new
    /// snapshot. (The rest is restart-only and named by the reload's answer.)
    pub fn take(&self, new: &Snapshot) {
        self.devices.take(&new.config.config);
    }

    /// Queries waiting on an upstream.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight
            .saturating_sub(self.forward_slots.available_permits())
    }

    /// Moves the query path's per-address counts into the per-device tally and forgets
    /// idle addresses. Blocking (takes the registry's and tally's locks); the scrape
    /// calls it, and a task every 10 s so the address table stays small between scrapes.
    pub fn sweep(&self) {
        let now = crate::clock::unix_now();
        let policy = self.current.load_full();
        let devices = &self.devices;
        devices.registry.expire(now);
        devices.tally.sweep(
            &self.clients,
            &mut |ip| devices.identify(&policy, ip, now),
            devices.enabled(),
            now,
        );
    }

    /// Who `ip` is now, and its label (the ledger, `tail`, `explain`).
    pub fn label_of(&self, ip: IpAddr) -> (String, Kind) {
        self.devices.label_of(&self.current.load(), ip)
    }

    pub fn identify(&self, ip: IpAddr) -> Identity {
        self.devices
            .identify(&self.current.load(), ip, crate::clock::unix_now())
    }

    /// The firewall as status, `/health` and the systemd status line report it: "off",
    /// "on", or "degraded" while the table is missing or incomplete and being restored.
    pub fn firewall_state(&self) -> &'static str {
        let degraded = self.kernel.stats.degraded.load(Ordering::Relaxed);
        match (self.current.load().firewall_on(), degraded) {
            (false, _) => "off",
            (true, false) => "on",
            (true, true) => "degraded",
        }
    }

    /// The background work of the services: the lease files' look for changes every
    /// second (a stat per file) and the sweep every 10 s, on the blocking pool (they take
    /// locks and read files).
    pub fn spawn_tasks(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                n += 1;
                let s = me.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    s.devices.poll_leases(crate::clock::unix_now());
                    if n.is_multiple_of(10) {
                        s.sweep();
                    }
                })
                .await;
            }
        });
    }
}
