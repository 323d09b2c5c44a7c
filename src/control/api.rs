//! The control API: JSON over HTTP/1.1 on a Unix socket.
//!
//! A Unix socket, not TCP, so access is decided by file permissions (mode 0660, the
//! configured group) and nothing on the network can reach it. Each change is logged with
//! the caller's uid (SO_PEERCRED), so the journal tells who switched a profile off.
//!
//! | method | path                 | body                                              |
//! |--------|----------------------|---------------------------------------------------|
//! | GET    | /v1/status           |                                                   |
//! | GET    | /v1/profiles         |                                                   |
//! | POST   | /v1/profiles/NAME    | {"enabled": bool, "group"?, "for_secs"?, "dry_run"?} |
//! | POST   | /v1/profiles/NAME/reset | {"group"?, "dry_run"?} (the config's setting back) |
//! | POST   | /v1/log-only/NAME    | {"on": bool, "group"?, "for_secs"?, "dry_run"?}   |
//! | POST   | /v1/rules            | {"name": "x" or "*.x", "allow": bool, "group"?, "for_secs"?, "remove"?, "dry_run"?} |
//! | POST   | /v1/report           | {"since", "until", "client"?, "profile"?, "by"?} (flushes first) |
//! | POST   | /v1/report/verify    | (checks the ledger's digest chain)                |
//! | POST   | /v1/report/purge     | {"client": "label"} (erases one client)           |
//! | GET    | /v1/tail?after=SEQ   | (verdicts after SEQ; collection on while polled)  |
//! | POST   | /v1/reload           |                                                   |
//! | POST   | /v1/firewall/apply   | (installs the table in force again)               |
//! | POST   | /v1/explain          | {"name": "...", "client"?: "192.0.2.10"}          |

use std::convert::Infallible;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::net::UnixListener;
use tracing::{info, warn};

use super::{Control, ControlError, Edit};
use crate::policy::{Toggle, ToggleError};

pub const MAX_CONNECTIONS: usize = 16;
/// A client sends its request at once; a connection silent this long is closed, and an
/// idle one is evicted (oldest first) when all slots are taken (src/slots.rs).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// The same for the body: a request is sent at once, not trickled.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_secs(30);
const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("control socket {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("control socket {path}: no group named {group} in /etc/group")]
    NoGroup { path: String, group: String },
}

/// Creates the socket: a stale one from an earlier run is replaced (anything else at the
/// path is left alone and reported), mode 0660, group `group` if given.
pub fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, SocketError> {
    let io = |source| SocketError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            std::fs::remove_file(path).map_err(io)?;
        }
        Ok(_) => {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket; not touching it",
            )));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    if let Some(group) = group {
        let gid = crate::config::gid_of(group).ok_or_else(|| SocketError::NoGroup {
            path: path.display().to_string(),
            group: group.to_owned(),
        })?;
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io)?;
    }
    Ok(listener)
}

