//! Connection slots for every listener that holds connections (DNS over TCP, metrics and
//! health, the control socket), so idle connections cannot lock anybody out: a bounded
//! number of connections in all and per client address, and when a bound is reached the
//! connection that has been idle longest (of that client, or of all) is closed to make
//! room. A connection that is being answered is never evicted. Together with short
//! read timeouts, a client that opens connections and sends nothing only ever pushes out
//! its own earlier ones, or the oldest idle ones.
//!
//! Every close that is not the client's own doing is counted by reason, for the metrics
//! (`telesink_connections_closed_total`), so a cap that is hit is never silent.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::task::AbortHandle;

/// Why a connection was closed or refused by us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Every slot was taken: the longest idle connection made room.
    EvictedFull,
    /// The client had its most connections: its own longest idle one made room.
    EvictedClientFull,
    /// Every slot (or every slot of this client) was busy being answered: refused.
    RefusedBusy,
    /// Nothing (or no whole request) arrived within the read timeout.
    IdleTimeout,
    /// accept() failed (e.g. out of descriptors); the listener backed off.
    AcceptFailed,
}

impl Closed {
    pub const ALL: [Closed; 5] = [
        Closed::EvictedFull,
        Closed::EvictedClientFull,
        Closed::RefusedBusy,
        Closed::IdleTimeout,
        Closed::AcceptFailed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Closed::EvictedFull => "evicted_full",
            Closed::EvictedClientFull => "evicted_client_full",
            Closed::RefusedBusy => "refused_busy",
            Closed::IdleTimeout => "idle_timeout",
            Closed::AcceptFailed => "accept_failed",
        }
    }
}

struct Slot {
    id: u64,
    client: Option<IpAddr>,
    /// Milliseconds since `Slots::epoch` of the last activity: the start, then (for DNS)
    /// each whole request. The longest idle connection is the one with the smallest.
    active: Arc<AtomicU64>,
    /// Set while the connection is being answered.
    busy: Arc<AtomicBool>,
    abort: Option<AbortHandle>,
}

pub struct Slots {
    /// The listener's name in the metrics.
    pub name: &'static str,
    max: usize,
    per_client: usize,
    epoch: Instant,
    held: Mutex<Vec<Slot>>,
    next: AtomicU64,
    closed: [AtomicU64; 5],
}

/// What the connection's task gets: it marks itself busy or active through this.
#[derive(Clone)]
pub struct Hold {
    pub busy: Arc<AtomicBool>,
    active: Arc<AtomicU64>,
    epoch: Instant,
}

impl Hold {
    /// A whole request arrived: the connection is no longer the longest idle.
    pub fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.active.store(ms, Ordering::Relaxed);
    }
}

/// A connection's hold on its slot; dropping it frees the slot.
struct Ticket {
    slots: Arc<Slots>,
    id: u64,
    hold: Hold,
}

impl Slots {
    /// `per_client` 0: no bound per client address (a Unix socket has no address).
    pub fn new(name: &'static str, max: usize, per_client: usize) -> Arc<Slots> {
        Arc::new(Slots {
            name,
            max: max.max(1),
            per_client,
            epoch: Instant::now(),
            held: Mutex::new(Vec::new()),
            next: AtomicU64::new(0),
            closed: Default::default(),
        })
    }

