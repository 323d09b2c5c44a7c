//! Facts about the machine telesink runs on and the client addresses it serves.

use std::net::IpAddr;

/// Every address configured on this machine's interfaces (loopback included): the
/// gateway's own addresses, which shadow resolution never learns and the rate limit can
/// exempt. Empty when the interfaces cannot be read.
pub fn own_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(ifaces) = nix::ifaddrs::getifaddrs() {
        for iface in ifaces {
            let Some(addr) = iface.address else {
                continue;
            };
            if let Some(v4) = addr.as_sockaddr_in() {
                out.push(IpAddr::V4(v4.ip()));
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                out.push(IpAddr::V6(v6.ip()));
            }
        }
    }
    out
}

/// The shard of a client address among `shards`, for the per-client tables (counts, rate
/// buckets, the evidence aggregate): by its last byte, which varies most between the
/// clients of one LAN.
pub fn client_shard(ip: IpAddr, shards: usize) -> usize {
    match ip {
        IpAddr::V4(a) => a.octets()[3] as usize % shards,
        IpAddr::V6(a) => a.octets()[15] as usize % shards,
    }
}

/// This machine's host name (the gateway's name in reports); "unknown" if unreadable.
pub fn name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|n| n.trim().to_owned())
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Lets a listening socket bind an address this host does not have yet (IP_FREEBIND):
/// the VIP of an HA pair (docs/CLUSTER.md) is bound at start on the backup too, and
/// answered the moment keepalived moves it here, with no restart and no sysctl.
pub fn bind_before_up(socket: &socket2::Socket, addr: std::net::SocketAddr) -> std::io::Result<()> {
    match addr {
        std::net::SocketAddr::V4(_) => socket.set_freebind_v4(true),
        std::net::SocketAddr::V6(_) => socket.set_freebind_v6(true),
    }
}
