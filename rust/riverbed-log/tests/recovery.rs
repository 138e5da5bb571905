//! Crash recovery: a damaged tail of the last segment is truncated on open, reported, and the
//! log continues at the next offset after the valid prefix.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;
use riverbed_log::{Consumer, Damage, Log, LogError, StartSpec, TopicOptions};

const TS: i64 = 1_600_000_000_000;

/// (position, length, base offset, last offset) of every batch in a segment file.
fn batches_of(path: &Path) -> Vec<(u64, u64, i64, i64)> {
    let bytes = std::fs::read(path).expect("read segment");
    let mut pos = 0usize;
    let mut out = Vec::new();
    while pos < bytes.len() {
        let h = riverbed_log::batch::parse_header(&bytes[pos..]).expect("valid batch");
        out.push((
            pos as u64,
            h.total_len() as u64,
            h.base_offset,
            h.last_offset(),
        ));
        pos += h.total_len();
    }
    out
}

fn value_of(i: i64) -> Vec<u8> {
    format!("value-{i}-{}", "#".repeat((i % 23) as usize)).into_bytes()
}

/// A log with one topic "t" (1 partition) holding `n` records, one batch each; closed.
/// Returns the partition directory.
fn make_log(dir: &Path, n: i64, segment_bytes: u64) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let log = open(dir);
    let topic = log.topic(
        "t",
        &TopicOptions {
            segment_bytes: Some(segment_bytes),
            ..Default::default()
        },
    )?;
    for i in 0..n {
        let (_, off) = topic.produce(
            Some(format!("k{i}").as_bytes()),
            Some(&value_of(i)),
            TS + i,
            &[],
            None,
        )?;
        assert_eq!(off, i);
    }
    let pdir = partition_dir(&log, &topic, 0);
    log.close()?;
    Ok(pdir)
}

fn last_segment(pdir: &Path) -> PathBuf {
    let bases = segment_bases(pdir);
    segment_path(pdir, *bases.last().expect("a segment"), "log")
}

/// The records of "t"/0 are exactly offsets 0..n with the values `make_log` wrote.
fn assert_prefix(log: &Log, n: i64) -> TestResult {
    let topic = log.get_topic("t")?;
    let part = topic.partition(0)?;
    assert_eq!(part.offsets(), (0, n));
    let got = read_all(part)?;
    assert_eq!(got.len() as i64, n);
    for (i, r) in got.iter().enumerate() {
        let i = i as i64;
        assert_eq!(r.offset, i);
        assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
        assert_eq!(r.value.as_deref(), Some(value_of(i).as_slice()));
        assert_eq!(r.timestamp, TS + i);
    }
    Ok(())
}

/// After recovery: appends continue at `n`, read back, and a second reopen is clean.
fn continue_after_recovery(dir: &Path, log: Log, n: i64) -> TestResult {
    let topic = log.get_topic("t")?;
    for i in n..n + 3 {
        let (_, off) = topic.produce(
            Some(format!("k{i}").as_bytes()),
            Some(&value_of(i)),
            TS + i,
            &[],
            None,
        )?;
        assert_eq!(
            off, i,
            "the first append after recovery gets the next offset"
        );
    }
    assert_prefix(&log, n + 3)?;
    log.close()?;
    let log = open(dir);
    assert!(
        log.open_report().is_empty(),
        "second open: {:?}",
        log.open_report()
    );
    assert_prefix(&log, n + 3)?;
    log.close()?;
    Ok(())
}

fn single_damage(log: &Log) -> Damage {
    let report = log.open_report();
    assert_eq!(report.len(), 1, "{report:?}");
    report[0].clone()
}

fn append_bytes(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)?
        .write_all(bytes)
}

#[test]
fn short_garbage_after_the_last_batch() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pdir = make_log(dir.path(), 20, 1 << 20)?;
    let seg = last_segment(&pdir);
    let len = std::fs::metadata(&seg)?.len();
    append_bytes(&seg, &[0xAB; 10])?;

    let log = open(dir.path());
    let d = single_damage(&log);
    assert_eq!(d.path, seg);
    assert_eq!((d.valid_bytes, d.dropped_bytes), (len, 10));
    assert!(d.reason.contains("torn"), "reason: {}", d.reason);
    assert_eq!(
        std::fs::metadata(&seg)?.len(),
        len,
        "the garbage is truncated away"
    );
    assert_prefix(&log, 20)?;
    continue_after_recovery(dir.path(), log, 20)
}

