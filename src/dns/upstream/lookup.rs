//! Name lookups for telesink's own tools (`update-m365`) through the upstreams the
//! daemon forwards to, encrypted ones included, instead of the system's resolver: an
//! appliance that forwards the LAN's queries over TLS must not look up its own
//! downloads in clear text.

use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use super::{Settings, SetupError, Upstream};
use crate::config::Config;
use crate::config::upstream::ServerSpec;

pub struct Lookup {
    runtime: tokio::runtime::Runtime,
    upstream: Upstream,
}

impl Lookup {
    /// The upstreams of a config, as the daemon would use them (resolv.conf's when it
    /// names none).
    pub fn of(c: &Config) -> Result<Lookup, SetupError> {
        let servers = if c.upstream.servers.is_empty() {
            super::from_resolv_conf(&c.upstream.resolv_conf, &c.server.listen)
                .into_iter()
                .map(ServerSpec::udp)
                .collect()
        } else {
            c.upstream.servers.clone()
        };
        let settings = Settings::of(c, servers)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SetupError::Internal(format!("cannot start the lookup runtime: {e}")))?;
        // Connections of encrypted upstreams spawn their tasks on this runtime.
        let upstream = {
            let _in = runtime.enter();
            Upstream::new(&settings)?
        };
        Ok(Lookup { runtime, upstream })
    }

    /// The addresses of `host` (IPv6 first, then IPv4), or why there are none.
    pub fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let name = Name::from_ascii(format!("{}.", host.trim_end_matches('.')))
            .map_err(|e| format!("{host}: {e}"))?;
        let mut out = Vec::new();
        let mut why = None;
        for qtype in [RecordType::AAAA, RecordType::A] {
            let query = Query::query(name.clone(), qtype);
            let asked = self.runtime.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(10),
                    self.upstream.resolve(query, Default::default()),
                )
                .await
            });
            match asked {
                Ok(Ok(answer)) if answer.rcode == ResponseCode::NoError => {
                    out.extend(answer.answers.iter().filter_map(|r| match &r.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                        _ => None,
                    }));
                }
                Ok(Ok(answer)) => why = Some(format!("{host}: {}", answer.rcode)),
                Ok(Err(e)) => why = Some(format!("{host}: {e}")),
                Err(_) => why = Some(format!("{host}: no answer within 10 s")),
            }
        }
        if out.is_empty() {
            return Err(why.unwrap_or_else(|| format!("{host}: no address")));
        }
        Ok(out)
    }
}
