//! Decompression of record batches that Kafka clients compressed (attributes bits 0..2):
//! gzip (1), snappy (2, raw or xerial-framed), lz4 (3, frame format) and zstd (4).
//!
//! The log never compresses what it writes; it stores client batches as sent and its readers
//! decode them here. Everything read is untrusted: output is bounded by [`decompressed_limit`]
//! while inflating, so a small crafted batch (a "zip bomb") is a corrupt-batch error, never a
//! large allocation.

use std::io::Read;

/// No batch inflates past this many bytes, whatever its compressed size.
pub const MAX_DECOMPRESSED: usize = 128 << 20;
/// Any batch may inflate to this many bytes, whatever its ratio.
pub const MIN_DECOMPRESSED_ALLOWANCE: usize = 16 << 20;
/// Beyond the allowance, a batch may inflate to this multiple of its compressed size (gzip's
/// own maximum ratio is about 1032:1).
pub const MAX_RATIO: usize = 1024;

/// Codec numbers of the batch attributes.
pub const NONE: u8 = 0;
pub const GZIP: u8 = 1;
pub const SNAPPY: u8 = 2;
pub const LZ4: u8 = 3;
pub const ZSTD: u8 = 4;

/// The xerial snappy-java stream header (the Java client's and kafka-python's snappy framing).
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// Magic + version (i32) + compatible version (i32).
const XERIAL_HEADER_LEN: usize = 16;

/// Size of the reads that fill the output; the output grows by at most this much past need.
const CHUNK: usize = 64 << 10;

/// The codec's name, for messages.
pub fn codec_name(codec: u8) -> &'static str {
    match codec {
        NONE => "none",
        GZIP => "gzip",
        SNAPPY => "snappy",
        LZ4 => "lz4",
        ZSTD => "zstd",
        _ => "unknown",
    }
}

/// The most bytes a payload of `compressed_len` bytes may inflate to.
pub fn decompressed_limit(compressed_len: usize) -> usize {
    compressed_len
        .saturating_mul(MAX_RATIO)
        .clamp(MIN_DECOMPRESSED_ALLOWANCE, MAX_DECOMPRESSED)
}

/// A compressed payload that does not decode, or would decode past the size limit (a record
/// batch that holds it is corrupt: `batch.rs` turns this into its `BatchError::Corrupt`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct CompressionError(pub String);

#[cold]
fn bad(codec: u8, msg: impl std::fmt::Display) -> CompressionError {
    CompressionError(format!("{} payload: {msg}", codec_name(codec)))
}

/// Decompresses the records section of a batch compressed with `codec`.
pub fn decompress(codec: u8, data: &[u8]) -> Result<Vec<u8>, CompressionError> {
    let limit = decompressed_limit(data.len());
    match codec {
        GZIP => {
            let mut decoder = flate2::read::MultiGzDecoder::new(data);
            read_bounded(&mut decoder, codec, limit, data.len())
        }
        SNAPPY => {
            if data.starts_with(&XERIAL_MAGIC) {
                xerial_snappy(data, limit)
            } else {
                raw_snappy(data, limit, Vec::new())
            }
        }
        LZ4 => {
            let mut decoder = lz4::Decoder::new(data).map_err(|e| bad(codec, e))?;
            let out = read_bounded(&mut decoder, codec, limit, data.len())?;
            let (rest, done) = decoder.finish();
            done.map_err(|_| bad(codec, "the frame is truncated"))?;
            if !rest.is_empty() {
                return Err(bad(
                    codec,
                    format!("{} bytes after the end of the frame", rest.len()),
                ));
            }
            Ok(out)
        }
        ZSTD => {
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(data).map_err(|e| bad(codec, e))?;
            read_bounded(&mut decoder, codec, limit, data.len())
        }
        other => Err(CompressionError(format!(
            "unknown compression codec {other} (known: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd)"
        ))),
    }
}

