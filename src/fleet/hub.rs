//! The centre's side: a connection to the hub, every record of the hub's evidence
//! stream read once (an ordered consumer from the first message to the last one at
//! the start of the read), and the central policy's key (read, history, written by
//! compare-and-swap).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::kv::{CreateErrorKind, Operation, UpdateErrorKind};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::parts::{Added, Assembler};
use super::record::{self, Checked, Refused};
use super::streams::{CENTRAL_BUCKET, CENTRAL_KEY, HUB_EVIDENCE};
use super::verify::GatewayEvidence;
use crate::cluster::values::{self, SharedDoc};

const TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach the hub: its servers and how to sign in (the central admin's, which
/// may read every site's evidence and write the central policy; docs/FLEET.md).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HubArgs {
    /// A hub server, nats://HOST:PORT; repeatable (default: $TELESINK_HUB).
    #[arg(long = "hub", env = "TELESINK_HUB", value_delimiter = ',')]
    pub servers: Vec<String>,
    /// A NATS credentials file (the central admin's user).
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long, env = "TELESINK_HUB_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

pub async fn connect(args: &HubArgs) -> Result<Context, String> {
    if args.servers.is_empty() {
        return Err("no hub: give --hub nats://HOST:PORT (or set TELESINK_HUB)".into());
    }
    let mut opts = async_nats::ConnectOptions::new()
        .name("telesink fleet")
        .connection_timeout(TIMEOUT)
        .request_timeout(Some(TIMEOUT));
    if let Some(path) = &args.credentials {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|e| format!("--credentials {}: {e}", path.display()))?;
    }
    if let (Some(u), Some(p)) = (&args.user, &args.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    let servers = args
        .servers
        .iter()
        .map(|s| {
            s.parse::<async_nats::ServerAddr>()
                .map_err(|e| format!("--hub {s}: {e}; write nats://HOST:PORT"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let client = opts
        .connect(servers)
        .await
        .map_err(|e| format!("cannot reach the hub ({e})"))?;
    let mut js = async_nats::jetstream::new(client);
    js.set_timeout(TIMEOUT);
    Ok(js)
}

/// Every record of the hub's evidence stream, checked.
pub struct Gathered {
    pub gateways: BTreeMap<(String, String), GatewayEvidence>,
    pub refused: Vec<Refused>,
    /// The sites the hub sources.
    pub sites: Vec<String>,
    pub records: u64,
}

/// `period`: the days whose blocks are decoded and checked (record::check).
pub async fn gather(js: &Context, period: Option<(&str, &str)>) -> Result<Gathered, String> {
    let sites = super::streams::hub_sites(js).await?;
    let mut stream = js
        .get_stream(HUB_EVIDENCE)
        .await
        .map_err(|e| format!("the hub's evidence stream: {e}"))?;
    let info = stream.info().await.map_err(|e| e.to_string())?;
    let last = info.state.last_sequence;
    let mut out = Gathered {
        gateways: BTreeMap::new(),
        refused: Vec::new(),
        sites,
        records: 0,
    };
    if info.state.messages == 0 {
        return Ok(out);
    }
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("reading the hub's evidence stream: {e}"))?;
    let mut parts = Assembler::default();
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("reading the hub's evidence stream: {e}"))?;
    loop {
        let m = match tokio::time::timeout(TIMEOUT, messages.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(format!("reading the hub's evidence stream: {e}")),
            Ok(None) => break,
            Err(_) => {
                return Err(format!(
                    "reading the hub's evidence stream: no message for {} s before sequence {last}",
                    TIMEOUT.as_secs()
                ));
            }
        };
        let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
        out.records += 1;
        let subject = m.subject.as_str();
        parts.seen(subject, seq);
        let checked = match record::check(subject, &m.payload, period) {
            Ok(Checked::Part(p)) => match parts.add(seq, subject, p) {
                Ok(Added::Waiting) => None,
                // A whole made of parts is read as one message.
                Ok(Added::Whole(whole)) => Some(record::check(subject, &whole, period)),
                Err(why) => Some(Err(why)),
            },
            other => Some(other),
        };
        if let Some(checked) = checked {
            out.take(seq, subject, checked);
        }
        if seq >= last {
            break;
        }
    }
    for (seq, subject, why) in parts.unfinished() {
        out.refused.push(Refused { seq, subject, why });
    }
    out.refused.sort_by_key(|r| r.seq);
    Ok(out)
}

impl Gathered {
    /// A record read, or why it was refused; parts reach here only from inside a
    /// whole made of parts, which must not hold any.
    fn take(&mut self, seq: u64, subject: &str, checked: Result<Checked, String>) {
        let why = match checked {
            Ok(Checked::Day(d)) => {
                let key = (d.record.site.clone(), d.record.gateway.clone());
                self.gateway(key).add_day(*d);
                return;
            }
            Ok(Checked::Head(h)) => {
                let key = (h.site.clone(), h.gateway.clone());
                self.gateway(key).head = Some(h);
                return;
            }
            Ok(Checked::Part(_)) => "a part inside a record made of parts".to_owned(),
            Err(why) => why,
        };
        self.refused.push(Refused {
            seq,
            subject: subject.to_owned(),
            why,
        });
    }

    fn gateway(&mut self, key: (String, String)) -> &mut GatewayEvidence {
        self.gateways
            .entry(key)
            .or_insert_with_key(|(site, gw)| GatewayEvidence::new(site, gw))
    }
}

/// One revision of the central policy, as its history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CentralChange {
    pub revision: u64,
    /// Unix seconds.
    pub at: u64,
    pub by: String,
    pub what: String,
    /// The toggles in force from this revision on, in words.
    pub in_force: Vec<String>,
}

/// The central policy bucket (made if absent, with one replica: `fleet site add
/// --replicas 3` makes it first on a hub of three servers).
pub async fn central(js: &Context) -> Result<async_nats::jetstream::kv::Store, String> {
    super::streams::central_bucket(js, 1).await?;
    js.get_key_value(CENTRAL_BUCKET)
        .await
        .map_err(|e| format!("the central policy bucket: {e}"))
}

/// Every revision of the central policy, oldest first.
pub async fn central_history(js: &Context) -> Result<Vec<CentralChange>, String> {
    let Ok(kv) = js.get_key_value(CENTRAL_BUCKET).await else {
        return Ok(Vec::new());
    };
    let mut history = match kv.history(CENTRAL_KEY).await {
        Ok(h) => h,
        Err(_) => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    loop {
        let e = match tokio::time::timeout(TIMEOUT, history.next()).await {
            Ok(Some(Ok(e))) => e,
            Ok(Some(Err(e))) => return Err(format!("the central policy's history: {e}")),
            Ok(None) | Err(_) => break,
        };
        let change = match e.operation {
            Operation::Put => match values::decode_doc(&e.key, e.revision, &e.value) {
                Ok(doc) => CentralChange {
                    revision: e.revision,
                    at: doc.changed_at,
                    by: doc.changed_by,
                    what: doc.change,
                    in_force: crate::apply::describe_toggles(&doc.toggles),
                },
                Err(r) => CentralChange {
                    revision: e.revision,
                    at: 0,
                    by: "-".into(),
                    what: format!("refused by every gateway: {r}"),
                    in_force: Vec::new(),
                },
            },
            _ => CentralChange {
                revision: e.revision,
                at: 0,
                by: "-".into(),
                what: "deleted: every site back to its own policy".into(),
                in_force: Vec::new(),
            },
        };
        out.push(change);
        if e.delta == 0 {
            break;
        }
    }
    Ok(out)
}

/// Applies an edit to the central policy by compare-and-swap on its revision; returns
/// the new revision.
pub async fn write_central(
    js: &Context,
    edit: impl Fn(crate::policy::Toggles) -> Result<crate::policy::Toggles, String>,
    by: String,
    what: String,
) -> Result<u64, String> {
    let kv = central(js).await?;
    for _ in 0..5 {
        let entry = kv
            .entry(CENTRAL_KEY)
            .await
            .map_err(|e| format!("reading the central policy: {e}"))?;
        let (toggles, revision) = match &entry {
            Some(e) if e.operation == Operation::Put => {
                match values::decode_doc(&e.key, e.revision, &e.value) {
                    Ok(d) => (d.toggles, Some(e.revision)),
                    // Said, as a site node says it: the change replaces what every
                    // gateway refuses anyway.
                    Err(refused) => {
                        eprintln!(
                            "telesink fleet: the stored central policy is refused ({refused}); this change replaces it"
                        );
                        (Default::default(), Some(e.revision))
                    }
                }
            }
            Some(e) => (Default::default(), Some(e.revision)),
            None => (Default::default(), None),
        };
        let doc = SharedDoc::new(edit(toggles)?, by.clone(), what.clone());
        let bytes = serde_json::to_vec(&doc).map_err(|e| e.to_string())?;
        // (written, someone wrote in between, the error)
        let done = match revision {
            Some(r) => kv.update(CENTRAL_KEY, bytes.into(), r).await.map_err(|e| {
                (
                    e.kind() == UpdateErrorKind::WrongLastRevision,
                    e.to_string(),
                )
            }),
            None => kv
                .create(CENTRAL_KEY, bytes.into())
                .await
                .map_err(|e| (e.kind() == CreateErrorKind::AlreadyExists, e.to_string())),
        };
        match done {
            Ok(r) => return Ok(r),
            Err((true, _)) => continue,
            Err((false, e)) => return Err(format!("writing the central policy: {e}")),
        }
    }
    Err("the central policy changed under 5 attempts in a row; try again".into())
}
