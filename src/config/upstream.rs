//! How an upstream is written in `[upstream] servers`, `[[forward]] servers` and
//! `--upstream`: `192.0.2.1:53` (clear text, UDP with TCP for truncated answers),
//! `tls://HOST[:853][#NAME]` (DNS over TLS, RFC 7858) and
//! `https://HOST[:443][/PATH][#NAME]` (DNS over HTTPS, RFC 8484). HOST is an address or
//! a name; NAME is the name the certificate must carry (default: HOST). A HOST that is a
//! name needs bootstrap addresses (`[upstream.bootstrap]`), so that reaching the
//! encrypted resolver never needs a clear-text lookup of its own name.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Deserializer, de::Error};

use super::{Config, Encryption};

/// How a DoH query is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DohMethod {
    #[default]
    Post,
    Get,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP, and TCP for a truncated answer: clear text.
    Udp,
    Tls,
    Https,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tls => "tls",
            Transport::Https => "https",
        }
    }

    pub fn encrypted(self) -> bool {
        self != Transport::Udp
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Addr(IpAddr),
    Name(String),
}

/// One upstream as configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerSpec {
    pub transport: Transport,
    pub host: Host,
    pub port: u16,
    /// The name the server's certificate must carry (encrypted transports only).
    pub tls_name: Option<String>,
    /// The DoH path, `/dns-query` unless given.
    pub path: String,
}

impl ServerSpec {
    pub fn udp(addr: SocketAddr) -> Self {
        ServerSpec {
            transport: Transport::Udp,
            host: Host::Addr(addr.ip()),
            port: addr.port(),
            tls_name: None,
            path: String::new(),
        }
    }

    /// The name certificates are checked against: `#NAME`, else the host.
    pub fn cert_name(&self) -> String {
        match (&self.tls_name, &self.host) {
            (Some(n), _) => n.clone(),
            (None, Host::Name(n)) => n.clone(),
            (None, Host::Addr(ip)) => ip.to_string(),
        }
    }

    /// The address when the host is written as one.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self.host {
            Host::Addr(ip) => Some(SocketAddr::new(ip, self.port)),
            Host::Name(_) => None,
        }
    }

    /// The `:authority` of DoH requests.
    pub fn authority(&self) -> String {
        let host = match &self.host {
            Host::Addr(IpAddr::V6(ip)) => format!("[{ip}]"),
            Host::Addr(ip) => ip.to_string(),
            Host::Name(n) => n.clone(),
        };
        if self.port == 443 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for ServerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            Host::Addr(IpAddr::V6(ip)) => format!("[{ip}]"),
            Host::Addr(ip) => ip.to_string(),
            Host::Name(n) => n.clone(),
        };
        match self.transport {
            Transport::Udp => write!(f, "{host}:{}", self.port)?,
            Transport::Tls => write!(f, "tls://{host}:{}", self.port)?,
            Transport::Https => write!(f, "https://{host}:{}{}", self.port, self.path)?,
        }
        if let Some(name) = &self.tls_name {
            write!(f, "#{name}")?;
        }
        Ok(())
    }
}

