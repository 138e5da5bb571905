//! One segment: a `.log` file of Kafka record batches whose name is its base offset, with its
//! in-memory index. Also the scan that validates a segment on open (recovery) and rebuilds indexes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{self, BatchError, BatchHeader};
use crate::error::{IoContext, LogError, Result};
use crate::index::SegmentIndex;

#[derive(Debug)]
pub struct Segment {
    pub base_offset: i64,
    pub log_path: PathBuf,
    pub file: Arc<File>,
    /// Bytes of complete batches; readers never look past it.
    pub size: u64,
    /// One past the last offset stored here (`base_offset` when empty).
    pub next_offset: i64,
    pub index: SegmentIndex,
    /// Wall-clock ms of the first append (or of opening), for `segment_ms` rolls.
    pub created_ms: i64,
    /// Byte regions `(position, len)` that hold no valid batch (quarantined): readers skip them.
    pub bad_regions: Vec<(u64, u64)>,
}

/// What opening a segment found.
#[derive(Debug, Default)]
pub struct SegmentFindings {
    /// Base offset of the first valid batch, if the segment holds one.
    pub first_base: Option<i64>,
    /// One past the last offset of the last valid batch (or claimed by a damaged last batch).
    pub end: i64,
    /// Damaged regions kept in place (offsets `[from, to)`; `to` is `None` for a damaged tail
    /// of a sealed segment: it runs to the next segment).
    pub bad: Vec<BadRegion>,
    /// A torn tail that was truncated: (valid bytes, dropped bytes, reason).
    pub truncated: Option<(u64, u64, String)>,
    /// Why the index files were rebuilt, if they were.
    pub index_rebuilt: Option<String>,
}

/// One thing recovery, a read or a check found wrong (and what was done about it), for
/// `open_report()` and `check()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The file (or directory) concerned.
    pub path: PathBuf,
    /// What kind of damage: `torn_tail` (truncated), `quarantined` (damaged bytes kept in place,
    /// their offsets a gap), `missing_segment`, `stray_segment` (ignored, left in place),
    /// `index_rebuilt`, `topic_rebuilt`, `bad_metadata` (the topic is unavailable),
    /// `not_a_topic`, `truncation_finished`, `truncation_ignored`, `bad_quarantine_record`.
    pub kind: String,
    /// Topic and partition, when the damage belongs to one.
    pub topic: Option<String>,
    pub partition: Option<u32>,
    /// Byte position of the damage in `path`.
    pub position: u64,
    /// Offsets `[from, to)` that can't be read because of it (a gap), if any.
    pub offsets: Option<(i64, i64)>,
    /// Bytes of the file that are valid before the damage, and bytes dropped (torn tails only)
    /// or quarantined.
    pub valid_bytes: u64,
    pub dropped_bytes: u64,
    pub reason: String,
}

impl Damage {
    pub fn new(path: impl Into<PathBuf>, kind: &str, reason: impl Into<String>) -> Damage {
        Damage {
            path: path.into(),
            kind: kind.to_string(),
            topic: None,
            partition: None,
            position: 0,
            offsets: None,
            valid_bytes: 0,
            dropped_bytes: 0,
            reason: reason.into(),
        }
    }

    /// One line naming everything: kind, topic/partition, offsets, file and byte position.
    pub fn describe(&self) -> String {
        let mut s = self.kind.clone();
        if let Some(t) = &self.topic {
            s.push_str(&format!(" in {t}"));
            if let Some(p) = self.partition {
                s.push_str(&format!("/{p}"));
            }
        }
        if let Some((a, b)) = self.offsets {
            s.push_str(&format!(", offsets {a}..{b}"));
        }
        s.push_str(&format!(
            ": {} at byte {}: {}",
            self.path.display(),
            self.position,
            self.reason
        ));
        s
    }
}

/// A damaged region of a segment file: `len` bytes at `position` that are not valid batches, and
/// the offsets `[from, to)` they held as far as the valid batches around them tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRegion {
    pub position: u64,
    pub len: u64,
    pub from: i64,
    /// `None` for a region that runs to the end of the file: the caller knows where the next
    /// segment starts (or truncates a torn tail).
    pub to: Option<i64>,
    /// For a tail region that starts with a whole batch of the right base offset whose CRC fails:
    /// one past the last offset it claims and its length, so its offsets are not given out again.
    pub claimed: Option<(i64, u64)>,
    pub reason: String,
}

