//! Facts about the machine telesink runs on.

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
