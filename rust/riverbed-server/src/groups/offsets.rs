//! OffsetCommit / OffsetFetch / OffsetDelete over the log's durable `__consumer_offsets` store
//! (the one the embedded groups use, so both sides see each other's commits).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use bytes::Buf;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::Decodable;
use riverbed_log::group::{NewCommit, OffsetEntry};

use super::group::Group;
use super::replies::str_bytes;
use super::Coordinator;

/// Kafka's `offset.metadata.max.bytes` default.
const MAX_METADATA_BYTES: usize = 4096;

/// Partitions of one group's OffsetFetch: `None` = every committed one.
type FetchSpec = Option<Vec<(String, Vec<i32>)>>;
/// Answers per topic: (partition, committed entry if any).
type Fetched = Vec<(String, Vec<(i32, Option<OffsetEntry>)>)>;

impl Coordinator {
    /// Whether `topic`/`partition` exists in the log.
    fn partition_exists(&self, topic: &str, partition: i32) -> bool {
        match (self.log.get_topic(topic), u32::try_from(partition)) {
            (Ok(t), Ok(p)) => p < t.num_partitions(),
            _ => false,
        }
    }

    pub(super) async fn commit_offsets(
        &self,
        req: OffsetCommitRequest,
        _version: i16,
    ) -> OffsetCommitResponse {
        let group_id = req.group_id.0.to_string();
        let generation = req.generation_id_or_member_epoch;
        let group_error: Option<ResponseError> = if self.is_closed() {
            Some(ResponseError::CoordinatorNotAvailable)
        } else if group_id.is_empty() {
            Some(ResponseError::InvalidGroupId)
        } else {
            let mut groups = self.groups.lock();
            match groups.get_mut(&group_id) {
                // Nothing known of the group: only a simple (non-member) commit may create it.
                None if generation < 0 => None,
                None => Some(ResponseError::IllegalGeneration),
                Some(g) => {
                    match g.check_commit(
                        &req.member_id,
                        req.group_instance_id.as_deref(),
                        generation,
                    ) {
                        Ok(as_member) => {
                            if as_member {
                                g.touch(&req.member_id, Instant::now());
                            }
                            None
                        }
                        Err(e) => Some(e),
                    }
                }
            }
        };
        // (topic, [(partition, code)]) in request order; code 0 = to be written.
        let mut results: Vec<(TopicName, Vec<(i32, i16)>)> = Vec::new();
        let mut commits: Vec<NewCommit> = Vec::new();
        for t in &req.topics {
            let mut parts = Vec::with_capacity(t.partitions.len());
            for p in &t.partitions {
                let metadata = p.committed_metadata.as_deref().unwrap_or_default();
                let error = if let Some(e) = group_error {
                    Some(e)
                } else if !self.partition_exists(&t.name, p.partition_index) {
                    Some(ResponseError::UnknownTopicOrPartition)
                } else if metadata.len() > MAX_METADATA_BYTES {
                    Some(ResponseError::OffsetMetadataTooLarge)
                } else {
                    None
                };
                if error.is_none() {
                    commits.push(NewCommit {
                        topic: t.name.to_string(),
                        partition: p.partition_index as u32,
                        offset: p.committed_offset,
                        metadata: metadata.to_string(),
                        leader_epoch: p.committed_leader_epoch,
                    });
                }
                parts.push((p.partition_index, error.map_or(0, |e| e.code())));
            }
            results.push((t.name.clone(), parts));
        }
        if !commits.is_empty() {
            let log = self.log.clone();
            let group = group_id.clone();
            let written = tokio::task::spawn_blocking(move || {
                log.groups()
                    .commit_entries(&log, &group, &commits)
                    .map_err(|e| {
                        let what: Vec<String> = commits
                            .iter()
                            .map(|c| format!("{}/{}@{}", c.topic, c.partition, c.offset))
                            .collect();
                        format!("{e} (offsets {})", what.join(", "))
                    })
            })
            .await
            .unwrap_or_else(|e| Err(format!("commit task failed: {e}")));
            if let Err(why) = written {
                eprintln!("riverbed serve: OffsetCommit of group '{group_id}' not stored: {why}");
                fail_unfailed(&mut results);
            }
        }
        let topics = results
            .into_iter()
            .map(|(name, parts)| {
                OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|(p, code)| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect();
        OffsetCommitResponse::default().with_topics(topics)
    }

    /// One group's committed offsets for `spec`.
    fn fetch_group(&self, group: &str, spec: FetchSpec) -> Result<Fetched, ResponseError> {
        if self.is_closed() {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        let store = self.log.groups();
        Ok(match spec {
            Some(topics) => topics
                .into_iter()
                .map(|(topic, parts)| {
                    let got = parts
                        .into_iter()
                        .map(|p| {
                            let e = u32::try_from(p)
                                .ok()
                                .and_then(|p| store.committed_entry(group, &topic, p));
                            (p, e)
                        })
                        .collect();
                    (topic, got)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, Option<OffsetEntry>)>> =
                    BTreeMap::new();
                for ((topic, p), e) in store.group_offsets(group) {
                    by_topic.entry(topic).or_default().push((p as i32, Some(e)));
                }
                by_topic.into_iter().collect()
            }
        })
    }

    pub(super) fn fetch_offsets(
        &self,
        req: OffsetFetchRequest,
        version: i16,
    ) -> OffsetFetchResponse {
        // A partition without a commit: offset -1, empty metadata, no error (as Kafka).
        let fields = |e: &Option<OffsetEntry>| match e {
            Some(e) => (e.offset, e.leader_epoch, e.metadata.clone()),
            None => (-1, -1, String::new()),
        };
        if version >= 8 {
            let groups = req
                .groups
                .into_iter()
                .map(|g| {
                    let spec = g.topics.map(|ts| {
                        ts.into_iter()
                            .map(|t| (t.name.to_string(), t.partition_indexes))
                            .collect()
                    });
                    let out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                    match self.fetch_group(&g.group_id, spec) {
                        Err(e) => out.with_error_code(e.code()),
                        Ok(found) => out.with_topics(
                            found
                                .into_iter()
                                .map(|(topic, parts)| {
                                    OffsetFetchResponseTopics::default()
                                        .with_name(TopicName(str_bytes(&topic)))
                                        .with_partitions(
                                            parts
                                                .iter()
                                                .map(|(p, e)| {
                                                    let (o, epoch, m) = fields(e);
                                                    OffsetFetchResponsePartitions::default()
                                                        .with_partition_index(*p)
                                                        .with_committed_offset(o)
                                                        .with_committed_leader_epoch(epoch)
                                                        .with_metadata(Some(str_bytes(&m)))
                                                })
                                                .collect(),
                                        )
                                })
                                .collect(),
                        ),
                    }
                })
                .collect();
            return OffsetFetchResponse::default().with_groups(groups);
        }
        let spec = req.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name.to_string(), t.partition_indexes))
                .collect()
        });
        let (found, error) = match self.fetch_group(&req.group_id, spec.clone()) {
            Ok(found) => (found, 0),
            // v1 has no top-level error code: the partitions asked for carry it.
            Err(e) if version < 2 => {
                let each = spec
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(t, ps)| (t, ps.into_iter().map(|p| (p, None)).collect()))
                    .collect();
                (each, e.code())
            }
            Err(e) => (Vec::new(), e.code()),
        };
        let partition_error = if version < 2 { error } else { 0 };
        OffsetFetchResponse::default()
            .with_error_code(error)
            .with_topics(
                found
                    .into_iter()
                    .map(|(topic, parts)| {
                        OffsetFetchResponseTopic::default()
                            .with_name(TopicName(str_bytes(&topic)))
                            .with_partitions(
                                parts
                                    .iter()
                                    .map(|(p, e)| {
                                        let (o, epoch, m) = fields(e);
                                        OffsetFetchResponsePartition::default()
                                            .with_partition_index(*p)
                                            .with_committed_offset(o)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(Some(str_bytes(&m)))
                                            .with_error_code(partition_error)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
    }

    pub(super) async fn delete_offsets(
        &self,
        req: OffsetDeleteRequest,
        _version: i16,
    ) -> OffsetDeleteResponse {
        let group_id = req.group_id.0.to_string();
        let top = |e: ResponseError| OffsetDeleteResponse::default().with_error_code(e.code());
        if self.is_closed() {
            return top(ResponseError::CoordinatorNotAvailable);
        }
        let store = self.log.groups();
        // Topics the group consumes now: their offsets stay (GROUP_SUBSCRIBED_TO_TOPIC).
        let subscribed: BTreeSet<String> = {
            let groups = self.groups.lock();
            let mut subscribed = store.member_topics(&group_id);
            match groups.get(&group_id) {
                Some(g) if g.state == super::GroupState::Dead => {
                    return top(ResponseError::GroupIdNotFound)
                }
                Some(g) if !g.members.is_empty() => match subscriptions(g) {
                    Some(topics) => subscribed.extend(topics),
                    None => return top(ResponseError::NonEmptyGroup),
                },
                Some(_) => {}
                None if subscribed.is_empty()
                    && !store.groups_with_offsets().contains(&group_id) =>
                {
                    return top(ResponseError::GroupIdNotFound)
                }
                None => {}
            }
            subscribed
        };
        let mut results: Vec<(TopicName, Vec<(i32, i16)>)> = Vec::new();
        let mut doomed: Vec<(String, u32)> = Vec::new();
        for t in &req.topics {
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    let i = p.partition_index;
                    let code = if !self.partition_exists(&t.name, i) {
                        ResponseError::UnknownTopicOrPartition.code()
                    } else if subscribed.contains(t.name.as_str()) {
                        ResponseError::GroupSubscribedToTopic.code()
                    } else {
                        doomed.push((t.name.to_string(), i as u32));
                        0
                    };
                    (i, code)
                })
                .collect();
            results.push((t.name.clone(), parts));
        }
        if !doomed.is_empty() {
            let log = self.log.clone();
            let group = group_id.clone();
            let done = tokio::task::spawn_blocking(move || {
                log.groups()
                    .delete_offsets(&log, &group, &doomed)
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(format!("delete task failed: {e}")));
            if let Err(why) = done {
                eprintln!("riverbed serve: OffsetDelete of group '{group_id}' failed: {why}");
                fail_unfailed(&mut results);
            }
        }
        let topics = results
            .into_iter()
            .map(|(name, parts)| {
                OffsetDeleteResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|(p, code)| {
                                OffsetDeleteResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect();
        OffsetDeleteResponse::default().with_topics(topics)
    }
}

/// Topics a "consumer" group's members subscribe to (from their JoinGroup metadata); `None`
/// when the group is not a consumer group or a subscription can't be read.
fn subscriptions(g: &Group) -> Option<BTreeSet<String>> {
    if g.protocol_type.as_deref() != Some("consumer") {
        return None;
    }
    let mut topics = BTreeSet::new();
    for m in g.members.values() {
        for (_, metadata) in &m.protocols {
            topics.extend(decode_subscription(metadata)?);
        }
    }
    Some(topics)
}

/// A ConsumerProtocolSubscription: a 2-byte version, then the body (newer versions read as
/// the newest we know, as Kafka does).
pub(super) fn decode_subscription(metadata: &bytes::Bytes) -> Option<Vec<String>> {
    let mut buf = metadata.clone();
    if buf.remaining() < 2 {
        return None;
    }
    let version = buf.get_i16().clamp(0, 3);
    let sub = ConsumerProtocolSubscription::decode(&mut buf, version).ok()?;
    Some(sub.topics.iter().map(|t| t.to_string()).collect())
}

/// A store write failed: every partition not already answered with an error gets
/// UNKNOWN_SERVER_ERROR (nothing of the request was stored).
fn fail_unfailed(results: &mut [(TopicName, Vec<(i32, i16)>)]) {
    for (_, parts) in results {
        for (_, code) in parts.iter_mut().filter(|(_, c)| *c == 0) {
            *code = ResponseError::UnknownServerError.code();
        }
    }
}
