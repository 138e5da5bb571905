//! A partition: an ordered list of segments, the last one active. Appends are serialised by a
//! writer mutex and encoded and written outside the state lock; readers see only published bytes,
//! so they never block the writer for longer than an index update. `truncate_to` cuts the log back
//! to a batch boundary, atomically across crashes (an intent file finished on open).

use parking_lot::{Mutex, RwLock};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use std::os::unix::fs::FileExt;

use crate::batch::{self, BatchWriter, RecordHeader, RecordView};
use crate::config::{FsyncPolicy, TopicConfig};
use crate::error::{IoContext, LogError, Result};
use crate::index::SegmentIndex;
use crate::notify::Notifier;
use crate::segment::{for_each_batch, read_exact_at, segment_paths, Cut, Damage, Segment};

/// The intent file a truncation writes (durably) before it changes anything, and removes when it is
/// done; finding it on open means a truncation was interrupted, and it is finished then.
pub const TRUNCATION_MARKER: &str = "truncation.json";

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
    /// Held by retention, compaction and truncation of this partition, so they never interleave
    /// (compaction renaming a rewritten segment over one a truncation just cut would bring
    /// truncated records back). Taken before `writer` when both are needed.
    pub(crate) maintenance: Mutex<()>,
    pub(crate) state: RwLock<PartitionState>,
    dirty: AtomicBool,
    notifier: Arc<Notifier>,
    /// Bumped (under the state write lock) by every truncation before it touches a file. A read
    /// that sees it change stops: the bytes it was reading may have been cut or overwritten.
    truncations: AtomicU64,
    /// Set when a truncation failed after writing its intent file: the files may be half cut, so
    /// appends are refused until the log is reopened (which finishes the truncation).
    broken: AtomicBool,
    broken_why: Mutex<String>,
}

/// The contents of [`TRUNCATION_MARKER`].
#[derive(serde::Serialize, serde::Deserialize)]
struct TruncationIntent {
    offset: i64,
}

/// What a truncation will do, worked out before anything changes.
struct TruncationPlan {
    /// Position in `segments` of the segment that is cut; every later one is deleted.
    keep: usize,
    /// Bytes of that segment that stay (a batch boundary).
    position: u64,
    /// Its index for those bytes (unsealed).
    index: SegmentIndex,
    /// One past the last record that stays.
    records_end: i64,
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
        let part = Partition {
            topic,
            id,
            dir,
            config,
            fsync,
            writer: Mutex::new(()),
            maintenance: Mutex::new(()),
            state: RwLock::new(PartitionState {
                segments,
                log_start_offset,
            }),
            dirty: AtomicBool::new(false),
            notifier,
            truncations: AtomicU64::new(0),
            broken: AtomicBool::new(false),
            broken_why: Mutex::new(String::new()),
        };
        damages.extend(part.finish_interrupted_truncation()?);
        Ok((part, damages))
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
        self.check_not_broken()?;
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

