//! The one owner of `table inet telesink`: a dedicated thread that does every netlink
//! call, one at a time, so nothing on a tokio worker ever blocks on the kernel, and an
//! apply, a shadow update and a counter read can never interleave.
//!
//! It remembers the plan it installed last. A second thread listens to nf_tables change
//! notifications (src/firewall/events.rs); when another process removes or flushes
//! anything of our table, the owner installs that plan again at once, counts it, logs
//! it, and reports the firewall degraded until it is back (health and metrics read
//! `KernelStats`).

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::events::{Tampered, Watcher};
use super::netlink::{self, ClientCount, NetlinkError};
use super::plan::{ElementDiff, Family, Plan, PlanChange, TABLE};

/// Addresses learned by shadow resolution, carried into every full apply with the time
/// they have left, so a restore or a reload never forgets them.
pub trait Learned: Send + Sync {
    fn remaining(&self, set: &str) -> Vec<(u128, Duration)>;
}

/// What the owner tells the rest of the daemon, read without asking it.
#[derive(Default)]
pub struct KernelStats {
    /// Times the table was put back after someone else removed or flushed it.
    pub restores: AtomicU64,
    /// Set when the table is known to be missing or incomplete, cleared once restored.
    pub degraded: AtomicBool,
    /// Times the notification socket overflowed and the table was checked instead.
    pub event_overflows: AtomicU64,
    /// How long the owner worked on the last apply, in microseconds (its queue time is
    /// what a caller waited beyond this).
    pub last_apply_us: AtomicU64,
    /// Times another process committed to nf_tables while the listener was paused for
    /// one of our commits, so the table was checked.
    pub unheard: AtomicU64,
    /// Reads of the per-client counters that failed (the scrape and the ledger then lack
    /// firewall rows), and the last failure: Unix time and why.
    pub counter_read_errors: AtomicU64,
    pub last_counter_error: parking_lot::Mutex<Option<(u64, String)>>,
    /// Accounting sets found full at the last reading (with their size): new client
    /// addresses are still blocked, but not counted per client until room frees.
    pub full_accounting: parking_lot::Mutex<Vec<(String, u32)>>,
}

type Reply<T> = oneshot::Sender<Result<T, NetlinkError>>;

enum Job {
    Apply {
        plan: Arc<Plan>,
        learned: Option<Arc<dyn Learned>>,
        /// Write the whole table even when the installed plan is the same (an admin's
        /// explicit `firewall apply`), instead of only the differences.
        whole: bool,
        reply: Reply<()>,
    },
    Remove {
        reply: Reply<()>,
    },
    /// Whether our table is in the kernel (a read-only dump).
    Exists {
        reply: Reply<bool>,
    },
    Timed {
        set: String,
        family: Family,
        elements: Vec<(IpAddr, Duration)>,
        reply: Reply<()>,
    },
    Elements {
        diffs: Vec<ElementDiff>,
        reply: Reply<()>,
    },
    Accounting {
        sets: Vec<(String, Family)>,
        reply: oneshot::Sender<Vec<Result<Vec<ClientCount>, NetlinkError>>>,
    },
    Tampered(Tampered),
    /// Notifications were lost: compare the table with the plan.
    Verify,
    /// Another process committed while the listener was paused for ours.
    Unheard,
    /// Answered once every job before it is done.
    Drain {
        reply: oneshot::Sender<()>,
    },
}

#[derive(Clone)]
pub struct Kernel {
    jobs: mpsc::Sender<Job>,
    pub stats: Arc<KernelStats>,
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("the firewall thread has stopped")]
    Gone,
}

impl Kernel {
    /// Starts the owner thread. The notification listener starts with the first apply,
    /// so a DNS-only daemon never opens a netlink socket.
    pub fn spawn() -> Kernel {
        Self::spawn_with(true)
    }

    /// The owner without the change listener: only for measuring what the listener
    /// costs (benches/firewall.rs); a table someone else removes is not restored.
    pub fn spawn_without_listener() -> Kernel {
        Self::spawn_with(false)
    }

    fn spawn_with(listen: bool) -> Kernel {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(KernelStats::default());
        let owner = Owner {
            jobs: rx,
            me: tx.clone(),
            stats: stats.clone(),
            installed: None,
            listen,
            events: None,
        };
        let spawned = std::thread::Builder::new()
            .name("telesink-nft".into())
            .spawn(move || owner.run());
        if let Err(e) = spawned {
            error!("cannot start the firewall thread: {e}");
        }
        Kernel { jobs: tx, stats }
    }

