//! The sparse per-segment indexes: `.index` (relative offset u32, file position u32; one entry per
//! ~4 KiB of log) and `.timeindex` (max timestamp so far i64, relative offset u32), both big-endian.
//! They are kept in memory and written whole when a segment is sealed or the log is closed; the
//! log data is the truth, so a missing or inconsistent index is rebuilt by scanning the segment.

use std::path::Path;

use crate::error::{IoContext, Result};

/// Bytes of log between two index entries.
pub const INDEX_INTERVAL: u64 = 4096;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentIndex {
    /// (offset relative to the segment's base, byte position of the batch holding it)
    pub offsets: Vec<(u32, u32)>,
    /// (largest timestamp in the segment up to and including `offset`, relative offset)
    pub times: Vec<(i64, u32)>,
    bytes_since_entry: u64,
    max_timestamp: i64,
}

impl SegmentIndex {
    pub fn new() -> Self {
        SegmentIndex {
            max_timestamp: i64::MIN,
            ..Default::default()
        }
    }

    /// Note a batch appended at `position`: its first and last relative offsets, size and max timestamp.
    pub fn on_batch(
        &mut self,
        first_rel: u32,
        last_rel: u32,
        position: u32,
        len: u64,
        max_ts: i64,
    ) {
        self.max_timestamp = self.max_timestamp.max(max_ts);
        if self.offsets.is_empty() || self.bytes_since_entry >= INDEX_INTERVAL {
            self.offsets.push((first_rel, position));
            self.bytes_since_entry = 0;
            self.note_time(last_rel);
        }
        self.bytes_since_entry += len;
    }

    /// Called when the segment is sealed, so the time index ends with the segment's max timestamp.
    pub fn seal(&mut self, last_rel: u32) {
        self.note_time(last_rel);
    }

    fn note_time(&mut self, last_rel: u32) {
        if self
            .times
            .last()
            .is_none_or(|&(t, _)| t < self.max_timestamp)
        {
            self.times.push((self.max_timestamp, last_rel));
        }
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// Byte position from which to scan for `rel_offset`: the last entry at or before it.
    pub fn position_for(&self, rel_offset: u32) -> u32 {
        let i = self.offsets.partition_point(|&(o, _)| o <= rel_offset);
        if i == 0 {
            0
        } else {
            self.offsets[i - 1].1
        }
    }

    /// A relative offset from which every record with a timestamp >= `ts` can be found by scanning:
    /// one past the last indexed offset whose running max timestamp is still below `ts`.
    pub fn scan_start_for_time(&self, ts: i64) -> u32 {
        let i = self.times.partition_point(|&(t, _)| t < ts);
        if i == 0 {
            0
        } else {
            self.times[i - 1].1.saturating_add(1)
        }
    }

    /// Where to start re-reading batch headers when the segment is cut before relative offset
    /// `rel`: `(entry, position)` of the last offset-index entry whose batch starts below `rel`,
    /// or `None` when no indexed batch does (then no batch does: the first batch is always indexed).
    pub fn cut_start(&self, rel: u32) -> Option<(usize, u32)> {
        let i = self.offsets.partition_point(|&(o, _)| o < rel);
        i.checked_sub(1).map(|e| (e, self.offsets[e].1))
    }

    /// The index exactly as it was right after the batch of offset-index entry `entry` was added
    /// (`last_rel` and `len` are that batch's last relative offset and byte length): later
    /// entries, and the entry a seal added, are dropped. Feed the batches that followed it (up to
    /// a cut) to `on_batch` to get the index of a segment cut there, without rescanning it all.
    ///
    /// Why this is exact: adding an entry's batch always ends with `note_time(last_rel)`, so the
    /// last time entry with a relative offset <= `last_rel` holds the running max timestamp after
    /// that batch, and every time entry added later has a larger relative offset (offsets only
    /// grow; a seal after the last batch adds an entry only if the max grew, which it did not).
    pub fn rewind_to_entry(&self, entry: usize, last_rel: u32, len: u64) -> SegmentIndex {
        let offsets = self.offsets[..(entry + 1).min(self.offsets.len())].to_vec();
        let keep = self.times.partition_point(|&(_, o)| o <= last_rel);
        let times = self.times[..keep].to_vec();
        let max_timestamp = times.last().map_or(i64::MIN, |&(t, _)| t);
        SegmentIndex {
            offsets,
            times,
            bytes_since_entry: len,
            max_timestamp,
        }
    }

    pub fn write_files(&self, index_path: &Path, time_path: &Path) -> Result<()> {
        let mut buf = Vec::with_capacity(self.offsets.len() * 8);
        for &(o, p) in &self.offsets {
            buf.extend_from_slice(&o.to_be_bytes());
            buf.extend_from_slice(&p.to_be_bytes());
        }
        write_replace(index_path, &buf)?;
        let mut buf = Vec::with_capacity(self.times.len() * 12);
        for &(t, o) in &self.times {
            buf.extend_from_slice(&t.to_be_bytes());
            buf.extend_from_slice(&o.to_be_bytes());
        }
        write_replace(time_path, &buf)
    }

    /// Remove both index files (before the segment they describe changes).
    pub fn remove_files(index_path: &Path, time_path: &Path) -> Result<()> {
        for p in [index_path, time_path] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(crate::error::LogError::Io {
                        path: p.to_path_buf(),
                        source: e,
                    })
                }
            }
        }
        Ok(())
    }

    /// Load both index files; `None` when they are missing or fail a consistency check against
    /// the segment (`segment_len` bytes, `last_rel` the last relative offset), so the caller rebuilds.
    pub fn read_files(
        index_path: &Path,
        time_path: &Path,
        segment_len: u64,
        last_rel: Option<u32>,
    ) -> Option<SegmentIndex> {
        let ib = std::fs::read(index_path).ok()?;
        let tb = std::fs::read(time_path).ok()?;
        if ib.len() % 8 != 0 || tb.len() % 12 != 0 {
            return None;
        }
        let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let offsets: Vec<(u32, u32)> = ib
            .chunks_exact(8)
            .map(|c| (be32(&c[..4]), be32(&c[4..])))
            .collect();
        let times: Vec<(i64, u32)> = tb
            .chunks_exact(12)
            .map(|c| {
                let mut t = [0u8; 8];
                t.copy_from_slice(&c[..8]);
                (i64::from_be_bytes(t), be32(&c[8..]))
            })
            .collect();
        let monotonic = offsets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
            && times
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1);
        let in_bounds = offsets
            .iter()
            .all(|&(o, p)| (p as u64) < segment_len.max(1) && last_rel.is_some_and(|l| o <= l))
            && times.iter().all(|&(_, o)| last_rel.is_some_and(|l| o <= l));
        if !monotonic || !in_bounds || (segment_len > 0 && (offsets.is_empty() || times.is_empty()))
        {
            return None;
        }
        let max_timestamp = times.last().map(|&(t, _)| t).unwrap_or(i64::MIN);
        Some(SegmentIndex {
            offsets,
            times,
            bytes_since_entry: 0,
            max_timestamp,
        })
    }
}

