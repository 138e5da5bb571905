//! The group coordinator: Kafka's classic consumer group protocol (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup; assignment stays client-side), committed offsets (OffsetCommit,
//! OffsetFetch, OffsetDelete) in the log's durable `__consumer_offsets` store, and
//! ListGroups / DescribeGroups / DeleteGroups.
//!
//! Interface used by the request dispatcher (kept stable between the two): every handler takes
//! the decoded request and the request's API version and returns the response to encode.
//! Handlers that wait (JoinGroup / SyncGroup during a rebalance) are async; none blocks the
//! runtime on disk I/O (commits and deletions run on `spawn_blocking`).
//!
//! Versions handled: JoinGroup 0-9, SyncGroup 0-5, Heartbeat 0-4, LeaveGroup 0-5,
//! OffsetCommit 2-9, OffsetFetch 1-9, OffsetDelete 0, ListGroups 0-5, DescribeGroups 0-6,
//! DeleteGroups 0-2 (every version `kafka-protocol` 0.18 decodes).
//!
//! Layout: `state` (Kafka's state names), `member`, `group` (one group's state machine: the
//! join phase; `group/sync` the SyncGroup phase; `group/liveness` heartbeats, leaving and
//! deadlines), `replies` (version-shaped responses), `offsets` (OffsetCommit/Fetch/Delete),
//! `admin` (List/Describe/DeleteGroups), `ids` (member ids).

mod admin;
mod group;
mod ids;
mod member;
mod offsets;
mod replies;
mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse,
};
use parking_lot::Mutex;
use riverbed_log::Log;
use tokio::sync::{oneshot, Notify};

use crate::config::ServerConfig;
use group::{Group, JoinOutcome, JoinParams, SyncOutcome, SyncParams};
use ids::MemberIds;
use replies::{join_error, str_bytes, sync_error};

pub use state::GroupState;

/// Who sent a request (JoinGroup records it; DescribeGroups reports it).
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub client_id: String,
    pub client_host: String,
}

/// One group's committed offset for one partition (for lag metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub group: String,
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
}

/// How often the timer looks at the groups even without a deadline: a member whose waiting
/// JoinGroup/SyncGroup lost its client is noticed within this.
const SWEEP: Duration = Duration::from_millis(250);
/// Extra time a parked JoinGroup/SyncGroup waits beyond the rebalance timeout before it gives
/// up by itself (the timer normally answers it first).
const WAIT_SLACK: Duration = Duration::from_secs(5);

pub struct Coordinator {
    log: Log,
    config: ServerConfig,
    groups: Mutex<HashMap<String, Group>>,
    wake: Arc<Notify>,
    timer_started: AtomicBool,
    closed: AtomicBool,
    ids: MemberIds,
}

fn ms(v: i32) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

