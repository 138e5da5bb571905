//! One request: its header decoded, its version checked against what we serve, its body decoded
//! by the protocol crate, and routed by API key to its handler. A handler's in-order part runs
//! here; the rest is the [`Pending`] future the connection's writer awaits in order.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    AddOffsetsToTxnResponse, AddPartitionsToTxnResponse, ApiKey, ConsumerGroupHeartbeatResponse,
    EndTxnResponse, RequestKind, ResponseHeader, ResponseKind, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::future::BoxFuture;
use crate::groups::ClientInfo;

/// A request whose response is (or will be) ready.
pub struct Pending {
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: BoxFuture<Option<ResponseKind>>,
    /// A produce with acks=0: no response, but when it failed the connection is closed, as
    /// Kafka does, so the producer notices instead of losing the records silently.
    unacknowledged: bool,
}

impl Pending {
    /// The response frame (length prefix included), `None` when the request gets no response
    /// (a produce with acks=0), or why it can't be encoded.
    pub async fn finish(self) -> Option<Result<BytesMut, String>> {
        let body = self.response.await?;
        if self.unacknowledged {
            return Some(Err(unacknowledged_failure(&body)));
        }
        Some(encode_response(
            self.api_key,
            self.version,
            self.correlation_id,
            &body,
        ))
    }
}

/// A response that is ready now (for the SASL gate, which answers outside [`handle`]).
pub fn respond(api_key: ApiKey, version: i16, correlation_id: i32, body: ResponseKind) -> Pending {
    Pending {
        api_key,
        version,
        correlation_id,
        response: ready(body),
        unacknowledged: false,
    }
}

/// Why an acks=0 produce failed (the partitions and error codes), for the log line.
fn unacknowledged_failure(body: &ResponseKind) -> String {
    let mut failed = Vec::new();
    if let ResponseKind::Produce(r) = body {
        for t in &r.responses {
            for p in t.partition_responses.iter().filter(|p| p.error_code != 0) {
                failed.push(format!(
                    "{}/{}: error {}{}",
                    t.name.0.as_str(),
                    p.index,
                    p.error_code,
                    p.error_message
                        .as_ref()
                        .map(|m| format!(" ({})", m.as_str()))
                        .unwrap_or_default()
                ));
            }
        }
    }
    format!(
        "a produce with acks=0 failed, closing so the client notices: {}",
        failed.join("; ")
    )
}

fn ready(r: ResponseKind) -> BoxFuture<Option<ResponseKind>> {
    Box::pin(std::future::ready(Some(r)))
}

