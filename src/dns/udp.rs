//! The UDP listener, with a fast path for answers that repeat.
//!
//! Most of a gateway's queries ask again what was just asked: the same telemetry name
//! every few seconds (blocked), the same popular names (cache hits). For those, decoding
//! the message, running the pipeline and encoding the answer again is most of the cost
//! (measured: about 13 us of CPU per blocked query through hickory-server, 7.9 us for
//! unbound). So the first answer to a request is kept as bytes, keyed by the client's
//! group and the request's bytes after the ID, and a repeat of that request gets those
//! bytes with its own ID: no decoding, no task, no allocation per query (each batch
//! builds two small vectors of I/O slices for its two system calls).
//!
//! Replayed answers are the pipeline's own answers, so they are right by construction as
//! long as nothing they depend on changed:
//! - the request: every byte but the ID is the key (flags, question case, EDNS);
//! - the client's group: part of the key;
//! - the policy: each kept answer carries the generation it was made under, and any
//!   swap (reload, toggle, timed revert) bumps it, so nothing stale is replayed;
//! - time: a cache hit is kept only until its TTLs would read one second less.
//!
//! Each receive thread keeps its own answers (`Replayer`): a client's socket stays on one
//! thread, and a replay then writes nothing another core reads.
//!
//! A blocked name asked for the first time is answered from the request's bytes
//! (src/dns/direct.rs), byte for byte what the full path would send. Everything else
//! (other first sights, cache misses, errors, refused clients) goes through
//! hickory-server's message types and the full pipeline: polled first on the receive
//! thread; when it waits (on an upstream) it is parked, and the wake that ends its wait
//! runs it on the tokio runtime. The receive loops are plain threads with blocking
//! sockets, one per core, each with its own SO_REUSEPORT socket so the kernel spreads
//! clients over them.

use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use hickory_server::net::NetError;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use parking_lot::Mutex;
use socket2::{Domain, Socket, Type};
use tracing::{error, warn};

use super::kept::KeptTable;
use super::pipeline::{Path, Pipeline, QueryRecord};
use super::ratelimit::Admit;
use crate::snapshot::Snapshot;

/// Kept answers (about 100-500 bytes each) of all receive threads together; each thread
/// keeps its own share, at least `KEPT_PER_THREAD_MIN`.
const KEPT: usize = 32768;
const KEPT_PER_THREAD_MIN: usize = 4096;
/// Datagrams per recvmmsg / sendmmsg.
const BATCH: usize = 32;
/// The largest request we read; larger datagrams are not DNS queries we answer.
const MAX_REQUEST: usize = 4096;

struct Kept {
    bytes: Box<[u8]>,
    reuse: QueryRecord,
    /// Unix second of the last hand-over of `reuse.learn` to shadow resolution: a name
    /// asked a thousand times a second needs re-learning once a second at most.
    learned: u64,
}

/// A receive thread's kept answers: request key -> answer. Its own, not shared: the
/// kernel keeps a client's socket on one receive thread (SO_REUSEPORT hashes the
/// addresses and ports), so its repeats find the answers its first query left here, and
/// a replay writes no cache line another core reads (no lock, no reference count).
pub struct Replayer {
    kept: KeptTable<Kept>,
    key: Box<[u8; MAX_REQUEST + 2]>,
}

impl Replayer {
    /// The share of `threads` receive threads.
    pub fn new(threads: usize) -> Self {
        let per = (KEPT / threads.max(1)).max(KEPT_PER_THREAD_MIN);
        Replayer {
            kept: KeptTable::new(per),
            key: Box::new([0; MAX_REQUEST + 2]),
        }
    }

    /// The fast path: true if a kept answer for this request was written to `out`
    /// (and counted through the pipeline's one record).
    pub fn replay(
        &mut self,
        pipeline: &Pipeline,
        policy: &Snapshot,
        packet: &[u8],
        client: IpAddr,
        out: &mut Vec<u8>,
    ) -> bool {
        if !policy.is_allowed_client(client) {
            return false;
        }
        let n = key_of(policy.group_of(client), packet, &mut self.key);
        let Some(kept) = self.kept.get_mut(&self.key[..n]) else {
            return false;
        };
        let r = &kept.reuse;
        if r.generation != policy.generation || r.until.is_some_and(|u| Instant::now() >= u) {
            return false;
        }
        out.clear();
        out.extend_from_slice(&kept.bytes);
        out[..2].copy_from_slice(&packet[..2]);
        let learn_now = r.learn.is_some() && {
            let now = crate::clock::unix_now();
            std::mem::replace(&mut kept.learned, now) != now
        };
        pipeline.count(client, r, Path::Replay, learn_now);
        true
    }

