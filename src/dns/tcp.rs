//! DNS over TCP (RFC 7766), on telesink's own listener so that connections are bounded.
//!
//! hickory-server's TCP listener accepts without limit; about 1,000 idle connections from
//! one LAN host took every descriptor, and cache misses failed because the upstream
//! sockets could not be opened. Here every connection holds a slot (src/slots.rs): at most
//! `tcp_max_connections` in all and `tcp_max_per_client` per client address, the longest
//! idle connection closed to make room, each close counted by reason.
//!
//! A connection is idle when no query of it is being answered. It gets `idle` to send
//! each whole query: bytes that trickle in do not extend that time (slowloris), only a
//! whole query does. Queries on one connection are answered concurrently (up to
//! `PIPELINED`), in the order they complete, as RFC 7766 section 6.2.1.1 allows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::pipeline::{Path, Pipeline, QueryRecord};
use super::ratelimit::Admit;
use super::wire::{Collect, form_error};
use crate::slots::{Closed, Hold, Slots};

/// Queries of one connection answered at once; more wait in the socket.
const PIPELINED: usize = 32;

pub struct Tcp {
    pipeline: Arc<Pipeline>,
    slots: Arc<Slots>,
    idle: Duration,
}

impl Tcp {
    pub fn new(pipeline: Arc<Pipeline>, slots: Arc<Slots>, idle: Duration) -> Arc<Self> {
        Arc::new(Tcp {
            pipeline,
            slots,
            idle,
        })
    }

    /// Accepts until the process ends.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    self.slots.accept_failed(&e).await;
                    continue;
                }
            };
            let me = self.clone();
            // Refused (every candidate busy answering): the stream is dropped, closed.
            self.slots.spawn(Some(peer.ip()), move |hold| async move {
                me.connection(stream, peer, hold).await;
            });
        }
    }

    async fn connection(&self, mut stream: TcpStream, peer: SocketAddr, hold: Hold) {
        let _ = stream.set_nodelay(true);
        let mut buf: Vec<u8> = Vec::with_capacity(512);
        let mut pending = FuturesUnordered::new();
        let mut deadline = Instant::now() + self.idle;
        let mut eof = false;
        loop {
            while pending.len() < PIPELINED
                && let Some(message) = take_message(&mut buf)
            {
                hold.touch();
                deadline = Instant::now() + self.idle;
                let policy = self.pipeline.policy.load();
                let admit = self.pipeline.admit(&policy, peer.ip());
                if admit != Admit::Drop {
                    pending.push(answer(&self.pipeline, message, peer, admit));
                }
            }
            hold.busy.store(!pending.is_empty(), Ordering::Relaxed);
            if eof && pending.is_empty() {
                return;
            }
            tokio::select! {
                Some(answer) = pending.next(), if !pending.is_empty() => {
                    let Some(bytes) = answer else { continue };
                    if !self.write(&mut stream, &bytes).await {
                        return;
                    }
                }
                read = stream.read_buf(&mut buf), if !eof && pending.len() < PIPELINED => {
                    match read {
                        Ok(0) | Err(_) => eof = true,
                        Ok(_) => {}
                    }
                }
                _ = tokio::time::sleep_until(deadline), if pending.is_empty() => {
                    self.slots.count(Closed::IdleTimeout);
                    return;
                }
            }
        }
    }

    /// One answer with its length; false when the client does not take it in time.
    async fn write(&self, stream: &mut TcpStream, bytes: &[u8]) -> bool {
        let Ok(len) = u16::try_from(bytes.len()) else {
            return true;
        };
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(bytes);
        match tokio::time::timeout(self.idle, stream.write_all(&framed)).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                self.slots.count(Closed::IdleTimeout);
                false
            }
        }
    }
}

/// The next whole length-prefixed message in `buf`, removed from it.
fn take_message(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let len = usize::from(u16::from_be_bytes([*buf.first()?, *buf.get(1)?]));
    if buf.len() < 2 + len {
        return None;
    }
    let message = buf[2..2 + len].to_vec();
    buf.drain(..2 + len);
    Some(message)
}

/// The answer to one message: through the whole pipeline, FORMERR for what does not
/// parse, REFUSED for a client over its rate limit.
async fn answer(
    pipeline: &Pipeline,
    raw: Vec<u8>,
    peer: SocketAddr,
    admit: Admit,
) -> Option<Vec<u8>> {
    // Shorter than a header, or a response: no answer (as on UDP).
    if raw.len() < 12 || raw[2] & 0x80 != 0 {
        return None;
    }
    let handle = Collect::default();
    let sent = handle.sent.clone();
    match Request::from_bytes(raw.clone(), peer, Protocol::Tcp) {
        Ok(request) if admit == Admit::Refuse => {
            pipeline.refuse_limited(&request, handle).await;
        }
        Ok(request) => {
            pipeline.serve(&request, handle).await;
        }
        Err(_) => {
            let bytes = form_error(&raw)?;
            pipeline.count(
                peer.ip(),
                &QueryRecord::new(super::Outcome::FormErr),
                Path::Full,
                false,
            );
            return Some(bytes);
        }
    }
    sent.lock().take()
}

#[cfg(test)]
mod tests {
    use super::take_message;

    #[test]
    fn messages_come_out_whole_and_only_when_whole() {
        let mut buf = vec![0, 3, 1, 2];
        assert_eq!(take_message(&mut buf), None);
        buf.extend_from_slice(&[3, 0]);
        assert_eq!(take_message(&mut buf), Some(vec![1, 2, 3]));
        assert_eq!(take_message(&mut buf), None);
        buf.extend_from_slice(&[1, 7]);
        assert_eq!(take_message(&mut buf), Some(vec![7]));
        assert!(buf.is_empty());
    }
}
