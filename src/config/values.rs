//! Parsing the config's address values with messages that say what to write instead:
//! `servers = ["8.8.8.8"]` (no port), `10.0.0.0/33` (prefix too long), `10.0.0.1/8`
//! (host bits set). serde's own errors ("invalid socket address syntax") name neither
//! the value nor the fix; the loader adds file:line.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, de::Error};

/// One `ip:port` (`[v6]:port`); a bare address gets "write ADDR:53".
pub fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    match text.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Err(format!("{text:?} has no port: write \"{ip}:53\"")),
        Ok(IpAddr::V6(ip)) => Err(format!("{text:?} has no port: write \"[{ip}]:53\"")),
        Err(_) => Err(format!(
            "{text:?} is not an address with a port (like \"192.0.2.1:53\" or \"[2001:db8::1]:53\")"
        )),
    }
}

/// One network; an address alone is the network of that one address.
pub fn network(text: &str) -> Result<IpNet, String> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{text:?}: {addr:?} is not an IPv4 or IPv6 address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match prefix {
        None => max,
        Some(p) => p
            .parse::<u8>()
            .map_err(|_| format!("{text:?}: the prefix length {p:?} is not a number"))?,
    };
    if len > max {
        return Err(format!("{text:?}: prefix length {len} > {max}"));
    }
    let net = IpNet::new(ip, len).map_err(|e| format!("{text:?}: {e}"))?;
    if net.network() != ip {
        return Err(format!(
            "{text:?} has host bits set: write \"{}\" (or \"{ip}\" for the one address)",
            net.trunc()
        ));
    }
    Ok(net)
}

/// A list of strings, each parsed by `parse`; the first error, as written by `parse`.
fn each<'de, D: Deserializer<'de>, T>(
    d: D,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|t| parse(t).map_err(D::Error::custom))
        .collect()
}

pub fn socket_addrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    each(d, socket_addr)
}

pub fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    each(d, network)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_quote_the_value_and_say_the_fix() {
        assert_eq!(
            socket_addr("8.8.8.8").unwrap_err(),
            "\"8.8.8.8\" has no port: write \"8.8.8.8:53\""
        );
        assert!(
            socket_addr("2001:db8::1")
                .unwrap_err()
                .contains("[2001:db8::1]:53")
        );
        assert_eq!(
            network("10.0.0.0/33").unwrap_err(),
            "\"10.0.0.0/33\": prefix length 33 > 32"
        );
        assert!(
            network("10.0.0.1/8")
                .unwrap_err()
                .contains("write \"10.0.0.0/8\"")
        );
        assert_eq!(network("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(network("fd00::/8").unwrap().to_string(), "fd00::/8");
        assert!(socket_addr("192.0.2.1:53").is_ok());
    }
}
