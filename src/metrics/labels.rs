//! The `client` label: the inventory name, the address, or a pseudonym.
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

    pub fn label(&self, policy: &Policy, ip: IpAddr) -> String {
        if let Some(name) = policy.clients.name_of(ip) {
            return name.to_owned();
        }
        let Some(key) = self.key else {
            return ip.to_string();
        };
        let (k0, k1) = key.split_at(8);
        let mut h = siphasher::sip::SipHasher24::new_with_keys(word(k0), word(k1));
        match ip {
            IpAddr::V4(a) => h.write(&a.octets()),
            IpAddr::V6(a) => h.write(&a.octets()),
        }
        format!("h-{:016x}", h.finish())
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
