//! Helpers for the group coordinator tests: a coordinator over a temporary log, and requests
//! built the way Kafka clients send them.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use riverbed_log::{FsyncPolicy, Log, LogOptions, TopicOptions};
use riverbed_server::groups::{ClientInfo, Coordinator, GroupState};
use riverbed_server::ServerConfig;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

pub const NONE: i16 = 0;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const INVALID_GROUP_ID: i16 = 24;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const MEMBER_ID_REQUIRED: i16 = 79;
pub const FENCED_INSTANCE_ID: i16 = 82;
pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;

pub fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub fn gid(v: &str) -> GroupId {
    GroupId(s(v))
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub log: Log,
    pub coord: Arc<Coordinator>,
}

pub fn config(initial_delay_ms: i32) -> ServerConfig {
    ServerConfig {
        group_min_session_timeout_ms: 10,
        group_max_session_timeout_ms: 60_000,
        group_initial_rebalance_delay_ms: initial_delay_ms,
        ..ServerConfig::default()
    }
}

pub fn log_options() -> LogOptions {
    LogOptions {
        fsync: FsyncPolicy::Never,
        cleanup_interval: None,
    }
}

pub fn harness(initial_delay_ms: i32) -> Result<Harness, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), log_options())?;
    let coord = Coordinator::new(log.clone(), &config(initial_delay_ms))?;
    Ok(Harness { dir, log, coord })
}

impl Harness {
    pub fn topic(&self, name: &str, partitions: u32) -> Result<(), Box<dyn std::error::Error>> {
        self.log.topic(
            name,
            &TopicOptions {
                partitions: Some(partitions),
                ..Default::default()
            },
        )?;
        Ok(())
    }
}

/// A consumer-protocol subscription, as the Java client / librdkafka encode it (version 1).
pub fn subscription(topics: &[&str]) -> Bytes {
    let sub =
        ConsumerProtocolSubscription::default().with_topics(topics.iter().map(|t| s(t)).collect());
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&1i16.to_be_bytes());
    sub.encode(&mut buf, 1).expect("encode subscription");
    buf.freeze()
}

pub fn client(id: &str) -> ClientInfo {
    ClientInfo {
        client_id: id.into(),
        client_host: "/127.0.0.1".into(),
    }
}

/// A JoinGroup of protocol type "consumer" with `protocols` (name, subscribed topics).
pub fn join_req(
    group: &str,
    member: &str,
    session_ms: i32,
    rebalance_ms: i32,
    protocols: &[(&str, &[&str])],
) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(rebalance_ms)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(
            protocols
                .iter()
                .map(|(name, topics)| {
                    JoinGroupRequestProtocol::default()
                        .with_name(s(name))
                        .with_metadata(subscription(topics))
                })
                .collect(),
        )
}

pub fn sync_req(
    group: &str,
    member: &str,
    generation: i32,
    assignments: &[(&str, &[u8])],
) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(gid(group))
        .with_member_id(s(member))
        .with_generation_id(generation)
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::copy_from_slice(a))
                })
                .collect(),
        )
}

pub fn heartbeat(coord: &Coordinator, group: &str, member: &str, generation: i32) -> i16 {
    coord
        .heartbeat(
            HeartbeatRequest::default()
                .with_group_id(gid(group))
                .with_member_id(s(member))
                .with_generation_id(generation),
            4,
        )
        .error_code
}

pub fn leave_v3(group: &str, members: &[(&str, Option<&str>)]) -> LeaveGroupRequest {
    LeaveGroupRequest::default()
        .with_group_id(gid(group))
        .with_members(
            members
                .iter()
                .map(|(m, i)| {
                    MemberIdentity::default()
                        .with_member_id(s(m))
                        .with_group_instance_id(i.map(s))
                })
                .collect(),
        )
}

