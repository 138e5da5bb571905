//! The group coordinator: Kafka's classic consumer group protocol (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup; assignment stays client-side), committed offsets (OffsetCommit,
//! OffsetFetch, OffsetDelete) in the log's durable `__consumer_offsets` store, and
//! ListGroups / DescribeGroups / DeleteGroups.
//!
//! Interface used by the request dispatcher (kept stable between the two): every handler takes
//! the decoded request and the request's API version and returns the response to encode.
//! Handlers that wait (JoinGroup / SyncGroup during a rebalance) are async; none blocks the
//! runtime on disk I/O.

use std::sync::Arc;

use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse,
};
use riverbed_log::Log;

use crate::config::ServerConfig;

/// Who sent a request (JoinGroup records it; DescribeGroups reports it).
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub client_id: String,
    pub client_host: String,
}

/// One group's committed offset for one partition (for lag metrics).
#[derive(Debug, Clone)]
pub struct CommittedOffset {
    pub group: String,
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
}

pub struct Coordinator {
    #[allow(dead_code)]
    log: Log,
    #[allow(dead_code)]
    config: ServerConfig,
}

impl Coordinator {
    pub fn new(log: Log, config: &ServerConfig) -> anyhow::Result<Arc<Coordinator>> {
        Ok(Arc::new(Coordinator {
            log,
            config: config.clone(),
        }))
    }

    pub async fn join_group(
        self: &Arc<Self>,
        _req: JoinGroupRequest,
        _version: i16,
        _client: &ClientInfo,
    ) -> JoinGroupResponse {
        JoinGroupResponse::default()
    }

    pub async fn sync_group(
        self: &Arc<Self>,
        _req: SyncGroupRequest,
        _version: i16,
    ) -> SyncGroupResponse {
        SyncGroupResponse::default()
    }

    pub fn heartbeat(&self, _req: HeartbeatRequest, _version: i16) -> HeartbeatResponse {
        HeartbeatResponse::default()
    }

    pub fn leave_group(&self, _req: LeaveGroupRequest, _version: i16) -> LeaveGroupResponse {
        LeaveGroupResponse::default()
    }

    pub async fn offset_commit(
        &self,
        _req: OffsetCommitRequest,
        _version: i16,
    ) -> OffsetCommitResponse {
        OffsetCommitResponse::default()
    }

    pub fn offset_fetch(&self, _req: OffsetFetchRequest, _version: i16) -> OffsetFetchResponse {
        OffsetFetchResponse::default()
    }

    pub async fn offset_delete(
        &self,
        _req: OffsetDeleteRequest,
        _version: i16,
    ) -> OffsetDeleteResponse {
        OffsetDeleteResponse::default()
    }

    pub fn list_groups(&self, _req: ListGroupsRequest, _version: i16) -> ListGroupsResponse {
        ListGroupsResponse::default()
    }

    pub fn describe_groups(
        &self,
        _req: DescribeGroupsRequest,
        _version: i16,
    ) -> DescribeGroupsResponse {
        DescribeGroupsResponse::default()
    }

    pub async fn delete_groups(
        &self,
        _req: DeleteGroupsRequest,
        _version: i16,
    ) -> DeleteGroupsResponse {
        DeleteGroupsResponse::default()
    }

    /// Every group's committed offsets (for the consumer-group lag metric).
    pub fn committed_offsets(&self) -> Vec<CommittedOffset> {
        Vec::new()
    }

    /// Stop: fail pending joins/syncs with a retriable error so clients move on.
    pub fn shutdown(&self) {}
}
