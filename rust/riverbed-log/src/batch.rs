//! Kafka `RecordBatch` v2 (magic 2): the on-disk and on-wire unit of the log, byte for byte.
//!
//! Layout of a batch (all integers big-endian):
//!
//! | at | field                  | type |
//! |----|------------------------|------|
//! |  0 | baseOffset             | i64  |
//! |  8 | batchLength            | i32  (bytes after this field) |
//! | 12 | partitionLeaderEpoch   | i32  |
//! | 16 | magic                  | i8   (= 2) |
//! | 17 | crc                    | u32  (CRC-32C of bytes 21..end) |
//! | 21 | attributes             | i16  |
//! | 23 | lastOffsetDelta        | i32  |
//! | 27 | baseTimestamp          | i64  |
//! | 35 | maxTimestamp           | i64  |
//! | 43 | producerId             | i64  |
//! | 51 | producerEpoch          | i16  |
//! | 53 | baseSequence           | i32  |
//! | 57 | recordCount            | i32  |
//! | 61 | records...             |      |
//!
//! Each record: `length` varint, `attributes` i8, `timestampDelta` varlong, `offsetDelta` varint,
//! `keyLength` varint (-1 = null) + key, `valueLength` varint (-1 = null) + value,
//! `headerCount` varint, then per header `keyLength` varint + key, `valueLength` varint (-1 = null) + value.
//! Every varint is zigzag encoded, as in protobuf.

use std::borrow::Cow;
use std::ops::Range;

use crate::compression;

/// Size of the fixed batch header.
pub const HEADER_LEN: usize = 61;
/// The only record format version this module reads and writes.
pub const MAGIC: i8 = 2;
/// A record header: key bytes and an optional value.
pub type RecordHeader<'a> = (&'a [u8], Option<&'a [u8]>);

/// Bytes of the header that precede `batchLength`'s coverage (baseOffset + batchLength).
const LOG_OVERHEAD: usize = 12;
/// Smallest legal `batchLength`: the header minus `LOG_OVERHEAD`.
const MIN_BATCH_LENGTH: i32 = (HEADER_LEN - LOG_OVERHEAD) as i32;

// Field positions within the header.
const BASE_OFFSET_AT: usize = 0;
const LENGTH_AT: usize = 8;
const EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORD_COUNT_AT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TRANSACTIONAL_FLAG: i16 = 0x10;
const CONTROL_FLAG: i16 = 0x20;

/// Kafka's "no timestamp" value.
const NO_TIMESTAMP: i64 = -1;

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum BatchError {
    #[error("incomplete batch: need {need} bytes, have {have}")]
    Incomplete { need: usize, have: usize },
    #[error("corrupt batch: {0}")]
    Corrupt(String),
}

impl From<compression::CompressionError> for BatchError {
    fn from(e: compression::CompressionError) -> Self {
        BatchError::Corrupt(e.0)
    }
}

#[cold]
#[inline(never)]
fn corrupt(msg: impl Into<String>) -> BatchError {
    BatchError::Corrupt(msg.into())
}

// ---------------------------------------------------------------------------------------------
// Varints
// ---------------------------------------------------------------------------------------------

