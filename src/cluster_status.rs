//! What the cluster connection (src/cluster/) knows, as plain data the metrics, `/health`,
//! `status` and shadow resolution read without holding the cluster or the applier: the
//! connection, the revision in force, the other nodes as they last reported, and the
//! outbox of learned addresses to share.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// A learned shadow address to share with the other nodes, or shared by one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedLearn {
    pub addr: IpAddr,
    /// The profile's name (numbers are per node: a reload may renumber).
    pub profile: String,
    /// The name it was learned for.
    pub name: String,
    /// Unix seconds (UTC) when it lapses; each node evaluates it with its own clock.
    pub expires_at: u64,
    /// The node that learned it.
    pub node: String,
}

/// A node as it last reported itself in the nodes bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeReport {
    pub node: String,
    /// The store revision of the shared toggles it has in force.
    pub revision: u64,
    /// Its own policy generation (local: every reload and revert bumps it).
    pub generation: u64,
    pub config_digest: String,
    pub lists_digest: String,
    /// Its overrides (`--local`), in words.
    #[serde(default)]
    pub overrides: Vec<String>,
    /// The telesink version it runs.
    pub telesink: String,
    /// Unix milliseconds of the report.
    pub at_ms: u64,
}

/// Learned addresses waiting to be shared: bounded, so shadow resolution never waits
/// on the store; what does not fit is counted and shared at its next refresh.
pub const OUTBOX: usize = 4096;

pub struct ClusterStatus {
    pub site: String,
    pub node: String,
    /// The store answered the last heartbeat (a write, so it needs the store's quorum).
    pub connected: AtomicBool,
    /// Unix seconds of the last successful exchange with the store.
    pub last_contact_unix: AtomicU64,
    /// Unix seconds of the last full read of the shared state (start, reconnect).
    pub last_sync_unix: AtomicU64,
    pub syncs: AtomicU64,
    /// Values in the store that were refused (do not parse, unknown profile or group).
    pub refused: AtomicU64,
    pub writes: AtomicU64,
    pub write_failures: AtomicU64,
    pub learned_published: AtomicU64,
    pub learned_imported: AtomicU64,
    /// Learned addresses not shared: the outbox was full or the store away.
    pub learned_unshared: AtomicU64,
    /// Shared addresses this node would not learn (allow set, never-learn, unknown or
    /// non-shadow profile), or that were lapsed when they arrived.
    pub learned_refused: AtomicU64,
    /// This node's digests of its config and its lists.
    pub digests: Mutex<(String, String)>,
    /// Every node of the site as last reported (this one included), by name.
    pub nodes: Mutex<BTreeMap<String, NodeReport>>,
    /// The last thing that went wrong with the store, for status.
    pub last_error: Mutex<Option<String>>,
    /// A fleet's gateway (`[cluster] hub`): what it sent to the evidence stream.
    pub fleet: FleetSending,
    outbox_tx: mpsc::Sender<SharedLearn>,
    outbox_rx: Mutex<Option<mpsc::Receiver<SharedLearn>>>,
}

impl ClusterStatus {
    pub fn new(site: String, node: String) -> Self {
        let (outbox_tx, rx) = mpsc::channel(OUTBOX);
        ClusterStatus {
            site,
            node,
            connected: AtomicBool::new(false),
            last_contact_unix: AtomicU64::new(0),
            last_sync_unix: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
            learned_published: AtomicU64::new(0),
            learned_imported: AtomicU64::new(0),
            learned_unshared: AtomicU64::new(0),
            learned_refused: AtomicU64::new(0),
            digests: Mutex::default(),
            nodes: Mutex::default(),
            last_error: Mutex::default(),
            fleet: FleetSending::default(),
            outbox_tx,
            outbox_rx: Mutex::new(Some(rx)),
        }
    }

    /// Shadow resolution learned an address: share it (never waits).
    pub fn offer(&self, learned: SharedLearn) {
        if !self.connected.load(Ordering::Relaxed) || self.outbox_tx.try_send(learned).is_err() {
            self.learned_unshared.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The outbox's receiving end, for the one cluster task.
    pub fn take_outbox(&self) -> Option<mpsc::Receiver<SharedLearn>> {
        self.outbox_rx.lock().take()
    }

    pub fn give_back_outbox(&self, rx: mpsc::Receiver<SharedLearn>) {
        *self.outbox_rx.lock() = Some(rx);
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Nodes whose config or lists differ from this node's (reported within `fresh_ms`).
    pub fn mismatched(&self, now_ms: u64, fresh_ms: u64) -> Vec<String> {
        let (config, lists) = self.digests.lock().clone();
        self.nodes
            .lock()
            .values()
            .filter(|n| n.node != self.node && now_ms.saturating_sub(n.at_ms) <= fresh_ms)
            .filter(|n| n.config_digest != config || n.lists_digest != lists)
            .map(|n| n.node.clone())
            .collect()
    }
}

/// What a fleet's gateway sent towards the centre (src/fleet/send.rs).
#[derive(Debug, Default)]
pub struct FleetSending {
    /// Closed days the site's evidence stream took.
    pub days_sent: AtomicU64,
    /// Heads sent (the chain as the ledger has it, at start and on every change).
    pub heads_sent: AtomicU64,
    /// Sends that failed (the site's server away); retried, nothing lost.
    pub failures: AtomicU64,
    /// Closed days waiting to be sent at the last look.
    pub days_due: AtomicU64,
    /// Unix seconds of the last day sent.
    pub last_sent_unix: AtomicU64,
    /// Why the last send failed, until one succeeds.
    pub last_error: Mutex<Option<String>>,
}
