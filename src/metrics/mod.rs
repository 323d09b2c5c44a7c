//! Prometheus metrics, gathered at scrape time.
//!
//! Nothing on the query path formats labels or allocates for metrics: outcomes are the
//! pipeline's atomic counters, blocked queries go through `ClientCounts` by address, and
//! the firewall's per-client reject counters are read from the kernel over netlink when
//! Prometheus scrapes; both are kept by device in the services' tally
//! (src/devices/tally.rs), which the scrape sweeps first. The scrape only observes the
//! services (src/services.rs); it holds no part of the apply path. Names are the
//! constants in `names`; docs/METRICS.md lists them.

mod cluster;
mod http;
pub use crate::metric_names as names;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

pub use http::{MAX_CONNECTIONS, MAX_PER_CLIENT, serve};

pub use crate::clock::unix_now;
use crate::dns::Outcome;
use crate::services::Services;

/// The evidence ledger's size and health, and the live view's drops.
fn evidence_families(s: &Services) -> Vec<MetricFamily> {
    use names::*;
    let mut out = Vec::new();
    let mut one = |name: &str, help: &str, kind: MetricType, value: u64| {
        let mut f = Family_::new(name, help, kind);
        f.add(&[], value as f64);
        out.push(f.mf);
    };
    one(
        TAIL_DROPPED,
        "Live-view events dropped because the view's ring was busy.",
        MetricType::COUNTER,
        s.tail.dropped.load(Ordering::Relaxed),
    );
    let Some(l) = &s.ledger else {
        return out;
    };
    one(
        EVIDENCE_FILE_BYTES,
        "Size of the evidence ledger file.",
        MetricType::GAUGE,
        l.size_bytes.load(Ordering::Relaxed),
    );
    one(
        EVIDENCE_PENDING,
        "Rows counted in memory and not yet written to the ledger.",
        MetricType::GAUGE,
        l.aggregate.pending() as u64,
    );
    one(
        EVIDENCE_CAPPED,
        "Attempts recorded as their rule because the client's day held names_per_client_day names.",
        MetricType::COUNTER,
        l.aggregate.capped(),
    );
    one(
        EVIDENCE_DROPPED,
        "Attempts not recorded because max_pending_rows rows were waiting for a flush.",
        MetricType::COUNTER,
        l.aggregate.dropped(),
    );
    one(
        EVIDENCE_DAY_ROWS_FORGOTTEN,
        "The day's rows forgotten at a flush because more than max_day_rows were held (the per-client name cap starts over; no attempt is lost).",
        MetricType::COUNTER,
        l.aggregate.day_rows_forgotten.load(Ordering::Relaxed),
    );
    one(
        EVIDENCE_REPORT_LEFT_OUT,
        "Report lines not sent because a report holds at most 1,000,000 lines.",
        MetricType::COUNTER,
        l.report_lines_left_out.load(Ordering::Relaxed),
    );
    one(
        EVIDENCE_WRITABLE,
        "1 while the last write of the ledger succeeded, 0 while writes fail (the rows wait in memory; /health says why).",
        MetricType::GAUGE,
        u64::from(l.writable()),
    );
    one(
        EVIDENCE_REOPENS,
        "Times the ledger file was opened anew after a write error.",
        MetricType::COUNTER,
        l.reopens.load(Ordering::Relaxed),
    );
    one(
        EVIDENCE_RECOVERED,
        "Rows written into the ledger from a recovery file that a stop left when the ledger could not be written.",
        MetricType::COUNTER,
        l.recovered_rows.load(Ordering::Relaxed),
    );
    one(
        EVIDENCE_BREAKS,
        "Times this ledger was started anew because the file before was unreadable (set aside; report verify names each).",
        MetricType::GAUGE,
        l.breaks(),
    );
    let mut f = Family_::new(
        EVIDENCE_FLUSHES,
        "Writes of the in-memory aggregate to the ledger, by result.",
        MetricType::COUNTER,
    );
    f.add(
        &[("result", "ok")],
        l.flushes.load(Ordering::Relaxed) as f64,
    );
    f.add(
        &[("result", "failed")],
        l.flush_failures.load(Ordering::Relaxed) as f64,
    );
    out.push(f.mf);
    out
}