/// The result of [`Segment::plan_cut`].
#[derive(Debug)]
pub enum Cut {
    /// Keep the bytes before `position` (a batch boundary); `index` describes them (unsealed) and
    /// `records_end` is one past the last record kept (the base offset when none is).
    At {
        position: u64,
        index: SegmentIndex,
        records_end: i64,
    },
    /// The offset lies inside the batch holding offsets `base..=last`: it can't be cut there.
    InsideBatch { base: i64, last: i64 },
}

pub fn segment_paths(dir: &Path, base_offset: i64) -> (PathBuf, PathBuf, PathBuf) {
    let stem = format!("{base_offset:020}");
    (
        dir.join(format!("{stem}.log")),
        dir.join(format!("{stem}.index")),
        dir.join(format!("{stem}.timeindex")),
    )
}

/// What a full scan of a segment found.
#[derive(Debug)]
pub struct Scan {
    /// End of the last valid batch.
    pub valid_len: u64,
    /// One past the last offset of the last valid batch (the base offset when there is none).
    pub next_offset: i64,
    /// Base offset of the first valid batch.
    pub first_base: Option<i64>,
    pub index: SegmentIndex,
    /// Damaged regions, in file order; only the last one may run to the end of the file.
    pub bad: Vec<BadRegion>,
    pub file_len: u64,
}

/// Largest batch a resync accepts (our writer's batches are ~256 KiB; Kafka's default max is 1 MiB).
const MAX_RESYNC_BATCH: usize = 64 << 20;

/// Why the bytes at `pos` are not a valid batch following offset `next`, or its header and length.
/// With `exact`, the batch must start exactly at `next` (a segment that compaction never
/// rewrote holds contiguous offsets): a base offset field changed by damage (the CRC does not
/// cover it) is then caught.
#[allow(clippy::too_many_arguments)]
fn check_batch_at(
    file: &File,
    path: &Path,
    pos: u64,
    len: u64,
    base_offset: i64,
    next: i64,
    exact: bool,
    buf: &mut Vec<u8>,
) -> Result<std::result::Result<BatchHeader, String>> {
    let avail = len - pos;
    if avail < batch::HEADER_LEN as u64 {
        return Ok(Err(format!("torn batch header ({avail} bytes)")));
    }
    let mut head = [0u8; batch::HEADER_LEN];
    read_exact_at(file, path, &mut head, pos)?;
    let total = match peek_total_len(&head) {
        Some(t) if t >= batch::HEADER_LEN && t <= MAX_RESYNC_BATCH.max(batch::HEADER_LEN) => t,
        _ => return Ok(Err("invalid batch length".into())),
    };
    if total as u64 > avail {
        return Ok(Err(format!(
            "torn batch: {total} bytes declared, {avail} present"
        )));
    }
    if buf.len() < total {
        buf.resize(total, 0);
    }
    read_exact_at(file, path, &mut buf[..total], pos)?;
    let header = match batch::parse_header(&buf[..total]) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e.to_string())),
    };
    if !batch::crc_ok(&buf[..total]) {
        return Ok(Err(format!(
            "CRC mismatch in the batch claiming offset {}",
            header.base_offset
        )));
    }
    if header.base_offset < next
        || (exact && header.base_offset != next)
        || header.last_offset() < header.base_offset
        || header.last_offset() - base_offset > i64::from(u32::MAX)
    {
        return Ok(Err(format!(
            "batch offsets {}..={} out of order (expected >= {next})",
            header.base_offset,
            header.last_offset()
        )));
    }
    Ok(Ok(header))
}