    /// Keeps an answer for the replay of the same request.
    pub fn keep(&mut self, raw: &[u8], bytes: &[u8], reuse: QueryRecord) {
        let n = key_of(reuse.group, raw, &mut self.key);
        let answer = Kept {
            bytes: bytes.into(),
            learned: crate::clock::unix_now(),
            reuse,
        };
        self.kept.put(&self.key[..n], answer);
    }
}

/// Everything the receive threads share.
pub struct Udp {
    pipeline: Arc<Pipeline>,
    runtime: tokio::runtime::Handle,
}

/// The key: the group, then the request from byte 2 (after the ID) on.
fn key_of(group: u16, packet: &[u8], buf: &mut [u8; MAX_REQUEST + 2]) -> usize {
    let n = packet.len().min(MAX_REQUEST);
    buf[..2].copy_from_slice(&group.to_be_bytes());
    buf[2..n].copy_from_slice(&packet[2..n]);
    n
}

impl Udp {
    pub fn new(pipeline: Arc<Pipeline>, runtime: tokio::runtime::Handle) -> Arc<Self> {
        Arc::new(Self { pipeline, runtime })
    }

    /// Binds `threads` SO_REUSEPORT sockets on `addr`; returns them and the bound
    /// address (the port the kernel chose for port 0). Nothing is received until
    /// `serve`, so the caller can still drop them, e.g. when TCP cannot have that port.
    pub fn bind(addr: SocketAddr, threads: usize) -> std::io::Result<(Vec<UdpSocket>, SocketAddr)> {
        let mut bound = addr;
        let mut sockets = Vec::with_capacity(threads.max(1));
        for i in 0..threads.max(1) {
            let socket = bind_one(bound)?;
            if i == 0 {
                bound = socket.local_addr()?;
            }
            sockets.push(socket);
        }
        Ok((sockets, bound))
    }

    /// A receive thread for each socket from `bind`.
    pub fn serve(self: &Arc<Self>, sockets: Vec<UdpSocket>) -> std::io::Result<()> {
        let threads = sockets.len();
        for (i, socket) in sockets.into_iter().enumerate() {
            let port = socket.local_addr()?.port();
            let socket = Arc::new(socket);
            let me = self.clone();
            std::thread::Builder::new()
                .name(format!("udp-{port}-{i}"))
                .spawn(move || me.receive(socket, Replayer::new(threads)))?;
        }
        Ok(())
    }

