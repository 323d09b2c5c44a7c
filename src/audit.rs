//! Feeding the evidence ledger besides the pipeline, and writing it: every `flush_secs`
//! the firewall's kernel counters (rejects per client and profile, bypass attempts per
//! client and kind) are read, their growth since the last reading is counted into the
//! aggregate, and the aggregate is written to the file; the same once more at stop.
//!
//! The kernel counts per source address only: firewall rows name the profile (or the
//! bypass kind), not the destination (docs/EVIDENCE.md says why).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::evidence::{Layer, Ledger};
use crate::firewall::netlink::ClientCount;
use crate::firewall::plan::AcctSet;
use crate::services::Services;

/// What the ledger needs from the daemon.
pub struct Audit {
    pub ledger: Arc<Ledger>,
    pub services: Arc<Services>,
    /// The last reading of each (set, client) counter.
    seen: parking_lot::Mutex<HashMap<(String, IpAddr), u64>>,
    /// Rows of an address not known as a device's wait one flush, once
    /// (src/devices/hold.rs).
    hold: crate::devices::HoldOnce,
}

impl Audit {
    pub fn new(ledger: Arc<Ledger>, services: Arc<Services>) -> Arc<Audit> {
        Arc::new(Audit {
            ledger,
            services,
            seen: Default::default(),
            hold: Default::default(),
        })
    }

    /// The client label as the metrics make it: the device the address is now (its
    /// configured or lease name, its MAC or pseudonym), else the address (its name, or
    /// pseudonym).
    pub fn label(&self, ip: IpAddr) -> String {
        self.services.label_of(ip).0
    }

    /// Whether an address's rows wait for the next flush (src/devices/hold.rs).
    fn hold(&self, ip: IpAddr) -> bool {
        let on = self.services.devices.enabled();
        self.hold.hold(ip, &self.services.identify(ip), on)
    }

    /// The accounting sets of the table in force with their counters now. Blocking.
    fn counters(&self) -> Vec<(AcctSet, Vec<ClientCount>)> {
        let snap = self.services.current.load_full();
        let Some(plan) = &snap.plan else {
            return Vec::new();
        };
        let sets = crate::firewall::plan::accounting_sets(plan, &snap.policy);
        let Ok(read) = self
            .services
            .kernel
            .accounting_blocking(sets.iter().map(|s| (s.set.clone(), s.family)).collect())
        else {
            return Vec::new();
        };
        sets.into_iter()
            .zip(read)
            .filter_map(|(set, counts)| Some((set, counts.ok()?)))
            .collect()
    }

    /// Counts the growth of the firewall's counters since the last reading. Blocking.
    pub fn read_firewall(&self) {
        let now = crate::clock::unix_now();
        let mut seen = self.seen.lock();
        for (set, counts) in self.counters() {
            let (layer, profile, name): (Layer, Arc<str>, &str) =
                if set.metric == crate::metric_names::FIREWALL_REJECTS {
                    (Layer::FirewallRejected, set.value.clone(), "-")
                } else {
                    (Layer::Bypass, "bypass".into(), &*set.value)
                };
            for c in counts {
                let last = seen.insert((set.set.clone(), c.client), c.packets);
                // A counter that went down was reset (the table was written anew).
                let grown = match last {
                    Some(before) if c.packets >= before => c.packets - before,
                    _ => c.packets,
                };
                if grown > 0 {
                    self.ledger
                        .aggregate
                        .record(c.client, &profile, layer, name, name, grown, now);
                }
            }
        }
    }

    /// One round: firewall counters in, aggregate out to the file. Blocking.
    pub fn flush(&self) {
        self.read_firewall();
        self.hold.next_round();
        if let Err(e) = self.ledger.flush(&|ip| self.label(ip), &|ip| self.hold(ip)) {
            warn!("evidence: {e}; the counts are kept for the next flush");
            return;
        }
        // The day ran under this policy: said to a fleet's centre with the day.
        let snap = self.services.current.load_full();
        let profiles = crate::evidence::report::profiles_in_force(&snap.policy);
        let policy = serde_json::to_string(&profiles).unwrap_or_default();
        if let Err(e) = self.ledger.note_day(&policy) {
            warn!("evidence: {e}");
        }
    }

    /// The last round at stop: firewall counters in, the aggregate out to the file or,
    /// when the file cannot be written, to a recovery file beside it. Blocking.
    pub fn stop(&self) {
        self.read_firewall();
        match self.ledger.stop(&|ip| self.label(ip)) {
            Ok(said) if said.contains("saved to") => warn!("{said}"),
            Ok(said) => tracing::info!("{said}"),
            Err(said) => tracing::error!("{said}"),
        }
    }

    /// Flushes every `every` until the process ends.
    pub async fn run(self: Arc<Self>, every: Duration) {
        // The first reading of the kernel counters is the baseline, not new attempts:
        // a restart must not count again what the table had counted before it.
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || me.baseline()).await;
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        tick.tick().await;
        loop {
            tick.tick().await;
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.flush()).await;
        }
    }

    /// The counters as they are: what the table counted before this run is not new.
    fn baseline(&self) {
        let mut seen = self.seen.lock();
        for (set, counts) in self.counters() {
            for c in counts {
                seen.insert((set.set.clone(), c.client), c.packets);
            }
        }
    }
}
