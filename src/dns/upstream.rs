//! Forwarding to the upstream resolvers: UDP through our own socket pool
//! (`dns::exchange`), TCP through hickory-resolver's name-server pool when an answer is
//! truncated. Identical questions asked while one is on its way share that one query.
//!
//! No cache here: caching stays in `dns::cache`, below the policy, where we can count hits
//! and keep the policy-before-cache guarantee.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::debug;

use futures_util::StreamExt;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, DnsHandle, NetError};
use hickory_resolver::proto::op::{
    DnsRequest, DnsRequestOptions, Edns, Message, MessageType, OpCode, Query, ResponseCode,
};
use hickory_resolver::proto::rr::{DNSClass, Name};
use hickory_resolver::proto::rr::{Record, RecordType};
use hickory_resolver::{NameServerPool, PoolContext, TlsConfig};
use parking_lot::Mutex;
use tokio::sync::watch;

use super::exchange::{ExchangeError, UdpExchange};

/// What an upstream said, reduced to the parts we forward and cache.
#[derive(Debug, Clone)]
pub struct Upstreamed {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl From<Message> for Upstreamed {
    fn from(message: Message) -> Self {
        Self {
            rcode: message.metadata.response_code,
            answers: message.answers,
            authorities: message.authorities,
            // EDNS is per hop: our own OPT goes to the client, never the upstream's.
            additionals: message
                .additionals
                .into_iter()
                .filter(|r| r.record_type() != RecordType::OPT)
                .collect(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream resolver configured")]
    NoUpstreams,
    #[error("upstreams did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream failure: {0}")]
    Failed(String),
}

/// One upstream resolver: its UDP sockets, a TCP pool for truncated answers, its smoothed
/// round-trip time for choosing, and its latency histogram for the metrics.
struct Server {
    addr: SocketAddr,
    udp: UdpExchange,
    tcp: NameServerPool<TokioRuntimeProvider>,
    /// Smoothed RTT in microseconds; a failure counts as the whole budget.
    srtt_us: AtomicU64,
    latency: Option<prometheus::Histogram>,
}

/// Forwarding to several upstreams: the fastest first, the next one on failure.
///
/// One hickory pool per server rather than one pool for all, because a shared pool does
/// not say which server answered, and admins need latency per upstream to find the slow
/// one. Choosing by smoothed RTT is what the shared pool did too.
pub struct Upstream {
    servers: Vec<Server>,
    budget: Duration,
    addrs: Vec<SocketAddr>,
    latency: Option<prometheus::HistogramVec>,
    /// Questions being asked upstream right now: when a popular name expires and a whole
    /// LAN asks for it at once, one query goes out and every asker gets its answer.
    flights: Mutex<HashMap<FlightKey, Flight>>,
    /// For /health: whether upstreams answer, from the queries that really went out.
    pub reach: Reachability,
    /// Questions that joined a flight already asking the same thing (no query of their own).
    pub joined_flights: AtomicU64,
}

/// Upstreams one query may try, fastest first.
const MAX_ASKED: usize = 8;

/// What recent upstream queries say about reaching the upstreams.
#[derive(Default)]
pub struct Reachability {
    /// Unix second of the last answer from any upstream (0: none yet).
    pub last_answer_unix: AtomicU64,
    /// Upstream queries that failed (every upstream tried) since the last answer.
    pub failed_in_a_row: AtomicU64,
}

impl Reachability {
    /// Why upstreams look unreachable, if they do: several queries in a row got no
    /// answer and the last answer (if any) is more than 10 s old.
    pub fn problem(&self) -> Option<String> {
        let failed = self.failed_in_a_row.load(Ordering::Relaxed);
        let last = self.last_answer_unix.load(Ordering::Relaxed);
        let now = crate::clock::unix_now();
        (failed >= 3 && now.saturating_sub(last) > 10).then(|| match last {
            0 => format!("no upstream has answered yet ({failed} queries failed)"),
            t => format!(
                "upstreams are not answering: {failed} queries in a row failed, the last answer was {} s ago",
                now.saturating_sub(t)
            ),
        })
    }
}

/// Name (lowercase), type and class: everything telesink puts into an upstream query
/// that differs between queries (the client's EDNS, DO and CD bits are not forwarded).
type FlightKey = (Name, RecordType, DNSClass);
type Flight = watch::Receiver<Option<Result<Upstreamed, UpstreamError>>>;

/// Takes a question out of the flight table when its asker is done, answered or not.
struct Landing<'a> {
    flights: &'a Mutex<HashMap<FlightKey, Flight>>,
    key: FlightKey,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        self.flights.lock().remove(&self.key);
    }
}

impl Upstream {
    pub fn new(servers: Vec<SocketAddr>, budget: Duration) -> Self {
        if servers.len() > MAX_ASKED {
            tracing::warn!(
                "{} upstreams configured; only the first {MAX_ASKED} are ever asked",
                servers.len()
            );
        }
        let mut opts = ResolverOpts::default();
        // The pool's own deadline covers the TCP retry; our outer timeout is the hard
        // bound. Keeping both at the budget makes the total time to SERVFAIL the budget,
        // not budget x transports (a measured hickory pitfall).
        opts.timeout = budget;
        opts.attempts = 1;
        opts.cache_size = 0;
        opts.edns0 = true;
        opts.case_randomization = false;
        let latency = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                crate::metric_names::UPSTREAM_LATENCY,
                "Time until an upstream answered (NXDOMAIN included), by upstream.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["upstream"],
        );
        // Fails only for an invalid metric name or buckets, both constants here.
        let latency = latency.ok();
        let tls = TlsConfig::new().ok();
        let cx = tls.map(|tls| Arc::new(PoolContext::new(opts, tls)));
        let built = servers
            .iter()
            .filter_map(|s| {
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = s.port();
                let config = NameServerConfig::new(s.ip(), true, vec![tcp]);
                let tcp = NameServerPool::from_config(
                    [config],
                    cx.clone()?,
                    TokioRuntimeProvider::default(),
                );
                Some(Server {
                    addr: *s,
                    udp: UdpExchange::new(*s),
                    tcp,
                    srtt_us: AtomicU64::new(0),
                    latency: latency
                        .as_ref()
                        .map(|v| v.with_label_values(&[&s.to_string()])),
                })
            })
            .collect();
        Self {
            servers: built,
            budget,
            addrs: servers,
            latency,
            flights: Mutex::new(HashMap::new()),
            reach: Reachability::default(),
            joined_flights: AtomicU64::new(0),
        }
    }