#[test]
fn long_garbage_after_the_last_batch() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pdir = make_log(dir.path(), 20, 1 << 20)?;
    let seg = last_segment(&pdir);
    let len = std::fs::metadata(&seg)?.len();
    // pseudo-random bytes, and a plausible header declaring a batch far longer than the file
    let mut garbage: Vec<u8> = (0..700u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    append_bytes(&seg, &garbage)?;
    let log = open(dir.path());
    let d = single_damage(&log);
    assert_eq!(
        (d.path.as_path(), d.valid_bytes, d.dropped_bytes),
        (seg.as_path(), len, 700)
    );
    assert!(!d.reason.is_empty());
    assert_prefix(&log, 20)?;
    log.close()?;

    garbage = vec![0u8; 100];
    garbage[..8].copy_from_slice(&20i64.to_be_bytes());
    garbage[8..12].copy_from_slice(&100_000i32.to_be_bytes());
    garbage[16] = 2;
    append_bytes(&seg, &garbage)?;
    let log = open(dir.path());
    let d = single_damage(&log);
    assert_eq!((d.valid_bytes, d.dropped_bytes), (len, 100));
    assert!(d.reason.contains("torn"), "reason: {}", d.reason);
    assert_prefix(&log, 20)?;
    continue_after_recovery(dir.path(), log, 20)
}

#[test]
fn zeroed_tail_is_dropped() -> TestResult {
    // a pre-allocated but never written tail reads as zeros
    let dir = tempfile::tempdir()?;
    let pdir = make_log(dir.path(), 5, 1 << 20)?;
    let seg = last_segment(&pdir);
    let len = std::fs::metadata(&seg)?.len();
    append_bytes(&seg, &[0u8; 4096])?;
    let log = open(dir.path());
    let d = single_damage(&log);
    assert_eq!((d.valid_bytes, d.dropped_bytes), (len, 4096));
    assert_prefix(&log, 5)?;
    continue_after_recovery(dir.path(), log, 5)
}

/// The records of "t"/0 are offsets 0..n as `make_log` wrote them, except those in `gap`
/// (which reads meet as a gap).
fn assert_all_but(log: &Log, n: i64, gap: (i64, i64)) -> TestResult {
    let part = log.get_topic("t")?.partition(0)?.clone();
    assert_eq!(part.offsets(), (0, n));
    let (got, gaps) = read_skipping_gaps(&part)?;
    assert_eq!(gaps, vec![gap]);
    let want: Vec<i64> = (0..n).filter(|o| !(gap.0..gap.1).contains(o)).collect();
    assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), want);
    for r in &got {
        assert_eq!(r.value.as_deref(), Some(value_of(r.offset).as_slice()));
    }
    match part.read(gap.0, 10, usize::MAX, |_| true) {
        Err(LogError::Gap(g)) => {
            assert_eq!((g.from, g.to), gap);
            assert!(g.path.to_string_lossy().ends_with(".log"), "{:?}", g.path);
        }
        other => panic!("reading at the gap gave {other:?}"),
    }
    Ok(())
}

/// Appends after a quarantine get new offsets (never one of the gap's), and a reopen reports
/// the same quarantine and keeps every record.
fn continue_after_quarantine(dir: &Path, log: Log, n: i64, gap: (i64, i64)) -> TestResult {
    let topic = log.get_topic("t")?;
    for i in n..n + 3 {
        let (_, off) = topic.produce(
            Some(format!("k{i}").as_bytes()),
            Some(&value_of(i)),
            TS + i,
            &[],
            None,
        )?;
        assert_eq!(off, i, "no offset is given out twice");
    }
    assert_all_but(&log, n + 3, gap)?;
    log.close()?;
    drop(topic);
    let log = open(dir);
    let report = log.open_report();
    assert_eq!(report.len(), 1, "{report:?}");
    assert_eq!(
        (report[0].kind.as_str(), report[0].offsets),
        ("quarantined", Some(gap))
    );
    assert_all_but(&log, n + 3, gap)?;
    log.close()?;
    Ok(())
}

