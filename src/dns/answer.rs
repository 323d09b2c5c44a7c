//! Answers telesink writes itself: sinkholes, special-use names and the EDNS of every
//! response. Kept apart from the pipeline so the RFC details live in one place.
//!
//! - RFC 2308: NXDOMAIN and NODATA carry an SOA in the authority section whose MINIMUM
//!   (and TTL) is the negative TTL, so clients cache the negative answer for block_ttl.
//! - RFC 6891: a query with OPT gets OPT back; our UDP size is the smaller of the client's
//!   and our own limit, which is also what hickory truncates (TC) against.
//! - RFC 8914: blocked answers carry EDE 15 "Blocked" naming the profile; upstream
//!   failures carry EDE 22 "No Reachable Authority"; shedding under overload EDE 0
//!   "Other" with a text that says so.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Edns, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::policy::Mode;

pub const EDE_OTHER: u16 = 0;
pub const EDE_BLOCKED: u16 = 15;
/// RFC 8914: the server is unable to respond due to a policy (the client is not allowed).
pub const EDE_PROHIBITED: u16 = 18;
pub const EDE_NO_REACHABLE_AUTHORITY: u16 = 22;
/// RFC 8914: an encrypted upstream failed (handshake, certificate, connection).
pub const EDE_NETWORK_ERROR: u16 = 23;
/// RFC 8914 section 3: EDE option code.
const EDNS_OPTION_EDE: u16 = 15;
/// Long EDE texts eat the room the answer needs in a UDP response (Blocky caps at 200).
pub(super) const EDE_TEXT_MAX: usize = 200;

/// A synthesized answer, ready for the response builder.
pub struct Synth {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
}

/// The sinkhole answer for a blocked query under `mode`. `zone` is the name the deciding
/// rule was written for: the owner of the synthesized SOA.
pub fn sinkhole(
    mode: Mode,
    qname: &Name,
    qtype: RecordType,
    zone: &Name,
    ttl: u32,
    serial: u32,
) -> Synth {
    let address = |v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>| match qtype {
        RecordType::A => v4.map(|ip| RData::A(A(ip))),
        RecordType::AAAA => v6.map(|ip| RData::AAAA(AAAA(ip))),
        _ => None,
    };
    let data = match mode {
        Mode::Nxdomain => return negative(ResponseCode::NXDomain, zone, ttl, serial),
        Mode::Nodata => return negative(ResponseCode::NoError, zone, ttl, serial),
        Mode::Refused => {
            return Synth {
                rcode: ResponseCode::Refused,
                answers: Vec::new(),
                authorities: Vec::new(),
            };
        }
        Mode::Null => address(Some(Ipv4Addr::UNSPECIFIED), Some(Ipv6Addr::UNSPECIFIED)),
        Mode::Ip { v4, v6 } => address(v4, v6),
    };
    match data {
        Some(data) => Synth {
            rcode: ResponseCode::NoError,
            answers: vec![Record::from_rdata(qname.clone(), ttl, data)],
            authorities: Vec::new(),
        },
        // Never an A record for MX, TXT, HTTPS, SVCB...: NODATA says "no such data here".
        None => negative(ResponseCode::NoError, zone, ttl, serial),
    }
}

/// NXDOMAIN (rcode NXDomain) or NODATA (rcode NoError) with the RFC 2308 SOA.
pub fn negative(rcode: ResponseCode, zone: &Name, ttl: u32, serial: u32) -> Synth {
    Synth {
        rcode,
        answers: Vec::new(),
        authorities: vec![soa(zone, ttl, serial)],
    }
}

fn soa(zone: &Name, ttl: u32, serial: u32) -> Record {
    // `.invalid` (RFC 6761) cannot collide with a real zone.
    let mname = Name::from_ascii("telesink.invalid.").unwrap_or_default();
    let rname = Name::from_ascii("hostmaster.telesink.invalid.").unwrap_or_default();
    let data = SOA::new(mname, rname, serial, 3600, 600, 86400, ttl);
    Record::from_rdata(zone.clone(), ttl, RData::SOA(data))
}

/// The OPT of our response, if the query had one. `ede` adds an Extended DNS Error.
pub fn response_edns(query: Option<&Edns>, udp_max: u16, ede: Option<(u16, &str)>) -> Option<Edns> {
    let query = query?;
    let mut edns = Edns::new();
    edns.set_version(0);
    edns.set_max_payload(query.max_payload().clamp(512, udp_max.max(512)));
    edns.set_dnssec_ok(query.flags().dnssec_ok);
    if let Some((code, text)) = ede {
        let text = truncate_utf8(text, EDE_TEXT_MAX);
        let mut data = Vec::with_capacity(2 + text.len());
        data.extend_from_slice(&code.to_be_bytes());
        data.extend_from_slice(text.as_bytes());
        edns.options_mut()
            .insert(EdnsOption::Unknown(EDNS_OPTION_EDE, data));
    }
    Some(edns)
}

pub(super) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Names a resolver must answer itself so clients do not route around it:
/// - `use-application-dns.net`: NXDOMAIN tells Firefox not to enable DoH on its own;
/// - `resolver.arpa` (RFC 9462 DDR): NODATA, so clients do not discover and upgrade to an
///   encrypted resolver that would bypass the sinkhole.
pub fn special_use(name: &crate::policy::QName) -> Option<(ResponseCode, &'static str)> {
    if name.as_bytes() == b"use-application-dns.net" {
        return Some((ResponseCode::NXDomain, "use-application-dns.net."));
    }
    if name.is_within("resolver.arpa") {
        return Some((ResponseCode::NoError, "resolver.arpa."));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn null_mode_answers_addresses_only_for_a_and_aaaa() {
        let q = n("x.example.");
        let a = sinkhole(Mode::Null, &q, RecordType::A, &q, 60, 1);
        assert_eq!(a.answers[0].data, RData::A(A(Ipv4Addr::UNSPECIFIED)));
        for t in [
            RecordType::MX,
            RecordType::TXT,
            RecordType::HTTPS,
            RecordType::SVCB,
        ] {
            let s = sinkhole(Mode::Null, &q, t, &q, 60, 1);
            assert!(s.answers.is_empty(), "{t}");
            assert_eq!(s.rcode, ResponseCode::NoError);
            assert_eq!(s.authorities.len(), 1);
        }
        let only_v4 = Mode::Ip {
            v4: Some(Ipv4Addr::new(192, 0, 2, 1)),
            v6: None,
        };
        assert!(
            sinkhole(only_v4, &q, RecordType::AAAA, &q, 60, 1)
                .answers
                .is_empty()
        );
    }

    #[test]
    fn ede_text_is_capped_on_a_char_boundary() {
        let long = "é".repeat(150);
        let edns = response_edns(Some(&Edns::new()), 1232, Some((EDE_BLOCKED, &long))).unwrap();
        let opt = edns
            .options()
            .as_ref()
            .iter()
            .find(|(c, _)| u16::from(*c) == EDNS_OPTION_EDE);
        let EdnsOption::Unknown(_, data) = opt.unwrap().1.clone() else {
            panic!()
        };
        assert!(data.len() <= 2 + EDE_TEXT_MAX);
        assert!(std::str::from_utf8(&data[2..]).is_ok());
    }
}