/// The first position after `from` where a valid batch following offset `next` starts.
/// In a contiguous segment the candidate's base offset must also be within reach: the damaged
/// bytes from `from - 1` on can't have held more offsets than bytes (a base offset field changed
/// by damage is not covered by the CRC).
#[allow(clippy::too_many_arguments)]
fn resync(
    file: &File,
    path: &Path,
    from: u64,
    len: u64,
    base_offset: i64,
    next: i64,
    contiguous: bool,
    buf: &mut Vec<u8>,
) -> Result<Option<u64>> {
    const WINDOW: usize = 1 << 20;
    let mut window = vec![0u8; WINDOW + batch::HEADER_LEN];
    let mut start = from;
    while start + batch::HEADER_LEN as u64 <= len {
        let n = ((len - start) as usize).min(window.len());
        read_exact_at(file, path, &mut window[..n], start)?;
        let last = n - batch::HEADER_LEN;
        for i in 0..=last.min(WINDOW - 1) {
            // Cheap filters first: the magic byte and a sane length.
            if window[i + 16] as i8 != batch::MAGIC {
                continue;
            }
            if peek_total_len(&window[i..]).is_none_or(|t| t < batch::HEADER_LEN) {
                continue;
            }
            let pos = start + i as u64;
            if let Ok(h) = check_batch_at(file, path, pos, len, base_offset, next, false, buf)? {
                let reach = (pos + 1 - from) as i64;
                // ...and the batch after it (if any) must not contradict it: a batch whose base
                // offset field was damaged is followed by a valid batch that does not follow it
                let end = pos + h.total_len() as u64;
                // (a valid batch after it that does not follow it); damage after it says nothing.
                let confirmed = !contiguous || end >= len || {
                    let follows = h.last_offset() + 1;
                    let exact =
                        check_batch_at(file, path, end, len, base_offset, follows, true, buf)?;
                    exact.is_ok()
                        || check_batch_at(file, path, end, len, base_offset, i64::MIN, false, buf)?
                            .is_err()
                };
                if (!contiguous || h.base_offset - next <= reach) && confirmed {
                    return Ok(Some(pos));
                }
            }
        }
        start += (last.min(WINDOW - 1) + 1) as u64;
    }
    Ok(None)
}

/// Scan a whole segment: every batch's length, magic, CRC and offset order. A damaged region is
/// skipped up to the next valid batch (found byte by byte), so one bad byte costs one batch.
pub fn scan(file: &File, path: &Path, base_offset: i64, contiguous: bool) -> Result<Scan> {
    let len = file.metadata().at(path)?.len();
    scan_upto(file, path, base_offset, len, contiguous)
}

/// [`scan`] of the first `len` bytes only (the published part of an active segment).
pub fn scan_upto(
    file: &File,
    path: &Path,
    base_offset: i64,
    len: u64,
    contiguous: bool,
) -> Result<Scan> {
    let mut index = SegmentIndex::new();
    let mut pos: u64 = 0;
    let mut valid_len = 0;
    let mut next_offset = base_offset;
    let mut first_base = None;
    let mut buf = vec![0u8; 1 << 16];
    let mut bad = Vec::new();
    // Right after a damaged region the next batch may start past `next_offset` (the region held
    // offsets); everywhere else a contiguous segment's batches follow each other exactly.
    let mut resynced = false;
    while pos < len {
        let exact = contiguous && !resynced;
        let header = match check_batch_at(
            file,
            path,
            pos,
            len,
            base_offset,
            next_offset,
            exact,
            &mut buf,
        )? {
            Ok(h) => h,
            Err(reason) => {
                match resync(
                    file,
                    path,
                    pos + 1,
                    len,
                    base_offset,
                    next_offset,
                    contiguous,
                    &mut buf,
                )? {
                    Some(q) => {
                        let mut hb = [0u8; 8];
                        read_exact_at(file, path, &mut hb, q)?;
                        bad.push(BadRegion {
                            position: pos,
                            len: q - pos,
                            from: next_offset,
                            to: Some(i64::from_be_bytes(hb)),
                            claimed: None,
                            reason,
                        });
                        pos = q;
                        resynced = true;
                        continue;
                    }
                    None => {
                        let claimed = claimed_batch(file, path, pos, len, next_offset)?;
                        bad.push(BadRegion {
                            position: pos,
                            len: len - pos,
                            from: next_offset,
                            to: None,
                            claimed,
                            reason,
                        });
                        break;
                    }
                }
            }
        };
        resynced = false;
        let total = header.total_len() as u64;
        first_base.get_or_insert(header.base_offset);
        let first_rel = (header.base_offset - base_offset) as u32;
        let last_rel = (header.last_offset() - base_offset) as u32;
        index.on_batch(first_rel, last_rel, pos as u32, total, header.max_timestamp);
        next_offset = header.last_offset() + 1;
        pos += total;
        valid_len = pos;
    }
    if next_offset > base_offset {
        index.seal((next_offset - 1 - base_offset) as u32);
    }
    Ok(Scan {
        valid_len,
        next_offset,
        first_base,
        index,
        bad,
        file_len: len,
    })
}

