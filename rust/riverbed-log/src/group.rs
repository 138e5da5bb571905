//! Consumer groups inside one process: members of a group split each topic's partitions by
//! Kafka's range assignment and rebalance when one joins or leaves. Committed offsets are stored
//! durably in the internal compacted topic `__consumer_offsets`, keyed by (group, topic, partition).
//!
//! Handover: when a partition moves from one member to another, the old owner's position (the
//! records its polls already returned) is committed first and the new owner starts there, so a
//! clean rebalance neither repeats nor skips a record.

use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::config::{Cleanup, TopicOptions};
use crate::error::{LogError, Result};
use crate::partition::NewRecord;
use crate::topic::Topic;
pub use crate::topic::OFFSETS_TOPIC;

type CommitKey = (String, String, u32);

/// One committed offset as stored: the offset plus what Kafka clients commit with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetEntry {
    pub offset: i64,
    /// The client's metadata string (Kafka's OffsetCommit `committed_metadata`; "" if none).
    pub metadata: String,
    /// The leader epoch the client saw (-1 if unknown).
    pub leader_epoch: i32,
    /// When it was committed (ms since the epoch).
    pub committed_at: i64,
}

/// One offset to commit, for [`GroupCoordinator::commit_entries`].
#[derive(Debug, Clone)]
pub struct NewCommit {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub metadata: String,
    pub leader_epoch: i32,
}

#[derive(Debug)]
struct Member {
    topic: Arc<Topic>,
    /// Assigned partitions and their positions (`None` until the consumer resolves its start).
    positions: BTreeMap<u32, Option<i64>>,
}

#[derive(Debug, Default)]
struct GroupState {
    generation: u64,
    next_member: u64,
    members: BTreeMap<u64, Member>,
}

#[derive(Debug, Default)]
pub struct GroupCoordinator {
    committed: Mutex<HashMap<CommitKey, OffsetEntry>>,
    /// Held across "append to `__consumer_offsets`, then update `committed`", so two writers of
    /// one key leave the map and the log agreeing on the last value (readers never wait on it).
    writer: Mutex<()>,
    groups: Mutex<HashMap<String, GroupState>>,
}

fn encode_key(group: &str, topic: &str, partition: u32) -> Vec<u8> {
    serde_json::to_vec(&(group, topic, partition)).unwrap_or_default()
}

/// A stored value: `{"offset", "committed_at"}` plus, from Kafka clients, `"metadata"` and
/// `"leader_epoch"` (absent in older records: "" and -1). Anything else reads as a tombstone.
fn decode_value(v: &[u8]) -> Option<OffsetEntry> {
    let v: serde_json::Value = serde_json::from_slice(v).ok()?;
    Some(OffsetEntry {
        offset: v.get("offset")?.as_i64()?,
        metadata: v
            .get("metadata")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_string(),
        leader_epoch: v
            .get("leader_epoch")
            .and_then(|e| e.as_i64())
            .and_then(|e| i32::try_from(e).ok())
            .unwrap_or(-1),
        committed_at: v.get("committed_at").and_then(|t| t.as_i64()).unwrap_or(0),
    })
}

/// Where a coordinator keeps the committed offsets: the log that owns it (`Log` implements
/// this in `log.rs`; the coordinator does not know the log otherwise).
pub trait OffsetsHome {
    /// The topic named `name`, created with `options` if missing.
    fn offsets_topic_named(&self, name: &str, options: &TopicOptions) -> Result<Arc<Topic>>;
    /// Whether the log is closed (a member leaving then commits nothing).
    fn is_closed(&self) -> bool;
}

fn offsets_topic(log: &dyn OffsetsHome) -> Result<Arc<Topic>> {
    log.offsets_topic_named(
        OFFSETS_TOPIC,
        &TopicOptions {
            partitions: Some(1),
            cleanup: Some(Cleanup::Compact),
            segment_bytes: Some(16 << 20),
            ..Default::default()
        },
    )
}

