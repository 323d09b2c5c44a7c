//! Connection slots for the small HTTP endpoints (metrics and health, the control
//! socket), so idle connections cannot lock out Prometheus or an admin: a bounded number
//! of connections, and when all are taken, the oldest one that has not yet sent a whole
//! request is closed to make room. A connection that is being answered is never evicted.
//! Together with a short header-read timeout, a client that opens connections and sends
//! nothing only ever pushes out its own earlier ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::task::AbortHandle;

struct Slot {
    id: u64,
    since: Instant,
    /// Set once the connection's request headers are in: it is being answered.
    busy: Arc<AtomicBool>,
    abort: Option<AbortHandle>,
}

pub struct Slots {
    max: usize,
    held: Mutex<Vec<Slot>>,
    next: AtomicU64,
    /// Idle connections closed to make room, and connections refused with every slot busy.
    pub evicted: AtomicU64,
    pub refused: AtomicU64,
}

/// A connection's hold on its slot; dropping it frees the slot.
struct Ticket {
    slots: Arc<Slots>,
    id: u64,
    pub busy: Arc<AtomicBool>,
}

impl Slots {
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max: max.max(1),
            held: Mutex::new(Vec::new()),
            next: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// A slot for a new connection, evicting the oldest idle one when all are taken;
    /// None when every connection is busy being answered.
    fn admit(self: &Arc<Self>) -> Option<Ticket> {
        let mut held = self.held.lock();
        if held.len() >= self.max {
            let oldest = held
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.busy.load(Ordering::Relaxed) && s.abort.is_some())
                .min_by_key(|(_, s)| s.since)
                .map(|(i, _)| i);
            match oldest {
                Some(i) => {
                    let slot = held.swap_remove(i);
                    if let Some(a) = slot.abort {
                        a.abort();
                    }
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let busy = Arc::new(AtomicBool::new(false));
        held.push(Slot {
            id,
            since: Instant::now(),
            busy: busy.clone(),
            abort: None,
        });
        Some(Ticket {
            slots: self.clone(),
            id,
            busy,
        })
    }

    /// Admits a connection and serves it in a task of its own, which the slot can evict
    /// while `busy` (handed to `serve`) is not set; false when every slot is busy.
    pub fn spawn<F>(self: &Arc<Self>, serve: impl FnOnce(Arc<AtomicBool>) -> F) -> bool
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let Some(ticket) = self.admit() else {
            return false;
        };
        let (id, served) = (ticket.id(), serve(ticket.busy.clone()));
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
}

impl Ticket {
    fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.slots.held.lock().retain(|s| s.id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_idle_connection_makes_room_and_busy_ones_never_do() {
        let slots = Slots::new(2);
        let mut tickets = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let t = slots.admit().unwrap();
            let task = tokio::spawn(std::future::pending::<()>());
            slots.attach(t.id(), task.abort_handle());
            tickets.push(t);
            tasks.push(task);
        }
        // Full: the oldest idle one (the first) is closed for the newcomer.
        let third = slots.admit().expect("room made");
        assert_eq!(slots.evicted.load(Ordering::Relaxed), 1);
        assert!(tasks.remove(0).await.unwrap_err().is_cancelled());
        drop(tickets.remove(0));
        // Every connection busy answering: nobody is evicted, the newcomer waits outside.
        tickets[0].busy.store(true, Ordering::Relaxed);
        third.busy.store(true, Ordering::Relaxed);
        assert!(slots.admit().is_none());
        assert_eq!(slots.refused.load(Ordering::Relaxed), 1);
    }
}
