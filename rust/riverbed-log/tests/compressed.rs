//! Compressed batches as Kafka clients write them (gzip, snappy raw and xerial-framed, lz4 frame,
//! zstd), encoded by kafka-python (`tests/fixtures/compressed/make_fixtures.py`), decode to the
//! records that were encoded, through `batch::records`, `Partition::read`, the consumer and the
//! Arrow sink; damaged, truncated and inflating payloads are errors, never panics.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use arrow_array::Array;
use common::*;
use riverbed_log::arrow::ArrowRecordSink;
use riverbed_log::batch::{self, BatchError};
use riverbed_log::{Cleanup, Consumer, LogError, StartSpec, TopicOptions};

const FIXTURES: [(&str, u8); 5] = [
    ("gzip", 1),
    ("snappy_xerial", 2),
    ("snappy_raw", 2),
    ("lz4", 3),
    ("zstd", 4),
];
const RECORDS: usize = 240;
const BASE_OFFSET: i64 = 1_000;
/// Header field positions (see `batch.rs`).
const ATTRIBUTES_AT: usize = 21;
const CRC_AT: usize = 17;
const HEADER_LEN: usize = 61;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compressed")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir().join(format!("{name}.bin"))).expect("fixture batch")
}

fn unhex(v: &serde_json::Value) -> Option<Vec<u8>> {
    let s = v.as_str()?;
    Some(
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect(),
    )
}

/// The records kafka-python encoded, with offsets starting at `base`.
fn expected(base: i64) -> Vec<Rec> {
    let text = std::fs::read_to_string(fixture_dir().join("records.json")).expect("records.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|r| Rec {
            partition: 0,
            offset: r["offset"].as_i64().expect("offset") - BASE_OFFSET + base,
            timestamp: r["timestamp"].as_i64().expect("timestamp"),
            key: unhex(&r["key"]),
            value: unhex(&r["value"]),
            headers: r["headers"]
                .as_array()
                .expect("headers")
                .iter()
                .map(|h| (unhex(&h[0]).expect("header key"), unhex(&h[1])))
                .collect(),
        })
        .collect()
}

fn decode(b: &[u8]) -> Result<Vec<Rec>, BatchError> {
    let recs = batch::records(b)?;
    let mut out = Vec::new();
    for r in &recs {
        out.push(Rec::from_view(0, &r?));
    }
    Ok(out)
}

/// Rewrites the batch's length and CRC after its payload changed (so only the payload is bad).
fn reseal(mut b: Vec<u8>) -> Vec<u8> {
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
    b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

fn set_base_offset(b: &mut [u8], base: i64) {
    b[0..8].copy_from_slice(&base.to_be_bytes());
}

#[test]
fn kafka_python_batches_decode_to_the_encoded_records() -> TestResult {
    let want = expected(BASE_OFFSET);
    assert_eq!(want.len(), RECORDS);
    for (name, codec) in FIXTURES {
        let b = fixture(name);
        let h = batch::parse_header(&b)?;
        assert_eq!(h.compression(), codec, "{name}");
        assert_eq!(h.total_len(), b.len(), "{name}");
        assert!(
            batch::crc_ok(&b),
            "{name}: the CRC covers the compressed bytes"
        );
        assert_eq!(h.record_count as usize, RECORDS, "{name}");
        let got = decode(&b)?;
        assert_eq!(got, want, "{name}");
    }
    // Not vacuous: the fixtures hold nulls, empty keys, headers and out-of-order timestamps.
    assert!(want.iter().any(|r| r.key.is_none()) && want.iter().any(|r| r.value.is_none()));
    assert!(want.iter().any(|r| r.key.as_deref() == Some(b"")));
    assert!(want.iter().any(|r| r.headers.iter().any(|h| h.1.is_none())));
    assert!(want.windows(2).any(|w| w[1].timestamp < w[0].timestamp));
    Ok(())
}

#[test]
fn flipped_payload_bytes_never_panic_and_gzip_catches_them() -> TestResult {
    for (name, _) in FIXTURES {
        let b = fixture(name);
        let mut caught = 0usize;
        let positions = (HEADER_LEN..b.len()).step_by(7).collect::<Vec<_>>();
        for &at in &positions {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = b.clone();
                bad[at] ^= flip;
                assert!(!batch::crc_ok(&bad), "{name}: CRC misses a flip at {at}");
                match decode(&bad) {
                    // The gzip header's mtime/xfl/os bytes (4..10) are not checked by anyone.
                    Err(BatchError::Corrupt(_)) if name != "gzip" || at >= HEADER_LEN + 10 => {
                        caught += 1;
                    }
                    Err(BatchError::Corrupt(_)) => {}
                    Err(e) => panic!("{name}: unexpected {e:?}"),
                    Ok(got) => assert_eq!(got.len(), RECORDS, "{name}"),
                }
            }
        }
        if name == "gzip" {
            // gzip ends with a CRC-32 of the data: every flip is caught by the codec itself.
            let checked = positions
                .iter()
                .filter(|&&at| at >= HEADER_LEN + 10)
                .count();
            assert_eq!(caught, checked * 3, "{name}");
        }
        assert!(caught > 0, "{name}: no flip was caught");
    }
    Ok(())
}

