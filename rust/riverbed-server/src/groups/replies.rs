//! JoinGroup / SyncGroup responses, shaped for the version of the request they answer.

use bytes::Bytes;
use kafka_protocol::messages::{JoinGroupResponse, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A JoinGroup that failed with `code`. `member_id` is the id the member should use from now on
/// ("" unless the coordinator assigned one: MEMBER_ID_REQUIRED).
pub fn join_error(version: i16, code: i16, member_id: &str) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(code)
        .with_generation_id(-1)
        // Before v7 the protocol name is a non-nullable string.
        .with_protocol_name((version < 7).then(StrBytes::default))
        .with_leader(StrBytes::default())
        .with_member_id(str_bytes(member_id))
}

pub fn sync_reply(
    code: i16,
    protocol_type: Option<&str>,
    protocol_name: Option<&str>,
    assignment: Bytes,
) -> SyncGroupResponse {
    SyncGroupResponse::default()
        .with_error_code(code)
        .with_protocol_type(protocol_type.map(str_bytes))
        .with_protocol_name(protocol_name.map(str_bytes))
        .with_assignment(assignment)
}

pub fn sync_error(code: i16) -> SyncGroupResponse {
    sync_reply(code, None, None, Bytes::new())
}
