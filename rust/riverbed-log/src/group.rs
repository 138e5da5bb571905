//! Consumer groups inside one process: members of a group split each topic's partitions by
//! Kafka's range assignment and rebalance when one joins or leaves. Committed offsets are stored
//! durably in the internal compacted topic `__consumer_offsets`, keyed by (group, topic, partition).
//!
//! Handover: when a partition moves from one member to another, the old owner's position (the
//! records its polls already returned) is committed first and the new owner starts there, so a
//! clean rebalance neither repeats nor skips a record.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::config::{Cleanup, TopicOptions};
use crate::error::{LogError, Result};
use crate::log::Log;
use crate::partition::NewRecord;
use crate::topic::Topic;

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

type CommitKey = (String, String, u32);

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
    committed: Mutex<HashMap<CommitKey, i64>>,
    groups: Mutex<HashMap<String, GroupState>>,
}

fn encode_key(group: &str, topic: &str, partition: u32) -> Vec<u8> {
    serde_json::to_vec(&(group, topic, partition)).unwrap_or_default()
}

fn offsets_topic(log: &Log) -> Result<Arc<Topic>> {
    log.topic(
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
    pub(crate) fn load(&self, log: &Log) -> Result<()> {
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
                    let offset = r
                        .value
                        .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
                        .and_then(|v| v.get("offset").and_then(|o| o.as_i64()));
                    match offset {
                        Some(o) => {
                            committed.insert(key, o);
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
        log: &Log,
        group: &str,
        topic: &str,
        offsets: &[(u32, i64)],
    ) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let now = crate::fsutil::now_ms();
        let rows: Vec<(Vec<u8>, Vec<u8>)> = offsets
            .iter()
            .map(|&(p, o)| {
                let value = serde_json::json!({ "offset": o, "committed_at": now });
                (encode_key(group, topic, p), value.to_string().into_bytes())
            })
            .collect();
        let records = rows.iter().map(|(k, v)| NewRecord {
            timestamp: now,
            key: Some(k),
            value: Some(v),
            headers: &[],
        });
        offsets_topic(log)?.partition(0)?.append(records)?;
        let mut committed = self.committed.lock();
        for &(p, o) in offsets {
            committed.insert((group.to_string(), topic.to_string(), p), o);
        }
        Ok(())
    }

    pub fn committed(&self, group: &str, topic: &str, partition: u32) -> Option<i64> {
        self.committed
            .lock()
            .get(&(group.to_string(), topic.to_string(), partition))
            .copied()
    }

    /// Tombstone every commit for a deleted topic.
    pub(crate) fn forget_topic(&self, log: &Log, topic: &str) -> Result<()> {
        let keys: Vec<CommitKey> = self
            .committed
            .lock()
            .keys()
            .filter(|k| k.1 == topic)
            .cloned()
            .collect();
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
            committed.remove(&k);
        }
        Ok(())
    }

    /// Add a member subscribed to `topic`; returns its id. Triggers a rebalance.
    pub fn join(&self, log: &Log, group: &str, topic: Arc<Topic>) -> Result<u64> {
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
    pub fn leave(&self, log: &Log, group: &str, member: u64) -> Result<()> {
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
    fn rebalance(&self, log: &Log, group: &str, state: &mut GroupState) -> Result<()> {
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
