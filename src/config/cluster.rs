//! `[cluster]`: two gateways (or more) that share their runtime state (profile toggles,
//! log-only switches, runtime rules, learned shadow addresses) through NATS JetStream
//! key-value buckets (src/cluster/, docs/CLUSTER.md). Absent: telesink is one box and
//! starts nothing of it.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The NATS servers (`nats://HOST:PORT`), this node's own first: the client tries
    /// them in this order and fails over to the next. Three JetStream servers (the two
    /// gateways and a witness) let either gateway fail with writes going on.
    pub servers: Vec<String>,
    /// The site: nodes of one site share one state (keys `<site>.*`).
    #[serde(default = "default_site")]
    pub site: String,
    /// This node's name in the site (status, metrics). Default: the host name.
    pub node: Option<String>,
    /// A NATS credentials file (JWT + nkey seed, `nsc generate creds`).
    pub credentials: Option<PathBuf>,
    /// User and password, for servers with `authorization { users = [...] }`.
    pub user: Option<String>,
    pub password: Option<String>,
    /// Replicas of each bucket when telesink creates it: 3 with three or more servers,
    /// else 1. (A bucket that exists keeps its own.)
    pub replicas: Option<usize>,
    /// At start, how long to wait for the shared state before answering DNS anyway with
    /// the state file's (said in the log). A node that comes back must not answer with
    /// what changed while it was away.
    #[serde(default = "default_start_wait")]
    pub start_wait_secs: u64,
    /// How long a CLI change waits for the other nodes to apply it before it reports
    /// which have not.
    #[serde(default = "default_apply_wait")]
    pub apply_wait_ms: u64,
    /// Share learned shadow addresses (the node that does not answer DNS then holds the
    /// same learned sets at failover).
    #[serde(default = "default_true")]
    pub share_learned: bool,
    /// A fleet (docs/FLEET.md): the JetStream domain of the central hub this site's
    /// servers are leaf nodes of. With it the node takes the central policy (a mirror
    /// of the hub's bucket at this site) under the site's and its own overrides, and
    /// sends every closed day of its ledger to the site's evidence stream, which the
    /// hub sources. Without it the site stands alone.
    pub hub: Option<String>,
}

fn default_site() -> String {
    "default".into()
}
fn default_start_wait() -> u64 {
    5
}
fn default_apply_wait() -> u64 {
    2000
}
fn default_true() -> bool {
    true
}

/// Names in bucket keys and NATS subjects: letters, digits, `-` and `_`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl ClusterConfig {
    /// This node's name: `node`, else the host name with anything a key may not hold
    /// turned into `-`.
    pub fn node_name(&self) -> String {
        if let Some(n) = &self.node {
            return n.clone();
        }
        let name: String = crate::host::name()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        name
    }

    pub fn replicas(&self) -> usize {
        self.replicas
            .unwrap_or(if self.servers.len() >= 3 { 3 } else { 1 })
    }

    /// What `policy::build` refuses (start, `check` and reload alike): (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.servers.is_empty() {
            out.push((
                "servers",
                "cluster.servers is empty: name the NATS servers (\"nats://10.0.0.2:4222\", ...), or remove [cluster] to run one box".to_owned(),
            ));
        }
        for s in &self.servers {
            let rest = s
                .strip_prefix("nats://")
                .or_else(|| s.strip_prefix("tls://"));
            let ok = rest.is_some_and(|r| {
                r.rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            });
            if !ok {
                out.push((
                    "servers",
                    format!(
                        "cluster.servers: {s:?} is not a NATS server address; write nats://HOST:PORT (or tls://HOST:PORT), e.g. \"nats://10.0.0.2:4222\""
                    ),
                ));
            }
        }
        if !valid_name(&self.site) {
            out.push((
                "site",
                format!(
                    "cluster.site = {:?}: use letters, digits, - and _ (at most 64), e.g. \"amsterdam\"",
                    self.site
                ),
            ));
        }
        if let Some(n) = &self.node
            && !valid_name(n)
        {
            out.push((
                "node",
                format!(
                    "cluster.node = {n:?}: use letters, digits, - and _ (at most 64), e.g. \"gw1\""
                ),
            ));
        }
        if self.user.is_some() != self.password.is_some() {
            out.push((
                "user",
                "cluster.user and cluster.password go together: give both, or neither".to_owned(),
            ));
        }
        if self.credentials.is_some() && self.user.is_some() {
            out.push((
                "credentials",
                "cluster.credentials and cluster.user are two ways to sign in: give one".to_owned(),
            ));
        }
        if let Some(h) = &self.hub
            && (!valid_name(h) || h == &self.site)
        {
            out.push((
                "hub",
                format!(
                    "cluster.hub = {h:?}: the hub's JetStream domain (its nats-server's jetstream.domain), letters, digits, - and _, not the site's own name, e.g. \"hub\""
                ),
            ));
        }
        if self.replicas.is_some_and(|r| r == 0 || r > 5) {
            out.push((
                "replicas",
                "cluster.replicas must be 1 to 5 (3 for a pair with a witness)".to_owned(),
            ));
        }
        out
    }
}
