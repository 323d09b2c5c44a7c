//! Which device an address is: the kernel's neighbour entries and the DHCP leases, kept
//! by recency. An address stays its device's after the kernel forgets the entry (an idle
//! laptop's entry goes within minutes, its address does not), until another MAC claims
//! it or nobody has seen it for `forget_after_secs`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::policy::devices::Mac;

#[derive(Debug, Clone, Copy)]
struct Seen {
    mac: Mac,
    last: u64,
}

/// One lease: a MAC, the address it holds (while the lease is valid) and the host name
/// the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub mac: Mac,
    pub ip: Option<IpAddr>,
    pub name: Option<String>,
}

#[derive(Default)]
struct Inner {
    neighbours: HashMap<IpAddr, Seen>,
    /// Valid leases' addresses, file by file (a lease file is replaced whole).
    leased: HashMap<std::path::PathBuf, Vec<Lease>>,
    lease_ip: HashMap<IpAddr, Mac>,
    lease_name: HashMap<Mac, Arc<str>>,
}

pub struct Registry {
    inner: Mutex<Inner>,
    max_addresses: AtomicU64,
    forget_after: AtomicU64,
    /// New addresses not taken because `max_addresses` were known and active.
    pub addresses_dropped: AtomicU64,
    /// Addresses forgotten because nobody saw them for `forget_after_secs`.
    pub addresses_forgotten: AtomicU64,
    last_drop_logged: AtomicU64,
}

impl Registry {
    pub fn new(max_addresses: usize, forget_after_secs: u64) -> Self {
        Self {
            inner: Mutex::default(),
            max_addresses: AtomicU64::new(max_addresses as u64),
            forget_after: AtomicU64::new(forget_after_secs),
            addresses_dropped: AtomicU64::new(0),
            addresses_forgotten: AtomicU64::new(0),
            last_drop_logged: AtomicU64::new(0),
        }
    }

    /// A reload's numbers; the next `expire` applies them.
    pub fn set_bounds(&self, max_addresses: usize, forget_after_secs: u64) {
        self.max_addresses
            .store(max_addresses as u64, Ordering::Relaxed);
        self.forget_after
            .store(forget_after_secs, Ordering::Relaxed);
    }

    pub fn forget_after(&self) -> u64 {
        self.forget_after.load(Ordering::Relaxed)
    }

    /// A neighbour entry with a link-layer address: `ip` is `mac`'s, seen `now`.
    pub fn neighbour(&self, ip: IpAddr, mac: Mac, now: u64) {
        let ip = crate::policy::canonical_ip(ip);
        let mut inner = self.inner.lock();
        if let Some(seen) = inner.neighbours.get_mut(&ip) {
            *seen = Seen { mac, last: now };
            return;
        }
        let max = self.max_addresses.load(Ordering::Relaxed) as usize;
        if inner.neighbours.len() >= max {
            self.expire_locked(&mut inner, now);
        }
        if inner.neighbours.len() >= max {
            drop(inner);
            self.addresses_dropped.fetch_add(1, Ordering::Relaxed);
            if now.saturating_sub(self.last_drop_logged.swap(now, Ordering::Relaxed)) >= 60 {
                tracing::warn!(
                    "device identity: {max} addresses seen within forget_after_secs are known; {ip} counts as itself (raise [identity] max_addresses)"
                );
            }
            return;
        }
        inner.neighbours.insert(ip, Seen { mac, last: now });
    }

    /// The leases of one file, replacing what it said before. Host names are checked
    /// here (a client chooses its own): letters, digits, '.', '-' and '_', at most 63.
    /// A name two MACs share gets the MAC's last three bytes, so two phones both called
    /// "iPhone" keep two labels.
    pub fn leases(&self, file: &std::path::Path, leases: Vec<Lease>) {
        let mut inner = self.inner.lock();
        inner.leased.insert(file.to_owned(), leases);
        let mut lease_ip = HashMap::new();
        let mut names: HashMap<Mac, String> = HashMap::new();
        for l in inner.leased.values().flatten() {
            if let Some(ip) = l.ip {
                lease_ip.insert(crate::policy::canonical_ip(ip), l.mac);
            }
            if let Some(n) = l.name.as_deref().filter(|n| plain_name(n)) {
                names.insert(l.mac, n.to_owned());
            }
        }
        let mut uses: HashMap<&str, usize> = HashMap::new();
        for n in names.values() {
            *uses.entry(n.as_str()).or_default() += 1;
        }
        let lease_name = names
            .iter()
            .map(|(mac, n)| {
                let label = if uses.get(n.as_str()).copied().unwrap_or(0) > 1 {
                    format!("{n}-{:02x}{:02x}{:02x}", mac.0[3], mac.0[4], mac.0[5])
                } else {
                    n.clone()
                };
                (*mac, Arc::from(label))
            })
            .collect();
        inner.lease_ip = lease_ip;
        inner.lease_name = lease_name;
    }

