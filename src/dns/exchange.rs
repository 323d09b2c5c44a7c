//! UDP to one upstream over a few long-lived sockets.
//!
//! Why not hickory-resolver's UDP client: it opens, binds, connects, registers and closes
//! a socket for every query and drives each through several layers of boxed streams. With
//! 5% of 15,000 queries a second missing the cache that was half of a core (perf, see
//! docs/BENCHMARKS.md), and it starved a policy reload running beside it.
//!
//! Here each upstream has `SOCKETS` connected sockets, each with one receive task. A query
//! takes a random socket and a random free ID; an answer is accepted only if it arrives on
//! that connected socket (the kernel checks the source), carries that ID and repeats the
//! question, as RFC 5452 asks. A socket is replaced by one on a fresh ephemeral port after
//! `ROTATE_AFTER` queries, so the ports an off-path spoofer would have to hit keep moving.
//! Truncated answers are the caller's to retry over TCP.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, oneshot};

/// Sockets per upstream: enough to spread the waiting queries' IDs thin (16 x 65,536),
/// few enough that they cost nothing (each is one fd and one mostly idle task).
pub const SOCKETS: usize = 16;
/// Queries per socket before it is replaced by one on a new port.
const ROTATE_AFTER: u32 = 256;

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream refused the connection (nothing listening)")]
    Refused,
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    #[error("query without a question")]
    NoQuestion,
    #[error("too many queries waiting on one upstream socket")]
    IdsExhausted,
}

/// Queries one socket may have waiting: far below the 65,536 IDs, so a random free one
/// is found in a few tries. Only a `max_in_flight` in the hundreds of thousands could
/// reach it; such a query is refused rather than looping.
const MAX_WAITING: usize = 48 * 1024;

fn free_id(pending: &HashMap<u16, Waiter>, ids: &Prf) -> Option<u16> {
    if pending.len() >= MAX_WAITING {
        return None;
    }
    loop {
        let id = ids.next() as u16;
        if !pending.contains_key(&id) {
            return Some(id);
        }
    }
}

pub struct UdpExchange {
    server: SocketAddr,
    slots: Vec<Mutex<Slot>>,
    ids: Prf,
    /// Sockets whose receive task still runs, retired ones included.
    open: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Slot {
    line: Option<Arc<Line>>,
    used: u32,
}

/// One connected socket and the queries waiting on it.
struct Line {
    socket: UdpSocket,
    pending: Mutex<HashMap<u16, Waiter>>,
    retired: AtomicBool,
    /// Wakes the receive task to check whether it may end (retired and nothing waiting).
    /// It must end promptly: at 25,000 forwarded queries a second a socket is retired
    /// every few milliseconds, and each lingering one holds a descriptor and a buffer.
    wake: Notify,
}

impl Line {
    fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    fn done(&self) -> bool {
        self.retired.load(Ordering::Relaxed) && self.pending.lock().is_empty()
    }
}

struct Waiter {
    question: Vec<u8>,
    reply: oneshot::Sender<Vec<u8>>,
}

impl UdpExchange {
    pub fn new(server: SocketAddr) -> Self {
        Self {
            server,
            slots: (0..SOCKETS).map(|_| Mutex::new(Slot::default())).collect(),
            ids: Prf::new(),
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Sockets open to this upstream, retired ones still draining included.
    pub fn open_sockets(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Sends `request` (a complete DNS query; its ID is overwritten) and returns the
    /// matching answer's bytes.
    pub async fn exchange(
        &self,
        request: &mut [u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, ExchangeError> {
        let question = question(request).ok_or(ExchangeError::NoQuestion)?.to_vec();
        let line = self.line()?;
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut pending = line.pending.lock();
            let id = free_id(&pending, &self.ids).ok_or(ExchangeError::IdsExhausted)?;
            pending.insert(
                id,
                Waiter {
                    question,
                    reply: tx,
                },
            );
            id
        };
        // Whatever happens from here (timeout, error, the caller giving up), the ID is
        // freed again.
        let _forget = Forget {
            line: line.clone(),
            id,
        };
        request[..2].copy_from_slice(&id.to_be_bytes());
        line.socket.send(request).await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(ExchangeError::Refused),
            Err(_) => Err(ExchangeError::Timeout(timeout)),
        }
    }

    /// A random socket, replaced first if it has served its share.
    fn line(&self) -> Result<Arc<Line>, ExchangeError> {
        let i = (self.ids.next() % SOCKETS as u64) as usize;
        let mut slot = self.slots[i].lock();
        slot.used += 1;
        if let Some(line) = &slot.line
            && slot.used <= ROTATE_AFTER
        {
            return Ok(line.clone());
        }
        let line = Arc::new(Line {
            socket: connect(self.server)?,
            pending: Mutex::new(HashMap::new()),
            retired: AtomicBool::new(false),
            wake: Notify::new(),
        });
        self.open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(receive(line.clone(), self.open.clone()));
        if let Some(old) = slot.line.replace(line.clone()) {
            old.retire();
        }
        slot.used = 1;
        Ok(line)
    }
}

impl Drop for UdpExchange {
    fn drop(&mut self) {
        for slot in &self.slots {
            if let Some(line) = &slot.lock().line {
                line.retire();
            }
        }
    }
}

struct Forget {
    line: Arc<Line>,
    id: u16,
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.line.pending.lock().remove(&self.id);
        if self.line.done() {
            self.line.wake.notify_one();
        }
    }
}

fn connect(server: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(local)?;
    socket.connect(server)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Hands each answer to the query waiting for it; ends once the socket is retired and
/// nothing waits on it any more.
async fn receive(line: Arc<Line>, open: Arc<AtomicUsize>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        if line.done() {
            open.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let received = tokio::select! {
            r = line.socket.recv(&mut buf) => r,
            () = line.wake.notified() => continue,
        };
        let n = match received {
            Ok(n) => n,
            // ICMP port unreachable: nobody listens there. Fail the waiting queries now
            // (dropping their senders) so the caller moves on to the next upstream
            // instead of waiting out its timeout.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                line.pending.lock().clear();
                continue;
            }
            Err(_) => continue,
        };
        let answer = &buf[..n];
        let Some(id) = answer.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
            continue;
        };
        let mut pending = line.pending.lock();
        // A datagram with a known ID but another question is not the answer (a late one
        // to an earlier query with the same ID, or a forgery): the query keeps waiting.
        let asked = pending
            .get(&id)
            .is_some_and(|w| question(answer).is_some_and(|q| q.eq_ignore_ascii_case(&w.question)));
        if asked && let Some(waiter) = pending.remove(&id) {
            drop(pending);
            let _ = waiter.reply.send(answer.to_vec());
        }
    }
}

/// The question section's bytes (name, type, class) of a message with one question
/// whose name is not compressed, as every query is and every answer repeats it.
pub(crate) fn question(message: &[u8]) -> Option<&[u8]> {
    if message.get(4..6)? != [0, 1] {
        return None;
    }
    let mut at = 12;
    loop {
        let len = *message.get(at)? as usize;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        at += 1 + len;
    }
    message.get(12..at + 5)
}

/// Query IDs and socket choice from a cryptographically secure generator (rand's
/// thread-local ChaCha, seeded and reseeded from the OS), so an off-path attacker cannot
/// predict either from earlier ones (RFC 5452). std's hasher makes no such promise.
struct Prf;

impl Prf {
    fn new() -> Self {
        Prf
    }

