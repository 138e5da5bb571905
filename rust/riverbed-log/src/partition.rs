//! A partition: an ordered list of segments, the last one active. Appends are serialised by a
//! writer mutex and encoded and written outside the state lock; readers see only published bytes,
//! so they never block the writer for longer than an index update.

use parking_lot::{Mutex, RwLock};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::os::unix::fs::FileExt;

use crate::batch::{self, BatchWriter, RecordHeader, RecordView};
use crate::config::{FsyncPolicy, TopicConfig};
use crate::error::{IoContext, LogError, Result};
use crate::notify::Notifier;
use crate::segment::{for_each_batch, read_exact_at, Damage, Segment};

/// Records are grouped into Kafka batches of about this many bytes.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Bytes read from a segment file per read call.
const READ_CHUNK: usize = 1 << 20;

/// A record to append; the partition assigns its offset.
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [RecordHeader<'a>],
}

#[derive(Debug)]
pub(crate) struct PartitionState {
    pub segments: Vec<Segment>,
    pub log_start_offset: i64,
}

impl PartitionState {
    pub fn next_offset(&self) -> i64 {
        self.segments
            .last()
            .map_or(self.log_start_offset, |s| s.next_offset)
    }
    fn active(&mut self) -> &mut Segment {
        let i = self.segments.len() - 1;
        &mut self.segments[i]
    }
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }
}

#[derive(Debug)]
pub struct Partition {
    pub topic: Arc<str>,
    pub id: u32,
    pub dir: PathBuf,
    pub(crate) config: Arc<TopicConfig>,
    fsync: FsyncPolicy,
    writer: Mutex<()>,
    pub(crate) state: RwLock<PartitionState>,
    dirty: AtomicBool,
    notifier: Arc<Notifier>,
}

struct EncodedBatch {
    range: std::ops::Range<usize>,
    base: i64,
    last: i64,
    max_ts: i64,
}

enum Located {
    Read {
        file: Arc<std::fs::File>,
        path: PathBuf,
        pos: u64,
        end: u64,
    },
    Jump(i64),
    End,
}