#[test]
fn truncated_payloads_are_corrupt_batches() -> TestResult {
    for (name, _) in FIXTURES {
        let b = fixture(name);
        for cut in HEADER_LEN..b.len() {
            // A batch that is whole and sealed, but holds a truncated compressed payload.
            let bad = reseal(b[..cut].to_vec());
            assert!(batch::crc_ok(&bad));
            assert!(
                matches!(decode(&bad), Err(BatchError::Corrupt(_))),
                "{name} cut at {cut}: accepted"
            );
        }
    }
    Ok(())
}

/// A batch whose records section is `payload`, declared as `codec` with `count` records.
fn batch_with_payload(codec: u8, count: i32, payload: &[u8]) -> Vec<u8> {
    let mut b = fixture("gzip")[..HEADER_LEN].to_vec();
    b[ATTRIBUTES_AT + 1] = codec;
    b[23..27].copy_from_slice(&(count - 1).to_be_bytes()); // lastOffsetDelta
    b[57..61].copy_from_slice(&count.to_be_bytes());
    b.extend_from_slice(payload);
    reseal(b)
}

fn zstd_zeros(n: usize) -> Vec<u8> {
    zstd::encode_all(&vec![0u8; n][..], 3).expect("zstd")
}

#[test]
fn a_decompression_bomb_is_a_corrupt_batch() -> TestResult {
    let bomb = batch_with_payload(4, 1, &zstd_zeros(64 << 20));
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    let e = batch::records(&bomb).expect_err("a bomb must not decode");
    assert!(
        e.to_string()
            .contains("inflate past 16777216 bytes (the limit is 1024x"),
        "{e}"
    );
    Ok(())
}

/// A log "t" whose partition 0 holds 3 records written by riverbed, then the batches `extra`
/// (stored as a broker stores a client's batch: as sent). Returns the segment path.
fn log_with_batches(dir: &Path, extra: &[Vec<u8>]) -> Result<PathBuf, Box<dyn std::error::Error>> {
    log_with_batches_opts(dir, &TopicOptions::default(), extra)
}

fn log_with_batches_opts(
    dir: &Path,
    options: &TopicOptions,
    extra: &[Vec<u8>],
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let log = open(dir);
    let topic = log.topic("t", options)?;
    for i in 0..3 {
        topic.produce(
            Some(b"k"),
            Some(format!("v{i}").as_bytes()),
            5 + i,
            &[],
            Some(0),
        )?;
    }
    let pdir = partition_dir(&log, &topic, 0);
    log.close()?;
    let seg = segment_path(&pdir, 0, "log");
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg)?;
    for b in extra {
        f.write_all(b)?;
    }
    Ok(seg)
}

#[test]
fn partition_reads_consumers_and_arrow_see_the_encoded_records() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut want = Vec::new();
    let mut extra = Vec::new();
    let mut base = 3;
    for (name, _) in FIXTURES {
        let mut b = fixture(name);
        set_base_offset(&mut b, base); // the broker assigns offsets; the CRC does not cover them
        extra.push(b);
        want.extend(expected(base));
        base += RECORDS as i64;
    }
    log_with_batches(dir.path(), &extra)?;

    let log = open(dir.path());
    assert!(log.open_report().is_empty(), "{:?}", log.open_report());
    let topic = log.get_topic("t")?;
    let part = topic.partition(0)?;
    assert_eq!(part.offsets(), (0, base));
    let all = read_all(part)?;
    assert_eq!(all.len(), 3 + want.len());
    assert_eq!(all[2].value.as_deref(), Some(&b"v2"[..]));
    assert_eq!(all[3..], want[..]);

    // A read starting inside a compressed batch skips its earlier records.
    let mid = read_from(part, 3 + RECORDS as i64 + 17)?;
    assert_eq!(mid[..], want[RECORDS + 17..]);
    // A time lookup finds a record inside a compressed batch.
    let t = want[RECORDS + 30].timestamp;
    let found = part.offset_for_time(t)?.expect("an offset");
    let first = all.iter().find(|r| r.timestamp >= t).expect("a record");
    assert_eq!(found, first.offset);

    // The consumer and its Arrow sink (what pipelines read).
    let c = Consumer::new(&log, topic.clone(), None, StartSpec::Earliest)?;
    let mut sink = ArrowRecordSink::new(topic.name.clone(), 64);
    let mut rows = Vec::new();
    loop {
        c.poll(500, std::time::Duration::ZERO, &mut sink)?;
        let b = sink.finish()?;
        if b.num_rows() == 0 {
            break;
        }
        let offs = b.column(2).as_primitive::<Int64Type>();
        let ts = b.column(3).as_primitive::<TimestampMillisecondType>();
        let keys = b.column(4).as_binary::<i32>();
        let values = b.column(5).as_binary::<i32>();
        let headers = b.column(6).as_list::<i32>();
        for i in 0..b.num_rows() {
            rows.push((
                offs.value(i),
                ts.value(i),
                keys.is_valid(i).then(|| keys.value(i).to_vec()),
                values.is_valid(i).then(|| values.value(i).to_vec()),
                headers.value(i).len(),
            ));
        }
    }
    let expect_rows: Vec<_> = all
        .iter()
        .map(|r| {
            (
                r.offset,
                r.timestamp,
                r.key.clone(),
                r.value.clone(),
                r.headers.len(),
            )
        })
        .collect();
    assert_eq!(rows, expect_rows);
    log.close()?;
    Ok(())
}

