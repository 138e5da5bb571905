//! Fuzzing with proptest: the record-batch decoder (compressed batches too) and segment recovery never panic on arbitrary
//! bytes, and recovery never loses a valid batch that follows damage.
//!
//! The default run is short; `RIVERBED_FUZZ_CASES=100000 cargo test -p riverbed-log --test fuzz`
//! runs for minutes (CI gives each target >= 60 s).

mod common;

use common::*;
use proptest::prelude::*;
use riverbed_log::batch::{self, BatchWriter};
use riverbed_log::{LogError, TopicOptions};

fn cases(default: u32) -> u32 {
    std::env::var("RIVERBED_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Valid batches of one record each, offsets `0..n`.
fn valid_batches(n: usize, value_len: usize) -> (Vec<u8>, Vec<usize>) {
    let mut buf = Vec::new();
    let mut starts = Vec::new();
    for i in 0..n {
        starts.push(buf.len());
        let value = vec![b'a' + (i % 26) as u8; value_len + i % 7];
        let mut w = BatchWriter::new(&mut buf, i as i64, 1_000 + i as i64);
        w.push(i as i64, 1_000 + i as i64, Some(b"k"), Some(&value), &[]);
        w.finish();
    }
    (buf, starts)
}

fn decoder_case(bytes: Vec<u8>, edits: Vec<(usize, u8)>) -> Result<(), TestCaseError> {
    let _ = batch::parse_header(&bytes);
    let _ = batch::crc_ok(&bytes);
    if let Ok(it) = batch::records(&bytes) {
        for r in it.iter().take(10_000).flatten() {
            let _ = r.headers().count();
        }
    }
    let (mut valid, _) = valid_batches(3, 20);
    for (at, b) in edits {
        let n = valid.len();
        valid[at % n] = b;
    }
    if let Ok(it) = batch::records(&valid) {
        for r in it.iter().take(10_000) {
            let _ = r.map(|r| r.headers().count());
        }
    }
    Ok(())
}

/// `data` compressed as a Kafka client would with encoder `kind`: 0 gzip, 1 raw snappy,
/// 2 xerial-framed snappy (small blocks), 3 lz4 frame, 4 zstd. Returns (codec, payload).
fn compress(kind: u8, data: &[u8]) -> (u8, Vec<u8>) {
    use std::io::Write;
    match kind % 5 {
        0 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).expect("encoder");
            (1, e.finish().expect("encoder"))
        }
        1 => (
            2,
            snap::raw::Encoder::new()
                .compress_vec(data)
                .expect("encoder"),
        ),
        2 => {
            let mut out = vec![
                0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
            ];
            for block in data.chunks(100) {
                let c = snap::raw::Encoder::new()
                    .compress_vec(block)
                    .expect("encoder");
                out.extend_from_slice(&(c.len() as i32).to_be_bytes());
                out.extend_from_slice(&c);
            }
            (2, out)
        }
        3 => {
            let mut e = lz4::EncoderBuilder::new()
                .build(Vec::new())
                .expect("encoder");
            e.write_all(data).expect("encoder");
            let (out, r) = e.finish();
            r.expect("encoder");
            (3, out)
        }
        _ => (4, zstd::encode_all(data, 1).expect("encoder")),
    }
}

