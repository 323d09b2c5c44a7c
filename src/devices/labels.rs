//! The `client` label: a configured name, a lease's host name, the MAC or the address,
//! or a pseudonym of either.
//!
//! Pseudonyms are a keyed hash (SipHash-2-4, 128-bit key) of the address: the same client
//! keeps its label across restarts and reloads, so dashboards and alerts keep working,
//! but nobody without the key can map a label back to an address by trying them all (a
//! plain hash of an IPv4 address would fall to a four-billion-entry table in minutes).

use std::hash::Hasher;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::config::ClientLabels;
use crate::policy::Policy;
use crate::policy::devices::Mac;

/// What a label stands for (the `client_kind` label of the per-client metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// An on-link device, by its MAC: all its addresses count as one.
    Device,
    /// One address: a client behind a router (no neighbour entry), the gateway itself, or
    /// an address a `[[devices]]` entry or a group's `hosts` names.
    Address,
    /// More clients were active at once than `[metrics] max_clients`.
    Other,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Device => "device",
            Kind::Address => "address",
            Kind::Other => "other",
        }
    }
}

/// Who a client is, as the tables key it: small, `Copy`, and the same for every address
/// of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    Device(Mac),
    Address(IpAddr),
}

#[derive(Debug, thiserror::Error)]
#[error("pseudonym key {path}: {source}")]
pub struct KeyError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

#[derive(Debug, Clone, Default)]
pub struct Labeler {
    /// Some: pseudonyms with this key.
    key: Option<[u8; 16]>,
}

impl Labeler {
    pub fn new(mode: ClientLabels, key_file: &Path) -> Result<Self, KeyError> {
        match mode {
            ClientLabels::Address => Ok(Self { key: None }),
            ClientLabels::Pseudonym => Ok(Self {
                key: Some(load_or_create_key(key_file).map_err(|source| KeyError {
                    path: key_file.to_owned(),
                    source,
                })?),
            }),
        }
    }

    /// Whether labels are pseudonyms (then a lease's host name, which the client chose
    /// and which often names its owner, is not used either).
    pub fn pseudonyms(&self) -> bool {
        self.key.is_some()
    }

    /// The label of an address as itself: the name a `[[devices]]` entry or a group's
    /// `hosts` gives it, else the address or its pseudonym.
    pub fn address(&self, policy: &Policy, ip: IpAddr) -> String {
        if let Some(name) = policy.clients.devices.name_of_addr(ip) {
            return name.to_string();
        }
        if let Some(name) = policy.clients.name_of(ip) {
            return name.to_owned();
        }
        match ip {
            IpAddr::V4(a) => self
                .hashed("h", &a.octets())
                .unwrap_or_else(|| ip.to_string()),
            IpAddr::V6(a) => self
                .hashed("h", &a.octets())
                .unwrap_or_else(|| ip.to_string()),
        }
    }

    /// The label of a device: the `[[devices]]` name of its MAC, else the host name of its
    /// lease (not with pseudonyms), else the MAC or its pseudonym.
    pub fn device(&self, policy: &Policy, mac: &Mac, lease_name: Option<&str>) -> String {
        let configured = policy.clients.devices.name_of_mac(mac);
        self.device_label(configured.map(|n| &**n), mac, lease_name)
    }

    fn device_label(
        &self,
        configured: Option<&str>,
        mac: &Mac,
        lease_name: Option<&str>,
    ) -> String {
        if let Some(name) = configured {
            return name.to_owned();
        }
        if let Some(hashed) = self.hashed("m", &mac.0) {
            return hashed;
        }
        lease_name.map_or_else(|| mac.to_string(), str::to_owned)
    }

    fn hashed(&self, prefix: &str, bytes: &[u8]) -> Option<String> {
        let key = self.key?;
        let (k0, k1) = key.split_at(8);
        let mut h = siphasher::sip::SipHasher24::new_with_keys(word(k0), word(k1));
        h.write(bytes);
        Some(format!("{prefix}-{:016x}", h.finish()))
    }
}

fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

/// Reads the 16-byte key, or creates it from the kernel's random source (mode 0600,
/// written in full before it is used, so a crash never leaves a short key).
fn load_or_create_key(path: &Path) -> std::io::Result<[u8; 16]> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() == 16 => {
            let mut key = [0u8; 16];
            key.copy_from_slice(&bytes);
            return Ok(key);
        }
        Ok(bytes) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "holds {} bytes, expected 16; remove it to make a new key (labels change)",
                    bytes.len()
                ),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut key = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut key)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::durable::write_with_mode(path, &key, 0o600)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_its_configured_name_else_lease_else_mac_and_pseudonyms_hide_both() {
        let mac = Mac([2, 0, 0x5e, 0x10, 0, 1]);
        let plain = Labeler { key: None };
        assert_eq!(
            plain.device_label(Some("desk"), &mac, Some("laptop")),
            "desk"
        );
        assert_eq!(plain.device_label(None, &mac, Some("laptop")), "laptop");
        assert_eq!(plain.device_label(None, &mac, None), "02:00:5e:10:00:01");
        let hidden = Labeler { key: Some([7; 16]) };
        assert_eq!(
            hidden.device_label(Some("desk"), &mac, Some("laptop")),
            "desk"
        );
        let label = hidden.device_label(None, &mac, Some("laptop"));
        assert!(label.starts_with("m-") && label.len() == 18, "{label}");
        assert_eq!(label, hidden.device_label(None, &mac, None));
        assert_ne!(
            label,
            hidden.device_label(None, &Mac([2, 0, 0x5e, 0x10, 0, 2]), None)
        );
        let other_key = Labeler { key: Some([8; 16]) };
        assert_ne!(label, other_key.device_label(None, &mac, None));
    }
}
