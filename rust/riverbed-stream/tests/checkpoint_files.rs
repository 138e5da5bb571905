//! Checkpoint files as an attacker or a damaged disk hands them over: only files signed by the
//! log's key are used; the decoder never panics on any bytes (proptest, cases from
//! `RIVERBED_FUZZ_CASES`, default 2000).

use std::fs;
use std::path::Path;

use hmac::Mac;
use proptest::prelude::*;
use riverbed_stream::checkpoint::{Checkpoint, CheckpointStore, OperatorState, SourceState};
use riverbed_stream::checkpoint_key::{key_path, trailer, Signer, TRAILER_LEN};

fn sample(seq: u64) -> Checkpoint {
    Checkpoint {
        version: riverbed_stream::checkpoint::VERSION,
        seq,
        plan: "read topic 'in'\n  stateful_map".into(),
        sources: vec![SourceState {
            positions: vec![10, 20],
            max_ts: vec![Some(7), None],
            committed: Vec::new(),
        }],
        sinks: vec![("out".into(), vec![5, 6])],
        operators: vec![
            OperatorState {
                name: "read#0".into(),
                signature: "read topic 'in'".into(),
                state: vec![],
            },
            OperatorState {
                name: "stateful_map#1".into(),
                signature: "stateful_map f".into(),
                state: (0..300u32).map(|i| (i * 31) as u8).collect(),
            },
        ],
    }
}

/// The checkpoint file `file` with its body replaced: a valid CRC, and signed with `key` when
/// given (as this log would), else unsigned.
fn reseal(file: &[u8], body: &[u8], key: Option<&[u8]>) -> Vec<u8> {
    let mut out = file[..8].to_vec();
    out.extend_from_slice(body);
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    if let Some(key) = key {
        let mut mac = <Signer as Mac>::new_from_slice(key).expect("checkpoint test");
        mac.update(&out);
        out.extend(trailer(mac));
    }
    out
}

fn body_of(file: &[u8]) -> &[u8] {
    &file[8..file.len() - 4 - TRAILER_LEN]
}

fn setup() -> (tempfile::TempDir, CheckpointStore, Vec<u8>, Vec<u8>) {
    let root = tempfile::tempdir().expect("checkpoint test");
    let dir = root.path().join("~checkpoints").join("job");
    let store = CheckpointStore::open(&dir).expect("checkpoint test");
    store.write(&sample(1)).expect("checkpoint test");
    let file = fs::read(dir.join(format!("{:020}.ckpt", 1))).expect("checkpoint test");
    let key = fs::read(key_path(&dir)).expect("checkpoint test");
    (root, store, file, key)
}

fn put(store: &CheckpointStore, seq: u64, bytes: &[u8]) {
    fs::write(store.dir().join(format!("{seq:020}.ckpt")), bytes).expect("checkpoint test");
}

#[test]
fn a_checkpoint_edited_with_a_valid_crc_is_refused_and_the_signed_one_before_it_used() {
    let (root, store, file, key) = setup();
    assert_eq!(key.len(), 32);
    assert!(key_path(store.dir()).starts_with(root.path().join("~checkpoints")));
    // The newest file says the output topic ended at 0 (it would truncate it) and the input
    // was read up to 10^12 (it would skip input): valid CRC, stale or no signature.
    let mut edited = sample(2);
    edited.sinks[0].1 = vec![0, 0];
    edited.sources[0].positions = vec![1_000_000_000_000, -5];
    let scratch = tempfile::tempdir().expect("checkpoint test");
    let other = CheckpointStore::open(scratch.path()).expect("checkpoint test"); // another log's key
    other.write(&edited).expect("checkpoint test");
    let foreign =
        fs::read(scratch.path().join(format!("{:020}.ckpt", 2))).expect("checkpoint test");
    for (why, bytes) in [
        ("signed by another log", foreign.clone()),
        ("unsigned", reseal(&foreign, body_of(&foreign), None)),
        ("stale signature", {
            let mut b = reseal(&foreign, body_of(&foreign), None);
            b.extend_from_slice(&file[file.len() - TRAILER_LEN..]);
            b
        }),
    ] {
        put(&store, 2, &bytes);
        let (got, notes) = store.latest().expect("checkpoint test");
        assert_eq!(got, Some(sample(1)), "{why}");
        assert!(notes[0].contains("refused"), "{why}: {notes:?}");
    }
    // signed with this log's key, the same bytes are accepted: the signature is what refused it
    put(&store, 2, &reseal(&foreign, body_of(&foreign), Some(&key)));
    assert_eq!(store.latest().expect("checkpoint test").0, Some(edited));
    // damage (not an edit) is still reported as damage
    let mut damaged = file.clone();
    damaged[20] ^= 1;
    put(&store, 3, &damaged);
    let (_, notes) = store.latest().expect("checkpoint test");
    assert!(notes[0].contains("checksum mismatch"), "{notes:?}");
}