pub async fn serve(listener: UnixListener, control: Arc<Control>, slots: Arc<crate::slots::Slots>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                slots.accept_failed(&e).await;
                continue;
            }
        };
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        let control = control.clone();
        slots.spawn(None, move |hold| async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (control, hold) = (control.clone(), hold.clone());
                async move {
                    // Busy (never evicted) only once the whole request is here: a client
                    // that sends headers and then trickles its body stays evictable, and
                    // is closed when the deadline passes.
                    let (parts, body) = req.into_parts();
                    let bytes = match read_body(body).await {
                        Ok(b) => b,
                        Err(reply) => return Ok::<_, Infallible>(reply),
                    };
                    hold.busy.store(true, std::sync::atomic::Ordering::Relaxed);
                    Ok(respond(parts, bytes, &control, uid).await)
                }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            if tokio::time::timeout(TIMEOUT, conn).await.is_err() {
                warn!("control connection timed out");
            }
        });
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    dry_run: bool,
    /// A cluster node: this node only, as an override kept until cleared.
    #[serde(default)]
    local: bool,
    /// Why (`--why`), kept with the change.
    #[serde(default)]
    why: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileBody {
    enabled: bool,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    for_secs: Option<u64>,
    #[serde(default)]
    dry_run: bool,
    /// A cluster node: this node only, as an override kept until cleared.
    #[serde(default)]
    local: bool,
    /// Why (`--why`), kept with the change.
    #[serde(default)]
    why: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    /// The client label as reports show it.
    client: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    name: String,
    /// true: allow the name; false: block it.
    #[serde(default)]
    allow: bool,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    for_secs: Option<u64>,
    /// Remove the rule for this name and group instead.
    #[serde(default)]
    remove: bool,
    #[serde(default)]
    dry_run: bool,
    /// A cluster node: this node only, as an override kept until cleared.
    #[serde(default)]
    local: bool,
    /// Why (`--why`), kept with the change.
    #[serde(default)]
    why: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogOnlyBody {
    on: bool,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    for_secs: Option<u64>,
    #[serde(default)]
    dry_run: bool,
    /// A cluster node: this node only, as an override kept until cleared.
    #[serde(default)]
    local: bool,
    /// Why (`--why`), kept with the change.
    #[serde(default)]
    why: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainBody {
    name: String,
    #[serde(default)]
    client: Option<IpAddr>,
}

type Reply = Response<Full<Bytes>>;

fn json(status: StatusCode, value: &impl serde::Serialize) -> Reply {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|e| e.to_string().into_bytes());
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Reply {
    json(status, &serde_json::json!({ "error": message.to_string() }))
}

fn control_error(e: ControlError) -> Reply {
    let status = match &e {
        ControlError::Toggle(
            ToggleError::NoProfile(..)
            | ToggleError::NoGroup(..)
            | ToggleError::NoRule { .. }
            | ToggleError::NoToggle(_),
        ) => StatusCode::NOT_FOUND,
        ControlError::Policy(_)
        | ControlError::Config(_)
        | ControlError::Toggle(ToggleError::TooManyRules { .. }) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ControlError::Firewall(_)
        | ControlError::State(_)
        | ControlError::Task(..)
        | ControlError::Services(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ControlError::Cluster(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e)
}

/// The whole request body, within `BODY_READ_TIMEOUT` and `MAX_BODY`.
async fn read_body(body: hyper::body::Incoming) -> Result<Bytes, Reply> {
    match tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) => Err(error(StatusCode::BAD_REQUEST, format!("request body: {e}"))),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request body: not complete within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        )),
    }
}

fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, Box<Reply>> {
    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { bytes };
    serde_json::from_slice(bytes)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, format!("request body: {e}"))))
}