    async fn ask<T>(&self, job: impl FnOnce(oneshot::Sender<T>) -> Job) -> Result<T, KernelError> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(job(tx)).map_err(|_| KernelError::Gone)?;
        rx.await.map_err(|_| KernelError::Gone)
    }

    fn ask_blocking<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<T>) -> Job,
    ) -> Result<T, KernelError> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(job(tx)).map_err(|_| KernelError::Gone)?;
        rx.blocking_recv().map_err(|_| KernelError::Gone)
    }

    /// Installs `plan` (learned addresses filled in) in one atomic batch, sending only
    /// what differs from the installed plan.
    pub async fn apply(
        &self,
        plan: Arc<Plan>,
        learned: Option<Arc<dyn Learned>>,
    ) -> Result<(), KernelError> {
        self.install(plan, learned, false).await
    }

    /// Writes the whole table again, whatever the owner believes is installed: what an
    /// admin's `telesink firewall apply` asks of a running daemon.
    pub async fn reinstall(
        &self,
        plan: Arc<Plan>,
        learned: Option<Arc<dyn Learned>>,
    ) -> Result<(), KernelError> {
        self.install(plan, learned, true).await
    }

    async fn install(
        &self,
        plan: Arc<Plan>,
        learned: Option<Arc<dyn Learned>>,
        whole: bool,
    ) -> Result<(), KernelError> {
        Ok(self
            .ask(|reply| Job::Apply {
                plan,
                learned,
                whole,
                reply,
            })
            .await??)
    }

    /// The same, for a caller outside the runtime (`telesink firewall apply`).
    pub fn apply_blocking(&self, plan: Arc<Plan>) -> Result<(), KernelError> {
        Ok(self.ask_blocking(|reply| Job::Apply {
            plan,
            learned: None,
            whole: true,
            reply,
        })??)
    }

    /// Deletes the table if it is there, and stops restoring it.
    pub async fn remove(&self) -> Result<(), KernelError> {
        Ok(self.ask(|reply| Job::Remove { reply }).await??)
    }

    /// Whether `table inet telesink` is in the kernel; reads only.
    pub async fn exists(&self) -> Result<bool, KernelError> {
        Ok(self.ask(|reply| Job::Exists { reply }).await??)
    }

    pub fn remove_blocking(&self) -> Result<(), KernelError> {
        Ok(self.ask_blocking(|reply| Job::Remove { reply })??)
    }

    /// Adds or renews learned addresses with their timeouts.
    pub async fn update_timed(
        &self,
        set: String,
        family: Family,
        elements: Vec<(IpAddr, Duration)>,
    ) -> Result<(), KernelError> {
        Ok(self
            .ask(|reply| Job::Timed {
                set,
                family,
                elements,
                reply,
            })
            .await??)
    }

    /// Adds and removes single elements (shadow resolution taking out an address an
    /// allowed answer showed to be shared).
    pub async fn update_elements(&self, diffs: Vec<ElementDiff>) -> Result<(), KernelError> {
        Ok(self.ask(|reply| Job::Elements { diffs, reply }).await??)
    }

    /// Returns once the owner has done every job sent before: what a measurement waits
    /// for, so that it times the owner idle.
    pub fn drain_blocking(&self) -> Result<(), KernelError> {
        self.ask_blocking(|reply| Job::Drain { reply })
    }

    /// Reads accounting sets; for the scrape, which runs on a blocking thread.
    pub fn accounting_blocking(
        &self,
        sets: Vec<(String, Family)>,
    ) -> Result<Vec<Result<Vec<ClientCount>, NetlinkError>>, KernelError> {
        self.ask_blocking(|reply| Job::Accounting { sets, reply })
    }
}

type Installed = (Arc<Plan>, Option<Arc<dyn Learned>>);

struct Owner {
    jobs: mpsc::Receiver<Job>,
    me: mpsc::Sender<Job>,
    stats: Arc<KernelStats>,
    /// The plan in force and the learned addresses that go with it; None: no table.
    installed: Option<Installed>,
    /// Whether to listen for changes by other processes (always, but in a benchmark).
    listen: bool,
    /// The listener's socket once it runs: paused around our own commits.
    events: Option<Arc<std::os::fd::OwnedFd>>,
}

/// Commits touching more elements than this run with the change listener paused.
const QUIET_ABOVE: usize = 10_000;

fn elements_in(diffs: &[ElementDiff]) -> usize {
    diffs.iter().map(|d| d.remove.len() + d.add.len()).sum()
}

/// A restore that failed is tried again after this long.
const RETRY: Duration = Duration::from_secs(1);

