//! The devices the config names (`[[devices]]`): a name for MACs, or for addresses of
//! clients behind a router. Part of the policy, so a reload renames at once.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// A link-layer (Ethernet or Wi-Fi) address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff`, any case.
    pub fn parse(text: &str) -> Option<Mac> {
        let mut out = [0u8; 6];
        let mut parts = text.trim().split([':', '-']);
        for b in &mut out {
            let p = parts.next()?;
            if p.len() != 2 {
                return None;
            }
            *b = u8::from_str_radix(p, 16).ok()?;
        }
        parts.next().is_none().then_some(Mac(out))
    }

    /// Six bytes, or None for anything else (an InfiniBand address, a tunnel's empty one).
    pub fn from_bytes(b: &[u8]) -> Option<Mac> {
        let bytes: [u8; 6] = b.try_into().ok()?;
        (bytes != [0; 6]).then_some(Mac(bytes))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// The names of `[[devices]]`, by MAC and by address (most specific network first).
#[derive(Debug, Clone, Default)]
pub struct DeviceBook {
    by_mac: HashMap<Mac, Arc<str>>,
    by_addr: Vec<(IpNet, Arc<str>)>,
}

impl DeviceBook {
    pub fn new(by_mac: HashMap<Mac, Arc<str>>, mut by_addr: Vec<(IpNet, Arc<str>)>) -> Self {
        by_addr.sort_by_key(|n| std::cmp::Reverse(n.0.prefix_len()));
        Self { by_mac, by_addr }
    }

    pub fn name_of_mac(&self, mac: &Mac) -> Option<&Arc<str>> {
        self.by_mac.get(mac)
    }

    pub fn name_of_addr(&self, ip: IpAddr) -> Option<&Arc<str>> {
        let ip = super::clients::canonical(ip);
        self.by_addr
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, n)| n)
    }

    pub fn len(&self) -> usize {
        self.by_mac.len() + self.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_in_both_spellings_and_nothing_else() {
        let m = Mac::parse("02:00:5E:10:00:01").unwrap();
        assert_eq!(m.to_string(), "02:00:5e:10:00:01");
        assert_eq!(Mac::parse("02-00-5e-10-00-01"), Some(m));
        for bad in [
            "02:00:5e:10:00",
            "02:00:5e:10:00:01:02",
            "2:0:5e:10:0:1",
            "zz:00:5e:10:00:01",
            "",
        ] {
            assert_eq!(Mac::parse(bad), None, "{bad}");
        }
        assert_eq!(Mac::from_bytes(&[0; 6]), None);
        assert_eq!(Mac::from_bytes(&[1, 2, 3]), None);
    }

    #[test]
    fn the_most_specific_address_entry_names() {
        let book = DeviceBook::new(
            HashMap::new(),
            vec![
                ("198.51.100.0/24".parse().unwrap(), "branch".into()),
                ("198.51.100.7/32".parse().unwrap(), "printer".into()),
            ],
        );
        let name = |ip: &str| {
            book.name_of_addr(ip.parse().unwrap())
                .map(|n| n.to_string())
        };
        assert_eq!(name("198.51.100.7").as_deref(), Some("printer"));
        assert_eq!(name("::ffff:198.51.100.8").as_deref(), Some("branch"));
        assert_eq!(name("192.0.2.1"), None);
    }
}