#[inline(always)]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline(always)]
fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Number of bytes `put_varint(v)` writes (1..=10).
#[inline(always)]
pub fn varint_len(v: i64) -> usize {
    let bits = 64 - (zigzag(v) | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends `v` as a zigzag varint (Kafka's varint / varlong encoding).
#[inline(always)]
pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut u = zigzag(v);
    if u < 0x80 {
        out.push(u as u8);
        return;
    }
    put_varint_long(out, &mut u);
}

#[inline]
fn put_varint_long(out: &mut Vec<u8>, u: &mut u64) {
    while *u >= 0x80 {
        out.push((*u as u8) | 0x80);
        *u >>= 7;
    }
    out.push(*u as u8);
}

/// Reads a zigzag varint (up to 10 bytes) at `*pos`, advancing `pos` past it.
#[inline(always)]
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Result<i64, BatchError> {
    let p = *pos;
    if let Some(&b) = buf.get(p) {
        if b < 0x80 {
            *pos = p + 1;
            return Ok(unzigzag(b as u64));
        }
    }
    get_varint_slow(buf, pos)
}

#[inline(never)]
fn get_varint_slow(buf: &[u8], pos: &mut usize) -> Result<i64, BatchError> {
    let mut p = *pos;
    let mut result: u64 = 0;
    let mut shift: u32 = 0;
    loop {
        let Some(&b) = buf.get(p) else {
            return Err(corrupt("varint runs past the end of its record"));
        };
        p += 1;
        if shift == 63 && b > 1 {
            return Err(corrupt("varint longer than 64 bits"));
        }
        result |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            break;
        }
        shift += 7;
    }
    *pos = p;
    Ok(unzigzag(result))
}

/// Reads a varint that must fit an `i32` (Kafka's `varint`, as opposed to `varlong`).
#[inline(always)]
fn get_varint32(buf: &[u8], pos: &mut usize, what: &str) -> Result<i32, BatchError> {
    let v = get_varint(buf, pos)?;
    i32::try_from(v).map_err(|_| corrupt(format!("{what} {v} does not fit a 32-bit varint")))
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

#[inline(always)]
fn write_at<const N: usize>(buf: &mut [u8], at: usize, bytes: [u8; N]) {
    buf[at..at + N].copy_from_slice(&bytes);
}

/// Appends one batch to `out`. Create with the absolute base offset; push records in offset order.
///
/// The header is written as a placeholder by [`BatchWriter::new`] and filled in by
/// [`BatchWriter::finish`]; until then `out` holds an unfinished batch. Dropping the writer
/// without calling `finish` leaves that unfinished batch in `out`.
#[derive(Debug)]
pub struct BatchWriter<'o> {
    out: &'o mut Vec<u8>,
    start: usize,
    base_offset: i64,
    base_timestamp: i64,
    last_offset_delta: i64,
    max_timestamp: i64,
    count: usize,
}

impl<'o> BatchWriter<'o> {
    pub fn new(out: &'o mut Vec<u8>, base_offset: i64, base_timestamp: i64) -> Self {
        let start = out.len();
        out.reserve(HEADER_LEN);
        out.resize(start + HEADER_LEN, 0);
        let h = &mut out[start..];
        write_at(h, BASE_OFFSET_AT, base_offset.to_be_bytes());
        write_at(h, EPOCH_AT, 0i32.to_be_bytes());
        h[MAGIC_AT] = MAGIC as u8;
        write_at(h, ATTRIBUTES_AT, 0i16.to_be_bytes());
        write_at(h, BASE_TIMESTAMP_AT, base_timestamp.to_be_bytes());
        write_at(h, PRODUCER_ID_AT, (-1i64).to_be_bytes());
        write_at(h, PRODUCER_EPOCH_AT, (-1i16).to_be_bytes());
        write_at(h, BASE_SEQUENCE_AT, (-1i32).to_be_bytes());
        BatchWriter {
            out,
            start,
            base_offset,
            base_timestamp,
            last_offset_delta: -1,
            max_timestamp: i64::MIN,
            count: 0,
        }
    }

    /// Appends one record. `offset` is absolute and must be `>= base_offset` and within
    /// `i32::MAX` of it; gaps are allowed (compaction), but offsets must increase.
    ///
    /// # Panics
    /// If `offset` is below the base offset or more than `i32::MAX` above it, or if the batch
    /// would exceed `i32::MAX` records; all are caller bugs.
    #[inline]
    pub fn push(
        &mut self,
        offset: i64,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[RecordHeader<'_>],
    ) {
        let offset_delta = offset.wrapping_sub(self.base_offset);
        assert!(
            offset >= self.base_offset && offset_delta <= i64::from(i32::MAX),
            "record offset {offset} outside batch based at {}",
            self.base_offset
        );
        debug_assert!(
            offset_delta > self.last_offset_delta,
            "records must be pushed in increasing offset order"
        );
        assert!(
            self.count < i32::MAX as usize,
            "too many records in one batch"
        );
        let ts_delta = timestamp.wrapping_sub(self.base_timestamp);
        let key_len = key.map_or(-1, |k| k.len() as i64);
        let value_len = value.map_or(-1, |v| v.len() as i64);

        // Body = everything after the length varint, computed up front so no temp buffer is needed.
        let mut body = 1
            + varint_len(ts_delta)
            + varint_len(offset_delta)
            + varint_len(key_len)
            + key.map_or(0, <[u8]>::len)
            + varint_len(value_len)
            + value.map_or(0, <[u8]>::len)
            + varint_len(headers.len() as i64);
        for (hk, hv) in headers {
            let hv_len = hv.map_or(-1, |v| v.len() as i64);
            body += varint_len(hk.len() as i64)
                + hk.len()
                + varint_len(hv_len)
                + hv.map_or(0, <[u8]>::len);
        }

        let out = &mut *self.out;
        out.reserve(body + varint_len(body as i64));
        put_varint(out, body as i64);
        out.push(0); // record attributes
        put_varint(out, ts_delta);
        put_varint(out, offset_delta);
        put_varint(out, key_len);
        if let Some(k) = key {
            out.extend_from_slice(k);
        }
        put_varint(out, value_len);
        if let Some(v) = value {
            out.extend_from_slice(v);
        }
        put_varint(out, headers.len() as i64);
        for (hk, hv) in headers {
            put_varint(out, hk.len() as i64);
            out.extend_from_slice(hk);
            match hv {
                Some(v) => {
                    put_varint(out, v.len() as i64);
                    out.extend_from_slice(v);
                }
                None => put_varint(out, -1),
            }
        }

        self.last_offset_delta = offset_delta;
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.count += 1;
    }

    /// Bytes of this batch written so far, header included.
    pub fn len(&self) -> usize {
        self.out.len() - self.start
    }

    /// Never true: even an empty batch has its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn record_count(&self) -> usize {
        self.count
    }

    /// Largest timestamp pushed so far, or -1 (Kafka's `NO_TIMESTAMP`) if none was.
    pub fn max_timestamp(&self) -> i64 {
        if self.count == 0 {
            NO_TIMESTAMP
        } else {
            self.max_timestamp
        }
    }

    /// Fills in the header and returns the batch's byte range within `out`.
    ///
    /// An empty batch gets `lastOffsetDelta = -1` (it covers no offset) and `maxTimestamp = -1`.
    ///
    /// # Panics
    /// If the batch is larger than `i32::MAX` bytes.
    pub fn finish(self) -> Range<usize> {
        let end = self.out.len();
        let batch_length = i32::try_from(end - self.start - LOG_OVERHEAD);
        assert!(batch_length.is_ok(), "batch larger than 2 GiB");
        let batch_length = batch_length.unwrap_or(i32::MAX);
        let max_timestamp = self.max_timestamp();
        let h = &mut self.out[self.start..end];
        write_at(h, LENGTH_AT, batch_length.to_be_bytes());
        write_at(
            h,
            LAST_OFFSET_DELTA_AT,
            (self.last_offset_delta as i32).to_be_bytes(),
        );
        write_at(h, MAX_TIMESTAMP_AT, max_timestamp.to_be_bytes());
        write_at(h, RECORD_COUNT_AT, (self.count as i32).to_be_bytes());
        let crc = crc32c::crc32c(&h[ATTRIBUTES_AT..]);
        write_at(h, CRC_AT, crc.to_be_bytes());
        self.start..end
    }
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// The fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Total bytes of the batch on disk: 12 + `batch_length`.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// Offset of the last record the batch covers (`base_offset + last_offset_delta`).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .wrapping_add(i64::from(self.last_offset_delta))
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }

    /// Compression codec: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }
}