/// Parses one upstream; the message quotes the value and says what to write.
pub fn parse(text: &str) -> Result<ServerSpec, String> {
    let (transport, rest) = if let Some(r) = text.strip_prefix("tls://") {
        (Transport::Tls, r)
    } else if let Some(r) = text.strip_prefix("https://") {
        (Transport::Https, r)
    } else if text.contains("://") {
        return Err(format!(
            "{text:?}: unknown scheme; write \"192.0.2.1:53\" (clear text), \"tls://192.0.2.1#dns.example\" (DNS over TLS) or \"https://dns.example/dns-query\" (DNS over HTTPS)"
        ));
    } else {
        return super::values::socket_addr(text).map(ServerSpec::udp);
    };
    let (rest, tls_name) = match rest.split_once('#') {
        Some((r, name)) if valid_name(name) => (r, Some(name.to_ascii_lowercase())),
        Some((_, name)) => {
            return Err(format!(
                "{text:?}: {name:?} after # is not a host name (the name the certificate must carry, like dns.example)"
            ));
        }
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if transport == Transport::Tls && !path.is_empty() {
        return Err(format!(
            "{text:?}: DNS over TLS has no path; write \"tls://HOST[:PORT][#NAME]\""
        ));
    }
    let default_port = if transport == Transport::Tls {
        853
    } else {
        443
    };
    let (host, port) = host_port(authority, default_port)
        .ok_or_else(|| format!("{text:?}: {authority:?} is not HOST or HOST:PORT"))?;
    if tls_name.is_none() && matches!(host, Host::Addr(_)) && transport == Transport::Tls {
        // Certificates with an IP address are rare; most DoT servers need the name.
        return Err(format!(
            "{text:?}: say which name the server's certificate carries: \"{text}#dns.example\""
        ));
    }
    Ok(ServerSpec {
        transport,
        host,
        port,
        tls_name,
        path: if transport == Transport::Https && path.is_empty() {
            "/dns-query".to_owned()
        } else {
            path.to_owned()
        },
    })
}

fn host_port(authority: &str, default_port: u16) -> Option<(Host, u16)> {
    if let Some(v6) = authority.strip_prefix('[') {
        let (ip, rest) = v6.split_once(']')?;
        let port = match rest.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if rest.is_empty() => default_port,
            None => return None,
        };
        return Some((Host::Addr(IpAddr::V6(ip.parse().ok()?)), port));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, default_port),
    };
    match host.parse::<IpAddr>() {
        Ok(ip) => Some((Host::Addr(ip), port)),
        Err(_) if valid_name(host) => Some((Host::Name(host.to_ascii_lowercase()), port)),
        Err(_) => None,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// serde: a list of upstreams.
pub fn servers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ServerSpec>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|t| parse(t).map_err(D::Error::custom))
        .collect()
}

/// A `[[forward]]` zone as a lowercase, fully qualified name.
pub fn zone_name(zone: &str) -> Result<hickory_proto::rr::Name, String> {
    let trimmed = zone.trim_end_matches('.');
    if trimmed.is_empty() {
        return Err(
            "the root cannot be a forward zone; set [upstream] servers for everything".to_owned(),
        );
    }
    hickory_proto::rr::Name::from_ascii(format!("{trimmed}."))
        .map(|n| n.to_lowercase())
        .map_err(|e| format!("not a domain name ({e})"))
}

/// An SPKI pin as written: base64 of the SHA-256 of the certificate's
/// SubjectPublicKeyInfo.
pub fn parse_pin(text: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    let fail = || {
        format!(
            "upstream.pins: {text:?} is not the base64 of a SHA-256 digest (44 characters; make it with: openssl x509 -pubkey -noout -in cert.pem | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64)"
        )
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| fail())?;
    bytes.try_into().map_err(|_| fail())
}

/// The CA certificates of `[upstream] ca_file` (PEM).
pub fn read_ca_file(
    path: &std::path::Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let fail = |why: String| {
        format!(
            "upstream.ca_file {}: {why} (a PEM file with the CA certificate(s) that signed the resolver's certificate)",
            path.display()
        )
    };
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no certificate in it".into()));
    }
    Ok(certs)
}

