//! `telesink init`: a first gateway config from the machine's real interfaces, so an
//! admin does not edit five places of the example by hand. It starts from the shipped
//! gateway example (config/gateway.toml) and fills in what it can read: the LAN
//! interface's addresses (listen, metrics), its networks (allowed_clients), the firewall
//! interfaces and where the shipped lists are.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

const EXAMPLE: &str = include_str!("../config/gateway.toml");

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot read the interfaces: {0}")]
    Interfaces(nix::Error),
    #[error(
        "interface {0} has no IPv4 or global IPv6 address (ip addr show {0}); give the LAN interface"
    )]
    NoAddress(String),
    #[error("interface {0} does not exist{1}")]
    NoInterface(String, String),
    #[error(
        "--lan and --wan are both {0}: the LAN is where clients are, the WAN where traffic leaves; give two interfaces (or no --wan: traffic is filtered whichever way it leaves)"
    )]
    SameInterface(String),
    #[error("{0} exists; not overwriting it (--force replaces it)")]
    Exists(PathBuf),
    #[error("the example config changed shape: {0:?} not found (a telesink bug)")]
    Template(&'static str),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An Active Directory site: its AD DNS domains and the domain controllers' addresses.
#[derive(Debug, Clone, Default)]
pub struct ActiveDirectory {
    pub domains: Vec<String>,
    pub dcs: Vec<IpAddr>,
}

/// What `init` chose, for the admin to read.
pub struct Chosen {
    pub listen: Vec<String>,
    pub networks: Vec<String>,
    pub metrics: String,
    pub lists_dir: PathBuf,
    /// The zones forwarded to the domain controllers.
    pub forwarded: Vec<String>,
    pub text: String,
}

/// An interface's addresses with their prefix lengths; IPv6 link-local ones left out
/// (clients do not use them as their resolver).
fn addresses(iface: &str) -> Result<Vec<(IpAddr, u8)>, InitError> {
    let mut out = Vec::new();
    for a in nix::ifaddrs::getifaddrs().map_err(InitError::Interfaces)? {
        if a.interface_name != iface {
            continue;
        }
        let (Some(addr), Some(mask)) = (a.address, a.netmask) else {
            continue;
        };
        if let (Some(ip), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            out.push((IpAddr::V4(ip.ip()), u32::from(m.ip()).count_ones() as u8));
        } else if let (Some(ip), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            let v6 = ip.ip();
            if (v6.segments()[0] & 0xffc0) != 0xfe80 {
                out.push((IpAddr::V6(v6), u128::from(m.ip()).count_ones() as u8));
            }
        }
    }
    Ok(out)
}

/// Where the shipped lists are, next to this binary: installed, or in the repository.
fn shipped_lists() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let candidates = [
        exe.parent()
            .and_then(Path::parent)
            .map(|p| p.join("share/telesink/blocklists")),
        exe.parent()
            .and_then(Path::parent)
            .and_then(Path::parent)
            .map(|p| p.join("blocklists")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("office-telemetry.domains").exists())
        .unwrap_or_else(|| PathBuf::from("/usr/share/telesink/blocklists"))
}

fn replace(text: &str, from: &'static str, to: &str) -> Result<String, InitError> {
    if !text.contains(from) {
        return Err(InitError::Template(from));
    }
    Ok(text.replacen(from, to, 1))
}

/// The interfaces this machine has, as `ip link` names them.
fn interfaces() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn check_interface(name: &str) -> Result<(), InitError> {
    let all = interfaces();
    if all.iter().any(|n| n == name) {
        return Ok(());
    }
    Err(InitError::NoInterface(
        name.to_owned(),
        crate::suggest::choices(name, "ip link shows", &all),
    ))
}

pub fn config_for(lan: &str, wan: Option<&str>, ad: &ActiveDirectory) -> Result<Chosen, InitError> {
    if wan == Some(lan) {
        return Err(InitError::SameInterface(lan.to_owned()));
    }
    check_interface(lan)?;
    if let Some(w) = wan {
        check_interface(w)?;
    }
    let addrs = addresses(lan)?;
    if addrs.is_empty() {
        return Err(InitError::NoAddress(lan.to_owned()));
    }
    let listen: Vec<String> = addrs
        .iter()
        .map(|(ip, _)| match ip {
            IpAddr::V4(a) => format!("{a}:53"),
            IpAddr::V6(a) => format!("[{a}]:53"),
        })
        .collect();
    let mut networks = vec!["127.0.0.0/8".to_owned(), "::1/128".to_owned()];
    for (ip, len) in &addrs {
        if let Ok(net) = ipnet::IpNet::new(*ip, *len) {
            let net = net.trunc().to_string();
            if !networks.contains(&net) {
                networks.push(net);
            }
        }
    }
    let metrics = match addrs.iter().find(|(ip, _)| ip.is_ipv4()).or(addrs.first()) {
        Some((IpAddr::V4(a), _)) => format!("{a}:9153"),
        Some((IpAddr::V6(a), _)) => format!("[{a}]:9153"),
        None => "127.0.0.1:9153".to_owned(),
    };
    let lists_dir = shipped_lists();
    let quoted = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // The example's own header (lan0/wan0, "cp ...") is about the example: init's file
    // starts with what init did.
    let body_at = EXAMPLE
        .find("[server]")
        .ok_or(InitError::Template("[server]"))?;
    let mut text = EXAMPLE[body_at..].to_owned();
    text = replace(
        &text,
        "listen = [\"192.168.1.1:53\", \"[fd00::1]:53\"]",
        &format!("listen = [{}]", quoted(&listen)),
    )?;
    text = replace(
        &text,
        "lists_dir = \"../blocklists\"",
        &format!("lists_dir = {:?}", lists_dir.display().to_string()),
    )?;
    text = replace(
        &text,
        "allowed_clients = [\"127.0.0.0/8\", \"::1/128\", \"192.168.1.0/24\", \"fd00::/64\"]",
        &format!("allowed_clients = [{}]", quoted(&networks)),
    )?;
    text = replace(&text, "lan = [\"lan0\"]", &format!("lan = [{lan:?}]"))?;
    let lan_nets: Vec<ipnet::IpNet> = addrs
        .iter()
        .filter_map(|(ip, len)| ipnet::IpNet::new(*ip, *len).ok())
        .map(|n| n.trunc())
        .collect();
    let (forwarded, ad_text) = ad_section(ad, &lan_nets);
    if !ad.dcs.is_empty() {
        // The DCs may forward their own lookups to telesink (the other topology, or
        // their forwarders setting): a busy DC must not hit a per-client limit meant
        // for one device.
        text = replace(
            &text,
            "action = \"drop\"",
            &format!(
                "action = \"drop\"\n# The domain controllers ask for many clients at once.\nexempt = [{}]",
                quoted(&ad.dcs.iter().map(IpAddr::to_string).collect::<Vec<_>>())
            ),
        )?;
    }
    let wan_line = match wan {
        Some(w) => format!("wan = [{w:?}]"),
        None => "wan = []".to_owned(),
    };
    text = replace(&text, "wan = [\"wan0\"]", &wan_line)?;
    text = replace(
        &text,
        "listen = \"192.168.1.1:9153\"",
        &format!("listen = {metrics:?}"),
    )?;
    // The example's group holds example addresses: left as a commented recipe.
    let group_at = text
        .find("# Devices that report to Windows Update for Business")
        .ok_or(InitError::Template("the wufb-managed group"))?;
    let (head, group) = text.split_at(group_at);
    let commented: String = group
        .lines()
        .map(|l| {
            if l.starts_with('#') || l.is_empty() {
                format!("{l}\n")
            } else {
                format!("# {l}\n")
            }
        })
        .collect();
    let mut args_shown = wan.map(|w| format!(" --wan {w}")).unwrap_or_default();
    if !ad.domains.is_empty() {
        let dcs: Vec<String> = ad.dcs.iter().map(IpAddr::to_string).collect();
        args_shown.push_str(&format!(
            " --ad-domain {} --dc {}",
            ad.domains.join(","),
            dcs.join(",")
        ));
    }
    let text = format!(
        "# telesink on this gateway, written by `telesink init --lan {lan}{}`.
#
# DNS is answered on {lan}'s addresses for its networks; the firewall filters what LAN
# clients send out{}. Opt-in profiles are off (each one's warning says what it breaks).
# Check it with `telesink check --config THIS_FILE`; every key is explained in the
# shipped telesink.toml (/usr/share/doc/telesink, or config/ in a checkout).

{head}{ad_text}{commented}",
        args_shown,
        wan.map(|w| format!(" through {w}")).unwrap_or_default()
    );
    Ok(Chosen {
        listen,
        networks,
        metrics,
        lists_dir,
        forwarded,
        text,
    })
}

/// The `[[forward]]` entries of an AD site: each AD domain (its `_msdcs` zone and SRV
/// records are below it) and the reverse zones of the LAN's networks, to the DCs.
fn ad_section(ad: &ActiveDirectory, lan: &[ipnet::IpNet]) -> (Vec<String>, String) {
    if ad.domains.is_empty() || ad.dcs.is_empty() {
        return (Vec::new(), String::new());
    }
    let servers = ad
        .dcs
        .iter()
        .map(|ip| format!("{:?}", std::net::SocketAddr::new(*ip, 53).to_string()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut zones: Vec<String> = ad
        .domains
        .iter()
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    for net in lan {
        if let Some(z) = reverse_zone(net)
            && !zones.contains(&z)
        {
            zones.push(z);
        }
    }
    let mut text = String::from(
        "# Active Directory: clients ask telesink (each device stays visible in the metrics and\n# the evidence), the AD zones and the LAN's reverse zones go to the domain controllers.\n# Names in them are blocked by exact rules only (docs/UPSTREAMS.md).\n",
    );
    for z in &zones {
        text.push_str(&format!(
            "[[forward]]\nzone = {z:?}\nservers = [{servers}]\n\n"
        ));
    }
    (zones, text)
}

/// The reverse zone that holds a network's addresses (whole octets for IPv4, whole
/// nibbles for IPv6; a /20 gets the /16's zone).
pub fn reverse_zone(net: &ipnet::IpNet) -> Option<String> {
    match net {
        ipnet::IpNet::V4(n) if !n.addr().is_loopback() => {
            let whole = usize::from(n.prefix_len() / 8);
            if whole == 0 {
                return None;
            }
            let mut labels: Vec<String> = n.network().octets()[..whole]
                .iter()
                .map(u8::to_string)
                .collect();
            labels.reverse();
            Some(format!("{}.in-addr.arpa", labels.join(".")))
        }
        ipnet::IpNet::V6(n) if !n.addr().is_loopback() => {
            let whole = usize::from(n.prefix_len() / 4);
            if whole == 0 {
                return None;
            }
            let hex: String = n
                .network()
                .octets()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let mut labels: Vec<String> = hex[..whole].chars().map(String::from).collect();
            labels.reverse();
            Some(format!("{}.ip6.arpa", labels.join(".")))
        }
        _ => None,
    }
}

pub fn write(path: &Path, text: &str, force: bool) -> Result<(), InitError> {
    if path.exists() && !force {
        return Err(InitError::Exists(path.to_owned()));
    }
    let io = |source| InitError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(path, text).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_zones_are_those_of_whole_octets_and_nibbles() {
        let z = |s: &str| reverse_zone(&s.parse().unwrap());
        assert_eq!(z("10.0.0.0/8").as_deref(), Some("10.in-addr.arpa"));
        assert_eq!(
            z("192.168.1.0/24").as_deref(),
            Some("1.168.192.in-addr.arpa")
        );
        assert_eq!(z("172.16.0.0/20").as_deref(), Some("16.172.in-addr.arpa"));
        assert_eq!(
            z("2001:db8:1::/64").as_deref(),
            Some("0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa")
        );
        assert_eq!(z("127.0.0.0/8"), None);
        assert_eq!(z("0.0.0.0/0"), None);
    }

    #[test]
    fn an_ad_site_forwards_its_domains_and_reverse_zones_to_the_dcs() {
        let ad = ActiveDirectory {
            domains: vec!["Corp.Example".into()],
            dcs: vec!["10.0.0.10".parse().unwrap(), "10.0.0.11".parse().unwrap()],
        };
        let (zones, text) = ad_section(&ad, &["10.0.0.0/24".parse().unwrap()]);
        assert_eq!(zones, ["corp.example", "0.0.10.in-addr.arpa"]);
        assert!(text.contains("[[forward]]\nzone = \"corp.example\"\nservers = [\"10.0.0.10:53\", \"10.0.0.11:53\"]\n"), "{text}");
    }
}
