//! `[identity]` and `[[devices]]`: how a client is told apart (docs/METRICS.md, "What a
//! client label is").

use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Count every address of an on-link device (its IPv4 address and each IPv6
    /// temporary address) as that device, by its MAC from the kernel's neighbour table.
    #[serde(default = "yes")]
    pub devices: bool,
    /// A device or address not seen for this long leaves the tables (its label with it).
    #[serde(default = "default_forget_after")]
    pub forget_after_secs: u64,
    /// DHCP lease files that name devices: dnsmasq's lease file or ISC Kea's memfile CSV
    /// (told apart by their content); re-read when they change.
    #[serde(default)]
    pub lease_files: Vec<Spanned<PathBuf>>,
    /// Addresses known as a device's at most (a table of the neighbour entries and leases
    /// seen within forget_after_secs); beyond it a new address counts as itself.
    #[serde(default = "default_max_addresses")]
    pub max_addresses: usize,
}

fn yes() -> bool {
    true
}

/// 30 days: a laptop back from a month's leave keeps its label.
fn default_forget_after() -> u64 {
    30 * 86_400
}

fn default_max_addresses() -> usize {
    65_536
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            devices: true,
            forget_after_secs: default_forget_after(),
            lease_files: Vec::new(),
            max_addresses: default_max_addresses(),
        }
    }
}

/// One `[[devices]]` entry: a name for one or more MACs (a laptop's Wi-Fi and dock), or
/// for addresses of clients behind a router, which the neighbour table cannot see.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub name: Spanned<String>,
    #[serde(default)]
    pub macs: Vec<Spanned<String>>,
    #[serde(default)]
    pub addresses: Vec<IpNet>,
}
