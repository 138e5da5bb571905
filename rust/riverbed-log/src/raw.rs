//! Record batches as bytes, for a broker: validating the batches a client sent, appending them
//! as sent (only the base offset rewritten, as Kafka does; compressed batches stay compressed),
//! reading stored batch bytes for a fetch (one read per range, whole batches), and reading the
//! batch headers at a partition's tail (to rebuild idempotent-producer state after a restart).

use std::sync::atomic::Ordering;

use crate::batch::{self, BatchError, BatchHeader, HEADER_LEN};
use crate::error::{LogError, Result};
use crate::partition::{EncodedBatch, Located, Partition};
use crate::quarantine::Gap;
use crate::segment::read_exact_at;

/// Extra bytes read past a fetch's size limit: the index is sparse, so a read starts up to about
/// one index interval before the batch holding the offset asked for.
const READ_SLACK: usize = 2 * crate::index::INDEX_INTERVAL as usize;
/// Bytes read per call when walking batch headers.
const SCAN_CHUNK: usize = 1 << 20;

/// One batch of a produce request: where it lies in the request's bytes and its header.
#[derive(Debug, Clone, Copy)]
pub struct RawBatch {
    pub pos: usize,
    pub header: BatchHeader,
}

impl RawBatch {
    pub fn len(&self) -> usize {
        self.header.total_len()
    }

    pub fn is_empty(&self) -> bool {
        self.header.record_count == 0
    }
}

/// Why a client's batches were refused (each maps to one Kafka error code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RawBatchError {
    /// Kafka's CORRUPT_MESSAGE: bad CRC, impossible sizes, truncated bytes, wrong counts.
    #[error("corrupt record batch at byte {at}: {why}")]
    Corrupt { at: usize, why: String },
    /// Kafka's MESSAGE_TOO_LARGE.
    #[error("record batch of {size} bytes is larger than the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    /// Kafka's INVALID_RECORD: a well-formed batch the log does not take (control or
    /// transactional batches, a record without a key on a compacted topic, no records).
    #[error("invalid record batch at byte {at}: {why}")]
    Invalid { at: usize, why: String },
}

/// Check every batch of a produce request's record set: magic 2, sizes, CRC-32C,
/// `lastOffsetDelta` against the record count, the size limit, and for uncompressed batches each
/// record (sequential offset deltas, a key when `needs_keys`). Compressed batches are checked up
/// to their CRC (their records are stored as sent).
pub fn validate_batches(
    bytes: &[u8],
    max_batch_bytes: usize,
    needs_keys: bool,
) -> std::result::Result<Vec<RawBatch>, RawBatchError> {
    let corrupt = |at: usize, why: String| RawBatchError::Corrupt { at, why };
    let invalid = |at: usize, why: String| RawBatchError::Invalid { at, why };
    if bytes.is_empty() {
        return Err(invalid(0, "no record batch".into()));
    }
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() >= 12 {
            let claimed =
                12 + i64::from(i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]));
            if claimed > max_batch_bytes as i64 {
                return Err(RawBatchError::TooLarge {
                    size: claimed.max(0) as usize,
                    max: max_batch_bytes,
                });
            }
        }
        let header = match batch::parse_header(rest) {
            Ok(h) => h,
            Err(BatchError::Incomplete { need, have }) => {
                return Err(corrupt(
                    pos,
                    format!("truncated batch: {need} bytes claimed, {have} sent"),
                ))
            }
            Err(BatchError::Corrupt(why)) => return Err(corrupt(pos, why)),
        };
        let len = header.total_len();
        if len < HEADER_LEN {
            return Err(corrupt(
                pos,
                format!("batch of {len} bytes is below the header size"),
            ));
        }
        let whole = &rest[..len];
        if !batch::crc_ok(whole) {
            return Err(corrupt(pos, "CRC-32C mismatch".into()));
        }
        if header.record_count == 0 {
            return Err(invalid(pos, "batch without records".into()));
        }
        if i64::from(header.last_offset_delta) != i64::from(header.record_count) - 1 {
            return Err(corrupt(
                pos,
                format!(
                    "lastOffsetDelta {} does not match the record count {}",
                    header.last_offset_delta, header.record_count
                ),
            ));
        }
        if header.is_control() {
            return Err(invalid(
                pos,
                "control batches are written by the broker only".into(),
            ));
        }
        if header.is_transactional() {
            return Err(invalid(pos, "transactions are not supported".into()));
        }
        if header.compression() == 0 {
            check_records(whole, needs_keys).map_err(|why| corrupt(pos, why))?;
        } else if header.compression() > 4 {
            return Err(corrupt(
                pos,
                format!("unknown compression codec {}", header.compression()),
            ));
        }
        out.push(RawBatch { pos, header });
        pos += len;
    }
    Ok(out)
}