/// Reads `r` to its end, failing as soon as the output would exceed `limit`.
fn read_bounded(
    r: &mut impl Read,
    codec: u8,
    limit: usize,
    compressed_len: usize,
) -> Result<Vec<u8>, CompressionError> {
    let mut out: Vec<u8> = Vec::with_capacity(compressed_len.saturating_mul(4).min(limit));
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(bad(codec, e)),
        };
        if n > limit - out.len() {
            return Err(too_large(codec, compressed_len, limit));
        }
        if out.capacity() - out.len() < n {
            // Grow geometrically, but never past the limit.
            let want = out.len().max(n).min(limit - out.len());
            out.reserve_exact(want);
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

#[cold]
fn too_large(codec: u8, compressed_len: usize, limit: usize) -> CompressionError {
    bad(
        codec,
        format!(
            "{compressed_len} compressed bytes inflate past {limit} bytes (the limit is \
             {MAX_RATIO}x the compressed size, at least {MIN_DECOMPRESSED_ALLOWANCE} and at \
             most {MAX_DECOMPRESSED} bytes)"
        ),
    )
}

/// One raw snappy block, appended to `out`; the block declares its length up front, which is
/// checked against the limit before anything is allocated.
fn raw_snappy(block: &[u8], limit: usize, mut out: Vec<u8>) -> Result<Vec<u8>, CompressionError> {
    let len = snap::raw::decompress_len(block).map_err(|e| bad(SNAPPY, e))?;
    if len > limit - out.len() {
        return Err(too_large(SNAPPY, block.len(), limit));
    }
    let start = out.len();
    out.resize(start + len, 0);
    let n = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| bad(SNAPPY, e))?;
    if n != len {
        return Err(bad(
            SNAPPY,
            format!("block declares {len} bytes but holds {n}"),
        ));
    }
    Ok(out)
}