#[test]
fn overwritten_tail_of_the_last_batch() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pdir = make_log(dir.path(), 20, 1 << 20)?;
    let seg = last_segment(&pdir);
    let batches = batches_of(&seg);
    assert_eq!(batches.len(), 20);
    let (pos, blen, base, _) = batches[19];
    assert_eq!(base, 19);
    let mut bytes = std::fs::read(&seg)?;
    // the header (61 bytes) survives, the records after it do not
    let half = (pos + 61 + (blen - 61) / 2) as usize;
    for (k, b) in bytes[half..].iter_mut().enumerate() {
        *b = 0x5A ^ (k as u8);
    }
    std::fs::write(&seg, &bytes)?;

    // A whole batch with a bad CRC is damage, not a torn write: it is quarantined so offset 19
    // is never given out again.
    let log = open(dir.path());
    let d = single_damage(&log);
    assert_eq!(d.path, seg);
    assert_eq!(d.kind, "quarantined");
    assert_eq!((d.position, d.dropped_bytes), (pos, blen));
    assert_eq!(d.offsets, Some((19, 20)));
    assert!(d.reason.contains("CRC"), "reason: {}", d.reason);
    assert_eq!(
        std::fs::metadata(&seg)?.len(),
        bytes.len() as u64,
        "nothing truncated"
    );
    assert_all_but(&log, 20, (19, 20))?;
    continue_after_quarantine(dir.path(), log, 20, (19, 20))
}

#[test]
fn truncated_mid_batch() -> TestResult {
    // cut inside the last batch's records, and (second round) inside a batch header
    for cut_in_header in [false, true] {
        let dir = tempfile::tempdir()?;
        let pdir = make_log(dir.path(), 20, 1 << 20)?;
        let seg = last_segment(&pdir);
        let (pos, blen, _, _) = batches_of(&seg)[19];
        let keep = if cut_in_header {
            pos + 30
        } else {
            pos + blen - 5
        };
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)?
            .set_len(keep)?;

        let log = open(dir.path());
        let d = single_damage(&log);
        assert_eq!((d.valid_bytes, d.dropped_bytes), (pos, keep - pos));
        assert!(d.reason.contains("torn"), "reason: {}", d.reason);
        assert_prefix(&log, 19)?;
        continue_after_recovery(dir.path(), log, 19)?;
    }
    Ok(())
}

/// Finding 2: one flipped byte in the middle of the active segment costs only its batch; the
/// batches after it are kept and offsets are not reused.
#[test]
fn flipped_byte_mid_segment_quarantines_only_that_batch() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pdir = make_log(dir.path(), 20, 1 << 20)?;
    let seg = last_segment(&pdir);
    let len = std::fs::metadata(&seg)?.len();
    let (pos, blen, base, _) = batches_of(&seg)[10];
    assert_eq!(base, 10);
    let mut bytes = std::fs::read(&seg)?;
    let at = (pos + blen - 3) as usize; // inside the record's value
    bytes[at] ^= 0x01;
    std::fs::write(&seg, &bytes)?;

    let log = open(dir.path());
    let d = single_damage(&log);
    assert_eq!(d.path, seg);
    assert_eq!(d.kind, "quarantined");
    assert_eq!((d.position, d.dropped_bytes), (pos, blen));
    assert_eq!(d.offsets, Some((10, 11)));
    assert!(d.reason.contains("CRC"), "reason: {}", d.reason);
    assert_eq!(std::fs::metadata(&seg)?.len(), len, "nothing truncated");
    // the damaged range is recorded durably
    assert!(pdir.join("quarantine.json").is_file());
    assert_all_but(&log, 20, (10, 11))?;
    continue_after_quarantine(dir.path(), log, 20, (10, 11))
}

#[test]
fn damage_in_last_of_many_segments() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pdir = make_log(dir.path(), 60, 1024)?;
    let bases = segment_bases(&pdir);
    assert!(bases.len() >= 3, "{bases:?}");
    let last_base = *bases.last().unwrap_or(&0);
    let seg = last_segment(&pdir);
    let batches = batches_of(&seg);
    assert_eq!(batches[0].2, last_base);
    assert!(batches.len() >= 2);
    let sealed_sizes: Vec<u64> = bases[..bases.len() - 1]
        .iter()
        .map(|b| std::fs::metadata(segment_path(&pdir, *b, "log")).map(|m| m.len()))
        .collect::<Result<_, _>>()?;

    // corrupt the first batch of the last segment: only that batch is lost
    let mut bytes = std::fs::read(&seg)?;
    bytes[70] ^= 0xFF;
    std::fs::write(&seg, &bytes)?;
    let log = open(dir.path());
    let d = single_damage(&log);
    assert_eq!((d.path.as_path(), d.position), (seg.as_path(), 0));
    assert_eq!(d.offsets, Some((last_base, last_base + 1)));
    for (b, size) in bases.iter().zip(&sealed_sizes) {
        assert_eq!(
            std::fs::metadata(segment_path(&pdir, *b, "log"))?.len(),
            *size,
            "sealed segment {b} untouched"
        );
    }
    assert_all_but(&log, 60, (last_base, last_base + 1))?;
    continue_after_quarantine(dir.path(), log, 60, (last_base, last_base + 1))
}