    pub fn count(&self, why: Closed) {
        self.closed[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed(&self, why: Closed) -> u64 {
        self.closed[why as usize].load(Ordering::Relaxed)
    }

    pub fn open(&self) -> usize {
        self.held.lock().len()
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for a new connection, evicting the longest idle one (of this client when
    /// the client is at its bound, else of all) when needed; None when every candidate
    /// is busy being answered.
    fn admit(self: &Arc<Self>, client: Option<IpAddr>) -> Option<Ticket> {
        let mut held = self.held.lock();
        let own = |s: &Slot| client.is_some() && s.client == client;
        let client_full =
            self.per_client > 0 && held.iter().filter(|s| own(s)).count() >= self.per_client;
        let full = held.len() >= self.max;
        if client_full || full {
            let reason = if client_full {
                Closed::EvictedClientFull
            } else {
                Closed::EvictedFull
            };
            let oldest = held
                .iter()
                .enumerate()
                .filter(|(_, s)| !client_full || own(s))
                .filter(|(_, s)| !s.busy.load(Ordering::Relaxed) && s.abort.is_some())
                .min_by_key(|(_, s)| s.active.load(Ordering::Relaxed))
                .map(|(i, _)| i);
            let Some(i) = oldest else {
                self.count(Closed::RefusedBusy);
                return None;
            };
            let slot = held.swap_remove(i);
            if let Some(a) = slot.abort {
                a.abort();
            }
            self.count(reason);
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let hold = Hold {
            busy: Arc::new(AtomicBool::new(false)),
            active: Arc::new(AtomicU64::new(0)),
            epoch: self.epoch,
        };
        hold.touch();
        held.push(Slot {
            id,
            client,
            active: hold.active.clone(),
            busy: hold.busy.clone(),
            abort: None,
        });
        Some(Ticket {
            slots: self.clone(),
            id,
            hold,
        })
    }

    /// Admits a connection and serves it in a task of its own, which the slot can evict
    /// while the connection is not busy; false when refused (every candidate busy).
    pub fn spawn<F>(self: &Arc<Self>, client: Option<IpAddr>, serve: impl FnOnce(Hold) -> F) -> bool
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let Some(ticket) = self.admit(client) else {
            return false;
        };
        let (id, served) = (ticket.id, serve(ticket.hold.clone()));
        let task = tokio::spawn(async move {
            served.await;
            drop(ticket);
        });
        self.attach(id, task.abort_handle());
        true
    }

    /// Connects the slot with the task serving it, so it can be evicted.
    fn attach(&self, id: u64, abort: AbortHandle) {
        if let Some(s) = self.held.lock().iter_mut().find(|s| s.id == id) {
            s.abort = Some(abort);
        }
    }

    /// An accept() that failed (typically EMFILE): counted, logged at most once a second
    /// per listener, and the accept loop waits a little instead of spinning on the error.
    pub async fn accept_failed(&self, e: &std::io::Error) {
        static LAST_LOG: AtomicU64 = AtomicU64::new(0);
        self.count(Closed::AcceptFailed);
        let now = crate::clock::unix_now();
        if LAST_LOG.swap(now, Ordering::Relaxed) != now {
            tracing::warn!("{} listener: accept failed ({e}); backing off", self.name);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.slots.held.lock().retain(|s| s.id != self.id);
    }
}

/// The listeners' slots, for the metrics.
#[derive(Clone, Default)]
pub struct Listeners(pub Arc<Mutex<Vec<Arc<Slots>>>>);

impl Listeners {
    pub fn add(&self, slots: Arc<Slots>) -> Arc<Slots> {
        self.0.lock().push(slots.clone());
        slots
    }

    pub fn all(&self) -> Vec<Arc<Slots>> {
        self.0.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(slots: &Arc<Slots>, client: [u8; 4]) -> (Ticket, tokio::task::JoinHandle<()>) {
        let t = slots.admit(Some(IpAddr::from(client))).expect("admitted");
        let task = tokio::spawn(std::future::pending::<()>());
        slots.attach(t.id, task.abort_handle());
        (t, task)
    }

    #[tokio::test]
    async fn the_longest_idle_connection_makes_room_and_busy_ones_never_do() {
        let slots = Slots::new("test", 2, 0);
        let (first, first_task) = hold(&slots, [192, 0, 2, 1]);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let (second, _t2) = hold(&slots, [192, 0, 2, 2]);
        std::thread::sleep(std::time::Duration::from_millis(5));
        // The first one was active last: the second is now the longest idle.
        first.hold.touch();
        let third = slots.admit(None).expect("room made");
        assert_eq!(slots.closed(Closed::EvictedFull), 1);
        assert!(!first_task.is_finished());
        drop(second);
        // Every connection busy answering: nobody is evicted, the newcomer waits outside.
        first.hold.busy.store(true, Ordering::Relaxed);
        third.hold.busy.store(true, Ordering::Relaxed);
        assert!(slots.admit(None).is_none());
        assert_eq!(slots.closed(Closed::RefusedBusy), 1);
    }

    #[tokio::test]
    async fn a_client_at_its_bound_only_pushes_out_its_own_connections() {
        let slots = Slots::new("test", 10, 2);
        let (_other, other_task) = hold(&slots, [192, 0, 2, 9]);
        let (_a, a_task) = hold(&slots, [192, 0, 2, 1]);
        let (_b, _b_task) = hold(&slots, [192, 0, 2, 1]);
        let _c = slots.admit(Some(IpAddr::from([192, 0, 2, 1]))).unwrap();
        assert_eq!(slots.closed(Closed::EvictedClientFull), 1);
        assert!(a_task.await.unwrap_err().is_cancelled());
        assert!(
            !other_task.is_finished(),
            "another client's connection stays"
        );
        assert_eq!(slots.open(), 3);
    }
}
