//! Who the per-client rate limit applies to, and at what rate: compiled with the policy,
//! so `check`, start and reload accept and refuse the same `exempt` entries.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{RateAction, RateLimitConfig};

#[derive(Debug, Clone)]
pub struct RateRules {
    pub enabled: bool,
    pub per_sec: f64,
    pub burst: f64,
    pub action: RateAction,
    pub max_clients: usize,
    /// Never limited; scanned in order (a site exempts a handful of hosts, not thousands).
    exempt: Vec<IpNet>,
}

impl Default for RateRules {
    fn default() -> Self {
        RateRules::new(&RateLimitConfig::default(), Vec::new())
    }
}

impl RateRules {
    pub fn new(c: &RateLimitConfig, exempt: Vec<IpNet>) -> Self {
        RateRules {
            enabled: c.enabled && c.queries_per_sec > 0,
            per_sec: f64::from(c.queries_per_sec),
            burst: f64::from(c.burst.max(1)),
            action: c.action,
            max_clients: c.max_clients.max(16),
            exempt,
        }
    }

    #[inline]
    pub fn exempt(&self, ip: IpAddr) -> bool {
        let ip = super::clients::canonical(ip);
        self.exempt.iter().any(|n| n.contains(&ip))
    }
}

/// One `exempt` entry: an address, a network, or a host named in a group's `hosts`.
/// Err: the hint for the admin.
pub fn exempt_entry(entry: &str, hosts: &[(IpAddr, String)]) -> Result<IpNet, String> {
    if let Ok(net) = entry.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    hosts
        .iter()
        .find(|(_, name)| name == entry)
        .map(|(ip, _)| IpNet::from(*ip))
        .ok_or_else(|| {
            format!(
                "server.rate_limit.exempt: \"{entry}\" is neither an address, a network (192.0.2.0/24) nor a host named in a group's hosts"
            )
        })
}
