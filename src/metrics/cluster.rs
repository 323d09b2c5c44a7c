//! The cluster's families (docs/CLUSTER.md): the connection, the shared revision in
//! force here and as every node reports it, digests that differ, refusals, writes and
//! the learned addresses shared. Read from the cluster status; nothing here holds the
//! cluster or the applier.

use std::sync::atomic::Ordering::Relaxed;

use prometheus::proto::{MetricFamily, MetricType};

use super::Family_;
use super::names::*;
use crate::cluster_status::ClusterStatus;
use crate::policy::Policy;

pub(super) fn families(c: &ClusterStatus, policy: &Policy, hub: bool) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    let mut gauge = |name: &str, help: &str, v: f64| {
        let mut g = Family_::new(name, help, MetricType::GAUGE);
        g.add(&[], v);
        out.push(g.mf);
    };
    gauge(
        CLUSTER_CONNECTED,
        "1 while the cluster store answers this node's heartbeat (a write), else 0: the node enforces its last state.",
        f64::from(u8::from(c.is_connected())),
    );
    gauge(
        CLUSTER_GENERATION,
        "Store revision of the site's shared toggles in force on this node.",
        policy.layers.as_ref().map_or(0, |l| l.revision) as f64,
    );
    gauge(
        CLUSTER_LAST_SYNC,
        "Unix time of the last full read of the shared state (start, reconnect).",
        c.last_sync_unix.load(Relaxed) as f64,
    );
    gauge(
        CLUSTER_LAST_CONTACT,
        "Unix time of the last exchange the store answered.",
        c.last_contact_unix.load(Relaxed) as f64,
    );
    gauge(
        CLUSTER_OVERRIDES,
        "This node's overrides (--local) in force: never overwritten by the shared state.",
        policy.layers.as_ref().map_or(0, |l| {
            l.local.profiles.len() + l.local.observe.len() + l.local.rules.len()
        }) as f64,
    );
    let now_ms = crate::clock::unix_millis();
    let mut revision = Family_::new(
        CLUSTER_NODE_REVISION,
        "Shared revision each node of the site reports in force (drift: a node behind).",
        MetricType::GAUGE,
    );
    let mut age = Family_::new(
        CLUSTER_NODE_REPORT_AGE,
        "Seconds since each node of the site last reported.",
        MetricType::GAUGE,
    );
    let mut info = Family_::new(
        CLUSTER_NODE_INFO,
        "Each node's digests of its config and lists (1).",
        MetricType::GAUGE,
    );
    let mismatched = c.mismatched(now_ms, 60_000);
    let mut mismatch = Family_::new(
        CLUSTER_MISMATCH,
        "1 for a node whose config or lists differ from this node's (reported within a minute).",
        MetricType::GAUGE,
    );
    for n in c.nodes.lock().values() {
        let node = n.node.as_str();
        revision.add(&[("node", node)], n.revision as f64);
        age.add(
            &[("node", node)],
            now_ms.saturating_sub(n.at_ms) as f64 / 1e3,
        );
        info.add(
            &[
                ("node", node),
                ("config_digest", &n.config_digest),
                ("lists_digest", &n.lists_digest),
            ],
            1.0,
        );
        mismatch.add(
            &[("node", node)],
            f64::from(u8::from(mismatched.iter().any(|m| m == node))),
        );
    }
    out.extend([revision.mf, age.mf, info.mf, mismatch.mf]);
    let mut counter = |name: &str, help: &str, v: u64| {
        let mut f = Family_::new(name, help, MetricType::COUNTER);
        f.add(&[], v as f64);
        out.push(f.mf);
    };
    counter(
        CLUSTER_REFUSED,
        "Values in the store this node refused (do not parse, unknown profile or group); nothing changed.",
        c.refused.load(Relaxed),
    );
    let mut writes = Family_::new(
        CLUSTER_WRITES,
        "Shared changes made from this node, by result.",
        MetricType::COUNTER,
    );
    writes.add(&[("result", "written")], c.writes.load(Relaxed) as f64);
    writes.add(
        &[("result", "failed")],
        c.write_failures.load(Relaxed) as f64,
    );
    out.push(writes.mf);
    let mut learned = Family_::new(
        CLUSTER_LEARNED,
        "Learned shadow addresses: shared by this node, taken from others, not shared (outbox full or store away), refused.",
        MetricType::COUNTER,
    );
    for (what, v) in [
        ("published", &c.learned_published),
        ("imported", &c.learned_imported),
        ("unshared", &c.learned_unshared),
        ("refused", &c.learned_refused),
    ] {
        learned.add(&[("what", what)], v.load(Relaxed) as f64);
    }
    out.push(learned.mf);
    if hub {
        out.extend(fleet(c, policy));
    }
    out
}

/// A fleet's gateway (docs/FLEET.md): the central revision in force and the evidence
/// sent towards the centre (a day due for long is a site server that is away).
fn fleet(c: &ClusterStatus, policy: &Policy) -> Vec<MetricFamily> {
    let f = &c.fleet;
    let mut out = Vec::new();
    for (name, help, kind, v) in [
        (
            FLEET_CENTRAL_REVISION,
            "Revision of the fleet's central policy in force on this node (from the site's mirror).",
            MetricType::GAUGE,
            policy.layers.as_ref().map_or(0, |l| l.central_revision),
        ),
        (
            FLEET_DAYS_SENT,
            "Closed days of the ledger the site's evidence stream took (towards the hub).",
            MetricType::COUNTER,
            f.days_sent.load(Relaxed),
        ),
        (
            FLEET_DAYS_DUE,
            "Closed days waiting to be sent at the last look (they wait in the ledger, nothing is lost).",
            MetricType::GAUGE,
            f.days_due.load(Relaxed),
        ),
        (
            FLEET_SEND_FAILURES,
            "Sends to the site's evidence stream that failed (retried).",
            MetricType::COUNTER,
            f.failures.load(Relaxed),
        ),
        (
            FLEET_LAST_SENT,
            "Unix time of the last day sent.",
            MetricType::GAUGE,
            f.last_sent_unix.load(Relaxed),
        ),
    ] {
        let mut g = Family_::new(name, help, kind);
        g.add(&[], v as f64);
        out.push(g.mf);
    }
    out
}