/// JoinGroup v5 the way a new member does it: MEMBER_ID_REQUIRED, then again with the id.
/// Returns the (second) join's task: it waits for the rebalance.
pub async fn join_new(
    coord: &Arc<Coordinator>,
    group: &str,
    client_id: &str,
    session_ms: i32,
    rebalance_ms: i32,
    protocols: &[(&str, &[&str])],
) -> Result<tokio::task::JoinHandle<JoinGroupResponse>, Box<dyn std::error::Error>> {
    let first = coord
        .join_group(
            join_req(group, "", session_ms, rebalance_ms, protocols),
            5,
            &client(client_id),
        )
        .await;
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    let id = first.member_id.to_string();
    assert!(id.starts_with(&format!("{client_id}-")), "member id {id}");
    let req = join_req(group, &id, session_ms, rebalance_ms, protocols);
    let c = coord.clone();
    let cl = client(client_id);
    Ok(tokio::spawn(async move { c.join_group(req, 5, &cl).await }))
}

pub fn rejoin(
    coord: &Arc<Coordinator>,
    group: &str,
    member: &str,
    session_ms: i32,
    rebalance_ms: i32,
    protocols: &[(&str, &[&str])],
) -> tokio::task::JoinHandle<JoinGroupResponse> {
    let req = join_req(group, member, session_ms, rebalance_ms, protocols);
    let c = coord.clone();
    let cl = client(member);
    tokio::spawn(async move { c.join_group(req, 5, &cl).await })
}

pub fn sync(
    coord: &Arc<Coordinator>,
    req: SyncGroupRequest,
) -> tokio::task::JoinHandle<SyncGroupResponse> {
    let c = coord.clone();
    tokio::spawn(async move { c.sync_group(req, 5).await })
}

/// Wait (up to 5 s) until `group` is in `state`.
pub async fn wait_state(coord: &Coordinator, group: &str, state: GroupState) {
    let started = std::time::Instant::now();
    while coord.group_state(group) != Some(state) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "group {group} is {:?}, not {state:?}",
            coord.group_state(group)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether a task is still waiting after `ms`.
pub async fn still_waiting<T>(task: &tokio::task::JoinHandle<T>, ms: u64) -> bool {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    !task.is_finished()
}

pub fn member_ids(r: &JoinGroupResponse) -> Vec<String> {
    let mut v: Vec<String> = r.members.iter().map(|m| m.member_id.to_string()).collect();
    v.sort();
    v
}

/// Two members a and b of `group` in one generation, both in CompletingRebalance (no
/// SyncGroup sent yet). Returns (a's answer, b's answer); the generation is 2.
pub async fn pair(
    coord: &Arc<Coordinator>,
    group: &str,
    session_ms: i32,
    rebalance_ms: i32,
    protocols: &[(&str, &[&str])],
) -> Result<(JoinGroupResponse, JoinGroupResponse), Box<dyn std::error::Error>> {
    let a = join_new(coord, group, "a", session_ms, rebalance_ms, protocols)
        .await?
        .await?;
    let a_id = a.member_id.to_string();
    assert_eq!(a.generation_id, 1);
    let b = join_new(coord, group, "b", session_ms, rebalance_ms, protocols).await?;
    // a rejoins once b's join started the rebalance (before, a's join just gets generation 1)
    wait_state(coord, group, GroupState::PreparingRebalance).await;
    let a = rejoin(coord, group, &a_id, session_ms, rebalance_ms, protocols).await?;
    let b = b.await?;
    assert_eq!((a.error_code, b.error_code), (NONE, NONE));
    assert_eq!((a.generation_id, b.generation_id), (2, 2));
    Ok((a, b))
}

/// `pair`, then both synced (a assigns "A" to itself and "B" to b): Stable at generation 2.
pub async fn stable_pair(
    coord: &Arc<Coordinator>,
    group: &str,
    session_ms: i32,
    rebalance_ms: i32,
    protocols: &[(&str, &[&str])],
) -> Result<(String, String), Box<dyn std::error::Error>> {
    let (a, b) = pair(coord, group, session_ms, rebalance_ms, protocols).await?;
    let (a_id, b_id) = (a.member_id.to_string(), b.member_id.to_string());
    let plan: &[(&str, &[u8])] = &[(&a_id, b"A"), (&b_id, b"B")];
    let sa = sync(coord, sync_req(group, &a_id, 2, plan));
    let sb = sync(coord, sync_req(group, &b_id, 2, plan));
    let (sa, sb) = (sa.await?, sb.await?);
    assert_eq!(
        (&sa.assignment[..], &sb.assignment[..]),
        (&b"A"[..], &b"B"[..])
    );
    Ok((a_id, b_id))
}