impl Coordinator {
    pub fn new(log: Log, config: &ServerConfig) -> anyhow::Result<Arc<Coordinator>> {
        Ok(Arc::new(Coordinator {
            log,
            config: config.clone(),
            groups: Mutex::new(HashMap::new()),
            wake: Arc::new(Notify::new()),
            timer_started: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            ids: MemberIds::new(),
        }))
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Start the task that applies session, rebalance and sync deadlines (once, on the runtime
    /// that serves the first JoinGroup).
    fn ensure_timer(self: &Arc<Self>) {
        if self.timer_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(self);
        let wake = self.wake.clone();
        tokio::spawn(async move {
            loop {
                let now = Instant::now();
                let next = match weak.upgrade() {
                    Some(c) if !c.is_closed() => c.tick(now),
                    _ => return,
                };
                let at = next.map_or(now + SWEEP, |n| n.min(now + SWEEP));
                tokio::select! {
                    _ = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                    _ = wake.notified() => {}
                }
            }
        });
    }

    /// Apply every passed deadline; the next one.
    fn tick(&self, now: Instant) -> Option<Instant> {
        let mut groups = self.groups.lock();
        groups
            .values_mut()
            .filter_map(|g| {
                g.on_timer(now);
                g.next_deadline()
            })
            .min()
    }

    /// How long a parked request may wait before giving up on its own.
    fn wait_bound(&self, group: &Group) -> Duration {
        let longest = group
            .members
            .values()
            .map(|m| m.rebalance_timeout.max(m.session_timeout))
            .max()
            .unwrap_or_default();
        longest + ms(self.config.group_initial_rebalance_delay_ms) + WAIT_SLACK
    }

    pub async fn join_group(
        self: &Arc<Self>,
        req: JoinGroupRequest,
        version: i16,
        client: &ClientInfo,
    ) -> JoinGroupResponse {
        let member_id = req.member_id.to_string();
        let fail = |e: ResponseError| join_error(version, e.code(), &member_id);
        if self.is_closed() {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        let group_id = req.group_id.0.to_string();
        if group_id.is_empty() {
            return fail(ResponseError::InvalidGroupId);
        }
        if req.session_timeout_ms < self.config.group_min_session_timeout_ms
            || req.session_timeout_ms > self.config.group_max_session_timeout_ms
        {
            return fail(ResponseError::InvalidSessionTimeout);
        }
        let session_timeout = ms(req.session_timeout_ms);
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        let rebalance_timeout = if version == 0 || req.rebalance_timeout_ms <= 0 {
            session_timeout
        } else {
            ms(req.rebalance_timeout_ms)
        };
        let instance_id = req.group_instance_id.as_ref().map(|s| s.to_string());
        let prefix = instance_id
            .clone()
            .unwrap_or_else(|| client.client_id.clone());
        let params = JoinParams {
            member_id: member_id.clone(),
            instance_id,
            client_id: client.client_id.clone(),
            client_host: client.client_host.clone(),
            session_timeout,
            rebalance_timeout,
            protocol_type: req.protocol_type.to_string(),
            protocols: req
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect(),
            version,
        };
        self.ensure_timer();
        let (outcome, bound) = {
            let mut groups = self.groups.lock();
            let group = if member_id.is_empty() {
                groups
                    .entry(group_id.clone())
                    .or_insert_with(|| Group::new(&group_id))
            } else {
                match groups.get_mut(&group_id) {
                    Some(g) => g,
                    None => return fail(ResponseError::UnknownMemberId),
                }
            };
            let delay = ms(self.config.group_initial_rebalance_delay_ms);
            let outcome = group.join(params, self.ids.next(&prefix), Instant::now(), delay);
            let bound = self.wait_bound(group);
            // A refused first join leaves no empty group behind.
            if group.state == GroupState::Empty
                && group.members.is_empty()
                && group.pending.is_empty()
                && group.protocol_type.is_none()
            {
                groups.remove(&group_id);
            }
            (outcome, bound)
        };
        self.wake.notify_one();
        match outcome {
            JoinOutcome::Reply(r) => r,
            JoinOutcome::Wait(rx) => wait(rx, bound)
                .await
                .unwrap_or_else(|| fail(ResponseError::RebalanceInProgress)),
        }
    }

    pub async fn sync_group(
        self: &Arc<Self>,
        req: SyncGroupRequest,
        version: i16,
    ) -> SyncGroupResponse {
        let fail = |e: ResponseError| sync_error(e.code());
        if self.is_closed() {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        let group_id = req.group_id.0.to_string();
        if group_id.is_empty() {
            return fail(ResponseError::InvalidGroupId);
        }
        let params = SyncParams {
            member_id: req.member_id.to_string(),
            instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
            generation: req.generation_id,
            protocol_type: req.protocol_type.as_ref().map(|s| s.to_string()),
            protocol_name: req.protocol_name.as_ref().map(|s| s.to_string()),
            assignments: req
                .assignments
                .iter()
                .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                .collect(),
            version,
        };
        let (outcome, bound) = {
            let mut groups = self.groups.lock();
            let Some(group) = groups.get_mut(&group_id) else {
                return fail(ResponseError::UnknownMemberId);
            };
            (group.sync(params, Instant::now()), self.wait_bound(group))
        };
        self.wake.notify_one();
        match outcome {
            SyncOutcome::Reply(r) => r,
            SyncOutcome::Wait(rx) => wait(rx, bound)
                .await
                .unwrap_or_else(|| fail(ResponseError::RebalanceInProgress)),
        }
    }

    pub fn heartbeat(&self, req: HeartbeatRequest, _version: i16) -> HeartbeatResponse {
        let code = if self.is_closed() {
            ResponseError::CoordinatorNotAvailable.code()
        } else {
            match self.groups.lock().get_mut(&*req.group_id.0) {
                None => ResponseError::UnknownMemberId.code(),
                Some(g) => g.heartbeat(
                    &req.member_id,
                    req.group_instance_id.as_deref(),
                    req.generation_id,
                    Instant::now(),
                ),
            }
        };
        HeartbeatResponse::default().with_error_code(code)
    }

    pub fn leave_group(&self, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
        if self.is_closed() {
            return LeaveGroupResponse::default()
                .with_error_code(ResponseError::CoordinatorNotAvailable.code());
        }
        // v0-2 name one member; v3+ a batch (static members by instance id).
        let leaving: Vec<(String, Option<String>)> = if version < 3 {
            vec![(req.member_id.to_string(), None)]
        } else {
            req.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_ref().map(|s| s.to_string()),
                    )
                })
                .collect()
        };
        let codes: Vec<i16> = {
            let mut groups = self.groups.lock();
            let now = Instant::now();
            match groups.get_mut(&*req.group_id.0) {
                None => vec![ResponseError::UnknownMemberId.code(); leaving.len()],
                Some(g) => leaving
                    .iter()
                    .map(|(id, instance)| g.leave(id, instance.as_deref(), now))
                    .collect(),
            }
        };
        self.wake.notify_one();
        if version < 3 {
            return LeaveGroupResponse::default()
                .with_error_code(codes.first().copied().unwrap_or(0));
        }
        let members = leaving
            .iter()
            .zip(codes)
            .map(|((id, instance), code)| {
                MemberResponse::default()
                    .with_member_id(str_bytes(id))
                    .with_group_instance_id(instance.as_deref().map(str_bytes))
                    .with_error_code(code)
            })
            .collect();
        LeaveGroupResponse::default().with_members(members)
    }

    pub async fn offset_commit(
        &self,
        req: OffsetCommitRequest,
        version: i16,
    ) -> OffsetCommitResponse {
        self.commit_offsets(req, version).await
    }

    pub fn offset_fetch(&self, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
        self.fetch_offsets(req, version)
    }

    pub async fn offset_delete(
        &self,
        req: OffsetDeleteRequest,
        version: i16,
    ) -> OffsetDeleteResponse {
        self.delete_offsets(req, version).await
    }

    pub fn list_groups(&self, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
        self.list(req, version)
    }

    pub fn describe_groups(
        &self,
        req: DescribeGroupsRequest,
        version: i16,
    ) -> DescribeGroupsResponse {
        self.describe(req, version)
    }

    pub async fn delete_groups(
        &self,
        req: DeleteGroupsRequest,
        version: i16,
    ) -> DeleteGroupsResponse {
        self.delete(req, version).await
    }

    /// Every group's committed offsets (for the consumer-group lag metric).
    pub fn committed_offsets(&self) -> Vec<CommittedOffset> {
        self.log
            .groups()
            .all_offsets()
            .into_iter()
            .map(|((group, topic, partition), offset)| CommittedOffset {
                group,
                topic,
                partition,
                offset,
            })
            .collect()
    }

    /// Stop: fail pending joins/syncs with a retriable error so clients move on.
    pub fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let code = ResponseError::CoordinatorNotAvailable.code();
        for g in self.groups.lock().values_mut() {
            g.release_waiters(code);
        }
        self.wake.notify_one();
    }

    /// A group's state name as DescribeGroups reports it (for tests and metrics).
    pub fn group_state(&self, group: &str) -> Option<GroupState> {
        self.groups.lock().get(group).map(|g| g.state)
    }
}

/// A parked request's answer; `None` if nothing answered it within `bound` (or it was dropped).
async fn wait<T>(rx: oneshot::Receiver<T>, bound: Duration) -> Option<T> {
    match tokio::time::timeout(bound, rx).await {
        Ok(Ok(r)) => Some(r),
        _ => None,
    }
}
