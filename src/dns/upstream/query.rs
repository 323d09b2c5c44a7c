//! The bytes of one upstream query: RD, EDNS with a 1,232-byte payload, and per
//! transport: the AD bit to ask for authenticated data (RFC 6840 section 5.7) when
//! `trust_ad` holds, a forward zone's DO and CD, edns-tcp-keepalive on DoT (RFC 7828)
//! and block-length padding on every encrypted query (RFC 7830, RFC 8467: a multiple of
//! 128 bytes, so the query's size says little about the name).

use std::time::Duration;

use hickory_proto::ProtoError;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};

use super::Dnssec;

/// RFC 8467's recommended block for queries.
pub const QUERY_BLOCK: usize = 128;
const OPT_PADDING: u16 = 12;
const OPT_KEEPALIVE: u16 = 11;

#[derive(Debug, Clone, Copy, Default)]
pub struct Shape {
    pub dnssec: Dnssec,
    pub ask_ad: bool,
    pub keepalive: bool,
    pub pad: bool,
}

pub fn encode(query: &Query, shape: Shape) -> Result<Vec<u8>, ProtoError> {
    let mut message = Message::new(0, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.metadata.authentic_data = shape.ask_ad;
    message.metadata.checking_disabled = shape.dnssec.checking_disabled;
    message.add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.set_dnssec_ok(shape.dnssec.dnssec_ok);
    message.set_edns(edns);
    let mut bytes = message.to_vec()?;
    // The OPT record is the last one of a query we build (no other additional record,
    // no signature) and has no options yet: its RDLENGTH is the last two bytes.
    let mut options = Vec::new();
    if shape.keepalive {
        options.extend_from_slice(&OPT_KEEPALIVE.to_be_bytes());
        options.extend_from_slice(&0u16.to_be_bytes());
    }
    if shape.pad {
        let unpadded = bytes.len() + options.len() + 4;
        let fill = (QUERY_BLOCK - unpadded % QUERY_BLOCK) % QUERY_BLOCK;
        options.extend_from_slice(&OPT_PADDING.to_be_bytes());
        options.extend_from_slice(&(fill as u16).to_be_bytes());
        options.resize(options.len() + fill, 0);
    }
    if !options.is_empty() {
        let at = bytes.len() - 2;
        bytes[at..].copy_from_slice(&(options.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&options);
    }
    Ok(bytes)
}

/// Cuts the upstream's OPT record off an answer (EDNS is per hop: the client gets
/// telesink's own) and returns what it said that matters here, the edns-tcp-keepalive
/// timeout (units of 100 ms). Done on the wire bytes because hickory decodes an OPT's
/// options byte by byte: the 400-odd bytes of padding an encrypted upstream puts in
/// every answer (RFC 8467) cost a fifth of a core at 15,000 forwarded queries a second.
/// An OPT that is not the last record, or carries an extended RCODE, is left for the
/// decoder.
pub fn strip_opt(answer: &mut Vec<u8>) -> Option<Duration> {
    let (cut, keepalive) = find_opt(answer)?;
    let additional = u16::from_be_bytes([answer[10], answer[11]]) - 1;
    answer.truncate(cut);
    answer[10..12].copy_from_slice(&additional.to_be_bytes());
    keepalive
}

/// Where the answer's last record, an OPT without extended RCODE, starts, and the
/// keepalive it carries.
fn find_opt(answer: &[u8]) -> Option<(usize, Option<Duration>)> {
    let count = |at: usize| -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([
            *answer.get(at)?,
            *answer.get(at + 1)?,
        ])))
    };
    let (questions, records) = (count(4)?, count(6)? + count(8)? + count(10)?);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(answer, at)? + 4;
    }
    for i in 0..records {
        let start = at;
        at = skip_name(answer, at)?;
        let rtype = count(at)?;
        let end = at + 10 + count(at + 8)?;
        if rtype == 41 && i + 1 == records && end == answer.len() {
            if *answer.get(at + 4)? != 0 {
                return None;
            }
            let mut keepalive = None;
            let mut o = at + 10;
            while o + 4 <= end {
                let (code, len) = (count(o)?, count(o + 2)?);
                if code == usize::from(OPT_KEEPALIVE) && len == 2 {
                    keepalive = Some(Duration::from_millis(count(o + 4)? as u64 * 100));
                }
                o += 4 + len;
            }
            return Some((start, keepalive));
        }
        at = end;
    }
    None
}

/// Where the name starting at `at` ends (after its root label or its pointer).
fn skip_name(m: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *m.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xC0 == 0xC0 => return Some(at + 2),
            l if l > 63 => return None,
            l => at += 1 + usize::from(l),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    use hickory_proto::rr::{Name, RecordType};

    #[test]
    fn the_upstreams_opt_is_cut_off_and_its_keepalive_read() {
        use hickory_proto::op::MessageType;
        use hickory_proto::rr::rdata::A;
        use hickory_proto::rr::{RData, Record};
        let q = Query::query(Name::from_ascii("www.example.").unwrap(), RecordType::A);
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.add_query(q.clone());
        m.add_answer(Record::from_rdata(
            q.name().clone(),
            60,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        let mut edns = Edns::new();
        edns.options_mut()
            .insert(EdnsOption::Unknown(11, vec![0, 150]));
        edns.options_mut()
            .insert(EdnsOption::Unknown(12, vec![0; 300]));
        m.set_edns(edns);
        let mut bytes = m.to_vec().unwrap();
        assert_eq!(strip_opt(&mut bytes), Some(Duration::from_secs(15)));
        let back = Message::from_vec(&bytes).unwrap();
        assert!(back.edns.is_none());
        assert_eq!(back.answers, m.answers);
        // No OPT: nothing cut.
        let before = bytes.clone();
        assert_eq!(strip_opt(&mut bytes), None);
        assert_eq!(bytes, before);
        // Truncated garbage is left alone.
        let mut short = before[..20].to_vec();
        assert_eq!(strip_opt(&mut short), None);
    }

    #[test]
    fn encrypted_queries_are_padded_to_the_block_and_stay_valid() {
        for name in [
            "a.example.",
            "login.microsoftonline.com.",
            &format!("{}.example.", "x".repeat(60)),
        ] {
            let q = Query::query(Name::from_ascii(name).unwrap(), RecordType::AAAA);
            for keepalive in [false, true] {
                let shape = Shape {
                    keepalive,
                    pad: true,
                    ..Shape::default()
                };
                let bytes = encode(&q, shape).unwrap();
                assert_eq!(bytes.len() % QUERY_BLOCK, 0, "{name}");
                let back = Message::from_vec(&bytes).unwrap();
                let edns = back.edns.as_ref().unwrap();
                assert!(edns.option(EdnsCode::Padding).is_some());
                assert_eq!(edns.option(EdnsCode::Keepalive).is_some(), keepalive);
                assert_eq!(back.queries[0], q);
            }
            let clear = encode(&q, Shape::default()).unwrap();
            assert!(clear.len() < QUERY_BLOCK);
            assert!(
                Message::from_vec(&clear)
                    .unwrap()
                    .edns
                    .as_ref()
                    .unwrap()
                    .options()
                    .as_ref()
                    .is_empty()
            );
        }
    }
}