#[inline(always)]
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

#[inline(always)]
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}

#[inline(always)]
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

/// Parses the header at the start of `buf`.
///
/// Returns `Incomplete` if `buf` is shorter than the header or than the batch's total length (so a
/// torn tail reports `Incomplete`), and `Corrupt` if the header is impossible (bad magic,
/// `batch_length < 49`, negative record count). Does not check the CRC: see [`crc_ok`].
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let have = buf.len();
    if have < LOG_OVERHEAD {
        return Err(BatchError::Incomplete {
            need: HEADER_LEN,
            have,
        });
    }
    let batch_length = be_i32(buf, LENGTH_AT);
    if batch_length < MIN_BATCH_LENGTH {
        return Err(corrupt(format!(
            "batch length {batch_length} is below the minimum {MIN_BATCH_LENGTH}"
        )));
    }
    if have > MAGIC_AT && buf[MAGIC_AT] as i8 != MAGIC {
        return Err(corrupt(format!(
            "unsupported magic {} (only {MAGIC} is supported)",
            buf[MAGIC_AT] as i8
        )));
    }
    let total = LOG_OVERHEAD + batch_length as usize;
    if have < total {
        return Err(BatchError::Incomplete { need: total, have });
    }
    let header = BatchHeader {
        base_offset: be_i64(buf, BASE_OFFSET_AT),
        batch_length,
        partition_leader_epoch: be_i32(buf, EPOCH_AT),
        magic: buf[MAGIC_AT] as i8,
        crc: be_i32(buf, CRC_AT) as u32,
        attributes: be_i16(buf, ATTRIBUTES_AT),
        last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA_AT),
        base_timestamp: be_i64(buf, BASE_TIMESTAMP_AT),
        max_timestamp: be_i64(buf, MAX_TIMESTAMP_AT),
        producer_id: be_i64(buf, PRODUCER_ID_AT),
        producer_epoch: be_i16(buf, PRODUCER_EPOCH_AT),
        base_sequence: be_i32(buf, BASE_SEQUENCE_AT),
        record_count: be_i32(buf, RECORD_COUNT_AT),
    };
    if header.record_count < 0 {
        return Err(corrupt(format!(
            "negative record count {}",
            header.record_count
        )));
    }
    Ok(header)
}

