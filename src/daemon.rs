//! Running the resolver: build the policy, bind the listeners, serve, reload on SIGHUP,
//! stop on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

pub use crate::apply::Overrides;
use crate::apply::{Applier, ApplyError};
use crate::config::{ConfigError, LoadedConfig};
use crate::dns::{Outcomes, Pipeline};
use crate::snapshot::Snapshot;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("cannot listen on {proto} {addr}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up signal handling: {0}")]
    Signal(std::io::Error),
    #[error("{0} (set control.socket to a folder telesink may write)")]
    Socket(#[from] crate::control::api::SocketError),
    #[error(transparent)]
    Instance(#[from] crate::instance::InstanceError),
    #[error(transparent)]
    Budget(#[from] crate::budget::BudgetError),
}

pub async fn run(config_path: PathBuf, overrides: Overrides) -> Result<(), DaemonError> {
    // Before anything else, and long before `ready`: SIGHUP's default action ends the
    // process, so a reload sent the moment systemd (or a script) sees us up would kill
    // the resolver. A signal that comes during start waits in its stream and is handled
    // by the loop below once serving.
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let cfg = crate::apply::load_config(&config_path, &overrides)?;
    // Before anything holds a descriptor: a budget that cannot fit stops the start here.
    // Every server holds its own sockets: the default upstreams and the forward zones'.
    let upstreams = if cfg.config.upstream.servers.is_empty() {
        crate::dns::upstream::from_resolv_conf(&cfg.config.upstream.resolv_conf, &[]).len()
    } else {
        cfg.config.upstream.servers.len()
    } + cfg
        .config
        .forward
        .iter()
        .map(|f| f.servers.len())
        .sum::<usize>();
    let budget = crate::budget::derive(&cfg.config, upstreams)?;
    info!("descriptor budget: {budget}");
    // One daemon per control socket and state file: a second one must not unlink the
    // first's socket, re-program its table or write its state.
    let (socket_path, socket_explicit) =
        crate::control::socket_path(cfg.config.control.socket.as_deref());
    let state_path = crate::apply::state_file(&cfg).path;
    let _instance = crate::instance::claim(&socket_path, &state_path)?;

    // The first snapshot (config + saved toggles) through the one apply path: the
    // firewall goes in before any listener answers, so a gateway that says it is up
    // already blocks what its policy says.
    crate::clock::test_clock::follow_env();
    let applier = Applier::start(config_path.clone(), overrides.clone(), cfg.clone()).await?;
    // The services the apply path built and owns: the pipeline, the scrape, /health, the
    // control API and the evidence feed read them.
    let services = applier.services.clone();
    services.spawn_tasks();
    // A cluster node reads the site's shared state before it answers (at most
    // `start_wait_secs`): one that comes back must not answer with what changed while it
    // was away. Without the store it serves from its state file, and says so.
    let cluster = match cfg.config.cluster.clone() {
        Some(k) => {
            let cluster = crate::cluster::Cluster::start(applier.clone(), k.clone());
            if let Some(c) = &cluster {
                match c.wait_first_sync().await {
                    true => info!("cluster: the site's shared state is in force"),
                    false => warn!(
                        "cluster: the store did not answer within {} s (cluster.start_wait_secs): serving from the state file's toggles until it does",
                        k.start_wait_secs
                    ),
                }
            }
            // A fleet's gateway sends its ledger's closed days towards the centre.
            if let (Some(c), Some(_), Some(ledger)) = (&cluster, &k.hub, &services.ledger) {
                let sender = crate::fleet::send::Sender {
                    site: k.site.clone(),
                    gateway: k.node_name(),
                    client_labels: match cfg.config.metrics.client_labels {
                        crate::config::ClientLabels::Address => "address".into(),
                        crate::config::ClientLabels::Pseudonym => "pseudonym".into(),
                    },
                    replicas: k.replicas(),
                    settle: std::time::Duration::from_secs(
                        2 * cfg.config.evidence.flush_secs.max(1) + 5,
                    ),
                };
                let (c, ledger, status) = (c.clone(), ledger.clone(), c.status.clone());
                tokio::spawn(async move {
                    let js = c.jetstream().await;
                    crate::fleet::send::run(js, ledger, sender, status).await;
                });
            }
            cluster
        }
        None => None,
    };
    let policy = services.current.clone();
    // The watchdog's last answered self-query (Unix seconds), for /health.
    let watchdog_seen = Arc::new(WatchdogSeen::default());

    let c = &cfg.config;
    let ledger = services.ledger.clone();
    let pipeline = Pipeline {
        policy: policy.clone(),
        cache: services.cache.clone(),
        clients: services.clients.clone(),
        upstream: services.upstream.clone(),
        forward_slots: services.forward_slots.clone(),
        udp_payload_max: c.server.udp_payload_max,
        outcomes: services.outcomes.clone(),
        limiter: services.limiter.clone(),
        evidence: ledger.as_ref().map(|l| l.aggregate.clone()),
        tail: services.tail.clone(),
    };
    let listeners = services.listeners.clone();
    let tcp_slots = listeners.add(crate::slots::Slots::new(
        "dns-tcp",
        budget.tcp_max,
        budget.tcp_per_client,
    ));
    let outcomes = pipeline.outcomes.clone();
    if let Some(addr) = overrides.metrics.or(c.metrics.listen) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Bind {
                proto: "metrics",
                addr,
                source,
            })?;
        info!(
            "metrics listening on {}",
            listener.local_addr().unwrap_or(addr)
        );
        let registry = prometheus::Registry::new();
        if let Err(e) = registry.register(Box::new(crate::metrics::TelesinkCollector::new(
            services.clone(),
        ))) {
            warn!("metrics: {e}");
        }
        let (health_of, watched) = (applier.clone(), watchdog_seen.clone());
        let health: Arc<dyn Fn() -> Result<Vec<String>, String> + Send + Sync> =
            Arc::new(move || health(&health_of, &watched));
        let slots = listeners.add(crate::slots::Slots::new(
            "metrics",
            crate::metrics::MAX_CONNECTIONS,
            crate::metrics::MAX_PER_CLIENT,
        ));
        tokio::spawn(crate::metrics::serve(listener, registry, health, slots));
    }

    let audit = ledger
        .as_ref()
        .map(|l| crate::audit::Audit::new(l.clone(), services.clone()));
    if let Some(a) = &audit {
        let every = Duration::from_secs(c.evidence.flush_secs.max(1));
        tokio::spawn(a.clone().run(every));
    }
    {
        let tail = pipeline.tail.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                tail.idle_check();
            }
        });
    }
    let control = Arc::new(crate::control::Control::new(
        applier.clone(),
        audit.clone(),
        cluster.clone(),
    ));
    tokio::spawn(control.clone().expire_forever());
    {
        // The history starts with what this start put in force.
        let snap = control.current();
        let toggles = crate::apply::describe_toggles(&snap.toggles);
        control.record_change(
            "telesink",
            format!(
                "started (version {}): config {}, generation {}, firewall {}; runtime toggles: {}",
                env!("CARGO_PKG_VERSION"),
                control.config_path().display(),
                snap.generation,
                applier.firewall_state(),
                if toggles.is_empty() {
                    "none".to_owned()
                } else {
                    toggles.join("; ")
                }
            ),
        );
    }
    let control_slots = listeners.add(crate::slots::Slots::new(
        "control",
        crate::control::api::MAX_CONNECTIONS,
        0,
    ));
    let socket = control_socket(
        &socket_path,
        socket_explicit,
        &cfg,
        control.clone(),
        control_slots,
    )?;

    // UDP: telesink's own listener with the replay fast path (src/dns/udp.rs), or, with
    // udp_fast_path = false, hickory-server's. TCP: telesink's own, with bounded
    // connections (src/dns/tcp.rs).
    let udp_threads = match c.server.udp_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let fast = c.server.udp_fast_path.then(|| {
        crate::dns::udp::Udp::new(
            Arc::new(pipeline.clone()),
            tokio::runtime::Handle::current(),
        )
    });
    let tcp_idle = Duration::from_secs(c.server.tcp_idle_timeout_secs.max(1));
    let tcp_server = crate::dns::tcp::Tcp::new(Arc::new(pipeline.clone()), tcp_slots, tcp_idle);
    let mut server = Server::new(pipeline);
    let mut bound = Vec::new();
    // hickory-server serves UDP only with udp_fast_path = false; otherwise it holds
    // nothing and is not shut down (it would warn that it had nothing to wait for).
    let mut hickory_serves = false;
    for &addr in &c.server.listen {
        let ((udp, udp_addr), tcp) = bind_same_port(addr, |at| match &fast {
            Some(f) => {
                let (sockets, at) = crate::dns::udp::Udp::bind(at, udp_threads)?;
                Ok((UdpListener::Fast(f.clone(), sockets), at))
            }
            None => {
                let udp = bind_udp(at)?;
                let at = udp.local_addr()?;
                Ok((UdpListener::Hickory(udp), at))
            }
        })?;
        match udp {
            UdpListener::Fast(f, sockets) => {
                f.serve(sockets).map_err(|source| DaemonError::Bind {
                    proto: "udp",
                    addr: udp_addr,
                    source,
                })?
            }
            UdpListener::Hickory(socket) => {
                server.register_socket(socket);
                hickory_serves = true;
            }
        }
        // Tests and admins read the real ports from these lines (port 0 picks a free one).
        info!("listening on udp {udp_addr}");
        info!("listening on tcp {}", tcp.local_addr().unwrap_or(udp_addr));
        bound.push(udp_addr);
        tokio::spawn(tcp_server.clone().serve(tcp));
    }
    info!("ready");
    let notifier = crate::notify::Notifier::from_env().map(Arc::new);
    // Every status line describes the snapshot in force, not the start-up config.
    let status = || status_line(&policy.load(), &outcomes, &applier);
    if let Some(n) = &notifier {
        n.send(&format!("READY=1\nSTATUS={}", status()));
    }
    if let (Some(n), Some(every), Some(&probe)) =
        (&notifier, crate::notify::watchdog_interval(), bound.first())
    {
        watchdog_seen
            .every_secs
            .store(every.as_secs().max(1), std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(watchdog(n.clone(), every, probe, watchdog_seen.clone()));
    }

    loop {
        tokio::select! {
            _ = hup.recv() => {
                if let Some(n) = &notifier {
                    n.send("RELOADING=1");
                }
                if let Ok(report) = control.reload().await {
                    control.record_change(
                        "SIGHUP",
                        format!("config and lists reloaded: generation {}", report.generation),
                    );
                }
                if let Some(n) = &notifier {
                    n.send(&format!("READY=1\nSTATUS={}", status()));
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!("stopping");
    control.record_change(
        "telesink",
        format!(
            "stopping; the firewall table is {} (on_exit)",
            match (
                services.current.load().firewall_on(),
                &services.current.load().config.config.firewall.on_exit
            ) {
                (false, _) => "off",
                (true, crate::config::OnExit::Keep) => "kept",
                (true, crate::config::OnExit::Remove) => "removed",
            }
        ),
    );
    if let Some(n) = &notifier {
        n.send("STOPPING=1");
    }
    if hickory_serves && let Err(e) = server.shutdown_gracefully().await {
        warn!("shutdown: {e}");
    }
    // What was counted since the last flush goes to the ledger (or its recovery file)
    // before the process ends.
    if let Some(a) = audit {
        let _ = tokio::task::spawn_blocking(move || a.stop()).await;
    }
    // on_exit of the config in force now (a reload may have changed it).
    applier.stop().await;
    if let Some(path) = socket {
        let _ = std::fs::remove_file(path);
    }
    info!("queries: {}", outcomes.summary());
    Ok(())
}

/// When the systemd watchdog last got an answer from our own listener.
#[derive(Default)]
struct WatchdogSeen {
    /// The watchdog's interval; 0 while there is no watchdog (not under systemd).
    every_secs: std::sync::atomic::AtomicU64,
    last_unix: std::sync::atomic::AtomicU64,
}

/// `/health`: 200 only when what the daemon claims is true; otherwise every reason.
/// Ok: up, with notes of what is degraded without being down (200); Err: why not up
/// (503).
fn health(applier: &Applier, watchdog: &WatchdogSeen) -> Result<Vec<String>, String> {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &applier.services;
    let mut why = Vec::new();
    if s.ledger_missing {
        why.push("the evidence ledger could not be opened; nothing is recorded".to_owned());
    }
    why.extend(s.ledger.as_ref().map(|l| l.health()).unwrap_or_default());
    why.extend(s.devices.health(crate::clock::unix_now()));
    if let Some(e) = applier.unsaved() {
        why.push(format!(
            "the toggles in force are not saved ({e}); retrying every 10 s"
        ));
    }
    if !s.upstream.has_servers() {
        why.push("no upstream resolver".to_owned());
    } else if let Some(problem) = s.upstream.reach.problem() {
        why.push(problem);
    }
    let every = watchdog.every_secs.load(Relaxed);
    let last = watchdog.last_unix.load(Relaxed);
    if every > 0 && last > 0 {
        let ago = crate::clock::unix_now().saturating_sub(last);
        if ago > 3 * every {
            why.push(format!(
                "the resolver did not answer its own watchdog query for {ago} s"
            ));
        }
    }
    if applier.firewall_state() != "off"
        && let Some((at, e)) = s.kernel.stats.last_counter_error.lock().clone()
        && crate::clock::unix_now().saturating_sub(at) < 300
    {
        why.push(format!(
            "the firewall's per-client counters could not be read at {} ({e}): rejects are missing from /metrics and the ledger",
            crate::clock::utc_time(at)
        ));
    }
    let full = s.kernel.stats.full_accounting.lock().clone();
    if applier.firewall_state() != "off" && !full.is_empty() {
        let sets: Vec<String> = full
            .iter()
            .map(|(n, size)| format!("{n} ({size})"))
            .collect();
        why.push(format!(
            "firewall accounting sets full: {}: new client addresses are blocked but not counted per client until addresses go idle (raise firewall.accounting_clients, or lower accounting_idle_secs)",
            sets.join(", ")
        ));
    }
    if applier.firewall_state() == "degraded" {
        why.push(format!(
            "firewall table inet {} is missing or incomplete and being restored",
            crate::firewall::plan::TABLE
        ));
    }
    if !why.is_empty() {
        return Err(why.join("; "));
    }
    let mut notes = Vec::new();
    if let Some(c) = &s.cluster
        && !c.is_connected()
    {
        let last = c.last_contact_unix.load(Relaxed);
        notes.push(format!(
            "the cluster store is unreachable{}: enforcing this node's last state; shared changes cannot be made here (--local can)",
            if last > 0 {
                format!(" since {}", crate::clock::utc_time(last))
            } else {
                " (never reached since start)".to_owned()
            }
        ));
    }
    Ok(notes)
}

/// Opens the control socket. Where the config names it, failing is fatal; the default
/// place (/run/telesink) may not be writable for a trial run as a normal user, so there
/// telesink warns and runs without it.
fn control_socket(
    path: &Path,
    explicit: bool,
    cfg: &LoadedConfig,
    control: Arc<crate::control::Control>,
    slots: Arc<crate::slots::Slots>,
) -> Result<Option<PathBuf>, DaemonError> {
    match crate::control::api::bind(path, cfg.config.control.socket_group.as_deref()) {
        Ok(listener) => {
            info!("control socket {}", path.display());
            tokio::spawn(crate::control::api::serve(listener, control, slots));
            Ok(Some(path.to_owned()))
        }
        Err(e) if explicit => Err(e.into()),
        Err(e) => {
            warn!("{e}; running without the control socket (set control.socket)");
            Ok(None)
        }
    }
}

/// One line for `systemctl status`: what is on, how big, which generation.
fn status_line(policy: &Snapshot, outcomes: &Outcomes, applier: &Applier) -> String {
    let on: Vec<&str> = policy
        .profiles
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            policy.listed(*i)
                && policy
                    .groups
                    .first()
                    .is_some_and(|g| g.active & (1 << i) != 0)
        })
        .map(|(_, p)| p.name.as_str())
        .collect();
    format!(
        "policy generation {}: {} names; profiles on: {}; firewall {}; {} clients seen, {} queries ({} blocked)",
        policy.generation,
        policy.total_names(),
        if on.is_empty() {
            "none".to_owned()
        } else {
            on.join(", ")
        },
        applier.firewall_state(),
        outcomes.clients_seen(),
        outcomes.total(),
        outcomes.get(crate::dns::Outcome::Blocked),
    )
}

/// Pings systemd's watchdog only when the resolver really answers: each round sends a
/// query for `resolver.arpa` (answered locally, no upstream needed) to our own listener.
async fn watchdog(
    n: Arc<crate::notify::Notifier>,
    every: Duration,
    listener: SocketAddr,
    seen: Arc<WatchdogSeen>,
) {
    let target = match listener.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], listener.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, listener.port()))
        }
        _ => listener,
    };
    let local: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let mut id: u16 = 0x7e1e;
    loop {
        tokio::time::sleep(every).await;
        id = id.wrapping_add(1);
        let answered = async {
            let sock = UdpSocket::bind(local).await.ok()?;
            sock.send_to(&self_query(id), target).await.ok()?;
            let mut buf = [0u8; 512];
            let n = sock.recv(&mut buf).await.ok()?;
            (n >= 2 && buf[..2] == id.to_be_bytes()).then_some(())
        };
        match tokio::time::timeout(every, answered).await {
            Ok(Some(())) => {
                seen.last_unix.store(
                    crate::clock::unix_now(),
                    std::sync::atomic::Ordering::Relaxed,
                );
                n.send("WATCHDOG=1")
            }
            _ => warn!("watchdog: no answer from our own listener {target}; not pinging systemd"),
        }
    }
}