/// A member's view at one generation: its partitions and positions.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub generation: u64,
    pub positions: Vec<(u32, Option<i64>)>,
}

impl GroupCoordinator {
    /// Read every committed offset back from `__consumer_offsets`.
    pub(crate) fn load(&self, log: &dyn OffsetsHome) -> Result<()> {
        let topic = match offsets_topic(log) {
            Ok(t) => t,
            // Damaged metadata: reported in the open report; commits fail until it is repaired.
            Err(LogError::Corrupt { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let part = topic.partition(0)?;
        let (mut from, latest) = part.offsets();
        let mut committed = self.committed.lock();
        while from < latest {
            let read = part.read(from, usize::MAX, usize::MAX, |r| {
                let key: Option<CommitKey> = r.key.and_then(|k| serde_json::from_slice(k).ok());
                if let Some(key) = key {
                    match r.value.and_then(decode_value) {
                        Some(entry) => {
                            committed.insert(key, entry);
                        }
                        None => {
                            committed.remove(&key);
                        }
                    }
                }
                true
            });
            from = match read {
                Ok(next) if next > from => next,
                Ok(_) => break,
                // A damaged range of commits (reported at open): the commits after it still count.
                Err(LogError::Gap(g)) => g.to,
                Err(e) => return Err(e),
            };
        }
        Ok(())
    }

    /// Durably record committed offsets for (group, topic).
    pub fn commit(
        &self,
        log: &dyn OffsetsHome,
        group: &str,
        topic: &str,
        offsets: &[(u32, i64)],
    ) -> Result<()> {
        let commits: Vec<NewCommit> = offsets
            .iter()
            .map(|&(partition, offset)| NewCommit {
                topic: topic.to_string(),
                partition,
                offset,
                metadata: String::new(),
                leader_epoch: -1,
            })
            .collect();
        self.commit_entries(log, group, &commits)
    }

    /// Durably record offsets of any topics for `group` in one append (one fsync under the
    /// `batch` policy); visible to readers once durable.
    pub fn commit_entries(
        &self,
        log: &dyn OffsetsHome,
        group: &str,
        commits: &[NewCommit],
    ) -> Result<()> {
        if commits.is_empty() {
            return Ok(());
        }
        let now = crate::fsutil::now_ms();
        let rows: Vec<(Vec<u8>, Vec<u8>)> = commits
            .iter()
            .map(|c| {
                let value = serde_json::json!({
                    "offset": c.offset,
                    "committed_at": now,
                    "metadata": c.metadata,
                    "leader_epoch": c.leader_epoch,
                });
                (
                    encode_key(group, &c.topic, c.partition),
                    value.to_string().into_bytes(),
                )
            })
            .collect();
        let records = rows.iter().map(|(k, v)| NewRecord {
            timestamp: now,
            key: Some(k),
            value: Some(v),
            headers: &[],
        });
        let _writer = self.writer.lock();
        offsets_topic(log)?.partition(0)?.append(records)?;
        let mut committed = self.committed.lock();
        for c in commits {
            committed.insert(
                (group.to_string(), c.topic.clone(), c.partition),
                OffsetEntry {
                    offset: c.offset,
                    metadata: c.metadata.clone(),
                    leader_epoch: c.leader_epoch,
                    committed_at: now,
                },
            );
        }
        Ok(())
    }

    pub fn committed(&self, group: &str, topic: &str, partition: u32) -> Option<i64> {
        self.committed_entry(group, topic, partition)
            .map(|e| e.offset)
    }

    pub fn committed_entry(&self, group: &str, topic: &str, partition: u32) -> Option<OffsetEntry> {
        self.committed
            .lock()
            .get(&(group.to_string(), topic.to_string(), partition))
            .cloned()
    }

    /// Every committed offset of `group`, by (topic, partition).
    pub fn group_offsets(&self, group: &str) -> BTreeMap<(String, u32), OffsetEntry> {
        self.committed
            .lock()
            .iter()
            .filter(|(k, _)| k.0 == group)
            .map(|(k, e)| ((k.1.clone(), k.2), e.clone()))
            .collect()
    }

    /// Every committed offset: (group, topic, partition) -> offset.
    pub fn all_offsets(&self) -> BTreeMap<(String, String, u32), i64> {
        self.committed
            .lock()
            .iter()
            .map(|(k, e)| (k.clone(), e.offset))
            .collect()
    }

    /// Groups that have at least one committed offset.
    pub fn groups_with_offsets(&self) -> BTreeSet<String> {
        self.committed.lock().keys().map(|k| k.0.clone()).collect()
    }

    /// Durably remove `group`'s commits for these (topic, partition)s (tombstones); the ones
    /// that had no commit are skipped. Returns how many were removed.
    pub fn delete_offsets(
        &self,
        log: &dyn OffsetsHome,
        group: &str,
        keys: &[(String, u32)],
    ) -> Result<usize> {
        let _writer = self.writer.lock();
        let present: Vec<CommitKey> = {
            let committed = self.committed.lock();
            keys.iter()
                .map(|(t, p)| (group.to_string(), t.clone(), *p))
                .filter(|k| committed.contains_key(k))
                .collect()
        };
        self.tombstone(log, &present)?;
        Ok(present.len())
    }

    /// Durably remove every commit of `group`. Returns how many were removed.
    pub fn delete_group_offsets(&self, log: &dyn OffsetsHome, group: &str) -> Result<usize> {
        let _writer = self.writer.lock();
        let keys: Vec<CommitKey> = self
            .committed
            .lock()
            .keys()
            .filter(|k| k.0 == group)
            .cloned()
            .collect();
        self.tombstone(log, &keys)?;
        Ok(keys.len())
    }

    /// Append tombstones for `keys`, then forget them (the caller holds `writer`).
    fn tombstone(&self, log: &dyn OffsetsHome, keys: &[CommitKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let now = crate::fsutil::now_ms();
        let encoded: Vec<Vec<u8>> = keys.iter().map(|k| encode_key(&k.0, &k.1, k.2)).collect();
        let records = encoded.iter().map(|k| NewRecord {
            timestamp: now,
            key: Some(k),
            value: None,
            headers: &[],
        });
        offsets_topic(log)?.partition(0)?.append(records)?;
        let mut committed = self.committed.lock();
        for k in keys {
            committed.remove(k);
        }
        Ok(())
    }

    /// Tombstone every commit for a deleted topic.
    pub(crate) fn forget_topic(&self, log: &dyn OffsetsHome, topic: &str) -> Result<()> {
        let _writer = self.writer.lock();
        let keys: Vec<CommitKey> = self
            .committed
            .lock()
            .keys()
            .filter(|k| k.1 == topic)
            .cloned()
            .collect();
        self.tombstone(log, &keys)
    }

    /// Add a member subscribed to `topic`; returns its id. Triggers a rebalance.
    pub fn join(&self, log: &dyn OffsetsHome, group: &str, topic: Arc<Topic>) -> Result<u64> {
        let mut groups = self.groups.lock();
        let state = groups.entry(group.to_string()).or_default();
        let id = state.next_member;
        state.next_member += 1;
        state.members.insert(
            id,
            Member {
                topic,
                positions: BTreeMap::new(),
            },
        );
        self.rebalance(log, group, state)?;
        Ok(id)
    }

    /// Remove a member, committing its positions, and rebalance the rest.
    pub fn leave(&self, log: &dyn OffsetsHome, group: &str, member: u64) -> Result<()> {
        let mut groups = self.groups.lock();
        let Some(state) = groups.get_mut(group) else {
            return Ok(());
        };
        let Some(m) = state.members.remove(&member) else {
            return Ok(());
        };
        let positions: Vec<(u32, i64)> = m
            .positions
            .iter()
            .filter_map(|(&p, o)| o.map(|o| (p, o)))
            .collect();
        if !log.is_closed() {
            self.commit(log, group, &m.topic.name, &positions)?;
            self.rebalance(log, group, state)?;
        }
        if state.members.is_empty() {
            groups.remove(group);
        }
        Ok(())
    }

    /// Range assignment per topic: members sorted by id, each gets a contiguous run of
    /// partitions, the first `n % m` one extra.
    fn rebalance(&self, log: &dyn OffsetsHome, group: &str, state: &mut GroupState) -> Result<()> {
        let mut by_topic: BTreeMap<String, (u32, Vec<u64>)> = BTreeMap::new();
        for (&id, m) in &state.members {
            by_topic
                .entry(m.topic.name.to_string())
                .or_insert((m.topic.num_partitions(), Vec::new()))
                .1
                .push(id);
        }
        let mut wanted: HashMap<u64, Vec<u32>> = HashMap::new();
        for (n, ids) in by_topic.values() {
            let (n, m) = (*n as usize, ids.len());
            let mut start = 0;
            for (i, id) in ids.iter().enumerate() {
                let count = n / m + usize::from(i < n % m);
                wanted.insert(*id, (start..start + count).map(|p| p as u32).collect());
                start += count;
            }
        }
        let mut to_commit: BTreeMap<String, Vec<(u32, i64)>> = BTreeMap::new();
        for (id, m) in state.members.iter_mut() {
            let want = wanted.remove(id).unwrap_or_default();
            let revoked: Vec<u32> = m
                .positions
                .keys()
                .filter(|p| !want.contains(p))
                .copied()
                .collect();
            for p in revoked {
                if let Some(Some(o)) = m.positions.remove(&p) {
                    to_commit
                        .entry(m.topic.name.to_string())
                        .or_default()
                        .push((p, o));
                }
            }
            for p in want {
                m.positions.entry(p).or_insert(None);
            }
        }
        for (topic, offsets) in to_commit {
            self.commit(log, group, &topic, &offsets)?;
        }
        state.generation += 1;
        Ok(())
    }

    pub fn assignment(&self, group: &str, member: u64) -> Result<Assignment> {
        let groups = self.groups.lock();
        let state = groups.get(group).ok_or_else(|| {
            LogError::InvalidArgument(format!("consumer is no longer in group '{group}'"))
        })?;
        let m = state.members.get(&member).ok_or_else(|| {
            LogError::InvalidArgument(format!("consumer is no longer in group '{group}'"))
        })?;
        Ok(Assignment {
            generation: state.generation,
            positions: m.positions.iter().map(|(&p, &o)| (p, o)).collect(),
        })
    }

    /// Store new positions if the group has not rebalanced since `generation`; false otherwise
    /// (the caller drops what it read and polls again).
    pub fn update_positions(
        &self,
        group: &str,
        member: u64,
        generation: u64,
        positions: &[(u32, i64)],
    ) -> bool {
        let mut groups = self.groups.lock();
        let Some(state) = groups.get_mut(group) else {
            return false;
        };
        if state.generation != generation {
            return false;
        }
        let Some(m) = state.members.get_mut(&member) else {
            return false;
        };
        for &(p, o) in positions {
            if let Some(slot) = m.positions.get_mut(&p) {
                *slot = Some(o);
            }
        }
        true
    }

    /// Topics the in-process members of `group` consume (empty if it has none).
    pub fn member_topics(&self, group: &str) -> BTreeSet<String> {
        self.groups
            .lock()
            .get(group)
            .map(|s| {
                s.members
                    .values()
                    .map(|m| m.topic.name.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Groups with in-process members.
    pub fn live_groups(&self) -> BTreeSet<String> {
        self.groups
            .lock()
            .iter()
            .filter(|(_, s)| !s.members.is_empty())
            .map(|(g, _)| g.clone())
            .collect()
    }

    /// Members of a group and their partitions (for tests and describe).
    pub fn members(&self, group: &str) -> Vec<(u64, Vec<u32>)> {
        self.groups
            .lock()
            .get(group)
            .map(|s| {
                s.members
                    .iter()
                    .map(|(&id, m)| (id, m.positions.keys().copied().collect()))
                    .collect()
            })
            .unwrap_or_default()
    }
}
