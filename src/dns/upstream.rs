//! Forwarding to the upstream resolvers through hickory-resolver's name-server pool.
//!
//! The pool gives us what a forwarder needs (server selection by RTT, UDP with fallback to
//! TCP on truncation, coalescing of identical queries in flight) without its own cache;
//! caching stays in `dns::cache`, below the policy, where we can count hits and keep the
//! policy-before-cache guarantee.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, DnsHandle, NetError};
use hickory_resolver::proto::op::{DnsRequest, DnsRequestOptions, Query, ResponseCode};
use hickory_resolver::proto::rr::{Record, RecordType};
use hickory_resolver::{NameServerPool, PoolContext, TlsConfig};

/// What an upstream said, reduced to the parts we forward and cache.
#[derive(Debug, Clone)]
pub struct Upstreamed {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream resolver configured")]
    NoUpstreams,
    #[error("upstreams did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream failure: {0}")]
    Failed(String),
}

pub struct Upstream {
    pool: Option<NameServerPool<TokioRuntimeProvider>>,
    budget: Duration,
    servers: Vec<SocketAddr>,
}

impl Upstream {
    pub fn new(servers: Vec<SocketAddr>, budget: Duration) -> Self {
        if servers.is_empty() {
            return Self {
                pool: None,
                budget,
                servers,
            };
        }
        let mut opts = ResolverOpts::default();
        // The pool's own deadline covers every server and the TCP retry; our outer timeout
        // is the hard bound. Keeping both at the budget makes the total time to SERVFAIL
        // the budget, not budget x transports (a measured hickory pitfall).
        opts.timeout = budget;
        opts.attempts = 1;
        opts.cache_size = 0;
        opts.edns0 = true;
        opts.case_randomization = false;
        let configs = servers.iter().map(|s| {
            let mut udp = ConnectionConfig::udp();
            udp.port = s.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = s.port();
            NameServerConfig::new(s.ip(), true, vec![udp, tcp])
        });
        let tls = TlsConfig::new().ok();
        let pool = tls.map(|tls| {
            let cx = Arc::new(PoolContext::new(opts, tls));
            NameServerPool::from_config(configs, cx, TokioRuntimeProvider::default())
        });
        Self {
            pool,
            budget,
            servers,
        }
    }

    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    pub async fn resolve(&self, query: Query) -> Result<Upstreamed, UpstreamError> {
        let Some(pool) = &self.pool else {
            return Err(UpstreamError::NoUpstreams);
        };
        let mut options = DnsRequestOptions::default();
        options.recursion_desired = true;
        options.use_edns = true;
        options.edns_payload_len = 1232;
        let request = DnsRequest::from_query(query, options);
        let mut stream = pool.send(request);
        let next = tokio::time::timeout(self.budget, stream.next()).await;
        match next {
            Err(_) => Err(UpstreamError::Timeout(self.budget)),
            Ok(None) => Err(UpstreamError::Failed("no response".into())),
            Ok(Some(Ok(response))) => {
                let message = response.into_message();
                Ok(Upstreamed {
                    rcode: message.metadata.response_code,
                    answers: message.answers,
                    authorities: message.authorities,
                    additionals: message
                        .additionals
                        .into_iter()
                        .filter(|r| r.record_type() != RecordType::OPT)
                        .collect(),
                })
            }
            // The pool turns NXDOMAIN and NODATA into an error; they are answers to forward.
            Ok(Some(Err(NetError::Dns(DnsError::NoRecordsFound(no)))))
                if no.response_code != ResponseCode::ServFail =>
            {
                let mut authorities: Vec<Record> =
                    no.authorities.map(|a| a.to_vec()).unwrap_or_default();
                if let (true, Some(soa)) = (authorities.is_empty(), no.soa) {
                    authorities.push(soa.into_record_of_rdata());
                }
                Ok(Upstreamed {
                    rcode: no.response_code,
                    answers: Vec::new(),
                    authorities,
                    additionals: Vec::new(),
                })
            }
            Ok(Some(Err(e))) => Err(UpstreamError::Failed(e.to_string())),
        }
    }
}

/// The `nameserver` lines of a resolv.conf, port 53, minus addresses telesink itself
/// listens on (asking ourselves would loop).
pub fn from_resolv_conf(path: &Path, own: &[SocketAddr]) -> Vec<SocketAddr> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .filter(|ns| {
            !own.iter().any(|l| {
                l.port() == 53
                    && (l.ip() == ns.ip() || (l.ip().is_unspecified() && ns.ip().is_loopback()))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_skips_our_own_listener() {
        let dir = std::env::temp_dir().join(format!("telesink-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        std::fs::write(&path, "# x\nnameserver 127.0.0.1\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch lan\n").unwrap();
        let own: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let got = from_resolv_conf(&path, &[own]);
        assert_eq!(
            got,
            vec![
                "192.0.2.53:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