/// Device identity: what the tables hold and what they forgot or could not take.
fn device_families(d: &crate::devices::Devices) -> Vec<MetricFamily> {
    use names::*;
    let mut out = Vec::new();
    let (addresses, macs, leased) = d.registry.sizes();
    let gauges = [
        (
            DEVICE_ADDRESSES,
            "Client addresses known as a device's (neighbour table, within forget_after_secs).",
            addresses as f64,
        ),
        (
            DEVICES_KNOWN,
            "Distinct devices (MACs) among them.",
            macs as f64,
        ),
        (
            DEVICE_LEASED,
            "Addresses the DHCP lease files hand out now.",
            leased as f64,
        ),
        (
            CLIENT_LABELS,
            "Client identities with counts of their own (bounded by [metrics] max_clients).",
            d.tally.len() as f64,
        ),
    ];
    for (name, help, v) in gauges {
        let mut f = Family_::new(name, help, MetricType::GAUGE);
        f.add(&[], v);
        out.push(f.mf);
    }
    let counters = [
        (
            CLIENT_LABELS_FORGOTTEN,
            "Client identities forgotten (series ended) because they were idle for [identity] forget_after_secs.",
            d.tally.forgotten.load(Ordering::Relaxed),
        ),
        (
            DEVICE_ADDRESSES_DROPPED,
            "New addresses not taken as a device's because [identity] max_addresses active ones were known.",
            d.registry.addresses_dropped.load(Ordering::Relaxed),
        ),
        (
            DEVICE_NEIGHBOUR_OVERFLOWS,
            "Times neighbour-table notifications were lost and the table was read again.",
            d.neighbours.overflows.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, v) in counters {
        let mut f = Family_::new(name, help, MetricType::COUNTER);
        f.add(&[], v as f64);
        out.push(f.mf);
    }
    out
}

/// Open connections, their bound and the closes that were not the client's doing, per
/// listener (DNS over TCP, metrics, control).
fn connection_families(listeners: &crate::slots::Listeners) -> Vec<MetricFamily> {
    use names::{CONNECTIONS_CLOSED, CONNECTIONS_MAX, CONNECTIONS_OPEN};
    let mut open = Family_::new(
        CONNECTIONS_OPEN,
        "Connections open, by listener.",
        MetricType::GAUGE,
    );
    let mut max = Family_::new(
        CONNECTIONS_MAX,
        "Connections a listener holds at most (the oldest idle one makes room).",
        MetricType::GAUGE,
    );
    let mut closed = Family_::new(
        CONNECTIONS_CLOSED,
        "Connections closed or refused by telesink, by listener and reason.",
        MetricType::COUNTER,
    );
    for l in listeners.all() {
        open.add(&[("listener", l.name)], l.open() as f64);
        max.add(&[("listener", l.name)], l.max() as f64);
        for why in crate::slots::Closed::ALL {
            closed.add(
                &[("listener", l.name), ("reason", why.name())],
                l.closed(why) as f64,
            );
        }
    }
    vec![open.mf, max.mf, closed.mf]
}

/// The custom collector: builds every family from the services at scrape time.
pub struct TelesinkCollector {
    pub services: Arc<Services>,
    descs: Vec<Desc>,
}

impl TelesinkCollector {
    pub fn new(services: Arc<Services>) -> Self {
        Self {
            services,
            descs: Vec::new(),
        }
    }
}

/// A family's samples summed by their labels: two MACs of one configured device, or an
/// address and the device it turned out to be, are one series.
struct Summed {
    family: Family_,
    rows: std::collections::BTreeMap<Vec<(&'static str, String)>, f64>,
}

impl Summed {
    fn new(name: &str, help: &str) -> Self {
        Self {
            family: Family_::new(name, help, MetricType::COUNTER),
            rows: Default::default(),
        }
    }

    fn add(&mut self, labels: Vec<(&'static str, String)>, v: f64) {
        *self.rows.entry(labels).or_default() += v;
    }

    fn done(mut self) -> MetricFamily {
        for (labels, v) in std::mem::take(&mut self.rows) {
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            self.family.add(&labels, v);
        }
        self.family.mf
    }
}

struct Family_ {
    mf: MetricFamily,
}

impl Family_ {
    fn new(name: &str, help: &str, kind: MetricType) -> Self {
        let mut mf = MetricFamily::default();
        mf.set_name(name.to_owned());
        mf.set_help(help.to_owned());
        mf.set_field_type(kind);
        Self { mf }
    }

    fn add(&mut self, labels: &[(&str, &str)], value: f64) {
        let mut m = Metric::default();
        m.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut lp = LabelPair::default();
                    lp.set_name((*k).to_owned());
                    lp.set_value((*v).to_owned());
                    lp
                })
                .collect(),
        );
        if self.mf.get_field_type() == MetricType::COUNTER {
            let mut c = Counter::default();
            c.set_value(value);
            m.set_counter(c);
        } else {
            let mut g = Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
        self.mf.mut_metric().push(m);
    }
}

impl Collector for TelesinkCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        use names::*;
        let s = &self.services;
        let policy = s.current.load_full();
        let mut out = Vec::new();

        let mut q = Family_::new(
            DNS_QUERIES,
            "DNS queries answered, by outcome.",
            MetricType::COUNTER,
        );
        for o in Outcome::ALL {
            q.add(&[("outcome", o.name())], s.outcomes.get(o) as f64);
        }
        out.push(q.mf);

        let mut paths = Family_::new(
            DNS_ANSWER_PATHS,
            "Answered queries by the path that answered them: replay (a kept answer sent again), direct (a blocked name's first answer made from the request's bytes), full (hickory-server's message types).",
            MetricType::COUNTER,
        );
        for p in crate::dns::pipeline::Path::ALL {
            paths.add(&[("path", p.name())], s.outcomes.by_path(p) as f64);
        }
        out.push(paths.mf);

        let mut b = Summed::new(
            DNS_BLOCKED,
            "DNS queries answered with a sinkhole, by client and profile.",
        );
        let mut lo = Summed::new(
            DNS_LOGGED,
            "Queries a log-only profile would have blocked (answered normally), by client and profile.",
        );
        let mut rl = Summed::new(
            DNS_RATE_LIMITED,
            "Queries over the client's rate limit (dropped or refused), by client.",
        );
        // What the query path counted since the last sweep joins the per-device tally
        // first, so a scrape sees every query answered before it.
        s.sweep();
        let devices = &s.devices;
        // Profiles by their number (stable across reloads), not by their position in
        // the snapshot in force: a reload that reorders them moves no count.
        let names = crate::policy::ids::all();
        // What each client label stands for, for `telesink_client_info`.
        let mut kinds: std::collections::BTreeMap<String, &'static str> = Default::default();
        for (id, what, n) in devices.tally.dns_rows() {
            use crate::dns::client_counts::Counted;
            let (client, kind) = devices.label(&policy, id.as_ref());
            kinds.insert(client.clone(), kind.name());
            let who = vec![("client", client)];
            let (family, pid) = match what {
                Counted::RateLimited => {
                    rl.add(who, n as f64);
                    continue;
                }
                Counted::Blocked(pid) => (&mut b, pid),
                Counted::Logged(pid) => (&mut lo, pid),
            };
            let name = names.get(pid as usize).map_or("other", |n| &**n);
            let mut labels = who;
            labels.push(("profile", name.to_owned()));
            family.add(labels, n as f64);
        }
        out.push(b.done());
        out.push(lo.done());
        out.push(rl.done());
        let mut forgotten = Family_::new(
            RATE_LIMIT_FORGOTTEN,
            "Clients the rate limit forgot because its table (server.rate_limit.max_clients) was full.",
            MetricType::COUNTER,
        );
        forgotten.add(&[], s.limiter.forgotten.load(Ordering::Relaxed) as f64);
        out.push(forgotten.mf);
        out.extend(connection_families(&s.listeners));
        if let Some(c) = &s.cluster {
            let hub = s
                .current
                .load()
                .config
                .config
                .cluster
                .as_ref()
                .is_some_and(|k| k.hub.is_some());
            out.extend(cluster::families(c, &policy, hub));
        }
        out.extend(evidence_families(s));

        let mut ov = Family_::new(
            CLIENT_OVERFLOW,
            "Counts that went to client=\"other\" because more clients than [metrics] max_clients were active within [identity] forget_after_secs (or between two sweeps).",
            MetricType::COUNTER,
        );
        ov.add(
            &[],
            (s.clients.overflow.load(Ordering::Relaxed)
                + devices.tally.overflow.load(Ordering::Relaxed)) as f64,
        );
        out.push(ov.mf);
        out.extend(device_families(devices));

        // Kernel counters, read now (by the firewall owner thread; the scrape runs on a
        // blocking thread): they only grow, so they are exported as counters.
        let mut fw = Summed::new(
            FIREWALL_REJECTS,
            "Packets the firewall rejected, by client and profile.",
        );
        let mut by = Summed::new(
            BYPASS_ATTEMPTS,
            "DNS bypass attempts stopped by the firewall, by client and kind.",
        );
        let accounting = policy
            .plan
            .as_ref()
            .map(|plan| crate::firewall::plan::accounting_sets(plan, &policy))
            .unwrap_or_default();
        let read = s
            .kernel
            .accounting_blocking(
                accounting
                    .iter()
                    .map(|x| (x.set.clone(), x.family))
                    .collect(),
            )
            .unwrap_or_default();
        let readings = accounting
            .iter()
            .zip(read)
            .filter_map(|(a, counts)| {
                Some(crate::devices::Reading {
                    set: a.set.as_str().into(),
                    key: crate::devices::AcctKey {
                        metric: a.metric,
                        label: a.label,
                        value: a.value.clone(),
                    },
                    counts: counts
                        .ok()?
                        .into_iter()
                        .map(|c| (c.client, c.packets))
                        .collect(),
                })
            })
            .collect();
        let now = crate::clock::unix_now();
        devices
            .tally
            .fold_firewall(readings, &mut |ip| devices.identify(&policy, ip, now), now);
        for (id, key, n) in devices.tally.firewall_rows() {
            let (client, kind) = devices.label(&policy, id.as_ref());
            kinds.insert(client.clone(), kind.name());
            let target = if key.metric == FIREWALL_REJECTS {
                &mut fw
            } else {
                &mut by
            };
            target.add(
                vec![("client", client), (key.label, key.value.to_string())],
                n as f64,
            );
        }
        out.push(fw.done());
        out.push(by.done());
        let mut info = Family_::new(
            CLIENT_INFO,
            "What each client label stands for: kind=\"device\" (all addresses of one on-link device, by its MAC), \"address\" (one address: behind a router, the gateway itself, or named as an address) or \"other\".",
            MetricType::GAUGE,
        );
        for (client, kind) in &kinds {
            info.add(&[("client", client), ("kind", kind)], 1.0);
        }
        out.push(info.mf);

        // Plain counters of the firewall owner and shadow resolution, present only while
        // the snapshot in force has what they count.
        let mut plain: Vec<(&str, &str, &AtomicU64)> = Vec::new();
        if policy.firewall_on() {
            let k = &s.kernel.stats;
            plain.push((
                FIREWALL_RESTORES,
                "Times the firewall table was put back after another process removed or flushed it.",
                &k.restores,
            ));
            plain.push((
                FIREWALL_EVENT_OVERFLOWS,
                "Times nftables change notifications were lost and the table was checked instead.",
                &k.event_overflows,
            ));
            plain.push((
                FIREWALL_COUNTER_READ_ERRORS,
                "Reads of the firewall's per-client counters that failed: the scrape and the ledger lacked those rows (/health says why).",
                &k.counter_read_errors,
            ));
            plain.push((
                FIREWALL_UNHEARD,
                "Times another process committed to nftables while telesink's change listener was paused for one of its big commits, so the table was checked.",
                &k.unheard,
            ));
        }
        if policy.learner.is_some() {
            let n = &s.shadow_counts;
            plain.extend([
                (
                    SHADOW_ADDED,
                    "Addresses of blocked names added to the firewall by shadow resolution.",
                    &n.added,
                ),
                (
                    SHADOW_ALLOW_SKIPPED,
                    "Learned addresses not added because they are in the allow set.",
                    &n.skipped_allow,
                ),
                (
                    SHADOW_QUEUE_FULL,
                    "Blocked names not handed to shadow resolution because its queue was full.",
                    &n.queue_full,
                ),
                (
                    SHADOW_OVER_MAX,
                    "Learned addresses not added because max_addresses were already learned.",
                    &n.over_max,
                ),
                (
                    SHADOW_SHARED_SKIPPED,
                    "Addresses not learned because an allowed answer had revealed them as shared.",
                    &n.shared_skipped,
                ),
                (
                    SHADOW_SHARED_REMOVED,
                    "Learned addresses removed because an allowed answer revealed them as shared.",
                    &n.shared_removed,
                ),
                (
                    SHADOW_NEVER_LEARN_SKIPPED,
                    "Addresses not learned because they are upstreams, the gateway's own or in never_learn_cidrs.",
                    &n.never_learn_skipped,
                ),
                (
                    SHADOW_SHARED_NOT_REMEMBERED,
                    "Shared addresses not remembered because max_shared_addresses were.",
                    &n.shared_not_remembered,
                ),
                (
                    SHADOW_NAMES_DROPPED,
                    "Blocked names not tracked by shadow resolution because max_names were.",
                    &n.names_dropped,
                ),
                (
                    SHADOW_NAMES_FORGOTTEN,
                    "Client-asked names shadow resolution stopped resolving because nobody asked for them for forget_asked_after_secs.",
                    &n.names_forgotten,
                ),
            ]);
        }
        for (name, help, value) in plain {
            let mut c = Family_::new(name, help, MetricType::COUNTER);
            c.add(&[], value.load(Ordering::Relaxed) as f64);
            out.push(c.mf);
        }
        if policy.firewall_on() {
            let mut g = Family_::new(
                FIREWALL_ACCOUNTING_FULL,
                "Per-client accounting sets found full at the last reading (new addresses are blocked but not counted per client; /health names them).",
                MetricType::GAUGE,
            );
            g.add(&[], s.kernel.stats.full_accounting.lock().len() as f64);
            out.push(g.mf);
        }
        if policy.learner.is_some() {
            let mut g = Family_::new(
                SHADOW_NAMES_TRACKED,
                "Names shadow resolution resolves again and again now (bounded by max_names).",
                MetricType::GAUGE,
            );
            g.add(
                &[],
                s.shadow_counts.names_tracked.load(Ordering::Relaxed) as f64,
            );
            out.push(g.mf);
        }

        let mut r = Family_::new(RELOADS, "Policy reloads, by result.", MetricType::COUNTER);
        r.add(
            &[("result", "success")],
            s.reloads.ok.load(Ordering::Relaxed) as f64,
        );
        r.add(
            &[("result", "failure")],
            s.reloads.failed.load(Ordering::Relaxed) as f64,
        );
        out.push(r.mf);

        let gauge = |name: &str, help: &str, v: f64| {
            let mut g = Family_::new(name, help, MetricType::GAUGE);
            g.add(&[], v);
            g.mf
        };
        out.push(gauge(
            POLICY_GENERATION,
            "Generation of the policy in use.",
            policy.generation as f64,
        ));
        out.push(gauge(
            LAST_RELOAD,
            "Unix time of the last successful policy load.",
            s.reloads.last_unix.load(Ordering::Relaxed) as f64,
        ));
        let (hits, misses) = s.cache.lookups();
        let mut cl = Family_::new(
            CACHE_LOOKUPS,
            "Cache lookups of allowed names, by result.",
            MetricType::COUNTER,
        );
        cl.add(&[("result", "hit")], hits as f64);
        cl.add(&[("result", "miss")], misses as f64);
        out.push(cl.mf);
        if let Some(h) = s.upstream.latency() {
            out.extend(h.collect());
        }
        if let Some(m) = s.upstream.metrics() {
            for c in m.collectors() {
                out.extend(c.collect());
            }
        }
        out.push(gauge(
            CACHE_ENTRIES,
            "Answers in the cache.",
            s.cache.len() as f64,
        ));
        out.push(gauge(
            IN_FLIGHT,
            "Queries waiting on an upstream.",
            s.in_flight() as f64,
        ));
        out.push(gauge(
            CLIENTS_SEEN,
            "Distinct client addresses seen (bounded).",
            s.outcomes.clients_seen() as f64,
        ));

        let mut l = Family_::new(
            LIST_ENTRIES,
            "Entries read from each list, by profile (\"global\" for global allowlists) and kind.",
            MetricType::GAUGE,
        );
        for list in policy.lists.iter() {
            let name = list
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let profile = match list.scope {
                crate::policy::Scope::Global => "global",
                crate::policy::Scope::Profile(p) => policy
                    .profiles
                    .get(p as usize)
                    .map_or("unknown", |p| p.name.as_str()),
            };
            let kind = if list.allowlist { "allow" } else { "block" };
            l.add(
                &[("list", &name), ("profile", profile), ("kind", kind)],
                list.entries as f64,
            );
        }
        out.push(l.mf);

        let mut bi = Family_::new(BUILD_INFO, "Build information.", MetricType::GAUGE);
        bi.add(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
        out.push(bi.mf);
        out
    }
}
