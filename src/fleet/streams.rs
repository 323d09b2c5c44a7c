//! The fleet's streams, as JetStream keeps them (docs/FLEET.md):
//!
//! | where | stream | holds |
//! |---|---|---|
//! | each site (its domain) | `telesink_evidence_<site>` | `telesink.evidence.<site>.<gateway>`: the site's gateways' closed days and heads |
//! | the hub | `telesink_evidence` | no subjects of its own: it sources every site's stream (`telesink fleet site add`) |
//! | the hub | `KV_telesink_central` | the central policy, key `fleet`, every revision kept (the policy's history is evidence) |
//! | each site | `KV_telesink_central` | a mirror of the hub's: the site enforces its last copy while the WAN is down |
//!
//! Everything is made if absent and left as it is if present (an admin's own settings
//! win); a hub stream's list of sources is only ever added to.

use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::stream::{Config, DiscardPolicy, Source};

/// The hub's evidence stream, which sources every site's.
pub const HUB_EVIDENCE: &str = "telesink_evidence";
pub use crate::cluster::values::KEEP;
pub use crate::cluster::values::{CENTRAL_BUCKET, CENTRAL_KEY};

/// A site's own evidence stream.
pub fn site_stream_name(site: &str) -> String {
    format!("telesink_evidence_{site}")
}

use crate::cluster::values::api_of;

/// The site's evidence stream on the site's servers: evidence is neither deleted nor
/// purged through the API, and a resend within two minutes is dropped as a duplicate.
pub async fn site_stream(js: &Context, site: &str, replicas: usize) -> Result<(), String> {
    let name = site_stream_name(site);
    js.get_or_create_stream(Config {
        name: name.clone(),
        subjects: vec![format!("{}.{site}.>", super::SUBJECT_PREFIX)],
        max_age: KEEP,
        deny_delete: true,
        deny_purge: true,
        discard: DiscardPolicy::Old,
        num_replicas: replicas,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map(|_| ())
    .map_err(|e| format!("the site's evidence stream {name}: {e}"))
}

/// The hub's central policy bucket: every revision kept (`max_messages_per_subject`
/// far above what admins write), so its history is the policy's record.
pub async fn central_bucket(js: &Context, replicas: usize) -> Result<(), String> {
    let name = format!("KV_{CENTRAL_BUCKET}");
    js.get_or_create_stream(Config {
        name: name.clone(),
        subjects: vec![format!("$KV.{CENTRAL_BUCKET}.>")],
        max_messages_per_subject: 1_000_000,
        max_age: KEEP,
        allow_rollup: false,
        deny_delete: true,
        deny_purge: true,
        allow_direct: false,
        discard: DiscardPolicy::New,
        num_replicas: replicas,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map(|_| ())
    .map_err(|e| format!("the central policy bucket: {e}"))
}

/// The hub's evidence stream, sourcing the sites named (added to what it sources).
/// Returns the sites it sources now.
pub async fn hub_evidence(
    js: &Context,
    sites: &[(String, String)],
    replicas: usize,
) -> Result<Vec<String>, String> {
    // An empty domain: the site's stream is on the hub's own servers (a bench).
    let source = |site: &str, domain: &str| Source {
        name: site_stream_name(site),
        external: (!domain.is_empty()).then(|| api_of(domain)),
        ..Default::default()
    };
    let wanted: Vec<Source> = sites.iter().map(|(s, d)| source(s, d)).collect();
    let stream = match js.get_stream(HUB_EVIDENCE).await {
        Ok(s) => s,
        Err(_) => {
            js.create_stream(Config {
                name: HUB_EVIDENCE.to_owned(),
                sources: Some(wanted.clone()),
                max_age: KEEP,
                deny_delete: true,
                deny_purge: true,
                discard: DiscardPolicy::Old,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("the hub's evidence stream: {e}"))?;
            return Ok(sites.iter().map(|(s, _)| s.clone()).collect());
        }
    };
    let mut config = stream.cached_info().config.clone();
    let mut sources = config.sources.clone().unwrap_or_default();
    for w in wanted {
        if !sources.iter().any(|s| s.name == w.name) {
            sources.push(w);
        }
    }
    config.sources = Some(sources.clone());
    js.update_stream(config)
        .await
        .map_err(|e| format!("adding sources to the hub's evidence stream: {e}"))?;
    Ok(sources
        .iter()
        .filter_map(|s| s.name.strip_prefix("telesink_evidence_").map(str::to_owned))
        .collect())
}

/// The sites the hub's evidence stream sources.
pub async fn hub_sites(js: &Context) -> Result<Vec<String>, String> {
    let mut stream = js
        .get_stream(HUB_EVIDENCE)
        .await
        .map_err(|e| format!("the hub has no evidence stream {HUB_EVIDENCE} ({e}): run `telesink fleet site add NAME` for each site first"))?;
    let info = stream.info().await.map_err(|e| e.to_string())?;
    Ok(info
        .config
        .sources
        .iter()
        .flatten()
        .filter_map(|s| s.name.strip_prefix("telesink_evidence_").map(str::to_owned))
        .collect())
}
