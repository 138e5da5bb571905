//! Fuzzing the request frame decoder (kafka-protocol's `RequestHeader` + `RequestKind::decode`,
//! for every API key and version) the way a connection uses it: arbitrary bytes, and valid
//! frames of every key/version with bytes changed, truncated or appended. Decoding must return
//! an error or a request, never panic and never abort the process.
//!
//! kafka-protocol 0.18.0 sizes a `Vec` from an array length read off the wire before reading
//! any element: nearly any garbage frame asks for gigabytes. With the system allocator that is
//! an abort (see `tests/request_alloc.rs`); with mimalloc, the allocator of the Python module
//! that hosts the broker, such a reservation is virtual memory (`MAP_NORESERVE` when the kernel
//! overcommits) and the decoder goes on to fail cleanly. This binary uses mimalloc, as the
//! broker's host process does, so the fuzzing gets past that and looks for everything else.
//!
//! An abort cannot be caught in-process, so the cases run in child processes of this test
//! binary; the parent tells panics from aborts, saves the input that killed a child and reports
//! both.
//!
//! `RIVERBED_FUZZ_SECONDS=60 cargo test -p riverbed-server --test fuzz_requests -- --ignored`

use std::io::Write;
use std::path::Path;
use std::process::Command;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Cases per child process.
const CASES_PER_CHILD: u32 = 2_000;

/// What a connection does with one frame (the bytes after the size prefix): read the API key
/// and version, refuse unknown keys and versions, decode the header, then the body.
fn decode_frame(frame: &[u8]) -> Result<(RequestHeader, RequestKind), String> {
    let (Some(k), Some(v)) = (frame.get(0..2), frame.get(2..4)) else {
        return Err("short frame".into());
    };
    let key = i16::from_be_bytes([k[0], k[1]]);
    let version = i16::from_be_bytes([v[0], v[1]]);
    let api = ApiKey::try_from(key).map_err(|()| format!("unknown API key {key}"))?;
    let range = api.valid_versions();
    if version < range.min || version > range.max {
        return Err(format!("unsupported version {version} of {api:?}"));
    }
    let mut buf = Bytes::copy_from_slice(frame);
    let header = RequestHeader::decode(&mut buf, api.request_header_version(version))
        .map_err(|e| e.to_string())?;
    let body = RequestKind::decode(api, &mut buf, version).map_err(|e| e.to_string())?;
    Ok((header, body))
}

/// Every (API key, version) with the encoded request header that starts its frames.
fn keys_and_headers() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for api in ApiKey::iter() {
        let r = api.valid_versions();
        for version in r.min..=r.max {
            let header = RequestHeader::default()
                .with_request_api_key(api as i16)
                .with_request_api_version(version)
                .with_correlation_id(7)
                .with_client_id(Some(StrBytes::from_static_str("fuzz")));
            let mut buf = BytesMut::new();
            if header
                .encode(&mut buf, api.request_header_version(version))
                .is_ok()
            {
                out.push(buf.to_vec());
            }
        }
    }
    out
}

/// A valid frame per key/version where one is found: the header, then the body that decodes
/// from a run of zeros (empty arrays, null strings) or of ones (empty compact arrays and
/// strings), keeping what the decoder consumed.
fn seeds() -> Vec<Vec<u8>> {
    keys_and_headers()
        .into_iter()
        .filter_map(|header| {
            let api = ApiKey::try_from(i16::from_be_bytes([header[0], header[1]])).ok()?;
            let version = i16::from_be_bytes([header[2], header[3]]);
            [0u8, 1].into_iter().find_map(|fill| {
                let mut body = Bytes::from(vec![fill; 256]);
                RequestKind::decode(api, &mut body, version).ok()?;
                let mut frame = header.clone();
                frame.resize(header.len() + 256 - body.len(), fill);
                Some(frame)
            })
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Input {
    /// Arbitrary bytes.
    Raw(Vec<u8>),
    /// A valid header (any key/version), then arbitrary bytes.
    Body(usize, Vec<u8>),
    /// A valid frame with bytes changed, then cut, then bytes appended.
    Mutated {
        seed: usize,
        edits: Vec<(usize, u8)>,
        cut: Option<usize>,
        tail: Vec<u8>,
    },
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512).prop_map(Input::Raw),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 0..512)
        )
            .prop_map(|(k, b)| Input::Body(k, b)),
        (
            any::<usize>(),
            proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            proptest::option::of(any::<usize>()),
            proptest::collection::vec(any::<u8>(), 0..16),
        )
            .prop_map(|(seed, edits, cut, tail)| Input::Mutated {
                seed,
                edits,
                cut,
                tail
            }),
    ]
}

