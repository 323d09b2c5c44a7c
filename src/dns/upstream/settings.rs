//! The upstream settings as the daemon uses them, taken from `[upstream]` and
//! `[[forward]]`, and the checks that `check`, a start and a reload all run on them
//! (through `policy::build`, so every path gives the same verdict).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use hickory_proto::rr::Name;

use super::doh::Method;
use super::spec::{Host, ServerSpec};
use super::tls::TlsSetupError;
use crate::config::{Config, Encryption};

#[derive(Debug, Clone)]
pub struct Settings {
    pub servers: Vec<ServerSpec>,
    /// `[[forward]]` zones (lowercase, fully qualified) and their servers.
    pub zones: Vec<(Name, Vec<ServerSpec>)>,
    pub budget: Duration,
    pub encryption: Encryption,
    pub ca_file: Option<PathBuf>,
    pub trust_ad: bool,
    pub bootstrap: BTreeMap<String, Vec<IpAddr>>,
    pub pins: BTreeMap<String, Vec<String>>,
    pub connections: usize,
    pub idle: Duration,
    pub doh_method: Method,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            servers: Vec::new(),
            zones: Vec::new(),
            budget: Duration::from_millis(1800),
            encryption: Encryption::Strict,
            ca_file: None,
            trust_ad: false,
            bootstrap: BTreeMap::new(),
            pins: BTreeMap::new(),
            connections: 2,
            idle: Duration::from_secs(30),
            doh_method: Method::Post,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error(
        "upstream {server}: {host} is a name and has no bootstrap address; add [upstream.bootstrap] \"{host}\" = [\"ADDRESS\"] (looking it up would need clear-text DNS)"
    )]
    NoBootstrap { server: String, host: String },
    #[error("upstream {server}: certificate name {why}")]
    Name { server: String, why: String },
    /// Something telesink itself needs could not be made (a runtime, a metric family).
    #[error("upstream setup: {0}")]
    Internal(String),
    #[error("[[forward]] zone {zone:?}: {why}")]
    Zone { zone: String, why: String },
}

impl Settings {
    /// The settings of a config; `servers` are the default upstreams as found (the
    /// config's, or resolv.conf's when it names none).
    pub fn of(c: &Config, servers: Vec<ServerSpec>) -> Result<Settings, SetupError> {
        let u = &c.upstream;
        let mut zones = Vec::new();
        for f in &c.forward {
            zones.push((zone_name(f.zone.get_ref())?, f.servers.clone()));
        }
        let any_encrypted = servers.iter().any(|s| s.transport.encrypted());
        Ok(Settings {
            servers,
            zones,
            budget: Duration::from_millis(u.timeout_ms),
            encryption: u.encryption.unwrap_or(if any_encrypted {
                Encryption::Strict
            } else {
                Encryption::Opportunistic
            }),
            ca_file: u.ca_file.clone(),
            trust_ad: u.trust_ad,
            bootstrap: u.bootstrap.clone(),
            pins: u.pins.clone(),
            connections: u.connections.clamp(1, 16),
            idle: Duration::from_secs(u.idle_timeout_secs.max(1)),
            doh_method: u.doh_method,
        })
    }

    pub fn opportunistic(&self) -> bool {
        self.encryption == Encryption::Opportunistic
    }

    /// Where to connect: the written address, or the bootstrap addresses of the name.
    pub fn addresses_of(&self, spec: &ServerSpec) -> Result<Vec<SocketAddr>, SetupError> {
        match &spec.host {
            Host::Addr(ip) => Ok(vec![SocketAddr::new(*ip, spec.port)]),
            Host::Name(host) => match self.bootstrap.get(host) {
                Some(ips) if !ips.is_empty() => Ok(ips
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, spec.port))
                    .collect()),
                _ => Err(SetupError::NoBootstrap {
                    server: spec.to_string(),
                    host: host.clone(),
                }),
            },
        }
    }

    pub fn pins_of(&self, cert_name: &str) -> Result<Vec<[u8; 32]>, SetupError> {
        self.pins
            .get(cert_name)
            .map(|p| p.iter().map(|t| super::tls::parse_pin(t)).collect())
            .unwrap_or(Ok(Vec::new()))
            .map_err(SetupError::from)
    }
}

fn zone_name(zone: &str) -> Result<Name, SetupError> {
    crate::config::upstream::zone_name(zone).map_err(|why| SetupError::Zone {
        zone: zone.to_owned(),
        why,
    })
}
