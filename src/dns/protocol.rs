//! Protocol checks that come before anything else looks at a query (RFC 1035, 6891).
//! The policy below never sees a message it would have to second-guess.

use hickory_proto::op::{LowerQuery, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use hickory_server::server::Request;

/// The one question of a well-formed standard query, or the rcode to refuse it with.
pub fn check(request: &Request) -> Result<&LowerQuery, ResponseCode> {
    if request.metadata.op_code != OpCode::Query {
        return Err(ResponseCode::NotImp);
    }
    // RFC 6891 6.1.3: a version we do not implement gets BADVERS (with our OPT, version 0).
    if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return Err(ResponseCode::BADVERS);
    }
    let [query] = request.queries.queries() else {
        return Err(ResponseCode::FormErr);
    };
    match query.query_type() {
        RecordType::OPT => return Err(ResponseCode::FormErr),
        // Zone transfers are not a resolver's business.
        RecordType::AXFR | RecordType::IXFR => return Err(ResponseCode::Refused),
        _ => {}
    }
    // CHAOS and HESIOD queries would be forwarded upstream as fingerprinting probes.
    if query.query_class() != DNSClass::IN {
        return Err(ResponseCode::Refused);
    }
    Ok(query)
}
