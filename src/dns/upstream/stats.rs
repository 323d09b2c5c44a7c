//! What each upstream did, by transport: queries, failures by kind, connections opened,
//! reused and open, handshake time. Built once per upstream at start, so a query only
//! adds to counters it already holds (no label lookup on the query path).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

use crate::metric_names as names;

/// Why one exchange with an upstream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// No answer in the time left.
    Timeout,
    /// The TCP connection (or UDP's port) was refused or could not be made.
    Connect,
    /// TLS failed for another reason than the certificate (protocol, ALPN).
    TlsHandshake,
    /// The server's certificate did not check out (name, expiry, issuer, pin): never
    /// retried in clear text.
    Certificate,
    /// The connection ended while the query waited on it.
    Reset,
    /// A DoH server answered with an HTTP status other than 200.
    HttpStatus,
    /// The answer was not a DNS message for the question asked.
    Malformed,
    /// The upstream answered SERVFAIL.
    ServFail,
    /// Not tried: the last connection attempt failed and the next one is not due yet.
    Backoff,
    /// Too many queries waiting on one connection.
    Overloaded,
}

impl FailKind {
    pub const ALL: [FailKind; 10] = [
        FailKind::Timeout,
        FailKind::Connect,
        FailKind::TlsHandshake,
        FailKind::Certificate,
        FailKind::Reset,
        FailKind::HttpStatus,
        FailKind::Malformed,
        FailKind::ServFail,
        FailKind::Backoff,
        FailKind::Overloaded,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FailKind::Timeout => "timeout",
            FailKind::Connect => "connect",
            FailKind::TlsHandshake => "tls_handshake",
            FailKind::Certificate => "certificate",
            FailKind::Reset => "connection_reset",
            FailKind::HttpStatus => "http_status",
            FailKind::Malformed => "malformed",
            FailKind::ServFail => "servfail",
            FailKind::Backoff => "backoff",
            FailKind::Overloaded => "overloaded",
        }
    }
}

/// A failed exchange: its kind and what the log should say.
#[derive(Debug, Clone)]
pub struct Fail {
    pub kind: FailKind,
    pub detail: String,
}

impl Fail {
    pub fn new(kind: FailKind, detail: impl Into<String>) -> Self {
        Fail {
            kind,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.label(), self.detail)
    }
}

/// The metric families, one per Upstream; registered by the metrics collector.
pub struct UpstreamMetrics {
    queries: IntCounterVec,
    errors: IntCounterVec,
    opened: IntCounterVec,
    reused: IntCounterVec,
    open: IntGaugeVec,
    handshake: HistogramVec,
    fallbacks: IntCounterVec,
}

/// One upstream's counters, taken from the families once.
pub struct ServerStats {
    pub queries: IntCounter,
    errors: Vec<IntCounter>,
    pub opened: IntCounter,
    pub reused: IntCounter,
    pub open: IntGauge,
    pub handshake: Histogram,
    pub fallbacks: IntCounter,
}

impl ServerStats {
    pub fn failed(&self, kind: FailKind) {
        if let Some(c) = FailKind::ALL
            .iter()
            .position(|k| *k == kind)
            .and_then(|i| self.errors.get(i))
        {
            c.inc();
        }
    }
}

const LABELS: [&str; 2] = ["upstream", "transport"];

impl UpstreamMetrics {
    /// Fails only on an invalid metric definition, all constants here (tests/metrics.rs
    /// scrapes them).
    pub fn new() -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        Ok(UpstreamMetrics {
            queries: counter(
                names::UPSTREAM_QUERIES,
                "Queries sent to an upstream, by upstream and transport.",
                &LABELS,
            )?,
            errors: counter(
                names::UPSTREAM_ERRORS,
                "Exchanges with an upstream that failed, by kind (timeout, connect, tls_handshake, certificate, connection_reset, http_status, malformed, servfail, backoff, overloaded).",
                &["upstream", "transport", "kind"],
            )?,
            opened: counter(
                names::UPSTREAM_CONNECTIONS_OPENED,
                "Connections opened to an upstream (TLS handshakes done).",
                &LABELS,
            )?,
            reused: counter(
                names::UPSTREAM_CONNECTIONS_REUSED,
                "Queries sent on a connection that was already open.",
                &LABELS,
            )?,
            open: IntGaugeVec::new(
                Opts::new(
                    names::UPSTREAM_CONNECTIONS_OPEN,
                    "Connections to an upstream open now.",
                ),
                &LABELS,
            )?,
            handshake: HistogramVec::new(
                HistogramOpts::new(
                    names::UPSTREAM_HANDSHAKE,
                    "Time to open a connection to an encrypted upstream (TCP and TLS).",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
                &LABELS,
            )?,
            fallbacks: counter(
                names::UPSTREAM_CLEARTEXT_FALLBACKS,
                "Queries an encrypted upstream failed that went to its address in clear text (encryption = \"opportunistic\" only).",
                &LABELS,
            )?,
        })
    }

    pub fn server(&self, upstream: &str, transport: &str) -> ServerStats {
        let l = [upstream, transport];
        ServerStats {
            queries: self.queries.with_label_values(&l),
            errors: FailKind::ALL
                .iter()
                .map(|k| {
                    self.errors
                        .with_label_values(&[upstream, transport, k.label()])
                })
                .collect(),
            opened: self.opened.with_label_values(&l),
            reused: self.reused.with_label_values(&l),
            open: self.open.with_label_values(&l),
            handshake: self.handshake.with_label_values(&l),
            fallbacks: self.fallbacks.with_label_values(&l),
        }
    }

    pub fn collectors(&self) -> [&dyn prometheus::core::Collector; 7] {
        [
            &self.queries,
            &self.errors,
            &self.opened,
            &self.reused,
            &self.open,
            &self.handshake,
            &self.fallbacks,
        ]
    }
}