/// For a damaged tail from `from` (expected to hold offset `next` on): if any whole batch with a
/// valid CRC lies in it, one past the largest offset such a batch plausibly holds (at least
/// `next + 1`); `None` when the tail holds no valid batch at all (a torn write).
fn crc_valid_end(
    file: &File,
    path: &Path,
    from: u64,
    len: u64,
    base_offset: i64,
    next: i64,
) -> Result<Option<i64>> {
    let mut buf = Vec::new();
    let mut at = from;
    let mut end: Option<i64> = None;
    while let Some(q) = resync(file, path, at, len, base_offset, next, false, &mut buf)? {
        let mut hb = [0u8; batch::HEADER_LEN];
        read_exact_at(file, path, &mut hb, q)?;
        let base = i64::from_be_bytes(hb[..8].try_into().unwrap_or([0; 8]));
        let delta = i32::from_be_bytes([hb[23], hb[24], hb[25], hb[26]]);
        let plausible = base - next <= (len - from) as i64;
        let last = if plausible {
            base + i64::from(delta) + 1
        } else {
            next + 1
        };
        end = Some(end.map_or(last, |e| e.max(last)));
        at = q + 1;
    }
    Ok(end.map(|e| e.max(next + 1)))
}

/// For a damaged tail: if it starts with a whole batch at the expected base offset (only its CRC
/// or contents are bad, it is not a torn write), one past the last offset it claims, and its length.
fn claimed_batch(
    file: &File,
    path: &Path,
    pos: u64,
    len: u64,
    next: i64,
) -> Result<Option<(i64, u64)>> {
    if len - pos < batch::HEADER_LEN as u64 {
        return Ok(None);
    }
    let mut head = [0u8; batch::HEADER_LEN];
    read_exact_at(file, path, &mut head, pos)?;
    let Some(total) = peek_total_len(&head) else {
        return Ok(None);
    };
    if total < batch::HEADER_LEN || pos + total as u64 > len {
        return Ok(None);
    }
    let base = i64::from_be_bytes(head[0..8].try_into().unwrap_or([0; 8]));
    let delta = i32::from_be_bytes([head[23], head[24], head[25], head[26]]);
    let count = i32::from_be_bytes([head[57], head[58], head[59], head[60]]);
    Ok(
        (base == next && (0..1 << 20).contains(&delta) && delta == count - 1)
            .then(|| (base + i64::from(delta) + 1, total as u64)),
    )
}

fn peek_total_len(buf: &[u8]) -> Option<usize> {
    let b: [u8; 4] = buf.get(8..12)?.try_into().ok()?;
    let n = i32::from_be_bytes(b);
    (n >= 0).then(|| 12 + n as usize)
}

/// For a sealed segment whose index files look consistent: the base offset of its first batch and
/// one past the last offset of its last batch, read from the first batch and from the batches
/// after the last index entry (a few KiB), each checked whole (CRC). `None` when anything there
/// is wrong or an index entry does not point at the batch it names: the caller rescans.
fn quick_bounds(
    file: &File,
    path: &Path,
    base_offset: i64,
    len: u64,
    index: &SegmentIndex,
    contiguous: bool,
) -> Result<Option<(Option<i64>, i64)>> {
    if len == 0 {
        return Ok(Some((None, base_offset)));
    }
    let mut buf = Vec::new();
    let first = match check_batch_at(
        file,
        path,
        0,
        len,
        base_offset,
        base_offset,
        contiguous,
        &mut buf,
    )? {
        Ok(h) => h.base_offset,
        Err(_) => return Ok(None),
    };
    // Entries must point at a batch starting at the offset they name: checked on a sample (at
    // most ~64 reads, always the first and the last entry) so opening stays fast; a wrong entry
    // elsewhere is found by the read it misleads (the batch found there is not the one expected)
    // or by `check()`.
    let step = (index.offsets.len() / 64).max(1);
    let sample = index
        .offsets
        .iter()
        .step_by(step)
        .chain(index.offsets.last());
    for &(rel, p) in sample {
        let p = u64::from(p);
        if p + batch::HEADER_LEN as u64 > len {
            return Ok(None);
        }
        let mut b = [0u8; 8];
        read_exact_at(file, path, &mut b, p)?;
        if i64::from_be_bytes(b) != base_offset + i64::from(rel) {
            return Ok(None);
        }
    }
    let (rel, start) = index.offsets.last().copied().unwrap_or((0, 0));
    let mut pos = u64::from(start);
    let mut next = base_offset + i64::from(rel);
    while pos < len {
        match check_batch_at(
            file,
            path,
            pos,
            len,
            base_offset,
            next,
            contiguous,
            &mut buf,
        )? {
            Ok(h) => {
                next = h.last_offset() + 1;
                pos += h.total_len() as u64;
            }
            Err(_) => return Ok(None),
        }
    }
    Ok(Some((Some(first), next)))
}

