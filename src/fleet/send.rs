//! A fleet's gateway sends its ledger's closed days to its site's evidence stream
//! (`telesink_evidence_<site>`, on the site's own JetStream domain), which the hub
//! sources: store and forward. The site's servers are on the LAN side of the WAN, so a
//! send needs only them; a WAN outage delays the hub's copy, never the send. A day
//! counts as sent once the stream acknowledged it (it is then on the site's disk); the
//! ledger remembers that (`published`), so a restart or a site server that is away
//! sends it later, never loses it. A day the ledger changes after it was sent (a purge
//! re-chains days) is sent again: the centre sees both and says so.
//!
//! The head (the ledger's chain as it stands, and its own check) goes the same way at
//! start and whenever it changes, so the centre can name a ledger that was altered
//! after its days were sent.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use async_nats::jetstream::Context;
use base64::Engine;
use tracing::{info, warn};

use super::parts;
use super::record::{DayRecord, HeadRecord, Record, VERSION, subject};
use crate::cluster_status::ClusterStatus;
use crate::evidence::Ledger;
use crate::evidence::outbox::DayOut;

/// How often the ledger is asked what is due (a day closes once a day; this bounds how
/// late the first send after a flush or a reconnection is).
const EVERY: Duration = Duration::from_secs(2);
/// Days sent per look: a gateway back after a long outage catches up in batches.
const BATCH: usize = 16;

/// The chain the ledger's own check last ran on, and the first day it found broken.
type Checked = (Vec<(String, String)>, Option<String>);

/// Who sends, and to what.
#[derive(Clone)]
pub struct Sender {
    pub site: String,
    pub gateway: String,
    /// `metrics.client_labels` of this gateway, said with every day.
    pub client_labels: String,
    pub replicas: usize,
    /// How long after a UTC day ends it is sent: rows counted just before midnight can
    /// reach the ledger a flush later (a device's address not known yet is held for
    /// one flush), and a day sent before they arrive would be sent again with another
    /// digest, which the centre must call an alteration. Two flush intervals.
    pub settle: Duration,
}

/// Sends until the process ends.
pub async fn run(js: Context, ledger: Arc<Ledger>, who: Sender, status: Arc<ClusterStatus>) {
    let mut stream_ready = false;
    let mut last_head: Option<HeadRecord> = None;
    // The ledger's own check decodes every block: made again only when the chain changed.
    let mut checked: Option<Checked> = None;
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        if !stream_ready {
            match super::streams::site_stream(&js, &who.site, who.replicas).await {
                Ok(()) => stream_ready = true,
                Err(e) => {
                    failed(&status, e);
                    continue;
                }
            }
        }
        if let Err(e) = send_due(&js, &ledger, &who, &status).await {
            failed(&status, e);
            continue;
        }
        match head(&ledger, &who, &mut checked).await {
            Ok(h) if last_head.as_ref().is_some_and(|l| same_head(l, &h)) => {}
            Ok(h) => match send(&js, &who, &Record::Head(h.clone()), "head").await {
                Ok(()) => {
                    status.fleet.heads_sent.fetch_add(1, Relaxed);
                    last_head = Some(h);
                }
                Err(e) => failed(&status, e),
            },
            Err(e) => failed(&status, e),
        }
    }
}

fn same_head(a: &HeadRecord, b: &HeadRecord) -> bool {
    a.open_day == b.open_day
        && a.chain == b.chain
        && a.broken_at == b.broken_at
        && a.breaks == b.breaks
}

fn failed(status: &ClusterStatus, e: String) {
    status.fleet.failures.fetch_add(1, Relaxed);
    let mut last = status.fleet.last_error.lock();
    if last.as_deref() != Some(e.as_str()) {
        warn!("fleet: {e}; the days wait in the ledger and are sent when it works");
    }
    *last = Some(e);
}

/// Sends what the ledger has due, oldest first; stops at the first failure.
async fn send_due(
    js: &Context,
    ledger: &Arc<Ledger>,
    who: &Sender,
    status: &ClusterStatus,
) -> Result<(), String> {
    loop {
        // Days that ended at least `settle` ago.
        let settled =
            (crate::clock::unix_now().saturating_sub(who.settle.as_secs()) / 86_400) as u32;
        let l = ledger.clone();
        let due =
            tokio::task::spawn_blocking(move || l.with_file(|s| s.unpublished(settled, BATCH)))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("reading what is due: {e}"))?;
        status.fleet.days_due.store(due.len() as u64, Relaxed);
        if due.is_empty() {
            return Ok(());
        }
        let full = due.len() == BATCH;
        for day in due {
            let record = day_record(who, &day);
            send(
                js,
                who,
                &Record::Day(record),
                &format!("{}.{}", day.day, day.digest()),
            )
            .await?;
            let (l, d, digest) = (ledger.clone(), day.day.clone(), day.digest().to_owned());
            tokio::task::spawn_blocking(move || l.with_file(|s| s.mark_published(&d, &digest)))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("recording day {} as sent: {e}", day.day))?;
            status.fleet.days_sent.fetch_add(1, Relaxed);
            status
                .fleet
                .last_sent_unix
                .store(crate::clock::unix_now(), Relaxed);
            *status.fleet.last_error.lock() = None;
            info!(
                day = day.day,
                rows = day.sealed.as_ref().map_or(0, |s| s.rows),
                "fleet: day sent"
            );
        }
        if !full {
            return Ok(());
        }
    }
}

