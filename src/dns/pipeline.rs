//! The query pipeline, in the order every query travels through it:
//!
//! listener (src/dns/udp.rs, src/dns/tcp.rs) -> rate limit -> protocol checks -> client identity -> special-use names ->
//! policy verdict -> sinkhole answer | log-only count -> cache -> upstream -> CNAME cloaking ->
//! send -> outcome
//!
//! The order is fixed here, in code; configuration switches stages on and off but never
//! reorders them. Each stage below says why it sits where it does.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Header, HeaderCounts, LowerQuery, Metadata, ResponseCode};
use hickory_proto::rr::{Name, RData, Record};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::answer::{
    self, EDE_BLOCKED, EDE_NETWORK_ERROR, EDE_NO_REACHABLE_AUTHORITY, EDE_OTHER, EDE_PROHIBITED,
    Synth,
};
use super::cache::{self, Cache};
use super::outcome::{Outcome, Outcomes};
use super::protocol;
use super::ratelimit::Admit;
use super::upstream::{Dnssec, Upstream, UpstreamError, Upstreamed};
use crate::evidence::tail::{Event, Tail};
use crate::evidence::{Aggregate, Layer, Sighting};
use crate::policy::{Decision, Policy, QName, Verdict};
use crate::snapshot::Snapshot;

#[derive(Clone)]
pub struct Pipeline {
    /// The snapshot in force; loaded once per query. It also carries shadow resolution,
    /// where blocked names of shadow profiles are handed to the firewall.
    pub policy: Arc<ArcSwap<Snapshot>>,
    pub cache: Arc<Cache>,
    /// Blocked queries per client and profile, for the metrics (bounded labels).
    pub clients: Arc<super::ClientCounts>,
    pub upstream: Arc<Upstream>,
    /// Bounds queries waiting on upstreams: a flood of cache misses cannot pile up
    /// unbounded tasks and sockets. Blocked and cached answers never wait, so need no slot.
    pub forward_slots: Arc<Semaphore>,
    pub udp_payload_max: u16,
    pub outcomes: Arc<Outcomes>,
    /// The per-client rate limit's buckets; its rules are the snapshot's.
    pub limiter: Arc<super::ratelimit::Limiter>,
    /// The evidence ledger's in-memory aggregate; None with `[evidence] enabled = false`.
    pub evidence: Option<Arc<Aggregate>>,
    /// The live view (`telesink tail`), fed only while someone watches.
    pub tail: Arc<Tail>,
}

/// The response we are about to send, with the parts the EDNS needs.
struct Reply<'a> {
    rcode: ResponseCode,
    answers: &'a [Record],
    authorities: &'a [Record],
    additionals: &'a [Record],
    ede: Option<(u16, &'a str)>,
    /// The answer's AD bit may be passed on (`trust_ad`, encrypted upstream, validated).
    authentic: bool,
}

impl Reply<'_> {
    fn rcode(rcode: ResponseCode) -> Self {
        Reply {
            rcode,
            answers: &[],
            authorities: &[],
            additionals: &[],
            ede: None,
            authentic: false,
        }
    }
}

/// What happened to one query: the one record every count derives from. The pipeline
/// returns it; `count` applies it, for the full path and for a replayed answer alike
/// (outcome, per-client blocked and log-only counts, the cache hit of a replay, the name
/// handed to shadow resolution). A replayable record is kept with the answer's bytes.
#[derive(Debug, Clone)]
pub struct QueryRecord {
    pub outcome: Outcome,
    /// Policy generation and client group the answer was made under (0 before known).
    pub generation: u64,
    pub group: u16,
    /// The profile that blocked the name (a sinkhole answer), by its number
    /// (`Profile::id`), not its position: a reload that reorders the profiles between
    /// the answer and its counting (or a replay) must not move the count.
    pub blocked: Option<u16>,
    /// A log-only profile that would have blocked it (observed, answered normally), by
    /// its number.
    pub logged: Option<u16>,
    /// A blocked name of a shadow profile (by the profile's number, `Profile::id`), to
    /// learn (and keep learning) its addresses.
    pub learn: Option<(u16, Name)>,
    /// Whether the UDP fast path may send these bytes again for the same request.
    pub replayable: bool,
    /// For a replayable cache hit: until its TTLs would read one second less. None:
    /// valid until the policy changes.
    pub until: Option<Instant>,
    /// The name and the rule that decided, for the evidence ledger and the live view
    /// (made once on the full path; a replay shares it).
    pub sighting: Option<Arc<Sighting>>,
}