/// Replace a file by rename so a reader never sees it half written. Not fsynced: an index is
/// rebuilt from the log whenever it is missing or inconsistent.
fn write_replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("idxtmp");
    std::fs::write(&tmp, bytes).at(&tmp)?;
    std::fs::rename(&tmp, path).at(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (first_rel, last_rel, position, len, max_ts) of consecutive batches, with offset gaps
    /// between them (as compaction leaves) when `gaps` is set.
    fn batches(spec: &[(u32, u32, u64, i64)], gaps: bool) -> Vec<(u32, u32, u32, u64, i64)> {
        let mut out = Vec::new();
        let (mut rel, mut pos) = (0u32, 0u64);
        for &(count, gap, len, ts) in spec {
            let first = rel + if gaps { gap } else { 0 };
            let last = first + count;
            out.push((first, last, pos as u32, len, ts));
            rel = last + 1;
            pos += len;
        }
        out
    }

    fn build(bs: &[(u32, u32, u32, u64, i64)]) -> SegmentIndex {
        let mut ix = SegmentIndex::new();
        for &(f, l, p, n, t) in bs {
            ix.on_batch(f, l, p, n, t);
        }
        ix
    }

    proptest! {
        /// Rewinding to an entry and replaying the batches after it gives the index a scan of the
        /// cut segment would build, for every cut point, sealed or not.
        #[test]
        fn rewind_and_replay_equals_rebuild(
            spec in proptest::collection::vec((0u32..5, 0u32..4, 61u64..3000, -5i64..40), 1..60),
            gaps in any::<bool>(),
            sealed in any::<bool>(),
        ) {
            let bs = batches(&spec, gaps);
            let mut full = build(&bs);
            if sealed {
                full.seal(bs[bs.len() - 1].1 + u32::from(gaps) * 3);
            }
            for k in 0..=bs.len() {
                let expected = build(&bs[..k]);
                // any relative offset after batch k-1 and at or before batch k's first cuts there
                let lo = if k == 0 { 0 } else { bs[k - 1].1 + 1 };
                let hi = if k == bs.len() { lo + 2 } else { bs[k].0 };
                for rel in lo..=hi {
                    let got = match full.cut_start(rel) {
                        None => SegmentIndex::new(),
                        Some((entry, pos)) => {
                            let j = bs.iter().position(|b| b.2 == pos).expect("entry at a batch");
                            prop_assert!(j < k);
                            let mut ix = full.rewind_to_entry(entry, bs[j].1, bs[j].3);
                            for &(f, l, p, n, t) in &bs[j + 1..k] {
                                ix.on_batch(f, l, p, n, t);
                            }
                            ix
                        }
                    };
                    prop_assert_eq!(&got, &expected, "cut before batch {} at rel {}", k, rel);
                }
            }
        }
    }
}