/// Checks the CRC of a complete batch. `batch` must hold at least the batch's `total_len` bytes;
/// bytes past it are ignored. Returns false for anything that is not a whole batch.
pub fn crc_ok(batch: &[u8]) -> bool {
    let Ok(header) = parse_header(batch) else {
        return false;
    };
    crc32c::crc32c(&batch[ATTRIBUTES_AT..header.total_len()]) == header.crc
}

/// One decoded record, borrowing from the batch bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    headers_raw: &'a [u8],
    header_count: usize,
}

impl<'a> RecordView<'a> {
    pub fn header_count(&self) -> usize {
        self.header_count
    }

    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            buf: self.headers_raw,
            pos: 0,
            remaining: self.header_count,
        }
    }
}

/// Iterates the headers of a record (already validated when the record was decoded).
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    buf: &'a [u8],
    pos: usize,
    remaining: usize,
}

impl<'a> HeaderIter<'a> {
    fn next_header(&mut self) -> Result<RecordHeader<'a>, BatchError> {
        let key = read_bytes(self.buf, &mut self.pos, "header key length")?
            .ok_or_else(|| corrupt("null header key"))?;
        let value = read_bytes(self.buf, &mut self.pos, "header value length")?;
        Ok((key, value))
    }
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = RecordHeader<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        match self.next_header() {
            Ok(h) => {
                self.remaining -= 1;
                Some(h)
            }
            Err(_) => {
                // Unreachable for views made by `records`, which validated the headers.
                self.remaining = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

/// Reads a length-prefixed byte string (-1 = null).
#[inline(always)]
fn read_bytes<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    what: &str,
) -> Result<Option<&'a [u8]>, BatchError> {
    let len = get_varint32(buf, pos, what)?;
    if len < 0 {
        if len == -1 {
            return Ok(None);
        }
        return Err(corrupt(format!("negative {what} {len}")));
    }
    let start = *pos;
    let end = start.saturating_add(len as usize);
    match buf.get(start..end) {
        Some(bytes) => {
            *pos = end;
            Ok(Some(bytes))
        }
        None => Err(corrupt(format!(
            "{what} {len} runs past the end of its record"
        ))),
    }
}

/// Iterates the records of one complete batch. See [`records`].
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    header: BatchHeader,
    buf: &'a [u8],
    pos: usize,
    remaining: usize,
    failed: bool,
}

impl<'a> RecordIter<'a> {
    /// The batch's header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    #[inline(always)]
    fn decode(&mut self) -> Result<RecordView<'a>, BatchError> {
        let buf = self.buf;
        let mut pos = self.pos;
        let len = get_varint32(buf, &mut pos, "record length")?;
        if len < 0 {
            return Err(corrupt(format!("negative record length {len}")));
        }
        let end = pos.saturating_add(len as usize);
        let Some(rec) = buf.get(pos..end) else {
            return Err(corrupt(format!(
                "record length {len} runs past the end of the batch"
            )));
        };
        if rec.is_empty() {
            return Err(corrupt("empty record"));
        }
        // rec[0] is the record attributes byte, unused in v2.
        let mut p = 1;
        let ts_delta = get_varint(rec, &mut p)?;
        let offset_delta = get_varint32(rec, &mut p, "offset delta")?;
        if offset_delta < 0 {
            return Err(corrupt(format!("negative offset delta {offset_delta}")));
        }
        let key = read_bytes(rec, &mut p, "key length")?;
        let value = read_bytes(rec, &mut p, "value length")?;
        let header_count = get_varint32(rec, &mut p, "header count")?;
        if header_count < 0 {
            return Err(corrupt(format!("negative header count {header_count}")));
        }
        let headers_start = p;
        if header_count > 0 {
            let mut it = HeaderIter {
                buf: rec,
                pos: p,
                remaining: 0,
            };
            for _ in 0..header_count {
                it.next_header()?;
            }
            p = it.pos;
        }
        if p != rec.len() {
            return Err(corrupt(format!(
                "record has {} bytes after its last field",
                rec.len() - p
            )));
        }
        let offset = self
            .header
            .base_offset
            .checked_add(i64::from(offset_delta))
            .ok_or_else(|| corrupt("record offset overflows i64"))?;
        self.pos = end;
        Ok(RecordView {
            offset,
            timestamp: self.header.base_timestamp.wrapping_add(ts_delta),
            key,
            value,
            headers_raw: &rec[headers_start..],
            header_count: header_count as usize,
        })
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordView<'a>, BatchError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            if self.failed || self.pos == self.buf.len() {
                return None;
            }
            self.failed = true;
            return Some(Err(corrupt(format!(
                "batch has {} bytes after its last record",
                self.buf.len() - self.pos
            ))));
        }
        match self.decode() {
            Ok(r) => {
                self.remaining -= 1;
                Some(Ok(r))
            }
            Err(e) => {
                self.remaining = 0;
                self.failed = true;
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.failed {
            (0, Some(0))
        } else {
            (0, Some(self.remaining + 1))
        }
    }
}