/// The record of a closed day (benches/fleet.rs builds a fleet's month with it).
pub fn day_record(who: &Sender, day: &DayOut) -> DayRecord {
    DayRecord {
        version: VERSION,
        site: who.site.clone(),
        gateway: who.gateway.clone(),
        day: day.day.clone(),
        rows: day.sealed.as_ref().map_or(0, |s| s.rows),
        digest: day.sealed.as_ref().map(|s| s.digest.clone()),
        previous: day.sealed.as_ref().map(|s| s.previous.clone()),
        block: day
            .sealed
            .as_ref()
            .map(|s| base64::engine::general_purpose::STANDARD.encode(&s.block)),
        purges: day.purges.clone(),
        // A policy the ledger cannot read back is left out rather than sent half.
        policies: day
            .policies
            .iter()
            .filter_map(|p| serde_json::from_str(p).ok())
            .collect(),
        changes: day.changes.clone(),
        client_labels: who.client_labels.clone(),
        published_at: crate::clock::unix_now(),
    }
}

/// The ledger's head now.
async fn head(
    ledger: &Arc<Ledger>,
    who: &Sender,
    checked: &mut Option<Checked>,
) -> Result<HeadRecord, String> {
    let l = ledger.clone();
    let (chain, breaks) = tokio::task::spawn_blocking(move || {
        l.with_file(|s| Ok((s.chain()?, s.breaks()?.len() as u64)))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("reading the chain: {e}"))?;
    let broken_at = match checked {
        Some((c, broken)) if *c == chain => broken.clone(),
        _ => {
            let l = ledger.clone();
            let verdict = tokio::task::spawn_blocking(move || l.with_file(|s| s.verify()))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("checking the chain: {e}"))?;
            let broken = verdict.err();
            *checked = Some((chain.clone(), broken.clone()));
            broken
        }
    };
    Ok(HeadRecord {
        version: VERSION,
        site: who.site.clone(),
        gateway: who.gateway.clone(),
        at: crate::clock::unix_now(),
        open_day: crate::clock::utc_date(crate::clock::unix_now()),
        chain,
        broken_at,
        breaks,
        telesink: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

/// One record to the site's stream, acknowledged; `id` makes a resend within the
/// stream's duplicate window a no-op. A record larger than one message goes in parts
/// (src/fleet/parts.rs), each acknowledged before the next.
async fn send(js: &Context, who: &Sender, record: &Record, id: &str) -> Result<(), String> {
    let payload = serde_json::to_vec(record).map_err(|e| e.to_string())?;
    if payload.len() <= parts::WHOLE_MAX {
        return publish(js, who, payload, id).await;
    }
    let day = match record {
        Record::Day(d) => d.day.as_str(),
        Record::Head(h) => h.open_day.as_str(),
        Record::Part(p) => p.day.as_str(),
    };
    parts::fits(day, payload.len())?;
    let pieces = parts::split(&who.site, &who.gateway, day, &payload);
    let count = pieces.len();
    for p in pieces {
        // The whole's digest in the id: a send made again with other bytes (another
        // `published_at`) is not taken for the first one's duplicate, part by part.
        let part_id = format!("{id}.{}.{}of{count}", &p.whole[..16], p.index);
        let bytes = serde_json::to_vec(&Record::Part(p)).map_err(|e| e.to_string())?;
        publish(js, who, bytes, &part_id).await?;
    }
    info!(
        day,
        parts = count,
        bytes = payload.len(),
        "fleet: a record larger than one message went in parts"
    );
    Ok(())
}

async fn publish(js: &Context, who: &Sender, payload: Vec<u8>, id: &str) -> Result<(), String> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "Nats-Msg-Id",
        format!("{}.{}.{id}", who.site, who.gateway).as_str(),
    );
    js.publish_with_headers(subject(&who.site, &who.gateway), headers, payload.into())
        .await
        .map_err(|e| format!("sending to the site's evidence stream: {e}"))?
        .await
        .map_err(|e| format!("the site's evidence stream did not take it: {e}"))?;
    Ok(())
}