impl QueryRecord {
    pub fn new(outcome: Outcome) -> Self {
        QueryRecord {
            outcome,
            generation: 0,
            group: 0,
            blocked: None,
            logged: None,
            learn: None,
            replayable: false,
            until: None,
            sighting: None,
        }
    }
}

/// Which path answered: a replay did not look into the cache, so its hit is counted here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// hickory-server's message types and every stage.
    Full,
    /// A blocked name's first answer made from the request's bytes (src/dns/direct.rs).
    Direct,
    /// A kept answer sent again (src/dns/udp.rs).
    Replay,
}

impl Path {
    pub const ALL: [Path; 3] = [Path::Full, Path::Direct, Path::Replay];

    pub fn name(self) -> &'static str {
        match self {
            Path::Full => "full",
            Path::Direct => "direct",
            Path::Replay => "replay",
        }
    }
}

type Answered = (ResponseInfo, QueryRecord);

#[async_trait::async_trait]
impl RequestHandler for Pipeline {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        handle: R,
    ) -> ResponseInfo {
        // hickory-server's UDP listener (udp_fast_path = false): the rate limit first,
        // as on telesink's own listeners.
        match self.admit(&self.policy.load(), request.src().ip()) {
            Admit::Yes => self.serve(request, handle).await.0,
            Admit::Refuse => self.refuse_limited(request, handle).await,
            Admit::Drop => ResponseInfo::from(Header {
                metadata: Metadata::response_from_request(&request.metadata),
                counts: HeaderCounts::default(),
            }),
        }
    }
}

