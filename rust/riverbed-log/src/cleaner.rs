//! Background cleanup: retention (delete whole old segments by time or size) and compaction (keep
//! the latest record per key in sealed segments, offsets unchanged). Both work on sealed segments
//! only and take the partition's state lock just to swap segments in or out, so producers never wait
//! for them. Both hold the partition's maintenance lock throughout, so a truncation of the same
//! partition waits for them (and they for it).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Arc;

use crate::batch::{self, BatchWriter, RecordView};
use crate::config::{Cleanup, FsyncPolicy};
use crate::error::{IoContext, LogError, Result};
use crate::index::SegmentIndex;
use crate::partition::{Partition, MAX_BATCH_BYTES};
use crate::segment::{for_each_batch, read_exact_at, segment_paths, Segment};
use crate::topic::Topic;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanupStats {
    pub segments_deleted: usize,
    pub segments_compacted: usize,
    pub records_removed: usize,
}

impl std::ops::AddAssign for CleanupStats {
    fn add_assign(&mut self, o: Self) {
        self.segments_deleted += o.segments_deleted;
        self.segments_compacted += o.segments_compacted;
        self.records_removed += o.records_removed;
    }
}

pub fn clean_topic(topic: &Topic, fsync: FsyncPolicy) -> Result<CleanupStats> {
    let mut stats = CleanupStats::default();
    for p in topic.partitions() {
        match topic.config().cleanup {
            Cleanup::Delete => stats += apply_retention(p)?,
            Cleanup::Compact => match compact(p, fsync) {
                Ok(s) => stats += s,
                // Damage not quarantined yet: this partition waits (a read or `check()` finds
                // it); the other partitions and topics are still cleaned.
                Err(LogError::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            },
        }
    }
    Ok(stats)
}

/// Delete the oldest sealed segments while they are past `retention_ms` (judged by their newest
/// timestamp) or the partition is larger than `retention_bytes` without them.
pub fn apply_retention(p: &Partition) -> Result<CleanupStats> {
    let _m = p.maintenance.lock();
    let cfg = p.config().clone();
    let now = crate::fsutil::now_ms();
    let mut stats = CleanupStats::default();
    let mut removed = Vec::new();
    {
        let mut st = p.state.write();
        let mut total = st.size_bytes();
        while st.segments.len() > 1 {
            let seg = &st.segments[0];
            let by_time = cfg
                .retention_ms
                .is_some_and(|r| seg.max_timestamp() < now - r);
            let by_bytes = cfg.retention_bytes.is_some_and(|b| total - seg.size >= b);
            if !(by_time || by_bytes) {
                break;
            }
            total -= seg.size;
            removed.push(st.segments.remove(0));
            st.log_start_offset = st.segments[0].base_offset;
        }
        let start = st.log_start_offset;
        st.gaps.retain(|g| g.to > start);
    }
    for seg in &removed {
        seg.delete_files()?;
        stats.segments_deleted += 1;
    }
    if !removed.is_empty() {
        p.store_gaps()?;
    }
    if !removed.is_empty() {
        crate::fsutil::sync_dir(&p.dir)?;
    }
    Ok(stats)
}

/// Visit every record of a segment file in order.
fn for_each_record(
    file: &File,
    path: &Path,
    size: u64,
    mut f: impl FnMut(&RecordView<'_>),
) -> Result<()> {
    let mut pos = 0u64;
    let mut buf = Vec::new();
    while pos < size {
        let mut want = ((size - pos) as usize).min(4 << 20);
        loop {
            buf.resize(want, 0);
            read_exact_at(file, path, &mut buf, pos)?;
            let bad = |e: batch::BatchError| LogError::Corrupt {
                path: path.to_path_buf(),
                position: pos,
                reason: e.to_string(),
            };
            let walked = for_each_batch(&buf, |_, b, _| {
                for r in &batch::records(b).map_err(bad)? {
                    f(&r.map_err(bad)?);
                }
                Ok(true)
            })?;
            if walked > 0 {
                pos += walked as u64;
                break;
            }
            // One batch is larger than the chunk: read it whole.
            let total = 12 + i32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]).max(0) as usize;
            if total <= want || pos + total as u64 > size {
                return Err(bad(batch::BatchError::Corrupt(
                    "batch extends past the segment end".into(),
                )));
            }
            want = total;
        }
    }
    Ok(())
}