/// Walk the records of an uncompressed batch: each decodes, offset deltas run 0..count, and a
/// compacted topic gets keys.
fn check_records(whole: &[u8], needs_keys: bool) -> std::result::Result<(), String> {
    let iter = batch::records(whole).map_err(|e| e.to_string())?;
    let base = iter.header().base_offset;
    let count = iter.header().record_count as i64;
    let mut n = 0i64;
    for r in &iter {
        let r = r.map_err(|e| e.to_string())?;
        if r.offset.wrapping_sub(base) != n {
            return Err(format!(
                "record {n} has offset delta {}",
                r.offset.wrapping_sub(base)
            ));
        }
        if needs_keys && r.key.is_none() {
            return Err("a compacted topic needs a key on every record".into());
        }
        n += 1;
    }
    if n != count {
        return Err(format!(
            "the header says {count} records, the batch holds {n}"
        ));
    }
    Ok(())
}

/// Stored batch bytes for a fetch.
#[derive(Debug, Default)]
pub struct RawRead {
    /// Whole batches, as stored; the first holds the offset asked for (it may start before it).
    pub bytes: Vec<u8>,
    /// Quarantined or missing ranges skipped to reach the first batch served.
    pub skipped: Vec<Gap>,
    pub log_start_offset: i64,
    /// One past the last offset written (the high watermark of a single-node log).
    pub high_watermark: i64,
}

impl Partition {
    /// Append batches that [`validate_batches`] accepted, exactly as sent except the base offset
    /// of each, which becomes the partition's next offset. Not fsynced: the caller syncs (see
    /// [`sync_now`](Self::sync_now)) before it acknowledges. Returns (first offset, next offset).
    pub fn append_raw(&self, bytes: &[u8], batches: &[RawBatch]) -> Result<(i64, i64)> {
        let _w = self.writer.lock();
        if self.notifier().is_closed() {
            return Err(LogError::Closed);
        }
        self.check_not_broken()?;
        let first = self.state.read().next_offset();
        let total: usize = batches.iter().map(RawBatch::len).sum();
        let mut buf = Vec::with_capacity(total);
        let mut encoded = Vec::with_capacity(batches.len());
        let mut next = first;
        for b in batches {
            let start = buf.len();
            let src = bytes
                .get(b.pos..b.pos + b.len())
                .ok_or_else(|| LogError::InvalidArgument("batch outside the request".into()))?;
            buf.extend_from_slice(src);
            buf[start..start + 8].copy_from_slice(&next.to_be_bytes());
            let last = next + i64::from(b.header.last_offset_delta);
            encoded.push(EncodedBatch {
                range: start..buf.len(),
                base: next,
                last,
                max_ts: b.header.max_timestamp,
            });
            next = last + 1;
        }
        if encoded.is_empty() {
            return Ok((first, first));
        }
        self.write_batches(&buf, &encoded)?;
        self.dirty.store(true, Ordering::Release);
        self.notifier().notify();
        Ok((first, next))
    }