async fn respond(
    req: hyper::http::request::Parts,
    bytes: Bytes,
    c: &Arc<Control>,
    uid: Option<u32>,
) -> Reply {
    let path = req.uri.path().to_owned();
    let method = req.method.clone();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["v1", "status"]) => json(StatusCode::OK, &c.status()),
        (&Method::GET, ["v1", "profiles"]) => json(StatusCode::OK, &c.profiles()),
        (&Method::POST, ["v1", "profiles", name]) => {
            let b: ProfileBody = match body(&bytes) {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let ask = b.ask();
            let edit = Edit::Profile(Toggle {
                profile: (*name).to_owned(),
                group: b.group,
                enabled: b.enabled,
                until: until(b.for_secs),
                by: None,
                why: None,
            });
            change(c, edit, ask, uid).await
        }
        (&Method::POST, ["v1", "profiles", name, "reset"]) => {
            let b: ResetBody = match body(&bytes) {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let ask = b.ask();
            let edit = Edit::Reset {
                profile: (*name).to_owned(),
                group: b.group,
            };
            change(c, edit, ask, uid).await
        }
        (&Method::POST, ["v1", "log-only", name]) => {
            let b: LogOnlyBody = match body(&bytes) {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let ask = b.ask();
            let edit = Edit::LogOnly(Toggle {
                profile: (*name).to_owned(),
                group: b.group,
                enabled: b.on,
                until: until(b.for_secs),
                by: None,
                why: None,
            });
            change(c, edit, ask, uid).await
        }
        (&Method::POST, ["v1", "rules"]) => {
            let b: RuleBody = match body(&bytes) {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let ask = b.ask();
            let name = match crate::policy::runtime::normalize(&b.name) {
                Ok(n) => n,
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            };
            let edit = if b.remove {
                Edit::Unrule {
                    name,
                    group: b.group,
                }
            } else {
                Edit::Rule(crate::policy::runtime::NameRule {
                    name,
                    allow: b.allow,
                    group: b.group,
                    until: until(b.for_secs),
                    by: None,
                    why: None,
                })
            };
            change(c, edit, ask, uid).await
        }
        (&Method::POST, ["v1", "report"]) => {
            let q: crate::evidence::report::Query = match body(&bytes) {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let snap = c.current();
            let profiles: Vec<String> = snap.profiles.iter().map(|p| p.name.clone()).collect();
            let context = super::evidence_context(&snap, "the running daemon");
            let report = c
                .evidence(move |store| {
                    let mut r = crate::evidence::report::run_checked(store, &q, &profiles)?;
                    r.context = Some(context);
                    Ok(r)
                })
                .await;
            if let (Ok(r), Some(audit)) = (&report, &c.audit)
                && r.lines_left_out > 0
            {
                audit
                    .ledger
                    .report_lines_left_out
                    .fetch_add(r.lines_left_out, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!("evidence report: {}", r.left_out_note());
            }
            evidence_reply(report)
        }
        (&Method::POST, ["v1", "report", "verify"]) => {
            evidence_reply(c.evidence(|store| Ok(store.verification()?)).await)
        }
        (&Method::POST, ["v1", "report", "purge"]) => {
            let b: PurgeBody = match body(&bytes) {
                Ok(b) => b,
                Err(r) => return *r,
            };
            info!(
                uid,
                client = b.client,
                "evidence purge requested over the control socket"
            );
            evidence_reply(
                c.evidence(move |store| {
                    let rows = store.purge(&b.client)?;
                    Ok(serde_json::json!({ "client": b.client, "rows": rows }))
                })
                .await,
            )
        }
        (&Method::GET, ["v1", "tail"]) => {
            let after = req
                .uri
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("after=")))
                .and_then(|v| v.parse().ok());
            // Each event names the device its address is now, as the metrics and the
            // ledger do (looked up here, never on the query path).
            let mut batch = c.services.tail.poll(after);
            for e in &mut batch.events {
                let (label, kind) = c.services.label_of(e.client);
                e.device = Some(label);
                e.client_kind = Some(kind.name().to_owned());
            }
            json(StatusCode::OK, &batch)
        }
        (&Method::POST, ["v1", "reload"]) => {
            info!(uid, "reload requested over the control socket");
            match c.reload().await {
                Ok(report) => {
                    let by =
                        uid.map_or_else(|| "an unknown uid".to_owned(), |u| format!("uid {u}"));
                    c.record_change(
                        &by,
                        format!(
                            "config and lists reloaded: generation {}",
                            report.generation
                        ),
                    );
                    json(StatusCode::OK, &report)
                }
                Err(e) => control_error(e),
            }
        }
        (&Method::POST, ["v1", "firewall", "apply"]) => {
            info!(uid, "firewall apply requested over the control socket");
            match c.reapply_firewall().await {
                Ok(snap) => json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "generation": snap.generation,
                        "firewall": if snap.firewall_on() { "on" } else { "off" },
                    }),
                ),
                Err(e) => control_error(e),
            }
        }
        (&Method::POST, ["v1", "explain"]) => {
            let b: ExplainBody = match body(&bytes) {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let client = b.client.unwrap_or(IpAddr::from([127, 0, 0, 1]));
            match crate::policy::explain(&c.current(), &b.name, client) {
                Ok(mut e) => {
                    let (label, kind) = c.services.label_of(client);
                    e.device = Some(format!("{label} ({})", kind.name()));
                    json(StatusCode::OK, &e)
                }
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            }
        }
        (_, ["v1", ..]) => error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {method} {path}"),
        ),
        _ => error(StatusCode::NOT_FOUND, "the API is under /v1/"),
    }
}

fn evidence_reply<T: serde::Serialize>(r: Result<T, super::EvidenceError>) -> Reply {
    match r {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e @ super::EvidenceError::Off) => error(StatusCode::NOT_FOUND, e),
        Err(super::EvidenceError::Report(e)) if e.is_question() => {
            error(StatusCode::BAD_REQUEST, e)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// When a change made now for `for_secs` lapses.
fn until(for_secs: Option<u64>) -> Option<u64> {
    for_secs.map(|s| crate::clock::unix_now().saturating_add(s))
}

/// The fields every change's body has, as an `Ask`.
macro_rules! asked {
    ($($body:ty),*) => {$(
        impl $body {
            fn ask(&self) -> Ask {
                Ask { dry_run: self.dry_run, local: self.local, why: self.why.clone() }
            }
        }
    )*};
}
asked!(ProfileBody, ResetBody, LogOnlyBody, RuleBody);

/// How a change is asked for.
struct Ask {
    dry_run: bool,
    local: bool,
    why: Option<String>,
}

async fn change(c: &Arc<Control>, mut edit: Edit, ask: Ask, uid: Option<u32>) -> Reply {
    let by = uid.map_or_else(|| "an unknown uid".to_owned(), |u| format!("uid {u}"));
    let by_on = format!("{by} on {}", crate::host::name());
    edit.stamp(by_on.clone(), ask.why);
    let what = edit.to_string();
    if !ask.dry_run {
        info!("change requested over the control socket: {what} by {by}");
    }
    match c.edit(edit, ask.dry_run, ask.local, by_on).await {
        Ok(report) => {
            if !ask.dry_run && report.generation > 0 {
                c.record_change(&by, what);
            }
            json(StatusCode::OK, &report)
        }
        Err(e) => control_error(e),
    }
}