/// A record copied out of a segment, to be written again by compaction.
struct OwnedRecord {
    offset: i64,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

struct SealedRef {
    base: i64,
    file: Arc<File>,
    path: std::path::PathBuf,
    size: u64,
    next_offset: i64,
}

/// Keep, in every sealed segment, only the latest record of each key; drop tombstones older than
/// `delete_retention_ms`. Offsets never change. A rewritten segment replaces the old one by rename.
pub fn compact(p: &Partition, fsync: FsyncPolicy) -> Result<CleanupStats> {
    let _m = p.maintenance.lock();
    let mut stats = CleanupStats::default();
    let sealed: Vec<SealedRef> = {
        let st = p.state.read();
        let n = st.segments.len().saturating_sub(1);
        st.segments[..n]
            .iter()
            // A segment with quarantined bytes is left as it is: its damage stays inspectable.
            .filter(|s| s.bad_regions.is_empty())
            .map(|s| SealedRef {
                base: s.base_offset,
                file: s.file.clone(),
                path: s.log_path.clone(),
                size: s.size,
                next_offset: s.next_offset,
            })
            .collect()
    };
    if sealed.is_empty() {
        return Ok(stats);
    }
    let mut latest: HashMap<Vec<u8>, i64> = HashMap::new();
    for s in &sealed {
        // Damage not found yet (sealed segments are checked lazily) stops compaction of this
        // partition; reads and `check()` quarantine it.
        for_each_record(&s.file, &s.path, s.size, |r| {
            if let Some(k) = r.key {
                match latest.get_mut(k) {
                    Some(o) => *o = r.offset,
                    None => {
                        latest.insert(k.to_vec(), r.offset);
                    }
                }
            }
        })?;
    }
    let horizon = crate::fsutil::now_ms() - p.config().delete_retention_ms;
    let durable = fsync != FsyncPolicy::Never;
    for s in &sealed {
        let mut buf = Vec::new();
        let mut index = SegmentIndex::new();
        let mut total = 0usize;
        let mut kept = 0usize;
        let mut batches: Vec<(std::ops::Range<usize>, i64, i64, i64)> = Vec::new();
        let mut keep: Vec<OwnedRecord> = Vec::new();
        for_each_record(&s.file, &s.path, s.size, |r| {
            total += 1;
            let is_latest = r.key.is_some_and(|k| latest.get(k) == Some(&r.offset));
            let expired_tombstone = r.value.is_none() && r.timestamp < horizon;
            if is_latest && !expired_tombstone {
                keep.push(OwnedRecord {
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r.key.map(<[u8]>::to_vec),
                    value: r.value.map(<[u8]>::to_vec),
                    headers: r
                        .headers()
                        .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                        .collect(),
                });
            }
        })?;
        kept += keep.len();
        if kept == total {
            continue;
        }
        let mut i = 0;
        while i < keep.len() {
            let start_base = keep[i].offset;
            let mut w = BatchWriter::new(&mut buf, start_base, keep[i].timestamp);
            let mut last = start_base;
            while i < keep.len() && (w.record_count() == 0 || w.len() < MAX_BATCH_BYTES) {
                let r = &keep[i];
                let hs: Vec<batch::RecordHeader<'_>> = r
                    .headers
                    .iter()
                    .map(|(a, b)| (a.as_slice(), b.as_deref()))
                    .collect();
                w.push(
                    r.offset,
                    r.timestamp,
                    r.key.as_deref(),
                    r.value.as_deref(),
                    &hs,
                );
                last = r.offset;
                i += 1;
            }
            let max_ts = w.max_timestamp();
            let range = w.finish();
            batches.push((range, start_base, last, max_ts));
        }
        for (range, first, last, max_ts) in &batches {
            index.on_batch(
                (first - s.base) as u32,
                (last - s.base) as u32,
                range.start as u32,
                range.len() as u64,
                *max_ts,
            );
        }
        if s.next_offset > s.base {
            index.seal((s.next_offset - 1 - s.base) as u32);
        }
        let dir = p.dir.clone();
        let (log_path, index_path, time_path) = segment_paths(&dir, s.base);
        let cleaned = log_path.with_extension("log.cleaned");
        {
            let mut f = File::create(&cleaned).at(&cleaned)?;
            std::io::Write::write_all(&mut f, &buf).at(&cleaned)?;
            if durable {
                f.sync_all().at(&cleaned)?;
            }
        }
        // The old index must not survive a crash next to the new data: remove it first, so the
        // segment is rescanned on open until the new index is written.
        SegmentIndex::remove_files(&index_path, &time_path)?;
        crate::fsutil::sync_dir(&dir)?;
        std::fs::rename(&cleaned, &log_path).at(&log_path)?;
        index.write_files(&index_path, &time_path)?;
        if durable {
            crate::fsutil::sync_dir(&dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log_path)
            .at(&log_path)?;
        {
            let mut st = p.state.write();
            if let Some(seg) = st.segments.iter_mut().find(|x| x.base_offset == s.base) {
                *seg = Segment {
                    base_offset: s.base,
                    log_path: log_path.clone(),
                    file: Arc::new(file),
                    size: buf.len() as u64,
                    next_offset: s.next_offset,
                    index,
                    created_ms: seg.created_ms,
                    bad_regions: Vec::new(),
                };
            }
        }
        stats.segments_compacted += 1;
        stats.records_removed += total - kept;
    }
    Ok(stats)
}