    /// fsync what was appended so far, whether or not another caller did since (a concurrent
    /// sync that cleared the dirty flag may not have finished). Sealed segments were synced when
    /// they were sealed.
    pub fn sync_now(&self) -> Result<()> {
        use crate::error::IoContext;
        self.dirty.store(false, Ordering::Release);
        let (file, path) = {
            let st = self.state.read();
            let a = st.segments.last().ok_or(LogError::Closed)?;
            (a.file.clone(), a.log_path.clone())
        };
        file.sync_data()
            .at(&path)
            .inspect_err(|_| self.dirty.store(true, Ordering::Release))
    }

    /// Stored batches from the one holding `offset` on, whole, up to `max_bytes` (the first
    /// batch is served whole even if larger, as Kafka does). Quarantined or missing ranges are
    /// skipped (and returned in `skipped`); an offset outside [log start, end] is
    /// `OffsetOutOfRange`. Each batch served passes its CRC check; a damaged one is quarantined
    /// as a read of the log would, and skipped.
    pub fn read_raw(&self, offset: i64, max_bytes: usize) -> Result<RawRead> {
        let (epoch, log_start, hwm) = {
            let st = self.state.read();
            if offset < st.log_start_offset || offset > st.next_offset() {
                return Err(LogError::OffsetOutOfRange {
                    topic: self.topic.to_string(),
                    partition: self.id,
                    offset,
                    earliest: st.log_start_offset,
                    latest: st.next_offset(),
                });
            }
            (
                self.truncations.load(Ordering::SeqCst),
                st.log_start_offset,
                st.next_offset(),
            )
        };
        let mut out = RawRead {
            log_start_offset: log_start,
            high_watermark: hwm,
            ..RawRead::default()
        };
        let mut next = offset;
        let mut retries = 0;
        // Where a walk of a segment stopped (at quarantined bytes or the segment's end), so the
        // next locate steps over them instead of starting from the index again.
        let mut cursor: Option<(std::sync::Arc<std::fs::File>, u64)> = None;
        'locate: loop {
            if !out.bytes.is_empty() && out.bytes.len() >= max_bytes {
                break;
            }
            let (file, path, mut pos, end, base) =
                match self.locate(next, cursor.take().as_ref(), epoch) {
                    Located::End => break,
                    Located::Jump(n) => {
                        next = n;
                        continue;
                    }
                    Located::Gap(g) => {
                        if !out.bytes.is_empty() {
                            break; // serve what is before the gap; the next fetch skips it
                        }
                        next = g.to;
                        out.skipped.push(g);
                        continue;
                    }
                    Located::Read {
                        file,
                        path,
                        pos,
                        end,
                        base,
                    } => (file, path, pos, end, base),
                };
            loop {
                if pos >= end {
                    // On past the quarantined bytes here, or to the next segment.
                    cursor = Some((file.clone(), pos));
                    continue 'locate;
                }
                let have = out.bytes.len();
                let room = max_bytes.saturating_sub(have);
                if have > 0 && room == 0 {
                    break 'locate;
                }
                let mut want = ((end - pos) as usize).min(room.max(HEADER_LEN) + READ_SLACK);
                // Each range is read with one pread into a zeroed (calloc'd) buffer that
                // becomes the response when it is the first; later ones are appended.
                let mut chunk;
                let (walked, accepted, stop) = loop {
                    chunk = vec![0u8; want];
                    let got = read_exact_at(&file, &path, &mut chunk, pos);
                    if self.truncations.load(Ordering::SeqCst) != epoch {
                        break 'locate;
                    }
                    got?;
                    let r = walk_fetch(&chunk, next, have == 0, room);
                    if r.0 == 0 && r.1.is_none() && r.2 == Stop::EndOfChunk {
                        // The first batch is larger than what was read: read it whole.
                        let total = if chunk.len() >= 12 {
                            12 + i32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]])
                                .max(0) as usize
                        } else {
                            0
                        };
                        if total <= want || pos + total as u64 > end {
                            break (0, None, Stop::Damaged);
                        }
                        want = total;
                        continue;
                    }
                    break r;
                };
                if let Some((from, to, last)) = accepted {
                    // Keep the accepted batches only: drop skipped leading ones and the rest.
                    if out.bytes.is_empty() {
                        chunk.truncate(to);
                        chunk.drain(..from);
                        out.bytes = chunk;
                    } else {
                        out.bytes.extend_from_slice(&chunk[from..to]);
                    }
                    next = last + 1;
                }
                match stop {
                    Stop::Full => break 'locate,
                    Stop::EndOfChunk => pos += walked as u64,
                    Stop::Damaged => {
                        if !out.bytes.is_empty() {
                            break 'locate; // serve what is before the damage
                        }
                        retries += 1;
                        if retries > 3 || !self.discover_damage(base, &file)? {
                            return Err(LogError::Corrupt {
                                path: path.clone(),
                                position: pos + walked as u64,
                                reason: format!(
                                    "a batch of {}/{} at offset {next} fails its check",
                                    self.topic, self.id
                                ),
                            });
                        }
                        continue 'locate;
                    }
                }
            }
        }
        Ok(out)
    }

    /// The headers of the batches in (about) the last `max_bytes` of the partition, in offset
    /// order (for rebuilding producer state). Damaged regions are skipped.
    pub fn tail_batch_headers(&self, max_bytes: u64) -> Result<Vec<BatchHeader>> {
        let ranges: Vec<(std::sync::Arc<std::fs::File>, std::path::PathBuf, u64, u64)> = {
            let st = self.state.read();
            let mut need = max_bytes;
            let mut picked = Vec::new();
            for s in st.segments.iter().rev() {
                if s.size == 0 {
                    continue;
                }
                let start = if s.size > need {
                    // A batch boundary at or after size - need.
                    let want = s.size - need;
                    s.index
                        .offsets
                        .iter()
                        .map(|&(_, p)| u64::from(p))
                        .find(|&p| p >= want)
                        .unwrap_or(s.size)
                } else {
                    0
                };
                picked.push((s.file.clone(), s.log_path.clone(), start, s.size));
                need = need.saturating_sub(s.size);
                if need == 0 {
                    break;
                }
            }
            picked.reverse();
            picked
        };
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for (file, path, mut pos, end) in ranges {
            while pos < end {
                let want = ((end - pos) as usize).min(SCAN_CHUNK);
                buf.resize(want, 0);
                read_exact_at(&file, &path, &mut buf, pos)?;
                let mut walked = 0;
                let mut bad = false;
                while walked < buf.len() {
                    match batch::parse_header(&buf[walked..]) {
                        Ok(h) => {
                            out.push(h);
                            walked += h.total_len();
                        }
                        Err(BatchError::Incomplete { need, .. }) if walked == 0 => {
                            // A batch larger than the chunk: skip over it by its length.
                            if let Ok(h) = header_only(&buf) {
                                out.push(h);
                                walked = need.max(HEADER_LEN);
                            } else {
                                bad = true;
                            }
                            break;
                        }
                        Err(BatchError::Incomplete { .. }) => break,
                        Err(BatchError::Corrupt(_)) => {
                            bad = true;
                            break;
                        }
                    }
                }
                if bad || walked == 0 {
                    break; // damage: the rest of this segment is the quarantine's business
                }
                pos += walked as u64;
            }
        }
        Ok(out)
    }
}

