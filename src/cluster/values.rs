//! What the buckets hold, and how a value is read: every value is JSON with its own
//! version; one that does not parse is refused with the reason (logged and counted by
//! the caller), never half-applied.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::cluster_status::SharedLearn;
use crate::policy::Toggles;

/// The bucket of the shared toggles: one key per site, with history for the audit trail.
pub const POLICY_BUCKET: &str = "telesink_policy";
/// Each node's report of itself: one key per site and node.
pub const NODES_BUCKET: &str = "telesink_nodes";
/// Learned shadow addresses: one key per site, address and profile.
pub const LEARNED_BUCKET: &str = "telesink_learned";

/// A fleet's central policy (docs/FLEET.md): the hub's bucket, mirrored at each site,
/// and its one key.
pub const CENTRAL_BUCKET: &str = "telesink_central";
pub const CENTRAL_KEY: &str = "fleet";
/// How long a fleet keeps evidence and the central policy's history: the ledger's
/// default retention (a yearly check and a month).
pub const KEEP: std::time::Duration = std::time::Duration::from_secs(400 * 86_400);

/// The JetStream API of another domain, as a mirror or a source names it.
pub fn api_of(domain: &str) -> async_nats::jetstream::stream::External {
    async_nats::jetstream::stream::External {
        api_prefix: format!("$JS.{domain}.API"),
        delivery_prefix: None,
    }
}

const VERSION: u32 = 1;

/// The site's shared toggles (profile toggles, log-only switches, runtime rules, each
/// with its expiry as an absolute UTC time, who and why) and who changed them last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedDoc {
    pub version: u32,
    pub toggles: Toggles,
    /// Who made the last change ("uid 1000 on gw1") and what it was, in words.
    pub changed_by: String,
    pub change: String,
    /// Unix seconds of the last change.
    pub changed_at: u64,
}

impl SharedDoc {
    pub fn new(toggles: Toggles, changed_by: String, change: String) -> Self {
        SharedDoc {
            version: VERSION,
            toggles,
            changed_by,
            change,
            changed_at: crate::clock::unix_now(),
        }
    }
}

/// A value refused, in words for the log and status.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{key} (revision {revision}): {why}")]
pub struct Refused {
    pub key: String,
    pub revision: u64,
    pub why: String,
}

fn decode<T: serde::de::DeserializeOwned>(
    key: &str,
    revision: u64,
    bytes: &[u8],
    version: impl Fn(&T) -> u32,
) -> Result<T, Refused> {
    let refused = |why: String| Refused {
        key: key.to_owned(),
        revision,
        why,
    };
    let value: T = serde_json::from_slice(bytes)
        .map_err(|e| refused(format!("not a telesink value ({e})")))?;
    match version(&value) {
        VERSION => Ok(value),
        v => Err(refused(format!(
            "version {v}, this telesink reads {VERSION}: upgrade this node"
        ))),
    }
}

pub fn decode_doc(key: &str, revision: u64, bytes: &[u8]) -> Result<SharedDoc, Refused> {
    let doc: SharedDoc = decode(key, revision, bytes, |d: &SharedDoc| d.version)?;
    // The same checks a state file gets: a rule telesink would take from the CLI.
    let mut checked = doc.toggles.clone();
    let (said, dropped) = checked.retain_valid(usize::MAX);
    if dropped > 0 {
        return Err(Refused {
            key: key.to_owned(),
            revision,
            why: said.join("; "),
        });
    }
    Ok(doc)
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LearnedValue {
    version: u32,
    #[serde(flatten)]
    learn: SharedLearn,
}

pub fn encode_learned(l: &SharedLearn) -> Vec<u8> {
    serde_json::to_vec(&LearnedValue {
        version: VERSION,
        learn: l.clone(),
    })
    .unwrap_or_default()
}

pub fn decode_learned(key: &str, revision: u64, bytes: &[u8]) -> Result<SharedLearn, Refused> {
    decode(key, revision, bytes, |v: &LearnedValue| v.version).map(|v| v.learn)
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeValue {
    version: u32,
    #[serde(flatten)]
    report: crate::cluster_status::NodeReport,
}

pub fn encode_node(r: &crate::cluster_status::NodeReport) -> Vec<u8> {
    serde_json::to_vec(&NodeValue {
        version: VERSION,
        report: r.clone(),
    })
    .unwrap_or_default()
}

pub fn decode_node(
    key: &str,
    revision: u64,
    bytes: &[u8],
) -> Result<crate::cluster_status::NodeReport, Refused> {
    decode(key, revision, bytes, |v: &NodeValue| v.version).map(|v| v.report)
}

/// The key of the site's shared toggles.
pub fn policy_key(site: &str) -> String {
    format!("{site}.shared")
}

pub fn node_key(site: &str, node: &str) -> String {
    format!("{site}.{node}")
}

/// `<site>.<address>.<profile>`: a key may hold letters, digits, `-`, `_`, `=` and dots
/// between tokens, so an address is written with `-` (IPv4) or as 32 hex digits (IPv6),
/// and a profile name with anything else as hex.
pub fn learned_key(site: &str, l: &SharedLearn) -> String {
    let addr = match l.addr {
        IpAddr::V4(a) => a.to_string().replace('.', "-"),
        IpAddr::V6(a) => format!("{:032x}", u128::from(a)),
    };
    let profile = if crate::config::cluster::valid_name(&l.profile) {
        l.profile.clone()
    } else {
        l.profile.bytes().map(|b| format!("{b:02x}")).collect()
    };
    format!("{site}.{addr}.{profile}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_strangers_are_refused_with_the_reason() {
        let doc = SharedDoc::new(Toggles::default(), "uid 0 on gw1".into(), "x".into());
        let bytes = serde_json::to_vec(&doc).unwrap();
        assert_eq!(decode_doc("s.shared", 3, &bytes).unwrap(), doc);
        let e = decode_doc("s.shared", 4, b"{\"toggles\": 1}").unwrap_err();
        assert!(
            e.to_string()
                .contains("s.shared (revision 4): not a telesink value"),
            "{e}"
        );
        let future = bytes_with_version(&doc, 9);
        let e = decode_doc("s.shared", 5, &future).unwrap_err();
        assert!(e.why.contains("upgrade this node"), "{e}");
        let l = SharedLearn {
            addr: "2001:db8::1".parse().unwrap(),
            profile: "office telemetry".into(),
            name: "a.example".into(),
            expires_at: 10,
            node: "gw1".into(),
        };
        assert_eq!(
            learned_key("s", &l),
            "s.20010db8000000000000000000000001.6f66666963652074656c656d65747279"
        );
        assert_eq!(decode_learned("k", 1, &encode_learned(&l)).unwrap(), l);
    }

    fn bytes_with_version(doc: &SharedDoc, v: u32) -> Vec<u8> {
        let mut d = doc.clone();
        d.version = v;
        serde_json::to_vec(&d).unwrap()
    }
}