/// Encode a response frame. The response header version follows the API and version (the
/// protocol crate knows that ApiVersions always answers with header v0).
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<BytesMut, String> {
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let hv = api_key.response_header_version(version);
    // A fetch response is mostly record bytes (megabytes): sized once, not grown by copying.
    let body_size = match body {
        ResponseKind::Fetch(r) => r.compute_size(version).unwrap_or(0),
        _ => 0,
    };
    let mut buf = BytesMut::with_capacity(64 + body_size);
    buf.put_i32(0);
    header
        .encode(&mut buf, hv)
        .map_err(|e| format!("cannot encode a response: {e}"))?;
    body.encode(&mut buf, version)
        .map_err(|e| format!("cannot encode a response: {e}"))?;
    let len = i32::try_from(buf.len() - 4).map_err(|_| "response over 2 GiB".to_string())?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Decode and route one request frame. An error closes the connection (and is logged there).
pub fn handle(broker: &Arc<Broker>, mut frame: Bytes, peer_host: &str) -> Result<Pending, String> {
    if frame.len() < 8 {
        return Err(format!(
            "request of {} bytes is shorter than a header",
            frame.len()
        ));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|_| format!("unknown API key {raw_key}"))?;
    broker.metrics.request(api_key);
    let crate_range = api_key.valid_versions();
    if api_key == ApiKey::ApiVersions && !crate::api_versions::is_supported(api_key, version) {
        // Kafka's rule: answer an unknown ApiVersions version with v0 and UNSUPPORTED_VERSION,
        // listing what we serve, so the client retries with a version it finds there.
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        broker.metrics.error(api_key);
        return Ok(Pending {
            api_key,
            version: 0,
            correlation_id,
            response: ready(ResponseKind::ApiVersions(
                crate::api_versions::response_for(broker, ResponseError::UnsupportedVersion.code()),
            )),
            unacknowledged: false,
        });
    }
    if version < crate_range.min || version > crate_range.max {
        broker.metrics.error(api_key);
        return Err(format!(
            "{api_key:?} version {version} is not a version of that API"
        ));
    }
    let header = decode_request_header_from_buffer(&mut frame)
        .map_err(|e| format!("bad {api_key:?} v{version} request header: {e}"))?;
    let correlation_id = header.correlation_id;
    let request = RequestKind::decode(api_key, &mut frame, version)
        .map_err(|e| format!("bad {api_key:?} v{version} request body: {e}"))?;
    let unsupported = !crate::api_versions::is_supported(api_key, version);
    let client = ClientInfo {
        client_id: header
            .client_id
            .as_ref()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        client_host: peer_host.to_string(),
    };
    let b = broker.clone();
    let unacknowledged = matches!(&request, RequestKind::Produce(r) if r.acks == 0);
    let response: BoxFuture<Option<ResponseKind>> = match request {
        RequestKind::ApiVersions(_) => ready(ResponseKind::ApiVersions(
            crate::api_versions::response_for(&b, 0),
        )),
        // Transactions and the KIP-848 group protocol are not served: answer with the errors
        // Kafka sends when they are refused, so clients fail clearly or fall back.
        RequestKind::AddPartitionsToTxn(_) => {
            let mut r = AddPartitionsToTxnResponse::default();
            r.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
            broker.metrics.error(api_key);
            ready(ResponseKind::AddPartitionsToTxn(r))
        }
        RequestKind::AddOffsetsToTxn(_) => {
            let mut r = AddOffsetsToTxnResponse::default();
            r.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
            broker.metrics.error(api_key);
            ready(ResponseKind::AddOffsetsToTxn(r))
        }
        RequestKind::EndTxn(_) => {
            let mut r = EndTxnResponse::default();
            r.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
            broker.metrics.error(api_key);
            ready(ResponseKind::EndTxn(r))
        }
        RequestKind::TxnOffsetCommit(_) => {
            broker.metrics.error(api_key);
            ready(ResponseKind::TxnOffsetCommit(
                TxnOffsetCommitResponse::default(),
            ))
        }
        RequestKind::ConsumerGroupHeartbeat(_) => {
            let mut r = ConsumerGroupHeartbeatResponse::default();
            r.error_code = ResponseError::UnsupportedVersion.code();
            broker.metrics.error(api_key);
            ready(ResponseKind::ConsumerGroupHeartbeat(r))
        }
        _ if unsupported => {
            broker.metrics.error(api_key);
            return Err(format!(
                "{api_key:?} v{version} is not served (see ApiVersions for what is)"
            ));
        }
        RequestKind::Metadata(r) => ready(ResponseKind::Metadata(crate::metadata::handle(
            broker, r, version,
        ))),
        RequestKind::Produce(r) => crate::produce::handle(broker, r, version),
        RequestKind::Fetch(r) => crate::fetch::handle(broker, r, version),
        RequestKind::ListOffsets(r) => ready(ResponseKind::ListOffsets(
            crate::list_offsets::handle(broker, r, version),
        )),
        RequestKind::FindCoordinator(r) => ready(ResponseKind::FindCoordinator(
            crate::coordinator_lookup::handle(broker, r, version),
        )),
        RequestKind::InitProducerId(r) => ready(ResponseKind::InitProducerId(
            crate::coordinator_lookup::init_producer_id(broker, r, version),
        )),
        RequestKind::CreateTopics(r) => ready(ResponseKind::CreateTopics(
            crate::admin::create_topics(broker, r, version),
        )),
        RequestKind::DeleteTopics(r) => ready(ResponseKind::DeleteTopics(
            crate::admin::delete_topics(broker, r, version),
        )),
        RequestKind::CreatePartitions(r) => ready(ResponseKind::CreatePartitions(
            crate::admin::create_partitions(broker, r, version),
        )),
        RequestKind::AlterConfigs(r) => ready(ResponseKind::AlterConfigs(
            crate::admin::alter_configs(broker, r, version),
        )),
        RequestKind::IncrementalAlterConfigs(r) => ready(ResponseKind::IncrementalAlterConfigs(
            crate::admin::incremental_alter_configs(broker, r, version),
        )),
        RequestKind::DescribeConfigs(r) => ready(ResponseKind::DescribeConfigs(
            crate::admin::describe_configs(broker, r, version),
        )),
        RequestKind::DescribeCluster(r) => ready(ResponseKind::DescribeCluster(
            crate::admin::describe_cluster(broker, r, version),
        )),
        // The group coordinator's APIs.
        RequestKind::JoinGroup(r) => Box::pin(async move {
            Some(ResponseKind::JoinGroup(
                b.coordinator.join_group(r, version, &client).await,
            ))
        }),
        RequestKind::SyncGroup(r) => Box::pin(async move {
            Some(ResponseKind::SyncGroup(
                b.coordinator.sync_group(r, version).await,
            ))
        }),
        RequestKind::Heartbeat(r) => ready(ResponseKind::Heartbeat(
            broker.coordinator.heartbeat(r, version),
        )),
        RequestKind::LeaveGroup(r) => ready(ResponseKind::LeaveGroup(
            broker.coordinator.leave_group(r, version),
        )),
        RequestKind::OffsetCommit(r) => Box::pin(async move {
            Some(ResponseKind::OffsetCommit(
                b.coordinator.offset_commit(r, version).await,
            ))
        }),
        RequestKind::OffsetFetch(r) => ready(ResponseKind::OffsetFetch(
            broker.coordinator.offset_fetch(r, version),
        )),
        RequestKind::OffsetDelete(r) => Box::pin(async move {
            Some(ResponseKind::OffsetDelete(
                b.coordinator.offset_delete(r, version).await,
            ))
        }),
        RequestKind::ListGroups(r) => ready(ResponseKind::ListGroups(
            broker.coordinator.list_groups(r, version),
        )),
        RequestKind::DescribeGroups(r) => ready(ResponseKind::DescribeGroups(
            broker.coordinator.describe_groups(r, version),
        )),
        RequestKind::DeleteGroups(r) => Box::pin(async move {
            Some(ResponseKind::DeleteGroups(
                b.coordinator.delete_groups(r, version).await,
            ))
        }),
        _ => {
            broker.metrics.error(api_key);
            return Err(format!("{api_key:?} is not served"));
        }
    };
    Ok(Pending {
        api_key,
        version,
        correlation_id,
        response,
        unacknowledged,
    })
}
