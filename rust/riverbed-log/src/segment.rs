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
}

/// What a scan found wrong at the end of a segment.
#[derive(Debug, Clone)]
pub struct Damage {
    pub path: PathBuf,
    pub valid_bytes: u64,
    pub dropped_bytes: u64,
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

struct Scan {
    valid_len: u64,
    next_offset: i64,
    index: SegmentIndex,
    damage: Option<String>,
}

/// Read batch headers from the start of the file, checking length, magic, CRC and that offsets only
/// grow; stop at the first batch that fails.
fn scan(file: &File, path: &Path, base_offset: i64) -> Result<Scan> {
    let len = file.metadata().at(path)?.len();
    let mut index = SegmentIndex::new();
    let mut pos: u64 = 0;
    let mut next_offset = base_offset;
    let mut buf = vec![0u8; 1 << 20];
    let mut damage = None;
    while pos < len {
        let avail = (len - pos) as usize;
        if avail < batch::HEADER_LEN {
            damage = Some(format!("torn batch header ({avail} bytes)"));
            break;
        }
        read_exact_at(file, path, &mut buf[..batch::HEADER_LEN], pos)?;
        let total = match peek_total_len(&buf[..batch::HEADER_LEN]) {
            Some(t) if t >= batch::HEADER_LEN => t,
            _ => {
                damage = Some("invalid batch length".into());
                break;
            }
        };
        if total > avail {
            damage = Some(format!(
                "torn batch: {total} bytes declared, {avail} present"
            ));
            break;
        }
        if buf.len() < total {
            buf.resize(total, 0);
        }
        read_exact_at(file, path, &mut buf[..total], pos)?;
        let header = match batch::parse_header(&buf[..total]) {
            Ok(h) => h,
            Err(e) => {
                damage = Some(e.to_string());
                break;
            }
        };
        if !batch::crc_ok(&buf[..total]) {
            damage = Some(format!(
                "CRC mismatch in batch at offset {}",
                header.base_offset
            ));
            break;
        }
        if header.base_offset < next_offset || header.last_offset() < header.base_offset {
            damage = Some(format!(
                "batch offset {} goes backwards (expected >= {next_offset})",
                header.base_offset
            ));
            break;
        }
        let first_rel = (header.base_offset - base_offset) as u32;
        let last_rel = (header.last_offset() - base_offset) as u32;
        index.on_batch(
            first_rel,
            last_rel,
            pos as u32,
            total as u64,
            header.max_timestamp,
        );
        next_offset = header.last_offset() + 1;
        pos += total as u64;
    }
    if next_offset > base_offset {
        index.seal((next_offset - 1 - base_offset) as u32);
    }
    Ok(Scan {
        valid_len: pos,
        next_offset,
        index,
        damage,
    })
}

fn peek_total_len(buf: &[u8]) -> Option<usize> {
    let b: [u8; 4] = buf.get(8..12)?.try_into().ok()?;
    let n = i32::from_be_bytes(b);
    (n >= 0).then(|| 12 + n as usize)
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
        Ok(Segment {
            base_offset,
            log_path,
            file: Arc::new(file),
            size: 0,
            next_offset: base_offset,
            index: SegmentIndex::new(),
            created_ms: crate::fsutil::now_ms(),
        })
    }

    /// Open the last segment of a partition: scan it, truncate a torn or corrupt tail, rebuild its index.
    pub fn recover(dir: &Path, base_offset: i64) -> Result<(Segment, Option<Damage>)> {
        let (log_path, index_path, time_path) = segment_paths(dir, base_offset);
        // The index is rebuilt below and written when the segment is sealed; an old copy on
        // disk must not outlive further appends.
        SegmentIndex::remove_files(&index_path, &time_path)?;
        let file = open_rw(&log_path)?;
        let s = scan(&file, &log_path, base_offset)?;
        let file_len = file.metadata().at(&log_path)?.len();
        let damage = if file_len > s.valid_len {
            file.set_len(s.valid_len).at(&log_path)?;
            file.sync_all().at(&log_path)?;
            Some(Damage {
                path: log_path.clone(),
                valid_bytes: s.valid_len,
                dropped_bytes: file_len - s.valid_len,
                reason: s.damage.unwrap_or_else(|| "trailing bytes".into()),
            })
        } else {
            None
        };
        Ok((
            Segment {
                base_offset,
                log_path,
                file: Arc::new(file),
                size: s.valid_len,
                next_offset: s.next_offset,
                index: s.index,
                created_ms: crate::fsutil::now_ms(),
            },
            damage,
        ))
    }

    /// Open a sealed segment: trust its index files when they are consistent, otherwise rescan.
    /// `next_base` is the following segment's base offset. Damage in a sealed segment is reported,
    /// and reads stop before it, but nothing is truncated.
    pub fn open_sealed(
        dir: &Path,
        base_offset: i64,
        next_base: i64,
    ) -> Result<(Segment, Option<Damage>)> {
        let (log_path, index_path, time_path) = segment_paths(dir, base_offset);
        let file = open_rw(&log_path)?;
        let len = file.metadata().at(&log_path)?.len();
        let last_rel = u32::try_from(next_base - 1 - base_offset).ok();
        if let Some(index) = SegmentIndex::read_files(&index_path, &time_path, len, last_rel) {
            let seg = Segment {
                base_offset,
                log_path,
                file: Arc::new(file),
                size: len,
                next_offset: next_base,
                index,
                created_ms: crate::fsutil::now_ms(),
            };
            return Ok((seg, None));
        }
        let s = scan(&file, &log_path, base_offset)?;
        let damage = (s.valid_len < len).then(|| Damage {
            path: log_path.clone(),
            valid_bytes: s.valid_len,
            dropped_bytes: len - s.valid_len,
            reason: s.damage.clone().unwrap_or_else(|| "trailing bytes".into()),
        });
        // Rewrite the rebuilt index so the next open is fast.
        s.index.write_files(&index_path, &time_path)?;
        Ok((
            Segment {
                base_offset,
                log_path,
                file: Arc::new(file),
                size: s.valid_len,
                next_offset: next_base.max(s.next_offset),
                index: s.index,
                created_ms: crate::fsutil::now_ms(),
            },
            damage,
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
/// batch's header and bytes. Returns the bytes consumed (a torn tail is left for the next read).
pub fn for_each_batch(
    buf: &[u8],
    mut f: impl FnMut(&BatchHeader, &[u8]) -> Result<bool>,
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
        if !f(&header, &buf[pos..end])? {
            return Ok(end);
        }
        pos = end;
    }
    Ok(pos)
}