pub fn read_exact_at(file: &File, path: &Path, buf: &mut [u8], pos: u64) -> Result<()> {
    file.read_exact_at(buf, pos).at(path)
}

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .at(path)
}

impl Segment {
    pub fn create(dir: &Path, base_offset: i64) -> Result<Segment> {
        let (log_path, _, _) = segment_paths(dir, base_offset);
        let file = open_rw(&log_path)?;
        // Never write over a file that holds something (a stray segment left in place).
        if file.metadata().at(&log_path)?.len() > 0 {
            return Err(LogError::Corrupt {
                path: log_path,
                position: 0,
                reason: "a new segment would overwrite this file, which is not part of the log; \
                         move it away"
                    .into(),
            });
        }
        Ok(Segment {
            base_offset,
            log_path,
            file: Arc::new(file),
            size: 0,
            next_offset: base_offset,
            index: SegmentIndex::new(),
            created_ms: crate::fsutil::now_ms(),
            bad_regions: Vec::new(),
        })
    }

    /// Open the last segment of a partition: scan it, truncate a torn tail (an invalid region
    /// with no valid batch after it), keep damaged regions followed by valid batches in place
    /// (quarantined), rebuild its index.
    pub fn recover(
        dir: &Path,
        base_offset: i64,
        contiguous: bool,
    ) -> Result<(Segment, SegmentFindings)> {
        let (log_path, index_path, time_path) = segment_paths(dir, base_offset);
        // The index is rebuilt below and written when the segment is sealed; an old copy on
        // disk must not outlive further appends.
        SegmentIndex::remove_files(&index_path, &time_path)?;
        let file = open_rw(&log_path)?;
        let mut s = scan(&file, &log_path, base_offset, contiguous)?;
        let mut findings = SegmentFindings {
            first_base: s.first_base,
            end: s.next_offset,
            ..Default::default()
        };
        let mut size = s.file_len;
        let intact_in_tail = match s.bad.last().filter(|b| b.to.is_none()) {
            Some(b) => crc_valid_end(
                &file,
                &log_path,
                b.position,
                s.file_len,
                base_offset,
                b.from,
            )?,
            None => None,
        };
        if let Some(last) = s.bad.last_mut().filter(|b| b.to.is_none()) {
            let keep = match (last.claimed, intact_in_tail) {
                // Whole batches with a valid CRC whose offsets don't fit (their base offset field,
                // which the CRC does not cover, was damaged, or what follows it was): not a torn
                // write. Keep every byte, quarantined, and never give their offsets out again.
                (_, Some(end)) => {
                    last.to = Some(end);
                    findings.end = end;
                    s.file_len
                }
                // A whole batch whose contents are bad: keep it (quarantined) so its offsets
                // are never given out again; only what follows it is torn.
                (Some((end, total)), None) => {
                    last.to = Some(end);
                    last.len = total;
                    findings.end = end;
                    last.position + total
                }
                (None, None) => last.position,
            };
            if keep < s.file_len {
                let reason = last.reason.clone();
                if last.to.is_none() {
                    s.bad.pop();
                }
                file.set_len(keep).at(&log_path)?;
                file.sync_all().at(&log_path)?;
                findings.truncated = Some((keep, s.file_len - keep, reason));
                size = keep;
            }
        }
        findings.bad = s.bad;
        let bad_regions = findings.bad.iter().map(|b| (b.position, b.len)).collect();
        Ok((
            Segment {
                base_offset,
                log_path,
                file: Arc::new(file),
                size,
                next_offset: findings.end,
                index: s.index,
                created_ms: crate::fsutil::now_ms(),
                bad_regions,
            },
            findings,
        ))
    }

