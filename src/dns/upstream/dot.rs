//! DNS over TLS (RFC 7858) to one upstream: a few long-lived connections, each with many
//! queries in flight (RFC 7766 pipelining). Answers may come in any order; each is
//! matched to its query by ID and question, as on UDP.
//!
//! Why not hickory's DoT client: it gives no handshake time, no failure kind (certificate
//! against reset against timeout), no padding and no pool per server; all four are what
//! an admin reads off the metrics here. Framing DNS on a TLS stream is twenty lines.
//!
//! Per connection one task owns the TLS stream, reading and writing: a query appends its
//! frame to the outbox and wakes it; it writes everything queued in one go (under load
//! many queries share one TLS record and one syscall) and hands each answer it reads to
//! its query. The stream acknowledges what it reads at once (`tls::QuickAck` says why).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use parking_lot::Mutex;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, oneshot};

use super::pool::{Connection, Idle, Pool};
use super::stats::{Fail, FailKind, ServerStats};

/// Queries one connection may have waiting; more go to another connection or fail
/// (counted as `overloaded`). Far below the 65,536 IDs, so a free one is found at once.
const MAX_WAITING: usize = 8 * 1024;

pub struct DotClient {
    addrs: Vec<SocketAddr>,
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
    pool: Pool<DotConn>,
    idle: Duration,
    pub stats: Arc<ServerStats>,
}

pub struct DotConn {
    outbox: Mutex<Vec<u8>>,
    wake: Notify,
    pending: Mutex<HashMap<u16, Waiter>>,
    closed: AtomicBool,
    pub idle: Idle,
    stats: Arc<ServerStats>,
}

struct Waiter {
    question: Vec<u8>,
    reply: oneshot::Sender<Vec<u8>>,
}

impl Connection for DotConn {
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

impl DotConn {
    fn close(&self) {
        if !self.closed.swap(true, Ordering::Relaxed) {
            self.stats.open.dec();
        }
        // Dropping the senders tells every waiting query at once.
        self.pending.lock().clear();
        self.wake.notify_one();
    }
}

impl DotClient {
    pub fn new(
        addrs: Vec<SocketAddr>,
        name: ServerName<'static>,
        config: Arc<ClientConfig>,
        connections: usize,
        idle: Duration,
        stats: Arc<ServerStats>,
    ) -> Self {
        DotClient {
            addrs,
            name,
            config,
            pool: Pool::new(connections),
            idle,
            stats,
        }
    }

    /// Sends one query (its ID is chosen here) and returns the answer's bytes and the
    /// connection that carried it.
    pub async fn exchange(
        &self,
        query: &[u8],
        left: Duration,
    ) -> Result<(Vec<u8>, Arc<DotConn>), Fail> {
        self.pool
            .exchange(
                left,
                &self.stats,
                || self.connect(),
                |conn, deadline| async move { ask(&conn, query, deadline).await },
            )
            .await
    }

    async fn connect(&self) -> Result<Arc<DotConn>, Fail> {
        let stream = super::tls::dial(&self.addrs, &self.name, &self.config, &self.stats).await?;
        let conn = Arc::new(DotConn {
            outbox: Mutex::new(Vec::new()),
            wake: Notify::new(),
            pending: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            idle: Idle::new(self.idle),
            stats: self.stats.clone(),
        });
        conn.idle.touch();
        self.stats.open.inc();
        tokio::spawn(serve(conn.clone(), stream));
        Ok(conn)
    }
}

/// One query on one connection: a free ID, the frame into the outbox, the wait.
async fn ask(
    conn: &Arc<DotConn>,
    query: &[u8],
    deadline: tokio::time::Instant,
) -> Result<Vec<u8>, Fail> {
    let question = crate::dns::exchange::question(query)
        .ok_or_else(|| Fail::new(FailKind::Malformed, "query without a question"))?
        .to_vec();
    let (tx, rx) = oneshot::channel();
    let id = {
        let mut pending = conn.pending.lock();
        if conn.closed() {
            return Err(Fail::new(FailKind::Reset, "connection closed"));
        }
        if pending.len() >= MAX_WAITING {
            return Err(Fail::new(
                FailKind::Overloaded,
                format!("{MAX_WAITING} queries already wait on this connection"),
            ));
        }
        let id = loop {
            let id: u16 = rand::random();
            if !pending.contains_key(&id) {
                break id;
            }
        };
        pending.insert(
            id,
            Waiter {
                question,
                reply: tx,
            },
        );
        id
    };
    let _forget = Forget { conn, id };
    conn.idle.in_flight.fetch_add(1, Ordering::Relaxed);
    conn.idle.touch();
    {
        let mut out = conn.outbox.lock();
        out.extend_from_slice(&(query.len() as u16).to_be_bytes());
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&query[2..]);
    }
    conn.wake.notify_one();
    match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err(Fail::new(
            FailKind::Reset,
            "the connection ended before the answer came",
        )),
        Err(_) => Err(Fail::new(FailKind::Timeout, "no answer in time")),
    }
}

/// Frees the query's ID whatever ends its wait.
struct Forget<'a> {
    conn: &'a Arc<DotConn>,
    id: u16,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.conn.pending.lock().remove(&self.id);
        self.conn.idle.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.conn.idle.touch();
    }
}

/// The connection's one task: writes what the queries queued, hands each answer to the
/// query it answers, closes at EOF, on an error or when idle. Reads into a buffer
/// (cancel-safe), so a wake or the idle check may interrupt a read without losing bytes.
async fn serve(conn: Arc<DotConn>, mut stream: super::tls::QuickAck) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut batch = Vec::new();
    loop {
        let read = tokio::select! {
            biased;
            () = conn.wake.notified() => None,
            r = stream.read_buf(&mut buf) => Some(r),
            () = tokio::time::sleep(conn.idle.check_every()) => {
                if conn.idle.expired() {
                    break;
                }
                continue;
            }
        };
        if conn.closed() {
            break;
        }
        match read {
            None => {
                std::mem::swap(&mut batch, &mut *conn.outbox.lock());
                if batch.is_empty() {
                    continue;
                }
                let written = stream.write_all(&batch).await;
                batch.clear();
                if written.is_err() || stream.flush().await.is_err() {
                    break;
                }
            }
            Some(Ok(0) | Err(_)) => break,
            Some(Ok(_)) => {
                while buf.len() >= 2 {
                    let len = u16::from_be_bytes([buf[0], buf[1]]) as usize;
                    if buf.len() < 2 + len {
                        break;
                    }
                    buf.advance(2);
                    let frame = buf.split_to(len);
                    deliver(&conn, &frame);
                }
            }
        }
    }
    conn.close();
    // close_notify, so the server knows we left on purpose.
    let _ = stream.shutdown().await;
}

fn deliver(conn: &DotConn, answer: &[u8]) {
    let Some(id) = answer.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return;
    };
    let mut pending = conn.pending.lock();
    let asked = pending.get(&id).is_some_and(|w| {
        crate::dns::exchange::question(answer).is_some_and(|q| q.eq_ignore_ascii_case(&w.question))
    });
    if asked && let Some(w) = pending.remove(&id) {
        drop(pending);
        let _ = w.reply.send(answer.to_vec());
    }
}