    /// One receive thread: up to BATCH datagrams per recvmmsg (blocking for the first,
    /// then whatever is queued), the replays of a batch sent with one sendmmsg. Under load
    /// that is two system calls per batch instead of two per query, which was most of
    /// the remaining cost per query.
    fn receive(self: Arc<Self>, socket: Arc<UdpSocket>, mut kept: Replayer) {
        // In the runtime's context, so the full path can start on this thread (below).
        let _runtime = self.runtime.enter();
        let fd = socket.as_raw_fd();
        let mut bufs = vec![[0u8; MAX_REQUEST]; BATCH];
        let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1500)).collect();
        let mut to: Vec<Option<SockaddrStorage>> = vec![None; BATCH];
        let mut rx = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut tx = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut got: [(usize, Option<SocketAddr>); BATCH] = [(0, None); BATCH];
        loop {
            let n = {
                let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
                    bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
                match recvmmsg(fd, &mut rx, iovs.iter_mut(), MsgFlags::MSG_WAITFORONE, None) {
                    Ok(results) => {
                        let mut n = 0;
                        for (slot, m) in got.iter_mut().zip(results) {
                            // A datagram larger than our buffer is no query we answer.
                            let whole = !m.flags.contains(MsgFlags::MSG_TRUNC);
                            *slot = (m.bytes, m.address.and_then(std_addr).filter(|_| whole));
                            n += 1;
                        }
                        n
                    }
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        warn!(error = %e, "udp receive failed");
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        continue;
                    }
                }
            };
            let mut replies = 0;
            for (&(len, src), buf) in got[..n].iter().zip(&bufs) {
                let Some(src) = src else { continue };
                let packet = &buf[..len.min(MAX_REQUEST)];
                // Shorter than a header, or a response (reflection): no answer, as hickory.
                if len < 12 || packet[2] & 0x80 != 0 || !answerable(src) {
                    continue;
                }
                // The rate limit first: a client over it costs one bucket update.
                let policy = self.pipeline.policy.load();
                match self.pipeline.admit(&policy, src.ip()) {
                    Admit::Yes => {}
                    Admit::Drop => continue,
                    Admit::Refuse => {
                        if let Some(bytes) = refuse_limited(&self.pipeline, packet, src, &socket) {
                            outs[replies] = bytes;
                            to[replies] = Some(SockaddrStorage::from(src));
                            replies += 1;
                        }
                        continue;
                    }
                }
                if kept.replay(
                    &self.pipeline,
                    &policy,
                    packet,
                    src.ip(),
                    &mut outs[replies],
                ) {
                    to[replies] = Some(SockaddrStorage::from(src));
                    replies += 1;
                    continue;
                }
                // A blocked name's first answer, straight from the bytes (src/dns/direct.rs).
                if let Some((bytes, record)) =
                    self.pipeline.answer_direct(&policy, packet, src.ip())
                {
                    self.pipeline.count(src.ip(), &record, Path::Direct, true);
                    kept.keep(packet, &bytes, record);
                    outs[replies] = bytes;
                    to[replies] = Some(SockaddrStorage::from(src));
                    replies += 1;
                    continue;
                }
                // The full path is polled once right here: a blocked name or a cache hit
                // completes in that poll, without a hand-over to another thread (measured:
                // the wakeup and context switch cost more than the pipeline itself). Only
                // what waits on an upstream moves to the runtime, and tokio polls it again
                // at once with a real waker.
                let (me, sock, raw) = (self.clone(), socket.clone(), packet.to_vec());
                let inline = Arc::new(AtomicBool::new(true));
                let mut full = Box::pin(me.full(raw, src, sock, inline.clone()));
                let parked = Arc::new(Parked {
                    state: Mutex::new(ParkState::default()),
                    runtime: self.runtime.clone(),
                });
                let waker = Waker::from(parked.clone());
                let mut cx = Context::from_waker(&waker);
                // A bug in the pipeline must cost one query, not this receive thread (on
                // tokio it would only have ended a task).
                let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    full.as_mut().poll(&mut cx)
                }));
                let Ok(polled) = polled else {
                    error!(client = %src, "query handling panicked; the query is dropped");
                    continue;
                };
                match polled {
                    Poll::Ready(Some((bytes, reuse))) => {
                        if let Some(reuse) = reuse {
                            kept.keep(packet, &bytes, reuse);
                        }
                        outs[replies] = bytes;
                        to[replies] = Some(SockaddrStorage::from(src));
                        replies += 1;
                    }
                    Poll::Ready(None) => {}
                    Poll::Pending => {
                        // From here on the future sends itself. It waits parked, not
                        // spawned: what it waits for (the upstream's answer, a timer)
                        // wakes it on a runtime thread, which then runs it there. A spawn
                        // here would wake an idle runtime thread only to poll it once and
                        // park again: two context switches per cache miss (measured: a
                        // sixth of the core in the mix workload).
                        inline.store(false, Ordering::Release);
                        let socket = socket.clone();
                        // What waited was no cache hit or sinkhole, so nothing to keep.
                        parked.park(Box::pin(async move {
                            if let Some((bytes, _)) = full.await {
                                send_one(&socket, &bytes, src);
                            }
                        }));
                    }
                }
            }
            send_all(fd, &mut tx, &outs[..replies], &to[..replies]);
        }
    }

    /// The full path: hickory's message types and the whole pipeline.
    /// Returns the answer if it was made while `inline` was set and so is not sent yet
    /// (the receive thread sends it with the rest of its batch), with its record when it
    /// may be replayed.
    async fn full(
        self: Arc<Self>,
        raw: Vec<u8>,
        src: SocketAddr,
        socket: Arc<UdpSocket>,
        inline: Arc<AtomicBool>,
    ) -> Option<(Vec<u8>, Option<QueryRecord>)> {
        let handle = Capture {
            socket,
            dst: src,
            sent: Arc::new(Mutex::new(None)),
            inline,
        };
        let sent = handle.sent.clone();
        let reuse = match Request::from_bytes(raw.clone(), src, Protocol::Udp) {
            Ok(request) => self.pipeline.serve(&request, handle).await.1,
            Err(_) => {
                // Counted like every answered query (FORMERR), through the one record.
                if let Some(bytes) = super::wire::form_error(&raw) {
                    handle.deliver(bytes);
                    let record = QueryRecord::new(super::Outcome::FormErr);
                    self.pipeline.count(src.ip(), &record, Path::Full, false);
                }
                None
            }
        };
        let (bytes, delivered) = sent.lock().take()?;
        (!delivered).then_some((bytes, reuse))
    }
}

type Continuation = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Default)]
struct ParkState {
    /// The query's future once the receive thread has let go of it.
    future: Option<Continuation>,
    /// Woken before the future was parked: it is spawned as it is parked.
    woken: bool,
}

