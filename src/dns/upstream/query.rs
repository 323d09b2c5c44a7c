//! The bytes of one upstream query: RD, EDNS with a 1,232-byte payload, and per
//! transport: the AD bit to ask for authenticated data (RFC 6840 section 5.7) when
//! `trust_ad` holds, a forward zone's DO and CD, edns-tcp-keepalive on DoT (RFC 7828)
//! and block-length padding on every encrypted query (RFC 7830, RFC 8467: a multiple of
//! 128 bytes, so the query's size says little about the name).

use std::time::Duration;

use hickory_proto::ProtoError;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};

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

/// The idle timeout a DoT server announces in its answer's edns-tcp-keepalive (units of
/// 100 ms), if it does.
pub fn keepalive_of(answer: &[u8]) -> Option<Duration> {
    let message = Message::from_vec(answer).ok()?;
    match message.edns.as_ref()?.option(EdnsCode::Keepalive)? {
        EdnsOption::Unknown(_, data) if data.len() == 2 => Some(Duration::from_millis(
            u64::from(u16::from_be_bytes([data[0], data[1]])) * 100,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{Name, RecordType};

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