impl Owner {
    fn run(mut self) {
        let mut retry_at: Option<Instant> = None;
        loop {
            let job = match retry_at {
                Some(at) => match self
                    .jobs
                    .recv_timeout(at.saturating_duration_since(Instant::now()))
                {
                    Ok(job) => Some(job),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                },
                None => match self.jobs.recv() {
                    Ok(job) => Some(job),
                    Err(_) => return,
                },
            };
            let Some(job) = job else {
                retry_at = self
                    .restore("a failed restore")
                    .err()
                    .map(|_| Instant::now() + RETRY);
                continue;
            };
            match job {
                Job::Apply {
                    plan,
                    learned,
                    whole,
                    reply,
                } => {
                    let started = Instant::now();
                    let change = if whole { None } else { self.change_for(&plan) };
                    let many = change.as_ref().is_none_or(|c| match c {
                        PlanChange::Elements(d) | PlanChange::Rules { diffs: d, .. } => {
                            elements_in(d) > QUIET_ABOVE
                        }
                        PlanChange::Nothing => false,
                        PlanChange::Structure => true,
                    });
                    let result = self.quietly(many, || {
                        Self::install_change(&plan, change, learned.as_deref())
                    });
                    if result.is_ok() {
                        self.installed = Some((plan, learned));
                        self.stats.degraded.store(false, Ordering::Relaxed);
                        retry_at = None;
                        self.watch();
                    }
                    self.stats
                        .last_apply_us
                        .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    let _ = reply.send(result);
                }
                Job::Remove { reply } => {
                    self.installed = None;
                    self.stats.degraded.store(false, Ordering::Relaxed);
                    retry_at = None;
                    let _ = reply.send(self.quietly(true, netlink::remove));
                }
                Job::Drain { reply } => {
                    let _ = reply.send(());
                }
                Job::Exists { reply } => {
                    let _ = reply.send(netlink::table_exists());
                }
                Job::Timed {
                    set,
                    family,
                    elements,
                    reply,
                } => {
                    let many = elements.len() > QUIET_ABOVE;
                    let _ = reply.send(
                        self.quietly(many, || netlink::update_timed(&set, family, &elements)),
                    );
                }
                Job::Elements { diffs, reply } => {
                    let many = elements_in(&diffs) > QUIET_ABOVE;
                    let _ = reply.send(self.quietly(many, || netlink::update_elements(&diffs)));
                }
                Job::Accounting { sets, reply } => {
                    let counts: Vec<_> = sets
                        .iter()
                        .map(|(s, f)| netlink::read_accounting(s, *f))
                        .collect();
                    self.note_full(&sets, &counts);
                    if let Some(e) = counts.iter().find_map(|c| c.as_ref().err()) {
                        self.stats
                            .counter_read_errors
                            .fetch_add(1, Ordering::Relaxed);
                        *self.stats.last_counter_error.lock() =
                            Some((crate::clock::unix_now(), e.to_string()));
                        warn!("firewall counters could not be read: {e}");
                    }
                    let _ = reply.send(counts);
                }
                Job::Tampered(t) => {
                    if self.installed.is_none() {
                        continue;
                    }
                    let why = format!("process {} removed {} of it", t.pid, t.what);
                    retry_at = self.restore(&why).err().map(|_| Instant::now() + RETRY);
                }
                Job::Verify => {
                    let Some((plan, _)) = &self.installed else {
                        continue;
                    };
                    if !matches_plan(plan) {
                        retry_at = self
                            .restore("lost notifications and a table that differs")
                            .err()
                            .map(|_| Instant::now() + RETRY);
                    }
                }
                Job::Unheard => {
                    let Some((plan, _)) = &self.installed else {
                        continue;
                    };
                    self.stats.unheard.fetch_add(1, Ordering::Relaxed);
                    if !matches_plan(plan) {
                        retry_at = self
                            .restore("another process changed nf_tables while telesink committed, unheard")
                            .err()
                            .map(|_| Instant::now() + RETRY);
                    }
                }
            }
        }
    }

    /// Records which of the accounting sets just read are full, by their size in the
    /// installed plan; logged when a set becomes full.
    fn note_full(
        &self,
        sets: &[(String, Family)],
        counts: &[Result<Vec<ClientCount>, NetlinkError>],
    ) {
        let Some((plan, _)) = &self.installed else {
            return;
        };
        let mut full = self.stats.full_accounting.lock();
        for ((name, _), read) in sets.iter().zip(counts) {
            let Ok(read) = read else {
                continue;
            };
            let size = plan
                .sets
                .iter()
                .find_map(|s| match (&s.name == name, &s.kind) {
                    (true, super::plan::SetKind::Accounting { size, .. }) => Some(*size),
                    _ => None,
                });
            let Some(size) = size else {
                continue;
            };
            let was = full.iter().position(|(n, _)| n == name);
            match (read.len() >= size as usize, was) {
                (true, None) => {
                    warn!(
                        set = name,
                        size,
                        "firewall accounting set is full: new client addresses are blocked but not counted per client (raise firewall.accounting_clients, or lower accounting_idle_secs)"
                    );
                    full.push((name.clone(), size));
                }
                (false, Some(i)) => {
                    full.swap_remove(i);
                }
                _ => {}
            }
        }
    }