    pub fn servers(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The latency histograms, for the metrics collector.
    pub fn latency(&self) -> Option<&prometheus::HistogramVec> {
        self.latency.as_ref()
    }

    /// Joins the flight already asking this question, or starts one. The asker that
    /// starts it asks upstream itself (no extra task on the hot path); if it gives up
    /// half-way (its client went away), the question leaves the table and those waiting
    /// on it ask for themselves.
    pub async fn resolve(&self, query: Query) -> Result<Upstreamed, UpstreamError> {
        let key = (
            query.name().to_lowercase(),
            query.query_type(),
            query.query_class(),
        );
        let joined = {
            let mut flights = self.flights.lock();
            match flights.get(&key) {
                Some(flight) => {
                    self.joined_flights.fetch_add(1, Ordering::Relaxed);
                    Ok(flight.clone())
                }
                None => {
                    let (tx, rx) = watch::channel(None);
                    flights.insert(key.clone(), rx);
                    Err(tx)
                }
            }
        };
        match joined {
            Ok(mut flight) => {
                let landed = flight
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|answer| answer.clone());
                match landed {
                    Some(answer) => answer,
                    None => self.ask_upstreams(query).await,
                }
            }
            Err(tx) => {
                let _leave = Landing {
                    flights: &self.flights,
                    key,
                };
                let answer = self.ask_upstreams(query).await;
                tx.send_replace(Some(answer.clone()));
                answer
            }
        }
    }