    /// Open a sealed segment: trust its index files when they are consistent (its batches are
    /// then checked lazily, by CRC on read), otherwise rescan it and rewrite them. Damage in a
    /// sealed segment is never truncated. `next_base` is the following segment's base offset.
    pub fn open_sealed(
        dir: &Path,
        base_offset: i64,
        next_base: i64,
        contiguous: bool,
    ) -> Result<(Segment, SegmentFindings)> {
        let (log_path, index_path, time_path) = segment_paths(dir, base_offset);
        let file = open_rw(&log_path)?;
        let len = file.metadata().at(&log_path)?.len();
        let last_rel = u32::try_from(next_base - 1 - base_offset).ok();
        let on_disk = SegmentIndex::read_files(&index_path, &time_path, len, last_rel);
        if let Some(index) = &on_disk {
            if let Some((first_base, end)) =
                quick_bounds(&file, &log_path, base_offset, len, index, contiguous)?
            {
                let seg = Segment {
                    base_offset,
                    log_path,
                    file: Arc::new(file),
                    size: len,
                    next_offset: next_base,
                    index: index.clone(),
                    created_ms: crate::fsutil::now_ms(),
                    bad_regions: Vec::new(),
                };
                let findings = SegmentFindings {
                    first_base,
                    end,
                    ..Default::default()
                };
                return Ok((seg, findings));
            }
        }
        let s = scan(&file, &log_path, base_offset, contiguous)?;
        let why = match &on_disk {
            Some(ix) if ix.offsets == s.index.offsets => None,
            Some(_) => Some("the index does not match the batches".to_string()),
            None if !index_path.exists() || !time_path.exists() => {
                Some("index file missing".into())
            }
            None => Some("index file truncated or inconsistent".into()),
        };
        if why.is_some() {
            // Rewrite the rebuilt index so the next open is fast.
            s.index.write_files(&index_path, &time_path)?;
        }
        let bad_regions = s.bad.iter().map(|b| (b.position, b.len)).collect();
        let findings = SegmentFindings {
            first_base: s.first_base,
            end: s.next_offset,
            bad: s.bad,
            truncated: None,
            index_rebuilt: why,
        };
        Ok((
            Segment {
                base_offset,
                log_path,
                file: Arc::new(file),
                size: len,
                next_offset: next_base,
                index: s.index,
                created_ms: crate::fsutil::now_ms(),
                bad_regions,
            },
            findings,
        ))
    }

    /// Write the index files (and fsync the data) when the segment stops being the active one.
    pub fn seal(&mut self, sync: bool) -> Result<()> {
        if self.next_offset > self.base_offset {
            self.index
                .seal((self.next_offset - 1 - self.base_offset) as u32);
        }
        self.write_index()?;
        if sync {
            self.file.sync_data().at(&self.log_path)?;
        }
        Ok(())
    }

    pub fn write_index(&self) -> Result<()> {
        let dir = self.log_path.parent().unwrap_or(Path::new("."));
        let (_, index_path, time_path) = segment_paths(dir, self.base_offset);
        self.index.write_files(&index_path, &time_path)
    }