#[test]
fn corrupt_sealed_segment_is_not_silently_served() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pdir = make_log(dir.path(), 60, 1024)?;
    let bases = segment_bases(&pdir);
    assert!(bases.len() >= 3);
    let first = segment_path(&pdir, bases[0], "log");
    let batches = batches_of(&first);
    let (pos, blen, base, _) = batches[1];
    let mut bytes = std::fs::read(&first)?;
    bytes[(pos + blen - 2) as usize] ^= 0x10;
    std::fs::write(&first, &bytes)?;

    // with its index files intact the segment is trusted: its batches are checked lazily (only
    // those after the last index entry at open, which in a segment this small is all of them)
    let log = open(dir.path());
    let part = log.get_topic("t")?.partition(0)?.clone();
    let mut seen = Vec::new();
    // the read returns the records before the damage...
    let next = part.read(0, usize::MAX, usize::MAX, |r| {
        seen.push(r.offset);
        true
    })?;
    assert_eq!((seen.clone(), next), (vec![0], 1));
    assert_eq!(base, 1);
    // ...and the next one meets it as a gap naming the file and the batch's byte position
    match part.read(1, usize::MAX, usize::MAX, |_| true) {
        Err(LogError::Gap(g)) => {
            assert_eq!(
                (g.path, g.position, g.from, g.to),
                (first.clone(), pos, 1, 2)
            );
        }
        other => panic!("reading over a corrupt batch gave {other:?}"),
    }
    // found lazily, it is reported, recorded durably, and every other record is readable
    let report = log.open_report();
    assert_eq!(report.len(), 1, "{report:?}");
    assert_eq!(
        (report[0].kind.as_str(), report[0].position),
        ("quarantined", pos)
    );
    let (got, gaps) = read_skipping_gaps(&part)?;
    assert_eq!(gaps, vec![(1, 2)]);
    let want: Vec<i64> = std::iter::once(0).chain(2..60).collect();
    assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), want);
    log.close()?;
    drop(part);

    // after a restart the recorded gap is still known (the segment is not rescanned)
    let log = open(dir.path());
    let part = log.get_topic("t")?.partition(0)?.clone();
    assert_eq!(part.gaps().len(), 1);
    let (got, gaps) = read_skipping_gaps(&part)?;
    assert_eq!((got.len(), gaps), (59, vec![(1, 2)]));
    log.close()?;
    drop(part);

    // without index files the segment is rescanned: the damage is reported, nothing truncated
    std::fs::remove_file(segment_path(&pdir, bases[0], "index"))?;
    std::fs::remove_file(segment_path(&pdir, bases[0], "timeindex"))?;
    let log = open(dir.path());
    let report = log.open_report();
    let q: Vec<_> = report.iter().filter(|d| d.kind == "quarantined").collect();
    assert_eq!(q.len(), 1, "{report:?}");
    assert_eq!((q[0].path.as_path(), q[0].position), (first.as_path(), pos));
    assert_eq!(
        std::fs::metadata(&first)?.len(),
        bytes.len() as u64,
        "sealed segments are not truncated"
    );
    let part = log.get_topic("t")?.partition(0)?.clone();
    let (got, gaps) = read_skipping_gaps(&part)?;
    assert_eq!(gaps, vec![(1, 2)]);
    assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), want);
    log.close()?;
    Ok(())
}