/// A standard query for resolver.arpa NS.
fn self_query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in ["resolver", "arpa"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 2, 0, 1]);
    q
}

fn socket_for(addr: SocketAddr, ty: Type, proto: Protocol) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        // Separate v4 and v6 listeners on the same port must not collide.
        socket.set_only_v6(true)?;
    }
    crate::host::bind_before_up(&socket, addr)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A UDP listener bound but not yet serving: telesink's fast path or hickory-server's.
enum UdpListener {
    Fast(Arc<crate::dns::udp::Udp>, Vec<std::net::UdpSocket>),
    Hickory(UdpSocket),
}

/// Binds UDP, then TCP on the port UDP got, so a client retrying a truncated answer over
/// TCP finds us even when the config asked for port 0. The port the kernel picks for UDP
/// may be in use for TCP (by any TCP socket, an outgoing connection too), so port 0 gets
/// fresh tries instead of a failed start; a fixed port gets one.
fn bind_same_port<U>(
    addr: SocketAddr,
    mut bind_first: impl FnMut(SocketAddr) -> std::io::Result<(U, SocketAddr)>,
) -> Result<((U, SocketAddr), TcpListener), DaemonError> {
    const TRIES_FOR_PORT_0: usize = 32;
    let tries = if addr.port() == 0 {
        TRIES_FOR_PORT_0
    } else {
        1
    };
    let mut attempt = 1;
    loop {
        // Extra SO_REUSEPORT sockets on the picked port can collide as TCP can.
        let bound = bind_first(addr)
            .map_err(|e| ("udp", addr, e))
            .and_then(|(udp, at)| match bind_tcp(at) {
                Ok(tcp) => Ok(((udp, at), tcp)),
                Err(e) => Err(("tcp", at, e)),
            });
        match bound {
            Ok(bound) => return Ok(bound),
            Err((_, _, e)) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < tries => {
                attempt += 1
            }
            Err((proto, addr, source)) => {
                return Err(DaemonError::Bind {
                    proto,
                    addr,
                    source,
                });
            }
        }
    }
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket_for(addr, Type::DGRAM, Protocol::UDP)?;
    // A burst of queries must not overflow the kernel queue while a core is busy.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket_for(addr, Type::STREAM, Protocol::TCP)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}