    /// Remove the segment's files, the indexes first: a crash part-way never leaves an index
    /// without its data, which a later segment with the same base offset could mistake for its own.
    pub fn delete_files(&self) -> Result<()> {
        let dir = self.log_path.parent().unwrap_or(Path::new("."));
        let (l, i, t) = segment_paths(dir, self.base_offset);
        for p in [i, t, l] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io(&p, e)),
            }
        }
        Ok(())
    }

    /// Where to cut this segment so that it keeps exactly the records below `offset`
    /// (`offset >= base_offset`; anything past `next_offset` keeps everything). Only the batch
    /// headers from the last index entry before `offset` on are read, so this costs at most a few
    /// KiB of reads however large the segment is. Changes nothing.
    pub fn plan_cut(&self, offset: i64) -> Result<Cut> {
        let rel = u32::try_from(offset - self.base_offset).unwrap_or(u32::MAX);
        let start = self.index.cut_start(rel);
        let mut pos = start.map_or(0, |(_, p)| u64::from(p));
        // (first_rel, last_rel, position, len, max_ts) of the kept batches from `pos` on
        let mut kept: Vec<(u32, u32, u32, u64, i64)> = Vec::new();
        let mut header = [0u8; batch::HEADER_LEN];
        let corrupt = |position: u64, reason: String| LogError::Corrupt {
            path: self.log_path.clone(),
            position,
            reason,
        };
        while pos < self.size {
            if let Some(&(_, l)) = self.bad_regions.iter().find(|&&(p, _)| p == pos) {
                pos += l; // quarantined bytes stay where they are
                continue;
            }
            if self.size - pos < batch::HEADER_LEN as u64 {
                return Err(corrupt(pos, "torn batch header".into()));
            }
            read_exact_at(&self.file, &self.log_path, &mut header, pos)?;
            let total = match peek_total_len(&header) {
                Some(t) if t >= batch::HEADER_LEN && pos + t as u64 <= self.size => t as u64,
                _ => return Err(corrupt(pos, "invalid batch length".into())),
            };
            let be64 = |at: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&header[at..at + 8]);
                i64::from_be_bytes(b)
            };
            let base = be64(0);
            let last_delta = i32::from_be_bytes([header[23], header[24], header[25], header[26]]);
            let last = base + i64::from(last_delta);
            let max_ts = be64(35);
            if base >= offset {
                break;
            }
            if last >= offset {
                return Ok(Cut::InsideBatch { base, last });
            }
            if base < self.base_offset || last < base {
                return Err(corrupt(
                    pos,
                    format!("batch offsets {base}..={last} out of order"),
                ));
            }
            kept.push((
                (base - self.base_offset) as u32,
                (last - self.base_offset) as u32,
                pos as u32,
                total,
                max_ts,
            ));
            pos += total;
        }
        let index = match start {
            None => {
                let mut ix = SegmentIndex::new();
                for &(f, l, p, n, t) in &kept {
                    ix.on_batch(f, l, p, n, t);
                }
                ix
            }
            Some((entry, entry_pos)) => {
                let Some(&(_, l, p, n, _)) = kept.first().filter(|b| b.2 == entry_pos) else {
                    return Err(corrupt(
                        u64::from(entry_pos),
                        "offset index entry does not point at a batch below the cut".into(),
                    ));
                };
                debug_assert_eq!(p, entry_pos);
                let mut ix = self.index.rewind_to_entry(entry, l, n);
                for &(f, l, p, n, t) in &kept[1..] {
                    ix.on_batch(f, l, p, n, t);
                }
                ix
            }
        };
        let records_end = kept.last().map_or(self.base_offset, |&(_, l, _, _, _)| {
            self.base_offset + i64::from(l) + 1
        });
        Ok(Cut::At {
            position: pos,
            index,
            records_end,
        })
    }

    pub fn max_timestamp(&self) -> i64 {
        self.index.max_timestamp()
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }
}

/// Walk the complete batches in `buf` (which starts at a batch boundary), calling `f` with each
/// batch's header, bytes and position in `buf`. Returns the bytes consumed (a torn tail is left
/// for the next read).
pub fn for_each_batch(
    buf: &[u8],
    mut f: impl FnMut(&BatchHeader, &[u8], usize) -> Result<bool>,
) -> Result<usize> {
    let mut pos = 0;
    while pos < buf.len() {
        let header = match batch::parse_header(&buf[pos..]) {
            Ok(h) => h,
            Err(BatchError::Incomplete { .. }) => break,
            Err(BatchError::Corrupt(why)) => {
                return Err(LogError::Corrupt {
                    path: PathBuf::new(),
                    position: pos as u64,
                    reason: why,
                })
            }
        };
        let end = pos + header.total_len();
        if !f(&header, &buf[pos..end], pos)? {
            return Ok(end);
        }
        pos = end;
    }
    Ok(pos)
}