impl Pipeline {
    /// Answers one request and counts it; returns the record when the answer may be
    /// replayed.
    pub async fn serve<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: R,
    ) -> (ResponseInfo, Option<QueryRecord>) {
        let (info, record) = self.answer(request, handle).await;
        // Last: counting after the send keeps the metrics off the answer's critical path.
        self.count(request.src().ip(), &record, Path::Full, true);
        (info, record.replayable.then_some(record))
    }

    /// The rate limit, which every listener asks first (docs/ARCHITECTURE.md, "Abuse"):
    /// before the pipeline and before a replay, so a client over its limit costs one
    /// bucket update. Counted here, per client, whether the query is dropped or refused.
    #[inline]
    pub fn admit(&self, policy: &Snapshot, client: std::net::IpAddr) -> Admit {
        let admit = self.limiter.admit(&policy.rate, client);
        if admit != Admit::Yes {
            self.outcomes.record(Outcome::RateLimited);
            self.clients.rate_limited(client);
        }
        admit
    }

    /// The answer to a query over the limit with `action = "refuse"` (already counted).
    pub async fn refuse_limited<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: R,
    ) -> ResponseInfo {
        let reply = Reply {
            ede: Some((EDE_PROHIBITED, "rate limited")),
            ..Reply::rcode(ResponseCode::Refused)
        };
        self.send(request, handle, reply).await
    }

    /// Applies one record to every count. `learn_now`: hand the name to shadow
    /// resolution (a replay does so once a second at most).
    pub fn count(&self, client: std::net::IpAddr, r: &QueryRecord, path: Path, learn_now: bool) {
        self.outcomes.answered(r.outcome, client, path);
        if let Some(id) = r.blocked {
            self.clients.blocked(client, id);
        }
        if let Some(id) = r.logged {
            self.clients.logged(client, id);
        }
        if path == Path::Replay && r.outcome == Outcome::Cached {
            self.cache.count_hit();
        }
        if let (true, Some((p, name))) = (learn_now, &r.learn)
            && let Some(learner) = &self.policy.load().learner
        {
            learner.learn(*p, name);
        }
        let Some(sighting) = &r.sighting else {
            return;
        };
        if let Some(evidence) = &self.evidence
            && (r.blocked.is_some() || r.logged.is_some())
        {
            let policy = self.policy.load();
            let now = crate::clock::unix_now();
            for (id, layer) in [
                (r.blocked, Layer::DnsBlocked),
                (r.logged, Layer::DnsObserved),
            ] {
                if let Some(profile) = id.and_then(|id| policy.profile_by_id(id)) {
                    evidence.record_seen(client, &profile.key, layer, sighting, 1, now);
                }
            }
        }
        if self.tail.watching() {
            self.tail
                .push(tail_event(&self.policy.load(), client, r, sighting));
        }
    }

    /// The first answer to a blocked name, without hickory's message objects
    /// (src/dns/direct.rs): the same stages as `answer` in the same order, for the one
    /// shape of query they all pass and a verdict that blocks. None: the full path
    /// answers (any other shape, a client not allowed, a special-use name, a name that
    /// passes, an answer too big for the client). Not counted yet: the caller counts the
    /// record, as `serve` does.
    pub fn answer_direct(
        &self,
        policy: &Snapshot,
        packet: &[u8],
        client: std::net::IpAddr,
    ) -> Option<(Vec<u8>, QueryRecord)> {
        // 1. Protocol checks: only the shape that passes them all.
        let query = super::direct::Query::read(packet)?;
        // 2. Client identity.
        if !policy.is_allowed_client(client) {
            return None;
        }
        let group = policy.group_of(client);
        let qname = query.qname()?;
        // 3. Special-use names.
        if answer::special_use(&qname).is_some() {
            return None;
        }
        // 4. The policy verdict; only a block is answered here.
        let Verdict::Block { profile, by } = policy.verdict(group, &qname) else {
            return None;
        };
        let p = policy.profiles.get(profile as usize)?;
        let sink = super::direct::Sinkhole {
            mode: p.mode,
            zone_labels: zone_labels(&qname, &by),
            ttl: policy.block_ttl,
            serial: serial(policy),
            ede_text: &p.ede_text,
            udp_max: self.udp_payload_max,
        };
        let bytes = super::direct::answer(&query, &sink)?;
        let base = QueryRecord {
            generation: policy.generation,
            group,
            replayable: true,
            sighting: Some(sighting(&qname, Some(&by))),
            ..QueryRecord::new(Outcome::Blocked)
        };
        let learn = p.shadow && policy.learner.is_some();
        let name = if learn {
            Name::from_labels(query.labels()).ok()?
        } else {
            Name::root()
        };
        Some((bytes, sinkholed(base, policy, profile, &name)))
    }

    async fn answer<R: ResponseHandler>(&self, request: &Request, handle: R) -> Answered {
        // 1. Protocol checks first: malformed, non-query or unsupported-EDNS messages are
        //    answered by the RFCs alone, so no later stage has to cope with them.
        let query = match protocol::check(request) {
            Ok(query) => query,
            Err(rcode) => {
                let outcome = match rcode {
                    ResponseCode::FormErr => Outcome::FormErr,
                    ResponseCode::NotImp => Outcome::NotImp,
                    ResponseCode::Refused => Outcome::Refused,
                    _ => Outcome::Local,
                };
                let info = self.send(request, handle, Reply::rcode(rcode)).await;
                return (info, QueryRecord::new(outcome));
            }
        };

        // 2. Client identity, before the name is even read: a client outside
        //    allowed_clients learns nothing (never an open resolver), and the group decided
        //    here is what every later stage applies. One policy snapshot is loaded for the
        //    whole query, so a concurrent reload cannot give it half of each.
        let policy = self.policy.load();
        let client = request.src().ip();
        if !policy.is_allowed_client(client) {
            let reply = Reply {
                ede: Some((EDE_PROHIBITED, "client not in allowed_clients")),
                ..Reply::rcode(ResponseCode::Refused)
            };
            let info = self.send(request, handle, reply).await;
            return (info, QueryRecord::new(Outcome::Refused));
        }
        let group = policy.group_of(client);
        let Some(qname) = QName::from_labels(query.name().iter()) else {
            let info = self
                .send(request, handle, Reply::rcode(ResponseCode::FormErr))
                .await;
            return (info, QueryRecord::new(Outcome::FormErr));
        };
        let record = |outcome, replayable, until| QueryRecord {
            generation: policy.generation,
            group,
            replayable,
            until,
            ..QueryRecord::new(outcome)
        };

        // 3. Special-use names come before the lists: they keep clients from switching to
        //    DoH around us, whatever the admin's lists say.
        if let Some((rcode, zone)) = answer::special_use(&qname) {
            let zone = Name::from_ascii(zone).unwrap_or_default();
            let synth = answer::negative(rcode, &zone, policy.block_ttl, serial(&policy));
            let reply = Reply {
                authorities: &synth.authorities,
                ..Reply::rcode(rcode)
            };
            let info = self.send(request, handle, reply).await;
            return (info, record(Outcome::Local, true, None));
        }

        // 4. The policy verdict, before the cache: the cache holds real answers that an
        //    allowed client fetched, so a blocked client must be stopped before it can hit one.
        let allowed_by_rule = match policy.verdict(group, &qname) {
            Verdict::Pass { allow } => allow.is_some(),
            Verdict::Block { profile, by } => {
                let seen = sighting(&qname, Some(&by));
                let zone = query.original().name().trim_to(zone_labels(&qname, &by));
                let (outcome, info) = self
                    .sinkhole(request, handle, &policy, profile, query, &zone, None)
                    .await;
                let base = QueryRecord {
                    sighting: Some(seen),
                    ..record(outcome, true, None)
                };
                let name = query.original().name();
                return (info, sinkholed(base, &policy, profile, name));
            }
        };

        // 4b. Log-only profiles, after the real verdict: a name that some enforcing profile
        //     blocks was answered above; what passes is counted as a would-be block of a
        //     log-only profile and then answered normally.
        let observed = policy.would_block_by(group, &qname);
        let logged = observed
            .and_then(|(p, _)| policy.profiles.get(p as usize))
            .map(|p| p.id);
        let seen = Some(sighting(&qname, observed.as_ref().map(|(_, by)| by)));

        // 5. Cache, then upstream. Only a miss takes a forwarding slot. A name in a
        //    `[[forward]]` zone goes to that zone's servers with the client's DO and CD
        //    bits (DNSSEC-aware pass-through), so they are part of its cache key. Whether
        //    the name is in one comes from the snapshot already loaded (the zones the
        //    verdict read), not from another load of the upstreams' table.
        let in_zone = !policy.forward_zones.is_empty()
            && policy.forward_zones.covering(qname.as_str()).is_some();
        let dnssec = if in_zone {
            Dnssec {
                dnssec_ok: request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
                checking_disabled: request.metadata.checking_disabled,
            }
        } else {
            Dnssec::default()
        };
        let key = cache::Key {
            name: query.name().clone(),
            qtype: query.query_type(),
            class: query.query_class(),
            dnssec,
        };
        let now = Instant::now();
        let (answer, outcome, fresh_until) = match self.cache.get(&key, now) {
            Some(hit) => (hit.answer, Outcome::Cached, Some(hit.fresh_until)),
            None => match self.forward(query, dnssec).await {
                Ok(answer) => {
                    self.cache.insert(key, &answer, now);
                    (answer, Outcome::Forwarded, None)
                }
                Err(why) => {
                    debug!(%why, name = %query.name(), "not forwarded");
                    let ede = match why {
                        ForwardError::Overloaded => (
                            EDE_OTHER,
                            "overloaded: too many queries waiting on upstreams",
                        ),
                        // Encryption failed (handshake, certificate, reset) and the
                        // policy forbids clear text: a network error, not silence.
                        ForwardError::Upstream(UpstreamError::Encrypted(_)) => (
                            EDE_NETWORK_ERROR,
                            "encrypted upstream failed; not asked in clear text",
                        ),
                        ForwardError::Upstream(_) => {
                            (EDE_NO_REACHABLE_AUTHORITY, "upstream resolvers unavailable")
                        }
                    };
                    let reply = Reply {
                        ede: Some(ede),
                        ..Reply::rcode(ResponseCode::ServFail)
                    };
                    let info = self.send(request, handle, reply).await;
                    return (
                        info,
                        QueryRecord {
                            logged,
                            sighting: seen,
                            ..record(Outcome::ServFail, false, None)
                        },
                    );
                }
            },
        };
        // Only a cache hit is replayed: a fresh upstream answer has the upstream's TTLs,
        // which the cache may clamp, so the next hit's bytes can differ from it.
        let replayable = fresh_until.is_some();

        // 6. CNAME cloaking after the cache, per client: a tracker hidden behind a CNAME
        //    is caught on cached answers too, and only for clients whose profiles block it.
        //    An allow rule for the queried name decides: cloaking catches first-party
        //    names nobody vouched for, never one an admin or a shipped allowlist allowed.
        let cloaking = if allowed_by_rule {
            None
        } else {
            cloaked(&policy, group, &answer)
        };
        if let Some((profile, target)) = cloaking {
            let zone = query.original().name().clone();
            let via = Some(&target);
            let (outcome, info) = self
                .sinkhole(request, handle, &policy, profile, query, &zone, via)
                .await;
            let base = QueryRecord {
                logged,
                sighting: seen,
                ..record(outcome, replayable, fresh_until)
            };
            return (info, sinkholed(base, &policy, profile, &target));
        }

        // 7. Send the answer as the upstream gave it.
        let reply = Reply {
            rcode: answer.rcode,
            answers: &answer.answers,
            authorities: &answer.authorities,
            additionals: &answer.additionals,
            ede: None,
            authentic: answer.authentic,
        };
        let info = self.send(request, handle, reply).await;
        // The addresses of an answer a client was allowed to get serve something the
        // policy lets through: shadow resolution must never block them (src/shadow.rs).
        if let Some(learner) = &policy.learner {
            learner.allowed(&answer.answers);
        }
        let outcome = if answer.rcode == ResponseCode::ServFail {
            Outcome::ServFail
        } else {
            outcome
        };
        let replayable = replayable && outcome != Outcome::ServFail;
        (
            info,
            QueryRecord {
                logged,
                sighting: seen,
                ..record(outcome, replayable, fresh_until)
            },
        )
    }

    async fn forward(
        &self,
        query: &LowerQuery,
        dnssec: Dnssec,
    ) -> Result<Upstreamed, ForwardError> {
        // Shed at once rather than queue: a queued query would only time out later, and
        // the queue itself is what a flood would grow.
        let Ok(_slot) = self.forward_slots.try_acquire() else {
            return Err(ForwardError::Overloaded);
        };
        self.upstream
            .resolve(query.original().clone(), dnssec)
            .await
            .map_err(ForwardError::Upstream)
    }

    #[allow(clippy::too_many_arguments)]
    async fn sinkhole<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: R,
        policy: &Policy,
        profile: u16,
        query: &LowerQuery,
        zone: &Name,
        via_cname: Option<&Name>,
    ) -> (Outcome, ResponseInfo) {
        let Some(p) = policy.profiles.get(profile as usize) else {
            return (
                Outcome::ServFail,
                self.send(request, handle, Reply::rcode(ResponseCode::ServFail))
                    .await,
            );
        };
        let Synth {
            rcode,
            answers,
            authorities,
        } = answer::sinkhole(
            p.mode,
            query.original().name(),
            query.query_type(),
            zone,
            policy.block_ttl,
            serial(policy),
        );
        let text;
        let ede = match via_cname {
            None => p.ede_text.as_str(),
            Some(target) => {
                text = format!("{} (CNAME {})", p.ede_text, target);
                text.as_str()
            }
        };
        let reply = Reply {
            rcode,
            answers: &answers,
            authorities: &authorities,
            additionals: &[],
            ede: Some((EDE_BLOCKED, ede)),
            authentic: false,
        };
        (Outcome::Blocked, self.send(request, handle, reply).await)
    }

    async fn send<R: ResponseHandler>(
        &self,
        request: &Request,
        mut handle: R,
        reply: Reply<'_>,
    ) -> ResponseInfo {
        let edns: Option<Edns> =
            answer::response_edns(request.edns.as_ref(), self.udp_payload_max, reply.ede);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        metadata.response_code = reply.rcode;
        // AD only from a path telesink was told to trust, and only to a client that asked
        // for it (RFC 6840 section 5.7); otherwise cleared (RFC 4035 section 4.9.3).
        let asked_ad = request.metadata.authentic_data
            || request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        metadata.authentic_data = reply.authentic && asked_ad;
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                warn!(%error, client = %request.src(), "could not send response");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("max_in_flight queries are already waiting on upstreams")]
    Overloaded,
    #[error(transparent)]
    Upstream(#[from] super::upstream::UpstreamError),
}

