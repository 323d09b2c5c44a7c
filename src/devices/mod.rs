//! Devices, not addresses: who a client is for the per-client metrics, the evidence
//! ledger, `tail`, `status` and `explain`.
//!
//! An on-link client is its MAC, read from the kernel's neighbour table (`neigh`, kept
//! current from its notifications on a thread of its own, never read per query), so its
//! IPv4 address and every IPv6 temporary address count as one device. DHCP leases
//! (`leases`) name devices and map the addresses they hand out. A client with no
//! neighbour entry (behind a router, or the gateway itself) stays one address, said by
//! its kind. The query path never asks any of this: it counts by address, and the
//! identity is looked up when counts are read (`tally`, the ledger's flush, a `tail`
//! poll). docs/METRICS.md, "What a client label is", says what a label is and how long
//! it lives.

pub mod hold;
pub mod labels;
pub mod leases;
pub mod neigh;
pub mod registry;
pub mod tally;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

pub use hold::HoldOnce;
pub use labels::{Identity, KeyError, Kind, Labeler};
use neigh::NeighbourStats;
use registry::Registry;
pub use tally::{AcctKey, Reading, Tally};

use crate::config::Config;
use crate::policy::Policy;

/// A lease file as last read.
#[derive(Debug, Clone, Default)]
struct LeaseFile {
    stamp: Option<(std::time::SystemTime, u64)>,
    state: LeaseState,
}

/// What status says of one lease file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseState {
    pub path: PathBuf,
    pub format: String,
    pub leases: usize,
    pub skipped_lines: usize,
    pub error: Option<String>,
}

/// The device identity service, owned by the apply path's `Services`.
pub struct Devices {
    pub registry: Arc<Registry>,
    pub neighbours: Arc<NeighbourStats>,
    pub labels: Labeler,
    pub tally: Tally,
    enabled: AtomicBool,
    reader_started: AtomicBool,
    leases: Mutex<HashMap<PathBuf, LeaseFile>>,
}

/// `status`'s view of client identity.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeviceStatus {
    pub devices_on: bool,
    /// Addresses known as a device's, and the distinct devices among them.
    pub addresses: usize,
    pub devices: usize,
    pub leased_addresses: usize,
    pub configured: usize,
    /// Client identities with their own counts, and the bound.
    pub labels: usize,
    pub max_labels: usize,
    pub forget_after_secs: u64,
    /// Counts that went to client="other", and when that last happened.
    pub other_counts: u64,
    pub last_other_unix: u64,
    pub addresses_dropped: u64,
    pub neighbour_error: Option<String>,
    pub neighbour_overflows: u64,
    pub lease_files: Vec<LeaseState>,
}

impl Devices {
    pub fn new(cfg: &Config, labels: Labeler) -> Self {
        let id = &cfg.identity;
        let devices = Self {
            registry: Arc::new(Registry::new(id.max_addresses, id.forget_after_secs)),
            neighbours: Arc::default(),
            labels,
            tally: Tally::new(cfg.metrics.max_clients, id.forget_after_secs),
            enabled: AtomicBool::new(false),
            reader_started: AtomicBool::new(false),
            leases: Mutex::default(),
        };
        devices.take(cfg);
        devices
    }

    /// Takes a new config's `[identity]` (start, reload): on or off, the bounds, the
    /// lease files. The neighbour reader starts the first time identity is on and runs
    /// on while it is off (nothing reads what it learns then).
    pub fn take(&self, cfg: &Config) {
        let id = &cfg.identity;
        self.registry
            .set_bounds(id.max_addresses, id.forget_after_secs);
        self.tally.set_forget_after(id.forget_after_secs);
        self.enabled.store(id.devices, Ordering::Relaxed);
        if id.devices && !self.reader_started.swap(true, Ordering::Relaxed) {
            neigh::spawn(self.registry.clone(), self.neighbours.clone());
        }
        let files: Vec<PathBuf> = id.lease_files.iter().map(|p| p.get_ref().clone()).collect();
        let mut leases = self.leases.lock();
        leases.retain(|p, _| files.contains(p));
        for f in files {
            leases.entry(f.clone()).or_insert_with(|| LeaseFile {
                stamp: None,
                state: LeaseState {
                    path: f,
                    error: Some("not read yet".to_owned()),
                    ..LeaseState::default()
                },
            });
        }
    }

