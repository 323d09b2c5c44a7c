//! The descriptor budget, derived at start: every socket and file the daemon holds is a
//! descriptor, and running out of them took cache misses down (the upstream sockets
//! could not be opened) while idle TCP clients held the rest. So the soft limit is raised
//! to the hard one, what the daemon needs beside client connections is reserved (upstream
//! sockets, netlink, the evidence ledger, the control plane), and the
//! TCP connection cap is sized from what remains; a configured cap that cannot fit stops
//! the start with the figures and the fix.

use std::fmt;

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use crate::config::Config;

/// The most DNS-over-TCP connections by default, however many descriptors there are:
/// an office LAN's resolvers see tens at a time, and each costs a task and buffers.
const DEFAULT_TCP_MAX: usize = 4096;
/// Stdio, the log, the state and evidence files, the runtime's epoll and eventfds,
/// signal handling, /proc reads, the pseudonym key: a margin rather than a count.
const PROCESS_MARGIN: u64 = 64;
/// Netlink: the firewall owner's socket and its notification socket, with room for one
/// being replaced.
const NETLINK: u64 = 4;
/// The evidence ledger: the SQLite file, its write-ahead log and shared-memory index,
/// and a reader's handle.
const LEDGER: u64 = 4;

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("cannot read the descriptor limit (RLIMIT_NOFILE): {0}")]
    Limit(nix::Error),
    #[error(
        "server.tcp_max_connections = {asked} does not fit the descriptor limit: {budget}; lower tcp_max_connections to at most {room} or raise the limit (LimitNOFILE= in the systemd unit, ulimit -n)"
    )]
    DoesNotFit {
        asked: usize,
        room: u64,
        budget: Budget,
    },
}

#[derive(Debug, Clone)]
pub struct Budget {
    /// The soft limit in force (after raising it).
    pub limit: u64,
    /// The soft limit before, when it was raised.
    pub raised_from: Option<u64>,
    pub reserved: Vec<(&'static str, u64)>,
    /// DNS-over-TCP connections at once, and per client address.
    pub tcp_max: usize,
    pub tcp_per_client: usize,
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "limit {}", self.limit)?;
        if let Some(from) = self.raised_from {
            write!(f, " (raised from {from})")?;
        }
        let parts: Vec<String> = self
            .reserved
            .iter()
            .map(|(what, n)| format!("{what} {n}"))
            .collect();
        write!(
            f,
            ", reserved {} ({}), DNS TCP connections {} ({} per client)",
            self.reserved(),
            parts.join(", "),
            self.tcp_max,
            self.tcp_per_client
        )
    }
}

impl Budget {
    pub fn reserved(&self) -> u64 {
        self.reserved.iter().map(|(_, n)| n).sum()
    }
}

/// Raises the soft limit to the hard limit and derives the budget for `config` with
/// `upstreams` upstream servers.
pub fn derive(c: &Config, upstreams: usize) -> Result<Budget, BudgetError> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(BudgetError::Limit)?;
    let mut raised_from = None;
    let mut limit = soft;
    if hard > soft && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        raised_from = Some(soft);
        limit = hard;
    }
    plan(c, upstreams, limit, raised_from)
}

/// The arithmetic of `derive`, without touching the process.
pub fn plan(
    c: &Config,
    upstreams: usize,
    limit: u64,
    raised_from: Option<u64>,
) -> Result<Budget, BudgetError> {
    let s = &c.server;
    let udp_threads = match s.udp_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    } as u64;
    let listen = s.listen.len() as u64;
    // Per upstream: the UDP sockets, as many again while rotated ones drain, and the
    // connections of the TCP fallback.
    let per_upstream = 2 * crate::dns::exchange::SOCKETS as u64 + 8;
    let mut reserved = vec![
        ("DNS listeners", listen * (udp_threads + 1)),
        ("upstream sockets", upstreams.max(1) as u64 * per_upstream),
        (
            "control socket",
            1 + crate::control::api::MAX_CONNECTIONS as u64,
        ),
        ("netlink", NETLINK),
        ("process", PROCESS_MARGIN),
    ];
    if c.evidence.enabled {
        reserved.push(("evidence ledger", LEDGER));
    }
    if c.metrics.listen.is_some() {
        reserved.push(("metrics", 1 + crate::metrics::MAX_CONNECTIONS as u64));
    }
    let used: u64 = reserved.iter().map(|(_, n)| n).sum();
    let room = limit.saturating_sub(used);
    let mut budget = Budget {
        limit,
        raised_from,
        reserved,
        tcp_max: 0,
        tcp_per_client: s.tcp_max_per_client.max(1),
    };
    match s.tcp_max_connections {
        Some(asked) if asked as u64 > room || asked == 0 => {
            budget.tcp_max = asked;
            Err(BudgetError::DoesNotFit {
                asked,
                room,
                budget,
            })
        }
        Some(asked) => {
            budget.tcp_max = asked;
            Ok(budget)
        }
        None => {
            budget.tcp_max = (room as usize).clamp(1, DEFAULT_TCP_MAX);
            Ok(budget)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tcp_cap_is_what_the_limit_leaves_and_a_cap_that_cannot_fit_is_refused() {
        let mut c: Config = toml::from_str("").unwrap();
        c.server.udp_threads = 2;
        let b = plan(&c, 2, 1024, None).unwrap();
        // 1 listener x 3, 2 upstreams x 40, control 17, netlink 4, process 64, ledger 4.
        assert_eq!(b.reserved(), 3 + 80 + 17 + 4 + 64 + 4);
        assert_eq!(b.tcp_max, 1024 - 172);
        assert_eq!(plan(&c, 2, 1 << 20, None).unwrap().tcp_max, DEFAULT_TCP_MAX);
        c.server.tcp_max_connections = Some(900);
        let e = plan(&c, 2, 1024, None).unwrap_err().to_string();
        assert!(e.contains("tcp_max_connections = 900"), "{e}");
        assert!(e.contains("at most 852"), "{e}");
        assert!(e.contains("LimitNOFILE"), "{e}");
    }
}