#[test]
fn a_bomb_in_the_log_is_an_error_naming_its_position() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut bomb = batch_with_payload(4, 1, &zstd_zeros(64 << 20));
    set_base_offset(&mut bomb, 3);
    let bomb_len = bomb.len() as u64;
    let seg = log_with_batches(dir.path(), &[bomb])?;
    let position = std::fs::metadata(&seg)?.len() - bomb_len;
    let log = open(dir.path());
    let topic = log.get_topic("t")?;
    let part = topic.partition(0)?;
    assert_eq!(part.offsets(), (0, 4));
    // The records before it are served.
    let mut seen = Vec::new();
    let next = part.read(0, usize::MAX, usize::MAX, |r| {
        seen.push(r.offset);
        true
    })?;
    assert_eq!((seen, next), (vec![0, 1, 2], 3));
    // The bomb itself: an error naming the file, its position and why.
    let e = part
        .read(3, usize::MAX, usize::MAX, |_| true)
        .expect_err("the bomb must not be served");
    let msg = e.to_string();
    match &e {
        LogError::Gap(g) => {
            assert_eq!((g.from, g.position), (3, position), "{msg}");
            assert!(g.reason.contains("inflate past"), "{msg}");
        }
        LogError::Corrupt {
            path,
            position: p,
            reason,
        } => {
            assert_eq!((path, *p), (&seg, position), "{msg}");
            assert!(reason.contains("inflate past"), "{msg}");
        }
        other => panic!("unexpected {other:?}"),
    }
    log.close()?;
    Ok(())
}

#[test]
fn compaction_reads_compressed_batches_and_keeps_the_latest_per_key() -> TestResult {
    let dir = tempfile::tempdir()?;
    let options = TopicOptions {
        segment_bytes: Some(1024),
        cleanup: Some(Cleanup::Compact),
        delete_retention_ms: Some(60_000),
        ..Default::default()
    };
    let mut extra = Vec::new();
    let mut base = 3;
    for (name, _) in FIXTURES {
        let mut b = fixture(name);
        set_base_offset(&mut b, base);
        extra.push(b);
        base += RECORDS as i64;
    }
    let seg = log_with_batches_opts(dir.path(), &options, &extra)?;
    let log = open(dir.path());
    let topic = log.get_topic("t")?;
    topic.produce(Some(b"k"), Some(b"after"), now_ms(), &[], Some(0))?;
    let part = topic.partition(0)?;
    let pdir = seg.parent().ok_or("no dir")?.to_path_buf();
    let active = *segment_bases(&pdir).last().ok_or("no segment")?;
    assert_eq!(
        active, base,
        "the compressed batches are in a sealed segment"
    );
    let before = read_all(part)?;
    assert_eq!(before.len() as i64, base + 1);

    log.cleanup()?;
    let after = read_all(part)?;
    // The model: in the sealed part, the latest record of each (non-null) key, unless it is a
    // tombstone older than delete_retention_ms (the fixtures' are: 2023).
    let mut latest = std::collections::HashMap::new();
    for r in before.iter().filter(|r| r.offset < active) {
        if let Some(k) = &r.key {
            latest.insert(k.clone(), r.offset);
        }
    }
    let want: Vec<Rec> = before
        .iter()
        .filter(|r| {
            r.offset >= active
                || (r.key.as_ref().and_then(|k| latest.get(k)) == Some(&r.offset)
                    && r.value.is_some())
        })
        .cloned()
        .collect();
    assert!(
        want.len() < before.len() / 4,
        "{} of {}",
        want.len(),
        before.len()
    );
    assert!(want.iter().any(|r| r.headers.len() == 3));
    assert_eq!(after, want);
    log.close()?;
    Ok(())
}