/// A group's committed offset can lie past the end of a partition whose tail recovery dropped
/// (the commit reached the disk, the records did not). The consumer must not fail forever:
/// like a position before the start, it has to be brought back into [earliest, latest].
#[test]
fn committed_offset_past_a_truncated_end() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pdir = make_log(dir.path(), 20, 1 << 20)?;
    {
        let log = open(dir.path());
        let topic = log.get_topic("t")?;
        let c = Consumer::new(&log, topic, Some("g"), StartSpec::Earliest)?;
        assert_eq!(drain(&c)?.len(), 20);
        c.commit()?;
        assert_eq!(c.committed()?.get(&0).copied().flatten(), Some(20));
        c.close()?;
        log.close()?;
    }
    // the commit is durable, the last five records are not
    let seg = last_segment(&pdir);
    let (pos, _, base, _) = batches_of(&seg)[15];
    assert_eq!(base, 15);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)?
        .set_len(pos + 7)?;

    let log = open(dir.path());
    let d = single_damage(&log);
    assert_eq!((d.path.as_path(), d.valid_bytes), (seg.as_path(), pos));
    assert_prefix(&log, 15)?;
    let topic = log.get_topic("t")?;
    let c = Consumer::new(&log, topic.clone(), Some("g"), StartSpec::Earliest)?;
    assert_eq!(
        c.committed()?.get(&0).copied().flatten(),
        Some(20),
        "the commit survived"
    );
    // polling does not fail: the position is brought back to the end of the log
    assert!(poll_n(&c, 10)?.is_empty());
    assert_eq!(c.position()?.get(&0).copied(), Some(15));
    // records produced from now on are read, starting at the new end
    for i in 15..18 {
        let (_, off) = topic.produce(
            Some(format!("k{i}").as_bytes()),
            Some(&value_of(i)),
            TS + i,
            &[],
            None,
        )?;
        assert_eq!(off, i);
    }
    let got = drain(&c)?;
    assert_eq!(
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![15, 16, 17]
    );
    assert_eq!(got[0].value.as_deref(), Some(value_of(15).as_slice()));
    c.commit()?;
    assert_eq!(c.committed()?.get(&0).copied().flatten(), Some(18));
    c.close()?;
    log.close()?;
    Ok(())
}

/// Finding 1: a topic whose `topic.json` is lost is rebuilt from its partition directories
/// (reported), never removed; creating it again adopts the data.
#[test]
fn a_topic_without_topic_json_is_rebuilt_with_its_data() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pdir = make_log(dir.path(), 20, 1 << 20)?;
    assert!(last_segment(&pdir).is_file());
    std::fs::remove_file(dir.path().join("t").join("topic.json"))?;

    let log = open(dir.path());
    let report = log.open_report();
    assert_eq!(report.len(), 1, "{report:?}");
    assert_eq!(report[0].kind, "topic_rebuilt");
    assert_eq!(log.topic_names(), vec!["t".to_string()]);
    assert_prefix(&log, 20)?;
    let topic = log.topic("t", &TopicOptions::default())?;
    assert_eq!(
        topic.produce(Some(b"k20"), Some(&value_of(20)), TS + 20, &[], None)?,
        (0, 20)
    );
    log.close()?;
    drop(topic);
    let log = open(dir.path());
    assert!(log.open_report().is_empty(), "{:?}", log.open_report());
    assert_prefix(&log, 21)?;
    log.close()?;
    Ok(())
}