fn frame_of(input: &Input, headers: &[Vec<u8>], seeds: &[Vec<u8>]) -> Vec<u8> {
    match input {
        Input::Raw(b) => b.clone(),
        Input::Body(k, b) => {
            let mut f = headers[k % headers.len()].clone();
            f.extend_from_slice(b);
            f
        }
        Input::Mutated {
            seed,
            edits,
            cut,
            tail,
        } => {
            let mut f = seeds[seed % seeds.len()].clone();
            for &(at, b) in edits {
                let n = f.len();
                f[at % n] ^= b | 1;
            }
            if let Some(c) = cut {
                f.truncate(c % (f.len() + 1));
            }
            f.extend_from_slice(tail);
            f
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn seeds_cover_every_key_and_decode() {
    let headers = keys_and_headers();
    let seeds = seeds();
    // kafka-protocol 0.18 knows ~90 APIs with several versions each (290 in all).
    assert!(headers.len() > 250, "{} headers", headers.len());
    eprintln!("{} seeds for {} key/versions", seeds.len(), headers.len());
    assert!(
        seeds.len() * 10 > headers.len() * 8,
        "{} of {}",
        seeds.len(),
        headers.len()
    );
    for s in &seeds {
        let (h, _) = decode_frame(s).expect("a seed decodes");
        assert_eq!(h.correlation_id, 7);
        assert_eq!(i16::from_be_bytes([s[0], s[1]]), h.request_api_key);
    }
    assert!(
        decode_frame(&[0, 3, 0x7f, 0]).is_err(),
        "version out of range"
    );
    assert!(decode_frame(&[0x7f, 0, 0, 0]).is_err(), "unknown key");
}

/// The frame that aborts under the system allocator (`tests/request_alloc.rs`) is a decode
/// error under mimalloc: its 150 GB reservation is only address space.
#[test]
fn an_oversized_array_length_is_a_decode_error_under_mimalloc() {
    let frame = [0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff];
    let e = decode_frame(&frame).expect_err("no topics follow");
    assert!(!e.is_empty());
}

/// The child: runs cases from a fixed seed, saving each frame to `RIVERBED_FUZZ_LAST` before
/// decoding it (so the parent can name the input of an abort). Does nothing unless the parent
/// started it.
#[test]
#[ignore = "helper of fuzz_request_decoding_for_a_while (runs only in its child processes)"]
fn fuzz_child() {
    let (Ok(seed), Ok(last)) = (
        std::env::var("RIVERBED_FUZZ_CHILD_SEED"),
        std::env::var("RIVERBED_FUZZ_LAST"),
    ) else {
        return;
    };
    let seed: u64 = seed.parse().expect("seed");
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let headers = keys_and_headers();
    let seeds = seeds();
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: CASES_PER_CHILD,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &key),
    );
    let result = runner.run(&input(), |i| {
        let frame = frame_of(&i, &headers, &seeds);
        std::fs::write(&last, hex(&frame)).expect("save the input");
        let _ = decode_frame(&frame);
        Ok(())
    });
    if let Err(e) = result {
        panic!("decoding panicked: {e}");
    }
}

/// CI's long run: `cargo test -p riverbed-server --test fuzz_requests -- --ignored`
/// (`RIVERBED_FUZZ_SECONDS`, default 60).
#[test]
#[ignore = "long: run with --ignored (RIVERBED_FUZZ_SECONDS, default 60)"]
fn fuzz_request_decoding_for_a_while() {
    let secs: u64 = std::env::var("RIVERBED_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let dir = tempfile::tempdir().expect("tempdir");
    let last = dir.path().join("last");
    let exe = std::env::current_exe().expect("test binary");
    let (mut cases, mut panics, mut aborts) = (0u64, Vec::new(), Vec::new());
    let mut seed = 0u64;
    while std::time::Instant::now() < deadline {
        seed += 1;
        let _ = std::fs::remove_file(&last);
        let out = Command::new(&exe)
            .args([
                "fuzz_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("RIVERBED_FUZZ_CHILD_SEED", seed.to_string())
            .env("RIVERBED_FUZZ_LAST", &last)
            .output()
            .expect("run a child");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let input = read_last(&last);
        let why = stderr
            .lines()
            .find(|l| l.contains("panicked") || l.contains("memory allocation of"))
            .unwrap_or("")
            .to_string();
        if out.status.success() {
            cases += u64::from(CASES_PER_CHILD);
        } else if stderr.contains("decoding panicked") {
            // proptest's message: the panic and the minimal input it shrank to.
            let at = stderr.find("decoding panicked").unwrap_or(0);
            let msg: String = stderr[at..].chars().take(600).collect();
            panics.push(format!("seed {seed}: {why}\n    {msg}"));
        } else {
            aborts.push(format!(
                "seed {seed}, frame {}{} ({} bytes): {why} ({:?})",
                &input[..input.len().min(96)],
                if input.len() > 96 { "..." } else { "" },
                input.len() / 2,
                out.status
            ));
        }
    }
    eprintln!(
        "{cases} cases in {secs} s; {} panics, {} aborts",
        panics.len(),
        aborts.len()
    );
    let mut report = std::io::stderr();
    for p in panics.iter().chain(&aborts).take(10) {
        let _ = writeln!(report, "  {p}");
    }
    assert!(
        panics.is_empty() && aborts.is_empty(),
        "request decoding panicked or aborted (see above)"
    );
}

fn read_last(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|_| "(none)".into())
}
