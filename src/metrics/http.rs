//! The scrape endpoint: GET /metrics and GET /health, hardened like a data plane because it
//! listens next to the resolver, often on the LAN address: a bounded number of
//! connections, a short header-read timeout, and idle connections evicted (oldest first)
//! to make room, so idle or slow clients cannot keep Prometheus and /health out.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tracing::warn;

/// Connections at once, and per client address: Prometheus, an admin's curl and a
/// load balancer's probe need a handful; one host can hold at most a quarter.
pub const MAX_CONNECTIONS: usize = 32;
pub const MAX_PER_CLIENT: usize = 8;
/// A scraper sends its request at once; a connection silent this long is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until the process ends. `health` says "ok" or why not.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    health: Arc<dyn Fn() -> Result<Vec<String>, String> + Send + Sync>,
    slots: Arc<crate::slots::Slots>,
) {
    let registry = Arc::new(registry);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                slots.accept_failed(&e).await;
                continue;
            }
        };
        // Full of connections being answered: the stream is dropped, closed at once
        // rather than queued.
        let (registry, health) = (registry.clone(), health.clone());
        slots.spawn(Some(peer.ip()), move |hold| async move {
            let service = service_fn(move |req| {
                hold.busy.store(true, std::sync::atomic::Ordering::Relaxed);
                respond(req, registry.clone(), health.clone())
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            if tokio::time::timeout(CONNECTION_TIMEOUT, conn)
                .await
                .is_err()
            {
                warn!("metrics connection timed out");
            }
        });
    }
}

async fn respond(
    req: Request<hyper::body::Incoming>,
    registry: Arc<Registry>,
    health: Arc<dyn Fn() -> Result<Vec<String>, String> + Send + Sync>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, ctype: &str, body: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = ctype.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        Ok(r)
    };
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            b"GET only\n".to_vec(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            // The scrape reads the kernel's counters through the firewall owner thread
            // and waits for it: off the tokio workers.
            let encoded = tokio::task::spawn_blocking(move || {
                let encoder = TextEncoder::new();
                let mut body = Vec::new();
                encoder
                    .encode(&registry.gather(), &mut body)
                    .map(|()| (encoder.format_type().to_owned(), body))
            })
            .await;
            match encoded {
                Ok(Ok((ctype, body))) => reply(StatusCode::OK, &ctype, body),
                Ok(Err(e)) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e}\n").into_bytes(),
                ),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e}\n").into_bytes(),
                ),
            }
        }
        "/health" => match health() {
            Ok(notes) if notes.is_empty() => {
                reply(StatusCode::OK, "text/plain", b"ready\n".to_vec())
            }
            // Degraded, not down: serving from its own state (a cluster node whose
            // store is away). 200, so a VRRP check does not move the address for it.
            Ok(notes) => reply(
                StatusCode::OK,
                "text/plain",
                format!("ready, degraded: {}\n", notes.join("; ")).into_bytes(),
            ),
            Err(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("degraded: {why}\n").into_bytes(),
            ),
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    }
}
