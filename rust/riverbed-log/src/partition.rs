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
use crate::checkpoint_key::CheckpointKey;
use crate::config::{FsyncPolicy, TopicConfig};
use crate::error::{IoContext, LogError, Result};
use crate::index::SegmentIndex;
use crate::notify::Notifier;
use crate::quarantine::{self, Gap};
use crate::segment::{
    for_each_batch, read_exact_at, segment_paths, BadRegion, Cut, Damage, Segment, SegmentFindings,
};

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
    /// Offset ranges that can't be read (damaged or missing), sorted by `from`; mirrored in
    /// `quarantine.json`.
    pub gaps: Vec<Gap>,
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
    /// Swapped whole by `Log::alter_topic_config`; read per use.
    config: RwLock<Arc<TopicConfig>>,
    fsync: FsyncPolicy,
    pub(crate) writer: Mutex<()>,
    /// Held by retention, compaction and truncation of this partition, so they never interleave
    /// (compaction renaming a rewritten segment over one a truncation just cut would bring
    /// truncated records back). Taken before `writer` when both are needed.
    pub(crate) maintenance: Mutex<()>,
    pub(crate) state: RwLock<PartitionState>,
    pub(crate) dirty: AtomicBool,
    notifier: Arc<Notifier>,
    /// Bumped (under the state write lock) by every truncation before it touches a file. A read
    /// that sees it change stops: the bytes it was reading may have been cut or overwritten.
    pub(crate) truncations: AtomicU64,
    /// Set when a truncation failed after writing its intent file: the files may be half cut, so
    /// appends are refused until the log is reopened (which finishes the truncation).
    broken: AtomicBool,
    broken_why: Mutex<String>,
    /// Damage found after open (by a read's CRC check), for `check()` and the log's report.
    found: Mutex<Vec<Damage>>,
    /// Serialises writes of `quarantine.json`.
    quarantine_lock: Mutex<()>,
}

/// The contents of [`TRUNCATION_MARKER`]: the truncation asked for and the state it was planned
/// against, signed (HMAC-SHA256) under the log's checkpoint key
/// ([`crate::checkpoint_key`]) together with the topic and partition it is for. Only riverbed,
/// holding this log's key, can write an intent that is honoured: a file it did not write (a
/// stray or crafted `{"offset": 0}`, one with a recomputed CRC, one copied from another
/// partition or another log) is reported and left alone, never applied.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TruncationIntent {
    version: u32,
    offset: i64,
    /// The partition's end offset when the truncation was planned.
    end_before: i64,
    /// Base offset of the segment that is cut, and the byte position of the cut.
    segment: i64,
    position: u64,
    /// Hex HMAC-SHA256 of [`TruncationIntent::signed_text`] under the log's key.
    mac: String,
}

const INTENT_VERSION: u32 = 2;

/// The bytes of a valid truncation intent for `topic`/`partition` of the log at `root`, signed
/// with its key (created if missing); for tests that rebuild a crash state by hand.
#[doc(hidden)]
pub fn truncation_intent_bytes(
    root: &Path,
    topic: &str,
    partition: u32,
    offset: i64,
    end_before: i64,
    segment: i64,
    position: u64,
) -> Result<Vec<u8>> {
    let key = CheckpointKey::for_log(root)?;
    TruncationIntent::signed(
        &key, topic, partition, offset, end_before, segment, position,
    )
}

impl TruncationIntent {
    fn signed_text(
        topic: &str,
        partition: u32,
        offset: i64,
        end_before: i64,
        segment: i64,
        position: u64,
    ) -> String {
        format!(
            "riverbed truncation v{INTENT_VERSION}\n{topic}\n{partition}\n{offset}\n{end_before}\n{segment}\n{position}"
        )
    }

