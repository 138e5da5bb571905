//! The idempotent producer: producer ids handed out durably (never reused after a restart), and
//! per-(producer id, partition) sequence checks so a retried batch is not written twice, as
//! Kafka's ProducerStateManager does. After a restart, a partition's producer state is rebuilt
//! from the batch headers at its tail the first time a produce touches it.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use crate::by_partition::ByPartition;

use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use riverbed_log::batch::BatchHeader;
use riverbed_log::Partition;
use serde::{Deserialize, Serialize};

/// The file (in the log's root) holding the first producer id not yet reserved.
pub const PRODUCER_IDS_FILE: &str = "producer_ids.json";
/// Ids are reserved durably this many at a time.
const ID_BLOCK: i64 = 1000;
/// Kafka keeps the metadata of the last five batches per producer (max.in.flight is at most 5).
const BATCHES_KEPT: usize = 5;
/// How much of a partition's tail is read to rebuild producer state after a restart.
const TAIL_SCAN_BYTES: u64 = 64 << 20;

#[derive(Serialize, Deserialize)]
struct IdsFile {
    version: u32,
    /// Every id below this may have been handed out.
    reserved_below: i64,
}

struct IdBlock {
    next: i64,
    limit: i64,
}

/// What the sequence check decided for one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Append,
    /// Already written: answer with the original base offset and no error.
    Duplicate(i64),
    Reject(i16),
}

#[derive(Debug, Clone, Copy)]
struct BatchSeq {
    first: i32,
    last: i32,
    base_offset: i64,
}

#[derive(Debug, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchSeq>,
}

/// The producers of one partition. Held (locked) across the check and the append, so sequence
/// order is offset order.
#[derive(Debug, Default)]
pub struct PartitionProducers {
    producers: HashMap<i64, ProducerEntry>,
}

/// The last sequence of a batch: sequences wrap from i32::MAX to 0, as in Kafka.
fn last_sequence(base: i32, last_offset_delta: i32) -> i32 {
    let sum = i64::from(base) + i64::from(last_offset_delta);
    if sum > i64::from(i32::MAX) {
        (sum - i64::from(i32::MAX) - 1) as i32
    } else {
        sum as i32
    }
}

impl PartitionProducers {
    /// Check one batch of an idempotent producer.
    pub fn check(&self, h: &BatchHeader) -> Decision {
        if h.producer_id < 0 {
            return Decision::Append;
        }
        let first = h.base_sequence;
        let last = last_sequence(first, h.last_offset_delta);
        let Some(e) = self.producers.get(&h.producer_id) else {
            // Unknown here (new, or its batches are older than what was scanned): accept.
            return Decision::Append;
        };
        if h.producer_epoch < e.epoch {
            return Decision::Reject(ResponseError::InvalidProducerEpoch.code());
        }
        if h.producer_epoch > e.epoch {
            return if first == 0 {
                Decision::Append
            } else {
                Decision::Reject(ResponseError::OutOfOrderSequenceNumber.code())
            };
        }
        if let Some(b) = e
            .batches
            .iter()
            .find(|b| b.first == first && b.last == last)
        {
            return Decision::Duplicate(b.base_offset);
        }
        match e.batches.back() {
            None => Decision::Append,
            Some(b) if first == last_sequence(b.last, 1) => Decision::Append,
            Some(_) => Decision::Reject(ResponseError::OutOfOrderSequenceNumber.code()),
        }
    }

    /// Remember a batch that was appended at `base_offset`.
    pub fn record(&mut self, h: &BatchHeader, base_offset: i64) {
        if h.producer_id < 0 {
            return;
        }
        let e = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != e.epoch {
            e.epoch = h.producer_epoch;
            e.batches.clear();
        }
        e.batches.push_back(BatchSeq {
            first: h.base_sequence,
            last: last_sequence(h.base_sequence, h.last_offset_delta),
            base_offset,
        });
        while e.batches.len() > BATCHES_KEPT {
            e.batches.pop_front();
        }
    }
}

pub struct ProducerTable {
    path: PathBuf,
    ids: Mutex<IdBlock>,
    partitions: Mutex<ByPartition<Mutex<PartitionProducers>>>,
}