/// The records of one batch: its header and its records section, decompressed if the batch was
/// compressed (borrowed from the batch otherwise). Iterate with [`Records::iter`] or `&records`.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    header: BatchHeader,
    body: Cow<'a, [u8]>,
}

impl<'a> Records<'a> {
    /// The batch's header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// Decodes the records, in order.
    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter {
            header: self.header,
            buf: &self.body,
            pos: 0,
            remaining: self.header.record_count as usize,
            failed: false,
        }
    }
}

impl<'r> IntoIterator for &'r Records<'_> {
    type Item = Result<RecordView<'r>, BatchError>;
    type IntoIter = RecordIter<'r>;

    fn into_iter(self) -> RecordIter<'r> {
        self.iter()
    }
}

/// The records of one batch at the start of `batch` (header included; bytes past the batch's
/// `total_len` are ignored). Does not check the CRC (which covers the records as stored, i.e.
/// compressed). A compressed batch (gzip, snappy, lz4, zstd, as Kafka clients write them) is
/// decompressed here, bounded by [`crate::compression::decompressed_limit`]; a payload that does
/// not decompress, or inflates past the limit, is `Corrupt`. Malformed records yield one
/// `Corrupt` error, after which the iterator ends; it never panics or reads out of bounds.
pub fn records(batch: &[u8]) -> Result<Records<'_>, BatchError> {
    let header = parse_header(batch)?;
    let stored = &batch[HEADER_LEN..header.total_len()];
    let body = match header.compression() {
        compression::NONE => Cow::Borrowed(stored),
        codec => Cow::Owned(compression::decompress(codec, stored)?),
    };
    Ok(Records { header, body })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Owned copy of a record for comparisons.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Rec {
        offset: i64,
        timestamp: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    }

    fn encode(base_offset: i64, base_ts: i64, recs: &[Rec]) -> (Vec<u8>, Range<usize>) {
        let mut out = b"prefix".to_vec();
        let mut w = BatchWriter::new(&mut out, base_offset, base_ts);
        for r in recs {
            let headers: Vec<RecordHeader<'_>> = r
                .headers
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_deref()))
                .collect();
            w.push(
                r.offset,
                r.timestamp,
                r.key.as_deref(),
                r.value.as_deref(),
                &headers,
            );
        }
        assert_eq!(w.record_count(), recs.len());
        let len = w.len();
        let range = w.finish();
        assert_eq!(range.len(), len);
        assert_eq!(range.start, 6);
        (out, range)
    }

    fn decode(batch: &[u8]) -> Vec<Rec> {
        records(batch)
            .unwrap()
            .iter()
            .map(|r| {
                let r = r.unwrap();
                assert_eq!(r.headers().count(), r.header_count());
                Rec {
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r.key.map(<[u8]>::to_vec),
                    value: r.value.map(<[u8]>::to_vec),
                    headers: r
                        .headers()
                        .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                        .collect(),
                }
            })
            .collect()
    }

    fn rec(offset: i64, timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Rec {
        Rec {
            offset,
            timestamp,
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            headers: vec![],
        }
    }

    fn sample() -> Vec<Rec> {
        let mut with_headers = rec(1005, 900, Some(b"k2"), Some(b"v2"));
        with_headers.headers = vec![
            (b"trace".to_vec(), Some(b"abc".to_vec())),
            (b"nullv".to_vec(), None),
            (b"".to_vec(), Some(b"".to_vec())),
        ];
        vec![
            rec(1000, 5_000, None, None),
            rec(1001, 5_001, Some(b""), Some(b"")),
            rec(1002, 4_000, Some(b"key"), None),
            with_headers,
            rec(1_000_000, i64::MAX, None, Some(&[7u8; 300])),
            rec(1_000_001, i64::MIN, Some(&[1u8; 200]), Some(b"x")),
        ]
    }

    #[test]
    fn varints_match_protobuf_zigzag() {
        let cases: &[(i64, &[u8])] = &[
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-2, &[0x03]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (300, &[0xd8, 0x04]),
            (i32::MAX as i64, &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
            (i32::MIN as i64, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
            (
                i64::MIN,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for &(v, bytes) in cases {
            let mut out = vec![];
            put_varint(&mut out, v);
            assert_eq!(out, bytes, "{v}");
            assert_eq!(varint_len(v), bytes.len(), "{v}");
            let mut pos = 0;
            assert_eq!(get_varint(bytes, &mut pos).unwrap(), v);
            assert_eq!(pos, bytes.len());
        }
        // 11 bytes / overflowing 10th byte / truncated.
        let mut pos = 0;
        assert!(get_varint(&[0xff; 11], &mut pos).is_err());
        let mut pos = 0;
        assert!(get_varint(
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            &mut pos
        )
        .is_err());
        let mut pos = 0;
        assert!(get_varint(&[0x80], &mut pos).is_err());
        assert_eq!(pos, 0);
    }

    #[test]
    fn roundtrip_edge_cases() {
        let recs = sample();
        let (out, range) = encode(1000, 5_000, &recs);
        let batch = &out[range.clone()];
        let h = parse_header(batch).unwrap();
        assert_eq!(h.total_len(), range.len());
        assert_eq!(h.base_offset, 1000);
        assert_eq!(h.last_offset(), 1_000_001);
        assert_eq!(h.record_count, 6);
        assert_eq!(h.max_timestamp, i64::MAX);
        assert_eq!(h.magic, MAGIC);
        assert_eq!(h.producer_id, -1);
        assert_eq!(h.producer_epoch, -1);
        assert_eq!(h.base_sequence, -1);
        assert_eq!(h.partition_leader_epoch, 0);
        assert_eq!(h.compression(), 0);
        assert!(!h.is_control());
        assert!(!h.is_transactional());
        assert!(crc_ok(batch));
        assert_eq!(decode(batch), recs);
        // Trailing bytes after the batch are ignored by all readers.
        let mut longer = batch.to_vec();
        longer.extend_from_slice(&[0xde, 0xad]);
        assert!(crc_ok(&longer));
        assert_eq!(decode(&longer), recs);
    }

    #[test]
    fn empty_batch() {
        let mut out = vec![];
        let w = BatchWriter::new(&mut out, 42, 7);
        assert_eq!(w.len(), HEADER_LEN);
        assert_eq!(w.max_timestamp(), -1);
        let range = w.finish();
        assert_eq!(range, 0..HEADER_LEN);
        let h = parse_header(&out).unwrap();
        assert_eq!(h.batch_length, 49);
        assert_eq!(h.record_count, 0);
        assert_eq!(h.last_offset(), 41);
        assert!(crc_ok(&out));
        assert_eq!(records(&out).unwrap().iter().count(), 0);
    }

    #[test]
    fn writer_tracks_stats_and_appends_batches() {
        let mut out = vec![];
        let mut w = BatchWriter::new(&mut out, 0, 100);
        w.push(0, 100, None, Some(b"a"), &[]);
        w.push(3, 90, None, Some(b"b"), &[]);
        assert_eq!(w.max_timestamp(), 100);
        assert_eq!(w.record_count(), 2);
        let first = w.finish();
        let mut w = BatchWriter::new(&mut out, 4, 200);
        w.push(4, 200, Some(b"k"), None, &[]);
        let second = w.finish();
        assert_eq!(first.end, second.start);
        assert_eq!(second.end, out.len());
        let h1 = parse_header(&out).unwrap();
        assert_eq!(h1.total_len(), first.len());
        assert_eq!(h1.last_offset(), 3);
        let h2 = parse_header(&out[h1.total_len()..]).unwrap();
        assert_eq!(h2.base_offset, 4);
        let offsets: Vec<i64> = records(&out)
            .unwrap()
            .iter()
            .map(|r| r.unwrap().offset)
            .collect();
        assert_eq!(offsets, [0, 3]);
        let ts: Vec<i64> = records(&out[first.end..])
            .unwrap()
            .iter()
            .map(|r| r.unwrap().timestamp)
            .collect();
        assert_eq!(ts, [200]);
    }

    /// Bit-at-a-time CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), independent of the crate.
    fn reference_crc32c(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn byte_exact_against_spec() {
        assert_eq!(reference_crc32c(b"123456789"), 0xE306_9283); // the standard check value

        // Three records at offsets 100, 102, 103; base timestamp 1000.
        let mut records_bytes: Vec<u8> = vec![];
        // Record 0: offset 100, ts 1000, key "k", value "v", no headers. Body = 8 bytes.
        records_bytes.extend_from_slice(&[
            0x10, // length 8 (zigzag 16)
            0x00, // attributes
            0x00, // timestampDelta 0
            0x00, // offsetDelta 0
            0x02, b'k', // keyLength 1
            0x02, b'v', // valueLength 1
            0x00, // headerCount 0
        ]);
        // Record 1: offset 102, ts 990, key null, value "", one header ("h", null). Body = 9 bytes.
        records_bytes.extend_from_slice(&[
            0x12, // length 9
            0x00, // attributes
            0x13, // timestampDelta -10 (zigzag 19)
            0x04, // offsetDelta 2
            0x01, // keyLength -1 (null)
            0x00, // valueLength 0
            0x02, // headerCount 1
            0x02, b'h', // header keyLength 1
            0x01, // header valueLength -1 (null)
        ]);
        // Record 2: offset 103, ts 1300, key null, 64-byte value. Body = 72 bytes.
        records_bytes.extend_from_slice(&[
            0x90, 0x01, // length 72 (zigzag 144)
            0x00, // attributes
            0xd8, 0x04, // timestampDelta 300 (zigzag 600)
            0x06, // offsetDelta 3
            0x01, // keyLength -1
            0x80, 0x01, // valueLength 64 (zigzag 128)
        ]);
        records_bytes.extend_from_slice(&[b'x'; 64]);
        records_bytes.push(0x00); // headerCount 0
        assert_eq!(records_bytes.len(), 9 + 10 + 74);

        let mut expected: Vec<u8> = vec![];
        expected.extend_from_slice(&100i64.to_be_bytes()); // baseOffset
        expected.extend_from_slice(&(49 + 93i32).to_be_bytes()); // batchLength
        expected.extend_from_slice(&0i32.to_be_bytes()); // partitionLeaderEpoch
        expected.push(2); // magic
        expected.extend_from_slice(&[0, 0, 0, 0]); // crc, filled below
        let crc_from = expected.len();
        expected.extend_from_slice(&0i16.to_be_bytes()); // attributes
        expected.extend_from_slice(&3i32.to_be_bytes()); // lastOffsetDelta
        expected.extend_from_slice(&1000i64.to_be_bytes()); // baseTimestamp
        expected.extend_from_slice(&1300i64.to_be_bytes()); // maxTimestamp
        expected.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
        expected.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
        expected.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
        expected.extend_from_slice(&3i32.to_be_bytes()); // recordCount
        assert_eq!(expected.len(), HEADER_LEN);
        expected.extend_from_slice(&records_bytes);
        let crc = reference_crc32c(&expected[crc_from..]);
        expected[17..21].copy_from_slice(&crc.to_be_bytes());

        let mut out = vec![];
        let mut w = BatchWriter::new(&mut out, 100, 1000);
        w.push(100, 1000, Some(b"k"), Some(b"v"), &[]);
        w.push(102, 990, None, Some(b""), &[(b"h", None)]);
        w.push(103, 1300, None, Some(&[b'x'; 64]), &[]);
        w.finish();
        assert_eq!(out, expected);

        let recs = records(&expected).unwrap();
        let got: Vec<_> = recs.iter().map(|r| r.unwrap()).collect();
        assert_eq!(got.len(), 3);
        assert_eq!((got[1].offset, got[1].timestamp), (102, 990));
        assert_eq!(got[1].headers().collect::<Vec<_>>(), [(&b"h"[..], None)]);
        assert_eq!((got[2].offset, got[2].timestamp), (103, 1300));
    }

    #[test]
    fn crc_detects_any_modified_byte() {
        let (out, range) = encode(1000, 5_000, &sample());
        let batch = out[range].to_vec();
        assert!(crc_ok(&batch));
        for i in CRC_AT..batch.len() {
            let mut bad = batch.clone();
            bad[i] ^= 0x10;
            assert!(!crc_ok(&bad), "flip at byte {i} not detected");
        }
    }

    #[test]
    fn truncation_is_incomplete() {
        let (out, range) = encode(1000, 5_000, &sample());
        let batch = &out[range];
        for cut in 0..batch.len() {
            let err = parse_header(&batch[..cut]).unwrap_err();
            assert!(
                matches!(err, BatchError::Incomplete { have, .. } if have == cut),
                "cut {cut}: {err:?}"
            );
            assert!(records(&batch[..cut]).is_err());
            assert!(!crc_ok(&batch[..cut]));
        }
        assert_eq!(
            parse_header(&batch[..100]).unwrap_err(),
            BatchError::Incomplete {
                need: batch.len(),
                have: 100
            }
        );
    }

    #[test]
    fn corrupt_headers() {
        let (out, range) = encode(0, 0, &sample());
        let batch = out[range].to_vec();

        let mut bad = batch.clone();
        bad[MAGIC_AT] = 1;
        assert!(matches!(parse_header(&bad), Err(BatchError::Corrupt(_))));

        let mut bad = batch.clone();
        bad[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&48i32.to_be_bytes());
        assert!(matches!(parse_header(&bad), Err(BatchError::Corrupt(_))));
        // A zero-filled region is corrupt, not incomplete.
        assert!(matches!(
            parse_header(&[0u8; 100]),
            Err(BatchError::Corrupt(_))
        ));

        let mut bad = batch.clone();
        bad[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(matches!(parse_header(&bad), Err(BatchError::Corrupt(_))));

        let mut bad = batch.clone();
        bad[ATTRIBUTES_AT + 1] = 4; // zstd
                                    // Now decompressed: plain records are not a zstd frame.
        let e = records(&bad).unwrap_err();
        assert!(
            e.to_string().starts_with("corrupt batch: zstd payload: "),
            "{e}"
        );
        assert_eq!(parse_header(&bad).unwrap().compression(), 4);

        // Record count larger than the records present.
        let mut bad = batch.clone();
        bad[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&7i32.to_be_bytes());
        let recs = records(&bad).unwrap();
        let results: Vec<_> = recs.iter().collect();
        assert_eq!(results.len(), 7);
        assert!(results[..6].iter().all(Result::is_ok));
        assert!(results[6].is_err());

        // Record count smaller: the leftover bytes are reported once.
        let mut bad = batch.clone();
        bad[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&5i32.to_be_bytes());
        let recs = records(&bad).unwrap();
        let results: Vec<_> = recs.iter().collect();
        assert_eq!(results.len(), 6);
        assert!(results[5].is_err());
    }

    fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..max)
    }

    fn arb_records() -> impl Strategy<Value = (i64, i64, Vec<Rec>)> {
        let one = (
            0i64..1_000,
            any::<i64>(),
            prop::option::of(arb_bytes(40)),
            prop::option::of(arb_bytes(300)),
            prop::collection::vec((arb_bytes(10), prop::option::of(arb_bytes(20))), 0..4),
        );
        (
            -1i64..(1 << 40),
            any::<i64>(),
            prop::collection::vec(one, 0..30),
        )
            .prop_map(|(base, base_ts, items)| {
                let mut offset = base;
                let recs = items
                    .into_iter()
                    .enumerate()
                    .map(|(i, (gap, ts, key, value, headers))| {
                        if i > 0 {
                            offset += 1 + gap;
                        }
                        Rec {
                            offset,
                            timestamp: ts,
                            key,
                            value,
                            headers,
                        }
                    })
                    .collect();
                (base, base_ts, recs)
            })
    }

    proptest! {
        #[test]
        fn prop_roundtrip((base, base_ts, recs) in arb_records()) {
            let (out, range) = encode(base, base_ts, &recs);
            let batch = &out[range];
            prop_assert!(crc_ok(batch));
            let h = parse_header(batch).unwrap();
            prop_assert_eq!(h.record_count as usize, recs.len());
            if let Some(last) = recs.last() {
                prop_assert_eq!(h.last_offset(), last.offset);
                prop_assert_eq!(h.max_timestamp, recs.iter().map(|r| r.timestamp).max().unwrap());
            }
            prop_assert_eq!(decode(batch), recs);
        }

        #[test]
        fn prop_varint_roundtrip(v in any::<i64>()) {
            let mut out = vec![];
            put_varint(&mut out, v);
            prop_assert_eq!(out.len(), varint_len(v));
            let mut pos = 0;
            prop_assert_eq!(get_varint(&out, &mut pos).unwrap(), v);
            prop_assert_eq!(pos, out.len());
        }

        #[test]
        fn prop_garbage_never_panics(bytes in arb_bytes(400)) {
            let _ = parse_header(&bytes);
            let _ = crc_ok(&bytes);
            if let Ok(it) = records(&bytes) {
                for r in it.iter().flatten() {
                    let _ = r.headers().count();
                }
            }
        }

        #[test]
        fn prop_mutated_batch_never_panics(
            (base, base_ts, recs) in arb_records(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let (out, range) = encode(base, base_ts, &recs);
            let mut batch = out[range].to_vec();
            // Flip bytes in the records area only (the header is fuzzed by prop_garbage_never_panics).
            if batch.len() > HEADER_LEN {
                for (at, byte) in flips {
                    let i = HEADER_LEN + at.index(batch.len() - HEADER_LEN);
                    batch[i] = byte;
                }
            }
            // Whole, and truncated.
            for b in [&batch[..], &batch[..cut.index(batch.len() + 1)]] {
                let _ = crc_ok(b);
                if let Ok(it) = records(b) {
                    let mut n = 0usize;
                    for r in &it {
                        n += 1;
                        if let Ok(r) = r {
                            let _ = r.headers().count();
                        }
                    }
                    prop_assert!(n <= recs.len() + 1);
                }
            }
        }
    }
}
