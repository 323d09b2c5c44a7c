//! A small pool of long-lived connections to one encrypted upstream, shared by DoT and
//! DoH: queries take the slots in turn, so under load every slot's connection carries
//! many queries at once; a slot without a live connection opens one (one handshake per
//! slot at a time: the queries that arrive meanwhile wait for it rather than open more);
//! a failed attempt backs off (250 ms doubling to 10 s) so a dead server costs one
//! attempt per backoff, not one per query.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;

use super::stats::{Fail, FailKind, ServerStats};

pub trait Connection: Send + Sync + 'static {
    /// The connection ended (closed by either side, idle, or failed).
    fn closed(&self) -> bool;
}

const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub struct Pool<C> {
    slots: Vec<Slot<C>>,
    next: AtomicUsize,
    backoff: Mutex<Backoff>,
}

struct Slot<C> {
    live: ArcSwapOption<C>,
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Backoff {
    until: Option<Instant>,
    delay: Duration,
    last: Option<Fail>,
}

impl<C: Connection> Pool<C> {
    pub fn new(size: usize) -> Self {
        Pool {
            slots: (0..size.max(1))
                .map(|_| Slot {
                    live: ArcSwapOption::empty(),
                    connecting: tokio::sync::Mutex::new(()),
                })
                .collect(),
            next: AtomicUsize::new(0),
            backoff: Mutex::new(Backoff::default()),
        }
    }

    /// A live connection (and whether it was open already), opening one with `connect`
    /// if the slot whose turn it is has none.
    pub async fn get<F, Fut>(&self, left: Duration, connect: F) -> Result<(Arc<C>, bool), Fail>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Arc<C>, Fail>>,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let slot = &self.slots[i];
        if let Some(c) = live(slot) {
            return Ok((c, true));
        }
        let timeout = || Fail::new(FailKind::Timeout, format!("no connection within {left:?}"));
        let _turn = tokio::time::timeout(left, slot.connecting.lock())
            .await
            .map_err(|_| timeout())?;
        if let Some(c) = live(slot) {
            return Ok((c, true));
        }
        {
            let b = self.backoff.lock();
            if let (Some(until), Some(last)) = (b.until, &b.last)
                && Instant::now() < until
            {
                return Err(Fail::new(
                    FailKind::Backoff,
                    format!(
                        "the last connection attempt failed ({last}); next attempt in {:?}",
                        until - Instant::now()
                    ),
                ));
            }
        }
        let result = match tokio::time::timeout(left, connect()).await {
            Ok(r) => r,
            Err(_) => Err(timeout()),
        };
        let mut b = self.backoff.lock();
        match result {
            Ok(c) => {
                *b = Backoff::default();
                slot.live.store(Some(c.clone()));
                Ok((c, false))
            }
            Err(fail) => {
                b.delay = (b.delay * 2).clamp(BACKOFF_FIRST, BACKOFF_MAX);
                b.until = Some(Instant::now() + b.delay);
                b.last = Some(fail.clone());
                Err(fail)
            }
        }
    }

    /// One exchange: a connection from the pool (`connect` opens one), then `ask` on it
    /// until `left` is spent. A query whose reused connection turns out gone (the server
    /// closed it in between) is asked once more on a fresh one; that reset is counted
    /// although the query goes on, so a server that keeps hanging up shows in the
    /// metrics before it fails anyone.
    pub async fn exchange<T, F, Fut, A, AFut>(
        &self,
        left: Duration,
        stats: &ServerStats,
        connect: F,
        ask: A,
    ) -> Result<(T, Arc<C>), Fail>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Arc<C>, Fail>>,
        A: Fn(Arc<C>, tokio::time::Instant) -> AFut,
        AFut: Future<Output = Result<T, Fail>>,
    {
        let deadline = tokio::time::Instant::now() + left;
        let mut retried = false;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (conn, reused) = self.get(left, &connect).await?;
            if reused {
                stats.reused.inc();
            }
            match ask(conn.clone(), deadline).await {
                Ok(answer) => return Ok((answer, conn)),
                Err(f) if f.kind == FailKind::Reset => {
                    self.drop_conn(&conn);
                    if !reused || retried {
                        return Err(f);
                    }
                    stats.failed(FailKind::Reset);
                    retried = true;
                }
                Err(f) => return Err(f),
            }
        }
    }

    /// Forgets a connection that failed a query, so the next query opens a new one.
    pub fn drop_conn(&self, conn: &Arc<C>) {
        for slot in &self.slots {
            let current = slot.live.load();
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
                slot.live.store(None);
            }
        }
    }
}

fn live<C: Connection>(slot: &Slot<C>) -> Option<Arc<C>> {
    slot.live.load_full().filter(|c| !c.closed())
}

/// When a connection was last used and how long it may sit idle: ours
/// (`idle_timeout_secs`) or the server's edns-tcp-keepalive, whichever is shorter.
pub struct Idle {
    born: Instant,
    last_ms: AtomicU64,
    limit_ms: AtomicU64,
    pub in_flight: AtomicUsize,
}

impl Idle {
    pub fn new(limit: Duration) -> Self {
        Idle {
            born: Instant::now(),
            last_ms: AtomicU64::new(0),
            limit_ms: AtomicU64::new(limit.as_millis() as u64),
            in_flight: AtomicUsize::new(0),
        }
    }

    pub fn touch(&self) {
        self.last_ms
            .store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// The server's keepalive (RFC 7828), when shorter than ours.
    pub fn server_says(&self, limit: Duration) {
        self.limit_ms
            .fetch_min(limit.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn expired(&self) -> bool {
        let now = self.born.elapsed().as_millis() as u64;
        self.in_flight.load(Ordering::Relaxed) == 0
            && now.saturating_sub(self.last_ms.load(Ordering::Relaxed))
                >= self.limit_ms.load(Ordering::Relaxed)
    }

    /// How often a connection looks whether it has been idle long enough.
    pub fn check_every(&self) -> Duration {
        Duration::from_millis((self.limit_ms.load(Ordering::Relaxed) / 4).clamp(50, 5_000))
    }
}
