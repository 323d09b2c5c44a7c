//! Client identity: which group an address belongs to, and whether it may ask at all.

use std::net::IpAddr;

use ipnet::IpNet;

/// Networks sorted most specific first, so the first hit is the longest-prefix match.
/// Sites have tens of groups, not thousands: a scan beats a trie at that size.
#[derive(Debug, Clone, Default)]
pub struct ClientTable {
    nets: Vec<(IpNet, u16)>,
    allowed: Vec<IpNet>,
    /// Host names from the groups' `hosts`, for metric labels; shared between snapshots.
    names: std::sync::Arc<std::collections::HashMap<IpAddr, String>>,
    /// The devices `[[devices]]` names; shared between snapshots.
    pub devices: std::sync::Arc<super::devices::DeviceBook>,
}

impl ClientTable {
    pub fn new(mut nets: Vec<(IpNet, u16)>, allowed: Vec<IpNet>) -> Self {
        nets.sort_by_key(|n| std::cmp::Reverse(n.0.prefix_len()));
        Self {
            nets,
            allowed,
            names: Default::default(),
            devices: Default::default(),
        }
    }

    pub fn with_names(mut self, names: Vec<(IpAddr, String)>) -> Self {
        self.names = std::sync::Arc::new(
            names
                .into_iter()
                .map(|(ip, n)| (canonical(ip), n))
                .collect(),
        );
        self
    }

    pub fn with_devices(mut self, devices: super::devices::DeviceBook) -> Self {
        self.devices = std::sync::Arc::new(devices);
        self
    }

    /// The inventory name of a client address, if a group names it.
    pub fn name_of(&self, ip: IpAddr) -> Option<&str> {
        self.names.get(&canonical(ip)).map(String::as_str)
    }

    /// Group 0 is the default group.
    pub fn group_of(&self, ip: IpAddr) -> u16 {
        let ip = canonical(ip);
        self.nets
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map_or(0, |&(_, g)| g)
    }

    /// The networks configured for a group (none for the default group).
    pub fn nets_of(&self, group: u16) -> impl Iterator<Item = IpNet> + '_ {
        self.nets
            .iter()
            .filter(move |(_, g)| *g == group)
            .map(|(n, _)| *n)
    }

    /// Every network that belongs to some configured group.
    pub fn grouped_nets(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.nets.iter().map(|(n, _)| *n)
    }

    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.allowed.iter().any(|net| net.contains(&ip))
    }
}

/// A v4 client on a dual-stack socket arrives as ::ffff:a.b.c.d; match it as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_network_wins() {
        let t = ClientTable::new(
            vec![
                ("192.0.2.0/24".parse().unwrap(), 1),
                ("192.0.2.7/32".parse().unwrap(), 2),
            ],
            vec!["192.0.2.0/24".parse().unwrap()],
        );
        assert_eq!(t.group_of("192.0.2.7".parse().unwrap()), 2);
        assert_eq!(t.group_of("192.0.2.8".parse().unwrap()), 1);
        assert_eq!(t.group_of("::ffff:192.0.2.7".parse().unwrap()), 2);
        assert_eq!(t.group_of("198.51.100.1".parse().unwrap()), 0);
        assert!(t.is_allowed("192.0.2.200".parse().unwrap()));
        assert!(!t.is_allowed("198.51.100.1".parse().unwrap()));
    }
}
