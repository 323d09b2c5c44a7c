//! Turning the pipeline's responses into bytes, shared by the UDP and TCP listeners.

use std::sync::Arc;

use hickory_proto::op::{Header, ResponseCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hickory_server::net::NetError;
use hickory_server::server::{ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use parking_lot::Mutex;
use tracing::warn;

/// FORMERR with the request's ID, for a request whose header reads but whose body does
/// not (the answer hickory-server gives); None when not even a header reads.
pub fn form_error(raw: &[u8]) -> Option<Vec<u8>> {
    let mut decoder = BinDecoder::new(raw);
    let header = Header::read(&mut decoder).ok()?;
    let mut none = BinDecoder::new(&[]);
    let queries = Queries::read(&mut none, 0).ok()?;
    let response = MessageResponseBuilder::new(&queries, None)
        .error_msg(&header.metadata, ResponseCode::FormErr);
    encode_answer(response, Some(u16::MAX))
        .ok()
        .map(|(bytes, _)| bytes)
}

/// The encoded response and what the pipeline learns of it: what every response handler
/// of ours returns. `max` None: as hickory-server's UDP handle does, at most the client's
/// EDNS payload size (512 without EDNS), truncated with TC beyond it; over TCP the whole
/// message (up to 65,535 bytes).
pub fn encode_answer<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
    >,
    max: Option<u16>,
) -> Result<(Vec<u8>, ResponseInfo), NetError> {
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max.unwrap_or_else(|| response.edns().map_or(512, |e| e.max_payload())));
    if let Err(e) = response.destructive_emit(&mut encoder) {
        warn!(error = %e, "could not encode a response");
        return Err(NetError::from("encoding failed"));
    }
    let mut decoder = BinDecoder::new(&bytes);
    let header = Header::read(&mut decoder).map_err(|e| NetError::from(e.to_string()))?;
    Ok((bytes, ResponseInfo::from(header)))
}

/// A response handler that keeps the encoded answer for its caller (the TCP listener
/// writes it to the connection itself).
#[derive(Clone, Default)]
pub struct Collect {
    pub sent: Arc<Mutex<Option<Vec<u8>>>>,
}

#[async_trait::async_trait]
impl ResponseHandler for Collect {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let (bytes, info) = encode_answer(response, Some(u16::MAX))?;
        *self.sent.lock() = Some(bytes);
        Ok(info)
    }
}