    /// Remove every record at offset >= `offset`: the log end offset becomes `offset` and appends
    /// continue there. `offset` must lie in [earliest, latest] (else `OffsetOutOfRange`) and on a
    /// batch boundary: Kafka batches can't be split, so an offset strictly inside a batch is
    /// `InvalidArgument`. Offsets our own writer reports after whole appends (the `latest` of
    /// [`offsets`](Self::offsets) after `append` returned, which is what a pipeline checkpoint
    /// records as a sink's end offset) always are boundaries. Truncating to the current end
    /// changes nothing.
    ///
    /// Holds the writer lock (no append interleaves) and the maintenance lock (no retention or
    /// compaction of this partition interleaves). Readers are not blocked: after this returns no
    /// read sees anything at or past `offset`, and a read in flight stops at the truncation
    /// (see [`read`](Self::read)). A `read` from past the new end is `OffsetOutOfRange`; a
    /// `Consumer` positioned past it continues at the new end. Waiters on the notifier are woken.
    ///
    /// # Durability and crash safety
    ///
    /// Always fsynced, whatever the log's fsync policy. Atomic across crashes via an intent file:
    ///
    /// 1. Validate and plan (find the cut position and the cut segment's new index) without
    ///    changing anything; a bad `offset` fails here and leaves no trace.
    /// 2. Write [`TRUNCATION_MARKER`] = `{"offset": offset}` atomically (temp file, fsync, rename,
    ///    fsync dir). A crash before the rename completes leaves the log untouched (the temp file
    ///    is removed on open).
    /// 3. Publish the new state in memory (bumping the truncation epoch, so reads in flight stop).
    /// 4. Delete the later segments, newest first, each index before its `.log`; remove the cut
    ///    segment's index files (it becomes the active segment, whose index is never on disk),
    ///    `set_len` its `.log` to the batch boundary and fsync it.
    /// 5. Only if the kept records end below `offset` (a compacted segment with no records at the
    ///    end of its range): write the cut segment's index as a sealed segment and start an empty
    ///    segment at `offset`, because on open the log end is derived from the last segment's
    ///    records and would otherwise come back lower than `offset`.
    /// 6. fsync the directory, remove the marker, fsync the directory again, so the marker can
    ///    never outlive this call and later cut records appended after it.
    ///
    /// Every step from 4 on is idempotent given the marker, and none of them touches a record
    /// below `offset` (segments before the cut one are never touched, and the cut keeps every
    /// batch below `offset`). So a crash at any point after 2 reopens to a state from which
    /// `Partition::open` finishes the truncation (reported in the open report): the log is
    /// always either exactly before or exactly after the truncation, never torn. Deleting the
    /// later segments before cutting the kept one also means that, even without the marker, no
    /// intermediate state has a hole: the files on disk are always a prefix of the old ones.
    ///
    /// If a step from 2 on fails (an I/O error), the partition refuses appends and truncations
    /// until the log is reopened, which finishes the truncation from the marker.
    pub fn truncate_to(&self, offset: i64) -> Result<()> {
        let _m = self.maintenance.lock();
        let _w = self.writer.lock();
        let latest = self.check_truncation(offset)?;
        if offset == latest {
            return Ok(());
        }
        let plan = self.plan_truncation(offset)?;
        self.apply_truncation(offset, plan).inspect_err(|e| {
            *self.broken_why.lock() = format!("truncation to offset {offset} failed: {e}");
            self.broken.store(true, Ordering::SeqCst);
        })
    }

    /// Check that `truncate_to(offset)` would be accepted (range, batch boundary) without
    /// changing anything; appends meanwhile can't make a valid offset invalid.
    pub(crate) fn validate_truncation(&self, offset: i64) -> Result<()> {
        if offset < self.check_truncation(offset)? {
            self.plan_truncation(offset)?;
        }
        Ok(())
    }

    /// The checks every truncation starts with; returns the current end offset.
    fn check_truncation(&self, offset: i64) -> Result<i64> {
        if self.notifier.is_closed() {
            return Err(LogError::Closed);
        }
        self.check_not_broken()?;
        let st = self.state.read();
        if offset < st.log_start_offset || offset > st.next_offset() {
            return Err(self.out_of_range(offset, &st));
        }
        Ok(st.next_offset())
    }

    fn check_not_broken(&self) -> Result<()> {
        if !self.broken.load(Ordering::SeqCst) {
            return Ok(());
        }
        Err(LogError::io(
            &self.dir,
            std::io::Error::other(format!(
                "{}/{} is unusable until the log is reopened (which completes the truncation): {}",
                self.topic,
                self.id,
                self.broken_why.lock()
            )),
        ))
    }

    /// Find the segment to cut and where; refuses an offset inside a batch. Changes nothing.
    fn plan_truncation(&self, offset: i64) -> Result<TruncationPlan> {
        let st = self.state.read();
        let keep = st
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        match st.segments[keep].plan_cut(offset)? {
            Cut::InsideBatch { base, last } => Err(LogError::InvalidArgument(format!(
                "cannot truncate {}/{} to offset {offset}: it falls inside the record batch \
                 holding offsets {base}..={last}, and Kafka batches can't be split; truncate to \
                 {base} or {} (a batch boundary, such as an end offset recorded after an append)",
                self.topic,
                self.id,
                last + 1
            ))),
            Cut::At {
                position,
                index,
                records_end,
            } => Ok(TruncationPlan {
                keep,
                position,
                index,
                records_end,
            }),
        }
    }