/// What `policy::build` refuses in the upstream settings (each with the fix), for
/// `check`, start and reload alike: (the key to point at, the message).
pub fn problems(c: &Config) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let u = &c.upstream;
    let encrypted: Vec<_> = u
        .servers
        .iter()
        .filter(|s| s.transport.encrypted())
        .collect();
    let strict = u.encryption.unwrap_or(Encryption::Strict) == Encryption::Strict;
    if strict
        && !encrypted.is_empty()
        && let Some(clear) = u.servers.iter().find(|s| !s.transport.encrypted())
    {
        {
            out.push((
                "servers",
                format!(
                    "upstream.servers mixes clear text ({clear}) with encrypted servers under encryption = \"strict\": queries would go out in clear text whenever the encrypted ones fail; remove it, or set encryption = \"opportunistic\""
                ),
            ));
        }
    }
    for spec in u
        .servers
        .iter()
        .chain(c.forward.iter().flat_map(|f| &f.servers))
    {
        if !spec.transport.encrypted() {
            continue;
        }
        if let Host::Name(host) = &spec.host
            && u.bootstrap.get(host).is_none_or(Vec::is_empty)
        {
            out.push((
                "servers",
                format!(
                    "upstream {spec}: {host} is a name and has no bootstrap address; add [upstream.bootstrap] \"{host}\" = [\"ADDRESS\"] (looking it up would need clear-text DNS)"
                ),
            ));
        }
    }
    for pin in u.pins.values().flatten() {
        if let Err(e) = parse_pin(pin) {
            out.push(("pins", e));
        }
    }
    if let Some(path) = &u.ca_file
        && let Err(e) = read_ca_file(path)
    {
        out.push(("ca_file", e));
    }
    if u.trust_ad && encrypted.is_empty() {
        out.push((
            "trust_ad",
            "upstream.trust_ad = true needs encrypted upstreams (tls:// or https://): over clear text anyone on the path can set AD; remove it or encrypt".to_owned(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for f in &c.forward {
        if f.servers.is_empty() {
            out.push((
                "zone",
                format!("[[forward]] zone {:?} has no servers", f.zone.get_ref()),
            ));
        }
        let zone = match zone_name(f.zone.get_ref()) {
            Ok(z) => z,
            Err(why) => {
                out.push((
                    "zone",
                    format!("[[forward]] zone {:?}: {why}", f.zone.get_ref()),
                ));
                continue;
            }
        };
        if !seen.insert(zone) {
            out.push((
                "zone",
                format!(
                    "[[forward]] zone {:?} is listed twice; merge its servers into one entry",
                    f.zone.get_ref()
                ),
            ));
        }
    }
    out
}

/// Not errors: what an admin should know about the upstream settings.
pub fn warnings(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let clear: Vec<String> = c
        .upstream
        .servers
        .iter()
        .filter(|s| !s.transport.encrypted())
        .map(ToString::to_string)
        .collect();
    if c.firewall.enabled && (c.upstream.servers.is_empty() || !clear.is_empty()) {
        let which = if clear.is_empty() {
            "the resolv.conf name servers".to_owned()
        } else {
            clear.join(", ")
        };
        out.push(format!(
            "upstream: every forwarded query goes to {which} in clear text, where the ISP and the path see each name the site asks; for encryption write \"tls://ADDRESS#NAME\" or \"https://NAME/dns-query\" in [upstream] servers (docs/UPSTREAMS.md)"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_parse_and_print_back() {
        for (text, shown) in [
            ("192.0.2.1:53", "192.0.2.1:53"),
            ("[2001:db8::1]:5353", "[2001:db8::1]:5353"),
            (
                "tls://192.0.2.1#dns.example",
                "tls://192.0.2.1:853#dns.example",
            ),
            ("tls://dns.example:8853", "tls://dns.example:8853"),
            ("https://dns.example", "https://dns.example:443/dns-query"),
            (
                "https://[2001:db8::5]:8443/q#Dns.Example",
                "https://[2001:db8::5]:8443/q#dns.example",
            ),
        ] {
            let spec = parse(text).unwrap();
            assert_eq!(spec.to_string(), shown, "{text}");
            assert_eq!(parse(&spec.to_string()).unwrap(), spec);
        }
        assert_eq!(
            parse("https://dns.example:8443/q").unwrap().authority(),
            "dns.example:8443"
        );
    }

    #[test]
    fn mistakes_say_what_to_write() {
        assert!(parse("8.8.8.8").unwrap_err().contains("8.8.8.8:53"));
        assert!(parse("quic://dns.example").unwrap_err().contains("tls://"));
        assert!(
            parse("tls://192.0.2.1")
                .unwrap_err()
                .contains("#dns.example")
        );
        assert!(
            parse("tls://dns.example/x")
                .unwrap_err()
                .contains("no path")
        );
        assert!(parse("tls://dns..example").is_err());
        assert!(parse("tls://192.0.2.1#bad name").is_err());
    }
}