/// A batch whose records section is `payload` under `codec`, with a correct length and CRC (so
/// the damage is left for the decompressor and the record decoder to find).
fn sealed(header: &[u8], codec: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = header[..batch::HEADER_LEN].to_vec();
    b[22] = codec;
    b.extend_from_slice(payload);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Compressed batches, whole (which must decode to what was written), with bytes of the
/// compressed payload changed, truncated, or replaced by arbitrary bytes: never a panic.
#[allow(clippy::needless_pass_by_value)]
fn compressed_case(
    kind: u8,
    values: Vec<Vec<u8>>,
    edits: Vec<(usize, u8)>,
    cut: Option<usize>,
    garbage: Vec<u8>,
) -> Result<(), TestCaseError> {
    let mut plain = Vec::new();
    let mut w = BatchWriter::new(&mut plain, 7, 1_000);
    for (i, v) in values.iter().enumerate() {
        let h: &[batch::RecordHeader<'_>] = if i % 3 == 0 {
            &[(b"h", Some(b"x"))]
        } else {
            &[]
        };
        w.push(7 + i as i64, 1_000 + i as i64, Some(b"k"), Some(v), h);
    }
    w.finish();
    let (codec, payload) = compress(kind, &plain[batch::HEADER_LEN..]);
    let whole = sealed(&plain, codec, &payload);
    prop_assert!(batch::crc_ok(&whole));
    let recs = batch::records(&whole).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let got: Vec<Vec<u8>> = recs
        .iter()
        .map(|r| r.map(|r| r.value.unwrap_or_default().to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&got, &values);

    let mut damaged = payload.clone();
    for &(at, b) in &edits {
        if !damaged.is_empty() {
            let n = damaged.len();
            damaged[at % n] ^= b | 1;
        }
    }
    if let Some(c) = cut {
        damaged.truncate(c % (damaged.len() + 1));
    }
    for p in [&damaged, &garbage] {
        let b = sealed(&plain, codec, p);
        if let Ok(recs) = batch::records(&b) {
            for r in recs.iter().take(10_000).flatten() {
                let _ = r.headers().count();
            }
        }
    }
    if cut.is_some_and(|c| c % (payload.len() + 1) < payload.len()) && edits.is_empty() {
        // A truncated payload never decodes to the whole batch.
        let b = sealed(&plain, codec, &damaged);
        let all_ok = batch::records(&b).is_ok_and(|r| r.iter().all(|r| r.is_ok()));
        prop_assert!(!all_ok, "a truncated {} payload decoded", codec);
    }
    Ok(())
}

#[allow(clippy::needless_pass_by_value)]
fn recovery_case(
    n: usize,
    edits: Vec<(usize, u8)>,
    tail: Vec<u8>,
    garbage_only: bool,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let (mut bytes, starts) = valid_batches(n, 30);
    let pristine = bytes.clone();
    if garbage_only {
        bytes = tail.clone();
    } else {
        for &(at, b) in &edits {
            let len = bytes.len();
            bytes[at % len] ^= b | 1;
        }
        bytes.extend_from_slice(&tail);
    }
    let pdir = dir.path().join("t").join("0");
    {
        let log = open(dir.path());
        log.topic("t", &TopicOptions::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        log.close()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    std::fs::write(segment_path(&pdir, 0, "log"), &bytes)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let log = open(dir.path());
    let topic = log
        .get_topic("t")
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let part = topic
        .partition(0)
        .map_err(|e| TestCaseError::fail(e.to_string()))?
        .clone();
    let (got, gaps) = read_skipping_gaps(&part).map_err(|e| TestCaseError::fail(e.to_string()))?;
    // Kafka's format leaves a batch's base offset field outside the CRC: damage there can
    // make a valid-looking batch claim other offsets, which no reader can tell. The value
    // checks below hold when no base offset field was hit; everything else (no panic, no
    // offset given out twice, a stable second open) holds for any damage.
    let base_field_hit = edits.iter().any(|&(at, _)| {
        let at = at % pristine.len();
        starts.iter().any(|&s0| (s0..s0 + 8).contains(&at))
    });
    if !garbage_only && !base_field_hit {
        // a batch whose bytes are unchanged and that starts where it did is kept
        let touched = |i: usize| {
            let end = starts.get(i + 1).copied().unwrap_or(pristine.len());
            bytes.get(starts[i]..end) != Some(&pristine[starts[i]..end])
        };
        let now = std::fs::read(segment_path(&pdir, 0, "log"))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for i in 0..n {
            let kept = got.iter().any(|r| r.offset == i as i64);
            if !touched(i) && !kept {
                // Only when damage around it makes its offsets untrustworthy (a base offset
                // field is not covered by the CRC): then it is in a gap, and its bytes stay.
                let end = starts.get(i + 1).copied().unwrap_or(pristine.len());
                prop_assert!(
                    now.windows(end - starts[i])
                        .any(|w| w == &pristine[starts[i]..end]),
                    "untouched batch {} lost and deleted (gaps {:?})",
                    i,
                    gaps
                );
            }
            if !kept {
                prop_assert!(
                    gaps.iter().any(|&(a, b)| a <= i as i64 && (i as i64) < b)
                        || i as i64 >= part.offsets().1,
                    "offset {} neither read nor in a gap",
                    i
                );
            }
        }
        for r in &got {
            let i = r.offset as usize;
            prop_assert!(i < n);
            prop_assert_eq!(r.value.as_ref().map(Vec::len), Some(30 + i % 7));
        }
    }
    let max_seen = got
        .iter()
        .map(|r| r.offset + 1)
        .chain(gaps.iter().map(|g| g.1))
        .max()
        .unwrap_or(0);
    let (_, off) = topic
        .produce(Some(b"k"), Some(b"after"), 5, &[], None)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(
        off >= max_seen,
        "offset {} given out again (seen up to {})",
        off,
        max_seen
    );
    match part.read(off, 1, usize::MAX, |_| true) {
        Ok(_) | Err(LogError::Gap(_)) => {}
        Err(e) => prop_assert!(false, "{}", e),
    }
    log.close()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    // a second open agrees
    let log = open(dir.path());
    let part = log
        .get_topic("t")
        .map_err(|e| TestCaseError::fail(e.to_string()))?
        .partition(0)
        .map_err(|e| TestCaseError::fail(e.to_string()))?
        .clone();
    let (again, gaps2) =
        read_skipping_gaps(&part).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(again.len(), got.len() + 1);
    prop_assert_eq!(gaps2, gaps);
    log.close()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok(())
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)
}

fn decoder_input() -> impl Strategy<Value = (Vec<u8>, Vec<(usize, u8)>)> {
    (
        proptest::collection::vec(any::<u8>(), 0..2048),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
    )
}

#[allow(clippy::type_complexity)]
fn compressed_input(
) -> impl Strategy<Value = (u8, Vec<Vec<u8>>, Vec<(usize, u8)>, Option<usize>, Vec<u8>)> {
    (
        0u8..5,
        proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                (any::<u8>(), 0usize..600).prop_map(|(b, n)| vec![b; n]),
            ],
            1..20,
        ),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        proptest::option::of(any::<usize>()),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
}

fn recovery_input() -> impl Strategy<Value = (usize, Vec<(usize, u8)>, Vec<u8>, bool)> {
    (
        2usize..40,
        edits(),
        proptest::collection::vec(any::<u8>(), 0..200),
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    /// The decoder returns errors, never panics, on arbitrary bytes (and on valid batches with
    /// arbitrary bytes changed).
    #[test]
    fn decoder_never_panics((bytes, edits) in decoder_input()) {
        decoder_case(bytes, edits)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    /// Compressed batches (every codec): whole ones decode to what was written; damaged,
    /// truncated or arbitrary payloads are errors, never panics.
    #[test]
    fn compressed_decoder_never_panics((kind, values, edits, cut, garbage) in compressed_input()) {
        compressed_case(kind, values, edits, cut, garbage)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(48), ..ProptestConfig::default() })]

    /// Segment recovery on a segment with arbitrary damage: opening never panics, every batch
    /// the damage did not touch is still read back with its value (or, when a base offset field
    /// was hit, kept on disk in a gap), the damaged offsets are a reported gap, and the next
    /// append gets an offset no record had.
    #[test]
    fn recovery_keeps_every_untouched_batch((n, edits, tail, garbage_only) in recovery_input()) {
        recovery_case(n, edits, tail, garbage_only)?;
    }
}

/// Run `case` on fresh random inputs for `RIVERBED_FUZZ_SECONDS` (default 60).
fn for_a_while<S: Strategy>(strategy: S, case: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let secs: u64 = std::env::var("RIVERBED_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut runs = 0u64;
    while std::time::Instant::now() < deadline {
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        if let Err(e) = runner.run(&strategy, &case) {
            panic!("after {runs} rounds: {e}");
        }
        runs += 1;
    }
    eprintln!("{} cases in {secs} s", runs * 64);
}

/// CI's long run: `cargo test --release -p riverbed-log --test fuzz -- --ignored`.
#[test]
#[ignore = "long: run with --ignored (RIVERBED_FUZZ_SECONDS, default 60)"]
fn fuzz_decoder_for_a_while() {
    for_a_while(decoder_input(), |(b, e)| decoder_case(b, e));
}

#[test]
#[ignore = "long: run with --ignored (RIVERBED_FUZZ_SECONDS, default 60)"]
fn fuzz_compressed_decoder_for_a_while() {
    for_a_while(compressed_input(), |(k, v, e, c, g)| {
        compressed_case(k, v, e, c, g)
    });
}

#[test]
#[ignore = "long: run with --ignored (RIVERBED_FUZZ_SECONDS, default 60)"]
fn fuzz_recovery_for_a_while() {
    for_a_while(recovery_input(), |(n, e, t, g)| recovery_case(n, e, t, g));
}