impl Partition {
    /// Open (or create) the partition directory, recovering the active segment.
    pub(crate) fn open(
        topic: Arc<str>,
        id: u32,
        dir: PathBuf,
        config: Arc<TopicConfig>,
        fsync: FsyncPolicy,
        notifier: Arc<Notifier>,
    ) -> Result<(Partition, Vec<Damage>)> {
        std::fs::create_dir_all(&dir).at(&dir)?;
        let mut bases: Vec<i64> = Vec::new();
        for entry in std::fs::read_dir(&dir).at(&dir)? {
            let entry = entry.at(&dir)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".log") {
                if let Ok(b) = stem.parse::<i64>() {
                    bases.push(b);
                }
            } else if name.ends_with(".cleaned") || name.ends_with(".tmp") {
                // Leftovers of an interrupted compaction: the original segment is still in place.
                let _ = std::fs::remove_file(entry.path());
            }
        }
        bases.sort_unstable();
        let mut segments = Vec::with_capacity(bases.len().max(1));
        let mut damages = Vec::new();
        for (i, &base) in bases.iter().enumerate() {
            let (seg, damage) = if i + 1 == bases.len() {
                Segment::recover(&dir, base)?
            } else {
                Segment::open_sealed(&dir, base, bases[i + 1])?
            };
            damages.extend(damage);
            segments.push(seg);
        }
        if segments.is_empty() {
            segments.push(Segment::create(&dir, 0)?);
            crate::fsutil::sync_dir(&dir)?;
        }
        let log_start_offset = segments[0].base_offset;
        Ok((
            Partition {
                topic,
                id,
                dir,
                config,
                fsync,
                writer: Mutex::new(()),
                state: RwLock::new(PartitionState {
                    segments,
                    log_start_offset,
                }),
                dirty: AtomicBool::new(false),
                notifier,
            },
            damages,
        ))
    }

    pub fn config(&self) -> &TopicConfig {
        &self.config
    }

    /// The log-wide append signal (to wait for new records).
    pub fn notifier(&self) -> &Arc<Notifier> {
        &self.notifier
    }

    /// (earliest offset, next offset to be written).
    pub fn offsets(&self) -> (i64, i64) {
        let st = self.state.read();
        (st.log_start_offset, st.next_offset())
    }

    pub fn size_bytes(&self) -> u64 {
        self.state.read().size_bytes()
    }

    pub fn segment_count(&self) -> usize {
        self.state.read().segments.len()
    }

    /// Append records in order; returns the offset of the first. With `sync`, the data is on
    /// stable storage when this returns (the "batch" fsync policy decides `sync` by default).
    pub fn append<'a>(
        &self,
        records: impl IntoIterator<Item = NewRecord<'a>>,
    ) -> Result<(i64, usize)> {
        let _w = self.writer.lock();
        if self.notifier.is_closed() {
            return Err(LogError::Closed);
        }
        let first = self.state.read().next_offset();
        let mut buf = Vec::new();
        let mut batches = Vec::new();
        let mut next = first;
        let mut iter = records.into_iter().peekable();
        while let Some(r0) = iter.next() {
            let mut w = BatchWriter::new(&mut buf, next, r0.timestamp);
            w.push(next, r0.timestamp, r0.key, r0.value, r0.headers);
            next += 1;
            while w.len() < MAX_BATCH_BYTES {
                let Some(r) = iter.next() else { break };
                w.push(next, r.timestamp, r.key, r.value, r.headers);
                next += 1;
            }
            let max_ts = w.max_timestamp();
            let range = w.finish();
            let base = batches.last().map_or(first, |b: &EncodedBatch| b.last + 1);
            batches.push(EncodedBatch {
                range,
                base,
                last: next - 1,
                max_ts,
            });
        }
        let count = (next - first) as usize;
        if count == 0 {
            return Ok((first, 0));
        }
        self.write_batches(&buf, &batches)?;
        self.dirty.store(true, Ordering::Release);
        if self.fsync == FsyncPolicy::Batch {
            self.sync()?;
        }
        self.notifier.notify();
        Ok((first, count))
    }

    /// Write encoded batches to the active segment, rolling first whenever the next batch would
    /// not fit or the segment is too old; publish each run under the state lock.
    fn write_batches(&self, buf: &[u8], batches: &[EncodedBatch]) -> Result<()> {
        let seg_bytes = self.config.segment_bytes;
        let mut i = 0;
        while i < batches.len() {
            let (file, path, start_size, created) = {
                let st = self.state.read();
                let a = st.segments.last().ok_or(LogError::Closed)?;
                (a.file.clone(), a.log_path.clone(), a.size, a.created_ms)
            };
            let first_len = batches[i].range.len() as u64;
            let too_old = self
                .config
                .segment_ms
                .is_some_and(|ms| crate::fsutil::now_ms() - created >= ms);
            if start_size > 0 && (start_size + first_len > seg_bytes || too_old) {
                self.roll(batches[i].base)?;
                continue;
            }
            let mut j = i;
            let mut size = start_size;
            while j < batches.len() && (j == i || size + batches[j].range.len() as u64 <= seg_bytes)
            {
                size += batches[j].range.len() as u64;
                j += 1;
            }
            let bytes = &buf[batches[i].range.start..batches[j - 1].range.end];
            file.write_all_at(bytes, start_size).at(&path)?;
            let mut st = self.state.write();
            let active = st.active();
            if active.size == 0 {
                active.created_ms = crate::fsutil::now_ms();
            }
            let mut pos = start_size;
            for b in &batches[i..j] {
                let first_rel = (b.base - active.base_offset) as u32;
                let last_rel = (b.last - active.base_offset) as u32;
                active.index.on_batch(
                    first_rel,
                    last_rel,
                    pos as u32,
                    b.range.len() as u64,
                    b.max_ts,
                );
                pos += b.range.len() as u64;
            }
            active.size = pos;
            active.next_offset = batches[j - 1].last + 1;
            i = j;
        }
        Ok(())
    }

    /// Seal the active segment and start a new one at `base`. Caller holds the writer mutex.
    fn roll(&self, base: i64) -> Result<()> {
        let durable = self.fsync != FsyncPolicy::Never;
        // Seal (index files + fsync) before the new file exists: until then the old segment is
        // the last one and a crash makes recovery rescan it, never trust a half-written index.
        self.state.write().active().seal(durable)?;
        let new = Segment::create(&self.dir, base)?;
        self.state.write().segments.push(new);
        if durable {
            crate::fsutil::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// fsync the active segment if anything was written since the last sync.
    pub fn sync(&self) -> Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let (file, path) = {
            let st = self.state.read();
            let a = st.segments.last().ok_or(LogError::Closed)?;
            (a.file.clone(), a.log_path.clone())
        };
        file.sync_data()
            .at(&path)
            .inspect_err(|_| self.dirty.store(true, Ordering::Release))
    }

    /// Flush on close. The active segment's index is not written: recovery always rescans
    /// the last segment, so a stale index of it can never be trusted after more appends.
    pub fn close(&self) -> Result<()> {
        let _w = self.writer.lock();
        if self.fsync != FsyncPolicy::Never {
            self.sync()?;
        }
        Ok(())
    }

    fn out_of_range(&self, offset: i64, st: &PartitionState) -> LogError {
        LogError::OffsetOutOfRange {
            topic: self.topic.to_string(),
            partition: self.id,
            offset,
            earliest: st.log_start_offset,
            latest: st.next_offset(),
        }
    }

    fn locate(&self, next: i64, cursor: Option<&(Arc<std::fs::File>, u64)>) -> Located {
        let st = self.state.read();
        if next >= st.next_offset() {
            return Located::End;
        }
        if next < st.log_start_offset {
            return Located::Jump(st.log_start_offset);
        }
        let i = st
            .segments
            .partition_point(|s| s.base_offset <= next)
            .saturating_sub(1);
        let seg = &st.segments[i];
        let pos = match cursor {
            // A cursor is only valid for the very file it was made in (compaction replaces files).
            Some((f, p)) if Arc::ptr_eq(f, &seg.file) => *p,
            _ => seg.index.position_for((next - seg.base_offset) as u32) as u64,
        };
        if next >= seg.next_offset || pos >= seg.size {
            return match st.segments.get(i + 1) {
                Some(n) => Located::Jump(n.base_offset.max(next)),
                None => Located::End,
            };
        }
        Located::Read {
            file: seg.file.clone(),
            path: seg.log_path.clone(),
            pos,
            end: seg.size,
        }
    }

    /// Visit records from `offset` on, in offset order, until `max_records` or `max_bytes` of
    /// batches were read, the end of the log, or `visit` returns false. Returns the offset to
    /// read next. An offset outside [earliest, latest] is `OffsetOutOfRange`.
    pub fn read(
        &self,
        offset: i64,
        max_records: usize,
        max_bytes: usize,
        mut visit: impl FnMut(&RecordView<'_>) -> bool,
    ) -> Result<i64> {
        {
            let st = self.state.read();
            if offset < st.log_start_offset || offset > st.next_offset() {
                return Err(self.out_of_range(offset, &st));
            }
        }
        let mut next = offset;
        let mut count = 0usize;
        let mut bytes = 0usize;
        let mut cursor: Option<(Arc<std::fs::File>, u64)> = None;
        let mut buf: Vec<u8> = Vec::new();
        let mut stop = false;
        while !stop && count < max_records && bytes < max_bytes {
            let (file, path, pos, end) = match self.locate(next, cursor.as_ref()) {
                Located::End => break,
                Located::Jump(n) => {
                    next = n;
                    cursor = None;
                    continue;
                }
                Located::Read {
                    file,
                    path,
                    pos,
                    end,
                } => (file, path, pos, end),
            };
            let mut want = ((end - pos) as usize).min(READ_CHUNK);
            let walked = loop {
                buf.resize(want, 0);
                read_exact_at(&file, &path, &mut buf, pos)?;
                let walked = for_each_batch(&buf, |h, b| {
                    if h.last_offset() < next {
                        return Ok(true);
                    }
                    self.visit_batch(
                        h,
                        b,
                        &path,
                        pos,
                        &mut next,
                        &mut count,
                        max_records,
                        &mut visit,
                        &mut stop,
                    )?;
                    bytes += b.len();
                    Ok(!stop && count < max_records && bytes < max_bytes)
                })
                .map_err(|e| with_path(e, &path, pos))?;
                if walked > 0 {
                    break walked;
                }
                // The first batch is larger than the chunk: read it whole.
                if buf.len() < 12 {
                    return Err(LogError::Corrupt {
                        path,
                        position: pos,
                        reason: "truncated batch header".into(),
                    });
                }
                let total =
                    12 + i32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]).max(0) as usize;
                if total <= want || pos + total as u64 > end {
                    return Err(LogError::Corrupt {
                        path,
                        position: pos,
                        reason: "batch extends past the segment end".into(),
                    });
                }
                want = total;
            };
            cursor = Some((file, pos + walked as u64));
        }
        Ok(next)
    }

    #[allow(clippy::too_many_arguments)]
    fn visit_batch(
        &self,
        h: &batch::BatchHeader,
        b: &[u8],
        path: &Path,
        pos: u64,
        next: &mut i64,
        count: &mut usize,
        max_records: usize,
        visit: &mut impl FnMut(&RecordView<'_>) -> bool,
        stop: &mut bool,
    ) -> Result<()> {
        if !batch::crc_ok(b) {
            return Err(LogError::Corrupt {
                path: path.to_path_buf(),
                position: pos,
                reason: format!("CRC mismatch in batch at offset {}", h.base_offset),
            });
        }
        let corrupt = |e: batch::BatchError| LogError::Corrupt {
            path: path.to_path_buf(),
            position: pos,
            reason: format!("batch at offset {}: {e}", h.base_offset),
        };
        for r in batch::records(b).map_err(corrupt)? {
            let r = r.map_err(corrupt)?;
            if r.offset < *next {
                continue;
            }
            *next = r.offset + 1;
            *count += 1;
            if !visit(&r) {
                *stop = true;
                return Ok(());
            }
            if *count >= max_records {
                return Ok(());
            }
        }
        *next = (*next).max(h.last_offset() + 1);
        Ok(())
    }

    /// Earliest offset whose timestamp is >= `ts`, or `None` if there is none.
    pub fn offset_for_time(&self, ts: i64) -> Result<Option<i64>> {
        let start = {
            let st = self.state.read();
            match st
                .segments
                .iter()
                .find(|s| s.size > 0 && s.max_timestamp() >= ts)
            {
                None => return Ok(None),
                Some(s) => (s.base_offset + s.index.scan_start_for_time(ts) as i64)
                    .max(st.log_start_offset),
            }
        };
        let mut found = None;
        self.read(start, usize::MAX, usize::MAX, |r| {
            if r.timestamp >= ts {
                found = Some(r.offset);
                false
            } else {
                true
            }
        })?;
        Ok(found)
    }
}

fn with_path(e: LogError, path: &Path, pos: u64) -> LogError {
    match e {
        LogError::Corrupt {
            path: p,
            position,
            reason,
        } if p.as_os_str().is_empty() => LogError::Corrupt {
            path: path.to_path_buf(),
            position: pos + position,
            reason,
        },
        other => other,
    }
}