/// A sinkhole answer's record: the profile that blocked and, when it is a shadow profile
/// and shadow resolution runs, the name to learn. A sinkhole that failed (SERVFAIL) is
/// neither counted as a block nor replayed.
fn sinkholed(base: QueryRecord, snap: &Snapshot, profile: u16, name: &Name) -> QueryRecord {
    if base.outcome != Outcome::Blocked {
        return QueryRecord {
            replayable: false,
            ..base
        };
    }
    let Some(p) = snap.profiles.get(profile as usize) else {
        return base;
    };
    QueryRecord {
        blocked: Some(p.id),
        learn: (p.shadow && snap.learner.is_some()).then(|| (p.id, name.clone())),
        ..base
    }
}

/// How many of the name's last labels the deciding rule was written for: the owner of a
/// sinkhole's SOA.
fn zone_labels(q: &QName, by: &Decision) -> usize {
    q.suffix_at(by.at).iter().filter(|&&b| b == b'.').count() + 1
}

/// What the ledger and the live view keep of a query: its name, and the rule that decided
/// (`*.suffix` for a suffix rule), with the rule's list and line.
fn sighting(q: &QName, by: Option<&Decision>) -> Arc<Sighting> {
    let name: Box<str> = q.as_str().into();
    // A rule that is the name itself is not stored twice.
    let rule = by
        .map(|d| d.rule_text(q))
        .filter(|r| **r != *name)
        .map(String::into_boxed_str);
    Arc::new(Sighting {
        name,
        rule,
        at: by.map(|d| (d.rule.list, d.rule.line)),
    })
}

