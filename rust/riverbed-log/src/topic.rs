//! A topic: its persisted config and its partitions, plus the partitioner that routes records.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::batch::RecordHeader;
use crate::config::{Cleanup, FsyncPolicy, TopicConfig};
use crate::error::{LogError, Result};
use crate::notify::Notifier;
use crate::partition::{NewRecord, Partition};
use crate::partitioner::{partition_for_key, StickyPartitioner};
use crate::record_sink::RecordSink;
use crate::segment::Damage;
use crate::start_spec::StartSpec;

#[derive(Debug)]
pub struct Topic {
    pub name: Arc<str>,
    pub dir: PathBuf,
    config: Arc<TopicConfig>,
    partitions: Vec<Arc<Partition>>,
    sticky: StickyPartitioner,
    /// Shared with the grown copies of this topic (`add_partitions`), so deleting the topic
    /// stops every handle to it.
    deleted: Arc<AtomicBool>,
}

/// Kafka's rule for topic names.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(LogError::InvalidArgument(format!(
            "invalid topic name {name:?}: use 1-249 characters from [a-zA-Z0-9._-], not '.' or '..'"
        )))
    }
}

/// Where consumer groups' committed offsets are kept (Kafka's name; `group.rs` writes it).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Topics that hold riverbed's (or Kafka's) own state: readable, but the public API can't write
/// to or delete them.
pub fn is_internal_topic(name: &str) -> bool {
    name == OFFSETS_TOPIC || name == "__transaction_state" || name.starts_with("__riverbed")
}

/// Per-partition info for `describe()`.
#[derive(Debug, Clone)]
pub struct PartitionInfo {
    pub partition: u32,
    pub earliest: i64,
    pub latest: i64,
    pub size_bytes: u64,
    pub segments: usize,
}

impl Topic {
    pub(crate) fn open(
        name: &str,
        dir: &Path,
        config: TopicConfig,
        fsync: FsyncPolicy,
        notifier: &Arc<Notifier>,
    ) -> Result<(Topic, Vec<Damage>)> {
        let name: Arc<str> = Arc::from(name);
        let config = Arc::new(config);
        let mut partitions = Vec::with_capacity(config.partitions as usize);
        let mut damages = Vec::new();
        for p in 0..config.partitions {
            let (part, d) = Partition::open(
                name.clone(),
                p,
                dir.join(p.to_string()),
                config.clone(),
                fsync,
                notifier.clone(),
            )?;
            damages.extend(d);
            partitions.push(Arc::new(part));
        }
        Ok((
            Topic {
                name,
                dir: dir.to_path_buf(),
                config,
                partitions,
                sticky: StickyPartitioner::new(),
                deleted: Arc::new(AtomicBool::new(false)),
            },
            damages,
        ))
    }

    pub fn config(&self) -> &TopicConfig {
        &self.config
    }

    /// This topic with other settings (same partitions, each given the new settings).
    pub(crate) fn reconfigured(&self, config: TopicConfig) -> Topic {
        let config = Arc::new(config);
        for p in &self.partitions {
            p.set_config(config.clone());
        }
        Topic {
            name: self.name.clone(),
            dir: self.dir.clone(),
            config,
            partitions: self.partitions.clone(),
            sticky: StickyPartitioner::new(),
            deleted: self.deleted.clone(),
        }
    }

    /// This topic with more partitions (`config.partitions` of them): the existing partitions
    /// are shared (never opened twice), the new ones opened from their directories.
    pub(crate) fn grown(
        &self,
        config: TopicConfig,
        fsync: FsyncPolicy,
        notifier: &Arc<Notifier>,
    ) -> Result<Topic> {
        let config = Arc::new(config);
        let mut partitions = self.partitions.clone();
        for p in self.num_partitions()..config.partitions {
            let (part, _) = Partition::open(
                self.name.clone(),
                p,
                self.dir.join(p.to_string()),
                config.clone(),
                fsync,
                notifier.clone(),
            )?;
            partitions.push(Arc::new(part));
        }
        Ok(Topic {
            name: self.name.clone(),
            dir: self.dir.clone(),
            config,
            partitions,
            sticky: StickyPartitioner::new(),
            deleted: self.deleted.clone(),
        })
    }

    pub fn num_partitions(&self) -> u32 {
        self.partitions.len() as u32
    }