    /// The device an address is, if known; marks it seen.
    pub fn mac_of(&self, ip: IpAddr, now: u64) -> Option<Mac> {
        let ip = crate::policy::canonical_ip(ip);
        let mut inner = self.inner.lock();
        if let Some(seen) = inner.neighbours.get_mut(&ip) {
            seen.last = now;
            return Some(seen.mac);
        }
        inner.lease_ip.get(&ip).copied()
    }

    pub fn lease_name(&self, mac: &Mac) -> Option<Arc<str>> {
        self.inner.lock().lease_name.get(mac).cloned()
    }

    /// Forgets addresses nobody has seen for `forget_after_secs`.
    pub fn expire(&self, now: u64) {
        let mut inner = self.inner.lock();
        self.expire_locked(&mut inner, now);
    }

    fn expire_locked(&self, inner: &mut Inner, now: u64) {
        let keep_after = now.saturating_sub(self.forget_after());
        let before = inner.neighbours.len();
        inner.neighbours.retain(|_, s| s.last >= keep_after);
        let gone = before - inner.neighbours.len();
        self.addresses_forgotten
            .fetch_add(gone as u64, Ordering::Relaxed);
    }

    /// (addresses known from the neighbour table, distinct MACs among them, leases).
    pub fn sizes(&self) -> (usize, usize, usize) {
        let inner = self.inner.lock();
        let macs: std::collections::HashSet<Mac> =
            inner.neighbours.values().map(|s| s.mac).collect();
        (inner.neighbours.len(), macs.len(), inner.lease_ip.len())
    }
}

fn plain_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(last: u8) -> Mac {
        Mac([2, 0, 0, 0, 0, last])
    }

    #[test]
    fn addresses_are_kept_by_recency_and_bounded() {
        let r = Registry::new(2, 100);
        r.neighbour("192.0.2.1".parse().unwrap(), mac(1), 1000);
        r.neighbour("2001:db8::1".parse().unwrap(), mac(1), 1000);
        // Full of active addresses: a third counts as itself, counted.
        r.neighbour("192.0.2.3".parse().unwrap(), mac(3), 1050);
        assert_eq!(r.mac_of("192.0.2.3".parse().unwrap(), 1050), None);
        assert_eq!(r.addresses_dropped.load(Ordering::Relaxed), 1);
        // 2001:db8::1 idle past forget_after: it makes room.
        r.mac_of("192.0.2.1".parse().unwrap(), 1090);
        r.neighbour("192.0.2.3".parse().unwrap(), mac(3), 1150);
        assert_eq!(r.mac_of("192.0.2.3".parse().unwrap(), 1150), Some(mac(3)));
        assert_eq!(
            r.mac_of("::ffff:192.0.2.1".parse().unwrap(), 1150),
            Some(mac(1))
        );
        assert_eq!(r.mac_of("2001:db8::1".parse().unwrap(), 1150), None);
        assert_eq!(r.addresses_forgotten.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn lease_names_are_checked_and_made_unique() {
        let r = Registry::new(10, 100);
        let lease = |m: u8, name: &str| Lease {
            mac: mac(m),
            ip: Some(IpAddr::from([192, 0, 2, m])),
            name: Some(name.to_owned()),
        };
        r.leases(
            std::path::Path::new("/l"),
            vec![
                lease(1, "iPhone"),
                lease(2, "iPhone"),
                lease(3, "desk-7"),
                lease(4, "evil\nname"),
            ],
        );
        assert_eq!(r.lease_name(&mac(1)).as_deref(), Some("iPhone-000001"));
        assert_eq!(r.lease_name(&mac(2)).as_deref(), Some("iPhone-000002"));
        assert_eq!(r.lease_name(&mac(3)).as_deref(), Some("desk-7"));
        assert_eq!(r.lease_name(&mac(4)), None);
        assert_eq!(r.mac_of("192.0.2.4".parse().unwrap(), 0), Some(mac(4)));
    }
}