    /// Runs one commit of ours, with the change listener paused when it touches many
    /// elements (`many`). A listener on NFNLGRP_NFTABLES makes the kernel describe every
    /// element a commit touches to it, which tripled a whole write of 100k ranges and
    /// kept the owner busy for seconds (docs/BENCHMARKS.md); our own commits need no
    /// describing. Small commits (a toggle's rules, a few elements, learned addresses)
    /// stay heard: their notifications cost little and the listener tells them apart by
    /// thread id. A commit by anyone else while we are deaf moves the ruleset's generation
    /// by more than our one commit: then the table is checked (`Job::Unheard`), as after
    /// lost notifications, and written again if it is not whole. Not a blind rewrite:
    /// another process committing often (a container runtime) would otherwise make every
    /// big commit of ours a second one.
    fn quietly<T>(
        &self,
        many: bool,
        f: impl FnOnce() -> Result<T, NetlinkError>,
    ) -> Result<T, NetlinkError> {
        let Some(events) = self.events.as_ref().filter(|_| many) else {
            return f();
        };
        let before = super::events::generation();
        let paused = listen_to_changes(events, false).is_ok();
        let result = f();
        if paused && let Err(e) = listen_to_changes(events, true) {
            error!(
                "cannot listen to nftables changes again ({e}); a flushed table is not restored"
            );
        }
        let after = super::events::generation();
        match (before, after) {
            // Ours is at most one commit (a refused batch commits nothing).
            (Ok(b), Ok(a)) if a.wrapping_sub(b) > 1 => {
                info!(
                    before = b,
                    after = a,
                    "nftables: commits by another process while telesink committed; checking the table"
                );
                let _ = self.me.send(Job::Unheard);
            }
            (Ok(_), Ok(_)) => {}
            (Err(e), _) | (_, Err(e)) => {
                warn!("nftables generation unreadable ({e}); checking the table");
                let _ = self.me.send(Job::Verify);
            }
        }
        result
    }

    /// What installing `plan` over the installed one takes: None for a whole write (no
    /// table yet, or a set changed kind).
    fn change_for(&self, plan: &Plan) -> Option<PlanChange> {
        let (old, _) = self.installed.as_ref()?;
        match plan.change_from(old) {
            PlanChange::Structure => None,
            change => Some(change),
        }
    }

    /// Installs `plan` with the least the kernel must do (`change`, from `change_for`):
    /// nothing when the plans are the same, element changes when only interval sets
    /// differ, the rules with the sets kept when rules differ, a whole write otherwise
    /// (and when the kernel refuses the element changes).
    fn install_change(
        plan: &Plan,
        change: Option<PlanChange>,
        learned: Option<&dyn Learned>,
    ) -> Result<(), NetlinkError> {
        match change {
            None => install(plan, learned),
            Some(PlanChange::Nothing) => {
                info!("firewall unchanged: nothing sent to the kernel");
                Ok(())
            }
            Some(PlanChange::Elements(diffs)) => match netlink::update_elements(&diffs) {
                Ok(()) => {
                    let (removed, added) = diffs
                        .iter()
                        .fold((0, 0), |(r, a), d| (r + d.remove.len(), a + d.add.len()));
                    info!(
                        sets = diffs.len(),
                        removed, added, "firewall: only set elements changed"
                    );
                    Ok(())
                }
                Err(e) => {
                    warn!("firewall: element changes refused ({e}); rewriting the table in place");
                    install(plan, learned)
                }
            },
            Some(PlanChange::Rules { diffs, kept }) => {
                let keep = netlink::Keep {
                    sets: &kept,
                    diffs: &diffs,
                };
                let result = netlink::apply_keeping(plan, &keep);
                if result.is_ok() {
                    info!(
                        kept = kept.len(),
                        elements = elements_in(&diffs),
                        "firewall: rules rewritten, sets kept"
                    );
                }
                result
            }
            Some(PlanChange::Structure) => install(plan, learned),
        }
    }

