//! DNS over HTTPS (RFC 8484) over HTTP/2 to one upstream: a few long-lived connections,
//! each carrying many queries at once as HTTP/2 streams (h2 matches answers to streams;
//! the question is checked again here). POST by default; GET with `doh_method = "get"`
//! (cacheable by HTTP caches in between, one base64url query in the path).
//!
//! Why not hickory's DoH client: the same as for DoT (src/dns/upstream/dot.rs): no
//! handshake time, no failure kind, no padding, no pool per server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;

use super::pool::{Connection, Idle, Pool};
use super::stats::{Fail, FailKind, ServerStats};

pub use crate::config::upstream::DohMethod as Method;

/// Largest DNS message.
const MAX_ANSWER: usize = 65_535;

pub struct DohClient {
    addrs: Vec<SocketAddr>,
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
    uri: String,
    method: Method,
    pool: Pool<DohConn>,
    idle: Duration,
    pub stats: Arc<ServerStats>,
}

pub struct DohConn {
    send: h2::client::SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
    idle: Arc<Idle>,
}

impl Connection for DohConn {
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

impl DohClient {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        addrs: Vec<SocketAddr>,
        name: ServerName<'static>,
        config: Arc<ClientConfig>,
        authority: &str,
        path: &str,
        method: Method,
        connections: usize,
        idle: Duration,
        stats: Arc<ServerStats>,
    ) -> Self {
        DohClient {
            addrs,
            name,
            config,
            uri: format!("https://{authority}{path}"),
            method,
            pool: Pool::new(connections),
            idle,
            stats,
        }
    }

    pub async fn exchange(&self, query: &[u8], left: Duration) -> Result<Vec<u8>, Fail> {
        let ask = |conn: Arc<DohConn>, deadline| async move {
            conn.idle.in_flight.fetch_add(1, Ordering::Relaxed);
            let asked = tokio::time::timeout_at(deadline, self.ask(&conn, query)).await;
            conn.idle.in_flight.fetch_sub(1, Ordering::Relaxed);
            conn.idle.touch();
            asked.unwrap_or_else(|_| Err(Fail::new(FailKind::Timeout, "no answer in time")))
        };
        let (answer, _) = self
            .pool
            .exchange(left, &self.stats, || self.connect(), ask)
            .await?;
        Ok(answer)
    }

    async fn ask(&self, conn: &DohConn, query: &[u8]) -> Result<Vec<u8>, Fail> {
        let reset = |e: h2::Error| Fail::new(FailKind::Reset, e.to_string());
        let mut send = conn.send.clone().ready().await.map_err(reset)?;
        let builder = http::Request::builder().header("accept", "application/dns-message");
        let (request, body) = match self.method {
            Method::Post => (
                builder
                    .method("POST")
                    .uri(&self.uri)
                    .header("content-type", "application/dns-message"),
                Some(Bytes::copy_from_slice(query)),
            ),
            Method::Get => {
                use base64::Engine;
                let q = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(query);
                (
                    builder.method("GET").uri(format!("{}?dns={q}", self.uri)),
                    None,
                )
            }
        };
        let request = request
            .body(())
            .map_err(|e| Fail::new(FailKind::Malformed, e.to_string()))?;
        let (response, mut stream) = send.send_request(request, body.is_none()).map_err(reset)?;
        if let Some(body) = body {
            stream.send_data(body, true).map_err(reset)?;
        }
        let response = response.await.map_err(reset)?;
        if response.status() != http::StatusCode::OK {
            return Err(Fail::new(
                FailKind::HttpStatus,
                format!("HTTP status {}", response.status()),
            ));
        }
        let mut body = response.into_body();
        let mut answer = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(reset)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            if answer.len() + chunk.len() > MAX_ANSWER {
                return Err(Fail::new(
                    FailKind::Malformed,
                    "answer larger than a DNS message",
                ));
            }
            answer.extend_from_slice(&chunk);
        }
        let same = crate::dns::exchange::question(&answer)
            .zip(crate::dns::exchange::question(query))
            .is_some_and(|(a, q)| a.eq_ignore_ascii_case(q));
        if !same {
            return Err(Fail::new(
                FailKind::Malformed,
                "the answer is not for the question asked",
            ));
        }
        Ok(answer)
    }

    async fn connect(&self) -> Result<Arc<DohConn>, Fail> {
        let stream = super::tls::dial(&self.addrs, &self.name, &self.config, &self.stats).await?;
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(256 * 1024)
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(|e| Fail::new(FailKind::TlsHandshake, format!("HTTP/2: {e}")))?;
        let closed = Arc::new(AtomicBool::new(false));
        let idle = Arc::new(Idle::new(self.idle));
        idle.touch();
        self.stats.open.inc();
        let (done, watch, stats) = (closed.clone(), idle.clone(), self.stats.clone());
        // Drives the connection until the server ends it or it sits idle; dropping it
        // closes it.
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            loop {
                tokio::select! {
                    _ = &mut connection => break,
                    () = tokio::time::sleep(watch.check_every()) => {
                        if watch.expired() {
                            break;
                        }
                    }
                }
            }
            done.store(true, Ordering::Relaxed);
            stats.open.dec();
        });
        Ok(Arc::new(DohConn { send, closed, idle }))
    }
}