impl ProducerTable {
    /// Load the reservation file from the log's root (a missing file starts at id 0).
    pub fn open(root: &std::path::Path) -> Result<ProducerTable, String> {
        let path = root.join(PRODUCER_IDS_FILE);
        let reserved = match std::fs::read(&path) {
            Ok(b) => {
                let f: IdsFile = serde_json::from_slice(&b)
                    .map_err(|e| format!("{} is unreadable: {e}", path.display()))?;
                if f.version != 1 || f.reserved_below < 0 {
                    return Err(format!(
                        "{} is not a producer id file riverbed wrote",
                        path.display()
                    ));
                }
                f.reserved_below
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(ProducerTable {
            path,
            ids: Mutex::new(IdBlock {
                next: reserved,
                limit: reserved,
            }),
            partitions: Mutex::new(ByPartition::new()),
        })
    }

    /// A new producer id, never handed out before (the block it comes from is reserved durably
    /// before it is used).
    pub fn allocate(&self) -> Result<i64, String> {
        let mut ids = self.ids.lock();
        if ids.next >= ids.limit {
            let limit = ids.next + ID_BLOCK;
            let text = serde_json::to_vec(&IdsFile {
                version: 1,
                reserved_below: limit,
            })
            .map_err(|e| e.to_string())?;
            riverbed_log::fsutil::write_atomic(&self.path, &text).map_err(|e| e.to_string())?;
            ids.limit = limit;
        }
        let id = ids.next;
        ids.next += 1;
        Ok(id)
    }

    /// The producer state of a partition, rebuilt from its tail on first use.
    pub fn partition(&self, part: &Arc<Partition>) -> Arc<Mutex<PartitionProducers>> {
        let key = (part.topic.clone(), part.id);
        {
            let map = self.partitions.lock();
            if let Some((weak, s)) = map.get(&key) {
                if weak.upgrade().is_some_and(|p| Arc::ptr_eq(&p, part)) {
                    return s.clone();
                }
            }
        }
        let mut state = PartitionProducers::default();
        match part.tail_batch_headers(TAIL_SCAN_BYTES) {
            Ok(headers) => {
                for h in headers {
                    state.record(&h, h.base_offset);
                }
            }
            Err(e) => eprintln!(
                "riverbed serve: producer state of {}/{} not rebuilt ({e}); retried batches \
                 older than this start may be written twice",
                part.topic, part.id
            ),
        }
        let mut map = self.partitions.lock();
        // Another request may have built it meanwhile: keep the first.
        if let Some((weak, s)) = map.get(&key) {
            if weak.upgrade().is_some_and(|p| Arc::ptr_eq(&p, part)) {
                return s.clone();
            }
        }
        let s = Arc::new(Mutex::new(state));
        map.insert(key, (Arc::downgrade(part), s.clone()));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pid: i64, epoch: i16, seq: i32, n: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 49,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: n - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: n,
        }
    }

    #[test]
    fn duplicates_gaps_and_stale_epochs() {
        let mut p = PartitionProducers::default();
        assert_eq!(p.check(&h(7, 0, 0, 3)), Decision::Append);
        p.record(&h(7, 0, 0, 3), 100);
        assert_eq!(p.check(&h(7, 0, 0, 3)), Decision::Duplicate(100));
        assert_eq!(p.check(&h(7, 0, 3, 2)), Decision::Append);
        p.record(&h(7, 0, 3, 2), 103);
        assert_eq!(p.check(&h(7, 0, 3, 2)), Decision::Duplicate(103));
        assert_eq!(
            p.check(&h(7, 0, 9, 1)),
            Decision::Reject(ResponseError::OutOfOrderSequenceNumber.code())
        );
        p.record(&h(7, 2, 0, 1), 105);
        assert_eq!(
            p.check(&h(7, 1, 5, 1)),
            Decision::Reject(ResponseError::InvalidProducerEpoch.code())
        );
        assert_eq!(p.check(&h(8, 0, 42, 1)), Decision::Append);
        assert_eq!(p.check(&h(-1, -1, -1, 1)), Decision::Append);
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(last_sequence(i32::MAX, 0), i32::MAX);
        assert_eq!(last_sequence(i32::MAX, 1), 0);
        assert_eq!(last_sequence(i32::MAX - 1, 3), 1);
    }

    #[test]
    fn ids_are_never_reused_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = ProducerTable::open(dir.path()).expect("open");
        let first: Vec<i64> = (0..3).map(|_| a.allocate().expect("id")).collect();
        drop(a);
        let b = ProducerTable::open(dir.path()).expect("reopen");
        let next = b.allocate().expect("id");
        assert_eq!(first, vec![0, 1, 2]);
        assert!(next > 2, "id {next} reused after restart");
    }
}