/// snappy-java's stream: the 16-byte header, then blocks of (i32 big-endian length, raw
/// snappy block) to the end.
fn xerial_snappy(data: &[u8], limit: usize) -> Result<Vec<u8>, CompressionError> {
    let mut out = Vec::new();
    let Some(mut rest) = data.get(XERIAL_HEADER_LEN..) else {
        return Err(bad(SNAPPY, "truncated xerial stream header"));
    };
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(bad(SNAPPY, "truncated xerial block length"));
        };
        let len = i32::from_be_bytes(*len);
        let block = usize::try_from(len)
            .ok()
            .and_then(|len| tail.get(..len))
            .ok_or_else(|| {
                bad(
                    SNAPPY,
                    format!(
                        "xerial block length {len} with {} bytes left in the stream",
                        tail.len()
                    ),
                )
            })?;
        out = raw_snappy(block, limit, out)?;
        rest = &tail[block.len()..];
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    fn payload() -> Vec<u8> {
        (0..50_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn lz4_frame(data: &[u8]) -> Vec<u8> {
        let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        e.write_all(data).unwrap();
        let (out, r) = e.finish();
        r.unwrap();
        out
    }

    fn xerial(blocks: &[&[u8]]) -> Vec<u8> {
        let mut out = XERIAL_MAGIC.to_vec();
        out.extend_from_slice(&1i32.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
        for b in blocks {
            let c = snap::raw::Encoder::new().compress_vec(b).unwrap();
            out.extend_from_slice(&(c.len() as i32).to_be_bytes());
            out.extend_from_slice(&c);
        }
        out
    }

    #[test]
    fn every_codec_roundtrips() {
        let data = payload();
        let cases = [
            (GZIP, gzip(&data)),
            (
                SNAPPY,
                snap::raw::Encoder::new().compress_vec(&data).unwrap(),
            ),
            (SNAPPY, xerial(&[&data[..70_000], &data[70_000..]])),
            (LZ4, lz4_frame(&data)),
            (ZSTD, zstd::encode_all(&data[..], 3).unwrap()),
        ];
        for (codec, c) in cases {
            assert!(c.len() < data.len() / 2, "{codec}: not compressed");
            assert_eq!(decompress(codec, &c).unwrap(), data, "codec {codec}");
        }
    }

    #[test]
    fn concatenated_gzip_members_and_zstd_frames() {
        let mut g = gzip(b"abc");
        g.extend(gzip(b"def"));
        assert_eq!(decompress(GZIP, &g).unwrap(), b"abcdef");
        let mut z = zstd::encode_all(&b"abc"[..], 1).unwrap();
        z.extend(zstd::encode_all(&b"def"[..], 1).unwrap());
        assert_eq!(decompress(ZSTD, &z).unwrap(), b"abcdef");
    }

    #[test]
    fn truncated_payloads_are_errors() {
        let data = payload();
        let cases = [
            (GZIP, gzip(&data)),
            (
                SNAPPY,
                snap::raw::Encoder::new().compress_vec(&data).unwrap(),
            ),
            (SNAPPY, xerial(&[&data[..70_000], &data[70_000..]])),
            (LZ4, lz4_frame(&data)),
            (ZSTD, zstd::encode_all(&data[..], 3).unwrap()),
        ];
        for (codec, c) in cases {
            for cut in [1, c.len() / 3, c.len() / 2, c.len() - 1] {
                let r = decompress(codec, &c[..cut]);
                assert!(
                    matches!(r, Err(CompressionError(_))),
                    "codec {codec} cut at {cut}/{}: {:?}",
                    c.len(),
                    r.map(|v| v.len())
                );
            }
        }
    }

    #[test]
    fn lz4_trailing_bytes_and_bad_header_checksum_are_errors() {
        let mut c = lz4_frame(b"hello hello hello");
        c.push(0);
        assert!(decompress(LZ4, &c).is_err());
        let mut c = lz4_frame(b"hello hello hello");
        // Byte 6 is the frame descriptor's header checksum (magic 4, FLG, BD, HC): KIP-57.
        c[6] ^= 0x55;
        let e = crate::batch::BatchError::from(decompress(LZ4, &c).unwrap_err());
        assert!(
            e.to_string().starts_with("corrupt batch: lz4 payload"),
            "{e}"
        );
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        // Past the hard cap: lz4 cannot beat about 255:1, so only the cap stops it.
        let zeros = vec![0u8; MAX_DECOMPRESSED + 1];
        let bombs = [
            (GZIP, gzip(&zeros)),
            (LZ4, lz4_frame(&zeros)),
            (ZSTD, zstd::encode_all(&zeros[..], 3).unwrap()),
        ];
        // (snappy cannot beat about 21:1, far below the ratio; its declared lengths are checked.)
        for (codec, c) in bombs {
            let limit = decompressed_limit(c.len());
            assert!(limit < zeros.len(), "codec {codec}: {} bytes", c.len());
            let e = decompress(codec, &c).unwrap_err();
            assert!(
                e.to_string()
                    .contains(&format!("inflate past {limit} bytes")),
                "{e}"
            );
        }
        // zstd beats the ratio: a 16 MiB + 1 bomb of a few hundred bytes stops at the floor.
        let c = zstd::encode_all(&zeros[..=MIN_DECOMPRESSED_ALLOWANCE], 3).unwrap();
        assert!(c.len() < 4096, "{}", c.len());
        let e = decompress(ZSTD, &c).unwrap_err();
        assert!(e.to_string().contains("inflate past 16777216 bytes"), "{e}");
        // A raw snappy block that declares 4 GiB is refused before any allocation.
        let mut lie = Vec::new();
        let mut v: u64 = u32::MAX as u64;
        while v >= 0x80 {
            lie.push((v as u8) | 0x80);
            v >>= 7;
        }
        lie.push(v as u8);
        lie.extend_from_slice(&[0; 8]);
        let e = decompress(SNAPPY, &lie).unwrap_err();
        assert!(e.to_string().contains("inflate past"), "{e}");
        // Exactly the allowance is still fine.
        let ok = zstd::encode_all(&zeros[..MIN_DECOMPRESSED_ALLOWANCE], 3).unwrap();
        assert_eq!(
            decompress(ZSTD, &ok).unwrap().len(),
            MIN_DECOMPRESSED_ALLOWANCE
        );
    }

    #[test]
    fn limit_scales_with_size_between_floor_and_cap() {
        assert_eq!(decompressed_limit(0), MIN_DECOMPRESSED_ALLOWANCE);
        assert_eq!(decompressed_limit(32 << 10), 32 << 20);
        assert_eq!(decompressed_limit(usize::MAX), MAX_DECOMPRESSED);
    }

    #[test]
    fn unknown_codec_and_garbage_are_errors() {
        assert!(decompress(5, b"x").is_err());
        for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
            assert!(decompress(codec, b"\x00\x01garbage garbage").is_err());
            // Empty input: an error or nothing, never a panic.
            assert!(decompress(codec, b"").map_or(true, |v| v.is_empty()));
        }
    }
}