    /// Puts the installed plan back; logs and counts it.
    fn restore(&mut self, why: &str) -> Result<(), NetlinkError> {
        let Some((plan, learned)) = self.installed.clone() else {
            return Ok(());
        };
        self.stats.degraded.store(true, Ordering::Relaxed);
        let started = Instant::now();
        match self.quietly(true, || install(&plan, learned.as_deref())) {
            Ok(()) => {
                self.stats.restores.fetch_add(1, Ordering::Relaxed);
                self.stats.degraded.store(false, Ordering::Relaxed);
                warn!(
                    ms = started.elapsed().as_millis() as u64,
                    "firewall table inet {TABLE} restored: {why}"
                );
                Ok(())
            }
            Err(e) => {
                error!("firewall table inet {TABLE} could not be restored ({why}): {e}; retrying");
                Err(e)
            }
        }
    }

    /// Starts the notification listener once; without it the table would stay gone.
    fn watch(&mut self) {
        if self.events.is_some() || !self.listen {
            return;
        }
        let socket = match subscribe() {
            Ok(s) => Arc::new(s),
            Err(e) => {
                error!(
                    "cannot listen to nftables changes ({e}): a flushed table is not restored until the next change"
                );
                return;
            }
        };
        let (tx, stats, fd) = (self.me.clone(), self.stats.clone(), socket.clone());
        let spawned = std::thread::Builder::new()
            .name("telesink-nft-events".into())
            .spawn(move || listen(fd, tx, stats));
        match spawned {
            Ok(_) => self.events = Some(socket),
            Err(e) => error!("cannot start the nftables change listener: {e}"),
        }
    }
}

fn install(plan: &Plan, learned: Option<&dyn Learned>) -> Result<(), NetlinkError> {
    match learned {
        Some(l) => {
            let mut filled = plan.clone();
            filled.fill_learned(|set| l.remaining(set));
            netlink::apply(&filled)
        }
        None => netlink::apply(plan),
    }
}

/// Whether the kernel has our table with every set of the plan.
fn matches_plan(plan: &Plan) -> bool {
    match netlink::existing_sets() {
        Ok(names) => plan.sets.iter().all(|s| names.contains(&s.name)),
        Err(_) => false,
    }
}

/// nf_tables' multicast group (`NFNLGRP_NFTABLES`).
const NFNLGRP_NFTABLES: u32 = 7;

fn subscribe() -> nix::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{setsockopt, sockopt};
    let fd = super::events::socket(1 << (NFNLGRP_NFTABLES - 1))?;
    // Our own commits are not heard (`Owner::quietly`), but another process's big one
    // is: room for a burst, and an overflow is handled (a check of the table).
    let _ = setsockopt(&fd, sockopt::RcvBufForce, &(16 << 20));
    Ok(fd)
}

/// Joins or leaves nf_tables' multicast group by binding the socket again to its own
/// port id: the kernel takes a bind's group mask as the new membership.
fn listen_to_changes(fd: &std::os::fd::OwnedFd, on: bool) -> nix::Result<()> {
    use nix::sys::socket::{NetlinkAddr, bind, getsockname};
    let own: NetlinkAddr = getsockname(fd.as_raw_fd())?;
    let groups = if on { 1 << (NFNLGRP_NFTABLES - 1) } else { 0 };
    bind(fd.as_raw_fd(), &NetlinkAddr::new(own.pid(), groups))
}

fn listen(fd: Arc<std::os::fd::OwnedFd>, tx: mpsc::Sender<Job>, stats: Arc<KernelStats>) {
    let mut watcher = Watcher::new(TABLE);
    let mut buf = vec![0u8; 1 << 17];
    loop {
        match nix::sys::socket::recv(
            fd.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::empty(),
        ) {
            Ok(n) => {
                for t in watcher.feed(&buf[..n]) {
                    if is_ours(t.pid) {
                        continue;
                    }
                    info!(
                        pid = t.pid,
                        what = t.what,
                        "nftables: our table was changed by another process"
                    );
                    if tx.send(Job::Tampered(t)).is_err() {
                        return;
                    }
                }
            }
            Err(nix::errno::Errno::ENOBUFS) => {
                stats.event_overflows.fetch_add(1, Ordering::Relaxed);
                warn!("nftables change notifications overflowed; checking the table");
                watcher = Watcher::new(TABLE);
                if tx.send(Job::Verify).is_err() {
                    return;
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                error!("nftables change listener: {e}; stopped");
                return;
            }
        }
    }
}

/// Whether a thread id belongs to this process (the kernel names the thread).
fn is_ours(tid: u32) -> bool {
    std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
}