fn fuzz_cases() -> u32 {
    std::env::var("RIVERBED_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
    /// An 8-byte little-endian length or count somewhere: the decoder's favourite trap.
    Length(usize, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Remove(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            prop_oneof![
                Just(u64::MAX),
                Just(1u64 << 40),
                Just(0u64),
                0u64..1024,
                any::<u64>()
            ]
        )
            .prop_map(|(i, n)| Mutation::Length(i, n)),
    ]
}

fn apply(body: &mut Vec<u8>, m: &Mutation) {
    let len = body.len().max(1);
    match m {
        Mutation::Flip(i, x) => {
            if !body.is_empty() {
                body[i % len] ^= x;
            }
        }
        Mutation::Insert(i, b) => {
            let at = i % (body.len() + 1);
            body.splice(at..at, b.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let at = i % len;
            let end = (at + n).min(body.len());
            body.drain(at.min(end)..end);
        }
        Mutation::Truncate(i) => body.truncate(i % len),
        Mutation::Length(i, n) => {
            if body.len() >= 8 {
                let at = i % (body.len() - 7);
                body[at..at + 8].copy_from_slice(&n.to_le_bytes());
            }
        }
    }
}

fn read_back(store: &CheckpointStore, dir: &Path, bytes: &[u8]) -> Option<Checkpoint> {
    // only this one file: the decoder's answer is not hidden behind a fallback
    for e in fs::read_dir(dir).expect("checkpoint test").flatten() {
        if e.file_name().to_string_lossy().ends_with(".ckpt") {
            fs::remove_file(e.path()).expect("checkpoint test");
        }
    }
    put(store, 7, bytes);
    let (got, notes) = store
        .latest()
        .expect("reading checkpoints never fails on their bytes");
    assert!(got.is_some() || notes.len() == 1, "{notes:?}");
    got
}

thread_local! {
    // One log per test thread: a fresh one per case would spend the run creating directories.
    static FIXTURE: (tempfile::TempDir, CheckpointStore, Vec<u8>, Vec<u8>) = setup();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// Mutations of a valid checkpoint, re-sealed with a valid CRC and signature so they reach the
    /// decoder: it returns a checkpoint or a reason, never panics or allocates without bound.
    #[test]
    fn the_checkpoint_decoder_survives_any_mutation(ms in prop::collection::vec(mutation(), 1..6)) {
        FIXTURE.with(|(_root, store, file, key)| {
        let mut body = body_of(file).to_vec();
        for m in &ms {
            apply(&mut body, m);
        }
        let signed = reseal(file, &body, Some(key));
        let dir = store.dir().to_path_buf();
        if let Some(c) = read_back(store, &dir, &signed) {
            // what decodes is what the bytes say: writing it again gives the same body
            store.write(&Checkpoint { seq: 8, ..c.clone() }).expect("checkpoint test");
            let again = fs::read(dir.join(format!("{:020}.ckpt", 8))).expect("checkpoint test");
            let mut want = c;
            want.seq = 8;
            prop_assert_eq!(store.latest().expect("checkpoint test").0, Some(want));
            prop_assert_eq!(again.len() >= 8 + 4 + TRAILER_LEN, true);
        }
        // the same mutation unsigned is refused (or reported damaged), never used
        let unsigned = reseal(file, &body, None);
        prop_assert_eq!(read_back(store, &dir, &unsigned), None);
        Ok(())
        })?;
    }

    /// Arbitrary bytes, with and without a valid signature.
    #[test]
    fn arbitrary_bytes_are_refused_or_decoded_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), sign in any::<bool>()) {
        FIXTURE.with(|(_root, store, _file, key)| {
        let dir = store.dir().to_path_buf();
        let mut b = bytes.clone();
        if sign {
            let mut mac = <Signer as Mac>::new_from_slice(key).expect("checkpoint test");
            mac.update(&b);
            b.extend(trailer(mac));
        }
        let got = read_back(store, &dir, &b);
        prop_assert!(sign || got.is_none());
        Ok(())
        })?;
    }
}

/// CI's long run (`make fuzz`): both properties above on fresh random inputs, round after
/// round, for `RIVERBED_FUZZ_SECONDS` (default 60).
#[test]
#[ignore = "long: run with --ignored (RIVERBED_FUZZ_SECONDS, default 60)"]
fn fuzz_checkpoint_decoder_for_a_while() {
    let secs: u64 = std::env::var("RIVERBED_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut rounds = 0u64;
    while std::time::Instant::now() < deadline {
        the_checkpoint_decoder_survives_any_mutation();
        arbitrary_bytes_are_refused_or_decoded_never_a_panic();
        rounds += 1;
    }
    eprintln!("{} cases in {secs} s", rounds * 2 * u64::from(fuzz_cases()));
}
