//! systemd's notification protocol (sd_notify), spoken directly: one datagram per state
//! change to the socket named in NOTIFY_SOCKET. No libsystemd, no unsafe code.
//!
//! What telesink tells systemd, and when (docs/ARCHITECTURE.md):
//! - READY=1 once the policy is compiled, the firewall table programmed (when enabled)
//!   and every listener bound; STATUS= with a one-line summary;
//! - RELOADING=1 when a SIGHUP reload starts, READY=1 when it ends (either way);
//! - WATCHDOG=1 only after a query sent to our own listener came back, so a resolver
//!   that hangs stops the pings and systemd restarts it;
//! - STOPPING=1 on shutdown.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// None when not started by systemd (no NOTIFY_SOCKET).
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let bytes = path.as_encoded_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name).ok()?,
            None => SocketAddr::from_pathname(&path).ok()?,
        };
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notifier { socket, addr })
    }

    /// Sends one notification; failures are logged, never fatal: systemd's absence must
    /// not stop DNS.
    pub fn send(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            tracing::warn!("sd_notify {state:?}: {e}");
        }
    }
}

/// How often to ping, if systemd asked for a watchdog: half the configured interval.
pub fn watchdog_interval() -> Option<Duration> {
    let for_pid = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok());
    if for_pid.is_some_and(|pid| pid != std::process::id()) {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