    fn mac_of(key: &CheckpointKey, text: &str) -> String {
        use hmac::Mac;
        let mut mac = key.signer();
        mac.update(text.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn signed(
        key: &CheckpointKey,
        topic: &str,
        partition: u32,
        offset: i64,
        end_before: i64,
        segment: i64,
        position: u64,
    ) -> Result<Vec<u8>> {
        let text = Self::signed_text(topic, partition, offset, end_before, segment, position);
        serde_json::to_vec(&TruncationIntent {
            version: INTENT_VERSION,
            offset,
            end_before,
            segment,
            position,
            mac: Self::mac_of(key, &text),
        })
        .map_err(|e| LogError::InvalidArgument(e.to_string()))
    }

    /// Whether this intent was signed under `key` for `topic`/`partition` (constant time).
    fn verifies(&self, key: &CheckpointKey, topic: &str, partition: u32) -> bool {
        use hmac::Mac;
        let text = Self::signed_text(
            topic,
            partition,
            self.offset,
            self.end_before,
            self.segment,
            self.position,
        );
        let Some(given) = (0..self.mac.len())
            .step_by(2)
            .map(|i| {
                self.mac
                    .get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
        else {
            return false;
        };
        let mut mac = key.signer();
        mac.update(text.as_bytes());
        mac.verify_slice(&given).is_ok()
    }
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

pub(crate) struct EncodedBatch {
    pub(crate) range: std::ops::Range<usize>,
    pub(crate) base: i64,
    pub(crate) last: i64,
    pub(crate) max_ts: i64,
}

pub(crate) enum Located {
    Read {
        file: Arc<std::fs::File>,
        path: PathBuf,
        pos: u64,
        end: u64,
        base: i64,
    },
    Jump(i64),
    Gap(Gap),
    End,
}

/// What `verify` needs of a segment: base, file, path, size, next offset, whether it is the
/// active one, its quarantined byte regions.
type SegmentSnapshot = (
    i64,
    Arc<std::fs::File>,
    PathBuf,
    u64,
    i64,
    bool,
    Vec<(u64, u64)>,
);

/// A `.log` file name of a segment: 20 digits.
fn segment_base(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

/// Files of an interrupted write that riverbed itself leaves in a partition directory.
fn is_own_leftover(name: &str) -> bool {
    name.strip_suffix(".log.cleaned")
        .is_some_and(|s| segment_base(&format!("{s}.log")).is_some())
        || name == "truncation.tmp"
        || name == "quarantine.tmp"
        || name.ends_with(".idxtmp")
}

/// The base offset of a segment file's first batch, when it is a whole batch with a valid CRC
/// (damage there is recovery's business, not a sign of a stray file).
fn first_batch_base(path: &Path) -> Option<i64> {
    let f = std::fs::File::open(path).ok()?;
    let mut head = [0u8; batch::HEADER_LEN];
    f.read_exact_at(&mut head, 0).ok()?;
    let total = 12 + usize::try_from(i32::from_be_bytes(head[8..12].try_into().ok()?)).ok()?;
    if total > 64 << 20 {
        return None;
    }
    let mut whole = vec![0u8; total];
    f.read_exact_at(&mut whole, 0).ok()?;
    let base = i64::from_be_bytes(head[..8].try_into().ok()?);
    (batch::crc_ok(&whole) && base >= 0).then_some(base)
}

impl Partition {
    /// Open (or create) the partition directory: recover the active segment (truncate a torn
    /// tail, quarantine damage followed by valid batches), check that the segments' offsets are
    /// contiguous (a hole is a missing segment, recorded as a gap), ignore stray segment files
    /// (reported, left in place), and load the recorded gaps.
    pub(crate) fn open(
        topic: Arc<str>,
        id: u32,
        dir: PathBuf,
        config: Arc<TopicConfig>,
        fsync: FsyncPolicy,
        notifier: Arc<Notifier>,
    ) -> Result<(Partition, Vec<Damage>)> {
        std::fs::create_dir_all(&dir).at(&dir)?;
        let mut damages = Vec::new();
        let topic_name = topic.to_string();
        let tag = |mut d: Damage| {
            d.topic = Some(topic_name.clone());
            d.partition = Some(id);
            d
        };
        let mut bases: Vec<i64> = Vec::new();
        for entry in std::fs::read_dir(&dir).at(&dir)? {
            let entry = entry.at(&dir)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(b) = segment_base(&name) {
                bases.push(b);
            } else if name.ends_with(".log") {
                damages.push(tag(Damage::new(
                    entry.path(),
                    "stray_segment",
                    "not a segment file name (20 digits); ignored and left in place",
                )));
            } else if is_own_leftover(&name) {
                // Leftovers of an interrupted compaction or atomic write: the original is in place.
                let _ = std::fs::remove_file(entry.path());
            }
        }
        bases.sort_unstable();
        // A file whose first batch names an offset below the file's own name was not written
        // there by riverbed (a copy or a renamed file): using it would make offsets exist twice.
        let mut cands: Vec<i64> = Vec::with_capacity(bases.len());
        for &b in &bases {
            let path = segment_paths(&dir, b).0;
            match first_batch_base(&path) {
                Some(first) if first < b => {
                    let mut d = Damage::new(
                        &path,
                        "stray_segment",
                        format!(
                            "its first batch holds offset {first}, below the {b} its name \
                             says; ignored and left in place"
                        ),
                    );
                    d.offsets = Some((first, b));
                    damages.push(tag(d));
                }
                _ => cands.push(b),
            }
        }
        // Offsets inside a segment are contiguous unless compaction rewrote it.
        let contiguous = config.cleanup == crate::config::Cleanup::Delete;
        let mut segments: Vec<Segment> = Vec::with_capacity(cands.len().max(1));
        let mut findings: Vec<SegmentFindings> = Vec::new();
        let mut i = 0;
        while i < cands.len() {
            let base = cands[i];
            let last = i + 1 == cands.len();
            let (mut seg, mut f) = if last {
                Segment::recover(&dir, base, contiguous)?
            } else {
                Segment::open_sealed(&dir, base, cands[i + 1], contiguous)?
            };
            let end = f.end.max(base);
            // A later file starting inside this segment's offsets would make them exist twice.
            while i + 1 < cands.len() && cands[i + 1] < end {
                let path = segment_paths(&dir, cands[i + 1]).0;
                let mut d = Damage::new(
                    &path,
                    "stray_segment",
                    format!(
                        "its offsets overlap those of {} (which ends at {end}); ignored and \
                         left in place",
                        seg.log_path.display()
                    ),
                );
                d.offsets = Some((cands[i + 1], end));
                damages.push(tag(d));
                cands.remove(i + 1);
            }
            if !last && i + 1 == cands.len() {
                // The files after it were strays: this one is the active segment after all.
                drop(seg);
                (seg, f) = Segment::recover(&dir, base, contiguous)?;
            }
            segments.push(seg);
            findings.push(f);
            i += 1;
        }
        if segments.is_empty() {
            segments.push(Segment::create(&dir, 0)?);
            findings.push(SegmentFindings::default());
            crate::fsutil::sync_dir(&dir)?;
        }
        let n = segments.len();
        for k in 0..n - 1 {
            segments[k].next_offset = segments[k + 1].base_offset;
        }
        let name_of = |seg: &Segment| {
            seg.log_path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let mut gaps: Vec<Gap> = Vec::new();
        for k in 0..n {
            let f = &findings[k];
            let seg = &segments[k];
            if let Some((valid, dropped, reason)) = &f.truncated {
                let mut d = Damage::new(
                    &seg.log_path,
                    "torn_tail",
                    format!(
                        "{reason}; the {dropped} bytes after the last valid batch were truncated"
                    ),
                );
                d.position = *valid;
                d.valid_bytes = *valid;
                d.dropped_bytes = *dropped;
                damages.push(tag(d));
            }
            if let Some(why) = &f.index_rebuilt {
                damages.push(tag(Damage::new(
                    &seg.log_path,
                    "index_rebuilt",
                    format!("{why}: rebuilt from the segment"),
                )));
            }
            let mut tail_covered = false;
            for b in &f.bad {
                let to = match b.to {
                    Some(t) => t,
                    None => {
                        tail_covered = true;
                        seg.next_offset
                    }
                };
                let to = to.max(b.from);
                let mut d = Damage::new(&seg.log_path, "quarantined", b.reason.clone());
                d.position = b.position;
                d.valid_bytes = b.position;
                d.dropped_bytes = b.len;
                if to > b.from {
                    d.offsets = Some((b.from, to));
                    quarantine::merge(&mut gaps, gap_of(&name_of(seg), b, to));
                }
                damages.push(tag(d));
            }
            // Segments of a topic that is never compacted hold contiguous offsets: a hole
            // between two is a missing segment file.
            if k + 1 < n && !tail_covered && config.cleanup == crate::config::Cleanup::Delete {
                let end = f.end.max(seg.base_offset);
                let next = &segments[k + 1];
                if end < next.base_offset {
                    let g = Gap {
                        from: end,
                        to: next.base_offset,
                        kind: "missing_segment".into(),
                        file: name_of(next),
                        position: 0,
                        len: 0,
                        reason: format!(
                            "no segment file holds offsets {end}..{}: a segment is missing",
                            next.base_offset
                        ),
                    };
                    let mut d = Damage::new(&next.log_path, "missing_segment", g.reason.clone());
                    d.offsets = Some((g.from, g.to));
                    damages.push(tag(d));
                    quarantine::merge(&mut gaps, g);
                }
            }
        }
        let log_start_offset = segments[0].base_offset;
        let next_offset = segments[n - 1].next_offset;
        let found_on_open = gaps.clone();
        match quarantine::load(&dir) {
            Ok(Some(recorded)) => {
                for g in recorded {
                    if g.to <= log_start_offset || g.from >= next_offset {
                        continue; // removed by retention or truncation since
                    }
                    if let Some(seg) = segments.iter_mut().find(|s| name_of(s) == g.file) {
                        if g.kind == "quarantined"
                            && g.position + g.len <= seg.size
                            && !seg.bad_regions.contains(&(g.position, g.len))
                        {
                            seg.bad_regions.push((g.position, g.len));
                            seg.bad_regions.sort_unstable();
                        }
                    }
                    if quarantine::find(&found_on_open, g.from).is_none() {
                        let mut d = Damage::new(dir.join(&g.file), &g.kind, g.reason.clone());
                        d.position = g.position;
                        d.offsets = Some((g.from, g.to));
                        damages.push(tag(d));
                    }
                    quarantine::merge(&mut gaps, g);
                }
            }
            Ok(None) => {}
            Err(e) => {
                let mut d = Damage::new(
                    dir.join(quarantine::QUARANTINE_FILE),
                    "bad_quarantine_record",
                    format!("{e}; ignored (it is rewritten when a gap is next recorded)"),
                );
                d.reason = d.reason.replace('\n', " ");
                damages.push(tag(d));
            }
        }
        if !gaps.is_empty() {
            quarantine::store(&dir, &gaps)?;
        }
        let part = Partition {
            topic,
            id,
            dir,
            config: RwLock::new(config),
            fsync,
            writer: Mutex::new(()),
            maintenance: Mutex::new(()),
            state: RwLock::new(PartitionState {
                segments,
                log_start_offset,
                gaps,
            }),
            dirty: AtomicBool::new(false),
            notifier,
            truncations: AtomicU64::new(0),
            broken: AtomicBool::new(false),
            broken_why: Mutex::new(String::new()),
            found: Mutex::new(Vec::new()),
            quarantine_lock: Mutex::new(()),
        };
        damages.extend(part.finish_interrupted_truncation()?.map(tag));
        Ok((part, damages))
    }

    /// The gaps (offset ranges that can't be read) of this partition, in offset order.
    pub fn gaps(&self) -> Vec<Gap> {
        self.state.read().gaps.clone()
    }

    /// Verify every batch of every segment (CRC, order) and every sealed segment's index files;
    /// damage found is quarantined and reported in [`found_damage`](Self::found_damage), a bad
    /// index file is rewritten.
    pub fn verify(&self) -> Result<()> {
        let segs: Vec<SegmentSnapshot> = {
            let st = self.state.read();
            let n = st.segments.len();
            st.segments
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    (
                        s.base_offset,
                        s.file.clone(),
                        s.log_path.clone(),
                        s.size,
                        s.next_offset,
                        i + 1 == n,
                        s.bad_regions.clone(),
                    )
                })
                .collect()
        };
        for (base, file, path, size, next_offset, active, bad) in segs {
            let contiguous = self.config().cleanup == crate::config::Cleanup::Delete;
            let scan = crate::segment::scan_upto(&file, &path, base, size, contiguous)?;
            if scan.bad.iter().any(|b| !bad.contains(&(b.position, b.len))) {
                self.discover_damage(base, &file)?;
            }
            if active {
                continue;
            }
            let (_, index_path, time_path) = segment_paths(&self.dir, base);
            let last_rel = u32::try_from(next_offset - 1 - base).ok();
            let mut want = scan.index.clone();
            if next_offset > base {
                if let Some(l) = last_rel {
                    want.seal(l);
                }
            }
            let on_disk = SegmentIndex::read_files(&index_path, &time_path, size, last_rel);
            let ok = on_disk
                .as_ref()
                .is_some_and(|ix| ix.offsets == want.offsets && ix.times == want.times);
            if !ok {
                want.write_files(&index_path, &time_path)?;
                let mut d = Damage::new(
                    &index_path,
                    "index_rebuilt",
                    if on_disk.is_none() {
                        "index file missing, truncated or inconsistent: rebuilt from the segment"
                    } else {
                        "index file does not match the segment: rebuilt from the segment"
                    },
                );
                d.topic = Some(self.topic.to_string());
                d.partition = Some(self.id);
                self.found.lock().push(d);
            }
        }
        Ok(())
    }

    /// Write `quarantine.json` from the gaps in memory.
    pub(crate) fn store_gaps(&self) -> Result<()> {
        let _q = self.quarantine_lock.lock();
        let gaps = self.state.read().gaps.clone();
        quarantine::store(&self.dir, &gaps)
    }

    /// Damage found since open (a read met a bad batch in a sealed segment).
    pub fn found_damage(&self) -> Vec<Damage> {
        self.found.lock().clone()
    }

    pub fn config(&self) -> Arc<TopicConfig> {
        self.config.read().clone()
    }

    /// Replace the settings (same partition count); used by `Log::alter_topic_config`.
    pub(crate) fn set_config(&self, config: Arc<TopicConfig>) {
        *self.config.write() = config;
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
    pub(crate) fn write_batches(&self, buf: &[u8], batches: &[EncodedBatch]) -> Result<()> {
        let config = self.config();
        let seg_bytes = config.segment_bytes;
        let mut i = 0;
        while i < batches.len() {
            let (file, path, start_size, created) = {
                let st = self.state.read();
                let a = st.segments.last().ok_or(LogError::Closed)?;
                (a.file.clone(), a.log_path.clone(), a.size, a.created_ms)
            };
            let first_len = batches[i].range.len() as u64;
            let too_old = config
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

    pub(crate) fn check_not_broken(&self) -> Result<()> {
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
        let (end_before, segment) = {
            let st = self.state.read();
            (st.next_offset(), st.segments[plan.keep].base_offset)
        };
        let key = CheckpointKey::for_log(&self.log_root())?;
        let intent = TruncationIntent::signed(
            &key,
            &self.topic,
            self.id,
            offset,
            end_before,
            segment,
            plan.position,
        )?;
        crate::fsutil::write_atomic(&marker, &intent)?;

        let gap = plan.records_end < offset;
        let (removed, file, path, base) = {
            let mut st = self.state.write();
            self.truncations.fetch_add(1, Ordering::SeqCst);
            let removed = st.segments.split_off(plan.keep + 1);
            // Gaps at or past the cut go with the records they stood for.
            st.gaps.retain(|g| g.from < offset);
            for g in &mut st.gaps {
                g.to = g.to.min(offset);
            }
            let seg = &mut st.segments[plan.keep];
            seg.bad_regions.retain(|&(p, _)| p < plan.position);
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
        {
            let _q = self.quarantine_lock.lock();
            let gaps = self.state.read().gaps.clone();
            quarantine::store(&self.dir, &gaps)?;
        }
        sync_dir(&self.dir)?;
        std::fs::remove_file(&marker).at(&marker)?;
        sync_dir(&self.dir)?;
        self.notifier.notify();
        Ok(())
    }

    /// The root of the log this partition is in (`<root>/<topic>/<partition>`).
    fn log_root(&self) -> PathBuf {
        self.dir
            .parent()
            .and_then(Path::parent)
            .map_or_else(|| self.dir.clone(), Path::to_path_buf)
    }

    /// On open: finish a truncation whose marker is still there (see `truncate_to`).
    fn finish_interrupted_truncation(&self) -> Result<Option<Damage>> {
        let marker = self.dir.join(TRUNCATION_MARKER);
        let bytes = match std::fs::read(&marker) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LogError::io(&marker, e)),
        };
        let (earliest, latest) = self.offsets();
        let ignored = |why: String| {
            Ok(Some(Damage::new(
                &marker,
                "truncation_ignored",
                format!(
                    "{why}: not a truncation riverbed started on this partition, so nothing \
                     was truncated (the file is left in place)"
                ),
            )))
        };
        let intent: TruncationIntent = match serde_json::from_slice(&bytes) {
            Ok(i) => i,
            Err(e) => return ignored(format!("unreadable truncation intent ({e})")),
        };
        if intent.version != INTENT_VERSION {
            return ignored(format!(
                "a truncation intent of version {} (this riverbed signs version {INTENT_VERSION})",
                intent.version
            ));
        }
        let key = match CheckpointKey::of_log(&self.log_root()) {
            Ok(Some(k)) => k,
            Ok(None) => {
                return ignored(format!(
                    "the log has no checkpoint key ({}/checkpoint.key) to check the truncation \
                     intent's signature with",
                    crate::checkpoint_key::CHECKPOINTS_DIR
                ))
            }
            Err(e) => return ignored(format!("the log's checkpoint key is unusable ({e})")),
        };
        if !intent.verifies(&key, &self.topic, self.id) {
            return ignored(format!(
                "the truncation intent is not signed by this log's key for {}/{}",
                self.topic, self.id
            ));
        }
        let segment_ok = self.state.read().segments.iter().any(|s| {
            s.base_offset == intent.segment && s.base_offset <= intent.offset.max(earliest)
        });
        // The end may lie below the target (the kept records of a compacted segment end in a
        // hole before it), never above where the truncation started.
        if latest > intent.end_before || intent.offset > intent.end_before || !segment_ok {
            return ignored(format!(
                "the truncation intent (to {} from {}) does not match the partition (offsets \
                 {earliest}..{latest})",
                intent.offset, intent.end_before
            ));
        }
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
        let mut d = Damage::new(
            marker,
            "truncation_finished",
            format!(
                "finished an interrupted truncation of {}/{} to offset {}",
                self.topic, self.id, intent.offset
            ),
        );
        d.valid_bytes = after;
        d.dropped_bytes = before.saturating_sub(after);
        Ok(Some(d))
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

    pub(crate) fn locate(
        &self,
        next: i64,
        cursor: Option<&(Arc<std::fs::File>, u64)>,
        epoch: u64,
    ) -> Located {
        let st = self.state.read();
        if next >= st.next_offset() || self.truncations.load(Ordering::SeqCst) != epoch {
            return Located::End;
        }
        if next < st.log_start_offset {
            return Located::Jump(st.log_start_offset);
        }
        if let Some(g) = quarantine::find(&st.gaps, next) {
            return Located::Gap(g.clone());
        }
        let i = st
            .segments
            .partition_point(|s| s.base_offset <= next)
            .saturating_sub(1);
        let seg = &st.segments[i];
        let mut pos = match cursor {
            // A cursor is only valid for the very file it was made in (compaction replaces files).
            Some((f, p)) if Arc::ptr_eq(f, &seg.file) => *p,
            _ => seg.index.position_for((next - seg.base_offset) as u32) as u64,
        };
        // Step over quarantined bytes; read only up to the next quarantined region.
        while let Some(&(p, l)) = seg
            .bad_regions
            .iter()
            .find(|&&(p, l)| p <= pos && pos < p + l)
        {
            pos = p + l;
        }
        let end = seg
            .bad_regions
            .iter()
            .filter(|&&(p, _)| p >= pos)
            .map(|&(p, _)| p)
            .min()
            .unwrap_or(seg.size)
            .min(seg.size);
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
            end,
            base: seg.base_offset,
        }
    }

    fn gap_error(&self, g: &Gap) -> LogError {
        LogError::Gap(Box::new(crate::error::GapError {
            topic: self.topic.to_string(),
            partition: self.id,
            from: g.from,
            to: g.to,
            kind: g.kind.clone(),
            path: self.dir.join(&g.file),
            position: g.position,
            reason: g.reason.clone(),
        }))
    }

    /// A read met a bad batch (or a wrong index entry) in the segment at `base`: scan it whole,
    /// quarantine every damaged region (recorded in `quarantine.json` and reported), and replace
    /// its index if the scan disagrees with it. Returns whether anything changed, so the read can
    /// try again.
    pub(crate) fn discover_damage(&self, base: i64, file: &Arc<std::fs::File>) -> Result<bool> {
        let _q = self.quarantine_lock.lock();
        let (path, size, next_offset) = {
            let st = self.state.read();
            match st
                .segments
                .iter()
                .find(|s| s.base_offset == base && Arc::ptr_eq(&s.file, file))
            {
                Some(s) => (s.log_path.clone(), s.size, s.next_offset),
                None => return Ok(true), // replaced meanwhile (compaction, truncation): retry
            }
        };
        let contiguous = self.config().cleanup == crate::config::Cleanup::Delete;
        let scan = crate::segment::scan_upto(file, &path, base, size, contiguous)?;
        let name = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut changed = false;
        let mut new_damage = Vec::new();
        let gaps = {
            let mut st = self.state.write();
            let Some(seg) = st
                .segments
                .iter_mut()
                .find(|s| s.base_offset == base && Arc::ptr_eq(&s.file, file))
            else {
                return Ok(true);
            };
            let mut index = scan.index.clone();
            if seg.next_offset > seg.base_offset {
                index.seal((seg.next_offset - 1 - seg.base_offset) as u32);
            }
            let new_bad = scan
                .bad
                .iter()
                .any(|b| !seg.bad_regions.contains(&(b.position, b.len)));
            if seg.index.offsets != index.offsets && new_bad {
                // The index described the damaged batches too: the scan's skips them.
                seg.index = index;
            } else if seg.index.offsets != index.offsets {
                seg.index = index;
                changed = true;
                let mut d = Damage::new(
                    &path,
                    "index_rebuilt",
                    "the offset index pointed at bytes that are not the batch it names: rebuilt",
                );
                d.topic = Some(self.topic.to_string());
                d.partition = Some(self.id);
                new_damage.push(d);
            }
            let mut new_gaps = Vec::new();
            for b in &scan.bad {
                if seg.bad_regions.contains(&(b.position, b.len)) {
                    continue;
                }
                seg.bad_regions.push((b.position, b.len));
                seg.bad_regions.sort_unstable();
                changed = true;
                let to = b.to.unwrap_or(next_offset).max(b.from);
                let mut d = Damage::new(&path, "quarantined", b.reason.clone());
                d.topic = Some(self.topic.to_string());
                d.partition = Some(self.id);
                d.position = b.position;
                d.valid_bytes = b.position;
                d.dropped_bytes = b.len;
                if to > b.from {
                    d.offsets = Some((b.from, to));
                    new_gaps.push(gap_of(&name, b, to));
                }
                new_damage.push(d);
            }
            for g in new_gaps {
                quarantine::merge(&mut st.gaps, g);
            }
            st.gaps.clone()
        };
        if changed {
            quarantine::store(&self.dir, &gaps)?;
            self.found.lock().extend(new_damage);
        }
        Ok(changed)
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
        let mut retries = 0;
        while !stop && count < max_records && bytes < max_bytes {
            let (file, path, pos, end, base) = match self.locate(next, cursor.as_ref(), epoch) {
                Located::End => break,
                Located::Jump(n) => {
                    next = n;
                    cursor = None;
                    continue;
                }
                Located::Gap(g) => {
                    if count > 0 {
                        break; // return what was read; the next read meets the gap
                    }
                    return Err(self.gap_error(&g));
                }
                Located::Read {
                    file,
                    path,
                    pos,
                    end,
                    base,
                } => (file, path, pos, end, base),
            };
            let fresh = cursor.is_none();
            match self.read_chunk(
                &file,
                &path,
                pos,
                end,
                epoch,
                fresh,
                &mut next,
                &mut count,
                &mut bytes,
                max_records,
                max_bytes,
                &mut buf,
                &mut visit,
                &mut stop,
            ) {
                Ok(Some(walked)) => cursor = Some((file, pos + walked as u64)),
                Ok(None) => return Ok(next),
                Err(LogError::Corrupt { .. }) if count == 0 && retries < 3 => {
                    // Lazy check of a sealed segment (or damage that appeared since open):
                    // quarantine it and locate again, meeting the damage as a gap.
                    retries += 1;
                    if !self.discover_damage(base, &file)? {
                        retries = 3;
                    }
                    cursor = None;
                }
                Err(e) => {
                    if count > 0 {
                        // Return what was read; the next read reports the damage.
                        return Ok(next);
                    }
                    return Err(e);
                }
            }
        }
        Ok(next)
    }

    /// Read and visit the batches of one segment from `pos` (a batch boundary) up to `end`.
    /// `Ok(None)`: a truncation overlapped the read, stop. `Ok(Some(n))`: `n` bytes were walked.
    #[allow(clippy::too_many_arguments)]
    fn read_chunk(
        &self,
        file: &Arc<std::fs::File>,
        path: &Path,
        pos: u64,
        end: u64,
        epoch: u64,
        fresh: bool,
        next: &mut i64,
        count: &mut usize,
        bytes: &mut usize,
        max_records: usize,
        max_bytes: usize,
        buf: &mut Vec<u8>,
        visit: &mut impl FnMut(&RecordView<'_>) -> bool,
        stop: &mut bool,
    ) -> Result<Option<usize>> {
        let mut want = ((end - pos) as usize).min(READ_CHUNK);
        loop {
            buf.resize(want, 0);
            let got = read_exact_at(file, path, buf, pos);
            // A truncation bumps the epoch before it cuts or deletes a file, so bytes read
            // while it stayed unchanged are the log's; otherwise they may be cut or rewritten.
            if self.truncations.load(Ordering::SeqCst) != epoch {
                return Ok(None);
            }
            got?;
            let walked = for_each_batch(buf, |h, b, at| {
                // Located by an index entry: the batch there starts at or before the offset
                // wanted (the entry names its first offset). Otherwise the index is wrong, and
                // reading on would skip records.
                if fresh && at == 0 && pos > 0 && h.base_offset > *next {
                    return Err(LogError::Corrupt {
                        path: path.to_path_buf(),
                        position: pos,
                        reason: format!(
                            "the offset index points at the batch of offset {} for offset {}",
                            h.base_offset, *next
                        ),
                    });
                }
                if h.last_offset() < *next {
                    return Ok(true);
                }
                self.visit_batch(
                    h,
                    b,
                    path,
                    pos + at as u64,
                    next,
                    count,
                    max_records,
                    visit,
                    stop,
                )?;
                *bytes += b.len();
                Ok(!*stop && *count < max_records && *bytes < max_bytes)
            })
            .map_err(|e| with_path(e, path, pos))?;
            if walked > 0 {
                return Ok(Some(walked));
            }
            // The first batch is larger than the chunk: read it whole.
            if buf.len() < 12 {
                return Err(LogError::Corrupt {
                    path: path.to_path_buf(),
                    position: pos,
                    reason: "truncated batch header".into(),
                });
            }
            let total = 12 + i32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]).max(0) as usize;
            if total <= want || pos + total as u64 > end {
                return Err(LogError::Corrupt {
                    path: path.to_path_buf(),
                    position: pos,
                    reason: "batch extends past the segment end (or into quarantined bytes)".into(),
                });
            }
            want = total;
        }
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
        for r in &batch::records(b).map_err(corrupt)? {
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
        let mut from = start;
        loop {
            let read = self.read(from, usize::MAX, usize::MAX, |r| {
                if r.timestamp >= ts {
                    found = Some(r.offset);
                    false
                } else {
                    true
                }
            });
            from = match read {
                Ok(_) if found.is_some() => break,
                Ok(next) if next > from => next,
                Ok(_) => break,
                // Timestamps in a gap are unknown: look on after it.
                Err(LogError::Gap(g)) => g.to,
                Err(e) => return Err(e),
            };
        }
        Ok(found)
    }
}

/// The gap a damaged region leaves, ending at `to`.
fn gap_of(file: &str, b: &BadRegion, to: i64) -> Gap {
    Gap {
        from: b.from,
        to,
        kind: "quarantined".into(),
        file: file.to_string(),
        position: b.position,
        len: b.len,
        reason: b.reason.clone(),
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
