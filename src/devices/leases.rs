//! DHCP lease files: dnsmasq's (`<expiry> <mac> <ip> <name> <client-id>`) and ISC Kea's
//! memfile CSV (a header line naming the columns). Both are read whole when they change;
//! a line that does not parse is skipped and counted, never fatal (the DHCP server owns
//! the file and may be writing it).

use std::net::IpAddr;
use std::path::Path;

use super::registry::Lease;
use crate::policy::devices::Mac;

/// What one read of a lease file gave.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Read {
    pub leases: Vec<Lease>,
    pub skipped: usize,
    /// "dnsmasq" or "kea".
    pub format: &'static str,
}

/// Files over this size are not read (a lease file of 100,000 leases is ~10 MiB).
pub const MAX_BYTES: u64 = 64 << 20;

pub fn read(path: &Path, now: u64) -> std::io::Result<Read> {
    let len = std::fs::metadata(path)?.len();
    if len > MAX_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{len} bytes, more than the {MAX_BYTES} a lease file may have"),
        ));
    }
    let text = std::fs::read_to_string(path)?;
    Ok(parse(&text, now))
}

pub fn parse(text: &str, now: u64) -> Read {
    let first = text.lines().next().unwrap_or("");
    if first.starts_with("address,") {
        kea(text, now)
    } else {
        dnsmasq(text, now)
    }
}

/// `<expiry> <mac> <ip> <name|*> <client-id|*>`; IPv6 leases (after a `duid` line) carry
/// an IAID where IPv4 ones carry the MAC, and are skipped: the neighbour table knows
/// those addresses.
fn dnsmasq(text: &str, now: u64) -> Read {
    let mut out = Read {
        format: "dnsmasq",
        ..Read::default()
    };
    let mut v6 = false;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() == Some(&"duid") {
            v6 = true;
            continue;
        }
        if v6 {
            continue;
        }
        let parsed = (|| {
            let expiry: u64 = f.first()?.parse().ok()?;
            let mac = Mac::parse(f.get(1)?)?;
            let ip: IpAddr = f.get(2)?.parse().ok()?;
            let name = f.get(3).filter(|n| **n != "*").map(|n| (*n).to_owned());
            // Expiry 0 is an infinite lease.
            let valid = expiry == 0 || expiry > now;
            Some(Lease {
                mac,
                ip: valid.then_some(ip),
                name,
            })
        })();
        match parsed {
            Some(l) => out.leases.push(l),
            None => out.skipped += 1,
        }
    }
    out
}

/// Kea's memfile: columns by the header (v4 and v6 files differ); a lease updated later
/// is appended again, so the last line of an address wins. `state` 0 is a valid lease.
fn kea(text: &str, now: u64) -> Read {
    let mut out = Read {
        format: "kea",
        ..Read::default()
    };
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let (Some(address), Some(hwaddr)) = (col("address"), col("hwaddr")) else {
        out.skipped = text.lines().count();
        return out;
    };
    let (hostname, expire, state) = (col("hostname"), col("expire"), col("state"));
    let mut last: std::collections::HashMap<IpAddr, Lease> = Default::default();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let parsed = (|| {
            let ip: IpAddr = f.get(address)?.trim().parse().ok()?;
            let mac = f.get(hwaddr).and_then(|m| Mac::parse(m));
            let valid = state.and_then(|i| f.get(i)).is_none_or(|s| s.trim() == "0")
                && expire
                    .and_then(|i| f.get(i))
                    .and_then(|e| e.trim().parse::<u64>().ok())
                    .is_none_or(|e| e > now);
            let name = hostname
                .and_then(|i| f.get(i))
                .map(|n| n.trim().trim_end_matches('.').to_owned())
                .filter(|n| !n.is_empty());
            Some((ip, mac, valid, name))
        })();
        match parsed {
            // A v6 lease without a hardware address names nothing.
            Some((_, None, _, _)) => {}
            Some((ip, Some(mac), valid, name)) => {
                last.insert(
                    ip,
                    Lease {
                        mac,
                        ip: valid.then_some(ip),
                        name,
                    },
                );
            }
            None => out.skipped += 1,
        }
    }
    out.leases = last.into_values().collect();
    out.leases.sort_by_key(|l| l.mac);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsmasq_leases_name_macs_and_expire() {
        let text = "2000 02:00:00:00:00:01 192.0.2.10 laptop-1 01:02:00:00:00:00:01\n\
                    0 02:00:00:00:00:02 192.0.2.11 * *\n\
                    500 02:00:00:00:00:03 192.0.2.12 old *\n\
                    garbage line\n\
                    duid 00:01:00:01:2c:2f:00:00:02:00:00:00:00:01\n\
                    2000 12345 2001:db8::10 laptop-1 00:01:00:01\n";
        let r = parse(text, 1000);
        assert_eq!(r.format, "dnsmasq");
        assert_eq!(r.skipped, 1);
        assert_eq!(r.leases.len(), 3);
        assert_eq!(r.leases[0].name.as_deref(), Some("laptop-1"));
        assert_eq!(r.leases[0].ip, Some("192.0.2.10".parse().unwrap()));
        assert_eq!(r.leases[1].name, None);
        assert_eq!(r.leases[1].ip, Some("192.0.2.11".parse().unwrap()));
        // Expired: the name stays known, the address no longer says who.
        assert_eq!(r.leases[2].ip, None);
        assert_eq!(r.leases[2].name.as_deref(), Some("old"));
    }

    #[test]
    fn kea_memfile_last_line_of_an_address_wins() {
        let text = "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context,pool_id\n\
                    192.0.2.20,02:00:00:00:00:05,,3600,2000,1,0,0,printer-2.,0,,0\n\
                    192.0.2.21,02:00:00:00:00:06,,3600,2000,1,0,0,desk,0,,0\n\
                    192.0.2.21,02:00:00:00:00:06,,3600,2000,1,0,0,desk,2,,0\n\
                    not,a,lease\n";
        let r = parse(text, 1000);
        assert_eq!(r.format, "kea");
        assert_eq!(r.skipped, 1);
        assert_eq!(r.leases.len(), 2);
        assert_eq!(r.leases[0].name.as_deref(), Some("printer-2"));
        assert_eq!(r.leases[0].ip, Some("192.0.2.20".parse().unwrap()));
        // Reclaimed (state 2) by its last line.
        assert_eq!(r.leases[1].ip, None);
    }
}