    fn next(&self) -> u64 {
        rand::random()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[&str]) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name {
            m.push(label.len() as u8);
            m.extend(label.as_bytes());
        }
        m.extend([0, 0, 1, 0, 1]);
        m
    }

    #[test]
    fn question_is_found_and_compared_without_case() {
        let q = query(&["www", "Example", "org"]);
        let a = query(&["WWW", "example", "ORG"]);
        assert_eq!(question(&q).map(<[u8]>::len), Some(17 + 4));
        assert!(
            question(&q)
                .unwrap()
                .eq_ignore_ascii_case(question(&a).unwrap())
        );
        assert!(
            !question(&q)
                .unwrap()
                .eq_ignore_ascii_case(question(&query(&["www", "example", "com"])).unwrap())
        );
        let mut two = q.clone();
        two[5] = 2;
        assert_eq!(question(&two), None);
        let mut compressed = q.clone();
        compressed[12] = 0xc0;
        assert_eq!(question(&compressed), None);
        assert_eq!(question(&q[..20]), None);
    }

    #[test]
    fn a_full_socket_refuses_instead_of_searching_forever() {
        let ids = Prf::new();
        let mut pending = HashMap::new();
        for id in 0..MAX_WAITING as u16 {
            let (reply, _) = oneshot::channel();
            pending.insert(
                id,
                Waiter {
                    question: Vec::new(),
                    reply,
                },
            );
        }
        assert_eq!(free_id(&pending, &ids), None);
        pending.remove(&7);
        let id = free_id(&pending, &ids).unwrap();
        assert!(!pending.contains_key(&id));
    }

    /// A real socket on loopback standing in for an upstream: a wrong question with the
    /// right ID is ignored, the right one is taken; nothing listening fails fast.
    #[tokio::test]
    async fn answers_are_matched_by_id_and_question() {
        let upstream = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = upstream.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = upstream.recv_from(&mut buf).unwrap();
            let mut wrong = query(&["other", "example"]);
            wrong[..2].copy_from_slice(&buf[..2]);
            wrong[2] |= 0x80;
            upstream.send_to(&wrong, from).unwrap();
            let mut right = buf[..n].to_vec();
            right[2] |= 0x80;
            right[4..6].copy_from_slice(&[0, 1]);
            upstream.send_to(&right, from).unwrap();
        });
        let ex = UdpExchange::new(addr);
        let mut q = query(&["www", "example"]);
        let answer = ex.exchange(&mut q, Duration::from_secs(2)).await.unwrap();
        server.join().unwrap();
        assert_eq!(question(&answer), question(&q));
        assert_eq!(answer[..2], q[..2]);
        assert!(answer[2] & 0x80 != 0);

        // Rotation: thousands of queries later, only the pool's sockets are still open;
        // retired ones end as soon as nothing waits on them.
        let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = echo.recv_from(&mut buf) {
                buf[2] |= 0x80;
                let _ = echo.send_to(&buf[..n], from);
            }
        });
        let ex = UdpExchange::new(addr);
        let rounds = SOCKETS * ROTATE_AFTER as usize * 2;
        for _ in 0..rounds {
            let mut q = query(&["rotate", "example"]);
            ex.exchange(&mut q, Duration::from_secs(2)).await.unwrap();
        }
        // Retired sockets end once their last waiter is done: wait for that, bounded.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while ex.open_sockets() > SOCKETS && std::time::Instant::now() < deadline {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            ex.open_sockets() <= SOCKETS,
            "{} sockets open after {rounds} queries",
            ex.open_sockets()
        );

        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        let ex = UdpExchange::new(dead);
        let started = std::time::Instant::now();
        let err = ex
            .exchange(&mut query(&["x"]), Duration::from_secs(5))
            .await;
        assert!(matches!(err, Err(ExchangeError::Refused)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