    /// Steps 2-6 of `truncate_to` (see there). Caller holds the maintenance and writer locks,
    /// or is `open`.
    fn apply_truncation(&self, offset: i64, plan: TruncationPlan) -> Result<()> {
        use crate::fsutil::sync_dir;
        let marker = self.dir.join(TRUNCATION_MARKER);
        let intent = serde_json::to_vec(&TruncationIntent { offset })
            .map_err(|e| LogError::InvalidArgument(e.to_string()))?;
        crate::fsutil::write_atomic(&marker, &intent)?;

        let gap = plan.records_end < offset;
        let (removed, file, path, base) = {
            let mut st = self.state.write();
            self.truncations.fetch_add(1, Ordering::SeqCst);
            let removed = st.segments.split_off(plan.keep + 1);
            let seg = &mut st.segments[plan.keep];
            seg.size = plan.position;
            seg.next_offset = offset;
            seg.index = plan.index;
            if gap {
                seg.index.seal((offset - 1 - seg.base_offset) as u32);
            }
            (
                removed,
                seg.file.clone(),
                seg.log_path.clone(),
                seg.base_offset,
            )
        };

        for seg in removed.iter().rev() {
            seg.delete_files()?;
        }
        let (_, index_path, time_path) = segment_paths(&self.dir, base);
        SegmentIndex::remove_files(&index_path, &time_path)?;
        file.set_len(plan.position).at(&path)?;
        file.sync_all().at(&path)?;
        if gap {
            self.state.read().segments[plan.keep].write_index()?;
            let new = Segment::create(&self.dir, offset)?;
            self.state.write().segments.push(new);
        }
        sync_dir(&self.dir)?;
        std::fs::remove_file(&marker).at(&marker)?;
        sync_dir(&self.dir)?;
        self.notifier.notify();
        Ok(())
    }

    /// On open: finish a truncation whose marker is still there (see `truncate_to`).
    fn finish_interrupted_truncation(&self) -> Result<Option<Damage>> {
        let marker = self.dir.join(TRUNCATION_MARKER);
        let bytes = match std::fs::read(&marker) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LogError::io(&marker, e)),
        };
        let intent: TruncationIntent =
            serde_json::from_slice(&bytes).map_err(|e| LogError::Corrupt {
                path: marker.clone(),
                position: 0,
                reason: format!("bad truncation intent: {e}"),
            })?;
        let (earliest, latest) = self.offsets();
        let before = self.size_bytes();
        // Below the start can't happen (retention waits for truncations); the nearest thing to
        // what was asked is to keep nothing.
        let target = intent.offset.max(earliest);
        if target == latest {
            std::fs::remove_file(&marker).at(&marker)?;
            crate::fsutil::sync_dir(&self.dir)?;
        } else {
            // Past the end when the last records before the target were never made durable (or
            // the end lies in a compacted gap and step 5 was cut short): the log end moves
            // forward to the target, as the interrupted call would have left it.
            let plan = self
                .plan_truncation(target)
                .map_err(|e| LogError::Corrupt {
                    path: marker.clone(),
                    position: 0,
                    reason: format!("cannot finish the interrupted truncation to {target}: {e}"),
                })?;
            self.apply_truncation(target, plan)?;
        }
        let after = self.size_bytes();
        Ok(Some(Damage {
            path: marker,
            valid_bytes: after,
            dropped_bytes: before.saturating_sub(after),
            reason: format!(
                "finished an interrupted truncation of {}/{} to offset {}",
                self.topic, self.id, intent.offset
            ),
        }))
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

    fn locate(&self, next: i64, cursor: Option<&(Arc<std::fs::File>, u64)>, epoch: u64) -> Located {
        let st = self.state.read();
        if next >= st.next_offset() || self.truncations.load(Ordering::SeqCst) != epoch {
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
    ///
    /// A read that overlaps a [`truncate_to`](Self::truncate_to) stops early, at a batch boundary
    /// before the truncation touched anything it read: what it returned was the log's content
    /// just before the truncation.
    pub fn read(
        &self,
        offset: i64,
        max_records: usize,
        max_bytes: usize,
        mut visit: impl FnMut(&RecordView<'_>) -> bool,
    ) -> Result<i64> {
        let epoch = {
            let st = self.state.read();
            if offset < st.log_start_offset || offset > st.next_offset() {
                return Err(self.out_of_range(offset, &st));
            }
            self.truncations.load(Ordering::SeqCst)
        };
        let mut next = offset;
        let mut count = 0usize;
        let mut bytes = 0usize;
        let mut cursor: Option<(Arc<std::fs::File>, u64)> = None;
        let mut buf: Vec<u8> = Vec::new();
        let mut stop = false;
        while !stop && count < max_records && bytes < max_bytes {
            let (file, path, pos, end) = match self.locate(next, cursor.as_ref(), epoch) {
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
                let got = read_exact_at(&file, &path, &mut buf, pos);
                // A truncation bumps the epoch before it cuts or deletes a file, so bytes read
                // while it stayed unchanged are the log's; otherwise they may be cut or rewritten.
                if self.truncations.load(Ordering::SeqCst) != epoch {
                    return Ok(next);
                }
                got?;
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
