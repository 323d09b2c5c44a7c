//! The connection task: connect (the client fails over between the servers and
//! reconnects by itself), then sessions. A session reads the shared toggles at one
//! revision and puts them in force, watches from the next revision, watches the nodes'
//! reports and the learned addresses, sends this node's report every second and at once
//! when its revision changes, and shares what shadow resolution learns. A session ends
//! when a watch ends or errs, or when the store answers again after it did not: the next
//! one reads everything again, because nothing guarantees every message arrived while
//! the store was away (Blocky's lesson).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use async_nats::jetstream::kv::{Entry, Operation, Store, Watch};
use futures_util::StreamExt;
use tracing::{error, info, warn};

use super::values::{self, LEARNED_BUCKET, NODES_BUCKET, POLICY_BUCKET};
use super::{Cluster, Stores};
use crate::cluster_status::{NodeReport, SharedLearn};

/// How often a node reports itself (and so how fast a lost store is noticed).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Requests to the store: short, so a partitioned node notices and a CLI write fails
/// with the reason quickly.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Every this many heartbeats the nodes' reports are read whole.
const NODES_REREAD: u64 = 5;
/// Learned addresses taken in per kernel update at most.
const IMPORT_BATCH: usize = 512;

pub(super) async fn run(cluster: Arc<Cluster>) {
    let client = loop {
        match connect(&cluster).await {
            Ok(c) => break c,
            Err(e) => {
                note_error(&cluster, format!("cannot connect: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut js = async_nats::jetstream::new(client);
    js.set_timeout(REQUEST_TIMEOUT);
    cluster.context.send_replace(Some(js.clone()));
    loop {
        match session(&cluster, &js).await {
            Ok(why) => info!("cluster: reading the shared state again: {why}"),
            Err(e) => note_error(&cluster, e),
        }
        cluster.status.connected.store(false, Relaxed);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn connect(cluster: &Cluster) -> Result<async_nats::Client, String> {
    let cfg = &cluster.cfg;
    let mut opts = async_nats::ConnectOptions::new()
        .name(format!(
            "telesink {}.{}",
            cluster.status.site, cluster.status.node
        ))
        .connection_timeout(REQUEST_TIMEOUT)
        .ping_interval(Duration::from_secs(2))
        .request_timeout(Some(REQUEST_TIMEOUT))
        .retry_on_initial_connect()
        // The servers in the order given: a gateway lists its own server first, so its
        // connection does not depend on the other gateway's box (docs/CLUSTER.md).
        .retain_servers_order()
        .max_reconnects(None)
        .reconnect_delay_callback(|n| Duration::from_millis((100 * n as u64).min(1000)));
    if let Some(path) = &cfg.credentials {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|e| format!("cluster.credentials {}: {e}", path.display()))?;
    }
    if let (Some(u), Some(p)) = (&cfg.user, &cfg.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    let servers: Vec<async_nats::ServerAddr> =
        cfg.servers.iter().filter_map(|s| s.parse().ok()).collect();
    opts.connect(servers).await.map_err(|e| e.to_string())
}

fn note_error(cluster: &Cluster, e: String) {
    let mut last = cluster.status.last_error.lock();
    if last.as_deref() != Some(e.as_str()) {
        warn!("cluster: {e}; enforcing this node's last state");
    }
    *last = Some(e);
}

/// A bucket, created if the site is new (replicas as configured; an existing bucket
/// keeps its own settings). Created as its stream, in the key-value layout (NATS ADR-8:
/// `KV_<bucket>` over `$KV.<bucket>.>`, history as messages per subject, rollups on,
/// direct gets), because the client's `create_key_value` first reads the account's
/// limits in a form nats-server 2.9 (Debian 12) does not send.
async fn bucket(
    cluster: &Cluster,
    js: &async_nats::jetstream::Context,
    name: &str,
    history: i64,
    max_age: Duration,
) -> Result<Store, String> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    use async_nats::jetstream::stream::{Config, DiscardPolicy};
    js.get_or_create_stream(Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: history,
        max_age,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: DiscardPolicy::New,
        num_replicas: cluster.cfg.replicas(),
        duplicate_window: Duration::from_secs(120).min(if max_age.is_zero() {
            Duration::from_secs(120)
        } else {
            max_age
        }),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("bucket {name}: {e}"))?;
    js.get_key_value(name)
        .await
        .map_err(|e| format!("bucket {name}: {e}"))
}

async fn session(
    cluster: &Arc<Cluster>,
    js: &async_nats::jetstream::Context,
) -> Result<String, String> {
    let day = Duration::from_secs(86_400);
    let stores = Stores {
        policy: bucket(cluster, js, POLICY_BUCKET, 16, Duration::ZERO).await?,
        nodes: bucket(cluster, js, NODES_BUCKET, 1, day).await?,
        learned: bucket(cluster, js, LEARNED_BUCKET, 1, day).await?,
    };
    let site = cluster.status.site.clone();
    let key = values::policy_key(&site);
    // 1. The shared toggles at one revision, in force before anything else.
    let entry = stores
        .policy
        .entry(key.clone())
        .await
        .map_err(|e| format!("reading {key}: {e}"))?;
    let from = match entry {
        Some(e) => {
            let revision = e.revision;
            adopt_entry(cluster, e).await;
            revision + 1
        }
        None => {
            seed(cluster, &stores, &key).await;
            1
        }
    };
    // 1b. A fleet's central toggles, from the site's mirror of the hub's bucket. A
    // mirror that cannot be made or read does not stop the site's own sharing: it is
    // said, and tried again every few heartbeats.
    let mut central_watch = central_or_said(cluster, js).await;
    // 2. Then every change after it.
    let mut policy_watch = stores
        .policy
        .watch_from_revision(&key, from)
        .await
        .map_err(|e| format!("watching {key}: {e}"))?;
    let mut nodes_watch = stores
        .nodes
        .watch_with_history(format!("{site}.*"))
        .await
        .map_err(|e| format!("watching the nodes: {e}"))?;
    let share = cluster
        .applier
        .services
        .current
        .load()
        .config
        .config
        .cluster
        .as_ref()
        .is_some_and(|c| c.share_learned);
    let mut learned_watch = match share {
        true => Some(
            stores
                .learned
                .watch_with_history(format!("{site}.>"))
                .await
                .map_err(|e| format!("watching the learned addresses: {e}"))?,
        ),
        false => None,
    };
    cluster.stores.store(Some(Arc::new(stores.clone())));
    let now = crate::clock::unix_now();
    cluster.status.last_sync_unix.store(now, Relaxed);
    cluster.status.last_contact_unix.store(now, Relaxed);
    cluster.status.syncs.fetch_add(1, Relaxed);
    cluster.status.connected.store(true, Relaxed);
    *cluster.status.last_error.lock() = None;
    cluster.first_sync.send_replace(true);
    info!(
        site,
        node = cluster.status.node,
        "cluster: shared state read; watching for changes"
    );
    report(cluster, &stores).await;

    let mut outbox = cluster.status.take_outbox();
    let mut revisions = cluster.applier.revisions();
    let mut tick = tokio::time::interval(HEARTBEAT);
    let mut ticks = 0u64;
    let result = loop {
        tokio::select! {
            e = policy_watch.next() => match e {
                Some(Ok(e)) => adopt_entry(cluster, e).await,
                Some(Err(e)) => break Err(format!("the watch of {key} failed: {e}")),
                None => break Ok("the watch of the shared state ended".to_owned()),
            },
            e = next_central(&mut central_watch) => match e {
                Ok(e) => adopt_central(cluster, e).await,
                Err(e) => {
                    warn!("fleet: {e}; reading the central policy again");
                    central_watch = central_or_said(cluster, js).await;
                }
            },
            e = nodes_watch.next() => match e {
                Some(Ok(e)) => node_entry(cluster, e),
                Some(Err(e)) => break Err(format!("the watch of the nodes failed: {e}")),
                None => break Ok("the watch of the nodes ended".to_owned()),
            },
            batch = next_learned(&mut learned_watch) => match batch {
                Ok(batch) => import(cluster, batch).await,
                Err(e) => break Err(e),
            },
            l = recv(&mut outbox) => {
                let Some(l) = l else { continue };
                publish(cluster, &stores, l).await;
            }
            _ = revisions.changed() => {
                report(cluster, &stores).await;
            }
            _ = tick.tick() => {
                let was = cluster.status.connected.load(Relaxed);
                let ok = report(cluster, &stores).await;
                cluster.status.connected.store(ok, Relaxed);
                if ok && !was {
                    break Ok("the store answers again".to_owned());
                }
                // Never trust that the watch delivered everything: a watch on a server
                // that lost its leadership stalls until the client makes it anew. The
                // key's revision is read once a heartbeat; one the watch missed is put in
                // force from the read, and the watches are made anew.
                // The nodes' reports are read whole now and then for the same reason.
                ticks += 1;
                if ok && ticks.is_multiple_of(NODES_REREAD) {
                    reread_nodes(cluster, &stores).await;
                    if central_watch.is_none() {
                        central_watch = central_or_said(cluster, js).await;
                    }
                }
                if ok && let Ok(Some(e)) = stores.policy.entry(key.clone()).await {
                    let applied = cluster.applier.services.current.load().layers.as_ref().map_or(0, |l| l.revision);
                    if e.revision > applied {
                        let revision = e.revision;
                        adopt_entry(cluster, e).await;
                        break Ok(format!("the watch had not delivered revision {revision}"));
                    }
                }
                if !ok && was {
                    let why = cluster.status.last_error.lock().clone().unwrap_or_default();
                    warn!("cluster: {why}; enforcing this node's last state (expiries still happen)");
                }
            }
        }
    };
    // The outbox goes back for the next session.
    if let Some(rx) = outbox {
        cluster.status.give_back_outbox(rx);
    }
    result
}

/// `central` for a fleet's gateway; None outside a fleet, or when it failed (logged
/// once per reason, kept in status as the last problem).
async fn central_or_said(cluster: &Cluster, js: &async_nats::jetstream::Context) -> Option<Watch> {
    let hub = cluster.cfg.hub.as_deref()?;
    match central(cluster, js, hub).await {
        Ok(w) => Some(w),
        Err(e) => {
            note_error(cluster, format!("fleet: {e}"));
            None
        }
    }
}

/// The site's mirror of the hub's central policy (made if absent: the site's servers
/// keep the copy the gateways read, so the site enforces its last central policy while
/// the WAN is down), its key at one revision put in force, and a watch from the next.
async fn central(
    cluster: &Cluster,
    js: &async_nats::jetstream::Context,
    hub: &str,
) -> Result<Watch, String> {
    let name = format!("KV_{}", values::CENTRAL_BUCKET);
    if js.get_stream(&name).await.is_err() {
        use async_nats::jetstream::stream::{Config, Source};
        js.create_stream(Config {
            name: name.clone(),
            mirror: Some(Source {
                name: name.clone(),
                external: Some(values::api_of(hub)),
                ..Default::default()
            }),
            max_messages_per_subject: 1_000_000,
            max_age: values::KEEP,
            deny_delete: true,
            num_replicas: cluster.cfg.replicas(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("the site's mirror of the central policy: {e}"))?;
        info!(hub, "fleet: the site's mirror of the central policy made");
    }
    let kv = js
        .get_key_value(values::CENTRAL_BUCKET)
        .await
        .map_err(|e| format!("the site's mirror of the central policy: {e}"))?;
    let from = match kv.entry(values::CENTRAL_KEY).await {
        Ok(Some(e)) => {
            let revision = e.revision;
            adopt_central(cluster, e).await;
            revision + 1
        }
        Ok(None) => 1,
        Err(e) => return Err(format!("reading the central policy: {e}")),
    };
    kv.watch_from_revision(values::CENTRAL_KEY, from)
        .await
        .map_err(|e| format!("watching the central policy: {e}"))
}

async fn next_central(watch: &mut Option<Watch>) -> Result<Entry, String> {
    let Some(w) = watch else {
        return std::future::pending().await;
    };
    match w.next().await {
        Some(Ok(e)) => Ok(e),
        Some(Err(e)) => Err(format!("the watch of the central policy failed: {e}")),
        None => Err("the watch of the central policy ended".into()),
    }
}

/// Puts a central revision in force, or refuses it as a site value is refused.
async fn adopt_central(cluster: &Cluster, e: Entry) {
    let toggles = match e.operation {
        Operation::Put => match values::decode_doc(&e.key, e.revision, &e.value) {
            Ok(doc) => doc.toggles,
            Err(refused) => return refuse(cluster, format!("central policy: {refused}")),
        },
        Operation::Delete | Operation::Purge => crate::policy::Toggles::default(),
    };
    match cluster.applier.adopt_central(toggles, e.revision).await {
        Ok(Some(a)) => info!(
            revision = e.revision,
            generation = a.new.generation,
            "fleet: central policy in force"
        ),
        Ok(None) => {}
        Err(err) => refuse(
            cluster,
            format!("central policy (revision {}): {err}", e.revision),
        ),
    }
}

/// The first node of a new site offers its shared layer as the site's (created only if
/// absent: of two nodes that start at once, one wins and the other adopts it).
async fn seed(cluster: &Cluster, stores: &Stores, key: &str) {
    let snap = cluster.applier.services.current.load_full();
    let toggles = super::shared_layer(&snap);
    let doc = values::SharedDoc::new(
        toggles,
        format!("node {}", cluster.status.node),
        "the site's first shared state".into(),
    );
    match stores
        .policy
        .create(key, serde_json::to_vec(&doc).unwrap_or_default().into())
        .await
    {
        Ok(revision) => {
            info!(
                revision,
                "cluster: this node's toggles are the site's first shared state"
            );
            let _ = cluster.applier.adopt(doc.toggles, revision).await;
        }
        Err(e) => info!("cluster: no shared state yet, and not seeded here ({e})"),
    }
}

/// Puts a stored shared state in force, or refuses it (logged, counted, nothing
/// changed).
async fn adopt_entry(cluster: &Cluster, e: Entry) {
    let key = e.key.clone();
    let toggles = match e.operation {
        Operation::Put => match values::decode_doc(&key, e.revision, &e.value) {
            Ok(doc) => doc.toggles,
            Err(refused) => return refuse(cluster, refused.to_string()),
        },
        // Deleted or purged (an admin's `nats kv del`): back to the config everywhere.
        Operation::Delete | Operation::Purge => crate::policy::Toggles::default(),
    };
    match cluster.applier.adopt(toggles, e.revision).await {
        Ok(Some(a)) => info!(
            revision = e.revision,
            generation = a.new.generation,
            "cluster: shared state in force"
        ),
        Ok(None) => {}
        Err(err) => refuse(cluster, format!("{key} (revision {}): {err}", e.revision)),
    }
}

fn refuse(cluster: &Cluster, why: String) {
    cluster.status.refused.fetch_add(1, Relaxed);
    error!("cluster: refused a shared value, nothing changed: {why}");
    *cluster.status.last_error.lock() = Some(format!("refused: {why}"));
}

fn node_entry(cluster: &Cluster, e: Entry) {
    let Some(name) = e.key.rsplit('.').next().map(str::to_owned) else {
        return;
    };
    if e.operation != Operation::Put {
        cluster.status.nodes.lock().remove(&name);
        return;
    }
    match values::decode_node(&e.key, e.revision, &e.value) {
        Ok(r) => {
            cluster.status.nodes.lock().insert(name, r);
        }
        Err(refused) => warn!("cluster: a node's report is refused: {refused}"),
    }
}

/// Reads every node's report of the site (a watch may have missed some).
async fn reread_nodes(cluster: &Cluster, stores: &Stores) {
    let Ok(keys) = stores.nodes.keys().await else {
        return;
    };
    let prefix = format!("{}.", cluster.status.site);
    let keys: Vec<String> = keys.filter_map(|k| async move { k.ok() }).collect().await;
    for key in keys.into_iter().filter(|k| k.starts_with(&prefix)) {
        if let Ok(Some(e)) = stores.nodes.entry(key).await {
            node_entry(cluster, e);
        }
    }
}

/// This node's report; true when the store took it.
async fn report(cluster: &Cluster, stores: &Stores) -> bool {
    let snap = cluster.applier.services.current.load_full();
    let (config, lists) = super::digests(cluster, &snap).await;
    let r = NodeReport {
        node: cluster.status.node.clone(),
        revision: snap.layers.as_ref().map_or(0, |l| l.revision),
        generation: snap.generation,
        config_digest: config,
        lists_digest: lists,
        overrides: snap
            .layers
            .as_ref()
            .map(|l| crate::apply::describe_toggles(&l.local))
            .unwrap_or_default(),
        telesink: env!("CARGO_PKG_VERSION").to_owned(),
        at_ms: crate::clock::unix_millis(),
    };
    let key = values::node_key(&cluster.status.site, &cluster.status.node);
    match stores.nodes.put(&key, values::encode_node(&r).into()).await {
        Ok(_) => {
            cluster
                .status
                .last_contact_unix
                .store(crate::clock::unix_now(), Relaxed);
            cluster.status.nodes.lock().insert(r.node.clone(), r);
            true
        }
        Err(e) => {
            *cluster.status.last_error.lock() = Some(format!("the store does not answer: {e}"));
            false
        }
    }
}

async fn recv(
    outbox: &mut Option<tokio::sync::mpsc::Receiver<SharedLearn>>,
) -> Option<SharedLearn> {
    match outbox {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn publish(cluster: &Cluster, stores: &Stores, l: SharedLearn) {
    let key = values::learned_key(&cluster.status.site, &l);
    match stores
        .learned
        .put(&key, values::encode_learned(&l).into())
        .await
    {
        Ok(_) => {
            cluster.status.learned_published.fetch_add(1, Relaxed);
        }
        Err(_) => {
            cluster.status.learned_unshared.fetch_add(1, Relaxed);
        }
    }
}

/// The next learned addresses other nodes shared: what the watch has ready, up to a
/// batch (one kernel update for many at a reconnect).
async fn next_learned(watch: &mut Option<Watch>) -> Result<Vec<Entry>, String> {
    let Some(w) = watch else {
        return std::future::pending().await;
    };
    let first = match w.next().await {
        Some(Ok(e)) => e,
        Some(Err(e)) => return Err(format!("the watch of the learned addresses failed: {e}")),
        None => return Err("the watch of the learned addresses ended".into()),
    };
    let mut batch = vec![first];
    while batch.len() < IMPORT_BATCH {
        match tokio::time::timeout(Duration::ZERO, w.next()).await {
            Ok(Some(Ok(e))) => batch.push(e),
            _ => break,
        }
    }
    Ok(batch)
}

async fn import(cluster: &Cluster, batch: Vec<Entry>) {
    let mut items = Vec::new();
    for e in batch {
        if e.operation != Operation::Put {
            continue;
        }
        match values::decode_learned(&e.key, e.revision, &e.value) {
            Ok(l) if l.node == cluster.status.node => {}
            Ok(l) => items.push(l),
            Err(refused) => {
                cluster.status.learned_refused.fetch_add(1, Relaxed);
                warn!("cluster: a shared learned address is refused: {refused}");
            }
        }
    }
    if items.is_empty() {
        return;
    }
    let (added, refused) = cluster.applier.import_learned(items).await;
    cluster.status.learned_imported.fetch_add(added, Relaxed);
    cluster.status.learned_refused.fetch_add(refused, Relaxed);
}