    async fn ask_upstreams(&self, query: Query) -> Result<Upstreamed, UpstreamError> {
        if self.servers.is_empty() {
            return Err(UpstreamError::NoUpstreams);
        }
        let deadline = Instant::now() + self.budget;
        // A fixed array keeps the query path free of allocation; beyond eight upstreams
        // (resolv.conf allows three) the rest are never asked (said at start).
        let mut order: [usize; MAX_ASKED] = [0, 1, 2, 3, 4, 5, 6, 7];
        let n = self.servers.len().min(order.len());
        order[..n].sort_by_key(|&i| self.servers[i].srtt_us.load(Ordering::Relaxed));
        let mut last = UpstreamError::Timeout(self.budget);
        for (rank, &i) in order[..n].iter().enumerate() {
            let server = &self.servers[i];
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let started = Instant::now();
            match self.ask(server, query.clone(), left).await {
                Ok(answer) => {
                    let took = started.elapsed();
                    if let Some(h) = &server.latency {
                        h.observe(took.as_secs_f64());
                    }
                    smooth(&server.srtt_us, took.as_micros() as u64);
                    // Servers skipped ahead of this one had failed; the ones behind it
                    // drift back toward zero so a recovered server gets tried again.
                    for &j in &order[rank + 1..n] {
                        let s = &self.servers[j].srtt_us;
                        s.store(s.load(Ordering::Relaxed) * 63 / 64, Ordering::Relaxed);
                    }
                    self.reach
                        .last_answer_unix
                        .store(crate::clock::unix_now(), Ordering::Relaxed);
                    self.reach.failed_in_a_row.store(0, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(e) => {
                    debug!(upstream = %server.addr, error = %e, "upstream failed");
                    smooth(&server.srtt_us, self.budget.as_micros() as u64);
                    last = e;
                }
            }
        }
        self.reach.failed_in_a_row.fetch_add(1, Ordering::Relaxed);
        Err(last)
    }

    async fn ask(
        &self,
        server: &Server,
        query: Query,
        left: Duration,
    ) -> Result<Upstreamed, UpstreamError> {
        let started = Instant::now();
        let mut message = Message::new(0, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        message.set_edns(edns);
        let mut bytes = message
            .to_vec()
            .map_err(|e| UpstreamError::Failed(e.to_string()))?;
        let answer = server
            .udp
            .exchange(&mut bytes, left)
            .await
            .map_err(|e| match e {
                ExchangeError::Timeout(_) => UpstreamError::Timeout(self.budget),
                other => UpstreamError::Failed(other.to_string()),
            })?;
        let message = Message::from_vec(&answer)
            .map_err(|e| UpstreamError::Failed(format!("malformed answer: {e}")))?;
        if message.metadata.truncation {
            let left = left.saturating_sub(started.elapsed());
            return self.ask_tcp(server, query, left).await;
        }
        if message.metadata.response_code == ResponseCode::ServFail {
            return Err(UpstreamError::Failed("SERVFAIL".into()));
        }
        Ok(Upstreamed::from(message))
    }

    /// A truncated answer, asked again over TCP through hickory's pool.
    async fn ask_tcp(
        &self,
        server: &Server,
        query: Query,
        left: Duration,
    ) -> Result<Upstreamed, UpstreamError> {
        let mut options = DnsRequestOptions::default();
        options.recursion_desired = true;
        options.use_edns = true;
        options.edns_payload_len = 1232;
        let request = DnsRequest::from_query(query, options);
        let mut stream = server.tcp.send(request);
        let next = tokio::time::timeout(left, stream.next()).await;
        match next {
            Err(_) => Err(UpstreamError::Timeout(self.budget)),
            Ok(None) => Err(UpstreamError::Failed("no response".into())),
            Ok(Some(Ok(response))) => Ok(Upstreamed::from(response.into_message())),
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

/// srtt = 7/8 srtt + 1/8 sample (RFC 6298's weight).
fn smooth(srtt: &AtomicU64, sample_us: u64) {
    let old = srtt.load(Ordering::Relaxed);
    let new = if old == 0 {
        sample_us
    } else {
        (old * 7 + sample_us) / 8
    };
    srtt.store(new, Ordering::Relaxed);
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

    /// Twenty clients ask the same question (in two spellings) while the upstream takes
    /// 200 ms: one query goes out and all twenty get the answer; once it has landed, the
    /// next ask goes out again. The fixture answers one query at a time, so without the
    /// sharing the twenty would need 4 s and run past the 2 s budget.
    #[tokio::test]
    async fn identical_questions_in_flight_share_one_upstream_query() {
        use std::sync::atomic::AtomicUsize;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(200));
                buf[2] |= 0x80;
                buf[3] = 0x80;
                let _ = socket.send_to(&buf[..n], from);
            }
        });
        let up = Arc::new(Upstream::new(vec![addr], Duration::from_secs(2)));
        let mut waiting = Vec::new();
        for i in 0..20 {
            let spelling = if i % 2 == 0 {
                "www.example."
            } else {
                "WWW.Example."
            };
            let query = Query::query(Name::from_ascii(spelling).unwrap(), RecordType::A);
            let up = up.clone();
            waiting.push(tokio::spawn(async move { up.resolve(query).await }));
        }
        for w in waiting {
            assert_eq!(w.await.unwrap().unwrap().rcode, ResponseCode::NoError);
        }
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        assert!(up.flights.lock().is_empty());
        let again = Query::query(Name::from_ascii("www.example.").unwrap(), RecordType::A);
        up.resolve(again).await.unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 2);

        // The asker that started a flight goes away half-way: the one that joined it
        // asks for itself and gets its answer, and the table is left empty.
        let name = || Query::query(Name::from_ascii("gone.example.").unwrap(), RecordType::A);
        let (first, second) = (up.clone(), up.clone());
        // Waits on what the fixture and the flight counter show, not on fixed sleeps;
        // the task yields (tokio's clock) so the spawned askers run meanwhile.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let asked = seen.load(Ordering::SeqCst);
        let leader = tokio::spawn(async move { first.resolve(name()).await });
        while seen.load(Ordering::SeqCst) == asked {
            assert!(
                std::time::Instant::now() < deadline,
                "the leader's query never reached the upstream"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let joined = up.joined_flights.load(Ordering::Relaxed);
        let follower = tokio::spawn(async move { second.resolve(name()).await });
        while up.joined_flights.load(Ordering::Relaxed) == joined {
            assert!(
                std::time::Instant::now() < deadline,
                "the follower never joined the flight"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        leader.abort();
        assert_eq!(
            follower.await.unwrap().unwrap().rcode,
            ResponseCode::NoError
        );
        assert!(up.flights.lock().is_empty());
    }

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