    pub fn partitions(&self) -> &[Arc<Partition>] {
        &self.partitions
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    /// Internal topics are written only by riverbed itself.
    fn check_writable(&self) -> Result<()> {
        self.check_live()?;
        if is_internal_topic(&self.name) {
            return Err(LogError::InternalTopic(self.name.to_string()));
        }
        Ok(())
    }

    pub fn is_internal(&self) -> bool {
        is_internal_topic(&self.name)
    }

    fn check_live(&self) -> Result<()> {
        if self.deleted.load(Ordering::Acquire) {
            Err(LogError::TopicNotFound(self.name.to_string()))
        } else {
            Ok(())
        }
    }

    pub fn partition(&self, p: u32) -> Result<&Arc<Partition>> {
        self.check_live()?;
        self.partitions
            .get(p as usize)
            .ok_or_else(|| LogError::PartitionNotFound {
                topic: self.name.to_string(),
                partition: p,
                partitions: self.num_partitions(),
            })
    }

    /// Kafka's default partitioner: murmur2 of the key bytes; sticky for null keys.
    pub fn partition_for(&self, key: Option<&[u8]>) -> u32 {
        match key {
            Some(k) => partition_for_key(k, self.num_partitions()),
            None => self.sticky.current(self.num_partitions()),
        }
    }

    /// Compacted topics need keys, as in Kafka.
    pub(crate) fn check_key(&self, key: Option<&[u8]>) -> Result<()> {
        if key.is_none() && self.config.cleanup == Cleanup::Compact {
            return Err(LogError::InvalidArgument(format!(
                "topic '{}' is compacted: every record needs a key",
                self.name
            )));
        }
        Ok(())
    }

    /// Append one record; returns (partition, offset).
    pub fn produce(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
        headers: &[RecordHeader<'_>],
        partition: Option<u32>,
    ) -> Result<(u32, i64)> {
        self.check_writable()?;
        self.check_key(key)?;
        let p = match partition {
            Some(p) => p,
            None => self.partition_for(key),
        };
        let part = self.partition(p)?;
        let (offset, _) = part.append([NewRecord {
            timestamp,
            key,
            value,
            headers,
        }])?;
        if key.is_none() {
            self.sticky.next_batch();
        }
        Ok((p, offset))
    }

    /// Append records already routed to partitions: `rows[p]` go to partition `p` in order.
    /// Partitions are written (and fsynced) in parallel. Returns the first offset per partition.
    pub fn produce_routed<'a>(&self, rows: &[Vec<NewRecord<'a>>]) -> Result<Vec<i64>> {
        self.check_writable()?;
        let busy: Vec<usize> = (0..rows.len()).filter(|&p| !rows[p].is_empty()).collect();
        let mut firsts = vec![0i64; rows.len()];
        let results: Vec<(usize, Result<(i64, usize)>)> = if busy.len() <= 1 {
            busy.iter()
                .map(|&p| {
                    (
                        p,
                        self.partition(p as u32)
                            .and_then(|part| part.append(rows[p].iter().copied())),
                    )
                })
                .collect()
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = busy
                    .iter()
                    .map(|&p| {
                        let rows = &rows[p];
                        (
                            p,
                            s.spawn(move || {
                                self.partition(p as u32)
                                    .and_then(|part| part.append(rows.iter().copied()))
                            }),
                        )
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|(p, h)| {
                        (
                            p,
                            h.join().unwrap_or_else(|_| {
                                Err(LogError::InvalidArgument("append thread panicked".into()))
                            }),
                        )
                    })
                    .collect()
            })
        };
        for (p, r) in results {
            firsts[p] = r?.0;
        }
        Ok(firsts)
    }

    /// Sticky partitioning moves on after each produce call without keys.
    pub(crate) fn next_sticky(&self) {
        self.sticky.next_batch();
    }

    /// The offset `spec` names in partition `p` (an explicit offset must lie in [earliest, latest]).
    pub fn resolve(&self, p: u32, spec: StartSpec) -> Result<i64> {
        let part = self.partition(p)?;
        let (earliest, latest) = part.offsets();
        Ok(match spec {
            StartSpec::Earliest => earliest,
            StartSpec::Latest => latest,
            StartSpec::Offset(o) if (earliest..=latest).contains(&o) => o,
            StartSpec::Offset(o) => {
                return Err(LogError::OffsetOutOfRange {
                    topic: self.name.to_string(),
                    partition: p,
                    offset: o,
                    earliest,
                    latest,
                })
            }
            StartSpec::Time(ts) => part.offset_for_time(ts)?.unwrap_or(latest),
        })
    }

    /// Every record from `start` up to (not including) `end` in every partition, partition by
    /// partition. A gap (offsets that can't be read: damaged or missing) is an error naming it.
    pub fn read_bounded(
        &self,
        start: StartSpec,
        end: StartSpec,
        sink: &mut dyn RecordSink,
    ) -> Result<()> {
        self.read_range(start, end, sink, false).map(|_| ())
    }

    /// [`read_bounded`](Self::read_bounded), but with `skip_gaps` a gap is skipped and returned
    /// (partition, gap), so the caller can report it.
    pub fn read_range(
        &self,
        start: StartSpec,
        end: StartSpec,
        sink: &mut dyn RecordSink,
        skip_gaps: bool,
    ) -> Result<Vec<(u32, crate::quarantine::Gap)>> {
        self.check_live()?;
        let ranges: Vec<(u32, i64, i64)> = (0..self.num_partitions())
            .map(|p| Ok((p, self.resolve(p, start)?, self.resolve(p, end)?)))
            .collect::<Result<_>>()?;
        let mut skipped = Vec::new();
        for (p, mut from, to) in ranges {
            let part = &self.partitions[p as usize];
            while from < to {
                let mut done = false;
                match part.read(from, usize::MAX, usize::MAX, |r| {
                    if r.offset >= to {
                        done = true;
                        return false;
                    }
                    sink.push(p, r);
                    r.offset + 1 < to || {
                        done = true;
                        false
                    }
                }) {
                    Ok(next) if done || next == from => break,
                    Ok(next) => from = next,
                    Err(LogError::Gap(g)) if skip_gaps => {
                        let (a, b) = (g.from, g.to);
                        if let Some(g) = part.gaps().into_iter().find(|g| g.from == a && g.to == b)
                        {
                            skipped.push((p, g));
                        }
                        from = b;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(skipped)
    }

    /// Truncate several partitions: for each `(partition, offset)`, remove every record at
    /// `offset` or later (see [`Partition::truncate_to`] for the rules and the crash safety).
    /// Every pair is checked first (the partition exists and is listed once, the offset is in
    /// range and on a batch boundary), so a bad argument truncates nothing. Then the partitions
    /// are truncated one after the other, each atomically; if one fails (an I/O error), those
    /// before it stay truncated, and calling again with the same offsets finishes the job
    /// (truncating to the current end is a no-op).
    pub fn truncate_to(&self, offsets: &[(u32, i64)]) -> Result<()> {
        self.check_writable()?;
        let mut seen = std::collections::HashSet::new();
        for &(p, offset) in offsets {
            if !seen.insert(p) {
                return Err(LogError::InvalidArgument(format!(
                    "partition {p} of topic '{}' is listed twice for truncation",
                    self.name
                )));
            }
            self.partition(p)?.validate_truncation(offset)?;
        }
        for &(p, offset) in offsets {
            self.partition(p)?.truncate_to(offset)?;
        }
        Ok(())
    }

    /// {partition: (earliest, latest)}.
    pub fn offsets(&self) -> Result<Vec<(i64, i64)>> {
        self.check_live()?;
        Ok(self.partitions.iter().map(|p| p.offsets()).collect())
    }

    pub fn offsets_for_time(&self, ts: i64) -> Result<Vec<Option<i64>>> {
        self.check_live()?;
        self.partitions
            .iter()
            .map(|p| p.offset_for_time(ts))
            .collect()
    }

    pub fn describe(&self) -> Result<Vec<PartitionInfo>> {
        self.check_live()?;
        Ok(self
            .partitions
            .iter()
            .map(|p| {
                let (earliest, latest) = p.offsets();
                PartitionInfo {
                    partition: p.id,
                    earliest,
                    latest,
                    size_bytes: p.size_bytes(),
                    segments: p.segment_count(),
                }
            })
            .collect())
    }

    pub fn sync(&self) -> Result<()> {
        for p in &self.partitions {
            p.sync()?;
        }
        Ok(())
    }

    pub(crate) fn close(&self) -> Result<()> {
        for p in &self.partitions {
            p.close()?;
        }
        Ok(())
    }
}