/// One verdict for the live view (made only while someone watches).
fn tail_event(policy: &Snapshot, client: std::net::IpAddr, r: &QueryRecord, s: &Sighting) -> Event {
    let profile = r
        .blocked
        .or(r.logged)
        .and_then(|id| policy.profile_by_id(id))
        .map(|p| p.name.clone());
    let rule = s.at.map(|(list, line)| {
        let place = policy.rule_place(list, line);
        format!("{} at {place}", s.rule())
    });
    Event {
        seq: 0,
        at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        client,
        device: None,
        client_kind: None,
        name: s.name.to_string(),
        verdict: r.outcome.name().to_owned(),
        profile,
        rule,
        observed: r.logged.is_some(),
    }
}

/// The first CNAME target in the answer that this client's policy blocks.
fn cloaked(policy: &Policy, group: u16, answer: &Upstreamed) -> Option<(u16, Name)> {
    if !policy.cname_cloaking {
        return None;
    }
    answer.answers.iter().find_map(|record| {
        let RData::CNAME(target) = &record.data else {
            return None;
        };
        let name = QName::from_labels(target.0.iter())?;
        match policy.verdict(group, &name) {
            Verdict::Block { profile, .. } => Some((profile, target.0.clone())),
            Verdict::Pass { .. } => None,
        }
    })
}

/// The SOA serial of synthesized answers follows the policy generation, so a client that
/// cached a negative answer can tell it came from an older policy.
fn serial(policy: &Policy) -> u32 {
    policy.generation as u32
}