/// Parse a header from its first 61 bytes only (the batch's body is not needed).
fn header_only(buf: &[u8]) -> std::result::Result<BatchHeader, BatchError> {
    if buf.len() < HEADER_LEN {
        return Err(BatchError::Incomplete {
            need: HEADER_LEN,
            have: buf.len(),
        });
    }
    let len = i32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
    let mut fake = buf[..HEADER_LEN].to_vec();
    // Claim just the header so parse_header accepts the prefix; the real length is restored.
    fake[8..12].copy_from_slice(&((HEADER_LEN - 12) as i32).to_be_bytes());
    let mut h = batch::parse_header(&fake)?;
    h.batch_length = len;
    Ok(h)
}

/// Why [`walk_fetch`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The next batch does not fit in the room left.
    Full,
    /// The chunk ends (or ends inside a batch).
    EndOfChunk,
    /// A batch fails its header or CRC check.
    Damaged,
}

/// Walk the batches of `chunk` (starting at a batch boundary) for a fetch from offset `next`:
/// batches before it are skipped; then whole batches are accepted while they fit in `room`
/// (the first one always, when `first_in_response`). Returns (bytes walked, accepted byte range
/// and last offset, why it stopped).
fn walk_fetch(
    chunk: &[u8],
    next: i64,
    first_in_response: bool,
    room: usize,
) -> (usize, Option<(usize, usize, i64)>, Stop) {
    let mut pos = 0;
    let mut accepted: Option<(usize, usize, i64)> = None;
    while pos < chunk.len() {
        let h = match batch::parse_header(&chunk[pos..]) {
            Ok(h) => h,
            Err(BatchError::Incomplete { .. }) => break,
            Err(BatchError::Corrupt(_)) => return (pos, accepted, Stop::Damaged),
        };
        let len = h.total_len();
        if h.last_offset() < next {
            pos += len;
            continue;
        }
        let taken = accepted.map_or(0, |(a, b, _)| b - a);
        let always = first_in_response && accepted.is_none();
        if !always && taken + len > room {
            return (pos, accepted, Stop::Full);
        }
        if !batch::crc_ok(&chunk[pos..pos + len]) {
            return (pos, accepted, Stop::Damaged);
        }
        let from = accepted.map_or(pos, |(a, _, _)| a);
        accepted = Some((from, pos + len, h.last_offset()));
        pos += len;
    }
    (pos, accepted, Stop::EndOfChunk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchWriter;

    fn batch(n: usize, key: Option<&[u8]>) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = BatchWriter::new(&mut buf, 0, 1_000);
        for i in 0..n {
            w.push(i as i64, 1_000 + i as i64, key, Some(b"v"), &[]);
        }
        w.finish();
        buf
    }

    #[test]
    fn accepts_good_batches_and_names_bad_ones() {
        let mut two = batch(3, Some(b"k"));
        two.extend(batch(2, Some(b"k")));
        let got = validate_batches(&two, 1 << 20, true).expect("valid");
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].pos, batch(3, Some(b"k")).len());
        assert_eq!(got[1].header.record_count, 2);

        let mut bad_crc = batch(3, None);
        let n = bad_crc.len();
        bad_crc[n - 1] ^= 1;
        assert!(matches!(
            validate_batches(&bad_crc, 1 << 20, false),
            Err(RawBatchError::Corrupt { .. })
        ));
        let whole = batch(3, None);
        assert!(matches!(
            validate_batches(&whole[..whole.len() - 1], 1 << 20, false),
            Err(RawBatchError::Corrupt { .. })
        ));
        assert_eq!(
            validate_batches(&whole, 20, false).err(),
            Some(RawBatchError::TooLarge {
                size: whole.len(),
                max: 20
            })
        );
        assert!(matches!(
            validate_batches(&batch(1, None), 1 << 20, true),
            Err(RawBatchError::Corrupt { .. })
        ));
    }

    #[test]
    fn last_offset_delta_must_match_the_count() {
        let mut b = batch(3, None);
        // lastOffsetDelta 2 -> 5, then fix the CRC so only the count check can fail.
        b[23..27].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        let e = validate_batches(&b, 1 << 20, false).expect_err("bad count");
        assert!(e.to_string().contains("lastOffsetDelta 5"), "{e}");
    }
}