    /// Whether device identity is on (`[identity] devices`).
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Who `ip` is now: a `[[devices]]` or `hosts` address stays itself (the admin named
    /// it); else its device, if the neighbour table or a lease says; else itself.
    pub fn identify(&self, policy: &Policy, ip: IpAddr, now: u64) -> Identity {
        let ip = crate::policy::canonical_ip(ip);
        if !self.enabled.load(Ordering::Relaxed)
            || policy.clients.devices.name_of_addr(ip).is_some()
            || policy.clients.name_of(ip).is_some()
        {
            return Identity::Address(ip);
        }
        self.registry
            .mac_of(ip, now)
            .map_or(Identity::Address(ip), Identity::Device)
    }

    /// The label and kind of an identity (None: "other").
    pub fn label(&self, policy: &Policy, id: Option<&Identity>) -> (String, Kind) {
        match id {
            None => ("other".to_owned(), Kind::Other),
            Some(Identity::Address(ip)) => (self.labels.address(policy, *ip), Kind::Address),
            Some(Identity::Device(mac)) => {
                let lease = self.registry.lease_name(mac);
                (
                    self.labels.device(policy, mac, lease.as_deref()),
                    Kind::Device,
                )
            }
        }
    }

    /// The label of the client at `ip` now, as the ledger and `tail` write it.
    pub fn label_of(&self, policy: &Policy, ip: IpAddr) -> (String, Kind) {
        let id = self.identify(policy, ip, crate::clock::unix_now());
        self.label(policy, Some(&id))
    }

    /// Re-reads the lease files that changed since the last look. Blocking (file reads).
    pub fn poll_leases(&self, now: u64) {
        let due: Vec<(PathBuf, Option<(std::time::SystemTime, u64)>)> = {
            let leases = self.leases.lock();
            leases.iter().map(|(p, f)| (p.clone(), f.stamp)).collect()
        };
        for (path, before) in due {
            let stamp = std::fs::metadata(&path)
                .ok()
                .map(|m| (m.modified().unwrap_or(std::time::UNIX_EPOCH), m.len()));
            if stamp.is_some() && stamp == before {
                continue;
            }
            let state = match leases::read(&path, now) {
                Ok(read) => {
                    let state = LeaseState {
                        path: path.clone(),
                        format: read.format.to_owned(),
                        leases: read.leases.len(),
                        skipped_lines: read.skipped,
                        error: None,
                    };
                    self.registry.leases(&path, read.leases);
                    state
                }
                Err(e) => LeaseState {
                    path: path.clone(),
                    error: Some(e.to_string()),
                    ..LeaseState::default()
                },
            };
            let mut leases = self.leases.lock();
            if let Some(f) = leases.get_mut(&path) {
                let said = f.state.error.clone();
                if state.error.is_some() && state.error != said {
                    tracing::warn!(
                        "lease file {}: {}; its devices keep the names read before",
                        path.display(),
                        state.error.as_deref().unwrap_or("")
                    );
                }
                f.stamp = stamp;
                f.state = state;
            }
        }
    }

    /// Why /health should fail, if it should: clients counted as "other" within the
    /// last hour, or the neighbour table unreadable.
    pub fn health(&self, now: u64) -> Vec<String> {
        let mut why = Vec::new();
        let last = self.tally.last_overflow.load(Ordering::Relaxed);
        if last > 0 && now.saturating_sub(last) < 3600 {
            why.push(format!(
                "more clients were active within [identity] forget_after_secs than [metrics] max_clients ({}): some were counted as client=\"other\" at {}",
                self.tally.max(),
                crate::clock::utc_time(last)
            ));
        }
        if self.enabled.load(Ordering::Relaxed)
            && let Some((_, e)) = self.neighbours.last_error.lock().clone()
        {
            why.push(format!(
                "the neighbour table cannot be read ({e}): new clients count by address, not by device"
            ));
        }
        why
    }

    pub fn status(&self, policy: &Policy) -> DeviceStatus {
        let (addresses, devices, leased) = self.registry.sizes();
        DeviceStatus {
            devices_on: self.enabled.load(Ordering::Relaxed),
            addresses,
            devices,
            leased_addresses: leased,
            configured: policy.clients.devices.len(),
            labels: self.tally.len(),
            max_labels: self.tally.max(),
            forget_after_secs: self.registry.forget_after(),
            other_counts: self.tally.overflow.load(Ordering::Relaxed),
            last_other_unix: self.tally.last_overflow.load(Ordering::Relaxed),
            addresses_dropped: self.registry.addresses_dropped.load(Ordering::Relaxed),
            neighbour_error: self
                .neighbours
                .last_error
                .lock()
                .as_ref()
                .map(|(_, e)| e.clone()),
            neighbour_overflows: self.neighbours.overflows.load(Ordering::Relaxed),
            lease_files: {
                let mut v: Vec<LeaseState> = self
                    .leases
                    .lock()
                    .values()
                    .map(|f| f.state.clone())
                    .collect();
                v.sort_by(|a, b| a.path.cmp(&b.path));
                v
            },
        }
    }
}