/// A query that waits (on an upstream, a timer) after its first poll on the receive
/// thread. Its waker is the one that first poll registered; the first wake spawns the
/// future on the runtime, where it goes on with tokio's own waker.
struct Parked {
    state: Mutex<ParkState>,
    runtime: tokio::runtime::Handle,
}

impl Parked {
    fn park(&self, future: Continuation) {
        let mut state = self.state.lock();
        if state.woken {
            drop(state);
            self.runtime.spawn(future);
        } else {
            state.future = Some(future);
        }
    }
}

impl std::task::Wake for Parked {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let future = {
            let mut state = self.state.lock();
            state.woken = true;
            state.future.take()
        };
        if let Some(future) = future {
            self.runtime.spawn(future);
        }
    }
}

/// REFUSED with EDE 18 for a client over its limit (`action = "refuse"`); its answer is
/// made right here, never kept for replay.
fn refuse_limited(
    pipeline: &Pipeline,
    packet: &[u8],
    src: SocketAddr,
    socket: &Arc<UdpSocket>,
) -> Option<Vec<u8>> {
    let request = Request::from_bytes(packet.to_vec(), src, Protocol::Udp).ok()?;
    let handle = Capture {
        socket: socket.clone(),
        dst: src,
        sent: Arc::new(Mutex::new(None)),
        inline: Arc::new(AtomicBool::new(true)),
    };
    let sent = handle.sent.clone();
    let mut refused = Box::pin(pipeline.refuse_limited(&request, handle));
    // Nothing in it waits: it completes in its first poll.
    let _ = refused
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()));
    drop(refused);
    sent.lock().take().map(|(bytes, _)| bytes)
}

/// An answer's bytes, and whether they went out already.
type Sent = (Vec<u8>, bool);

/// The pipeline's response handler on this listener: sends (or leaves to the batch), and
/// keeps the bytes for the replay.
#[derive(Clone)]
struct Capture {
    socket: Arc<UdpSocket>,
    dst: SocketAddr,
    /// The answer, and whether it went out already.
    sent: Arc<Mutex<Option<Sent>>>,
    /// Set while the receive thread polls: then the answer waits for its batch's
    /// sendmmsg instead of costing a sendto of its own.
    inline: Arc<AtomicBool>,
}

impl Capture {
    fn deliver(&self, bytes: Vec<u8>) {
        let delivered = !self.inline.load(Ordering::Acquire);
        if delivered {
            send_one(&self.socket, &bytes, self.dst);
        }
        *self.sent.lock() = Some((bytes, delivered));
    }
}

fn send_one(socket: &UdpSocket, bytes: &[u8], dst: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, dst) {
        warn!(error = %e, client = %dst, "could not send response");
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let (bytes, info) = super::wire::encode_answer(response, None)?;
        self.deliver(bytes);
        Ok(info)
    }
}

/// Sends a batch of replies with as few sendmmsg calls as the kernel allows.
fn send_all(
    fd: std::os::fd::RawFd,
    tx: &mut MultiHeaders<SockaddrStorage>,
    outs: &[Vec<u8>],
    to: &[Option<SockaddrStorage>],
) {
    let mut done = 0;
    while done < outs.len() {
        let slices: Vec<[IoSlice<'_>; 1]> =
            outs[done..].iter().map(|o| [IoSlice::new(o)]).collect();
        let none: [ControlMessage<'_>; 0] = [];
        match sendmmsg(fd, tx, slices.iter(), &to[done..], none, MsgFlags::empty()) {
            Ok(sent) => {
                let sent = sent.count();
                if sent == 0 {
                    break;
                }
                done += sent;
            }
            Err(Errno::EINTR) => {}
            Err(e) => {
                // One bad destination fails the call: skip it, send the rest.
                warn!(error = %e, "could not send response");
                done += 1;
            }
        }
    }
}

fn std_addr(a: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// hickory-server's rule: never answer port 0, an unspecified or a broadcast address.
fn answerable(src: SocketAddr) -> bool {
    if src.port() == 0 {
        return false;
    }
    match src.ip() {
        IpAddr::V4(a) => !a.is_unspecified() && !a.is_broadcast(),
        IpAddr::V6(a) => !a.is_unspecified(),
    }
}

/// A blocking UDP socket sharing its port with the other receive threads.
fn bind_one(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        // Separate v4 and v6 listeners on the same port must not collide.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    crate::host::bind_before_up(&socket, addr)?;
    // A burst of queries must not overflow the kernel queue while a core is busy.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}