/// A directory that is not a topic (a user's files) is never deleted: asking for it is an error
/// naming it, and the other topics open.
#[test]
fn a_directory_that_is_not_a_topic_is_left_alone() -> TestResult {
    let dir = tempfile::tempdir()?;
    make_log(dir.path(), 5, 1 << 20)?;
    let mine = dir.path().join("mydata");
    std::fs::create_dir(&mine)?;
    std::fs::write(mine.join("notes.txt"), b"precious")?;
    let log = open(dir.path());
    assert!(log
        .open_report()
        .iter()
        .any(|d| d.kind == "not_a_topic" && d.path == mine));
    match log.topic("mydata", &TopicOptions::default()) {
        Err(LogError::InvalidArgument(m)) => assert!(m.contains("mydata"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(mine.join("notes.txt"))?, b"precious");
    assert_prefix(&log, 5)?;
    log.close()?;
    Ok(())
}

/// The active segment's index files are never trusted after more appends. If a close wrote the
/// active segment's index, a reopen appended more records, and a roll then crashed after creating
/// the next segment's file but before sealing the old one, the old segment would open as sealed
/// with the stale index from the first session: `offset_for_time` would miss the later records.
#[test]
fn crash_during_roll_after_a_reopen_keeps_time_lookups_right() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pdir = make_log(dir.path(), 20, 1 << 20)?;
    let log = open(dir.path());
    let topic = log.get_topic("t")?;
    for i in 20..45 {
        let (_, off) = topic.produce(
            Some(format!("k{i}").as_bytes()),
            Some(&value_of(i)),
            TS + i,
            &[],
            None,
        )?;
        assert_eq!(off, i);
    }
    assert_eq!(segment_bases(&pdir), vec![0], "still one segment");
    log.close()?;
    drop(topic);

    // the crash: the new segment file of a roll exists, the old segment was never sealed
    std::fs::File::create(segment_path(&pdir, 45, "log"))?;

    let log = open(dir.path());
    // the unsealed segment has no index files: rebuilt (and reported)
    let report = log.open_report();
    assert!(
        !report.is_empty() && report.iter().all(|d| d.kind == "index_rebuilt"),
        "{report:?}"
    );
    assert_prefix(&log, 45)?;
    let part = log.get_topic("t")?.partition(0)?.clone();
    let model = read_all(&part)?;
    let brute = |t: i64| model.iter().find(|r| r.timestamp >= t).map(|r| r.offset);
    for t in (TS - 2)..=(TS + 47) {
        assert_eq!(part.offset_for_time(t)?, brute(t), "ts {t}");
    }
    assert_eq!(part.offset_for_time(TS + 30)?, Some(30));
    // appends continue in the new segment, and lookups stay right after another reopen
    let topic = log.get_topic("t")?;
    assert_eq!(
        topic.produce(Some(b"k45"), Some(&value_of(45)), TS + 45, &[], None)?,
        (0, 45)
    );
    log.close()?;
    drop(topic);
    let log = open(dir.path());
    assert!(log.open_report().is_empty(), "{:?}", log.open_report());
    assert_prefix(&log, 46)?;
    let part = log.get_topic("t")?.partition(0)?.clone();
    for t in (TS - 2)..=(TS + 47) {
        let want = (t <= TS + 45).then(|| (t - TS).max(0));
        assert_eq!(part.offset_for_time(t)?, want, "ts {t}");
    }
    log.close()?;
    Ok(())
}

/// A file a user (or the OS) drops into a topic's directories is left alone and does not make
/// the topic unavailable; a bad `topic.json` makes only its topic unavailable.
#[test]
fn foreign_files_are_harmless_and_bad_metadata_is_contained() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pdir = make_log(dir.path(), 10, 1 << 20)?;
    std::fs::write(pdir.join(".DS_Store"), b"x")?;
    std::fs::write(dir.path().join("t").join("README.txt"), b"mine")?;
    {
        let log = open(dir.path());
        let o = log.topic("o", &TopicOptions::default())?;
        o.produce(None, Some(b"v"), TS, &[], None)?;
        assert!(log.open_report().is_empty(), "{:?}", log.open_report());
        assert_prefix(&log, 10)?;
        log.close()?;
    }
    assert!(pdir.join(".DS_Store").is_file());
    let cfg = dir.path().join("t").join("topic.json");
    std::fs::write(&cfg, br#"{"partitions": 2}"#)?;
    let log = open(dir.path());
    match log.get_topic("t") {
        Err(LogError::Corrupt { path, .. }) => assert_eq!(path, cfg),
        other => panic!("{other:?}"),
    }
    assert_eq!(read_all(log.get_topic("o")?.partition(0)?)?.len(), 1);
    assert_eq!(std::fs::read(&cfg)?, br#"{"partitions": 2}"#);
    log.close()?;
    Ok(())
}

/// Finding 6: internal topics are readable but can't be produced to, truncated or deleted.
#[test]
fn internal_topics_are_read_only() -> TestResult {
    let dir = tempfile::tempdir()?;
    make_log(dir.path(), 3, 1 << 20)?;
    let log = open(dir.path());
    let t = log.get_topic("t")?;
    let c = Consumer::new(&log, t, Some("g"), StartSpec::Earliest)?;
    assert_eq!(drain(&c)?.len(), 3);
    c.commit()?;
    let offsets = log.get_topic("__consumer_offsets")?;
    assert!(matches!(
        offsets.produce(Some(b"k"), Some(b"v"), TS, &[], None),
        Err(LogError::InternalTopic(_))
    ));
    assert!(matches!(
        offsets.truncate_to(&[(0, 0)]),
        Err(LogError::InternalTopic(_))
    ));
    assert!(matches!(
        log.delete_topic("__consumer_offsets"),
        Err(LogError::InternalTopic(_))
    ));
    assert_eq!(read_all(offsets.partition(0)?)?.len(), 1, "still readable");
    assert_eq!(c.committed()?.get(&0).copied().flatten(), Some(3));
    c.close()?;
    log.close()?;
    Ok(())
}
