//! The door of a connection when SASL is configured: until the client has authenticated, only
//! ApiVersions, SaslHandshake (v1) and SaslAuthenticate are answered; anything else, and a
//! failed authentication, closes the connection (after the failure response, so the client
//! reports an authentication error). The exchange itself is [`crate::sasl::SaslSession`].

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::protocol::decode_request_header_from_buffer;

use crate::broker::Broker;
use crate::dispatch::{respond, Pending};
use crate::sasl::SaslSession;

/// What the connection does with a frame that arrived before authentication.
pub enum Gate {
    /// Not a SASL request (ApiVersions): handle it as usual.
    Pass,
    /// Send this response; close the connection after it when `close` (failed authentication).
    Reply { pending: Pending, close: bool },
    /// Close the connection at once, logging why.
    Close(String),
}

/// Route one frame of a connection that has not authenticated yet.
pub fn step(session: &mut SaslSession, broker: &Arc<Broker>, frame: &Bytes, peer: &str) -> Gate {
    if frame.len() < 8 {
        return Gate::Close("request shorter than a header before authentication".into());
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let Ok(api_key) = ApiKey::try_from(raw_key) else {
        return Gate::Close(format!("unknown API key {raw_key} before authentication"));
    };
    match api_key {
        ApiKey::ApiVersions => return Gate::Pass,
        ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => {}
        other => {
            return Gate::Close(format!(
                "{other:?} before SASL authentication (the broker requires it)"
            ))
        }
    }
    if !crate::api_versions::is_supported_with_sasl(api_key, version) {
        return Gate::Close(format!(
            "{api_key:?} v{version} is not served (SaslHandshake v1 with SaslAuthenticate is)"
        ));
    }
    broker.metrics.request(api_key);
    let mut body = frame.clone();
    let header = match decode_request_header_from_buffer(&mut body) {
        Ok(h) => h,
        Err(e) => return Gate::Close(format!("bad {api_key:?} request header: {e}")),
    };
    let request = match RequestKind::decode(api_key, &mut body, version) {
        Ok(r) => r,
        Err(e) => return Gate::Close(format!("bad {api_key:?} v{version} request: {e}")),
    };
    let (response, close) = match request {
        RequestKind::SaslHandshake(req) => {
            let r = session.handshake(&req, version);
            let failed = r.error_code != 0;
            (ResponseKind::SaslHandshake(r), failed)
        }
        RequestKind::SaslAuthenticate(req) => {
            let (r, failed) = session.authenticate(&req, version);
            if failed {
                eprintln!(
                    "riverbed serve: authentication failed for a client at {peer}: {}",
                    r.error_message.as_ref().map_or("", |m| m.as_str())
                );
            }
            (ResponseKind::SaslAuthenticate(r), failed)
        }
        _ => return Gate::Close("unexpected request before authentication".into()),
    };
    if close {
        broker.metrics.error(api_key);
    }
    Gate::Reply {
        pending: respond(api_key, version, header.correlation_id, response),
        close,
    }
}
